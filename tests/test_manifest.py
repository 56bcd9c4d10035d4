"""Export manifests (pure): canonical bytes, no absolute paths, and the diff of two versions."""

from __future__ import annotations

import json

import pytest

from cvcurate import manifest as mf
from cvcurate.errors import InputError


def entry(file, boxes, sha="a" * 64, split="train"):
    return mf.ImageEntry(file=file, sha256=sha, split=split, width=100, height=100, boxes=boxes)


def build(entries):
    return mf.build(entries, classes=["crack", "pit"], format="yolo", lineage={"imports": []}, version="0.1.0")


def test_same_data_same_bytes_and_sorted():
    a = [entry("images/train/b.jpg", [["crack", 1, 2, 3, 4.5]]), entry("images/train/a.jpg", [])]
    m1, m2 = mf.dumps(build(a)), mf.dumps(build(list(reversed(a))))
    assert m1 == m2
    doc = json.loads(m1)
    assert [d["file"] for d in doc["images"]] == ["images/train/a.jpg", "images/train/b.jpg"]
    assert doc["counts"]["per_split"]["train"]["boxes_per_class"] == {"crack": 1, "pit": 0}
    assert doc["images"][1]["label_sha256"] == mf.label_hash([["crack", 1, 2, 3, 4.5]])


def test_settings_say_how_the_files_were_written():
    e = [entry("JPEGImages/a.jpg", [["crack", 1, 2, 4, 5]])]
    doc = mf.build(e, classes=["crack"], format="voc", lineage={}, version="0.1.0",
                   settings={"voc_origin": 1, "voc_coordinates": "whole pixels"})
    assert doc["settings"] == {"voc_origin": 1, "voc_coordinates": "whole pixels"}
    assert doc["voc_origin"] == 1  # where earlier versions wrote it
    assert "settings" not in build(e) and "voc_origin" not in build(e)
    again = mf.build(e, classes=["crack"], format="voc", lineage={}, version="0.1.0",
                     settings={"voc_coordinates": "whole pixels", "voc_origin": 1})
    assert mf.dumps(doc) == mf.dumps(again)


def test_absolute_paths_refused():
    with pytest.raises(ValueError, match="relative"):
        build([entry("/abs/a.jpg", [])])
    with pytest.raises(ValueError, match="relative"):
        build([entry("../a.jpg", [])])


def test_diff_finds_relabel_removal_move_and_images():
    old = build([entry("a.jpg", [["crack", 0, 0, 10, 10], ["pit", 50, 50, 60, 60], ["pit", 20, 20, 40, 40]]),
                 entry("b.jpg", [["crack", 0, 0, 5, 5]], sha="b" * 64),
                 entry("c.jpg", [["pit", 1, 1, 9, 9]], sha="c" * 64)])
    new = build([entry("a.jpg", [["pit", 0, 0, 10, 10], ["pit", 22, 22, 42, 42]]),
                 entry("b.jpg", [["crack", 0, 0, 5, 5]], sha="b" * 64),
                 entry("d.jpg", [["crack", 3, 3, 8, 8]], sha="d" * 64)])
    d = mf.diff(old, new)
    assert d.images_added == ["d.jpg"] and d.images_removed == ["c.jpg"] and d.images_changed == ["a.jpg"]
    kinds = sorted((c.file, c.kind, (c.old or c.new)[0]) for c in d.boxes)
    assert kinds == [("a.jpg", "moved", "pit"), ("a.jpg", "relabelled", "crack"), ("a.jpg", "removed", "pit"),
                     ("c.jpg", "removed", "pit"), ("d.jpg", "added", "crack")]
    assert d.per_class() == {"crack": {"added": 1, "removed": 0, "moved": 0, "relabelled": 1},
                             "pit": {"added": 0, "removed": 2, "moved": 1, "relabelled": 0}}
    assert mf.diff(old, old).empty


def test_renamed_image_is_matched_by_content():
    old = build([entry("x/a.jpg", [["crack", 0, 0, 10, 10]], sha="e" * 64)])
    new = build([entry("y/a.jpg", [["crack", 0, 0, 10, 10]], sha="e" * 64)])
    d = mf.diff(old, new)
    assert d.empty and not d.boxes


def test_read_refuses_what_is_not_a_manifest(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    (tmp_path / "y.json").write_text("not json")
    for p, msg in ((tmp_path / "x.json", "not a cvcurate manifest"), (tmp_path / "y.json", "not JSON"),
                   (tmp_path / "none", "does not exist"), (tmp_path, "does not exist")):
        with pytest.raises(InputError, match=msg):
            mf.read(p)
