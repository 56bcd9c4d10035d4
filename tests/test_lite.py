"""The torch-free ONNX path (``cvcurate.detector.lite``): the same boxes as torch, without torch.

``predict --runtime onnx`` on the CPU reads a card and an exported network cached per checkpoint
file and post-processes in numpy; torch is imported only the first time a checkpoint is exported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cvcurate.detector.checkpoint import load_checkpoint, save_checkpoint
from tests.test_detector import make_images

pytest.importorskip("onnxruntime")


def _same(a, b, atol_box=1e-3, atol_conf=1e-5):
    """Every box, score and class equal within float rounding (the order: best first in both)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y) and len(x) > 0
        assert np.array_equal(x.class_id, y.class_id)
        assert np.allclose(x.confidence, y.confidence, atol=atol_conf)
        assert np.allclose(x.xyxy, y.xyxy, atol=atol_box)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVCURATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def test_lite_gives_torchs_boxes_every_one(tmp_path, cache):
    """All (up to 100) boxes of every image, for the shipped weights and an untrained model that
    scatters low-confidence boxes (many candidates, many suppressed): as torch's predict gives them."""
    from cvcurate.detector import lite
    from cvcurate.detector.predict import predict
    from tests.test_engine_ray import random_checkpoint

    labels = make_images(tmp_path / "images", 6, seed=3)
    rand = save_checkpoint(random_checkpoint(labels.classes), tmp_path / "random.pt")
    for model in ("synth", rand):
        ref = predict(load_checkpoint(model), labels.records, batch_size=4)
        det = lite.load(model, threads=2)
        got = lite.predict_records(det, labels.records, batch_size=4)
        _same(ref, got)
    assert len(list(cache.glob("lite-*.onnx"))) == len(list(cache.glob("lite-*.json"))) == 2


def test_nms_is_torchvisions_greedy_nms(tmp_path):
    """Class-wise NMS on clustered random boxes keeps exactly what torchvision's batched_nms keeps,
    in the same order (best first)."""
    import torch
    from torchvision.ops import batched_nms

    from cvcurate.detector.lite import nms_classwise

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 400))
        centres = rng.random((8, 2)) * 200
        c = centres[rng.integers(0, 8, n)] + rng.normal(0, 6, (n, 2))
        wh = rng.random((n, 2)) * 40 + 2
        boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
        scores = rng.random(n).astype(np.float32)
        labels = rng.integers(0, 3, n)
        order = np.argsort(-scores, kind="stable")
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5).numpy()
        got = nms_classwise(boxes, labels, 0.5)
        assert np.array_equal(got, ref), trial


def test_a_cached_model_predicts_without_importing_torch(tmp_path, cache):
    """Once the checkpoint's card and network are cached, a fresh process predicts and counts the
    in-sample images without torch (nor torchvision) ever imported; the boxes are the first run's."""
    from cvcurate.detector import lite

    labels = make_images(tmp_path / "images", 3, seed=4)
    first = lite.predict_records(lite.load("synth", threads=1), labels.records)
    (tmp_path / "recs.json").write_text(json.dumps([[r.filepath, r.width, r.height] for r in labels.records]))
    code = textwrap.dedent(f"""
        import json, sys
        from cvcurate.detector import lite
        from cvcurate.types import ImageRecord
        recs = [ImageRecord(p, w, h) for p, w, h in json.load(open({str(tmp_path / 'recs.json')!r}))]
        det = lite.load("synth", threads=1)
        out = lite.predict_records(det, recs)
        print(json.dumps({{"torch": sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')),
                          "seen": det.card.images_seen([r.filepath for r in recs]),
                          "boxes": [a.xyxy.tolist() for a in out]}}))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["torch"] == []
    assert got["seen"] == load_checkpoint("synth").images_seen([r.filepath for r in labels.records])
    for a, b in zip(first, got["boxes"]):
        assert np.allclose(a.xyxy, np.array(b).reshape(-1, 4))


def test_a_broken_or_stale_card_is_made_again(tmp_path, cache):
    """A card cut short by a kill, or of another version, is rebuilt from the checkpoint; a changed
    checkpoint file gets a card of its own (the key is the file's bytes)."""
    from cvcurate.detector import lite

    labels = make_images(tmp_path / "images", 2, seed=5)
    ref = lite.predict_records(lite.load("synth", threads=1), labels.records)
    card = next(cache.glob("lite-*.json"))
    card.write_text(card.read_text()[:100])
    _same(ref, lite.predict_records(lite.load("synth", threads=1), labels.records))
    d = json.loads(card.read_text())
    d["version"] = -1
    card.write_text(json.dumps(d))
    _same(ref, lite.predict_records(lite.load("synth", threads=1), labels.records))
    assert json.loads(card.read_text())["version"] == lite.CARD_VERSION
    copy = tmp_path / "synth-copy.pt"
    ck = load_checkpoint("synth")
    ck.extra["note"] = "another file"
    save_checkpoint(ck, copy)
    lite.load(copy, threads=1)
    assert len(list(cache.glob("lite-*.json"))) == 2


def test_predict_stage_on_onnx_writes_torchs_boxes(tmp_path, cache, dataset_name, monkeypatch):
    """``cvcurate predict --runtime onnx`` (the stage) writes the predictions ``--runtime torch``
    writes; an unreadable image gets none either way."""
    from cvcurate import store
    from cvcurate.stages import predict as stage
    from cvcurate.synth import generate

    monkeypatch.chdir(tmp_path)
    labels = generate(tmp_path / "s", 5, 3)
    store.write(labels, dataset_name)
    os.unlink(labels.records[0].filepath)
    a = stage.predict(dataset_name, model="synth", pred_field="p_torch", runtime="torch")
    b = stage.predict(dataset_name, model="synth", pred_field="p_onnx", runtime="onnx")
    assert a.images == b.images == 4 and a.boxes == b.boxes > 0
    ta = {r.filepath: r.pred for r in store.read(dataset_name, pred_field="p_torch").records}
    tb = {r.filepath: r.pred for r in store.read(dataset_name, pred_field="p_onnx").records}
    assert len(ta[labels.records[0].filepath]) == len(tb[labels.records[0].filepath]) == 0
    keys = sorted(ta)
    _same([ta[k] for k in keys if len(ta[k])], [tb[k] for k in keys if len(tb[k])])
    hist = [h for h in store.get_history(dataset_name) if h.get("action") == "predict"]
    assert [h["runtime"] for h in hist] == ["torch", "onnx"]


def test_predict_on_onnx_imports_neither_torch_nor_fiftyone(tmp_path, cache, dataset_name, monkeypatch):
    """A second ``predict --runtime onnx`` (the field declared, the card cached), in a fresh process
    with the database by URI, imports neither torch nor FiftyOne: the lock, the journal, the boxes
    and the history go through pymongo; FiftyOne then reads what torch's run wrote, the journal
    record is done and the lock is free."""
    from cvcurate import store
    from cvcurate.stages import predict as stage
    from cvcurate.synth import generate

    monkeypatch.chdir(tmp_path)
    store.write(generate(tmp_path / "s", 4, 3), dataset_name)
    stage.predict(dataset_name, model="synth", runtime="onnx")  # declares the field, caches the card
    ref = {r.filepath: r.pred for r in store.read(dataset_name, pred_field="predictions").records}
    store.set_detections(dataset_name, "predictions", {sid: [] for sid in store.sample_info(dataset_name, [])["id"]})
    code = textwrap.dedent(f"""
        import json, sys
        from cvcurate.stages import predict as stage
        res = stage.predict({dataset_name!r}, model="synth", runtime="onnx")
        print(json.dumps({{"boxes": res.boxes, "loaded": sorted(m for m in sys.modules
                          if m.split('.')[0] in ('torch', 'torchvision', 'fiftyone'))}}))
    """)
    env = {**os.environ, "CVCURATE_PROGRESS": "0"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path,
                         env=env)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [] and got["boxes"] == sum(len(p) for p in ref.values()) > 0
    ds = store.load(dataset_name)
    ds.reload()
    now = {r.filepath: r.pred for r in store.read(dataset_name, pred_field="predictions").records}
    keys = sorted(ref)
    _same([ref[k] for k in keys], [now[k] for k in keys])
    assert sum(len(d.detections) for d in ds.values("predictions")) == got["boxes"]
    assert [h["runtime"] for h in store.get_history(dataset_name) if h.get("action") == "predict"] == ["onnx", "onnx"]
    assert store.journal.pending(dataset_name) == []
    assert store.lock_holder(dataset_name) is None


def test_auto_runtime_is_onnx_on_the_cpu_when_installed(monkeypatch):
    """``--runtime auto`` (the default): onnx on the CPU with ONNX Runtime installed; torch on a GPU
    or without it (no error); an explicit onnx without it is one line."""
    from cvcurate.detector.lite import check_runtime
    from cvcurate.errors import InputError

    assert check_runtime("auto") == check_runtime("") == "onnx"
    assert check_runtime("auto", "cuda") == "torch" and check_runtime("TORCH") == "torch"
    assert check_runtime("auto", ray=True) == "torch" and check_runtime("onnx", ray=True) == "onnx"
    with pytest.raises(InputError, match="unknown --runtime 'tensorrt': use auto, torch or onnx"):
        check_runtime("tensorrt")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert check_runtime("auto") == "torch"
    with pytest.raises(InputError, match=r"install cvcurate\[onnx\]"):
        check_runtime("onnx")
