"""Confidence thresholds from the precision the predictions have on this data (a small detector
rarely reaches cleanlab's fixed 0.95): a prediction is right when the greedy matching gives it a
given box of its class; an isotonic fit of right against confidence gives the precision at each
confidence, and the thresholds are the first confidences that reach the targets."""

from __future__ import annotations

import numpy as np

from .batch import FlatBoxes
from .signals import MATCH_IOU, ObjectLabConfig, Pairs, PredictionPairs, Thresholds


def greedy_hits(given: FlatBoxes, pred: FlatBoxes, pairs: Pairs, iou_threshold: float) -> np.ndarray:
    """Greedy matching by confidence, all images at once: True where a prediction hits a box.

    Image by image, predictions in decreasing confidence (ties: lower index first) take the unused
    given box of their class with the highest IoU (ties: lower index), if it reaches
    ``iou_threshold``. ``pairs``: (given box, prediction) pairs as :func:`pairs_between` makes
    them. Only pairs of the same class at IoU >= threshold can match; round r processes the r-th
    candidate prediction of every image together.
    """
    hits = np.zeros(len(pred), dtype=bool)
    c = (given.cls[pairs.given] == pred.cls[pairs.pred]) & (pairs.iou >= iou_threshold)
    pg, pp, iou = pairs.given[c], pairs.pred[c], pairs.iou[c]
    if not len(pp):
        return hits
    cand = np.unique(pp)
    ps = cand[np.lexsort((cand, -pred.conf[cand], pred.image[cand]))]
    im = pred.image[ps]
    first = np.r_[True, im[1:] != im[:-1]]
    pos = np.arange(len(ps))
    rank = np.zeros(len(pred), dtype=np.int64)
    rank[ps] = pos - np.maximum.accumulate(np.where(first, pos, 0))
    r = rank[pp]
    o = np.lexsort((pg, -iou, pp, r))
    pg, pp, r = pg[o], pp[o], r[o]
    bounds = np.flatnonzero(np.r_[True, r[1:] != r[:-1], True])
    used = np.zeros(len(given), dtype=bool)
    for a, b in zip(bounds[:-1], bounds[1:]):  # one round per candidate rank, not per image
        g_, p_ = pg[a:b], pp[a:b]
        starts = np.flatnonzero(np.r_[True, p_[1:] != p_[:-1]])
        free_at = np.minimum.reduceat(np.where(used[g_], b - a, np.arange(b - a)), starts)
        ok = free_at < b - a
        used[g_[free_at[ok]]] = True
        hits[p_[starts[ok]]] = True
    return hits


def fit_thresholds(pairs: PredictionPairs, cfg: ObjectLabConfig, keep: bool = False) -> Thresholds:
    """Confidence thresholds from the precision the predictions actually have on this data: a
    prediction is right when the greedy matching (:func:`greedy_hits`, IoU >= ``MATCH_IOU``) gives
    it a given box of its class. ``keep``: keep the pairs made for the next pass over them."""
    conf = pairs.pred.conf
    if len(conf) < 20:
        return Thresholds(low=min(cfg.max_low_threshold, 0.5), high=cfg.max_high_threshold,
                          how="defaults (fewer than 20 predictions)")
    given, pred = pairs.given, pairs.pred
    cands = [p.select((given.cls[p.given] == pred.cls[p.pred]) & (p.iou >= MATCH_IOU)) for p in pairs.each(keep)]
    hits = greedy_hits(given, pred, Pairs.cat(cands), MATCH_IOU)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0, y_max=1, increasing=True, out_of_bounds="clip")
    iso.fit(conf, hits.astype(float))
    grid = np.unique(conf)
    precision = iso.predict(grid)

    def first_reaching(target: float, quantile: float) -> tuple[float, bool]:
        ok = np.flatnonzero(precision >= target)
        if len(ok):
            return float(grid[ok[0]]), True
        return float(np.quantile(conf, quantile)), False

    high, high_ok = first_reaching(cfg.high_precision, cfg.fallback_high_quantile)
    low, low_ok = first_reaching(cfg.low_precision, cfg.fallback_low_quantile)
    high = min(high, cfg.max_high_threshold)
    low = min(low, cfg.max_low_threshold, high)
    how = ("precision targets reached" if high_ok and low_ok else
           "quantile fallback: the predictions never reach the precision target")
    # the curve kept for Thresholds.probability: the isotonic fit's breakpoints (interpolating on
    # them gives the same values as on every confidence, in a fraction of the time at 1M images)
    return Thresholds(low=low, high=high, how=how, grid=np.asarray(iso.X_thresholds_, np.float64),
                      precision=np.asarray(iso.y_thresholds_, np.float64))


