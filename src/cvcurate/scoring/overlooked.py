"""The learned model of ``overlooked``: a prediction that marks a box the labels miss. Its units
are the usable predictions, one per region; its features what the model and the given boxes say
around each; trained, cross-fitted and corrected as the box types' model (:mod:`.model`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..boxes import pair_iou
from ..names import PRED_ATTRIBUTES
from .batch import image_chunks, pairs_between, pairs_within, seg_max, seg_reduce
from .boxpixels import PIXEL_FEATURES, pixel_features
from .model import (ModelConfig, _cross_folds, _fit_folds, class_stats, matched, natural_count, pred_data,
                    probability)
from .signals import MAX_PAIRS


PRED_FEATURES = ("conf", "prob", "ev_overlooked", "strongest", "cover", "iou_any", "iou_same", "iou_other",
                 "inside_same", "overlooked_signal", "cleanlab_overlooked", "log_area_rel", "log_aspect_rel",
                 "area_share", "cx", "cy", "n_boxes", "n_same", "class_multi") + PRED_ATTRIBUTES + PIXEL_FEATURES \
    + ("cls",)
MIN_PROB = 0.05  # predictions below this calibrated probability are no units (signals.USABLE_PROBABILITY)


def pred_units(s: Any) -> np.ndarray:
    """The prediction rows that are units of ``overlooked``: usable predictions (calibrated
    probability >= :data:`MIN_PROB`), the most probable of each region (IoU >= 0.5, any class)."""
    pred = s.pred
    if not len(pred):
        return np.zeros(0, np.int64)
    prob = s.thresholds.probability(pred.conf)
    rows = np.flatnonzero(prob >= MIN_PROB)
    if len(rows) > 1:
        sub = pred.take(rows)
        a, b = pairs_within(sub)
        close = pair_iou(sub.xyxy, a, sub.xyxy, b) >= 0.5
        a, b = rows[a[close]], rows[b[close]]
        weaker = np.where((prob[a] > prob[b]) | ((prob[a] == prob[b]) & (a < b)), b, a)
        keep = np.ones(len(pred), bool)
        keep[weaker] = False
        rows = rows[keep[rows]]
    return rows


def pred_features(s: Any, rows: np.ndarray, stats: dict[int, tuple[float, float, float]] | None = None) -> np.ndarray:
    """(R, F) features of the prediction rows ``rows`` of signals ``s`` (:data:`PRED_FEATURES`)."""
    pred, g, b = s.pred, s.given, s.batch
    r = len(rows)
    if not r:
        return np.zeros((0, len(PRED_FEATURES)))
    stats = stats if stats is not None else class_stats(s)
    xy = pred.xyxy[rows]
    cls = pred.cls[rows]
    img = pred.image[rows]
    w = np.maximum(xy[:, 2] - xy[:, 0], 1e-3)
    h = np.maximum(xy[:, 3] - xy[:, 1], 1e-3)
    iw = b.width[img].astype(np.float64)
    ih = b.height[img].astype(np.float64)
    conf = pred.conf[rows]
    prob = s.thresholds.probability(conf)
    # every (prediction, given box) pair of an image at once: the distinct rows, in order
    uniq, back = np.unique(rows, return_inverse=True)
    sub = pred.take(uniq)
    n_boxes = g.count[sub.image].astype(np.float64)
    iou_any, iou_same, iou_other, inside_same = (np.zeros(len(uniq)) for _ in range(4))
    n_same = np.zeros(len(uniq))
    for first, stop in image_chunks(sub.count * g.count, MAX_PAIRS):
        a, gi = pairs_between(sub, g, first, stop)
        if not len(a):
            continue
        iou = pair_iou(sub.xyxy, a, g.xyxy, gi)
        same = sub.cls[a] == g.cls[gi]
        pa, ga = sub.xyxy[a], g.xyxy[gi]
        ix = np.clip(np.minimum(pa[:, 2], ga[:, 2]) - np.maximum(pa[:, 0], ga[:, 0]), 0, None)
        iy = np.clip(np.minimum(pa[:, 3], ga[:, 3]) - np.maximum(pa[:, 1], ga[:, 1]), 0, None)
        pw = np.maximum(pa[:, 2] - pa[:, 0], 1e-3)
        ph = np.maximum(pa[:, 3] - pa[:, 1], 1e-3)
        share = ix * iy / (pw * ph)
        m = len(uniq)
        iou_any = np.maximum(iou_any, seg_reduce(np.maximum, iou, a, m, 0.0))
        iou_same = np.maximum(iou_same, seg_max(iou, a, same, m, 0.0))
        iou_other = np.maximum(iou_other, seg_max(iou, a, ~same, m, 0.0))
        inside_same = np.maximum(inside_same, seg_max(share, a, same, m, 0.0))
        n_same += np.bincount(a[same], minlength=m)
    iou_any, iou_same, iou_other, inside_same, n_boxes, n_same = (
        v[back] for v in (iou_any, iou_same, iou_other, inside_same, n_boxes, n_same))
    area_rel, aspect_rel, multi = np.zeros(r), np.zeros(r), np.zeros(r)
    for c in np.unique(cls).tolist():
        m = cls == c
        med_a, med_r, mu = stats.get(int(c), (float(np.median(np.log(w[m] * h[m]))),
                                               float(np.median(np.log(w[m] / h[m]))), 0.0))
        area_rel[m] = np.log(w[m] * h[m]) - med_a
        aspect_rel[m] = np.log(w[m] / h[m]) - med_r
        multi[m] = mu
    cols = [conf, prob, s.ev_overlooked[rows], (s.ev_overlooked[rows] > 0).astype(float), s.cover[rows], iou_any,
            iou_same, iou_other, inside_same, s.overlooked_signal[rows], s.overlooked[rows], area_rel, aspect_rel,
            (w * h) / (iw * ih), (xy[:, 0] + xy[:, 2]) / 2 / iw, (xy[:, 1] + xy[:, 3]) / 2 / ih, n_boxes, n_same,
            multi] + [pred_data(pred, k, rows) for k in PRED_ATTRIBUTES]
    x = np.column_stack([np.nan_to_num(np.asarray(c, np.float64), nan=-1.0) for c in cols])
    return np.column_stack([x, pixel_features(s, xy, img), cls.astype(np.float64)])


@dataclass
class OverlookedModel:
    """The fitted fold models of ``overlooked`` and what turns their odds into ``p``."""

    models: list[Any]
    stats: dict[int, tuple[float, float, float]]
    n_units: int
    n_injected: int
    natural: float
    natural_sd: float
    scale: float | None = None  # the odds' factor (sum of p = N)
    oof_rows: np.ndarray | None = None  # the unit rows of the signals it was fitted on...
    oof: np.ndarray | None = None  # ...and their cross-fitted p
    seconds: float = 0.0

    def p(self, s: Any) -> np.ndarray:
        """``p`` of every prediction of ``s`` (0 for predictions that are no unit)."""
        out = np.zeros(len(s.pred))
        rows = pred_units(s)
        if len(rows):
            pr = np.mean([m.predict_proba(pred_features(s, rows, self.stats)) for m in self.models], axis=0)
            out[rows] = probability(pr[:, 0], pr[:, -1], self.natural, self.n_units, self.scale)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"units": self.n_units, "injected": self.n_injected, "natural": round(self.natural, 3),
                "natural_sd": round(self.natural_sd, 3), "seconds": round(self.seconds, 3)}


def fit_overlooked(s: Any, x_u: np.ndarray, rows_u: np.ndarray, x_e: np.ndarray, img_e: np.ndarray,
                   cfg: ModelConfig, stats: dict, max_rate: float = 0.3, count: float | None = None,
                   image_key: np.ndarray | None = None) -> OverlookedModel | None:
    """The binary version of :func:`fit` for ``overlooked``: the units are predictions
    (``image_key``: the key of each image the folds are dealt by; ``img_e`` in the same keys).
    ``count``: the natural count to use (the per-type curve's, fitted on the evidence the
    overlooked check has always used: many predictions are no box at all, and the model's own
    score mixes them less cleanly); None: estimated from the model's score."""
    t0 = time.perf_counter()
    if len(x_e) < cfg.min_injected or len(x_u) < 2 * cfg.folds:
        return None
    img_u = s.pred.image[rows_u] if image_key is None else image_key[s.pred.image[rows_u]]
    g_u, g_e = np.zeros((len(x_u), 2)), np.zeros((len(x_e), 2))
    models = []
    jobs = []
    for su, se, mu, me in _cross_folds(img_u, img_e, cfg):
        if not len(se) or not len(su):
            continue
        y = np.r_[np.zeros(len(su), np.int64), np.ones(len(se), np.int64)]
        jobs.append((np.concatenate([x_u[su], x_e[se]]), y, np.where(y == 1, len(su) / max(len(se), 1), 1.0), mu, me))
    for (_, _, _, mu, me), m in zip(jobs, _fit_folds(cfg, jobs, {1: {PRED_FEATURES.index("ev_overlooked"): 1}})):
        models.append(m)
        if mu.any():
            g_u[mu] = m.predict_proba(x_u[mu])
        if me.any():
            g_e[me] = m.predict_proba(x_e[me])
    if not models:
        return None
    r_u = g_u[:, 1] / np.maximum(g_u.sum(axis=1), 1e-12)
    r_e = g_e[:, 1] / np.maximum(g_e.sum(axis=1), 1e-12)
    edges = np.linspace(0.0, 1.0, 26)
    h_u = np.histogram(r_u, edges)[0].astype(float)
    q_e = np.histogram(r_e, edges)[0] / max(len(r_e), 1)
    natural, sd = natural_count(h_u, q_e, len(x_u), max_rate, cfg.prior_rate, cfg.prior_weight)
    if count is not None:
        natural = float(count)
    om = OverlookedModel(models, stats, len(x_u), len(x_e), natural, sd)
    om.scale = matched(g_u[:, 1] / np.maximum(g_u[:, 0], 1e-12), natural, len(x_u))
    om.oof_rows = rows_u
    om.oof = probability(g_u[:, 0], g_u[:, 1], natural, len(x_u), om.scale)
    om.seconds = time.perf_counter() - t0
    return om
