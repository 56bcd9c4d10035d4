"""Hostile import inputs (issue 11): class names differing by case or spaces, non-integer YOLO
classes, two images of one stem, broken symlinks, 1-px boxes, markup characters in names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cvcurate import formats, store
from cvcurate.stages import datasets
from cvcurate.cli import app
from cvcurate.errors import InputError
from cvcurate.formats import ImportOptions
from tests import layouts as L
from tests import makedata as md


def invariant(report):
    s = report.summary()
    assert s["images_read"] == s["imported"] + s["imported_with_warnings"] + s["rejected"]
    return s


def by_name(labels):
    return {Path(r.filepath).name: r for r in labels.records}


def names_of(labels, rec):
    return [labels.classes[c] for c in rec.gt.class_id]


def _voc_with_names(root: Path, names_per_image: list[list[str]]) -> Path:
    for k, names in enumerate(names_per_image):
        md.make_image(root / "images" / f"i{k}.jpg", seed=k)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        boxes = [(n, (2 + 3 * j, 2, 12 + 3 * j, 20)) for j, n in enumerate(names)]
        (root / "annotations" / f"i{k}.xml").write_text(L.voc_xml(f"i{k}.jpg", 64, 48, boxes))
    return root


# ------------------------------------------------------------------------------ class names
def test_class_names_stripped_and_case_merged_by_default(tmp_path):
    root = _voc_with_names(tmp_path, [[" Scratches ", "scratches"], ["scratches", "pit"],
                                      ["Scratches", "scratches", "scratches"]])
    labels, report = formats.load(root)
    assert labels.classes == ["pit", "scratches"]  # 'scratches' has 4 boxes, 'Scratches' 2
    assert labels.class_counts() == {"pit": 1, "scratches": 6}
    notes = " | ".join(report.notes)
    assert "surrounding whitespace stripped from ' Scratches ' -> 'Scratches'" in notes
    assert "class names equal up to case merged: 'Scratches' -> 'scratches'" in notes
    assert report.settings["merge_case"] is True


def test_keep_case_and_class_map(tmp_path):
    root = _voc_with_names(tmp_path / "v", [[" Scratches ", "scratches"], ["scratches", "pit"]])
    labels, report = formats.load(root, ImportOptions(merge_case=False))
    assert labels.classes == ["Scratches", "pit", "scratches"]  # stripped, never merged
    # a YAML class map: explicit control; names it mentions are never case-merged
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"Scratches": "scratch_big", "pit": "pitted", "nosuch": "x"}))
    labels, report = formats.load(root, ImportOptions(class_map=cmap))
    assert labels.classes == ["pitted", "scratch_big", "scratches"]
    notes = " | ".join(report.notes)
    assert "class map: renamed 'Scratches' -> 'scratch_big', 'pit' -> 'pitted'" in notes
    assert "'nosuch' not found in the data" in notes
    assert ["pit", "pitted"] in report.settings["class_map"]
    # JSON works too; mapping each spelling to itself keeps them apart
    jmap = tmp_path / "map.json"
    jmap.write_text(json.dumps({"Scratches": "Scratches", "scratches": "scratches"}))
    labels, _ = formats.load(root, ImportOptions(class_map=jmap))
    assert labels.classes == ["Scratches", "pit", "scratches"]
    # a bad map is one clear error
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(InputError, match="expected a mapping"):
        formats.load(root, ImportOptions(class_map=tmp_path / "bad.yaml"))
    with pytest.raises(InputError, match="does not exist"):
        formats.load(root, ImportOptions(class_map=tmp_path / "none.yaml"))


def test_fixed_class_list_takes_its_spelling(tmp_path):
    root = _voc_with_names(tmp_path, [["Scratches ", "PIT"]])
    labels, report = formats.load(root, ImportOptions(classes=["pit", "scratches"]))
    assert names_of(labels, labels.records[0]) == ["scratches", "pit"]
    assert any("the --classes spelling" in n for n in report.notes)


def test_closed_formats_merge_declared_names(tmp_path):
    # YOLO data.yaml with ' crack' and 'Crack': one class, its boxes kept
    md.write_yolo(tmp_path, n=6, splits=False)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": [" crack", "Crack", "scratch"]}))
    labels, report = formats.load(tmp_path)
    assert len(labels.classes) == 2 and "scratch" in labels.classes
    assert labels.num_boxes == 6 and invariant(report)["rejected"] == 0


# ------------------------------------------------------------------------------ YOLO class index
def test_yolo_non_integer_class_is_a_bad_line(tmp_path):
    md.write_yolo(tmp_path, n=3, splits=False)
    (tmp_path / "labels" / "img_000.txt").write_text("1.5 0.5 0.5 0.2 0.2\n1.0 0.5 0.5 0.2 0.2\n-0.5 0.5 0.5 0.1 0.1\n")
    labels, report = formats.load(tmp_path)
    msgs = " | ".join(report.entries[0].messages)
    assert "line 1 '1.5 0.5 0.5 0.2 0.2': class '1.5' is not an integer; left out" in msgs
    assert "class '-0.5' is not an integer" in msgs
    assert names_of(labels, by_name(labels)["img_000.jpg"]) == ["pit"]  # '1.0' is class 1


# ------------------------------------------------------------------------------ counting images
def test_two_images_of_one_stem_are_both_counted(tmp_path):
    md.write_voc(tmp_path, n=4)  # 4 images, 4 XMLs
    md.make_image(tmp_path / "images" / "img_001.png", seed=9)  # 5th file, same stem as img_001.jpg
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    assert s["images_read"] == 5 and s["rejected"] == 1 and len(labels) == 4
    rejected = [e for e in report.entries if e.status == "rejected"]
    assert Path(rejected[0].path).name == "img_001.png"
    assert "duplicate image stem: img_001.png has the stem of img_001.jpg" in rejected[0].messages[0]
    # the XML's <filename> decides which one it describes
    xml = tmp_path / "annotations" / "img_001.xml"
    xml.write_text(xml.read_text().replace("img_001.jpg", "img_001.png"))
    labels, report = formats.load(tmp_path)
    assert invariant(report)["images_read"] == 5
    assert "img_001.png" in by_name(labels) and "img_001.jpg" not in by_name(labels)


def test_yolo_two_images_of_one_stem_share_the_label(tmp_path):
    md.write_yolo(tmp_path, n=3, splits=False)
    md.make_image(tmp_path / "images" / "img_001.png", seed=5)
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    assert s["images_read"] == 4 and s["rejected"] == 0
    got = by_name(labels)
    assert len(got["img_001.png"].gt) == len(got["img_001.jpg"].gt) == 1
    assert any("shared label file: img_001.txt" in m for e in report.entries for m in e.messages)


@pytest.mark.parametrize("fmt", ["voc", "yolo", "severstal"])
def test_looping_and_broken_symlinks_are_rejected_images(tmp_path, fmt):
    if fmt == "voc":
        md.write_voc(tmp_path, n=3)
        folder = tmp_path / "images"
    elif fmt == "yolo":
        md.write_yolo(tmp_path, n=3, splits=False)
        folder = tmp_path / "images"
    else:
        md.write_severstal(tmp_path)
        folder = tmp_path / "train_images"
    os.symlink("loop.jpg", folder / "loop.jpg")  # points to itself
    os.symlink("gone.jpg", folder / "dangling.jpg")
    labels, report = formats.load(tmp_path, ImportOptions(format=fmt))
    s = invariant(report)
    assert s["images_read"] == 5 and s["rejected"] == 2
    msgs = {Path(e.path).name: " | ".join(e.messages) for e in report.entries if e.status == "rejected"}
    assert "broken symlink" in msgs["loop.jpg"] and "broken symlink" in msgs["dangling.jpg"]


# ------------------------------------------------------------------------------ degenerate boxes
def test_one_pixel_boxes_are_kept_as_written(tmp_path):
    # NEU-DET-like: a 200x200 frame for a 416x416 image, a 1-based file with xmin == xmax
    md.make_image(tmp_path / "images" / "a.jpg", 416, 416)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(L.voc_xml("a.jpg", 200, 200, [
        ("crack", (10, 10, 10, 50)),   # 1-based: xmin == xmax is one column wide
        ("crack", (20, 20, 60, 20)),   # one row high
        ("crack", (30, 30, 80, 80)),   # fine
    ]))
    labels, report = formats.load(tmp_path, ImportOptions(voc_origin="1"))
    wh = labels.records[0].gt.wh
    # a 1 px side is a valid box: kept as written (rescaled with the rest: 2.08 px at 416), no warning
    np.testing.assert_allclose(wh[:, 0], [1 * 2.08, 41 * 2.08, 51 * 2.08])
    np.testing.assert_allclose(wh[:, 1], [41 * 2.08, 1 * 2.08, 51 * 2.08])
    assert "degenerate box" not in report.message_counts()
    # origin 0: xmin == xmax is zero wide: degenerate, kept and reported
    labels, report = formats.load(tmp_path, ImportOptions(voc_origin="0"))
    assert labels.records[0].gt.wh[0, 0] == 0 and report.message_counts()["degenerate box"] == 2
    msgs = [m for m in report.entries[0].messages if m.startswith("degenerate box")]
    assert msgs[0].startswith("degenerate box: zero or negative area") and msgs[0].endswith("kept")


def test_degenerate_boxes_in_coco_and_yolo(tmp_path):
    items = [L.Item("train", "a", 64, 48, [("crack", (5, 5, 5, 20)), ("pit", (5, 5, 6, 20)), ("pit", (1, 1, 30, 30))])]
    L.fiftyone_coco(tmp_path / "c", items)
    labels, report = formats.load(tmp_path / "c")
    assert report.message_counts()["degenerate box"] == 1  # zero width only: the 1 px box is valid
    np.testing.assert_allclose(labels.records[0].gt.wh[:, 0], [0, 1, 29])
    root = tmp_path / "y"
    md.make_image(root / "images" / "a.jpg", 64, 48)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text(L.yolo_lines(items[0]))
    (root / "data.yaml").write_text(yaml.safe_dump({"names": L.CLASSES}))
    labels, report = formats.load(root)
    assert report.message_counts()["degenerate box"] == 1
    np.testing.assert_allclose(labels.records[0].gt.wh[:, 0], [0, 1, 29], atol=1e-6)


def test_degenerate_box_survives_the_store(tmp_path, dataset_name):
    from cvcurate.stages import imports as importer

    md.make_image(tmp_path / "images" / "a.jpg", 416, 416)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(L.voc_xml("a.jpg", 200, 200, [("crack", (10, 10, 10, 50))]))
    importer.import_dataset(tmp_path, dataset_name, ImportOptions(voc_origin="0"))  # xmin == xmax: zero wide
    rec = store.read(dataset_name).records[0]
    assert rec.gt.wh[0, 0] == 0


# ------------------------------------------------------------------------------ CLI output
def test_cli_import_prints_names_and_paths_with_markup_intact(tmp_path):
    root = tmp_path / "data [bold]x"
    md.write_voc(root, n=2)
    name = "t_ds [red]1 ü"
    report = tmp_path / "rep [i].json"
    r = CliRunner().invoke(app, ["import", str(root), "--name", name, "--report", str(report)])
    try:
        assert r.exit_code == 0, r.output
        assert f"dataset {name}: 2 added" in r.output
        assert str(report) in r.output
        r = CliRunner().invoke(app, ["datasets"])
        assert name in r.output
        r = CliRunner().invoke(app, ["info", name])
        assert r.exit_code == 0 and f"{name}: 2 images" in r.output
    finally:
        if store.exists(name):
            store.delete(name)


def test_cli_class_map_is_applied_and_recorded(tmp_path, dataset_name):
    root = _voc_with_names(tmp_path / "v", [["Scratches", "pit"], ["scratches"]])
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"pit": "pitted.surface"}))
    r = CliRunner().invoke(app, ["import", str(root), "--name", dataset_name, "--class-map", str(cmap),
                                 "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "class map: renamed 'pit' -> 'pitted.surface'" in r.output
    assert "equal up to case merged" in r.output
    info = datasets.describe(dataset_name)
    assert sorted(info["classes"]) == ["Scratches", "pitted.surface"]  # a 1-1 tie: the first spelling
    assert info["history"][-1]["settings"]["class_map"] == [["pit", "pitted.surface"]]
    r = CliRunner().invoke(app, ["import", str(root), "--name", dataset_name + "_k", "--keep-case",
                                 "--report", str(tmp_path / "r2.json")])
    try:
        assert r.exit_code == 0 and sorted(datasets.describe(dataset_name + "_k")["classes"]) == ["Scratches", "pit", "scratches"]
    finally:
        if store.exists(dataset_name + "_k"):
            store.delete(dataset_name + "_k")


def test_zero_width_voc_box_is_flagged_by_score(tmp_path):
    """The path of issue 16: xmin == xmax read as written (origin 0) is zero wide and must end as a
    degenerate issue whatever the rescale; read 1-based it is a valid 1 px box (2.08 px at 416),
    kept as written and not degenerate."""
    from cvcurate.scoring import score

    md.make_image(tmp_path / "images" / "a.jpg", 416, 416)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(L.voc_xml("a.jpg", 200, 200, [
        ("crack", (10, 10, 10, 50)), ("crack", (30, 30, 80, 80))]))
    for origin in ("0", "1", "auto"):
        labels, report = formats.load(tmp_path, ImportOptions(voc_origin=origin))
        found = [i for i in score(labels).issues if i.type == "degenerate"]
        assert [i.box for i in found] == ([0] if report.settings["voc_origin"] == 0 else []), origin
