"""Scores that mean a probability (#22): directional tests of each signal, a calibration test on
synthetic data with known errors, and reasons that never contradict the evidence."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cvcurate import corrupt
from cvcurate.boxes import iou
from cvcurate.scoring import LABEL_ERROR_TYPES, ScoreConfig, score
from cvcurate.scoring.calibrate import CalibrationConfig, fit_curve, mixture_fit
from cvcurate.types import Annotations, ImageRecord, LabelSet

CLASSES = ["crazing", "inclusion", "patches"]


def make_data(n: int = 300, seed: int = 0) -> tuple[LabelSet, list[Annotations]]:
    """Images with 1-3 well-separated boxes and a detector that finds them (IoU ~0.9, confidence
    0.7-0.95) plus a few weak background predictions."""
    rng = np.random.default_rng(seed)
    recs, preds = [], []
    for i in range(n):
        boxes, cls = [], []
        for slot in rng.permutation(4)[: rng.integers(1, 4)]:
            x0, y0 = (slot % 2) * 200 + 10, (slot // 2) * 200 + 10
            w, h = rng.uniform(60, 170, size=2)
            boxes.append([x0, y0, x0 + w, y0 + h])
            cls.append(int(rng.integers(len(CLASSES))))
        gt = Annotations(np.round(boxes), cls)
        pb = gt.xyxy + rng.normal(0, 3, size=gt.xyxy.shape)
        pc = list(gt.class_id)
        conf = list(rng.uniform(0.7, 0.95, size=len(gt)))
        weak = rng.random(len(gt)) < 0.15  # defects the model is unsure of
        conf = list(np.where(weak, rng.uniform(0.15, 0.6, size=len(gt)), conf))
        for k in np.flatnonzero(rng.random(len(gt)) < 0.3):  # a second opinion of another class
            pb = np.vstack([pb, gt.xyxy[k] + rng.normal(0, 3, size=4)])
            pc.append(int((gt.class_id[k] + rng.integers(1, len(CLASSES))) % len(CLASSES)))
            conf.append(float(rng.uniform(0.05, 0.9)))  # sometimes the model is wrong
        for _ in range(2):  # weak background predictions
            x, y = rng.uniform(0, 340, size=2)
            pb = np.vstack([pb, [x, y, x + 40, y + 40]])
            pc.append(int(rng.integers(len(CLASSES))))
            conf.append(float(rng.uniform(0.02, 0.25)))
        recs.append(ImageRecord(f"/data/img_{i:04d}.png", 400, 400, gt=gt))
        preds.append(Annotations(pb, pc, confidence=np.array(conf)))
    return LabelSet(list(CLASSES), recs), preds


@pytest.fixture(scope="module")
def noisy():
    """The 'user's data': the synthetic labels with 10 % known errors (its natural errors)."""
    labels, preds = make_data()
    res = corrupt.corrupt(labels, rate=0.1, seed=3)
    scored = score(res.labels, predictions=preds)
    return res, preds, scored


def _probs(result, image: int, box: int) -> dict[str, float]:
    s, pr = result.objectlab.signals, result.objectlab.probabilities
    row = int(np.flatnonzero((s.given.image == image) & (s.given.local == box))[0])
    return {t: float(v[row]) for t, v in pr.box.items()} | {"_row": row}


def _rescore(noisy, labels, preds):
    _, _, base = noisy
    return score(labels, predictions=preds, fitted=base.calibration, thresholds=base.thresholds)


def _clean_image(res) -> int:
    bad = {e.filepath for e in res.errors}
    return next(i for i, r in enumerate(res.labels.records) if r.filepath not in bad and len(r.gt) >= 1
                and (r.gt.wh[:, 0] > 100).any())


def test_every_issue_has_a_probability_and_the_run_says_how(noisy):
    res, preds, scored = noisy
    assert scored.issues and all(0 <= i.score <= 1 for i in scored.issues)
    cal = scored.calibration
    assert set(cal.injected) >= {"swap", "badloc", "spurious", "overlooked", "split", "merged"}
    assert all(c.how == "data" for (t, c_), c in cal.curves.items() if c_ is None and t != "merged")
    assert 0 <= cal.ece["all"] <= 0.1 and cal.reliability["all"]
    d = cal.to_dict()
    assert d["curves"] and d["ece"]["all"] == round(cal.ece["all"], 4)


def test_badloc_p_rises_with_the_shift(noisy):
    res, preds, _ = noisy
    i = _clean_image(res)
    j = int(np.argmax(res.labels.records[i].gt.wh[:, 0]))
    out = []
    for dx in (0, 20, 100):
        lab = LabelSet(res.labels.classes, [copy.copy(r) for r in res.labels.records])
        rec = lab.records[i]
        xyxy = rec.gt.xyxy.copy()
        xyxy[j, [0, 2]] += dx
        rec.gt = Annotations(xyxy, rec.gt.class_id.copy())
        r = _rescore(noisy, lab, preds)
        out.append((float(r.objectlab.signals.ev_badloc[_probs(r, i, j)["_row"]]), _probs(r, i, j)["badloc"]))
    (e0, p0), (e20, p20), (e100, p100) = out
    assert e0 < e20 < e100
    assert p0 < p20 < p100


def test_spurious_p_rises_as_the_model_support_under_a_box_falls(noisy):
    res, preds, _ = noisy
    i = _clean_image(res)
    rec = res.labels.records[i]
    ps = []
    for conf in (0.9, 0.3, 0.0):
        pr = [copy.copy(p) for p in preds]
        p = pr[i]
        c = p.confidence.copy()
        match = 0
        from cvcurate.boxes import box_iou
        c[box_iou(p.xyxy, rec.gt.xyxy[:1])[:, 0] > 0.3] = conf  # every prediction on box 0
        keep = c > 0
        pr[i] = Annotations(p.xyxy[keep], p.class_id[keep], confidence=c[keep])
        r = _rescore(noisy, res.labels, pr)
        ps.append(_probs(r, i, int(match))["spurious"])
    # p never falls as the support falls, to 1e-4 (the learned model is not monotone at p ~ 1e-6,
    # where the scores file rounds to 0 anyway), and rises to a flag when nothing supports the box
    tol = 1e-4
    assert ps[0] <= ps[1] + tol and ps[1] <= ps[2] + tol and ps[2] > ps[0] + 0.4, ps
    assert ps[2] >= 0.5


def test_swap_p_rises_with_the_other_class_confidence(noisy):
    res, preds, _ = noisy
    i = _clean_image(res)
    rec = res.labels.records[i]
    other = (int(rec.gt.class_id[0]) + 1) % len(CLASSES)
    ps, evs = [], []
    for conf in (0.2, 0.4, 0.95):
        pr = [copy.copy(p) for p in preds]
        p = pr[i]
        c = p.confidence.copy()
        from cvcurate.boxes import box_iou
        c[box_iou(p.xyxy, rec.gt.xyxy[:1])[:, 0] > 0.3] = 0.05  # the model hardly sees anything else there
        pr[i] = Annotations(np.vstack([p.xyxy, rec.gt.xyxy[:1] + 2]), np.r_[p.class_id, other],
                            confidence=np.r_[c, conf])
        r = _rescore(noisy, res.labels, pr)
        q = _probs(r, i, 0)
        ps.append(q["swap"])
        evs.append(float(r.objectlab.signals.ev_swap[q["_row"]]))
    assert evs[0] < evs[1] < evs[2], evs
    assert ps[0] <= ps[1] <= ps[2] and ps[2] > ps[0] and ps[2] >= 0.5, ps


def test_calibrated_on_known_errors(noisy):
    """Issues with p near x are real errors about x of the time; the expected count is close to
    the number of errors there are."""
    res, _, scored = noisy
    real = []
    by = {}
    for e in res.errors:
        by.setdefault(e.filepath, []).append(e)
    ps = []
    for iss in scored.issues:
        if iss.type not in LABEL_ERROR_TYPES:
            continue
        hit = False
        for e in by.get(iss.filepath, []):
            if iss.box is not None and iss.box in e.boxes:
                hit = True
            if iss.type == "overlooked" and e.type == "overlooked":
                hit |= iou(np.asarray(iss.data["pred_box"]), np.asarray(e.original[0])) >= 0.3
        ps.append(iss.score)
        real.append(hit)
    ps, real = np.array(ps), np.array(real, float)
    b = np.minimum((ps * 5).astype(int), 4)
    ece = sum((b == k).mean() * abs(ps[b == k].mean() - real[b == k].mean()) for k in range(5) if (b == k).any())
    # 64 label issues here, ECE measured 0.209 (0.18-0.22 with the errors of corrupt seeds 1, 2, 4, 5
    # instead of 3); at this size its bootstrap standard error is 0.045 (95 % interval 0.12-0.30). The
    # bound is the measured value plus two standard errors, so that a change that moves a few issues
    # does not flip it, while scores a good deal less calibrated do. Under-confident: issues with p in
    # 0.2-0.6 are real errors 86-100 % of the time (fragments get a shipped prior). No direction is
    # asserted against uncalibrated scores: on these issues the raw evidence (0.15) and the shipped
    # priors alone (0.15) measure no worse.
    assert ece <= 0.209 + 2 * 0.045, ece
    flagged = ps >= 0.5
    assert real[flagged].mean() >= 0.6  # most flags are real errors
    n_err = len(res.errors)
    # the run's own count (the pieces of one split defect are one error, not one per piece)
    expected = sum(v for k, v in scored.expected().items() if k in LABEL_ERROR_TYPES)
    assert abs(expected - n_err) <= 0.35 * n_err, (expected, n_err)


def test_clean_data_is_not_flooded():
    labels, preds = make_data(seed=5)
    r = score(labels, predictions=preds)
    flagged = {i.filepath for i in r.flagged()}
    assert len(flagged) <= 0.05 * len(labels)
    assert sum(r.expected().values()) <= 0.05 * labels.num_boxes


def test_a_swap_is_never_claimed_when_the_model_prefers_the_label(noisy):
    """pitted_surface_172: box labelled patches, the model says patches 0.70 and pitted 0.59 on it."""
    res, preds, _ = noisy
    i = _clean_image(res)
    rec = res.labels.records[i]
    lab = int(rec.gt.class_id[0])
    other = (lab + 1) % len(CLASSES)
    pr = [copy.copy(p) for p in preds]
    pr[i] = Annotations(np.vstack([rec.gt.xyxy[:1] + 1, rec.gt.xyxy[:1] - 1]), [lab, other],
                        confidence=np.array([0.70, 0.59]))
    r = _rescore(noisy, res.labels, pr)
    assert not [x for x in r.issues if x.filepath == rec.filepath and x.type == "swap" and x.box == 0]
    assert float(r.objectlab.signals.ev_swap[_probs(r, i, 0)["_row"]]) == 0.0
    # and every swap of the run quotes a prediction of another class stronger than any of its own
    _, _, scored = noisy
    for x in scored.issues:
        if x.type == "swap":
            assert x.data["pred_class"] != int(scored.labels.records[
                [r_.filepath for r_ in scored.labels.records].index(x.filepath)].gt.class_id[x.box])
            assert "strongest prediction" in x.reason


def test_badloc_reasons_quote_the_iou_and_its_rank(noisy):
    _, _, scored = noisy
    bad = [x for x in scored.issues if x.type == "badloc"]
    assert bad
    for x in bad:
        assert " only " not in x.reason
        assert f"IoU {x.data['iou']:.2f}" in x.reason and "% of" in x.reason and "boxes in this dataset" in x.reason
        if x.data["iou"] >= 0.7:
            assert x.score < 0.5


def test_overlooked_never_says_uncovered_inside_a_box_of_its_class(noisy):
    res, preds, _ = noisy
    i = _clean_image(res)
    rec = res.labels.records[i]
    j = int(np.argmax(rec.gt.wh[:, 0] * rec.gt.wh[:, 1]))
    b = rec.gt.xyxy[j]
    inner = [b[0] + 5, b[1] + 5, b[0] + (b[2] - b[0]) / 3, b[1] + (b[3] - b[1]) / 3]  # small, well inside
    pr = [copy.copy(p) for p in preds]
    p = pr[i]
    pr[i] = Annotations(np.vstack([p.xyxy, inner]), np.r_[p.class_id, rec.gt.class_id[j]],
                        confidence=np.r_[p.confidence, 0.95])
    r = _rescore(noisy, res.labels, pr)
    m = len(p)  # the added prediction's row in its image
    s = r.objectlab.signals
    row = int(s.pred.start[i] + m)
    assert s.cover[row] >= 0.99 and s.ev_overlooked[row] == 0.0
    for x in r.issues:
        if x.type == "overlooked" and "no given box covers" in x.reason:
            assert x.data["cover"] < 0.1


def test_mixture_fit_finds_no_errors_in_clean_units_and_the_count_of_added_ones():
    rng = np.random.default_rng(0)
    clean = np.clip(rng.exponential(0.08, 5000), 0, 1)
    errors = np.clip(rng.normal(0.8, 0.08, 2000), 0, 1)
    cfg = CalibrationConfig()
    c0 = fit_curve("badloc", None, clean, errors, cfg)
    assert c0.natural <= 0.01 * len(clean)
    mixed = np.concatenate([clean, errors[:100]])
    c1 = fit_curve("badloc", None, mixed, errors[100:], cfg)
    assert abs(c1.natural - 100) <= 25
    assert c1(np.array([0.05]))[0] < 0.05 and c1(np.array([0.85]))[0] > 0.8
    n, c = mixture_fit(np.array([100., 50, 20, 10, 5]), np.array([0, 0, 0, 0, 0.0]), 100)
    assert n == 0.0


def test_small_datasets_fall_back_to_shipped_priors_and_say_so():
    labels, preds = make_data(n=20, seed=1)
    r = score(labels, predictions=preds)
    assert all(c.how == "prior" for c in r.calibration.curves.values())
    assert any("shipped priors" in n for n in r.calibration.notes)
    assert all(0 <= i.score <= 1 for i in r.issues)


def test_calibration_config_is_validated():
    cfg = ScoreConfig(calibration=CalibrationConfig(queue_min_p=1.5))
    with pytest.raises(ValueError, match="queue_min_p"):
        cfg.check()


def test_slices_count_flagged_issues_and_sum_p_for_expected_errors():
    from cvcurate.analysis import compute_slices
    from cvcurate.types import Issue

    labels, _ = make_data(n=10, seed=2)
    recs = labels.records
    issues = [Issue(recs[0].filepath, "swap", 0.9, "x", box=0), Issue(recs[1].filepath, "badloc", 0.2, "x", box=0),
              Issue(recs[2].filepath, "spurious", 0.6, "x", box=0)]
    s = compute_slices(labels, issues, min_p=0.5)
    assert s.overall.issues == 2 and s.overall.boxes_with_issues == 2
    assert s.overall.expected == pytest.approx(1.7)
    assert s.overall.to_dict()["expected_per_100_boxes"] == pytest.approx(170 / labels.num_boxes, abs=1e-6)


def test_gate_label_error_rate_is_the_expected_count_per_box_with_an_interval():
    from cvcurate import gate
    from cvcurate.gate import GateInput, ScoredIssue

    labels, _ = make_data(n=100, seed=4)
    scored = [[ScoredIssue("swap", 0.9, False)] if i < 5 else [] for i in range(len(labels))]
    from cvcurate.types import RunRecord

    run = RunRecord(at="2026-01-01T00:00:00", issues=[], summary={
        "expected_label_errors": 12.0, "expected_label_errors_sd": 1.5, "issues": 40, "queue_min_p": 0.5,
        "calibration": {"curves": [1]}})
    r = gate.run_checks(GateInput(labels=labels, issues=[], scored=scored, run=run), gate.GateConfig())
    c = next(c for c in r.checks if c.name == "label_error_rate")
    assert c.value == pytest.approx(12.0 / labels.num_boxes, abs=1e-6)
    assert "expected 12.0 real label errors (95 % interval 9.1-14.9)" in c.message and "40 issues" in c.message
    assert any("assumes" in n for n in c.notes)
    w = next(c for c in r.checks if c.name == "images_with_issues")
    assert w.value == pytest.approx(0.05)
