"""Each importer on small generated fixtures, broken ones included, and on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cvcurate import formats
from cvcurate.errors import InputError
from cvcurate.formats import ImportOptions, severstal, voc
from tests import makedata as md


def by_name(labels):
    return {Path(r.filepath).name: r for r in labels.records}


def assert_same_boxes(expected, got):
    exp, out = by_name(expected), by_name(got)
    assert set(exp) == set(out)
    for name, rec in exp.items():
        g = out[name]
        assert (g.width, g.height) == (rec.width, rec.height)
        names_exp = [expected.classes[c] for c in rec.gt.class_id]
        names_got = [got.classes[c] for c in g.gt.class_id]
        assert names_exp == names_got, name
        np.testing.assert_allclose(g.gt.xyxy, rec.gt.xyxy, atol=1e-4, err_msg=name)


def invariant(report):
    s = report.summary()
    assert s["images_read"] == s["imported"] + s["imported_with_warnings"] + s["rejected"]
    return s


# ---------------------------------------------------------------------------- clean round trips
@pytest.mark.parametrize("fmt,writer", [("voc", md.write_voc), ("coco", md.write_coco), ("yolo", md.write_yolo)])
def test_round_trip_each_format(tmp_path, fmt, writer):
    expected = writer(tmp_path, n=9)
    assert formats.detect_format(tmp_path) == fmt
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    assert s["rejected"] == 0 and s["images_read"] == 9
    assert s["boxes_imported"] == expected.num_boxes == 9
    assert_same_boxes(expected, labels)


def test_yolo_splits_from_folders(tmp_path):
    md.write_yolo(tmp_path, n=9)
    labels, _ = formats.load(tmp_path)
    splits = [r.split for r in labels.records]
    assert splits.count("train") == 6 and splits.count("val") == 3


def test_split_option_overrides(tmp_path):
    md.write_voc(tmp_path, n=3)
    labels, _ = formats.load(tmp_path, ImportOptions(split="val"))
    assert {r.split for r in labels.records} == {"val"}


VOC_1_10 = ("<annotation><size><width>10</width><height>10</height></size>"
            "<object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>"
            "<ymax>5</ymax></bndbox></object></annotation>")


def test_voc_one_based_inclusive_coordinates():
    im = voc.parse_xml_text(VOC_1_10, origin=1)
    assert im.boxes == [(0.0, 0.0, 10.0, 5.0)] and im.frame == (10, 10)


def test_voc_default_origin_reads_coordinates_as_written():
    # the default agrees with FiftyOne's VOC importer: x1 = xmin, x2 = xmax
    im = voc.parse_xml_text(VOC_1_10)
    assert im.boxes == [(1.0, 1.0, 10.0, 5.0)]


def test_voc_rescales_declared_frame(tmp_path):
    md.make_image(tmp_path / "images" / "a.jpg", 100, 50)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(voc.to_xml_text("a", 50, 25, ["x"], [(0, 0, 50, 25)]))
    labels, report = formats.load(tmp_path)
    np.testing.assert_allclose(labels.records[0].gt.xyxy, [[0, 0, 100, 50]])
    assert "rescaled: boxes declared in a 50x25 frame, image is 100x50" in report.entries[0].messages
    assert any("rescaled to the real image size 100x50" in n for n in report.notes)
    assert any(m.startswith("filename mismatch") for m in report.entries[0].messages)  # "a" vs a.jpg


# ---------------------------------------------------------------------------- broken inputs
def test_voc_broken_inputs(tmp_path):
    md.write_voc(tmp_path, n=8)
    ann, img = tmp_path / "annotations", tmp_path / "images"
    md.break_file(img / "img_000.jpg", "truncate")
    md.break_file(img / "img_001.jpg", "garbage")
    md.break_file(img / "img_002.jpg", "empty")
    (ann / "img_003.xml").write_text("<annotation><object>")  # malformed
    (ann / "img_004.xml").unlink()  # missing XML
    (ann / "img_005.xml").write_text(voc.to_xml_text("img_005.jpg", 64, 48, ["crack", "crack", "crack"],
                                                     [(5, 5, 5, 20), (50, 10, 90, 30), (1, 1, 10, 10)]))
    (ann / "orphan.xml").write_text(voc.to_xml_text("orphan.jpg", 64, 48, [], []))
    labels, report = formats.load(tmp_path, ImportOptions(classes=md.CLASSES))
    s = invariant(report)
    assert s["images_read"] == 8
    assert s["rejected"] == 5
    msgs = {Path(e.path).name: " | ".join(e.messages) for e in report.entries}
    assert "truncated" in msgs["img_000.jpg"]
    assert "not a readable image" in msgs["img_001.jpg"]
    assert "empty" in msgs["img_002.jpg"]
    assert "malformed XML" in msgs["img_003.jpg"]
    assert "missing annotation" in msgs["img_004.jpg"]
    assert "degenerate box" in msgs["img_005.jpg"] and "box outside image" in msgs["img_005.jpg"]
    assert [p["message"] for p in report.other_problems] == [
        "missing image: no image file with this XML's stem or filename 'orphan.jpg'"]
    rec5 = by_name(labels)["img_005.jpg"]
    assert len(rec5.gt) == 3  # kept, flagged: scoring and the gate deal with them
    # the unlabeled image can be kept on request
    labels2, report2 = formats.load(tmp_path, ImportOptions(keep_unlabeled=True))
    assert invariant(report2)["rejected"] == 4
    assert len(by_name(labels2)["img_004.jpg"].gt) == 0


def test_unknown_class_with_fixed_class_list(tmp_path):
    md.write_voc(tmp_path, n=3)
    (tmp_path / "annotations" / "img_000.xml").write_text(
        voc.to_xml_text("img_000.jpg", 64, 48, ["crack", "banana"], [(1, 1, 10, 10), (2, 2, 20, 20)]))
    labels, report = formats.load(tmp_path, ImportOptions(classes=md.CLASSES))
    rec = by_name(labels)["img_000.jpg"]
    assert len(rec.gt) == 1
    assert any("unknown class: 'banana'" in m for m in report.entries[0].messages)
    # without a class list VOC is open: banana becomes a class
    labels, _ = formats.load(tmp_path)
    assert "banana" in labels.classes


def test_coco_broken_inputs(tmp_path):
    md.write_coco(tmp_path, n=6)
    doc = md.coco_doc(tmp_path)
    doc["annotations"].append({"id": 99, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]})
    doc["annotations"].append({"id": 100, "image_id": 2, "category_id": 1, "bbox": [1, 1]})
    doc["annotations"].append({"id": 101, "image_id": 777, "category_id": 1, "bbox": [1, 1, 2, 2]})
    doc["annotations"].append({"id": 102})
    doc["images"].append({"id": 50, "file_name": "gone.jpg", "width": 64, "height": 48})
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    assert s["images_read"] == 7 and s["rejected"] == 1
    msgs = " | ".join(m for e in report.entries for m in e.messages)
    assert "unknown class: '<category_id 42>'" in msgs
    assert "bad box: annotation 100" in msgs
    assert "gone.jpg" in [Path(e.path).name for e in report.entries if e.status == "rejected"]
    other = " | ".join(p["message"] for p in report.other_problems)
    assert "image_id 777" in other and "annotations[" in other
    assert labels.classes == md.CLASSES


def test_coco_malformed_json(tmp_path):
    md.write_coco(tmp_path, n=2)
    (tmp_path / "annotations.json").write_text('{"images": [')
    with pytest.raises(InputError, match="malformed JSON"):
        formats.load(tmp_path, ImportOptions(format="coco"))


def test_yolo_broken_inputs(tmp_path):
    md.write_yolo(tmp_path, n=6, splits=False)
    lab = tmp_path / "labels"
    (lab / "img_001.txt").write_text("0 0.5 0.5 0.2\n7 0.5 0.5 0.2 0.2\nx 1 1 1 1\n1 0.5 0.5 0.25 0.5\n")
    (lab / "img_002.txt").unlink()
    (lab / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    labels, report = formats.load(tmp_path)
    invariant(report)
    msgs = {Path(e.path).name: " | ".join(e.messages) for e in report.entries}
    assert "needs 'class cx cy w h'" in msgs["img_001.jpg"]
    assert "unknown class: '<class id 7>'" in msgs["img_001.jpg"]
    assert "not numeric" in msgs["img_001.jpg"]
    np.testing.assert_allclose(by_name(labels)["img_001.jpg"].gt.xyxy, [[24, 12, 40, 36]])
    assert "no label file" in msgs["img_002.jpg"]
    assert len(by_name(labels)["img_002.jpg"].gt) == 0
    assert report.other_problems[0]["message"] == "missing image: label file has no image"


def test_yolo_bad_yaml(tmp_path):
    md.write_yolo(tmp_path, n=3)
    (tmp_path / "data.yaml").write_text("names: [a, b\n")
    with pytest.raises(InputError, match="malformed YAML"):
        formats.load(tmp_path)


@pytest.mark.parametrize("old_header", [False, True])
def test_severstal_rle_components_and_negatives(tmp_path, old_header):
    expected = md.write_severstal(tmp_path, old_header=old_header)
    assert formats.detect_format(tmp_path) == "severstal"
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    assert s["images_read"] == 3 and s["rejected"] == 0
    got = by_name(labels)
    for name, boxes in expected.items():
        rec = got[name]
        pairs = sorted((labels.classes[c], tuple(b)) for c, b in zip(rec.gt.class_id, rec.gt.xyxy.tolist()))
        assert pairs == sorted((str(c), tuple(float(v) for v in b)) for c, b in boxes), name
    assert len(got["s2.jpg"].gt) == 0  # negative kept


def test_numeric_class_names_get_a_class_map_hint(tmp_path):
    from cvcurate.config import safe_load_yaml
    from cvcurate.formats.classes import check_class_map, numeric_names_hint, read_class_map

    md.write_severstal(tmp_path / "s")
    labels, report = formats.load(tmp_path / "s")
    hints = [n for n in report.notes if n.startswith("class names are numbers")]
    assert len(hints) == 1
    head, *example = hints[0].split("\n")
    assert head.startswith("class names are numbers (1, 2, 3, 4): name them with --class-map classes.yaml")
    assert example == ["  1: name_1", "  2: name_2", "  3: name_3", "  4: name_4"]
    # the example is a valid class map for these names: as printed, and written to a file
    assert list(check_class_map(safe_load_yaml("\n".join(example)))) == labels.classes
    (tmp_path / "classes.yaml").write_text("\n".join(example) + "\n")
    renamed, report2 = formats.load(tmp_path / "s", ImportOptions(class_map=tmp_path / "classes.yaml"))
    assert renamed.classes == ["name_1", "name_2", "name_3", "name_4"]
    assert not any(n.startswith("class names are numbers") for n in report2.notes)
    # in the JSON report too
    assert hints[0] in json.loads(json.dumps(report.to_dict()))["notes"]
    # generic: any format whose names are all numbers; a name that is not a number: no hint
    hint = numeric_names_hint(["0", "01", "7"])
    ex = hint.split("\n")[1:]
    assert ex == ["  0: name_0", "  '01': name_01", "  7: name_7"]
    assert list(check_class_map(safe_load_yaml("\n".join(ex)))) == ["0", "01", "7"]
    many = numeric_names_hint([str(i) for i in range(30)])
    assert "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ...)" in many and "# ... one line per class, 30 in all" in many
    assert safe_load_yaml("\n".join(many.split("\n")[1:])) == {i: f"name_{i}" for i in range(12)}
    assert numeric_names_hint(["1", "crack"]) is None and numeric_names_hint([]) is None
    assert read_class_map(tmp_path / "classes.yaml") == {str(i): f"name_{i}" for i in range(1, 5)}
    # a YOLO data.yaml with numeric names
    y = tmp_path / "y"
    md.make_image(y / "images" / "a.jpg", 64, 48)
    (y / "labels").mkdir(parents=True)
    (y / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (y / "data.yaml").write_text("names: ['0', '1']\n")
    _, report = formats.load(y)
    assert any(n.startswith("class names are numbers (0, 1)") for n in report.notes)
    # GC10: codes mapped to names, no hint
    md.write_gc10(tmp_path / "g")
    _, report = formats.load(tmp_path / "g")
    assert not any(n.startswith("class names are numbers") for n in report.notes)


def test_severstal_rle_decode_column_major():
    m = severstal.rle_decode("1 3 257 2", width=1600, height=256)
    assert m.shape == (256, 1600)
    assert m[:3, 0].all() and m[:2, 1].all() and m.sum() == 5
    assert severstal.rle_encode(m) == "1 3 257 2"


def test_severstal_broken_rows(tmp_path):
    md.write_severstal(tmp_path)
    csv = tmp_path / "train.csv"
    csv.write_text(csv.read_text() + "s2.jpg,3,5 3 1\nmissing.jpg,4,1 10\nonly,two\n")
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    msgs = {Path(e.path).name: " | ".join(e.messages) for e in report.entries}
    assert "odd number of values" in msgs["s2.jpg"] and s["rejected"] == 2
    assert "image file not found" in msgs["missing.jpg (listed in train.csv)"]
    assert "expected 3 columns" in report.other_problems[0]["message"]


def test_severstal_bad_header(tmp_path):
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="header"):
        formats.load(tmp_path, ImportOptions(format="severstal"))


def test_gc10_quirks(tmp_path):
    md.write_gc10(tmp_path)
    assert formats.detect_format(tmp_path) == "gc10"
    labels, report = formats.load(tmp_path)
    s = invariant(report)
    assert s["images_read"] == 5 and s["rejected"] == 1  # the image without XML
    got = by_name(labels)
    name = lambda r: [labels.classes[c] for c in r.gt.class_id]  # noqa: E731
    assert name(got["img_01_1.jpg"]) == ["punching_hole"]
    assert name(got["img_02_2.jpg"]) == ["welding_line"]  # stray 'd' left out
    assert name(got["img_03_3.jpg"]) == ["waist_folding"]  # folder 5, label from XML
    msgs = " | ".join(m for e in report.entries for m in e.messages)
    assert "unknown class: 'd'" in msgs and "misspelled class: '10_yaozhed'" in msgs
    assert "missing annotation" in msgs
    assert len(labels.classes) == 10


def test_empty_folder_and_wrong_format(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is empty"):
        formats.load(tmp_path / "empty")
    md.write_voc(tmp_path / "v", n=2)
    with pytest.raises(InputError, match="unknown format 'vocx'"):
        formats.load(tmp_path / "v", ImportOptions(format="vocx"))
    with pytest.raises(InputError, match="no YOLO data.yaml"):
        formats.load(tmp_path / "v", ImportOptions(format="yolo"))
    with pytest.raises(InputError, match="does not exist"):
        formats.load(tmp_path / "nope")
    (tmp_path / "imgs").mkdir()
    md.make_image(tmp_path / "imgs" / "a.jpg")
    with pytest.raises(InputError, match="images but no annotations"):
        formats.load(tmp_path / "imgs")


# ---------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_neu_det_real(neu_det):
    labels, report = formats.load(neu_det)
    s = invariant(report)
    assert s["images_read"] == 1200 and s["rejected"] == 0
    assert labels.num_boxes == 2795 and len(labels.classes) == 6
    assert labels.classes == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    for r in labels.records:
        assert (r.width, r.height) == (416, 416)
        assert (r.gt.xyxy >= 0).all() and (r.gt.xyxy <= 416).all()
        assert (r.gt.area > 0).all()
    kinds = report.message_counts()
    assert kinds["rescaled"] == 1200 and kinds["filename mismatch"] == 121


@pytest.mark.realdata
def test_severstal_real(severstal):
    labels, report = formats.load(severstal)
    s = invariant(report)
    assert s["images_read"] == 30 and s["rejected"] == 0
    counts = labels.class_counts()
    assert counts["1"] == 0 and counts["2"] >= 1 and counts["3"] >= 20 and counts["4"] >= 19
    for r in labels.records:
        assert (r.width, r.height) == (1600, 256)
        assert (r.gt.xyxy[:, [0, 2]] <= 1600).all() and (r.gt.xyxy[:, [1, 3]] <= 256).all()
