"""cvcurate augment through the CLI and the store (#14): plan, samples added with provenance,
originals untouched, resume after an interrupt, undo, export provenance, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from cvcurate.synth import generate

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def steel(tmp_path, dataset_name):
    labels = generate(tmp_path / "d", 60, 3)
    store.write(labels, dataset_name)
    return dataset_name


def counts(name, augmented=None):
    labels = store.read(name)
    tags = dict(zip(*store.sample_values(name, ["tags"]).values()))
    recs = [r for r in labels.records if augmented is None or (("augmented" in (tags[r.sample_id] or [])) == augmented)]
    c = np.zeros(len(labels.classes), int)
    for r in recs:
        c += np.bincount(r.gt.class_id, minlength=len(labels.classes))
    return dict(zip(labels.classes, c.tolist())), recs


def test_dry_run_plans_and_writes_nothing(steel, tmp_path):
    r = run("augment", steel, "--dry-run", "--out", tmp_path / "aug")
    assert r.exit_code == 0, r.output
    assert "augmentation plan" in r.output and "dry run:" in r.output and "YOLO rule of thumb" in r.output
    assert not (tmp_path / "aug").exists() and len(store.read(steel).records) == 60


def test_samples_reach_target_with_provenance_and_originals_untouched(steel, tmp_path):
    before, originals = counts(steel)
    gt_before = {r.filepath: r.gt.xyxy.copy() for r in originals}
    rare = min(before, key=before.get)
    target = max(before.values())
    r = run("augment", steel, "--classes", rare, "--out", tmp_path / "aug", "--workers", "2", "--seed", "4")
    assert r.exit_code == 0, r.output
    after, _ = counts(steel)
    assert after[rare] >= target
    orig_after, orig_recs = counts(steel, augmented=False)
    assert orig_after == before and {r.filepath: r.gt.xyxy.tolist() for r in orig_recs} == \
        {k: v.tolist() for k, v in gt_before.items()}
    _, aug = counts(steel, augmented=True)
    prov = dict(zip(*store.sample_values(steel, ["cvc_augment"]).values()))
    by_path = {r.filepath: r for r in originals}
    for r in aug:
        p = prov[r.sample_id]
        assert p["pipeline"] == "steel" and p["seed"] == 4 and len(p["pipeline_sha256"]) == 64
        assert r.split == by_path[p["source"]].split  # kept in the source's split
    # exported with provenance, and no absolute path in the manifest
    assert run("export", steel, "--format", "yolo", "--out", tmp_path / "e").exit_code == 0
    text = (tmp_path / "e" / "manifest.json").read_text()
    doc = json.loads(text)
    assert sum("augmented" in d for d in doc["images"]) == len(aug) and '"/' not in text
    assert run("export", steel, "--format", "yolo", "--out", tmp_path / "e2", "--no-augmented").exit_code == 0
    assert json.loads((tmp_path / "e2" / "manifest.json").read_text())["counts"]["images"] == 60
    # undo removes what was added, files included
    r = run("augment", steel, "--undo")
    assert r.exit_code == 0 and f"removed {len(aug)} augmented sample(s)" in r.output
    assert counts(steel)[0] == before and not list((tmp_path / "aug").glob("images/aug_*"))


def test_interrupted_run_resumes_without_duplicates(steel, tmp_path, monkeypatch):
    rare = min(counts(steel)[0], key=counts(steel)[0].get)
    real = store.write

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write", ctrl_c)  # the files are written, then Ctrl-C before the store
    r = run("augment", steel, "--classes", rare, "--out", tmp_path / "aug")
    assert r.exit_code == 130
    monkeypatch.setattr(store, "write", real)
    written = len(list((tmp_path / "aug" / "images").glob("aug_*")))
    assert written > 0
    r = run("augment", steel, "--classes", rare, "--out", tmp_path / "aug")
    assert r.exit_code == 0 and f"0 written now, {written} resumed" in r.output, r.output
    _, aug = counts(steel, augmented=True)
    assert len(aug) == written == len({r.filepath for r in aug})


def test_augmented_samples_are_not_leakage_of_their_source(steel, tmp_path):
    rare = min(counts(steel)[0], key=counts(steel)[0].get)
    assert run("augment", steel, "--classes", rare, "--out", tmp_path / "aug", "--config", "steel_light").exit_code == 0
    r = run("score", steel, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "s" / "scores.json").read_text())
    prov = dict(zip(*store.sample_values(steel, ["cvc_augment"]).values()))
    src = {sid: p["source"] for sid, p in prov.items() if p}
    bad = [i for i in doc["issues"] if i["type"] in ("near_duplicate", "leakage") and i["sample_id"] in src
           and i["data"].get("other") == src[i["sample_id"]]]
    assert bad == []


def test_bad_input_is_one_line_exit_2(steel, tmp_path, dataset_name, monkeypatch):
    import torch

    # whether this machine has a GPU or not: --device cuda is refused where CUDA is not available
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "bad.yaml").write_text("transform:\n  __class_fullname__: Compose\n  transforms:\n"
                                       "  - __class_fullname__: NoSuchTransform\n    p: 1.0\n")
    big = 10**6
    cases = [
        (["augment", steel, "--config", tmp_path / "bad.yaml"], "NoSuchTransform"),
        (["augment", steel, "--target", 1], "below"),
        (["augment", steel, "--classes", "no_such_class"], "no_such_class"),
        (["augment", steel, "--device", "cuda", "--out", tmp_path / "aug"], "CUDA is not available on this machine"),
        (["augment", steel, "--target", big, "--balance"], "not both"),
    ]
    for args, expected in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert expected in r.output and "Traceback" not in r.output, (args, r.output)
    # and where it is, a device number beyond the GPUs there are is refused too, before any work
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    r = run("augment", steel, "--device", "cuda:1", "--out", tmp_path / "aug")
    assert r.exit_code == 2 and "this machine has 1 CUDA device(s)" in r.output, r.output
    assert counts(steel, augmented=True)[1] == [] and not (tmp_path / "aug").exists()
    empty = dataset_name + "_empty"
    labels = generate(tmp_path / "e", 4, 1)
    for rec in labels.records:
        rec.gt = rec.gt[np.zeros(len(rec.gt), bool)]
    store.write(labels, empty)
    try:
        r = run("augment", empty)
        assert r.exit_code == 2 and "no boxes" in r.output
    finally:
        store.delete(empty)
