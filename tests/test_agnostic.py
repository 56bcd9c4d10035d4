"""Class-agnostic prediction (``predict --class-agnostic``): tiles of wide images, boxes back in the
image's frame, one class, each box given the class of the given box it overlaps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvcurate.detector.agnostic import assign_classes, predict_tiled, tile_windows
from cvcurate.types import Annotations, ImageRecord, LabelSet


def test_tile_windows_cover_wide_and_tall_images_with_overlap():
    assert tile_windows(416, 416) == [(0, 0, 416, 416)]
    assert tile_windows(300, 240) == [(0, 0, 300, 240)]  # near square: the whole image
    wins = tile_windows(1600, 256)
    assert all(y0 == 0 and y1 == 256 and x1 - x0 == 256 for x0, y0, x1, y1 in wins)
    assert wins[0][0] == 0 and wins[-1][2] == 1600
    starts = [w[0] for w in wins]
    assert all(256 - (b - a) >= 0.25 * 256 for a, b in zip(starts, starts[1:]))  # a quarter overlapping
    tall = tile_windows(100, 400)
    assert tall[0] == (0, 0, 100, 100) and tall[-1][3] == 400 and all(x1 - x0 == 100 for x0, _, x1, _ in tall)


def _blob_detector(size: int):
    """A stand-in network: the bright pixels' bounding box of each square input, two classes that
    disagree (one box each, at the same place), score 0.9 / 0.6."""

    def detect(ims):
        out = []
        for im in ims:
            assert im.shape == (size, size) and im.dtype == np.uint8
            ys, xs = np.nonzero(im > 128)
            if not len(xs):
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
                continue
            b = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] * 2, np.float64)
            out.append((b, np.array([0.9, 0.6]), np.array([0, 1])))
        return out

    return detect


def test_wide_image_in_tiles_gives_the_box_in_the_image_frame_once(tmp_path: Path):
    img = np.zeros((100, 400), np.uint8)
    img[30:70, 310:350] = 255
    p = tmp_path / "wide.png"
    cv2.imwrite(str(p), img)
    # the record's frame twice the file's: boxes scale to it
    rec = ImageRecord(str(p), 800, 200, Annotations.empty())
    missing = ImageRecord(str(tmp_path / "gone.png"), 400, 100, Annotations.empty())
    got = predict_tiled(_blob_detector(64), [rec, missing], 64, nms_thresh=0.6, skip_unreadable=True)
    assert got[1] is None
    a = got[0]
    # the blob is seen in two overlapping tiles, by both classes: one box after class-agnostic NMS
    assert len(a) == 1 and a.class_id.tolist() == [0] and a.confidence.tolist() == [0.9]
    assert np.allclose(a.xyxy[0], [620, 60, 700, 140], atol=8)
    with pytest.raises(Exception, match="cannot read image"):
        predict_tiled(_blob_detector(64), [missing], 64)


def test_boxes_take_the_class_of_the_given_box_they_overlap():
    gts = [Annotations(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]], float), np.array([2, 1, 1])),
           Annotations.empty(), Annotations(np.array([[0, 0, 5, 5]], float), np.array([1]))]
    preds = [Annotations(np.array([[1, 1, 11, 11], [52, 52, 63, 63], [200, 200, 210, 210]], float),
                         np.zeros(3, np.int64), np.array([0.9, 0.8, 0.7])),
             Annotations(np.array([[1, 1, 11, 11]], float), np.zeros(1, np.int64), np.array([0.5])),
             None]
    got = assign_classes(preds, gts, 3)
    assert got[0].class_id.tolist() == [2, 1, 1]  # overlapped: that box's class; else the image's most common
    assert got[1].class_id.tolist() == [1]  # no given box in the image: the dataset's most common class
    assert got[2] is None
    assert np.array_equal(got[0].xyxy, preds[0].xyxy) and np.array_equal(got[0].confidence, preds[0].confidence)


def _wide_dataset(root: Path, n: int = 4) -> LabelSet:
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    recs = []
    for i in range(n):
        img = (rng.random((96, 480)) * 60).astype(np.uint8)
        x = int(rng.integers(20, 400))
        img[30:70, x:x + 50] = 220
        p = root / "images" / f"strip{i}.png"
        cv2.imwrite(str(p), img)
        recs.append(ImageRecord(str(p), 480, 96, Annotations(np.array([[x, 30, x + 50, 70]], float), np.array([i % 2]))))
    return LabelSet(["hole", "stain"], recs)


def test_cli_class_agnostic_on_a_dataset_of_other_classes(tmp_path, monkeypatch, dataset_name):
    from typer.testing import CliRunner

    from cvcurate import store
    from cvcurate.cli import app
    from cvcurate.formats import voc
    from cvcurate.stages.imports import import_dataset

    labels = _wide_dataset(tmp_path / "ds")
    voc.write(labels, tmp_path / "ds" / "annotations")
    import_dataset(tmp_path / "ds", dataset_name)
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    r = run(app, ["predict", dataset_name, "--model", "synth"])  # other classes: refused, the ways named
    assert r.exit_code == 2 and "trained on classes" in r.output and "--class-agnostic" in r.output
    assert "Traceback" not in r.output and "predictions" not in store.field_names(dataset_name)
    r = run(app, ["predict", dataset_name, "--model", "synth", "--class-agnostic", "--engine", "ray"])
    assert r.exit_code == 2 and "--class-agnostic runs on this machine only" in r.output
    r = run(app, ["predict", dataset_name, "--from-file", "x.json", "--format", "coco", "--class-agnostic"])
    assert r.exit_code == 2 and "--class-agnostic applies" in r.output
    for runtime in ("torch", "onnx"):
        r = run(app, ["predict", dataset_name, "--model", "synth", "--class-agnostic", "--runtime", runtime,
                      "--pred-field", f"ag_{runtime}"])
        assert r.exit_code == 0, r.output
        assert "(from model synth, class-agnostic)" in r.output
    got = {rt: store.read(dataset_name, pred_field=f"ag_{rt}").records for rt in ("torch", "onnx")}
    for rec_t, rec_o in zip(got["torch"], got["onnx"]):  # the same boxes either way
        assert len(rec_t.pred) == len(rec_o.pred) > 0
        assert np.allclose(rec_t.pred.xyxy, rec_o.pred.xyxy, atol=1e-2)
        assert rec_t.pred.class_id.tolist() == rec_o.pred.class_id.tolist()
        p, g = rec_t.pred, rec_t.gt
        assert (p.xyxy[:, 2] <= 480 + 1e-6).all() and (p.xyxy[:, 3] <= 96 + 1e-6).all()
        # every box of the dataset's classes: the given box's where it overlaps it, else the image's
        assert set(p.class_id.tolist()) == {int(g.class_id[0])}
    hist = [h for h in store.get_history(dataset_name) if h.get("action") == "predict"]
    assert hist[-1]["class_agnostic"] is True and hist[-1]["pred_field"] == "ag_onnx"
    r = run(app, ["score", dataset_name, "--pred-field", "ag_onnx", "--no-pixels", "--out", "s"])
    assert r.exit_code == 0, r.output
    assert "class-agnostic" in r.output and "swap" in r.output
    doc = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert not [i for i in doc["issues"] if i["type"] == "swap" and i["p"] >= 0.5]


@pytest.mark.parametrize("on_boxes", [True, False])
def test_score_warns_when_the_predictions_hardly_agree_with_the_labels(tmp_path, monkeypatch, dataset_name, on_boxes):
    """A model that does not know the data (its confident boxes nowhere near the given ones) is
    said so, with the way to fine-tune it; predictions that find the given boxes are not."""
    from typer.testing import CliRunner

    from cvcurate.cli import app
    from cvcurate.formats import voc
    from cvcurate.stages.imports import import_dataset

    labels = _wide_dataset(tmp_path / "ds", n=12)
    voc.write(labels, tmp_path / "ds" / "annotations")
    import_dataset(tmp_path / "ds", dataset_name)
    rows = []
    for rec in labels.records:
        x1, y1, x2, y2 = rec.gt.xyxy[0]
        stem = Path(rec.filepath).stem
        if on_boxes:  # the given box found, two weak boxes elsewhere
            rows.append({"file_name": f"{stem}.png", "category_id": int(rec.gt.class_id[0]) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9})
        for k, x in enumerate((0.0, 430.0) if x1 > 60 and x2 < 420 else (200.0, 200.0)):
            rows.append({"file_name": f"{stem}.png", "category_id": 1, "bbox": [x, 5.0 + 40 * k, 30.0, 20.0],
                         "score": 0.2 if on_boxes else 0.9 - 0.1 * k})
    (tmp_path / "p.json").write_text(json.dumps(rows))
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    r = run(app, ["predict", dataset_name, "--from-file", "p.json", "--format", "coco"])
    assert r.exit_code == 0, r.output
    r = run(app, ["score", dataset_name, "--no-pixels", "--out", "s"])
    assert r.exit_code == 0, r.output
    said = "hardly agree with these labels" in r.output
    assert said != on_boxes, r.output
    if said:
        assert f"cvcurate train {dataset_name} --folds 5" in r.output
        # the line is configurable (objectlab.weak_agreement): at 0 nothing is ever called weak
        (tmp_path / "score.yaml").write_text("objectlab:\n  weak_agreement: 0.0\n")
        r = run(app, ["score", dataset_name, "--no-pixels", "--out", "s2", "--config", "score.yaml"])
        assert r.exit_code == 0, r.output
        assert "hardly agree" not in r.output
