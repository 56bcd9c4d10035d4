"""Nothing lost when a writer dies: kill -9 and SIGTERM of apply, undo, score and decide at named
writes (a test-only hook pauses the command there, then the test kills it), and at a random
moment; the next command finishes or rolls back what was left, and every label and decision is
accounted for. Races of score with decide and apply; a property test over random decisions,
re-scores, applies and undos.

The commands run as real processes (``cvcurate ...``) on the conftest's database (reached by
``FIFTYONE_DATABASE_URI``); this process reads the store between them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cvcurate import decisions, store
from cvcurate.cli import app
from cvcurate.stages import apply as apply_stage
from cvcurate.stages import review
from cvcurate.names import FIX_FIELD, SUSPECTS_FIELD
from cvcurate.stages.score import run_score
from tests.test_review import scored_dataset

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def start(args: list, tmp_path: Path, pause: str | None = None) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, CVCURATE_PROGRESS="0", PYTHONPATH=str(REPO))
    flag = tmp_path / f"paused-{time.monotonic_ns()}"
    if pause:
        env.update(CVCURATE_TEST_PAUSE=pause, CVCURATE_TEST_PAUSE_FILE=str(flag))
    proc = subprocess.Popen([sys.executable, "-c", "from cvcurate.cli import main; main()", *map(str, args)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, flag


def wait_paused(proc: subprocess.Popen, flag: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited {proc.returncode} before its pause point: {out}\n{err}")
        assert time.time() < deadline, "the command never reached its pause point"
        time.sleep(0.05)


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def labels(name: str) -> dict[str, list[tuple]]:
    return {sid: decisions.labels_of(d) for sid, d in store.get_detections(name, store.GT_FIELD).items()}


def decided(name: str) -> dict[tuple, set[str]]:
    """Every decision tag on the run's fixes and suspect boxes, by what it decides."""
    out: dict[tuple, set[str]] = {}
    for fld in (FIX_FIELD, SUSPECTS_FIELD):
        for sid, dets in store.get_detections(name, fld).items():
            for d in dets:
                tags = set(d.get("tags") or []) & {decisions.CONFIRMED, decisions.REJECTED}
                if tags:
                    key = (fld, sid, d.get("cvc_issue") if fld == SUSPECTS_FIELD else
                           (d.get("cvc_action"), d.get("cvc_class"), d.get("cvc_target")))
                    out.setdefault(key, set()).update(tags)
    return out


def confirm_all(name: str) -> int:
    ids = [d["cvc_issue"] for dets in store.get_detections(name, FIX_FIELD).values() for d in dets
           if d.get("cvc_issue")]
    return review.decide(name, confirm=sorted(set(ids))).fixes_tagged


@pytest.fixture
def reviewed(tmp_path, dataset_name):
    """A scored dataset whose every fix a reviewer confirmed; its labels before any apply."""
    scored_dataset(tmp_path, dataset_name)
    assert confirm_all(dataset_name) >= 5
    return dataset_name, labels(dataset_name), decided(dataset_name)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_apply_killed_mid_write_is_rolled_back(reviewed, tmp_path, sig):
    name, before, dec = reviewed
    proc, flag = start(["apply", name, "--log-dir", tmp_path / "log"], tmp_path, pause="guarded_write#3")
    wait_paused(proc, flag)
    code, out, err = kill(proc, sig)
    if sig == signal.SIGTERM:  # handled as Ctrl-C: rolled back at once, one line, exit 143
        assert code == 143, (code, out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM): the apply was rolled back"), err
        assert labels(name) == before and not store.journal.pending(name)
    else:
        assert code == -9
        now = labels(name)
        assert sum(now[s] != before[s] for s in before) >= 1  # killed half way: some samples written
        assert [e["op"] for e in store.journal.pending(name)] == ["apply"]
        assert not store.get_changes(name)  # not committed
        r = cli("info", name)  # a read-only command says so, and which command finishes it
        assert r.exit_code == 0 and "unfinished apply" in r.output and "rolls back" in r.output, r.output
    assert decided(name) == dec  # the reviewers' decisions are all there
    # the next writer recovers, then does its own work: every confirmed fix applied once
    r = cli("apply", name, "--log-dir", tmp_path / "log")
    assert r.exit_code == 0, r.output
    if sig == signal.SIGKILL:
        assert "recovered: the apply of" in r.output and "rolled back" in r.output, r.output
    assert not store.journal.pending(name)
    assert len(store.get_changes(name)) == 1
    # and undo restores the labels of before byte for byte
    r = cli("apply", name, "--undo")
    assert r.exit_code == 0, r.output
    assert labels(name) == before


def test_apply_killed_after_its_writes_keeps_the_change(reviewed, tmp_path):
    name, before, _ = reviewed
    proc, flag = start(["apply", name, "--log-dir", tmp_path / "log"], tmp_path, pause="apply:before-commit")
    wait_paused(proc, flag)
    kill(proc)
    assert [e["op"] for e in store.journal.pending(name)] == ["apply"]
    cs = apply_stage.apply(name, log_dir=tmp_path / "log")  # recovery: rolled back (not committed), then applied anew
    assert cs.applied >= 5 and not store.journal.pending(name)
    apply_stage.undo(name)
    assert labels(name) == before


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_undo_killed_mid_write_is_rolled_back_then_undone(reviewed, tmp_path, sig):
    name, before, _ = reviewed
    apply_stage.apply(name, log_dir=tmp_path / "log")
    applied = labels(name)
    proc, flag = start(["apply", name, "--undo"], tmp_path, pause="guarded_write#2")
    wait_paused(proc, flag)
    code, _, err = kill(proc, sig)
    if sig == signal.SIGTERM:
        assert code == 143 and "terminated (SIGTERM): the undo was rolled back" in err, err
        assert labels(name) == applied and not store.journal.pending(name)
    else:
        assert labels(name) != applied and labels(name) != before  # half undone
    r = cli("apply", name, "--undo")
    assert r.exit_code == 0, r.output
    if sig == signal.SIGKILL:
        assert "recovered: the undo of" in r.output, r.output
    assert labels(name) == before and not store.journal.pending(name)
    assert all(c["undone"] for c in store.get_changes(name))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_score_killed_after_deleting_its_fields_loses_no_decision(reviewed, tmp_path, sig):
    """The delete-and-rewrite path (a field added since the last score): killed once the old fields
    are gone. The gate fails, writers are refused, and the next score brings every decision back."""
    name, before, dec = reviewed
    import fiftyone as fo

    store.load(name).add_sample_field("extra", fo.StringField)  # forces the delete-and-rewrite path
    proc, flag = start(["score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s2"],
                       tmp_path, pause="write_run:deleted")
    wait_paused(proc, flag, timeout=180)
    code, _, err = kill(proc, sig)
    if sig == signal.SIGTERM:  # it cannot roll back a half-written run, and says so
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 143 and len(lines) == 1, err
        assert "may be partly written" in lines[0] and "decisions are kept in its journal" in lines[0], err
    coll = store.load(name)._sample_collection
    assert coll.count_documents({FIX_FIELD: {"$exists": True}}) == 0  # the decisions' fields are gone ...
    assert [e["op"] for e in store.journal.pending(name)] == ["score"]
    r = cli("gate", name)
    assert r.exit_code == 1 and "unfinished_writes" in r.output, r.output
    r = cli("decide", name, "--confirm", "x:0:swap")
    assert r.exit_code == 2 and "did not finish" in r.output and f"cvcurate score {name}" in r.output, r.output
    # ... and the next score carries them all from its journal
    r = cli("score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s3")
    assert r.exit_code == 0, r.output
    assert decided(name) == dec and not store.journal.pending(name)
    assert labels(name) == before


def test_score_killed_at_a_random_moment_loses_no_decision(reviewed, tmp_path):
    name, before, dec = reviewed
    rng = random.Random(7)
    for _ in range(2):
        proc, _ = start(["score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s"],
                        tmp_path)
        time.sleep(rng.uniform(2.0, 9.0))  # anywhere from start-up to the write
        kill(proc)
    r = cli("score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert decided(name) == dec and labels(name) == before and not store.journal.pending(name)


def test_decide_while_score_runs_is_refused_and_nothing_is_lost(reviewed, tmp_path):
    name, _, dec = reviewed
    proc, flag = start(["score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s"],
                       tmp_path, pause="score:journaled")
    wait_paused(proc, flag, timeout=180)
    try:
        sus = [d["cvc_issue"] for dets in store.get_detections(name, SUSPECTS_FIELD).values() for d in dets
               if not set(d.get("tags") or []) & {decisions.CONFIRMED, decisions.REJECTED}]
        r = cli("decide", name, "--reject", sus[0])
        assert r.exit_code == 2 and "is locked by another score" in r.output and "--wait" in r.output, r.output
        r = cli("apply", name)
        assert r.exit_code == 2 and "is locked by another score" in r.output, r.output
    finally:
        kill(proc)
    r = cli("score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert decided(name) == dec


def test_app_tags_during_score_are_never_overwritten(reviewed, tmp_path):
    """A reviewer tags in the App (which takes no lock) while score runs: score's write is a
    compare-and-set, so the tag is read again and carried, not overwritten."""
    name, _, _ = reviewed
    proc, flag = start(["score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s"],
                       tmp_path, pause="score:journaled")
    wait_paused(proc, flag, timeout=180)
    sus = next(d for dets in store.get_detections(name, SUSPECTS_FIELD).values() for d in dets
               if not set(d.get("tags") or []) & {decisions.CONFIRMED, decisions.REJECTED})
    store.tag_labels(name, SUSPECTS_FIELD, [sus["id"]], add=[decisions.REJECTED])  # what the App does
    want = decided(name)
    flag.unlink()  # let it go on
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    assert decided(name) == want


def test_reject_of_one_issue_of_a_merge_stops_the_merge(tmp_path, dataset_name):
    """One fix, two issues: confirmed on one, rejected on the other is a conflict; nothing of that
    fix is applied, and apply says so."""
    scored_dataset(tmp_path, dataset_name)
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    sid, fx = next((s, d) for s, dets in fixes.items() for d in dets if d["cvc_action"] == "relabel")
    # a rejected suspect of the same type on the box the fix changes
    sus = store.get_detections(dataset_name, SUSPECTS_FIELD)
    mine = [d for d in sus[sid] if d.get("cvc_target") == fx["cvc_target"] and d.get("cvc_type") == fx["cvc_type"]]
    assert mine, "every issue has its suspect box, with the id of the box it is about"
    store.tag_labels(dataset_name, FIX_FIELD, [fx["id"]], add=[decisions.CONFIRMED])
    store.tag_labels(dataset_name, SUSPECTS_FIELD, [mine[0]["id"]], add=[decisions.REJECTED])
    before = labels(dataset_name)[sid]
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "log")
    assert any(s.get("conflict") and "conflicting decisions" in s["why"] for s in cs.skipped), cs.skipped
    assert labels(dataset_name)[sid] == before


def test_every_issue_in_issues_csv_can_be_decided(tmp_path, dataset_name):
    import csv

    scored_dataset(tmp_path, dataset_name)
    rows = list(csv.DictReader(open(tmp_path / "scores" / "issues.csv")))
    assert rows and all(r["decision"] == "" for r in rows)  # a column for the reviewer to fill in
    for k, r in enumerate(rows):
        r["decision"] = "confirm" if k % 2 else "reject"
    with open(tmp_path / "reviewed.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = cli("decide", dataset_name, "--from-file", tmp_path / "reviewed.csv")
    assert r.exit_code == 0, r.output
    got = {d["cvc_issue"]: set(d.get("tags") or []) for dets in store.get_detections(dataset_name, SUSPECTS_FIELD).values()
           for d in dets}
    for k, row in enumerate(rows):
        assert (decisions.CONFIRMED if k % 2 else decisions.REJECTED) in got[row["issue_id"]], row


def test_decisions_without_a_fix_and_out_of_sample_survive_rescore(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    sus = store.get_detections(dataset_name, SUSPECTS_FIELD)
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    fixed = {d["cvc_issue"] for dets in fixes.values() for d in dets}
    lone = [d["cvc_issue"] for dets in sus.values() for d in dets if d["cvc_issue"] not in fixed]
    assert lone, "issues that propose no fix"
    review.decide(dataset_name, reject=lone[:3])
    want = decided(dataset_name)
    run_score(dataset_name, pred_field="predictions", pixels=False, out_dir=tmp_path / "s2")
    assert decided(dataset_name) == want
    # a score of only some images (as --only-out-of-sample) keeps the decisions of the others
    import cvcurate.stages.score as sc
    from cvcurate.scoring import QUEUES, score
    from cvcurate.stages.score_write import _sample_rows, write_score_run

    keep = set(store.sample_info(dataset_name, ["filepath"])["id"][:5])
    labels_ = store.read(dataset_name, pred_field="predictions")
    result = score(labels_, predictions=[r.pred for r in labels_.records], cfg=sc.load_score_config())
    rows = [r for r in _sample_rows(result) if r.sample_id in keep]
    write_score_run(dataset_name, rows, list(QUEUES), labels_.classes, {"at": "now"}, keep_unscored=True,
                       journal=True)
    assert decided(dataset_name) == want


def test_undo_after_rescore_and_force(reviewed, tmp_path):
    name, before, _ = reviewed
    apply_stage.apply(name, log_dir=tmp_path / "log")
    run_score(name, pred_field="predictions", pixels=False, out_dir=tmp_path / "s2")  # a re-score between
    apply_stage.undo(name)  # score touches no label: undo works
    assert labels(name) == before
    # a box moved after apply: undo names it and refuses; --force restores anyway
    run_score(name, pred_field="predictions", pixels=False, out_dir=tmp_path / "s3")
    confirm_all(name)
    apply_stage.apply(name, log_dir=tmp_path / "log2")
    gt = store.get_detections(name, store.GT_FIELD)
    sid = next(s for s, c in gt.items() if c and decisions.labels_of(c) != before[s])
    gt[sid][0]["bounding_box"] = [0.01, 0.01, 0.1, 0.1]
    store.set_detections(name, store.GT_FIELD, {sid: gt[sid]})
    r = cli("apply", name, "--undo")
    assert r.exit_code == 2 and "moved" in r.output and "--force" in r.output, r.output
    r = cli("apply", name, "--undo", "--force")
    assert r.exit_code == 0, r.output
    assert labels(name) == before


def test_random_decisions_rescores_applies_and_undos(tmp_path, dataset_name):
    """No decision lost, no rejected fix applied, undo restores byte for byte, over a random walk."""
    scored_dataset(tmp_path, dataset_name)
    original = labels(dataset_name)
    rng = random.Random(3)
    rejected_boxes: set[str] = set()
    for step in range(8):
        op = rng.choice(["decide", "decide", "rescore", "apply", "undo"])
        if op == "decide":
            ids = [d["cvc_issue"] for dets in store.get_detections(dataset_name, SUSPECTS_FIELD).values() for d in dets]
            pick = rng.sample(ids, min(4, len(ids)))
            yes, no = pick[:2], pick[2:]
            try:
                review.decide(dataset_name, confirm=yes, reject=no)
            except Exception as exc:  # one fix decided both ways in one call is refused whole
                assert "both confirmed and rejected" in str(exc)
        elif op == "rescore":
            want = decided(dataset_name)
            run_score(dataset_name, pred_field="predictions", pixels=False, out_dir=tmp_path / "s")
            got = decided(dataset_name)
            lost = {k: v for k, v in want.items() if k not in got}
            history = [f for h in store.get_history(dataset_name) if h.get("action", "").startswith("score: decisions")
                       for f in h["fixes"]]
            assert len(lost) <= len(history), (step, lost)  # nothing dropped without a word
        elif op == "apply":
            for dets in store.get_detections(dataset_name, FIX_FIELD).values():
                for d in dets:
                    if decisions.REJECTED in (d.get("tags") or []):
                        rejected_boxes.add(d["id"])
            cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "log")
            assert not {f["id"] for c in cs.changes for f in c["fixes"]} & rejected_boxes
        elif op == "undo":
            if [c for c in store.get_changes(dataset_name) if not c.get("undone")]:
                apply_stage.undo(dataset_name, force=True)
    while [c for c in store.get_changes(dataset_name) if not c.get("undone")]:
        apply_stage.undo(dataset_name, force=True)
    assert labels(dataset_name) == original


def test_decide_killed_half_way_is_finished_by_the_next_writer(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    ids = sorted({d["cvc_issue"] for dets in store.get_detections(dataset_name, SUSPECTS_FIELD).values()
                  for d in dets})
    yes, no = ids[: len(ids) // 2], ids[len(ids) // 2:]
    args = ["decide", dataset_name, *[a for i in yes for a in ("--confirm", i)], *[a for i in no for a in ("--reject", i)]]
    proc, flag = start(args, tmp_path, pause="decide:tagged#1")
    wait_paused(proc, flag)
    kill(proc)
    assert [e["op"] for e in store.journal.pending(dataset_name)] == ["decide"]
    r = cli("apply", dataset_name, "--dry-run")  # read-only: says so
    assert "unfinished decide" in r.output and "finishes it" in r.output, r.output
    review.decide(dataset_name, confirm=[], reject=[no[0]])  # the next writer finishes the killed one first
    assert not store.journal.pending(dataset_name)
    got = {d["cvc_issue"]: set(d.get("tags") or []) for dets in store.get_detections(dataset_name, SUSPECTS_FIELD).values()
           for d in dets}
    assert all(decisions.CONFIRMED in got[i] for i in yes) and all(decisions.REJECTED in got[i] for i in no)


def test_score_while_apply_runs_is_refused_and_waits_with_wait(reviewed, tmp_path):
    name, before, _ = reviewed
    proc, flag = start(["apply", name, "--log-dir", tmp_path / "log"], tmp_path, pause="apply:journaled")
    wait_paused(proc, flag)
    r = cli("score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s")
    assert r.exit_code == 2 and "is locked by another apply" in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    # --wait: the score waits for the apply to finish, then runs (no phantom boxes, nothing lost)
    waiter, _ = start(["score", name, "--pred-field", "predictions", "--no-pixels", "--out", tmp_path / "s",
                       "--wait", "120"], tmp_path)
    time.sleep(3)
    assert waiter.poll() is None  # still waiting
    flag.unlink()
    assert proc.wait(timeout=120) == 0
    out, err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, (out, err)
    gt = store.get_detections(name, store.GT_FIELD)
    assert all(d.get("label") and d.get("bounding_box") and d.get("id") for dets in gt.values() for d in dets)
    apply_stage.undo(name)
    assert labels(name) == before


# -- the database killed during apply: a real mongod of the test's own ---------------------------
def role_build(name: str, folder: str, out: str) -> None:
    """(subprocess) a scored dataset, every fix confirmed; its labels to ``out``."""
    import json

    scored_dataset(Path(folder), name)
    confirm_all(name)
    Path(out).write_text(json.dumps(labels(name)))


def role_labels(name: str, out: str) -> None:
    import json

    Path(out).write_text(json.dumps({"labels": labels(name), "pending": len(store.journal.pending(name)),
                                     "changes": store.get_changes(name)}))


def test_database_killed_during_apply_then_recovered(tmp_path):
    import json

    from tests.test_faults import _kill, _start_mongod, _stop

    db = tmp_path / "db"
    db.mkdir()
    mongod, port = _start_mongod(db)
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=3000"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")
           and k != "FIFTYONE_PRIVATE_DATABASE_PORT"}
    env.update(FIFTYONE_DATABASE_URI=uri, FIFTYONE_DATABASE_VALIDATION="false", FIFTYONE_DO_NOT_TRACK="true",
               CVCURATE_PROGRESS="0", PYTHONPATH=str(REPO))

    def role(*args: object) -> None:
        r = subprocess.run([sys.executable, "-m", "tests.test_crash", *map(str, args)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr

    def command(*args: object, pause: str | None = None) -> subprocess.Popen:
        e = dict(env)
        if pause:
            e.update(CVCURATE_TEST_PAUSE=pause, CVCURATE_TEST_PAUSE_FILE=str(tmp_path / "paused"))
        return subprocess.Popen([sys.executable, "-c", "from cvcurate.cli import main; main()", *map(str, args)],
                                cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    name = "crash_lost_db"
    try:
        role("build", name, tmp_path / "data", tmp_path / "before.json")
        before = json.loads((tmp_path / "before.json").read_text())
        proc = command("apply", name, "--log-dir", tmp_path / "log", pause="guarded_write#3")
        wait_paused(proc, tmp_path / "paused")
        _kill(mongod.pid, port)  # the database dies with three samples written
        (tmp_path / "paused").unlink()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "Traceback" not in err, (out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "lost the connection to the database" in lines[0], err
        # only what is true: the rollback could not reach the database either
        assert "may be partly written" in lines[0] and "rolls it back" in lines[0], lines[0]
        assert "left as it was" not in lines[0], lines[0]
        _stop(mongod)
        mongod, _ = _start_mongod(db, port)
        role("labels", name, tmp_path / "mid.json")
        mid = json.loads((tmp_path / "mid.json").read_text())
        # the intent record is durable (written with j: true); the sample writes after it may or may
        # not have reached the disk before the crash: the recovery takes back whichever did
        assert mid["pending"] == 1 and not mid["changes"]
        r = command("apply", name, "--log-dir", tmp_path / "log")
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0 and "recovered: the apply of" in err, (out, err)
        r = command("apply", name, "--undo")
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0, (out, err)
        role("labels", name, tmp_path / "after.json")
        after = json.loads((tmp_path / "after.json").read_text())
        assert after["labels"] == before and after["pending"] == 0
    finally:
        _stop(mongod)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_predict_killed_while_writing_blocks_scoring_until_written_again(tmp_path, dataset_name, sig):
    """A predictions write that died half way is never scored as if whole: score (and every other
    writer) is refused with the command that mends it, read-only commands warn, and the same
    predict writes the field again and closes the record."""
    from cvcurate.synth import generate

    store.write(generate(tmp_path / "s", 4, 5), dataset_name)
    proc, flag = start(["predict", dataset_name, "--model", "synth"], tmp_path, pause="predict:journaled")
    wait_paused(proc, flag)
    kill(proc, sig)
    r = cli("score", dataset_name)
    assert r.exit_code == 2, r.output
    assert "stopped while writing field 'predictions'" in r.output and "partly written" in r.output
    assert f"cvcurate predict {dataset_name} --pred-field predictions" in r.output
    r = cli("info", dataset_name)
    assert r.exit_code == 0 and "partly written" in r.output
    r = cli("predict", dataset_name, "--model", "synth")
    assert r.exit_code == 0, r.output
    assert "written again now" in r.output
    assert not [e for e in store.journal.pending(dataset_name) if e.get("op") == "predict"]
    r = cli("score", dataset_name, "--out", tmp_path / "sc")
    assert r.exit_code == 0, r.output


if __name__ == "__main__":  # the roles of the lost-database test, in a process of their own
    _roles = {"build": role_build, "labels": role_labels}
    _roles[sys.argv[1]](*sys.argv[2:])
