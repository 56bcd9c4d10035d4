"""``export --overwrite`` replaces only an earlier export, and never deletes what the dataset uses:

* a folder that holds the dataset's images (a symlink to it too), that is, holds or lies inside a
  folder the dataset was imported from, or that has no cvcurate ``manifest.json`` at its root is
  refused with one line, exit code 2, before any work, and stays byte for byte as it was;
* an earlier export is replaced;
* what an export killed halfway leaves beside ``--out`` (``.NAME.tmp-PID@HOST-…``, ``.NAME.old-…``)
  is removed by the next export to that ``--out``, which says so; a live export's folders, another
  ``--out``'s and names of other patterns are left alone, and a replaced export is kept while
  ``--out`` does not exist.

The killed exports are real: ``cvcurate export`` in a subprocess (``python -m
tests.test_export_overwrite export ...``, on this session's database through
``FIFTYONE_DATABASE_URI``) stopped with SIGKILL while it writes or while it swaps the folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# the role, run in a subprocess (no conftest: the parent's environment names the database)
# ---------------------------------------------------------------------------------------------
def role_export(name: str, out: str, where: str, ready: str) -> None:
    """``cvcurate export NAME --format coco --out OUT --overwrite`` that hangs, once ``ready`` is
    written, after writing the new export (``where`` ``write``) or after moving the previous one
    away (``swap``), for the test to kill it there."""
    import cvcurate.stages.export as stage

    if where == "write":
        real_write = stage.write_export

        def write_then_hang(labels, tmp, format, **kw):
            done = real_write(labels, tmp, format, **kw)
            Path(ready).write_text(str(tmp))
            time.sleep(600)
            return done

        stage.write_export = write_then_hang
    else:
        real_rename = Path.rename

        def rename_then_hang(self, target):
            moved = real_rename(self, target)
            if ".old-" in Path(target).name:
                Path(ready).write_text(str(target))
                time.sleep(600)
            return moved

        Path.rename = rename_then_hang
    from cvcurate.cli import main

    sys.argv = ["cvcurate", "export", name, "--format", "coco", "--out", out, "--overwrite"]
    main()


ROLES = {"export": role_export}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from cvcurate import store  # noqa: E402
from cvcurate.cli import app  # noqa: E402
from cvcurate.stages.export import STALE_AFTER_S, _host  # noqa: E402
from tests import makedata as md  # noqa: E402

runner = CliRunner()
HOST = _host()  # the host name as the export writes it into its folders' names


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(r) -> str:
    """The one line of a refused export: exit code 2, no traceback."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every path under ``folder`` with its bytes (files), its target (links) or "dir"."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def hidden_siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def earlier_export(tmp_path, dataset_name) -> Path:
    """Dataset ``dataset_name`` (images in tmp/data/images) and a COCO export of it (a real
    cvcurate manifest.json to copy into folders, so that only the rule under test refuses)."""
    store.write(md.make_labels(tmp_path / "data" / "images", n=6), dataset_name)
    out = tmp_path / "exports" / "v1"
    r = run("export", dataset_name, "--format", "coco", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_overwrite_refuses_a_folder_holding_the_datasets_images(earlier_export, tmp_path, dataset_name):
    """The images' folder and the folder above it, even with a cvcurate manifest.json in them and
    when named through a symlink: refused, and every image still there byte for byte."""
    data = tmp_path / "data"
    for folder in (data, data / "images"):
        shutil.copy(earlier_export / "manifest.json", folder / "manifest.json")
    (tmp_path / "alias").symlink_to(data / "images")
    before = snapshot(data)
    for out in (data / "images", data, tmp_path / "alias"):
        line = refused(run("export", dataset_name, "--format", "yolo", "--out", out, "--overwrite"))
        assert f"error: {out} holds images of dataset {dataset_name!r} (" in line, line
        assert "refusing to replace it" in line and "give another --out" in line, line
        assert snapshot(data) == before
        assert hidden_siblings(out.parent) == []  # before any work: no temporary folder either
    assert (tmp_path / "alias").is_symlink() and snapshot(tmp_path / "alias") == snapshot(data / "images")


def test_overwrite_refuses_an_export_imported_back_into_the_dataset(earlier_export, tmp_path, dataset_name,
                                                                    monkeypatch):
    """The export imported as a dataset: exporting that dataset over it would delete its images."""
    monkeypatch.chdir(tmp_path)  # the import report goes to the working folder
    r = run("import", earlier_export, "--name", dataset_name + "_b")
    try:
        assert r.exit_code == 0, r.output
        before = snapshot(earlier_export)
        line = refused(run("export", dataset_name + "_b", "--format", "yolo", "--out", earlier_export,
                           "--overwrite"))
        assert "refusing to replace it" in line, line
        assert snapshot(earlier_export) == before
    finally:
        if store.exists(dataset_name + "_b"):
            store.delete(dataset_name + "_b")


def test_overwrite_refuses_the_folder_it_was_imported_from(earlier_export, tmp_path, dataset_name, monkeypatch):
    """A VOC folder imported: the folder, one inside it (the annotations: no image there), and one
    around it are refused, the annotations byte for byte as they were."""
    monkeypatch.chdir(tmp_path)  # the import report goes to the working folder
    around = tmp_path / "around"
    voc = around / "voc"
    md.write_voc(voc, n=4)
    name = dataset_name + "_voc"
    try:
        r = run("import", voc, "--name", name)
        assert r.exit_code == 0, r.output
        for folder in (around, voc, voc / "annotations"):
            shutil.copy(earlier_export / "manifest.json", folder / "manifest.json")
        before = snapshot(around)
        for out, says in ((voc, f"error: {voc} is the folder dataset {name!r} was imported from"),
                          (voc / "annotations", f"error: {voc / 'annotations'} lies inside {voc.resolve()}, "
                                                f"which dataset {name!r} was imported from"),
                          (around, f"error: {around} holds {voc.resolve()}, which dataset {name!r} was imported "
                                   "from")):
            line = refused(run("export", name, "--format", "voc", "--out", out, "--overwrite"))
            assert says in line and "refusing to replace it" in line, line
            assert snapshot(around) == before
    finally:
        if store.exists(name):
            store.delete(name)


def test_overwrite_refuses_a_folder_cvcurate_did_not_write(earlier_export, tmp_path, dataset_name):
    """A folder of other files, one whose manifest.json is someone else's, and one that holds an
    export below its root: refused with the line that says why, each untouched."""
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    (other / "sub" / "weights.bin").write_bytes(os.urandom(256))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"schema_version": 1, "images": []}')
    holder = tmp_path / "exports"  # holds earlier_export, whose manifest is one level down
    for out in (other, foreign, holder):
        before = snapshot(out)
        line = refused(run("export", dataset_name, "--format", "yolo", "--out", out, "--overwrite"))
        assert line == (f"error: {out} was not written by cvcurate export (no cvcurate manifest.json): refusing "
                        "to replace it; give another --out or remove it yourself"), line
        assert snapshot(out) == before
    assert hidden_siblings(tmp_path) == []


def test_overwrite_replaces_an_earlier_export(earlier_export, tmp_path, dataset_name):
    assert (earlier_export / "annotations").is_dir()
    images = snapshot(tmp_path / "data")
    r = run("export", dataset_name, "--format", "yolo", "--out", earlier_export, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (earlier_export / "data.yaml").is_file() and not (earlier_export / "annotations").exists()
    assert '"format": "yolo"' in (earlier_export / "manifest.json").read_text()
    assert hidden_siblings(earlier_export.parent) == []
    assert snapshot(tmp_path / "data") == images
    # and again, over the export it just wrote
    r = run("export", dataset_name, "--format", "voc", "--out", earlier_export, "--overwrite")
    assert r.exit_code == 0 and (earlier_export / "Annotations").is_dir(), r.output


def _killed_export(name: str, out: Path, where: str, tmp_path: Path) -> None:
    """``cvcurate export NAME --out OUT --overwrite`` in a subprocess, SIGKILLed at ``where``."""
    ready = tmp_path / f"ready-{where}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.test_export_overwrite", "export", name, str(out), where,
                             str(ready)], cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the export ended before {where}: {proc.stdout.read()}")
            if time.time() > deadline:
                raise AssertionError(f"the export did not reach {where} in 120 s")
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_exports_leftovers_are_removed_by_the_next_export(earlier_export, tmp_path, dataset_name):
    parent = earlier_export.parent
    before = snapshot(earlier_export)
    # killed while writing: the previous export stands, a temporary folder is left beside it
    _killed_export(dataset_name, earlier_export, "write", tmp_path)
    assert snapshot(earlier_export) == before
    left = hidden_siblings(parent)
    assert len(left) == 1 and left[0].startswith(".v1.tmp-") and f"@{HOST}-" in left[0], left
    r = run("export", dataset_name, "--format", "yolo", "--out", earlier_export, "--overwrite")
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if ln.startswith(("removed", "could not remove"))]
    assert said == [f"removed 1 leftover(s) of earlier killed exports to {earlier_export} in {parent}: {left[0]}"], \
        r.output
    assert hidden_siblings(parent) == [] and (earlier_export / "data.yaml").is_file()

    # killed between moving the previous export away and putting the new one in place: the
    # temporary folder goes, the previous export (the only copy) is kept and named
    before = snapshot(earlier_export)
    _killed_export(dataset_name, earlier_export, "swap", tmp_path)
    assert not earlier_export.exists()
    left = hidden_siblings(parent)
    old = [n for n in left if n.startswith(".v1.old-")]
    assert len(left) == 2 and len(old) == 1, left
    assert snapshot(parent / old[0]) == before
    r = run("export", dataset_name, "--format", "voc", "--out", earlier_export)
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if ln.startswith(("removed", "kept"))]
    assert len(said) == 2 and said[0].startswith("removed 1 leftover(s)") and ".v1.tmp-" in said[0], r.output
    assert said[1].startswith(f"kept {old[0]} in {parent}") and "rename it back" in said[1], r.output
    assert hidden_siblings(parent) == old and snapshot(parent / old[0]) == before
    # once the export is in place again, the next export removes the replaced one
    r = run("export", dataset_name, "--format", "yolo", "--out", earlier_export, "--overwrite")
    assert r.exit_code == 0 and f"leftover(s) of earlier killed exports to {earlier_export}" in r.output, r.output
    assert hidden_siblings(parent) == []


def test_leftovers_of_live_exports_and_other_folders_are_kept(earlier_export, tmp_path, dataset_name):
    parent = earlier_export.parent
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = _dead_pid()
        day_ago = time.time() - STALE_AFTER_S - 3600
        keep = [f".v1.tmp-{live.pid}@{HOST}-0123abcd",  # its export is running
                f".v1.old-{live.pid}@{HOST}-0123abce",
                ".v1.tmp-77@elsewhere-0123abcf",  # another host, written a moment ago
                ".v1.tmp-0123abd0",  # an older cvcurate's name, written a moment ago
                f".v2.tmp-{dead}@{HOST}-0123abd1",  # another --out
                f".v1.tmp-{dead}@{HOST}-notours", f".v1.tmp-{dead}@{HOST}-0123abd2.bak", "v1.tmp-0123abd3"]
        gone = [f".v1.tmp-{dead}@{HOST}-0123abd4", f".v1.old-{dead}@{HOST}-0123abd5",
                ".v1.tmp-77@elsewhere-0123abd6", ".v1.tmp-0123abd7"]  # the last two: nothing written for a day
        for n in keep + gone:
            (parent / n / "images").mkdir(parents=True)
            (parent / n / "images" / "x.jpg").write_bytes(b"x")
        for n in gone[2:]:
            for p in (parent / n / "images", parent / n):
                os.utime(p, (day_ago, day_ago))
        r = run("export", dataset_name, "--format", "yolo", "--out", earlier_export, "--overwrite")
        assert r.exit_code == 0, r.output
        said = [ln for ln in r.output.splitlines() if ln.startswith(("removed", "could not remove"))]
        assert said == [f"removed 4 leftover(s) of earlier killed exports to {earlier_export} in {parent}: "
                        + ", ".join(sorted(gone))], r.output
        assert sorted(p.name for p in parent.iterdir()) == sorted(keep + ["v1"])
        assert all((parent / n / "images" / "x.jpg").read_bytes() == b"x" for n in keep)
    finally:
        live.kill()
        live.wait()
