"""Ctrl-C: exit 130 with one line that says what was kept or rolled back, and the store as it was
when the interrupt hits in the middle of the database write itself."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from cvcurate import errors, store
from cvcurate.names import FIX_FIELD
from cvcurate.cli import app
from tests import makedata as md

runner = CliRunner()
ROLLED_BACK = "interrupted: the store was left as it was before this command"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def interrupted_line(r) -> str:
    assert r.exit_code == 130, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), r.output
    return lines[0]


def snapshot(name):
    """Everything a write could change: samples (path, size, split, boxes), classes, history."""
    labels = store.read(name)
    recs = sorted(((r.filepath, r.width, r.height, r.split, r.gt.xyxy.tolist(),
                    [labels.classes[c] for c in r.gt.class_id]) for r in labels.records))
    ds = store.load(name)
    return recs, list(ds.default_classes), (ds.info or {}).get(store.INFO_KEY, {}).get("history", [])


def no_temporary_datasets():
    return not [n for n in store._fo().list_datasets() if n.startswith(store._TMP_PREFIX)]


# where each function an interrupt is injected into lives in the store package
_HOME = {"_insert_chunk": "io", "_update": "io", "append_history": "meta"}


def interrupt_after(monkeypatch, attr, calls=1):
    """Make ``store.<attr>`` do its work, then raise KeyboardInterrupt on call number ``calls``."""
    owner = getattr(store, _HOME[attr]) if attr in _HOME else store
    real = getattr(owner, attr)
    seen = {"n": 0}

    def wrapped(*a, **k):
        seen["n"] += 1
        out = real(*a, **k)
        if seen["n"] == calls:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(owner, attr, wrapped)
    return seen


def test_message_says_what_was_kept_or_left():
    errors.reset_interrupt_state()
    assert errors.interrupt_message() == ROLLED_BACK
    errors.kept("dataset 'a' written")
    assert errors.interrupt_message() == "interrupted: kept: dataset 'a' written; anything after that was not finished"
    with errors.interrupt_leaves("field 'p' may be partly written"):
        pass  # a block left normally says nothing
    assert "partly" not in errors.interrupt_message()
    with pytest.raises(KeyboardInterrupt):
        with errors.interrupt_leaves("field 'p' may be partly written"):
            raise KeyboardInterrupt
    assert errors.interrupt_message() == "interrupted: field 'p' may be partly written; kept: dataset 'a' written"
    errors.reset_interrupt_state()
    assert errors.interrupt_message() == ROLLED_BACK


def test_interrupt_before_the_write(tmp_path, monkeypatch, dataset_name):
    from cvcurate import formats

    md.write_voc(tmp_path / "d", n=3)

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(formats, "load", ctrl_c)
    r = run("import", tmp_path / "d", "--name", dataset_name, "--report", tmp_path / "rep.json")
    assert interrupted_line(r) == ROLLED_BACK
    assert not store.exists(dataset_name) and not (tmp_path / "rep.json").exists()


def test_interrupt_inside_the_write_of_a_new_dataset(tmp_path, monkeypatch, dataset_name):
    md.write_voc(tmp_path / "d", n=7)
    monkeypatch.setattr(store.io, "_CHUNK", 2)
    seen = interrupt_after(monkeypatch, "_insert_chunk", calls=2)  # 4 of 7 samples are in the database
    r = run("import", tmp_path / "d", "--name", dataset_name, "--report", tmp_path / "rep.json")
    assert seen["n"] == 2
    assert interrupted_line(r) == ROLLED_BACK
    assert not store.exists(dataset_name) and no_temporary_datasets()

    monkeypatch.undo()
    r = run("import", tmp_path / "d", "--name", dataset_name, "--report", tmp_path / "rep.json")
    assert r.exit_code == 0, r.output
    assert "7 added, 0 updated, 0 unchanged" in r.output
    assert len(store.read(dataset_name)) == 7


@pytest.mark.parametrize("where", ["insert", "update", "history"])
def test_interrupt_inside_a_merge_restores_the_dataset(tmp_path, monkeypatch, dataset_name, where):
    root = tmp_path / "d"
    md.write_voc(root, n=9)
    later = tmp_path / "later"
    for sub in ("images", "annotations"):
        (later / sub).mkdir(parents=True)
    for i in range(4, 9):  # 4 images first; then 5 new ones, and the 4 change split
        shutil.move(root / "images" / f"img_{i:03d}.jpg", later / "images")
        shutil.move(root / "annotations" / f"img_{i:03d}.xml", later / "annotations")
    rep = tmp_path / "rep.json"
    assert run("import", root, "--name", dataset_name, "--split", "train", "--report", rep).exit_code == 0
    before = snapshot(dataset_name)
    for sub in ("images", "annotations"):
        for p in (later / sub).iterdir():
            shutil.move(p, root / sub)

    monkeypatch.setattr(store.io, "_CHUNK", 2)
    attr, calls = {"insert": ("_insert_chunk", 2), "update": ("_update", 1),
                   "history": ("append_history", 1)}[where]
    seen = interrupt_after(monkeypatch, attr, calls)
    r = run("import", root, "--name", dataset_name, "--split", "val", "--report", rep)
    assert seen["n"] >= calls  # the rollback calls _update again
    assert interrupted_line(r) == ROLLED_BACK
    assert snapshot(dataset_name) == before
    assert no_temporary_datasets()

    monkeypatch.undo()
    r = run("import", root, "--name", dataset_name, "--split", "val", "--report", rep)
    assert r.exit_code == 0, r.output
    assert "5 added, 4 updated, 0 unchanged" in r.output
    labels = store.read(dataset_name)
    assert len(labels) == 9 and {rec.split for rec in labels.records} == {"val"}
    assert len(snapshot(dataset_name)[2]) == len(before[2]) + 1


def test_interrupt_while_an_overwrite_takes_the_name(tmp_path, monkeypatch, dataset_name):
    store.write(md.make_labels(tmp_path / "a", n=3), dataset_name, history={"x": 1})
    before = snapshot(dataset_name)
    fo = store._fo()
    prop = fo.Dataset.persistent

    def setter(self, value):  # Ctrl-C after the new dataset took the name, before it is made persistent
        if value and self.name == dataset_name:
            raise KeyboardInterrupt
        prop.fset(self, value)

    monkeypatch.setattr(fo.Dataset, "persistent", property(prop.fget, setter))
    with pytest.raises(KeyboardInterrupt):
        store.write(md.make_labels(tmp_path / "b", n=5), dataset_name, overwrite=True)
    monkeypatch.undo()
    assert snapshot(dataset_name) == before
    assert store.load(dataset_name).persistent and no_temporary_datasets()


def test_interrupted_apply_leaves_the_ground_truth(tmp_path, monkeypatch, dataset_name):
    from cvcurate import decisions
    from tests.test_review import scored_dataset, tag_fixes

    scored_dataset(tmp_path, dataset_name)
    assert tag_fixes(dataset_name, "relabel", decisions.CONFIRMED) > 0
    gt = store.get_detections(dataset_name, store.GT_FIELD)
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    logs = tmp_path / "logs"
    interrupt_after(monkeypatch, "record_change")
    r = run("apply", dataset_name, "--log-dir", logs)
    assert interrupted_line(r) == "interrupted: the apply was rolled back: the store was left as it was before this command"
    assert store.get_detections(dataset_name, store.GT_FIELD) == gt
    assert store.get_detections(dataset_name, FIX_FIELD) == fixes
    assert store.get_changes(dataset_name) == [] and not list(logs.glob("*.json"))

    monkeypatch.undo()
    r = run("apply", dataset_name, "--log-dir", logs)
    assert r.exit_code == 0 and "applied" in r.output, r.output


def test_other_commands_say_what_an_interrupt_left(tmp_path, monkeypatch, dataset_name):
    import cvcurate.synth
    from cvcurate.corrupt import CorruptionResult

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cvcurate.synth, "generate", ctrl_c)
    line = interrupted_line(run("synth", tmp_path / "s", "--images", 2))
    assert "may hold part of a synthetic dataset" in line and "--overwrite" in line

    store.write(md.make_labels(tmp_path / "i", n=4), dataset_name)
    monkeypatch.setattr(CorruptionResult, "write_truth", ctrl_c)
    out = dataset_name + "_noisy"
    try:
        line = interrupted_line(run("corrupt", dataset_name, "--out", out, "--truth", tmp_path / "t.json"))
        assert "truth file may be missing" in line and f"kept: dataset '{out}' written (4 added" in line
    finally:
        if store.exists(out):
            store.delete(out)

    with monkeypatch.context() as m:  # undone before the dataset_name fixture lists the datasets
        m.setattr(store, "list_datasets", ctrl_c)
        line = interrupted_line(run("datasets"))
    assert line == ROLLED_BACK
