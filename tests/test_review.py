"""Review decisions round-trip: tag in the store as the App would, apply, check, undo."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from cvcurate import corrupt, decisions, store
from cvcurate.names import FIX_FIELD
from cvcurate.stages import apply as apply_stage
from cvcurate.stages import review
from cvcurate.cli import app
from cvcurate.stages.score import run_score
from tests import makedata as md
from tests.test_score import weak_model_predictions

runner = CliRunner()


def scored_dataset(tmp_path, name):
    clean = md.make_labels(tmp_path / "images", n=40, width=96, height=80)
    for k, r in enumerate(clean.records):  # every image gets boxes, classes vary
        if not len(r.gt):
            r.gt = type(r.gt)([[50, 40, 80, 70]], [k % 3])
    res = corrupt.corrupt(clean, rate=0.3, seed=0, types=["swap", "overlooked", "degenerate"])
    store.write(res.labels, name)
    stored = store.read(name)
    # the model agrees with the clean labels
    by_path = {r.filepath: r for r in clean.records}
    clean_sorted = type(clean)(clean.classes, [by_path[r.filepath] for r in stored.records])
    store.write_detections(name, "predictions", stored.records, weak_model_predictions(clean_sorted), clean.classes)
    run_score(name, pred_field="predictions", pixels=False, out_dir=tmp_path / "scores")
    return clean, res


def tag_fixes(name, action, tag):
    """Tag every proposed fix of one action, as a reviewer does in the App."""
    fixes = store.get_detections(name, FIX_FIELD)
    hit = 0
    for dets in fixes.values():
        for d in dets:
            if d["cvc_action"] == action:
                d["tags"] = [tag]
                hit += 1
    store.set_detections(name, FIX_FIELD, fixes)
    return hit


def gt_of(name):
    return {r.filepath: r for r in store.read(name).records}


def test_tag_apply_undo_round_trip(tmp_path, dataset_name):
    clean, res = scored_dataset(tmp_path, dataset_name)
    before = gt_of(dataset_name)
    swaps = {e.filepath: e for e in res.errors if e.type == "swap"}
    n_relabel = tag_fixes(dataset_name, "relabel", decisions.CONFIRMED)
    n_add = tag_fixes(dataset_name, "add", decisions.REJECTED)
    assert n_relabel > 0 and n_add > 0

    prog = {p.queue: p for p in review.summary(dataset_name)}
    assert prog["swap"].confirmed >= 1 and prog["overlooked"].rejected > 0

    r = runner.invoke(app, ["apply", dataset_name, "--log-dir", str(tmp_path / "log")])
    assert r.exit_code == 0, r.output
    assert f"relabel {n_relabel}" in r.output and "add" not in r.output.split("log")[0]
    after = gt_of(dataset_name)
    classes = store.read(dataset_name).classes
    log = json.loads(next((tmp_path / "log").glob("*.json")).read_text())
    relabelled = {c["filepath"] for c in log["changes"]}
    assert sum(len(c["fixes"]) for c in log["changes"]) == n_relabel
    restored_swaps = relabelled & set(swaps)
    assert restored_swaps  # the model's class brings the true class back
    for path in restored_swaps:
        e = swaps[path]
        assert classes[after[path].gt.class_id[e.boxes[0]]] == clean.classes[e.original_class[0]]
    assert all(len(after[p].gt) == len(before[p].gt) for p in before)  # rejected adds not applied
    assert len(log["changes"]) == len({c["sample_id"] for c in log["changes"]})
    assert all(c["before"] != c["after"] for c in log["changes"])

    # applying again changes nothing; undo restores exactly
    r = runner.invoke(app, ["apply", dataset_name])
    assert "no confirmed fixes" in r.output
    r = runner.invoke(app, ["apply", dataset_name, "--undo"])
    assert r.exit_code == 0, r.output
    restored = gt_of(dataset_name)
    for p in before:
        assert restored[p].gt.equals(before[p].gt)
    r = runner.invoke(app, ["apply", dataset_name, "--undo"])
    assert r.exit_code == 2 and "no applied change" in r.output


def test_sample_tag_confirms_its_fixes_and_adds_boxes(tmp_path, dataset_name):
    clean, res = scored_dataset(tmp_path, dataset_name)
    ds = store.load(dataset_name)
    with_add = {fp for fp, dets in zip(ds.values("filepath"), ds.values(f"{FIX_FIELD}.detections.cvc_action"))
                if dets and "add" in dets}
    overlooked = [e for e in res.errors if e.type == "overlooked" and e.filepath in with_add]
    assert overlooked, "no overlooked box was proposed for adding back"
    target = overlooked[0].filepath
    ds.select_by("filepath", [target]).tag_samples(decisions.CONFIRMED)
    n_before = len(gt_of(dataset_name)[target].gt)
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "log")
    after = gt_of(dataset_name)[target].gt
    assert len(after) == n_before + 1
    dropped = np.array(overlooked[0].original[0])
    from tests.test_objectlab import pairwise_iou

    assert pairwise_iou(after.xyxy, dropped[None]).max() > 0.5  # the missed box is back (as predicted)
    assert cs.applied >= 1


def test_review_cli_errors(tmp_path, dataset_name):
    store.write(md.make_labels(tmp_path / "i", n=3), dataset_name)
    r = runner.invoke(app, ["review", dataset_name, "--summary"])
    assert r.exit_code == 2 and "has not been scored" in r.output
    r = runner.invoke(app, ["review", dataset_name, "--queue", "nope"])
    assert r.exit_code == 2 and "unknown --queue" in r.output
