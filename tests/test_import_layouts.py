"""Layouts the ecosystem exports (issue 19): Roboflow VOC/COCO/YOLO, COCO's standard folders,
Ultralytics data.yaml variants, Darknet, the VOC devkit with ImageSets, crowd boxes, the VOC
coordinate origin, and agreement with FiftyOne's own VOC and COCO importers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cvcurate import formats, store
from cvcurate.stages import imports as importer
from cvcurate.stages import datasets
from cvcurate.cli import app
from cvcurate.errors import InputError
from cvcurate.formats import ImportOptions
from tests import layouts as L


def invariant(report):
    s = report.summary()
    assert s["images_read"] == s["imported"] + s["imported_with_warnings"] + s["rejected"]
    return s


def boxes_by_image(labels):
    """{image name: (split, sorted [(class, rounded xyxy)])}"""
    out = {}
    for r in labels.records:
        pairs = sorted((labels.classes[c], tuple(np.round(b, 3))) for c, b in zip(r.gt.class_id, r.gt.xyxy.tolist()))
        out[Path(r.filepath).name] = (r.split, pairs)
    return out


def expected_boxes(items, splits=True):
    return {f"{it.stem}.jpg": (it.split if splits else None,
                               sorted((c, tuple(float(v) for v in b)) for c, b in it.boxes)) for it in items}


# ------------------------------------------------------------------------------ Roboflow trio
def test_roboflow_exports_in_three_formats_give_identical_boxes_and_splits(tmp_path):
    items = L.small_dataset()
    got = {}
    for fmt, writer in (("voc", L.roboflow_voc), ("coco", L.roboflow_coco), ("yolo", L.roboflow_yolo)):
        root = writer(tmp_path / fmt, items)
        assert formats.detect_format(root) == fmt
        labels, report = formats.load(root)
        s = invariant(report)
        assert s["images_read"] == 7 and s["rejected"] == 0 and s["imported_with_warnings"] == 0, fmt
        assert labels.classes == L.CLASSES, fmt
        got[fmt] = boxes_by_image(labels)
    assert got["voc"] == got["coco"] == got["yolo"] == expected_boxes(items)


def test_roboflow_yolo_quirk_is_reported_and_plain_paths_work(tmp_path):
    items = L.small_dataset()
    _, report = formats.load(L.roboflow_yolo(tmp_path / "q", items))
    assert any("Roboflow '../' quirk" in n and "train/images" in n for n in report.notes)
    labels, report = formats.load(L.roboflow_yolo(tmp_path / "p", items, quirk=False))
    assert not any("quirk" in n for n in report.notes)
    assert boxes_by_image(labels) == expected_boxes(items)


@pytest.mark.parametrize("val_folder", ["valid", "val", "validation"])
def test_roboflow_exports_keep_their_val_split_whatever_the_folder_spelling(tmp_path, val_folder):
    # data.yaml says val: ../valid/images (Roboflow's own spelling) whatever the folder is called
    items = L.small_dataset()
    for fmt, writer in (("voc", L.roboflow_voc), ("coco", L.roboflow_coco), ("yolo", L.roboflow_yolo)):
        root = writer(tmp_path / fmt, items, val_folder=val_folder)
        labels, report = formats.load(root)
        assert invariant(report)["rejected"] == 0, fmt
        assert boxes_by_image(labels) == expected_boxes(items), (fmt, report.notes)
        assert not any("none of the data.yaml splits" in n for n in report.notes), fmt
        if fmt == "yolo" and val_folder != "valid":
            assert any(n.startswith("val: '../valid/images' does not exist") and f"spelled {val_folder!r}" in n
                       for n in report.notes), report.notes


@pytest.mark.parametrize("val_key, val_path, val_folder, quirk", [
    ("val", "val", "valid", True),  # the reverse: data.yaml says val, the folder is valid
    ("valid", "valid", "valid", True),  # the key spelled valid
    ("validation", "valid", "val", False),  # both spelled otherwise, no '../'
])
def test_roboflow_yolo_val_key_and_path_spellings(tmp_path, val_key, val_path, val_folder, quirk):
    items = L.small_dataset()
    root = L.roboflow_yolo(tmp_path / "r", items, quirk=quirk, val_folder=val_folder, val_key=val_key,
                           val_path=val_path)
    labels, report = formats.load(root)
    assert invariant(report)["rejected"] == 0
    assert boxes_by_image(labels) == expected_boxes(items)
    assert report.settings["yolo_layout"]["val"] == f"{'../' if quirk else ''}{val_path}/images"


def test_yolo_split_path_resolved_next_to_the_yaml(tmp_path):
    # path: names another existing folder; the split paths are relative to the yaml's folder
    items = L.small_dataset()
    root = _yolo_images_split(tmp_path / "u", items, {})
    (tmp_path / "elsewhere").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"path": "../elsewhere", "train": "images/train",
                                                    "val": "images/val", "test": "images/test", "names": L.CLASSES}))
    labels, report = formats.load(root)
    assert boxes_by_image(labels) == expected_boxes(items)
    assert any(n.startswith("train: 'images/train' does not exist") and "relative to the yaml's folder" in n
               for n in report.notes)


def test_yolo_split_that_resolves_nowhere_refuses_the_import(tmp_path, dataset_name):
    items = L.small_dataset()
    root = L.roboflow_yolo(tmp_path / "r", items, val_path="nowhere")
    with pytest.raises(InputError, match=r"data.yaml: val: '\.\./nowhere/images' could not be resolved"):
        formats.load(root)
    r = run("import", root, "--name", dataset_name)
    assert r.exit_code == 2, r.output
    assert "val: '../nowhere/images' could not be resolved" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not store.exists(dataset_name)
    # splits that are not there and no image outside the splits found (Roboflow writes val: and
    # test: for an export without them): noted, the rest imported
    root = L.roboflow_yolo(tmp_path / "t", [it for it in items if it.split == "train"])
    labels, report = formats.load(root)
    assert {r.split for r in labels.records} == {"train"}
    assert any(n.startswith("val: '../valid/images' not found") for n in report.notes)
    assert any(n.startswith("test: '../test/images' not found") for n in report.notes)


def test_roboflow_thin_boxes_kept_as_written_in_all_three_formats(tmp_path):
    # a valid 3x1 px box, a 1x4 px one and a zero-height one (the only degenerate box)
    items = [L.Item("train", "a", 64, 48, [("crack", (10, 10, 13, 11)), ("pit", (20, 5, 21, 9)),
                                          ("scratch", (30, 30, 40, 30))])]
    for fmt, writer in (("voc", L.roboflow_voc), ("coco", L.roboflow_coco), ("yolo", L.roboflow_yolo)):
        labels, report = formats.load(writer(tmp_path / fmt, items))
        np.testing.assert_allclose(labels.records[0].gt.xyxy, [b for _, b in items[0].boxes], atol=1e-5,
                                   err_msg=fmt)
        assert report.message_counts().get("degenerate box") == 1, fmt


# ------------------------------------------------------------------------------ COCO standard
@pytest.mark.parametrize("variant", ["images", "coco2017", "mmdet", "flat"])
def test_coco_standard_layouts(tmp_path, variant):
    items = [it for it in L.small_dataset() if it.split in ("train", "val")]
    root = L.coco_standard(tmp_path / "c", items, variant)
    assert formats.detect_format(root) == "coco"
    labels, report = formats.load(root)
    s = invariant(report)
    assert s["images_read"] == 5 and s["rejected"] == 0
    assert boxes_by_image(labels) == expected_boxes(items)  # split from the file name
    assert any("captions_train.json ignored" in n for n in report.notes)
    # one JSON of the layout, given as PATH, finds its images too
    year = "2017" if variant == "coco2017" else ""
    labels, report = formats.load(root / "annotations" / f"instances_val{year}.json")
    assert invariant(report)["rejected"] == 0 and {r.split for r in labels.records} == {"val"}


def test_coco_images_one_level_up_in_split_folder(tmp_path):
    # ../images/<split>/ relative to a JSON that is not in annotations/
    items = [it for it in L.small_dataset() if it.split == "train"]
    for k, it in enumerate(items):
        L._img(tmp_path / "images" / "train" / f"{it.stem}.jpg", it, k)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "instances_train.json").write_text(json.dumps(L.coco_document(items)))
    labels, report = formats.load(tmp_path / "json" / "instances_train.json")
    assert invariant(report)["rejected"] == 0 and len(labels) == len(items)


def test_several_coco_jsons_without_splits_are_refused(tmp_path):
    items = L.small_dataset()[:2]
    L.fiftyone_coco(tmp_path, items)
    (tmp_path / "other.json").write_text((tmp_path / "labels.json").read_text())
    with pytest.raises(InputError, match="several COCO JSON files"):
        formats.load(tmp_path)


def test_coco_crowd_boxes_left_out_and_counted(tmp_path):
    items = L.small_dataset()[:3]
    crowd = {"img_00": [("pit", (1, 1, 30, 30))], "img_02": [("crack", (2, 2, 9, 9)), ("pit", (3, 3, 8, 8))]}
    L.fiftyone_coco(tmp_path, items)
    (tmp_path / "labels.json").write_text(json.dumps(L.coco_document(items, crowd=crowd)))
    labels, report = formats.load(tmp_path)
    invariant(report)
    assert boxes_by_image(labels) == expected_boxes(items, splits=False)
    assert any(n.startswith("3 crowd box(es) (iscrowd: 1) left out of the ground truth") for n in report.notes)
    assert report.message_counts()["crowd box"] == 3
    assert report.settings["include_crowd"] is False
    labels, report = formats.load(tmp_path, ImportOptions(include_crowd=True))
    assert labels.num_boxes == sum(len(it.boxes) for it in items) + 3
    assert any("imported as ordinary boxes" in n for n in report.notes)


# ------------------------------------------------------------------------------ YOLO variants
def _yolo_images_split(root: Path, items, yaml_doc: dict) -> Path:
    for k, it in enumerate(items):
        sub = L.ROBOFLOW_FOLDER[it.split] if it.split != "val" else "val"
        L._img(root / "images" / sub / f"{it.stem}.jpg", it, k)
        (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
        (root / "labels" / sub / f"{it.stem}.txt").write_text(L.yolo_lines(it))
    (root / "data.yaml").write_text(yaml.safe_dump({**yaml_doc, "names": {i: n for i, n in enumerate(L.CLASSES)}}))
    return root


@pytest.mark.parametrize("doc", [
    {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test"},
    {"path": "ABS", "train": "images/train", "val": ["images/val"], "test": "images/test"},
    {"path": "../datasets/somewhere", "train": "images/train", "val": "images/val", "test": "images/test"},
    {"train": "images/train", "val": "images/val", "test": "images/test"},
    {},  # no split keys: splits from the folders
], ids=["path-dot", "path-abs-and-list", "path-missing", "no-path", "no-keys"])
def test_ultralytics_data_yaml_variants(tmp_path, doc):
    items = L.small_dataset()
    root = tmp_path / "u"
    if doc.get("path") == "ABS":
        doc = {**doc, "path": str(root.resolve())}
    _yolo_images_split(root, items, doc)
    labels, report = formats.load(root)
    s = invariant(report)
    assert s["images_read"] == 7 and s["rejected"] == 0 and s["imported_with_warnings"] == 0
    assert boxes_by_image(labels) == expected_boxes(items)
    if doc.get("path") == "../datasets/somewhere":
        assert any("is not a folder" in n for n in report.notes)


def test_ultralytics_image_list_file(tmp_path):
    items = L.small_dataset()
    root = _yolo_images_split(tmp_path / "u", items, {})
    (root / "train.txt").write_text("".join(f"./images/train/{it.stem}.jpg\n" for it in items if it.split == "train"))
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "images/val", "names": L.CLASSES}))
    labels, report = formats.load(root)
    invariant(report)
    got = boxes_by_image(labels)
    exp = {k: v for k, v in expected_boxes(items).items() if v[0] != "test"}
    assert got == exp  # the test images are in no split of data.yaml: not imported, noted
    assert any("are in none of the data.yaml splits" in n for n in report.notes)


def test_yolo_split_first_layout_without_yaml_splits(tmp_path):
    items = L.small_dataset()
    root = L.roboflow_yolo(tmp_path / "r", items)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": L.CLASSES}))
    labels, report = formats.load(root)
    assert invariant(report)["rejected"] == 0
    assert boxes_by_image(labels) == expected_boxes(items)  # valid/ read as split val


def test_darknet_obj_data_layout(tmp_path):
    items = L.small_dataset()
    root = L.darknet(tmp_path / "d", items)
    assert formats.detect_format(root) == "yolo"
    labels, report = formats.load(root)
    assert invariant(report)["rejected"] == 0
    assert boxes_by_image(labels) == {k: ("train", v[1]) for k, v in expected_boxes(items).items()}
    # without obj.data / obj.names: the message says exactly what is missing
    (root / "obj.data").unlink()
    (root / "obj.names").unlink()
    with pytest.raises(InputError, match="no class names: add obj.names or classes.txt"):
        formats.load(root)
    # labels beside the images with only a names file: accepted, no split
    (root / "obj_train_data" / "classes.txt").write_text("\n".join(L.CLASSES))
    labels, report = formats.load(root / "obj_train_data", ImportOptions(format="yolo"))
    assert boxes_by_image(labels) == expected_boxes(items, splits=False)


# ------------------------------------------------------------------------------ VOC
def test_voc_devkit_splits_from_imagesets(tmp_path):
    items = L.small_dataset()
    root = L.voc_devkit(tmp_path / "VOC2007", items, origin=1)
    labels, report = formats.load(root, ImportOptions(voc_origin="1"))
    assert invariant(report)["rejected"] == 0
    assert boxes_by_image(labels) == expected_boxes(items)  # trainval.txt and crack_train.txt ignored
    assert any(n.startswith("VOC splits from ImageSets/Main") for n in report.notes)
    # VOCdevkit/VOC2007 nesting, an id listed but absent, an image in no list
    main = root / "ImageSets" / "Main"
    (main / "val.txt").write_text((main / "val.txt").read_text() + "ghost\n")
    (main / "test.txt").write_text("")
    labels, report = formats.load(tmp_path, ImportOptions(voc_origin="auto"))
    assert invariant(report)["rejected"] == 0
    got = boxes_by_image(labels)
    assert got == {k: (None if v[0] == "test" else v[0], v[1]) for k, v in expected_boxes(items).items()}
    assert any("2 image(s)" in n and "no ImageSets/Main list" in n for n in report.notes)
    assert any("1 listed id(s)" in p["message"] and "ghost" in p["message"] for p in report.other_problems)


def test_voc_origin_choices(tmp_path):
    items = L.small_dataset()[:3]
    root = L.fiftyone_voc(tmp_path / "zero", items)  # 0-based: a box starts at 0
    exp = expected_boxes(items, splits=False)
    for origin in ("0", "auto"):
        labels, report = formats.load(root, ImportOptions(voc_origin=origin))
        assert boxes_by_image(labels) == exp
        assert "box outside image" not in report.message_counts()  # 0 is never "outside"
        assert report.settings["voc_origin"] == 0 and report.settings["voc_origin_requested"] == origin
    labels, report = formats.load(root, ImportOptions(voc_origin="1"))
    assert report.message_counts()["box outside image"] == 3
    assert any("--voc-origin 0 or auto reads them as written" in n for n in report.notes)
    # a 1-based file (the devkit's, NEU-DET's): auto reads it as 1, the default as written and says so
    one = tmp_path / "one"
    for k, it in enumerate(items):
        L._img(one / "images" / f"{it.stem}.jpg", it, k)
        (one / "annotations").mkdir(parents=True, exist_ok=True)
        (one / "annotations" / f"{it.stem}.xml").write_text(
            L.voc_xml(f"{it.stem}.jpg", it.width, it.height, it.boxes, origin=1))
    labels, report = formats.load(one, ImportOptions(voc_origin="auto"))
    assert boxes_by_image(labels) == exp and report.settings["voc_origin"] == 1
    labels, report = formats.load(one)
    assert report.settings["voc_origin"] == 0
    assert any("--voc-origin 1 (or auto)" in n for n in report.notes)
    with pytest.raises(InputError, match="--voc-origin must be one of"):
        formats.load(one, ImportOptions(voc_origin="2"))


def test_voc_writer_round_trips_in_either_origin(tmp_path):
    from cvcurate.formats import voc
    from tests import makedata as md

    labels = md.make_labels(tmp_path / "images", n=6)
    for origin in (0, 1):
        voc.write(labels, tmp_path / "annotations", origin=origin)
        back, _ = formats.load(tmp_path, ImportOptions(voc_origin=str(origin)))
        for a, b in zip(sorted(labels.records, key=lambda r: r.filepath), sorted(back.records, key=lambda r: r.filepath)):
            np.testing.assert_array_equal(a.gt.xyxy, b.gt.xyxy)


@pytest.mark.realdata
def test_neu_det_origin_auto_is_one(neu_det):
    labels, report = formats.load(neu_det, ImportOptions(voc_origin="auto"))
    assert report.settings["voc_origin"] == 1
    assert labels.num_boxes == 2795 and (labels.records[0].gt.xyxy >= 0).all()


# ------------------------------------------------------------------------------ FiftyOne agreement
def _fo_boxes(ds, field="ground_truth"):
    out = {}
    for fp, dets in zip(ds.values("filepath"), ds.values(field)):
        out[Path(fp).name] = sorted((d.label, tuple(np.round(d.bounding_box, 6))) for d in (dets.detections if dets else []))
    return out


def test_cvcurate_import_agrees_with_fiftyone_voc_and_coco_importers(tmp_path, dataset_name):
    import fiftyone as fo

    items = L.small_dataset()
    cases = [
        # FiftyOne's VOC layout, a 0 coordinate, and NEU-DET's frame mismatch on two images
        (fo.types.VOCDetectionDataset,
         L.fiftyone_voc(tmp_path / "voc", items, frames={"img_01": (40, 30), "img_04": (128, 96)})),
        (fo.types.COCODetectionDataset, L.fiftyone_coco(tmp_path / "coco", items)),
    ]
    for k, (dtype, root) in enumerate(cases):
        fo_name = f"{dataset_name}_fo{k}"
        kw = {"label_types": "detections"} if dtype is fo.types.COCODetectionDataset else {}
        ref = fo.Dataset.from_dir(dataset_dir=str(root), dataset_type=dtype, label_field="ground_truth",
                                  name=fo_name, **kw)
        try:
            ours = f"{dataset_name}_{k}"
            res = importer.import_dataset(root, ours, overwrite=True)
            try:
                assert invariant(res.report)["rejected"] == 0
                got, want = _fo_boxes(store.load(ours)), _fo_boxes(ref)
                assert set(got) == set(want) and len(got) == len(items)
                for name in want:
                    assert [g[0] for g in got[name]] == [w[0] for w in want[name]], name
                    np.testing.assert_allclose([g[1] for g in got[name]], [w[1] for w in want[name]],
                                               atol=1e-6, err_msg=f"{dtype.__name__} {name}")
            finally:
                store.delete(ours)
        finally:
            ref.delete()


def test_import_history_records_the_settings(tmp_path, dataset_name):
    root = L.fiftyone_voc(tmp_path / "v", L.small_dataset()[:2])
    importer.import_dataset(root, dataset_name, ImportOptions(voc_origin="auto"))
    entry = datasets.describe(dataset_name)["history"][-1]
    assert entry["settings"]["voc_origin"] == 0 and entry["settings"]["voc_origin_requested"] == "auto"


# ------------------------------------------------------------------------------ CLI
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_import_prints_origin_and_nothing_imported_exits_2(tmp_path, dataset_name):
    items = L.small_dataset()[:2]
    root = L.fiftyone_voc(tmp_path / "v", items)
    r = run("import", root, "--name", dataset_name, "--report", tmp_path / "r.json", "--voc-origin", "auto")
    assert r.exit_code == 0, r.output
    assert "note: VOC origin auto -> 0" in r.output
    r = run("import", root, "--name", dataset_name, "--voc-origin", "2")
    assert r.exit_code == 2 and "--voc-origin must be one of 0, 1, auto" in r.output
    # COCO standard layout whose images are nowhere: exit 2, one line, no dataset
    coco = tmp_path / "c"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "instances_train.json").write_text(json.dumps(L.coco_document(items)))
    r = run("import", coco, "--name", dataset_name + "_none", "--report", tmp_path / "n.json")
    assert r.exit_code == 2, r.output
    assert "nothing imported" in r.output and "no dataset was created" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not store.exists(dataset_name + "_none")
    assert json.loads((tmp_path / "n.json").read_text())["summary"]["rejected"] == 2


def test_cli_info_of_an_empty_dataset(dataset_name):
    from cvcurate.types import LabelSet

    store.write(LabelSet(["a"], []), dataset_name)
    r = run("info", dataset_name)
    assert r.exit_code == 0, r.output
    assert "0 images" in r.output and "empty" in r.output
    r = run("info", dataset_name, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["images"] == 0
