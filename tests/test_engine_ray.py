"""--engine ray against --engine local (cvcurate.engine): the same predictions, pixel features, score
issues and augmented samples; a worker killed mid-run is retried and the store written once; an
interrupt leaves the store as it was; the CLI's exit codes without Ray.

One Ray session (2 local CPUs) serves the whole module: starting Ray costs seconds on 2 cores.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cvcurate import corrupt, engine, store
from cvcurate.cli import app
from cvcurate.detector.checkpoint import Checkpoint, save_checkpoint
from cvcurate.stages import predict as predict_stage
from cvcurate.stages.score import run_score
from cvcurate.types import Annotations, ImageRecord
from tests import makedata as md
from tests.test_detector import make_images, tiny_cfg
from tests.test_score import weak_model_predictions

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_session():
    """Ray on 2 local CPUs for the module; its workers import this module (the test checkpoint
    class below) from the repository root."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([old] if old else []))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield engine.Engine("ray", 2)
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


# the command line first: these start no Ray
@pytest.mark.parametrize("args", [["predict", "nope"], ["score", "nope"], ["augment", "nope"]],
                         ids=lambda a: a[0])
def test_engine_ray_without_ray_is_one_line_and_exit_2(args, monkeypatch):
    # before the Ray session of the module starts: no log line of its workers can come in between
    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setitem(sys.modules, "ray", None)
    r = runner.invoke(app, args + ["--engine", "ray"])
    assert r.exit_code == 2 and "install cvcurate[ray]" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["predict", "nope", "--engine", "spark"], "unknown --engine"),
    (["score", "nope", "--engine", "spark"], "unknown --engine"),
    (["augment", "nope", "--engine", "spark"], "unknown --engine"),
    (["predict", "nope", "--workers", "2"], "--workers applies to --engine ray"),
    (["score", "nope", "--workers", "2"], "--workers applies to --engine ray"),
])
def test_bad_engine_options_exit_2(args, words):
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and words in r.output, r.output


class _Bomb(torch.nn.Module):
    """The model, but the first forward that finds ``marker`` removes it and kills its process."""

    def __init__(self, inner: torch.nn.Module, marker: str) -> None:
        super().__init__()
        self.inner = inner
        self.marker = marker

    def forward(self, x):
        if self.marker and os.path.exists(self.marker):
            os.unlink(self.marker)
            Path(self.marker + ".killed").write_text(str(os.getpid()))
            os._exit(1)  # the worker dies mid-shard, as on a lost node
        return self.inner(x)


@dataclass
class KillOnce(Checkpoint):
    marker: str = ""

    def model(self, device="cpu"):
        return _Bomb(super().model(device), self.marker).eval()


def random_checkpoint(classes) -> Checkpoint:
    """An untrained tiny detector (fixed seed): 100 low-confidence boxes per image, at once."""
    from dataclasses import asdict

    from cvcurate.detector.model import build_model

    mc = tiny_cfg().model
    torch.manual_seed(0)
    m = build_model(mc, len(classes))
    return Checkpoint(state_dict={k: v.detach().clone() for k, v in m.state_dict().items()}, classes=list(classes),
                      arch=mc.arch, model_config=asdict(mc), input_size=mc.input_size)


def stored_preds(name, field):
    return {r.filepath: r.pred for r in store.read(name, pred_field=field).records}


def test_predict_on_ray_equals_local_survives_a_killed_worker_and_an_interrupt(ray_session, tmp_path,
                                                                              dataset_name, monkeypatch):
    labels = make_images(tmp_path / "images", 10, seed=3)
    store.write(labels, dataset_name)
    ckpt_path = save_checkpoint(random_checkpoint(labels.classes), tmp_path / "m.pt")
    predict_stage.predict(dataset_name, model=str(ckpt_path), batch_size=4, pred_field="p_local", runtime="torch")
    local = stored_preds(dataset_name, "p_local")
    assert sum(len(p) for p in local.values()) > 0

    import cvcurate.detector.checkpoint as ck

    real_load = ck.load_checkpoint
    marker = tmp_path / "kill-once"

    def load(spec, **kw):
        c = real_load(spec, **kw)
        return KillOnce(**{f.name: getattr(c, f.name) for f in fields(Checkpoint)}, marker=str(marker))

    monkeypatch.setattr(ck, "load_checkpoint", load)

    # Ctrl-C while shards come back: Ray's work stops, nothing is written
    class Interrupt:
        def __init__(self, *a, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __call__(self, done, total):
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine, "Counter", Interrupt)
        with pytest.raises(KeyboardInterrupt):
            predict_stage.predict(dataset_name, model=str(ckpt_path), batch_size=4, pred_field="p_ray",
                                  engine="ray")
    assert "p_ray" not in store.field_names(dataset_name)

    # a worker dies in its first shard: restarted, the shard retried, the store written once
    marker.write_text("")
    res = predict_stage.predict(dataset_name, model=str(ckpt_path), batch_size=4, pred_field="p_ray",
                                engine="ray")
    assert Path(str(marker) + ".killed").is_file() and not marker.exists()
    assert res.images == 10
    got = stored_preds(dataset_name, "p_ray")
    assert got.keys() == local.keys()
    for path, a in local.items():
        b = got[path]
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.class_id, b.class_id)
        assert np.array_equal(a.confidence, b.confidence)
    made = [h for h in store.get_history(dataset_name) if h.get("action") == "predict" and h["pred_field"] == "p_ray"]
    assert len(made) == 1


def test_flip_check_on_ray_equals_local(ray_session, tmp_path, dataset_name):
    from cvcurate.names import PRED_ATTRIBUTES

    labels = make_images(tmp_path / "images", 6, seed=4)
    store.write(labels, dataset_name)
    ckpt_path = save_checkpoint(random_checkpoint(labels.classes), tmp_path / "m.pt")
    for field, eng in (("p_local", "local"), ("p_ray", "ray")):
        predict_stage.predict(dataset_name, model=str(ckpt_path), batch_size=4, pred_field=field, runtime="torch",
                              engine=eng, flip_check=True)
    read = {f: {r.filepath: r.pred for r in store.read(dataset_name, pred_field=f,
                                                       pred_attributes=PRED_ATTRIBUTES).records}
            for f in ("p_local", "p_ray")}
    assert sum(len(p) for p in read["p_local"].values()) > 0
    for path, a in read["p_local"].items():
        b = read["p_ray"][path]
        assert np.array_equal(a.xyxy, b.xyxy)
        for k in PRED_ATTRIBUTES:
            assert np.isfinite(a.data[k]).all() and np.array_equal(a.data[k], b.data[k])


def pixel_dataset(tmp_path, name):
    """40 images with boxes and weak predictions, plus a copy of one image and a dark one."""
    clean = md.make_labels(tmp_path / "images", n=40, width=96, height=80)
    for k, r in enumerate(clean.records):
        if not len(r.gt):
            r.gt = Annotations(np.array([[50, 40, 80, 70]], float), [k % 3])
    shutil.copy(clean.records[0].filepath, tmp_path / "images" / "copy.jpg")
    cv2.imwrite(str(tmp_path / "images" / "dark.jpg"), np.full((80, 96), 8, np.uint8))
    for f in ("copy.jpg", "dark.jpg"):
        clean.records.append(ImageRecord(str((tmp_path / "images" / f).resolve()), 96, 80,
                                         Annotations(np.array([[10, 10, 40, 40]], float), [1])))
    res = corrupt.corrupt(clean, rate=0.3, seed=0, types=["swap", "overlooked"])
    store.write(res.labels, name)
    stored = store.read(name)
    by_path = {r.filepath: r for r in clean.records}
    ordered = type(clean)(clean.classes, [by_path[r.filepath] for r in stored.records])
    store.write_detections(name, "predictions", stored.records, weak_model_predictions(ordered), clean.classes)


def test_score_on_ray_equals_local(ray_session, tmp_path, dataset_name, monkeypatch):
    pixel_dataset(tmp_path, dataset_name)
    seen = []
    real = engine.image_features

    def spy(eng, paths, cfg=None, progress=False):
        seen.append((eng.kind, real(eng, paths, cfg, progress)))
        return seen[-1][1]

    monkeypatch.setattr(engine, "image_features", spy)
    run_score(dataset_name, pred_field="predictions", out_dir=tmp_path / "local")
    r = runner.invoke(app, ["score", dataset_name, "-p", "predictions", "--engine", "ray", "--workers", "2",
                            "--out", str(tmp_path / "ray")])
    assert r.exit_code == 0, r.output
    assert [k for k, _ in seen] == ["local", "ray"]
    a, b = (f for _, f in seen)
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
    docs = [json.loads((tmp_path / d / "scores.json").read_text()) for d in ("local", "ray")]
    assert docs[0]["issues"] == docs[1]["issues"] and docs[0]["images"] == docs[1]["images"]
    types = {i["type"] for i in docs[0]["issues"]}
    assert {"near_duplicate", "underexposed"} <= types  # pixel issues are part of what is compared


def test_augment_on_ray_makes_the_same_samples(ray_session, tmp_path):
    from cvcurate.augment import load_pipeline, make_plan, run_augmentation
    from cvcurate.synth import SynthConfig, generate

    synth = generate(tmp_path / "synth", 48, seed=5, config=SynthConfig(defects_per_image=[1, 3]))
    pipe = load_pipeline("steel")
    plan = make_plan(synth, None, n_paste=pipe.settings.copy_paste.per_sample, seed=11)
    assert plan.n_samples >= 4
    local = run_augmentation(synth, plan, pipe, tmp_path / "local", workers=1, chunk_size=4)
    on_ray = run_augmentation(synth, plan, pipe, tmp_path / "ray", workers=2, chunk_size=4, engine=ray_session)
    assert [s.index for s in on_ray.samples] == [s.index for s in local.samples]
    assert on_ray.counts_after == local.counts_after and on_ray.written == local.written
    for a, b in zip(local.samples, on_ray.samples):
        assert filecmp.cmp(a.record.filepath, b.record.filepath, shallow=False)
        assert a.record.gt.equals(b.record.gt) and a.provenance == b.provenance


def _tag_pid():
    return lambda item: (item, os.getpid())


def _tag_pid_again():
    return lambda prepared: (prepared[0], prepared[1], os.getpid())


def test_prepare_is_a_stage_of_its_own(ray_session):
    """predict's decode/resize: a task stage before the actors (another process than the actor's;
    Ray Data does not fuse them), every shard through both, results in input order."""
    out = ray_session.map(list(range(12)), _tag_pid_again, actors=True, cpus=2, prepare=_tag_pid)
    assert [o[0] for o in out] == list(range(12))
    decoders, actors = {o[1] for o in out}, {o[2] for o in out}
    assert actors and decoders and not decoders & actors
