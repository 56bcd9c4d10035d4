"""Exports that load in the peers' own tools without edits, and come back into cvcurate unchanged.

* cvcurate -> each format -> ``cvcurate import``: the same boxes (COCO and YOLO floats within
  1e-6 px; VOC whole pixels rounded outward, each edge within 1 px, integer boxes identical),
  classes and splits;
* VOC: FiftyOne's VOC importer reads every box within 1 px of the source (origin 0), and the
  devkit's origin 1 (``--voc-origin 1``) comes back exactly through ``cvcurate import``, which reads
  the origin from the export's ``cvcurate_voc.json``;
* COCO: pycocotools and FiftyOne's COCO importer load every split with its image and box counts;
* YOLO: data.yaml has ``path`` (the final absolute folder; none with ``--yolo-path relative``),
  ``train``, ``val``, ``test``, ``nc`` and ``names``; resolved as Ultralytics documents it
  (implemented here in a few lines: Ultralytics is AGPL and never imported) from another working
  directory, it names the exported images; FiftyOne's YOLOv5 importer loads every split; a dataset
  without splits exports train only, with ``val:`` naming the train folder (Ultralytics requires a
  val key) and one line saying so and how to split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cvcurate import formats, store
from cvcurate.cli import app
from cvcurate.formats.writers import export_names, voc_pixels
from cvcurate.stages.export import export
from cvcurate.types import Annotations, LabelSet
from tests import makedata as md

runner = CliRunner()
SPLITS = ("train", "val", "test")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def stored(tmp_path, name, splits=SPLITS):
    """A dataset with fractional and integer boxes, boxes at the image edges and a zero-width one,
    an image without boxes, two images of one name (two folders) and two of one stem (.jpg, .png);
    ``splits`` given round robin (None: no split)."""
    a = md.make_labels(tmp_path / "src" / "a", n=7, width=64, height=48)
    b = md.make_labels(tmp_path / "src" / "b", n=1, width=64, height=48)  # img_000.jpg again
    c = md.make_labels(tmp_path / "src" / "c", n=2, width=64, height=48, ext=".png")  # img_000.png, img_001.png
    records = a.records + b.records + c.records
    for k, r in enumerate(records):
        r.split = splits[k % len(splits)] if splits else None
        if len(r.gt) and k % 2:
            r.gt = Annotations(r.gt.xyxy + np.array([0.371, 0.5, 0.629, 0.25]), r.gt.class_id)
    records[0].gt = Annotations([[0, 0, 64, 48], [10.5, 3.25, 10.5, 9.75], [30, 7, 30, 12], [60.2, 40.7, 64, 48]],
                                [0, 1, 2, 1])
    store.write(LabelSet(list(md.CLASSES), records), name)
    return store.read(name)


def by_export_name(labels):
    """The stored records by their file name in the export."""
    return dict(zip(export_names(labels.records), labels.records))


def names_of(labels, rec):
    return [labels.classes[c] for c in rec.gt.class_id]


def check_voc_box(got, src):
    """``got`` (whole pixels) holds ``src`` rounded outward, each edge within 1 px."""
    got, src = np.asarray(got, float).reshape(-1, 4), np.asarray(src, float).reshape(-1, 4)
    assert np.all(np.abs(got - src) <= 1 + 1e-9), (got, src)
    assert np.all(got == np.round(got)), got
    assert np.all(got[:, :2] <= src[:, :2] + 1e-6) and np.all(got[:, 2:] >= src[:, 2:] - 1e-6), (got, src)
    whole = np.all(np.abs(src - np.round(src)) < 1e-6, axis=1) & np.all(src[:, 2:] > src[:, :2], axis=1)
    assert np.array_equal(got[whole], np.round(src[whole])), (got, src)


# ---------------------------------------------------------------------------------------------
# VOC's whole pixels
# ---------------------------------------------------------------------------------------------
def test_voc_pixels_round_outward_and_never_collapse():
    got = voc_pixels(np.array([[0.4, 1.6, 10.2, 20.0], [4.000000000000001, 3.9999999999999996, 20, 19.999999999999996],
                               [5, 5, 5, 5], [64, 48, 64, 48], [3.2, 4, 3.7, 9]]), 64, 48)
    assert got.tolist() == [[0, 1, 11, 20], [4, 4, 20, 20], [5, 5, 6, 6], [63, 47, 64, 48], [3, 4, 4, 9]]


# ---------------------------------------------------------------------------------------------
# cvcurate -> format -> cvcurate
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_round_trip_gives_the_same_boxes_classes_and_splits(tmp_path, dataset_name, fmt):
    src = stored(tmp_path, dataset_name)
    res = export(dataset_name, tmp_path / "out", format=fmt)
    assert res.images == len(src.records) and res.boxes == src.num_boxes and res.notes == []
    back, report = formats.load(tmp_path / "out")
    assert report.format == fmt and report.rejected == 0
    assert set(back.classes) == set(src.classes)
    want = by_export_name(src)
    assert sorted(Path(r.filepath).name for r in back.records) == sorted(want)
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    listed = {Path(d["file"]).name: d for d in doc["images"]}
    for r in back.records:
        s = want[Path(r.filepath).name]
        assert r.split == s.split
        assert names_of(back, r) == names_of(src, s)
        if fmt == "voc":
            check_voc_box(r.gt.xyxy, s.gt.xyxy)
        else:
            np.testing.assert_allclose(r.gt.xyxy.reshape(-1, 4), s.gt.xyxy.reshape(-1, 4), atol=1e-6, rtol=0)
        # the manifest holds the boxes as the export holds them
        np.testing.assert_allclose(np.array([row[1:] for row in listed[Path(r.filepath).name]["boxes"]],
                                            float).reshape(-1, 4), r.gt.xyxy.reshape(-1, 4), atol=1e-6, rtol=0)
    if fmt == "voc":
        assert doc["voc_origin"] == 0 and doc["settings"]["voc_origin"] == 0
        assert len(list((tmp_path / "out" / "Annotations").glob("*.xml"))) == len(src.records)  # unique stems


def _bndboxes(xml: Path) -> list[list[int]]:
    from xml.etree import ElementTree as ET

    return [[int(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
            for b in ET.parse(xml).getroot().iter("bndbox")]


def test_voc_origin_1_is_the_devkit_convention_and_comes_back_exactly(tmp_path, dataset_name):
    src = stored(tmp_path, dataset_name)
    r = run("export", dataset_name, "--format", "voc", "--voc-origin", "1", "--out", tmp_path / "one")
    assert r.exit_code == 0, r.output
    export(dataset_name, tmp_path / "zero", format="voc")
    for xml in sorted((tmp_path / "zero" / "Annotations").glob("*.xml")):
        zero, one = _bndboxes(xml), _bndboxes(tmp_path / "one" / "Annotations" / xml.name)
        assert one == [[x1 + 1, y1 + 1, x2, y2] for x1, y1, x2, y2 in zero]
    doc = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert doc["voc_origin"] == 1 and doc["settings"]["voc_origin"] == 1
    assert json.loads((tmp_path / "one" / "cvcurate_voc.json").read_text())["voc_origin"] == 1
    zero_doc = json.loads((tmp_path / "zero" / "manifest.json").read_text())
    assert [d["boxes"] for d in doc["images"]] == [d["boxes"] for d in zero_doc["images"]]
    # cvcurate import reads the origin the export was written with, whatever --voc-origin says
    want = by_export_name(src)
    for asked in ("0", "1", "auto"):
        back, report = formats.load(tmp_path / "one", formats.ImportOptions(voc_origin=asked))
        assert report.rejected == 0
        for rec in back.records:
            check_voc_box(rec.gt.xyxy, want[Path(rec.filepath).name].gt.xyxy)
        assert any("cvcurate_voc.json" in n for n in report.notes), report.notes


def test_fiftyone_voc_importer_reads_every_box_within_1px(tmp_path, dataset_name):
    import fiftyone as fo

    src = stored(tmp_path, dataset_name)
    export(dataset_name, tmp_path / "out", format="voc")
    ds = fo.Dataset.from_dir(dataset_dir=str(tmp_path / "out"), dataset_type=fo.types.VOCDetectionDataset,
                             data_path="JPEGImages", labels_path="Annotations", label_field="ground_truth",
                             name=f"{dataset_name}_fo")
    try:
        want = by_export_name(src)
        assert len(ds) == len(src.records)
        n_boxes = 0
        for fp, dets in zip(ds.values("filepath"), ds.values("ground_truth")):
            s = want[Path(fp).name]
            dets = dets.detections if dets else []
            n_boxes += len(dets)
            got = [[x * s.width, y * s.height, (x + w) * s.width, (y + h) * s.height]
                   for x, y, w, h in (d.bounding_box for d in dets)]
            assert [d.label for d in dets] == names_of(src, s)
            check_voc_box(np.round(got, 6), s.gt.xyxy)
        assert n_boxes == src.num_boxes
    finally:
        ds.delete()


# ---------------------------------------------------------------------------------------------
# COCO: pycocotools and FiftyOne
# ---------------------------------------------------------------------------------------------
def test_coco_loads_in_pycocotools_and_fiftyone(tmp_path, dataset_name):
    import fiftyone as fo
    from pycocotools.coco import COCO

    src = stored(tmp_path, dataset_name)
    out = tmp_path / "out"
    export(dataset_name, out, format="coco")
    want = by_export_name(src)
    for split in SPLITS:
        recs = [r for r in src.records if r.split == split]
        ann = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(ann))
        assert len(coco.getImgIds()) == len(recs) and len(coco.getAnnIds()) == sum(len(r.gt) for r in recs)
        for img in coco.loadImgs(coco.getImgIds()):
            s = want[img["file_name"]]
            assert (out / "images" / split / img["file_name"]).is_file()
            boxes = [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))]
            np.testing.assert_allclose(np.array([[x, y, x + w, y + h] for x, y, w, h in boxes]).reshape(-1, 4),
                                       s.gt.xyxy.reshape(-1, 4), atol=1e-6)
        ds = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=str(out / "images" / split),
                                 labels_path=str(ann), label_types="detections", label_field="ground_truth",
                                 name=f"{dataset_name}_{split}")
        try:
            assert len(ds) == len(recs)
            assert sum(len(d.detections) for d in ds.values("ground_truth") if d) == sum(len(r.gt) for r in recs)
        finally:
            ds.delete()


# ---------------------------------------------------------------------------------------------
# YOLO: data.yaml as Ultralytics resolves it, FiftyOne's YOLOv5 importer
# ---------------------------------------------------------------------------------------------
DATASETS_DIR = Path("/nonexistent/ultralytics/datasets")  # where Ultralytics puts a relative path it cannot find


def ultralytics_split_dirs(yaml_arg: str) -> dict[str, list[Path]]:
    """The folders of data.yaml's splits as Ultralytics' documented rule resolves them, from the
    current working directory: ``train`` and ``val`` are required; the dataset root is ``path``,
    else the yaml's own folder (as the yaml was named); a relative root that does not exist is
    taken inside Ultralytics' datasets folder; each split is joined to the root."""
    doc = yaml.safe_load(Path(yaml_arg).read_text())
    assert "train" in doc and "val" in doc, "'train' and 'val' are required in all data YAMLs"
    assert "names" in doc and (len(doc["names"]) == doc["nc"] if "nc" in doc else True)
    root = Path(doc.get("path") or Path(yaml_arg).parent)
    if not root.exists() and not root.is_absolute():
        root = DATASETS_DIR / root
    out = {}
    for key in ("train", "val", "test"):
        if doc.get(key):
            vals = [doc[key]] if isinstance(doc[key], str) else doc[key]
            out[key] = [Path(os.path.abspath(root / v)) for v in vals]
    return out


def label_of(img: Path) -> Path:
    """Ultralytics' label path: the last /images/ -> /labels/, the suffix -> .txt."""
    s = str(img)
    i = s.rfind(f"{os.sep}images{os.sep}")
    return Path(s[:i] + f"{os.sep}labels{os.sep}" + s[i + 8:]).with_suffix(".txt")


def check_ultralytics_view(yaml_arg: str, out: Path, want: dict[str, int]) -> None:
    """Ultralytics, given ``yaml_arg``, finds ``want[key]`` images of the export ``out`` under each
    key, each with its label file."""
    dirs = ultralytics_split_dirs(yaml_arg)
    assert {k: sum(len(list(f.iterdir())) for f in folders) for k, folders in dirs.items()} == want, dirs
    for folders in dirs.values():
        imgs = [p for f in folders for p in f.iterdir()]
        assert all(label_of(p).is_file() and out.resolve() in p.resolve().parents for p in imgs), imgs


def test_data_yaml_resolves_from_any_working_directory(tmp_path, dataset_name, monkeypatch):
    src = stored(tmp_path, dataset_name)
    out = tmp_path / "exports" / "abs"
    export(dataset_name, out, format="yolo")
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert list(doc) == ["path", "train", "val", "test", "nc", "names"]
    assert doc["path"] == str(out.absolute()) and ".tmp-" not in doc["path"]  # the final folder
    assert (doc["train"], doc["val"], doc["test"]) == ("images/train", "images/val", "images/test")
    assert doc["nc"] == 3 and doc["names"] == {0: "crack", 1: "pit", 2: "scratch"}
    rel = tmp_path / "exports" / "rel"
    r = run("export", dataset_name, "--format", "yolo", "--yolo-path", "relative", "--out", rel)
    assert r.exit_code == 0, r.output
    rdoc = yaml.safe_load((rel / "data.yaml").read_text())
    assert "path" not in rdoc and rdoc["train"] == "images/train"
    assert json.loads((rel / "manifest.json").read_text())["settings"]["yolo_path"] == "relative"
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    want = {k: sum(r.split == k for r in src.records) for k in SPLITS}
    for yaml_arg in (str(out / "data.yaml"), os.path.relpath(out / "data.yaml")):
        check_ultralytics_view(yaml_arg, out, want)
    for yaml_arg in (str(rel / "data.yaml"), os.path.relpath(rel / "data.yaml")):
        check_ultralytics_view(yaml_arg, rel, want)
    # what earlier versions wrote (path: .) resolves from the working directory: nothing there
    (rel / "old.yaml").write_text(yaml.safe_dump({**rdoc, "path": "."}))
    assert not ultralytics_split_dirs(str(rel / "old.yaml"))["train"][0].exists()
    # cvcurate imports both
    for folder in (out, rel):
        back, report = formats.load(folder)
        assert report.rejected == 0 and len(back.records) == len(src.records)
        assert sorted(r.split for r in back.records) == sorted(r.split for r in src.records)


def test_fiftyone_yolov5_importer_loads_every_split(tmp_path, dataset_name):
    import fiftyone as fo

    src = stored(tmp_path, dataset_name)
    for mode in ("absolute", "relative"):
        out = tmp_path / mode
        export(dataset_name, out, format="yolo", yolo_path=mode)
        for split in SPLITS:
            recs = [r for r in src.records if r.split == split]
            ds = fo.Dataset.from_dir(dataset_dir=str(out), dataset_type=fo.types.YOLOv5Dataset, split=split,
                                     yaml_path=str(out / "data.yaml"), label_field="ground_truth",
                                     name=f"{dataset_name}_{mode}_{split}")
            try:
                assert len(ds) == len(recs), (mode, split)
                dets = [d.detections if d else [] for d in ds.values("ground_truth")]
                assert sum(map(len, dets)) == sum(len(r.gt) for r in recs)
                want = by_export_name(src)
                for fp, ds_dets in zip(ds.values("filepath"), dets):
                    s = want[Path(fp).name]
                    assert Path(fp).resolve().parent == (out / "images" / split).resolve()
                    got = [[x * s.width, y * s.height, (x + w) * s.width, (y + h) * s.height]
                           for x, y, w, h in (d.bounding_box for d in ds_dets)]
                    np.testing.assert_allclose(np.array(got).reshape(-1, 4), s.gt.xyxy.reshape(-1, 4), atol=1e-6)
            finally:
                ds.delete()


def test_yolo_without_splits_exports_train_and_says_how_to_split(tmp_path, dataset_name):
    src = stored(tmp_path, dataset_name, splits=None)
    out = tmp_path / "out"
    r = run("export", dataset_name, "--format", "yolo", "--out", out)
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if ln.startswith("data.yaml:")]
    assert len(said) == 1, r.output
    assert "val: names the train folder" in said[0] and "Ultralytics requires a val key" in said[0]
    assert f"cvcurate split {dataset_name} --val 0.2 --seed 0" in said[0]
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert (doc["train"], doc["val"]) == ("images/train", "images/train") and "test" not in doc
    assert sorted(p.name for p in (out / "images").iterdir()) == ["train"]
    assert len(list((out / "labels" / "train").glob("*.txt"))) == len(src.records)
    assert json.loads((out / "manifest.json").read_text())["settings"]["notes"] == said
    check_ultralytics_view(str(out / "data.yaml"), out, {"train": len(src.records), "val": len(src.records)})
    # cvcurate import: the images come back as train (the data.yaml key), with their boxes
    back, report = formats.load(out)
    assert report.rejected == 0 and {r.split for r in back.records} == {"train"}
    assert len(back.records) == len(src.records) and back.num_boxes == src.num_boxes


def test_yolo_split_names_a_data_yaml_cannot_hold(tmp_path, dataset_name):
    src = stored(tmp_path, dataset_name, splits=("train", "trainval", "val"))
    out = tmp_path / "out"
    res = export(dataset_name, out, format="yolo", log=lambda line: None)
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert doc["train"] == ["images/train", "images/trainval"] and doc["val"] == "images/val"
    assert any("trainval" in n for n in res.notes)
    n_trainval = sum(r.split == "trainval" for r in src.records)
    assert len(list((out / "images" / "trainval").iterdir())) == n_trainval
    # a split Ultralytics cannot name: one line, exit 2, nothing written
    store.delete(dataset_name)
    stored(tmp_path, dataset_name, splits=("train", "holdout"))
    line = one_error_line(run("export", dataset_name, "--format", "yolo", "--out", tmp_path / "odd"))
    assert "'holdout'" in line and "train, val and test only" in line, line
    assert not (tmp_path / "odd").exists()
    assert run("export", dataset_name, "--format", "coco", "--out", tmp_path / "odd").exit_code == 0


def test_export_options_are_checked(tmp_path, dataset_name):
    stored(tmp_path, dataset_name)
    for args, says in ((("--format", "voc", "--voc-origin", "2"), "--voc-origin must be 0 or 1"),
                       (("--format", "coco", "--voc-origin", "1"), "--voc-origin is an option of --format voc"),
                       (("--format", "yolo", "--yolo-path", "somewhere"), "--yolo-path must be one of"),
                       (("--format", "voc", "--yolo-path", "relative"), "--yolo-path is an option of --format yolo")):
        line = one_error_line(run("export", dataset_name, *args, "--out", tmp_path / "x"))
        assert says in line, line
        assert not (tmp_path / "x").exists()


def test_yolo_export_of_one_split_imports_back_as_that_split(tmp_path, dataset_name):
    """An export of the val images alone names images/val under train and val (Ultralytics needs
    both): cvcurate's import gives them back as val (the key its folder is named after), not train."""
    src = stored(tmp_path, dataset_name)
    out = tmp_path / "out"
    r = run("export", dataset_name, "--format", "yolo", "--out", out, "--split", "val")
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load((out / "data.yaml").read_text())
    assert doc["train"] == doc["val"] == "images/val"
    back, report = formats.load(out)
    n_val = sum(r.split == "val" for r in src.records)
    assert report.rejected == 0 and len(back.records) == n_val > 0
    assert {r.split for r in back.records} == {"val"}
