"""``predict --flip-check``: each predicted box's agreement with the boxes of the mirrored images
(:mod:`cvcurate.detector.flipcheck`), stored with the predictions and read by the scorer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cvcurate.detector.flipcheck import agreement, flip_checked, mirror, unmirror
from cvcurate.names import PRED_ATTRIBUTES
from cvcurate.types import Annotations, ImageRecord, LabelSet

SIZE = 64


def _bright_box(images):
    """A detector that finds the bright rectangle of each image: it moves with the image."""
    out = []
    for im in images:
        ys, xs = np.nonzero(im > 128)
        out.append((np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float), np.array([0.9]),
                    np.array([0])))
    return out


def _fixed_box(images):
    """A detector that draws the same box in the left half whatever the image: it does not."""
    return [(np.array([[2.0, 2.0, 20.0, 30.0]]), np.array([0.8]), np.array([0])) for _ in images]


def _image():
    im = np.zeros((SIZE, SIZE), np.uint8)
    im[5:20, 3:17] = 255  # top left: mirrored, it lands elsewhere
    return im


@pytest.mark.parametrize("axis", ["h", "v"])
def test_unmirror_puts_a_mirrored_images_box_back(axis):
    im = _image()
    (box,), _, _ = _bright_box([im])[0]
    (mbox,), _, _ = _bright_box(mirror([im], axis))[0]
    assert not np.allclose(mbox, box)
    assert np.allclose(unmirror(mbox[None], SIZE, axis)[0], box)


def test_a_box_that_follows_the_object_agrees_and_one_that_does_not_disagrees():
    ims = [_image(), _image()]
    follows = flip_checked(_bright_box, SIZE)(ims)
    stays = flip_checked(_fixed_box, SIZE)(ims)
    for (b, s, lab, data), (b0, s0, lab0) in zip(follows, _bright_box(ims)):
        assert np.array_equal(b, b0) and np.array_equal(s, s0)  # the plain pass's boxes, unchanged
        assert np.allclose(data["flip_iou"], 1.0) and np.allclose(data["flip_conf"], 0.9)
    for _, _, _, data in stays:
        # mirrored back, the fixed box lands in the right (bottom) half: no overlap either way
        assert np.allclose(data["flip_iou"], 0.0) and np.allclose(data["flip_conf"], 0.0)


def test_agreement_takes_the_mirrored_box_of_its_class_that_stands_for_it():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    back = np.array([[0, 0, 10, 8], [0, 0, 10, 10], [20, 20, 30, 25]], float)
    iou, conf = agreement(boxes, np.array([0, 1]), back, np.array([0.9, 0.5, 0.6]), np.array([0, 1, 0]))
    # box 0 (class 0): only back 0 is its class (IoU 0.8); box 1 (class 1): back 1 is far away
    assert np.allclose(iou, [0.8, 0.0]) and np.allclose(conf, [0.9, 0.0])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVCURATE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_predict_flip_check_stores_the_agreement_beside_the_same_boxes(tmp_path, cache, dataset_name, monkeypatch,
                                                                       runtime):
    from cvcurate import store
    from cvcurate.stages import predict as stage
    from cvcurate.synth import generate

    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    store.write(generate(tmp_path / "s", 6, 3), dataset_name)
    plain = stage.predict(dataset_name, model="synth", pred_field="plain", runtime=runtime)
    checked = stage.predict(dataset_name, model="synth", pred_field="checked", runtime=runtime, flip_check=True)
    assert checked.boxes == plain.boxes > 0 and "flip-checked" in checked.source
    a = store.read(dataset_name, pred_field="plain", pred_attributes=PRED_ATTRIBUTES).records
    b = store.read(dataset_name, pred_field="checked", pred_attributes=PRED_ATTRIBUTES).records
    for ra, rb in zip(a, b):
        assert np.allclose(ra.pred.xyxy, rb.pred.xyxy) and np.allclose(ra.pred.confidence, rb.pred.confidence)
        assert np.isnan(ra.pred.data["flip_iou"]).all()  # never checked: read as missing
        iou, conf = rb.pred.data["flip_iou"], rb.pred.data["flip_conf"]
        assert np.isfinite(iou).all() and ((iou >= 0) & (iou <= 1)).all() and ((conf >= 0) & (conf <= 1)).all()
    iou = np.concatenate([r.pred.data["flip_iou"] for r in b])
    conf = np.concatenate([r.pred.data["flip_conf"] for r in b])
    top = np.concatenate([r.pred.confidence for r in b]) >= 0.5
    # the trained detector finds its confident boxes again on the mirrored images
    assert top.any() and np.median(iou[top]) > 0.7 and np.median(conf[top]) > 0.3
    assert "flip_iou" not in store.read(dataset_name, pred_field="checked").records[0].pred.data
    hist = [h for h in store.get_history(dataset_name) if h.get("action") == "predict"]
    assert [h["flip_check"] for h in hist] == [False, True]


def test_the_error_model_reads_the_agreement_of_the_prediction_that_stands_for_a_box():
    from cvcurate.scoring.batch import Batch
    from cvcurate.scoring.model import FEATURES, box_features
    from cvcurate.scoring.signals import ObjectLabConfig, measure

    gt = Annotations(np.array([[10, 10, 50, 50], [60, 60, 90, 90.0]]), np.array([0, 0]))
    labels = LabelSet(["a"], [ImageRecord("x.png", 100, 100, gt=gt)])
    pred = Annotations(np.array([[60, 60, 90, 90], [12, 10, 50, 52.0]]), np.array([0, 0]), confidence=[0.9, 0.8],
                       data={"flip_iou": np.array([0.3, 0.95]), "flip_conf": np.array([0.2, 0.7])})
    s = measure(Batch.of(labels, [pred]), ObjectLabConfig())
    x = box_features(s)
    col = FEATURES.index("flip_iou")
    assert list(s.bad_pred) == [1, 0]  # the prediction drawn on each box stands for it
    assert np.allclose(x[:, col], [0.95, 0.3]) and np.allclose(x[:, FEATURES.index("flip_conf")], [0.7, 0.2])
    bare = Annotations(pred.xyxy, pred.class_id, confidence=pred.confidence)
    x0 = box_features(measure(Batch.of(labels, [bare]), ObjectLabConfig()))
    assert np.allclose(x0[:, col], -1.0)  # no flip check: the feature says nothing


def test_score_reads_the_agreement_of_flip_checked_predictions_only(tmp_path, cache, dataset_name, monkeypatch):
    from cvcurate import store
    from cvcurate.stages import predict as stage
    from cvcurate.stages.score import run_score
    from cvcurate.synth import generate

    monkeypatch.chdir(tmp_path)
    labels = generate(tmp_path / "s", 8, 5)
    store.write(labels, dataset_name)
    os.unlink(labels.records[0].filepath)  # an image gone since import has no predictions at all
    stage.predict(dataset_name, model="synth", pred_field="plain")
    stage.predict(dataset_name, model="synth", pred_field="checked", flip_check=True)
    checked = run_score(dataset_name, pred_field="checked", pixels=False, out_dir=tmp_path / "a")
    assert any("flip-checked" in n for n in checked.notes)
    data = checked.result.objectlab.signals.pred.data
    assert set(data) == set(PRED_ATTRIBUTES) and np.isfinite(data["flip_iou"]).all()
    plain = run_score(dataset_name, pred_field="plain", pixels=False, out_dir=tmp_path / "b")
    assert not any("flip-checked" in n for n in plain.notes) and not plain.result.objectlab.signals.pred.data


@pytest.mark.parametrize("other", [["--from-file", "preds.json"], ["--class-agnostic"]])
def test_flip_check_with_what_it_cannot_check_is_refused_in_one_line(tmp_path, dataset_name, monkeypatch, other):
    from typer.testing import CliRunner

    from cvcurate import store
    from cvcurate.cli import app
    from cvcurate.synth import generate

    monkeypatch.chdir(tmp_path)
    store.write(generate(tmp_path / "s", 2, 5), dataset_name)
    (tmp_path / "preds.json").write_text("[]")
    r = CliRunner().invoke(app, ["predict", dataset_name, "--flip-check", *other])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "--flip-check" in r.output and len(r.output.strip().splitlines()) == 1


def test_out_of_fold_predictions_keep_the_flip_check_through_a_resume(tmp_path):
    import cvcurate.detector.train as T
    from tests.test_detector import make_images, tiny_cfg

    labels = make_images(tmp_path / "images", 8)
    state = tmp_path / "kfold"
    first = T.kfold_predict(labels, 2, tiny_cfg(max_steps=2), progress=False, state_dir=state, flip_check=True)
    assert all(set(PRED_ATTRIBUTES) <= set(p.data) and np.isfinite(p.data["flip_iou"]).all() for p in first)
    assert sum(len(p) for p in first) > 0
    again = T.kfold_predict(labels, 2, tiny_cfg(max_steps=2), progress=False, state_dir=state, flip_check=True,
                            log=lambda _: None)  # both folds kept from the first run
    for a, b in zip(first, again):
        assert all(np.array_equal(a.data[k], b.data[k]) for k in PRED_ATTRIBUTES)


def test_a_coco_results_file_carries_the_flip_check_there_and_back(tmp_path):
    from cvcurate.formats.predictions import read_predictions, write_coco_results

    recs = [ImageRecord(str(tmp_path / f"{n}.png"), 100, 80, gt=Annotations.empty()) for n in ("a", "b", "c")]
    labels = LabelSet(["x", "y"], recs)
    anns = [Annotations([[1, 2, 30, 40], [5, 5, 9, 9]], [0, 1], confidence=[0.9, 0.2],
                        data={"flip_iou": np.array([0.8, np.nan]), "flip_conf": np.array([0.7, np.nan])}),
            Annotations([[10, 10, 20, 20]], [1], confidence=[0.5]), None]
    back = read_predictions(write_coco_results(tmp_path / "p.json", labels, anns), "coco", labels)
    assert np.allclose(back[0].data["flip_iou"], [0.8, np.nan], equal_nan=True)
    assert np.allclose(back[0].data["flip_conf"], [0.7, np.nan], equal_nan=True)
    assert np.isnan(back[1].data["flip_iou"]).all() and len(back[2]) == 0 and "flip_iou" in back[2].data
    plain = read_predictions(write_coco_results(tmp_path / "q.json", labels, anns[1:]), "coco", labels)
    assert not plain[1].data  # a file without the check: no columns


def test_an_image_whose_predictions_lack_the_check_reads_as_missing_not_the_whole_dataset():
    from cvcurate.scoring.batch import FlatBoxes

    checked = Annotations([[0, 0, 5, 5], [1, 1, 4, 4]], [0, 0], confidence=[0.9, 0.3],
                          data={"flip_iou": np.array([0.9, 0.1]), "flip_conf": np.array([0.8, 0.0])})
    flat = FlatBoxes.concat([checked, Annotations.empty(True), Annotations([[2, 2, 3, 3]], [0], confidence=[0.5])],
                            with_confidence=True, keys=PRED_ATTRIBUTES)
    assert np.allclose(flat.data["flip_iou"], [0.9, 0.1, np.nan], equal_nan=True)
    assert not FlatBoxes.concat([Annotations.empty(True)], with_confidence=True, keys=PRED_ATTRIBUTES).data


def test_a_flip_attribute_that_is_not_a_number_reads_as_missing(tmp_path, cache, dataset_name, monkeypatch):
    """A database edited by hand (FiftyOne, pymongo) may hold anything under a box's flip_iou:
    the read gives NaN there and scores the rest; nothing stops with a traceback."""
    from cvcurate import store
    from cvcurate.stages import predict as stage
    from cvcurate.stages.score import run_score
    from cvcurate.synth import generate

    monkeypatch.chdir(tmp_path)
    store.write(generate(tmp_path / "s", 4, 5), dataset_name)
    stage.predict(dataset_name, model="synth", flip_check=True)
    dets = store.get_detections(dataset_name, "predictions")
    sid = next(s for s, d in dets.items() if len(d) >= 3)
    dets[sid][0]["flip_iou"], dets[sid][1]["flip_iou"], dets[sid][2]["flip_conf"] = "high", [1, 2], True
    store.set_detections(dataset_name, "predictions", {sid: dets[sid]})
    rec = next(r for r in store.read(dataset_name, pred_field="predictions", pred_attributes=PRED_ATTRIBUTES).records
               if r.sample_id == sid)
    assert np.isnan(rec.pred.data["flip_iou"][:2]).all() and np.isfinite(rec.pred.data["flip_iou"][2:]).all()
    assert np.isnan(rec.pred.data["flip_conf"][2])
    run = run_score(dataset_name, pred_field="predictions", pixels=False, out_dir=tmp_path / "sc")
    assert any("flip-checked" in n for n in run.notes)
