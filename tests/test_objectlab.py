"""The batched ObjectLab rules equal cleanlab's own per-image functions, box by box."""

from __future__ import annotations

import numpy as np
import pytest

from cvcurate.scoring import signals as sig
from cvcurate.boxes import pair_iou
from cvcurate.scoring.batch import Batch, pairs_between
from cvcurate.scoring.objectlab import ObjectLabConfig, Thresholds, objectlab_scores
from cvcurate.scoring.thresholds import fit_thresholds, greedy_hits
from cvcurate.types import Annotations, ImageRecord, LabelSet


def pairwise_iou(a, b):
    """IoU matrix of xyxy boxes (N, 4) x (M, 4); boxes without area have IoU 0 (the dense reference)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def calibrate_thresholds(labels, preds, cfg):
    """The thresholds objectlab_scores calibrates on ``labels``."""
    return fit_thresholds(sig.PredictionPairs(Batch.of(labels, preds)), cfg)


def batched_hits(labels, preds, iou_threshold=0.5):
    """The batched greedy matching of calibration, on every (kept given box, prediction) pair at once."""
    pairs = sig.PredictionPairs(Batch.of(labels, preds))
    pg, pp = pairs_between(pairs.given, pairs.pred)
    iou = pair_iou(pairs.given.xyxy, pg, pairs.pred.xyxy, pp)
    return greedy_hits(pairs.given, pairs.pred, sig.Pairs(pg, pp, iou), iou_threshold)


def match_predictions(gt, pred, iou_threshold=0.5):
    """Greedy matching by confidence on one image: True where a prediction hits an unmatched box of its class."""
    if len(pred) == 0:
        return np.zeros(0, dtype=bool)
    return batched_hits(LabelSet(["c"], [ImageRecord("/one.jpg", 1, 1, gt=gt)]), [pred], iou_threshold)


def random_images(n=300, k=4, seed=0, on_thresholds=(0.3, 0.7)):
    """0-8 given boxes (some degenerate, some doubled with another class), 0-25 predictions: most
    near a given box, some far from all, some of another class, a few confidences exactly on the
    thresholds; integer and fractional coordinates."""
    rng = np.random.default_rng(seed)
    recs, preds = [], []
    for i in range(n):
        w, h = int(rng.integers(50, 400)), int(rng.integers(50, 400))
        ng = int(rng.choice([0, 1, 2, 3, 5, 8], p=[.1, .3, .25, .15, .1, .1]))
        xy = rng.uniform(0, 1, (ng, 2)) * [w, h]
        g = np.hstack([xy, xy + rng.uniform(0.5, 2, (ng, 2)) * [w, h] * rng.uniform(0.05, 0.6, (ng, 1))])
        g = g.round(0 if i % 2 else 3)
        gc = rng.integers(0, k, ng)
        if ng and rng.random() < 0.15:
            g[0, 2] = g[0, 0]  # degenerate
        if ng >= 2 and rng.random() < 0.2:  # the same object boxed twice with two classes
            g[1] = g[-1] + rng.uniform(-0.3, 0.3, 4) * (rng.random() < 0.5)
            gc[1] = (gc[-1] + 1) % k
        m = int(rng.choice([0, 1, 4, 10, 25], p=[.1, .2, .3, .3, .1]))
        src = rng.integers(0, max(ng, 1), m)
        base = g[src] if ng else np.zeros((m, 4))
        pb = base + rng.normal(0, 1, (m, 4)) * rng.uniform(0, 20, (m, 1))
        far = (rng.random(m) < 0.3) | (ng == 0)
        xy = rng.uniform(0, 1, (m, 2)) * [w, h]
        pb[far] = np.hstack([xy, xy + rng.uniform(3, 60, (m, 2))])[far]
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2])
        pc = np.where((rng.random(m) < 0.7) & (ng > 0), gc[src] if ng else 0, rng.integers(0, k, m))
        conf = rng.uniform(0, 1, m)
        exact = rng.random(m) < 0.1
        conf[exact] = rng.choice(on_thresholds, int(exact.sum()))
        recs.append(ImageRecord(filepath=f"/r/{i}.jpg", width=w, height=h, gt=Annotations(g.reshape(-1, 4), gc)))
        preds.append(Annotations(pb.reshape(-1, 4), pc, confidence=conf))
    return LabelSet([f"c{j}" for j in range(k)], recs), preds


def cleanlab_inputs(labels, preds, th, cfg):
    """cleanlab's ``auxiliary_inputs`` built image by image, independently of the batched code."""
    aux, kept = [], []
    for rec, p in zip(labels.records, preds):
        g_idx = np.flatnonzero((rec.gt.wh > 0).all(axis=1))
        p_idx = np.flatnonzero(p.confidence >= th.low)
        g, q = rec.gt[g_idx], p[p_idx]
        iou = pairwise_iou(g.xyxy, q.xyxy)
        cg = (g.xyxy[:, :2] + g.xyxy[:, 2:]) / 2
        cq = (q.xyxy[:, :2] + q.xyxy[:, 2:]) / 2
        d = np.linalg.norm(cg[:, None, :] - cq[None, :, :], axis=2) / (cfg.distance_scale * np.hypot(rec.width, rec.height))
        sim = cfg.alpha * iou + (1 - cfg.alpha) * np.exp(-d)
        aux.append({"pred_labels": q.class_id, "pred_label_probs": q.confidence, "pred_bboxes": q.xyxy,
                    "lab_labels": g.class_id, "lab_bboxes": g.xyxy, "similarity_matrix": sim,
                    "iou_matrix": iou, "min_possible_similarity": 0.0})
        kept.append((g_idx, p_idx))
    positive = [a["similarity_matrix"][a["similarity_matrix"] > 0] for a in aux]
    min_sim = float(min((x.min() for x in positive if x.size), default=1.0))
    for a in aux:
        a["min_possible_similarity"] = min_sim
    return aux, kept


def reference_signals(gt, pred, th):
    """The calibrated signals of one image, computed as a dense matrix (the previous implementation)."""
    prob = th.probability(pred.confidence) if len(pred) else np.zeros(0)
    n, m = len(gt), len(pred)
    p_high = th.probability(th.high)
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.where(prob >= p_high, prob, 0)
    if m == 0:
        return np.ones(n), np.zeros(n), np.zeros(n), np.zeros(0)
    iou = pairwise_iou(gt.xyxy, pred.xyxy)
    same = gt.class_id[:, None] == pred.class_id[None, :]
    usable = prob[None, :] >= 0.05
    support = np.where(same & usable, prob[None, :] * iou, 0.0).max(axis=1)
    best_iou = np.where(same & usable, iou, 0.0).max(axis=1)
    near = iou >= 0.5
    p_other = np.where(~same & near, prob[None, :], 0.0).max(axis=1)
    p_same = np.where(same & near, prob[None, :], 0.0).max(axis=1)
    over = np.where(prob >= p_high, prob * (1 - iou.max(axis=0)), 0.0)
    return 1 - support, best_iou, p_other * (1 - p_same), over


def greedy_loop(gt, pred, iou_threshold=0.5):
    """The per-image greedy matching the batched one replaces."""
    hit = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return hit
    iou = pairwise_iou(pred.xyxy, gt.xyxy)
    iou[pred.class_id[:, None] != gt.class_id[None, :]] = 0
    used = np.zeros(len(gt), dtype=bool)
    for i in np.argsort(-pred.confidence, kind="stable"):
        row = np.where(used, 0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            hit[i] = used[j] = True
    return hit


CASES = [  # (classes, seed, thresholds: None = calibrated on the data)
    (4, 0, Thresholds(low=0.3, high=0.7, how="test")),
    (2, 1, Thresholds(low=0.3, high=0.7, how="test")),
    (6, 2, Thresholds(low=0.5, high=0.5, how="test: low == high")),
    (3, 3, None),
]


@pytest.mark.parametrize("k,seed,th", CASES)
def test_box_scores_and_image_quality_equal_cleanlab(k, seed, th):
    from cleanlab.object_detection import rank

    labels, preds = random_images(k=k, seed=seed)
    cfg = ObjectLabConfig()
    res = objectlab_scores(labels, preds, cfg, thresholds=th)
    th = res.thresholds
    aux, kept = cleanlab_inputs(labels, preds, th, cfg)
    over = rank.compute_overlooked_box_scores(alpha=cfg.alpha, high_probability_threshold=th.high, auxiliary_inputs=aux)
    swap = rank.compute_swap_box_scores(alpha=cfg.alpha, high_probability_threshold=th.high, auxiliary_inputs=aux)
    badloc = rank.compute_badloc_box_scores(alpha=cfg.alpha, low_probability_threshold=th.low, auxiliary_inputs=aux)
    counts = {"overlooked": 0, "swap": 0, "badloc": 0, "conflict": 0}
    for i, (g_idx, p_idx) in enumerate(kept):
        n, m = len(labels.records[i].gt), len(preds[i])
        assert res.overlooked[i].shape == (m,) and res.swap[i].shape == (n,) and res.badloc[i].shape == (n,)
        np.testing.assert_allclose(res.overlooked[i][p_idx], over[i], atol=1e-6, rtol=0, equal_nan=True)
        np.testing.assert_allclose(res.swap[i][g_idx], swap[i], atol=1e-6, rtol=0)
        np.testing.assert_allclose(res.badloc[i][g_idx], badloc[i], atol=1e-6, rtol=0)
        rest_p = np.setdiff1d(np.arange(m), p_idx)
        rest_g = np.setdiff1d(np.arange(n), g_idx)
        assert np.isnan(res.overlooked[i][rest_p]).all()
        assert (res.swap[i][rest_g] == 1).all() and (res.badloc[i][rest_g] == 1).all()
        counts["overlooked"] += int((~np.isnan(over[i])).sum())
        counts["swap"] += int((swap[i] < 1).sum())
        counts["badloc"] += int((badloc[i] < 1).sum())
        counts["conflict"] += int((swap[i] == aux[i]["min_possible_similarity"]).sum())
    assert all(v > 0 for v in counts.values()), counts  # every rule was exercised
    pooled = [rank.pool_box_scores_per_image(s, temperature=cfg.temperature) for s in (over, swap, badloc)]
    quality = np.exp(sum(np.log(1e-100 + x) for x in pooled) / 3.0)
    np.testing.assert_allclose(res.image_quality, quality, atol=1e-6, rtol=0)
    assert res.population == sum(len(g) for g, _ in kept)


@pytest.mark.parametrize("k,seed,th", CASES)
def test_calibrated_signals_equal_the_dense_computation(k, seed, th):
    labels, preds = random_images(k=k, seed=seed)
    res = objectlab_scores(labels, preds, thresholds=th)
    th = res.thresholds
    for i, (rec, p) in enumerate(zip(labels.records, preds)):
        g_idx = np.flatnonzero((rec.gt.wh > 0).all(axis=1))
        rest = np.setdiff1d(np.arange(len(rec.gt)), g_idx)
        unsupported, best_iou, swap, over = reference_signals(rec.gt[g_idx], p, th)
        for got, want, neutral in ((res.unsupported[i], unsupported, 1.0), (res.best_iou[i], best_iou, 0.0),
                                   (res.swap_signal[i], swap, 0.0)):
            assert got.shape == (len(rec.gt),)
            np.testing.assert_allclose(got[g_idx], want, atol=1e-12, rtol=0)
            assert (got[rest] == neutral).all()
        np.testing.assert_allclose(res.overlooked_signal[i], over, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_greedy_matching_equals_the_per_image_loop(seed):
    labels, preds = random_images(n=200, k=2, seed=seed)
    # many overlapping predictions per box, with tied confidences, so that boxes are contested
    rng = np.random.default_rng(seed)
    crowded = []
    for p in preds:
        extra = p.xyxy.repeat(3, axis=0) + rng.normal(0, 2, (3 * len(p), 4))
        conf = np.round(rng.uniform(0, 1, 4 * len(p)), 1)
        crowded.append(Annotations(np.vstack([p.xyxy, extra]), np.r_[p.class_id, p.class_id.repeat(3)], confidence=conf))
    # a prediction at equal IoU with two boxes takes the lower index; the next one then misses
    tie = Annotations([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])
    tie_pred = Annotations([[1, 0, 11, 10], [-3, 0, 7, 10]], [0, 0], confidence=[0.9, 0.8])
    np.testing.assert_array_equal(match_predictions(tie, tie_pred), [True, False])
    labels.records.append(ImageRecord("/tie.jpg", 20, 20, gt=tie))
    crowded.append(tie_pred)
    hits = batched_hits(labels, crowded, 0.5)
    want = np.concatenate([greedy_loop(r.gt, p) for r, p in zip(labels.records, crowded)])
    assert want.sum() > 100
    np.testing.assert_array_equal(hits, want)
    for r, p in list(zip(labels.records, crowded))[:30]:
        np.testing.assert_array_equal(match_predictions(r.gt, p), greedy_loop(r.gt, p))


def test_given_thresholds_skip_calibration():
    labels, preds = random_images(n=200, seed=5)
    cfg = ObjectLabConfig()
    calibrated = calibrate_thresholds(labels, preds, cfg)
    a = objectlab_scores(labels, preds, cfg)
    b = objectlab_scores(labels, preds, cfg, thresholds=calibrated)
    assert (a.thresholds.low, a.thresholds.high) == (calibrated.low, calibrated.high)
    assert b.thresholds is calibrated
    assert [(i.filepath, i.type, i.score, i.box) for i in a.issues] == [(i.filepath, i.type, i.score, i.box) for i in b.issues]
    other = Thresholds(low=0.2, high=0.4, how="given")
    c = objectlab_scores(labels, preds, cfg, thresholds=other)
    assert c.thresholds is other and len(c.issues) != len(a.issues)


def test_empty_inputs():
    labels = LabelSet(["a"], [ImageRecord("/x.jpg", 10, 10), ImageRecord("/y.jpg", 10, 10, gt=Annotations([[1, 1, 5, 5]], [0]))])
    preds = [Annotations.empty(with_confidence=True)] * 2
    res = objectlab_scores(labels, preds)
    # nothing to calibrate on: the shipped prior's probability at the strongest evidence
    from cvcurate.scoring.calibrate import load_priors

    p = float(load_priors()["spurious"](np.array([1.0]))[0])
    assert [(i.filepath, i.type, i.score, i.box) for i in res.issues] == [("/y.jpg", "spurious", p, 0)]
    assert res.issues[0].data["evidence"] == 1.0
    assert np.allclose(res.image_quality, 1.0)
    assert [len(x) for x in res.swap] == [0, 1] and [len(x) for x in res.overlooked] == [0, 0]
    assert res.unsupported[1].tolist() == [1.0]


def test_pairs_made_in_chunks_give_the_same_result(monkeypatch):
    labels, preds = random_images(n=150, seed=7)
    whole = objectlab_scores(labels, preds)
    monkeypatch.setattr(sig, "MAX_PAIRS", 40)  # many chunks, some of a single image
    assert len(sig.PredictionPairs(Batch.of(labels, preds)).chunks) > 20
    chunked = objectlab_scores(labels, preds)
    assert [vars(i) for i in chunked.issues] == [vars(i) for i in whole.issues]
    np.testing.assert_array_equal(chunked.image_quality, whole.image_quality)
    assert (chunked.thresholds.low, chunked.thresholds.high) == (whole.thresholds.low, whole.thresholds.high)
    for name in ("overlooked", "swap", "badloc", "swap_signal", "unsupported", "best_iou", "overlooked_signal"):
        for x, y in zip(getattr(chunked, name), getattr(whole, name)):
            np.testing.assert_array_equal(x, y)


def _th() -> Thresholds:
    return Thresholds(low=0.3, high=0.6, how="test")


def test_split_and_merged_boxes_found_by_the_model_s_account():
    classes = ["a", "b"]
    # image 0: one defect the model sees whole, given as three pieces; plus an unrelated box
    pieces = Annotations(np.array([[10, 10, 40, 60], [42, 10, 70, 60], [72, 10, 100, 60], [150, 150, 180, 190]],
                                  float), np.array([0, 0, 0, 1]))
    pred0 = Annotations(np.array([[10, 10, 100, 60], [150, 150, 180, 190]], float), np.array([0, 1]),
                        confidence=np.array([0.9, 0.9]))
    # image 1: one given box over two defects the model sees apart
    merged = Annotations(np.array([[10, 10, 120, 60]], float), np.array([1]))
    pred1 = Annotations(np.array([[10, 10, 55, 60], [75, 10, 120, 60]], float), np.array([1, 1]),
                        confidence=np.array([0.9, 0.8]))
    # image 2: clean, the model agrees box for box
    clean = Annotations(np.array([[20, 20, 60, 60], [100, 100, 150, 140]], float), np.array([0, 0]))
    pred2 = Annotations(clean.xyxy.copy(), clean.class_id.copy(), confidence=np.array([0.9, 0.9]))
    # image 3: two small defects far apart that the model boxes as one cluster: not pieces of one
    scattered = Annotations(np.array([[20, 20, 40, 40], [150, 150, 170, 170]], float), np.array([0, 0]))
    pred3 = Annotations(np.array([[15, 15, 175, 175]], float), np.array([0]), confidence=np.array([0.9]))
    labels = LabelSet(classes, [ImageRecord(f"{i}.png", 200, 200, g)
                                for i, g in enumerate([pieces, merged, clean, scattered])])
    res = objectlab_scores(labels, [pred0, pred1, pred2, pred3], thresholds=_th())
    split = sorted((i.filepath, i.box) for i in res.issues if i.type == "split")
    assert split == [("0.png", 0), ("0.png", 1), ("0.png", 2)]
    s = [i for i in res.issues if i.type == "split"][0]
    assert s.data["evidence"] == pytest.approx(0.9 * 1.0, abs=0.01)  # p * IoU(union of pieces, prediction)
    assert "pieces" in s.reason and s.data["pred_box"] == [10.0, 10.0, 100.0, 60.0]
    m = [i for i in res.issues if i.type == "merged"]
    assert [(i.filepath, i.box) for i in m] == [("1.png", 0)]
    assert m[0].data["evidence"] == pytest.approx(0.8)  # min p * IoU(union of predictions, box): the union is the box
    assert not [i for i in res.issues if i.filepath == "2.png"]
    assert not [i for i in res.issues if i.filepath == "3.png" and i.type == "split"]


def test_spurious_listed_only_above_min_score_after_scaling():
    """A box the model sees as something else is scaled down by that support and then not listed."""
    labels = LabelSet(["a", "b"], [ImageRecord("0.png", 200, 200, Annotations(np.array([[10, 10, 60, 60]], float),
                                                                              np.array([0])))])
    pred = Annotations(np.array([[10, 10, 60, 60]], float), np.array([1]), confidence=np.array([0.9]))
    th = Thresholds(low=0.5, high=0.95, how="test", grid=np.array([0.0, 1.0]), precision=np.array([0.0, 0.3]))
    res = objectlab_scores(labels, [pred], thresholds=th)
    from cvcurate.scoring.calibrate import CalibrationConfig

    assert all(i.score >= CalibrationConfig().list_min_p for i in res.issues)
    assert not [i for i in res.issues if i.type == "spurious"]


def test_zero_area_prediction_is_inside_nothing():
    gt = Annotations(np.array([[0, 0, 100, 100]], float), np.array([0]))
    pred = Annotations(np.array([[0, 0, 60, 100], [90, 50, 90, 80]], float), np.array([0, 0]),
                       confidence=np.array([0.9, 0.9]))
    res = objectlab_scores(LabelSet(["a"], [ImageRecord("0.png", 200, 200, gt)]), [pred], thresholds=_th())
    assert not [i for i in res.issues if i.type == "merged"]


def test_match_predictions_without_predictions():
    gt = Annotations(np.array([[0, 0, 10, 10]], float), np.array([0]))
    assert match_predictions(gt, Annotations.empty()).tolist() == []


def test_threshold_probability_on_the_breakpoints_equals_the_fit_on_every_confidence():
    """Oracle: Thresholds keeps only the isotonic fit's breakpoints; its probability of any
    confidence equals the fit predicted at that confidence (scikit-learn's own predict), at a
    fraction of the points."""
    from sklearn.isotonic import IsotonicRegression

    from cvcurate.scoring.objectlab import ObjectLabConfig

    labels, preds = random_images(n=300, k=3, seed=4)
    th = calibrate_thresholds(labels, preds, ObjectLabConfig())
    pairs = sig.PredictionPairs(Batch.of(labels, preds))
    conf = pairs.pred.conf
    hits = greedy_hits(pairs.given, pairs.pred, sig.Pairs.cat([p.select((pairs.given.cls[p.given] == pairs.pred.cls[p.pred])
                                                                        & (p.iou >= 0.5)) for p in pairs.each()]), 0.5)
    iso = IsotonicRegression(y_min=0, y_max=1, increasing=True, out_of_bounds="clip").fit(conf, hits.astype(float))
    q = np.r_[np.random.default_rng(0).uniform(-0.1, 1.1, 2000), conf]
    np.testing.assert_allclose(th.probability(q), iso.predict(q), atol=1e-12)
    assert len(th.grid) < len(np.unique(conf)) / 2


def test_hopeless_predictions_dropped_only_when_asked():
    """``min_precision``: the predictions whose fitted precision on the data is below it go before any
    signal; the thresholds stay those fitted on all predictions; 0 (the default) keeps every one."""
    from cvcurate.scoring.objectlab import drop_hopeless

    labels, preds = random_images(n=300, seed=3)
    # padding as a low-threshold detector makes it: far-off boxes at low confidence on every image
    rng = np.random.default_rng(0)
    padded = []
    for rec, p in zip(labels.records, preds):
        xy = rng.uniform(0, 1, (6, 2)) * [rec.width, rec.height]
        junk = np.hstack([xy, xy + 5])
        padded.append(Annotations(np.vstack([p.xyxy, junk]), np.r_[p.class_id, np.zeros(6, np.int64)],
                                  confidence=np.r_[p.confidence, rng.uniform(0.01, 0.05, 6)]))
    everyone = calibrate_thresholds(labels, padded, ObjectLabConfig())
    kept, th = drop_hopeless(labels, padded, ObjectLabConfig(), None)
    assert th is None and sum(map(len, kept)) == sum(map(len, padded))  # off by default: nothing dropped

    cfg = ObjectLabConfig(min_precision=0.05)
    kept, th = drop_hopeless(labels, padded, cfg, None)
    assert (th.low, th.high) == (everyone.low, everyone.high)  # fitted on all of them
    n_all, n_kept = sum(map(len, padded)), sum(map(len, kept))
    assert n_kept < n_all - 6 * 250  # most of the padding went
    for p, k in zip(padded, kept):
        gone = np.setdiff1d(np.round(p.confidence, 12), np.round(k.confidence, 12))
        assert (th.probability(gone) < 0.05).all() and (th.probability(k.confidence) >= 0.05).all()
    res = objectlab_scores(labels, padded, cfg)
    assert sum(map(len, res.overlooked)) == n_kept  # the signals saw only the kept ones
    assert res.thresholds.low == everyone.low
