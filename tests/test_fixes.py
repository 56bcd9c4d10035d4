"""Proposed fixes (#15): a move or an add never takes a prediction that stands for another box;
fragments are merged, merged boxes split; a sample-level confirmation applies all or none."""

from __future__ import annotations

import pytest

import numpy as np

from cvcurate import decisions, store
from cvcurate.stages import apply as apply_stage
from cvcurate.stages import review
from cvcurate.names import FIX_FIELD
from cvcurate.scoring.fixes import proposed_fixes
from cvcurate.types import Annotations, ImageRecord, Issue
from tests.test_review import scored_dataset


def rec(gt, gt_cls, pred, pred_cls, conf=None):
    gt = Annotations(np.array(gt, float), gt_cls, data={"id": np.array([f"g{i}" for i in range(len(gt))], object)})
    pred = Annotations(np.array(pred, float).reshape(-1, 4), pred_cls,
                       confidence=np.array(conf if conf is not None else [0.9] * len(pred_cls), float))
    return ImageRecord("/x/a.jpg", 200, 200, gt=gt, pred=pred)


def test_move_never_takes_the_prediction_of_another_box():
    # box 0 and box 1 are both crazing; the only crazing prediction sits on box 0
    r = rec([[10, 10, 50, 50], [120, 120, 160, 160]], [0, 0], [[11, 11, 51, 51]], [0])
    bad = Issue(r.filepath, "badloc", 0.9, "box 1 (crazing) overlaps the model's crazing only at IoU 0.00", box=1,
                data={"pred_box": [11, 11, 51, 51], "confidence": 0.9})
    assert [f.action for f in proposed_fixes(r, [bad])] == []
    # with a free prediction near box 1, the move takes that one
    r = rec([[10, 10, 50, 50], [120, 120, 160, 160]], [0, 0], [[11, 11, 51, 51], [125, 118, 170, 158]], [0, 0])
    (fix,) = proposed_fixes(r, [bad])
    assert fix.action == "move" and fix.target == "g1" and np.allclose(fix.xyxy, [125, 118, 170, 158])
    # an add on top of a box of that class is no fix
    over = Issue(r.filepath, "overlooked", 0.8, "x", data={"pred_box": [12, 10, 50, 52], "pred_class": 0})
    assert proposed_fixes(r, [over]) == []


def test_fragments_are_merged_and_merged_boxes_split():
    r = rec([[10, 10, 50, 50], [50, 10, 90, 50], [100, 100, 190, 140]], [1, 1, 2],
            [[102, 102, 140, 138], [150, 101, 188, 139]], [2, 2])
    frag = Issue(r.filepath, "fragment", 0.7, "boxes 0 and 1 look like pieces", box=1, data={"other": 0})
    merged = Issue(r.filepath, "merged", 0.6, "box 2 spans 2", box=2)
    fixes = proposed_fixes(r, [frag, merged], min_conf=0.5)
    merge = [f for f in fixes if f.action == "merge"]
    split = [f for f in fixes if f.action == "split"]
    assert len(merge) == 1 and merge[0].target == "g1" and merge[0].others == ("g0",)
    assert np.allclose(merge[0].xyxy, [10, 10, 90, 50])
    assert len(split) == 2 and {f.group for f in split} == {"g2"}
    # applied to stored detections: the merge leaves one box, the split two
    dets = [{"id": "g0", "label": "b", "bounding_box": [0.05, 0.05, 0.2, 0.2]},
            {"id": "g1", "label": "b", "bounding_box": [0.25, 0.05, 0.2, 0.2]},
            {"id": "g2", "label": "c", "bounding_box": [0.5, 0.5, 0.45, 0.2]}]
    started: set[str] = set()
    assert decisions.apply_fix(dets, {"id": "f1", "cvc_action": "merge", "cvc_target": "g1", "cvc_others": "g0",
                                    "bounding_box": [0.05, 0.05, 0.4, 0.2]}, started)
    for k, bb in enumerate(([0.51, 0.51, 0.19, 0.18], [0.75, 0.5, 0.19, 0.19])):
        assert decisions.apply_fix(dets, {"id": f"s{k}", "cvc_action": "split", "cvc_target": "g2", "cvc_group": "g2",
                                        "bounding_box": bb}, started)
    assert [d.get("id") for d in dets] == ["g1", "g2", None] and dets[0]["bounding_box"] == [0.05, 0.05, 0.4, 0.2]
    assert [d["label"] for d in dets] == ["b", "c", "c"]
    # a merge whose other box is gone does not apply
    assert not decisions.apply_fix([{"id": "g1", "bounding_box": [0, 0, 1, 1]}],
                                 {"id": "f", "cvc_action": "merge", "cvc_target": "g1", "cvc_others": "g9",
                                  "bounding_box": [0, 0, 1, 1]}, set())


def test_sample_confirmation_applies_all_of_its_fixes_or_none(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    # two samples with at least one fix on a given box each
    targeted = [sid for sid, dets in fixes.items() if any(d.get("cvc_target") for d in dets)][:2]
    broken, fine = targeted
    ds = store.load(dataset_name)
    ds.select([broken, fine]).tag_samples(decisions.CONFIRMED)
    # box of one fix of `broken` edited away since scoring
    gt = store.get_detections(dataset_name, store.GT_FIELD, [broken])
    gone = next(d["cvc_target"] for d in fixes[broken] if d.get("cvc_target"))
    store.set_detections(dataset_name, store.GT_FIELD, {broken: [d for d in gt[broken] if d["id"] != gone]})
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "log")
    changed = {c["sample_id"] for c in cs.changes}
    assert fine in changed and broken not in changed
    assert [s["sample_id"] for s in cs.skipped] == [broken]
    n_fine = len([d for d in fixes[fine]])
    assert len(next(c for c in cs.changes if c["sample_id"] == fine)["fixes"]) == n_fine
    assert all(f["tagged_at"] for c in cs.changes for f in c["fixes"])


def test_summary_counts_fixes_per_queue_and_dry_run_lists_changes(tmp_path, dataset_name):
    from typer.testing import CliRunner

    from cvcurate.cli import app
    from tests.test_review import tag_fixes

    scored_dataset(tmp_path, dataset_name)
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    # confirm exactly one relabel (a swap fix)
    sid, fx = next((s, d) for s, dets in fixes.items() for d in dets if d["cvc_action"] == "relabel")
    fx["tags"] = [decisions.CONFIRMED]
    store.set_detections(dataset_name, FIX_FIELD, {sid: fixes[sid]})
    rows = {p.queue: p for p in review.summary(dataset_name)}
    assert rows["swap"].confirmed == 1 and rows["swap"].open == rows["swap"].fixes - 1
    assert sum(p.confirmed for p in rows.values()) == 1  # counted once, under its own queue only
    assert all(p.fixes == 0 for q, p in rows.items() if q == "image")
    gt_before = store.get_detections(dataset_name, store.GT_FIELD)
    r = CliRunner().invoke(app, ["apply", dataset_name, "--dry-run"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("  ")]
    assert len(lines) == 1 and "relabel (swap)" in lines[0] and " -> " in lines[0] and "box " in lines[0]
    # in pixels, with the box's number among the image's boxes: the old box and the relabelled one
    rec = next(r for r in store.read(dataset_name).records if r.sample_id == sid)
    k = list(rec.gt.data["id"]).index(fx["cvc_target"])
    x1, y1, x2, y2 = rec.gt.xyxy[k]
    old = f"{store.read(dataset_name).classes[rec.gt.class_id[k]]} " \
          f"[{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] px"
    new = f"{fx['cvc_class']} [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] px"
    assert f"box {k}: relabel (swap) {old} -> {new}" in lines[0], lines[0]
    assert store.get_detections(dataset_name, store.GT_FIELD) == gt_before  # nothing written
    n = tag_fixes(dataset_name, "add", decisions.REJECTED)
    rows = {p.queue: p for p in review.summary(dataset_name)}
    assert rows["overlooked"].rejected == n


def test_queue_overview_and_min_score(tmp_path, dataset_name):
    from typer.testing import CliRunner

    from cvcurate.cli import app

    scored_dataset(tmp_path, dataset_name)
    sizes = {q.queue: q for q in review.overview(dataset_name, 0.99)}
    assert sizes["all"].samples > 0 and all(q.shown <= q.samples for q in sizes.values())
    assert sizes["swap"].samples == store.count_view(dataset_name, "cvc-swap")
    r = CliRunner().invoke(app, ["review", dataset_name, "--min-score", "0.5"])
    assert r.exit_code == 0 and "review queues of" in r.output and "estimated precision" in r.output
    assert "expected errors" in r.output
    run = store.get_runs(dataset_name)["score"]
    assert sizes["all"].expected == pytest.approx(sum(q["expected_flagged"] for q in run["queues"].values()))
