"""The detector: training, prediction, checkpoints, k-fold, evaluation, imported predictions, CLI.

Everything runs on tiny synthetic images made here (bright and dim rectangles on noise) with a
tiny network, so the whole file takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cvcurate.detector.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cvcurate.detector.config import DetectorConfig, ModelConfig, TrainConfig, load_detector_config
from cvcurate.detector.data import DetectionDataset, holdout_split, kfold_assign, scaled_boxes
from cvcurate.detector.evaluate import evaluate
from cvcurate.formats.predictions import read_predictions
from cvcurate.detector.model import resolve_device
from cvcurate.errors import ConfigError, InputError
from cvcurate.types import Annotations, ImageRecord, LabelSet

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["bright", "dim"]
W, H = 96, 80  # not square on purpose: boxes must come back in each image's own frame


def make_images(folder: Path, n: int, seed: int = 0) -> LabelSet:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        img = (rng.random((H, W)) * 50).astype(np.uint8)
        boxes, cls = [], []
        for _ in range(2):
            c = int(rng.integers(2))
            w, h = (int(v) for v in rng.integers(14, 34, 2))
            x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
            img[y:y + h, x:x + w] = 235 if c == 0 else 125
            boxes.append([x, y, x + w, y + h])
            cls.append(c)
        p = folder / f"img{i:03d}.png"
        cv2.imwrite(str(p), img)
        recs.append(ImageRecord(str(p), W, H, Annotations(np.array(boxes, float), np.array(cls))))
    return LabelSet(list(CLASSES), recs)


def tiny_cfg(epochs: int = 12, max_steps: int = 0) -> DetectorConfig:
    return DetectorConfig(
        model=ModelConfig(input_size=64, stem_channels=8, widths=[8, 16, 32, 32], blocks=[1, 1, 1, 1],
                          fpn_channels=32, head_convs=1),
        train=TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, warmup_epochs=0.5, max_steps=max_steps,
                          scale_jitter=0.0),
    )


def assert_resumes_to_the_same_weights(labels: LabelSet, cfg: DetectorConfig, state: Path) -> Checkpoint:
    """Train ``cfg`` straight through, then again stopped after epoch 2 and resumed from ``state``:
    the resumed run must end on the very same weights. Returns the resumed checkpoint."""
    from cvcurate.detector.train import train

    straight = train(labels, cfg, progress=False)

    class Stop(Exception):
        pass

    def stop(epoch, _):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(labels, cfg, progress=False, state_path=state, on_epoch=stop)
    resumed = train(labels, cfg, progress=False, state_path=state)
    assert resumed.extra["resumed_at_epoch"] == 2
    for k, v in straight.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    return resumed


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LabelSet:
    return make_images(tmp_path_factory.mktemp("tiny") / "images", 16)


@pytest.fixture(scope="module")
def trained(tiny) -> Checkpoint:
    from cvcurate.detector.train import train

    return train(tiny, tiny_cfg(), progress=False)


# ------------------------------------------------------------------------------------------------
def test_config_file_equals_dataclass_defaults():
    assert load_detector_config(REPO / "configs" / "detector.yaml") == DetectorConfig()


def test_config_rejects_bad_input_size(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("model:\n  input_size: 200\n")
    with pytest.raises(ConfigError, match="multiple of the largest stride"):
        load_detector_config(p)


def test_dataset_clips_and_skips_degenerate_boxes(tmp_path):
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), np.zeros((50, 100), np.uint8))
    rec = ImageRecord(str(p), 100, 50, Annotations(
        np.array([[10, 10, 30, 30], [20, 20, 20, 40], [50, 30, 40, 45], [-10, -5, 120, 60]], float), [0, 1, 0, 1]))
    boxes, labels = scaled_boxes(rec, 64)
    assert labels.tolist() == [0, 1]  # zero-width and inverted boxes skipped
    assert np.allclose(boxes[1], [0, 0, 64, 64])  # clipped to the image
    ds = DetectionDataset([rec], 64, augment=True, brightness=0.1, contrast=0.1, scale_jitter=0.3, seed=1)
    for _ in range(20):
        x, t = ds[0]
        b = t["boxes"].numpy()
        assert x.shape == (1, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
        assert bool((b[:, 2:] > b[:, :2]).all()) and float(b.min(initial=0)) >= 0 and float(b.max(initial=0)) <= 64


def test_quarter_turns_carry_each_box_with_its_pixels():
    from cvcurate.detector.data import rotate90

    img = np.zeros((20, 20), np.float32)
    img[2:5, 11:17] = 1.0  # rows 2-4, columns 11-16: the box [11, 2, 17, 5]
    box = np.array([[11, 2, 17, 5]], np.float32)
    for clockwise in (False, True):
        out, b = rotate90(img, box, 20, clockwise=clockwise)
        ys, xs = np.nonzero(out)
        assert b[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # the dataset's turns keep every box on its bright patch
    p_img = np.zeros((64, 64), np.uint8)
    p_img[8:20, 40:60] = 255
    rec = ImageRecord("x.png", 64, 64, Annotations(np.array([[40, 8, 60, 20]], float), [0]))
    ds = DetectionDataset([rec], 64, augment=True, hflip=0, vflip=0, rot90=1.0, noise=0.05, blur=0.0, seed=3)
    ds.cache = {0: p_img}
    for _ in range(6):
        x, t = ds[0]
        x1, y1, x2, y2 = t["boxes"].numpy()[0].astype(int)
        inside = x[0, y1:y2, x1:x2].numpy()
        assert inside.mean() > 0.85 and (x.numpy() > 0.5).sum() <= inside.size + 5


def test_training_reduces_the_loss(trained):
    losses = trained.extra["step_losses"]
    assert len(losses) == trained.extra["steps"] > 10
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    assert trained.data_sha256 and len(trained.data_sha256) == 64


def test_predict_gives_confident_boxes_inside_each_image(trained, tiny):
    from cvcurate.detector.predict import predict

    preds = predict(trained, tiny.records, batch_size=5)
    assert len(preds) == len(tiny.records)
    assert sum(len(p) for p in preds) > 0
    for p in preds:
        assert p.confidence is not None and ((p.confidence >= 0) & (p.confidence <= 1)).all()
        assert (p.xyxy[:, [0, 2]] >= 0).all() and (p.xyxy[:, [0, 2]] <= W).all()
        assert (p.xyxy[:, [1, 3]] >= 0).all() and (p.xyxy[:, [1, 3]] <= H).all()
        assert (p.xyxy[:, 2:] >= p.xyxy[:, :2]).all()
        assert set(p.class_id.tolist()) <= {0, 1}
    # after a few seconds of training it finds the rectangles better than chance
    res = evaluate([r.gt for r in tiny.records], preds, CLASSES)
    assert res.map50 > 0.1


def test_checkpoint_round_trip_gives_the_same_predictions(trained, tiny, tmp_path):
    from cvcurate.detector.predict import predict

    path = save_checkpoint(trained, tmp_path / "m.pt")
    loaded = load_checkpoint(path, arch="fcos_tiny", classes=CLASSES)
    assert loaded.classes == CLASSES and loaded.input_size == 64 and loaded.seed == 0
    assert loaded.data_sha256 == trained.data_sha256 and loaded.torch_version == torch.__version__
    a = predict(trained, tiny.records[:4])
    b = predict(path, tiny.records[:4])
    assert all(x.equals(y, atol=1e-5) for x, y in zip(a, b))


def test_checkpoint_against_other_classes_or_architecture_is_an_input_error(trained, tmp_path):
    path = save_checkpoint(trained, tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"trained on classes .*: the dataset alone has \['scratch'\]; "
                                         r"the checkpoint alone has \['dim'\]$"):
        load_checkpoint(path, classes=["bright", "scratch"])
    with pytest.raises(InputError, match="no class in common$"):
        load_checkpoint(path, classes=["1", "2"])
    with pytest.raises(InputError, match="architecture"):
        load_checkpoint(path, arch="retinanet_big")
    # same class set in another order is fine: ids are remapped
    assert load_checkpoint(path).class_map(["dim", "bright"]).tolist() == [1, 0]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a cvcurate detector checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_kfold_predicts_every_image_once_with_a_model_that_never_saw_it(tiny, monkeypatch):
    import cvcurate.detector.predict as P
    import cvcurate.detector.train as T

    trained_on: dict[int, set[str]] = {}
    predicted: list[tuple[int, list[str]]] = []
    real_train, real_predict = T.train, P.predict

    alive = []  # keep every checkpoint: a freed one's id() can be taken by the next fold's

    def spy_train(labels, cfg, **kw):
        ck = real_train(labels, cfg, **kw)
        alive.append(ck)
        trained_on[id(ck)] = {r.filepath for r in labels.records}
        return ck

    def spy_predict(ck, records, *a, **kw):
        predicted.append((id(ck), [r.filepath for r in records]))
        return real_predict(ck, records, *a, **kw)

    monkeypatch.setattr(T, "train", spy_train)
    monkeypatch.setattr(P, "predict", spy_predict)
    preds, folds = T.kfold_predict(tiny, 3, tiny_cfg(max_steps=2), progress=False, return_folds=True)
    assert len(preds) == len(tiny.records) and all(p.confidence is not None for p in preds)
    assert sorted(np.bincount(folds).tolist()) == [5, 5, 6]
    all_predicted = [p for _, paths in predicted for p in paths]
    assert sorted(all_predicted) == sorted(r.filepath for r in tiny.records)  # each exactly once
    fold_of = {r.filepath: int(f) for r, f in zip(tiny.records, folds)}
    for ck_id, paths in predicted:
        assert not trained_on[ck_id] & set(paths)  # never trained on what it predicts
        assert len({fold_of[p] for p in paths}) == 1
        assert len(trained_on[ck_id]) + len(paths) == len(tiny.records)
    assert np.array_equal(kfold_assign(16, 3, 0), folds)  # seeded: same folds again


def test_holdout_split_is_fixed_and_disjoint(tiny):
    a = holdout_split(tiny, 0.25, seed=3)
    shuffled = LabelSet(tiny.classes, tiny.records[::-1])
    b = holdout_split(shuffled, 0.25, seed=3)
    names = lambda ls, idx: sorted(Path(ls.records[i].filepath).name for i in idx)  # noqa: E731
    assert names(tiny, a[1]) == names(shuffled, b[1])  # independent of record order
    assert not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == len(tiny.records)


def test_evaluate_perfect_and_swapped_predictions(tiny):
    gts = [r.gt for r in tiny.records]
    perfect = [Annotations(g.xyxy, g.class_id, np.full(len(g), 0.9)) for g in gts]
    res = evaluate(gts, perfect, CLASSES)
    assert res.map50 == pytest.approx(1.0) and res.map50_95 == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in res.ap50.values())
    cm = np.array(res.confusion)
    assert cm.shape == (3, 3) and np.trace(cm) == sum(len(g) for g in gts) and cm[2].sum() == cm[:, 2].sum() == 0
    swapped = [Annotations(g.xyxy, 1 - g.class_id, np.full(len(g), 0.9)) for g in gts]
    res = evaluate(gts, swapped, CLASSES)
    assert res.map50 == pytest.approx(0.0, abs=1e-6)
    cm = np.array(res.confusion)
    assert np.trace(cm) == 0 and cm[0, 1] + cm[1, 0] == sum(len(g) for g in gts)
    assert "bright" in res.format()


def test_evaluate_saves_json(tiny, tmp_path):
    gts = [r.gt for r in tiny.records]
    res = evaluate(gts, gts, CLASSES)
    data = json.loads(res.save_json(tmp_path / "e.json").read_text())
    assert data["map50"] == pytest.approx(1.0) and data["confusion_labels"] == CLASSES + ["background"]


# ------------------------------------------------------------------------------------------------
# imported predictions
def _coco_entry(stem="img000", cat=1, score=0.5):
    return {"file_name": f"{stem}.png", "category_id": cat, "bbox": [10, 10, 20, 20], "score": score}


def test_read_coco_predictions(tiny, tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps([_coco_entry(), _coco_entry("img003", 2, 0.7)]))
    out = read_predictions(p, "coco", tiny)
    assert len(out) == len(tiny.records) and len(out[0]) == 1 and len(out[3]) == 1
    assert out[0].xyxy[0].tolist() == [10, 10, 30, 30] and out[3].class_id[0] == 1
    assert out[3].confidence[0] == pytest.approx(0.7)
    # numeric image ids resolved through a COCO ground-truth file
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 7, "file_name": "img005.png"}],
                              "categories": [{"id": 3, "name": "dim"}]}))
    p.write_text(json.dumps([{"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.2}]))
    out = read_predictions(p, "coco", tiny, coco_gt=gt)
    assert len(out[5]) == 1 and out[5].class_id[0] == 1


@pytest.mark.parametrize("entries, message", [
    ([_coco_entry(), _coco_entry("nope")], r"1 of 2 predictions refer to images that are not in the dataset.*'nope'"),
    ([_coco_entry(), {**_coco_entry(), "category_id": 9}], r"unknown classes.*category_id 9"),
    ([{**_coco_entry(), "category_name": "rust"}], r"unknown classes.*'rust'"),
    ([], "no predictions"),
])
def test_read_coco_predictions_errors(tiny, tmp_path, entries, message):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(entries))
    with pytest.raises(InputError, match=message):
        read_predictions(p, "coco", tiny)


def test_read_yolo_predictions_and_errors(tiny, tmp_path):
    d = tmp_path / "yolo"
    d.mkdir()
    (d / "img001.txt").write_text("1 0.5 0.5 0.25 0.5 0.8\n0 0.1 0.1 0.1 0.1 0.3\n")
    out = read_predictions(d, "yolo", tiny)
    assert len(out[1]) == 2 and out[1].class_id.tolist() == [1, 0]
    assert np.allclose(out[1].xyxy[0], [0.375 * W, 0.25 * H, 0.625 * W, 0.75 * H])
    assert np.allclose(out[1].confidence, [0.8, 0.3]) and len(out[0]) == 0
    (d / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2 0.9\n")
    with pytest.raises(InputError, match="images that are not in the dataset.*ghost"):
        read_predictions(d, "yolo", tiny)
    (d / "ghost.txt").unlink()
    (d / "img002.txt").write_text("5 0.5 0.5 0.2 0.2 0.9\n")
    with pytest.raises(InputError, match="1 of 3 predictions refer to unknown classes.*class 5"):
        read_predictions(d, "yolo", tiny)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .txt"):
        read_predictions(empty, "yolo", tiny)
    with pytest.raises(InputError, match="unknown predictions format"):
        read_predictions(d, "csv", tiny)


def test_cuda_request_falls_back_to_cpu_with_a_warning(capsys, monkeypatch):
    """The one device policy (cvcurate.device), with the detector's fallback: whether this machine
    has a GPU or not, CUDA reported missing runs on the CPU and says so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="CUDA is not available on this machine"):
        dev = resolve_device("cuda")
    assert dev.type == "cpu"
    assert "running on the CPU instead" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("cpu").type == "cpu"


# ------------------------------------------------------------------------------------------------
# command line
def test_cli_train_predict_evaluate(tmp_path, dataset_name, monkeypatch):
    from typer.testing import CliRunner

    from cvcurate import store
    from cvcurate.cli import app
    from cvcurate.formats import voc
    from cvcurate.stages.imports import import_dataset

    root = tmp_path / "ds"
    labels = make_images(root / "images", 10, seed=1)
    voc.write(labels, root / "annotations")
    import_dataset(root, dataset_name)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "tiny.yaml"
    import yaml
    from dataclasses import asdict

    cfg.write_text(yaml.safe_dump(asdict(tiny_cfg(epochs=3))))
    run = CliRunner().invoke

    r = run(app, ["train", dataset_name, "--config", str(cfg), "--epochs", "2", "--out", "m.pt"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.pt").is_file()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = run(app, ["predict", dataset_name, "--model", "m.pt", "--batch-size", "4", "--device", "cuda"])
    assert r.exit_code == 0, r.output
    assert r.output.count("CUDA is not available on this machine") == 1, r.output  # one line, not twice
    got = store.read(dataset_name, pred_field="predictions")
    assert all(rec.pred is not None for rec in got.records)
    assert sum(len(rec.pred) for rec in got.records) > 0
    assert all((rec.pred.confidence >= 0).all() and (rec.pred.confidence <= 1).all() for rec in got.records)

    r = run(app, ["evaluate", dataset_name, "--out", "e.json"])
    assert r.exit_code == 0, r.output
    assert "mAP@0.5" in r.output and json.loads((tmp_path / "e.json").read_text())["images"] == 10

    # imported predictions: bad ones change nothing, good ones replace the field
    before = [len(rec.pred) for rec in got.records]
    (tmp_path / "bad.json").write_text(json.dumps([_coco_entry("img000"), _coco_entry("missing")]))
    r = run(app, ["predict", dataset_name, "--predictions", "bad.json", "--format", "coco"])
    assert r.exit_code == 2 and "not in the dataset" in r.output
    assert [len(rec.pred) for rec in store.read(dataset_name, pred_field="predictions").records] == before
    (tmp_path / "good.json").write_text(json.dumps([_coco_entry("img000")]))
    r = run(app, ["predict", dataset_name, "--predictions", "good.json", "--format", "coco", "--field", "ext"])
    assert r.exit_code == 0, r.output
    ext = store.read(dataset_name, pred_field="ext")
    assert sorted(len(rec.pred) for rec in ext.records) == [0] * 9 + [1]

    r = run(app, ["evaluate", dataset_name, "--pred-field", "nothing"])
    assert r.exit_code == 2 and "no field" in r.output

    # a checkpoint of other classes is refused before anything is written
    other = load_checkpoint(tmp_path / "m.pt")
    other.classes = ["a", "b"]
    save_checkpoint(other, tmp_path / "other.pt")
    r = run(app, ["predict", dataset_name, "--model", "other.pt"])
    assert r.exit_code == 2 and "trained on classes" in r.output

    assert f"cvcurate train {dataset_name} --folds 5 --init other.pt" in r.output  # the way to those classes

    r = run(app, ["train", dataset_name, "--config", str(cfg), "--folds", "2", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    oof = store.read(dataset_name, pred_field="predictions_oof")
    assert all(rec.pred is not None for rec in oof.records)

    # folds that start from weights which saw these images would be in-sample: refused in one line
    r = run(app, ["train", dataset_name, "--config", str(cfg), "--folds", "2", "--init", "m.pt"])
    assert r.exit_code == 2 and "trained on 10 of these 10 images" in r.output and "Traceback" not in r.output
    # weights that never saw them: the folds fine-tune them (config's finetune_epochs without --epochs)
    other_imgs = make_images(tmp_path / "other_images", 8, seed=7)
    from cvcurate.detector.train import train as train_fn

    save_checkpoint(train_fn(other_imgs, tiny_cfg(epochs=1), progress=False), tmp_path / "unseen.pt")
    r = run(app, ["train", dataset_name, "--config", str(cfg), "--folds", "2", "--init", "unseen.pt",
                  "--pred-field", "oof_ft"])
    assert r.exit_code == 0, r.output
    assert "each model trained from unseen.pt, 12 epochs" in r.output
    assert all(rec.pred is not None for rec in store.read(dataset_name, pred_field="oof_ft").records)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_training_killed_after_an_epoch_resumes_to_the_same_weights(tiny, tmp_path, ema):
    """An interrupted run resumed from its state file ends with exactly the weights (and the EMA)
    of a run that was never interrupted; a state saved with other settings is refused."""
    import dataclasses

    from cvcurate.detector.train import train

    cfg = tiny_cfg(epochs=3)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ema=ema))
    straight = train(tiny, cfg, progress=False)
    state = tmp_path / "state.pt"
    seen = []

    def stop_after_two(epoch, snapshot):
        seen.append(epoch)
        if epoch == 2:
            assert set(snapshot().state_dict) == set(straight.state_dict)
            raise _Stop  # as a kill right after the epoch's state was saved

    with pytest.raises(_Stop):
        train(tiny, cfg, progress=False, state_path=state, on_epoch=stop_after_two)
    lines = []
    resumed = train(tiny, cfg, progress=False, state_path=state, log=lines.append,
                    on_epoch=lambda e, s: seen.append(e))
    assert seen == [1, 2, 3]  # epochs 1-2 before the kill, only 3 after it
    assert any("resuming" in ln and "2 of 3 epochs" in ln for ln in lines)
    assert resumed.extra["resumed_at_epoch"] == 2 and resumed.extra["epochs_done"] == 3
    for k, v in straight.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    assert resumed.extra["step_losses"] == straight.extra["step_losses"]
    again = train(tiny, cfg, progress=False, state_path=state)  # finished: nothing left to train
    assert all(torch.equal(v, again.state_dict[k]) for k, v in straight.state_dict.items())
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1e-3))
    with pytest.raises(InputError, match="other settings or data"):
        train(tiny, other, progress=False, state_path=state)


def test_ema_weights_are_a_smoothed_copy(tiny):
    """With EMA on the checkpoint holds the average, not the last step's weights: they differ,
    and the model the checkpoint carries is the averaged one."""
    import dataclasses

    from cvcurate.detector.train import train

    cfg = tiny_cfg(epochs=2)
    plain = train(tiny, cfg, progress=False)
    avg = train(tiny, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ema=0.9)), progress=False)
    k = next(k for k, v in plain.state_dict.items() if v.dtype.is_floating_point and v.ndim == 4)
    assert not torch.equal(plain.state_dict[k], avg.state_dict[k])
    assert torch.equal(avg._model.state_dict()[k], avg.state_dict[k])


def test_time_budget_stops_training_on_time(tiny):
    from cvcurate.detector.train import train

    cfg = tiny_cfg(epochs=200)
    cfg.train.time_budget_min = 0.02  # 1.2 s
    ck = train(tiny, cfg, progress=False)
    assert ck.extra["stopped_by_time_budget"] and ck.extra["steps"] < ck.extra["planned_steps"]
    assert ck.extra["train_seconds"] < 10


@pytest.mark.parametrize("name", ["neu-det", "default"])
def test_shipped_weights_load_offline_and_predict_neu_det(neu_det, name):
    from cvcurate import formats
    from cvcurate.detector.checkpoint import NAMED
    from cvcurate.detector.predict import predict

    if not NAMED[name].is_file():
        pytest.skip(f"shipped weights {NAMED[name]} not built")
    labels, _ = formats.load(neu_det, formats.ImportOptions(voc_origin="1"))
    ck = load_checkpoint(name, arch="fcos_tiny", classes=labels.classes)
    assert ck.seed == 0 and len(ck.data_sha256) == 64 and "heldout" in ck.metrics
    recs = [labels.records[i] for i in (0, 600)]
    preds = predict(ck, recs)
    for rec, p in zip(recs, preds):
        assert len(p) > 0 and (p.xyxy[:, 2:] <= [rec.width, rec.height]).all()


def test_kfold_killed_in_its_second_fold_resumes_to_the_same_predictions(tiny, tmp_path, monkeypatch):
    """A k-fold run interrupted in fold 2 keeps fold 1 (not trained again) and fold 2's epochs;
    the resumed run gives exactly the predictions of an uninterrupted one."""
    import cvcurate.detector.predict as P
    import cvcurate.detector.train as T

    cfg = tiny_cfg(epochs=2)
    straight = T.kfold_predict(tiny, 2, cfg, progress=False)
    state = tmp_path / "kfold"
    real_predict, real_train = P.predict, T.train
    calls = {"predict": 0, "train": 0}

    def stop_second_predict(*a, **kw):
        calls["predict"] += 1
        if calls["predict"] == 2:
            raise KeyboardInterrupt
        return real_predict(*a, **kw)

    monkeypatch.setattr(P, "predict", stop_second_predict)
    with pytest.raises(KeyboardInterrupt):
        T.kfold_predict(tiny, 2, cfg, progress=False, state_dir=state)
    assert (state / "fold1of2.pt").is_file() and (state / "fold2of2.state.pt").is_file()
    monkeypatch.setattr(P, "predict", real_predict)

    def count_train(*a, **kw):
        calls["train"] += 1
        return real_train(*a, **kw)

    monkeypatch.setattr(T, "train", count_train)
    lines = []
    resumed = T.kfold_predict(tiny, 2, cfg, progress=False, state_dir=state, log=lines.append)
    assert calls["train"] == 1  # fold 1 kept, fold 2 resumed (its epochs were done: nothing left to train)
    assert any("fold 1/2: kept from an earlier run" in ln for ln in lines)
    for a, b in zip(straight, resumed):
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.class_id, b.class_id)
        assert np.array_equal(a.confidence, b.confidence)
    with pytest.raises(InputError, match="other settings or data"):
        T.kfold_predict(tiny, 2, tiny_cfg(epochs=3), progress=False, state_dir=state)


def test_onnx_runtime_gives_the_same_boxes(tmp_path, monkeypatch):
    """--runtime onnx: the network on ONNX Runtime, the post-processing in torch: the same boxes,
    scores and classes as torch within 1e-4 (float sums in another order), for a checkpoint the
    shipped one and a random one; the export cached once per checkpoint."""
    pytest.importorskip("onnxruntime")
    from cvcurate.detector import runtime
    from cvcurate.detector.predict import predict
    from tests.test_engine_ray import random_checkpoint

    monkeypatch.setenv("CVCURATE_CACHE", str(tmp_path / "cache"))
    labels = make_images(tmp_path / "images", 6, seed=2)
    for ckpt in (load_checkpoint("synth"), random_checkpoint(labels.classes)):
        a = predict(ckpt, labels.records, batch_size=4)
        b = predict(ckpt, labels.records, batch_size=4, runtime="onnx")
        for x, y in zip(a, b):
            assert len(x) == len(y) and len(x) > 0
            top = np.argsort(-x.confidence, kind="stable")[:20]
            order = np.argsort(-y.confidence, kind="stable")[:20]
            assert np.allclose(x.confidence[top], y.confidence[order], atol=1e-4)
            assert np.allclose(x.xyxy[top], y.xyxy[order], atol=1e-2)
            assert np.array_equal(x.class_id[top], y.class_id[order])
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2
    with pytest.raises(InputError, match="unknown --runtime"):
        runtime.check_runtime("tensorrt")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"install cvcurate\[onnx\]"):
        runtime.check_runtime("onnx")


# ------------------------------------------------------------------------------------------------
# starting from other weights (fine-tuning)
def test_init_copies_the_weights_and_matches_class_rows_by_name(trained):
    from cvcurate.detector.model import build_model
    from cvcurate.detector.train import CLS_LAYER, init_weights

    mc = tiny_cfg().model
    torch.manual_seed(0)
    fresh = build_model(mc, 2)
    torch.manual_seed(0)
    model = build_model(mc, 2)
    info = init_weights(model, trained, ["dim", "rust"], mc)  # 'dim' is the checkpoint's class 1
    own, theirs, new = model.state_dict(), trained.state_dict, fresh.state_dict()
    for k, v in own.items():
        if k.startswith(CLS_LAYER):
            assert torch.equal(v[0], theirs[k][1])  # dim's row, moved to its new place
            assert torch.equal(v[1], new[k][1])  # rust: as a fresh head starts (the prior bias)
        else:
            assert torch.equal(v, theirs[k]), k
    assert info["classes_kept"] == ["dim"] and info["classes_new"] == ["rust"]
    assert info["tensors_copied"] == info["tensors"] == len(own)
    other = tiny_cfg().model
    other.fpn_channels = 64
    with pytest.raises(InputError, match="another architecture.*fpn_channels 32 vs 64"):
        init_weights(build_model(other, 2), trained, CLASSES, other)


def test_fine_tuning_from_trained_weights_beats_the_same_steps_from_scratch(trained, tmp_path):
    """Directional: two epochs on new images of the same kind, from weights that learned the task,
    find the boxes better than two epochs from scratch; the result remembers what its start saw."""
    from cvcurate.detector.data import image_digests
    from cvcurate.detector.predict import predict
    from cvcurate.detector.train import train

    new = make_images(tmp_path / "new", 16, seed=3)
    test = make_images(tmp_path / "test", 12, seed=4)
    cfg = tiny_cfg(epochs=2)

    def m_ap(ck):
        return evaluate([r.gt for r in test.records], predict(ck, test.records, 8), CLASSES).map50

    scratch = train(new, cfg, progress=False)
    tuned = train(new, cfg, progress=False, init=trained)
    assert m_ap(tuned) > m_ap(scratch) + 0.2
    assert tuned.extra["init"]["classes_kept"] == CLASSES
    assert tuned.train_digests() == trained.train_digests() | set(image_digests([r.filepath for r in new.records]))
    assert scratch.train_digests() == set(image_digests([r.filepath for r in new.records]))


def test_a_training_state_resumes_only_from_the_same_starting_weights(trained, tiny, tmp_path):
    from cvcurate.detector.train import train

    state = tmp_path / "s.pt"
    first = train(tiny, tiny_cfg(epochs=1), progress=False, init=trained, state_path=state)
    again = train(tiny, tiny_cfg(epochs=1), progress=False, init=trained, state_path=state)  # resumed: done
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    with pytest.raises(InputError, match="other settings or data"):
        train(tiny, tiny_cfg(epochs=1), progress=False, state_path=state)  # from scratch: another run


@pytest.mark.parametrize("keep, nms", [(1, 0.6), (10, 0.6), (100, 0.6), (3, 0.01), (10, 0.01)])
def test_post_processing_gives_torchvision_s_boxes_exactly(trained, tiny, keep, nms, monkeypatch):
    """The post-processing that runs NMS on the best candidates only (doubling them when too few
    survive) keeps exactly the boxes torchvision's full FCOS.postprocess_detections keeps; the
    input transform that normalises a batch at once gives exactly torchvision's tensors."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops import boxes as box_ops

    from cvcurate.detector.predict import predict

    model = trained.model()
    model.detections_per_img, model.score_thresh, model.nms_thresh = keep, 0.001, nms
    passes = []
    real = box_ops.batched_nms
    monkeypatch.setattr(box_ops, "batched_nms", lambda b, *a: passes.append(len(b)) or real(b, *a))
    fast = predict(model, tiny.records, 8)
    monkeypatch.setattr(type(model), "postprocess_detections", FCOS.postprocess_detections)
    for attr in ("forward", "postprocess"):
        monkeypatch.setattr(type(model.transform), attr, getattr(GeneralizedRCNNTransform, attr))
    full = predict(model, tiny.records, 8)
    for a, b in zip(fast, full):
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.class_id, b.class_id)
        assert np.array_equal(a.confidence, b.confidence)
    n = len(tiny.records)
    fast_passes, full_passes = passes[:-n], passes[-n:]
    assert max(fast_passes) <= max(full_passes)
    if nms == 0.6:  # one pass on 8 x keep candidates (or all) per image
        assert fast_passes == [min(8 * keep, c) for c in full_passes]
    else:  # strict NMS keeps few: the candidates were doubled up to all of them for some images
        assert len(fast_passes) > n and sum(len(a) for a in fast) <= keep * n
