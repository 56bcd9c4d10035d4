"""What the predictions say about each given box and prediction: ObjectLab's scores, our calibrated
signals, and the model's account of boxes in pieces (the "rank" step of cleanlab's
rank / filter / summary; :mod:`~cvcurate.scoring.issues` decides and writes the reasons).

:func:`measure` turns a :class:`~cvcurate.scoring.batch.Batch` into :class:`Signals`, named flat
arrays per kept given box, per prediction and per image. It works on the (kept given box,
prediction) pairs of every image (:class:`PredictionPairs`, made in chunks of at most
``MAX_PAIRS``), in steps that each read as one rule:

1. :func:`~cvcurate.scoring.thresholds.fit_thresholds`: the confidence thresholds from the
   precision of the predictions on this data (greedy matching, then isotonic regression);
2. :func:`_useful_pairs`: the pairs some rule uses, and the ``anything`` signal over all pairs;
3. :func:`_similarity`: cleanlab's similarity, scale-free;
4. :func:`_cleanlab_rules` and :func:`_image_quality`: ObjectLab's overlooked, swap and badloc box
   scores and the pooled image quality, as cleanlab 2.9 computes them (see
   :mod:`~cvcurate.scoring.objectlab`);
5. :func:`_calibrated_signals`: ``unsupported``, ``best_iou``, ``swap_signal``, ``overlooked_signal``;
6. :func:`_pieces`: ``split`` and ``merged``, boxes in pieces or merged by the model's account;
7. :func:`_evidence`: each box error type's evidence and the prediction its issue quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..boxes import box_area, pair_iou
from .boxpixels import BoxPixels
from .batch import (Batch, FlatBoxes, image_chunks, pairs_between, pairs_within, seg_argmax,
                    seg_max, seg_reduce)

# cleanlab.internal.constants used by the rules reproduced below
_CL_EPSILON = 1e-6  # floor of the union in cleanlab's own IoU, and of the softmin temperature
_CL_LABEL_OVERLAP = 0.95  # IoU from which two given boxes of different classes are a conflict
_CL_TINY = 1e-100  # added before the log when pooling the three kinds

MAX_PAIRS = 1 << 22  # (given box, prediction) pairs made at once: bounds memory on huge datasets
MAX_PIECE_OVERLAP = 1 / 3  # pieces of one object overlap each other less than this (of the smaller)
CANDIDATE_EVIDENCE = 0.02  # predictions below this overlooked evidence are not candidates
MATCH_IOU = 0.5  # a prediction "is right" (calibration) or "is near" a box (swap signal) at this IoU
USABLE_PROBABILITY = 0.05  # predictions below this calibrated probability do not support a box


@dataclass
class ObjectLabConfig:
    alpha: float = 0.9  # weight of IoU against centre distance in the similarity (cleanlab's default)
    distance_scale: float = 0.05  # centre distance unit, as a fraction of the image diagonal
    high_precision: float = 0.8  # precision from which a prediction is trusted for overlooked/swap
    low_precision: float = 0.5  # precision from which a prediction is used for badloc
    max_high_threshold: float = 0.95  # never stricter than cleanlab's own defaults
    max_low_threshold: float = 0.5
    fallback_high_quantile: float = 0.9  # when precision never reaches the target
    fallback_low_quantile: float = 0.6
    temperature: float = 0.1  # softmin pooling of box scores per image (cleanlab's default)
    # predictions whose fitted precision on this data is below this are dropped before any signal:
    # almost never right, they only blur the evidence of the others (0: keep all)
    min_precision: float = 0.0
    # below this best precision against the labels (at any confidence) `score` warns that the model
    # does not know this data and names the fine-tuning command (a warning only; no score moves)
    weak_agreement: float = 0.5

    def check(self) -> None:
        for name in ("alpha", "high_precision", "low_precision", "max_high_threshold", "max_low_threshold",
                     "fallback_high_quantile", "fallback_low_quantile", "min_precision", "weak_agreement"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.distance_scale <= 0 or self.temperature <= 0:
            raise ValueError("distance_scale and temperature must be > 0")


@dataclass
class Thresholds:
    low: float
    high: float
    how: str
    grid: np.ndarray | None = None  # confidences at which the precision was fitted
    precision: np.ndarray | None = None  # fitted precision (isotonic) at ``grid``

    def probability(self, conf: np.ndarray) -> np.ndarray:
        """Calibrated probability that a prediction of confidence ``conf`` is right."""
        conf = np.asarray(conf, dtype=np.float64)
        if self.grid is None or len(self.grid) == 0:
            return conf
        return np.interp(conf, self.grid, self.precision)


@dataclass
class Signals:
    """Everything :func:`measure` finds, flat: K kept (non-degenerate) given boxes, M predictions,
    N images. cleanlab scores are 1 clean .. 0 dirty; the calibrated signals 0 clean .. 1 dirty;
    "match" arrays hold prediction rows (-1: none)."""

    batch: Batch
    given: FlatBoxes  # the K kept given boxes (cleanlab sees only these)
    kept: np.ndarray  # (K,) row of each kept box among all given boxes of ``batch``
    thresholds: Thresholds
    # per prediction (M,)
    overlooked: np.ndarray  # cleanlab overlooked score; NaN where it has none
    overlooked_signal: np.ndarray  # p * (1 - best IoU with any given box) when p >= p(high), else 0
    # per kept given box (K,)
    swap: np.ndarray  # cleanlab swap score
    badloc: np.ndarray  # cleanlab badloc score
    swap_signal: np.ndarray  # p(another class at IoU >= 0.5) * (1 - p(its class at IoU >= 0.5))
    unsupported: np.ndarray  # 1 - max p * IoU over usable predictions of its class
    best_iou: np.ndarray  # best IoU with a usable prediction of its class
    anything: np.ndarray  # max raw confidence * IoU over every prediction of any class
    split: np.ndarray  # score of being one of several pieces of one predicted object
    split_match: np.ndarray  # the prediction it is a piece of
    merged: np.ndarray  # score of spanning several predicted objects
    n_inside: np.ndarray  # number of trusted predictions of its class inside it
    # the evidence the calibration turns into probabilities (:mod:`~cvcurate.scoring.calibrate`),
    # 0 none .. 1 strong, per kept given box (K,) and per prediction (M,); see :func:`_evidence`
    ev_swap: np.ndarray
    ev_badloc: np.ndarray
    ev_spurious: np.ndarray
    ev_overlooked: np.ndarray  # (M,), 0 for a prediction that is not the strongest of its region
    p_other: np.ndarray  # (K,) best probability of a prediction of another class at IoU >= 0.5
    p_same: np.ndarray  # (K,) best probability of a prediction of its class at IoU >= 0.5
    swap_pred: np.ndarray  # (K,) that other-class prediction (-1: none)
    bad_pred: np.ndarray  # (K,) the prediction of its class that stands for the box (-1: none)
    bad_iou: np.ndarray  # (K,) its IoU with the box
    cover: np.ndarray  # (M,) how much of a prediction a given box covers (IoU, or inside one of its class)
    # per image (N,)
    image_quality: np.ndarray  # cleanlab-style label quality, 1 clean .. 0 dirty
    # the images' grey maps for the pixel features of boxes (:mod:`.boxpixels`); None: not read
    pixels: BoxPixels | None = None

    @property
    def pred(self) -> FlatBoxes:
        return self.batch.pred


# ----------------------------------------------------------------------------------------------
# (kept given box, prediction) pairs


@dataclass
class Pairs:
    """(kept given box, prediction) pairs, given-box-major within an image, and their IoU."""

    given: np.ndarray  # (P,) kept given box of each pair
    pred: np.ndarray  # (P,) prediction of each pair
    iou: np.ndarray  # (P,)

    def select(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.given[mask], self.pred[mask], self.iou[mask])

    @classmethod
    def cat(cls, parts: list[Pairs]) -> Pairs:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return cls(*(np.concatenate(x) for x in zip(*((p.given, p.pred, p.iou) for p in parts))))


class PredictionPairs:
    """The kept given boxes of a batch, its predictions, and their pairs made image chunk by image
    chunk (at most ``MAX_PAIRS`` at once). With a single chunk, :meth:`each` can keep the pairs it
    made (``keep=True``) for the next pass to reuse once."""

    def __init__(self, batch: Batch):
        given = batch.given
        self.kept = np.flatnonzero((given.xyxy[:, 2:] - given.xyxy[:, :2] > 0).all(axis=1))
        self.given = given.take(self.kept)
        self.pred = batch.pred
        self.chunks = image_chunks(self.given.count * self.pred.count, MAX_PAIRS)
        self._kept_pairs: Pairs | None = None

    def each(self, keep: bool = False) -> Iterator[Pairs]:
        for a, b in self.chunks:
            if self._kept_pairs is not None:
                pairs, self._kept_pairs = self._kept_pairs, None
            else:
                pg, pp = pairs_between(self.given, self.pred, a, b)
                pairs = Pairs(pg, pp, pair_iou(self.given.xyxy, pg, self.pred.xyxy, pp))
                if keep and len(self.chunks) == 1:
                    self._kept_pairs = pairs
            yield pairs


# ----------------------------------------------------------------------------------------------
# the signals


def measure(batch: Batch, cfg: ObjectLabConfig, thresholds: Thresholds | None = None) -> Signals:
    """Every signal of the predictions of ``batch`` (with predictions); ``thresholds``: use these
    instead of calibrating on the batch."""
    pairs = PredictionPairs(batch)
    given, pred = pairs.given, pairs.pred
    from .thresholds import fit_thresholds  # it builds on this module's pairs

    th = thresholds if thresholds is not None else fit_thresholds(pairs, cfg, keep=True)
    conf = pred.conf
    prob = th.probability(conf) if len(pred) else np.zeros(0)
    seen = conf >= th.low  # cleanlab sees these predictions; lower ones cannot change its three scores
    p, anything = _useful_pairs(pairs, prob, seen, th)
    same = given.cls[p.given] == pred.cls[p.pred]
    sim = _similarity(batch, given, pred, p, cfg)
    pos = seen[p.pred] & (sim > 0)
    min_sim = float(sim[pos].min()) if pos.any() else 1.0  # cleanlab's min_possible_similarity
    by_pred = np.argsort(p.pred, kind="stable")  # the pairs in prediction-major order
    pred_iou = seg_max(p.iou[by_pred], p.pred[by_pred], np.ones(len(by_pred), dtype=bool), len(pred), 0.0)

    overlooked, swap, badloc = _cleanlab_rules(given, pred, p, same, sim, min_sim, by_pred, pred_iou, seen, th)
    unsupported, best_iou, swap_signal, overlooked_signal = _calibrated_signals(given, p, same, prob, pred_iou, th)
    split, split_match, merged, n_inside = _pieces(given, pred, p, prob, float(th.probability(th.low)))
    ev = _evidence(batch, given, pred, p, same, prob, pred_iou, anything, unsupported)
    return Signals(**ev, batch=batch, given=given, kept=pairs.kept, thresholds=th, overlooked=overlooked,
                   overlooked_signal=overlooked_signal, swap=swap, badloc=badloc, swap_signal=swap_signal,
                   unsupported=unsupported, best_iou=best_iou, anything=anything, split=split, split_match=split_match,
                   merged=merged, n_inside=n_inside,
                   image_quality=_image_quality(overlooked, swap, badloc, given, pred, batch.given.n_images, cfg))


def _useful_pairs(pairs: PredictionPairs, prob: np.ndarray, seen: np.ndarray, th: Thresholds
                  ) -> tuple[Pairs, np.ndarray]:
    """The pairs some rule can use, and ``anything`` per kept given box (which needs them all).

    Kept: all pairs of the predictions cleanlab sees, that can support a box or be overlooked (so
    per-prediction maxima over them are complete), the near pairs of any prediction with a
    probability (swap signal); and those :func:`_pieces` trusts.

    ``anything``, raw confidence x IoU with a prediction of ANY class: breaks the ties of
    ``unsupported`` (a twentieth of the boxes have no usable prediction of their class at all)
    between a box where the model sees something uncertain and one where it sees nothing, as on a
    spurious box.
    """
    conf, n_given = pairs.pred.conf, len(pairs.given)
    p_high = th.probability(th.high)
    need = seen | (prob >= min(USABLE_PROBABILITY, p_high, float(th.probability(th.low))))
    parts = []
    anything = np.zeros(n_given)
    for p in pairs.each():
        if len(p.given):
            anything = np.maximum(anything, seg_max(conf[p.pred] * p.iou, p.given, np.ones(len(p.given), bool),
                                                    n_given, 0.0))
        parts.append(p.select(need[p.pred] | ((p.iou >= MATCH_IOU) & (prob[p.pred] > 0))))
    return Pairs.cat(parts), anything


def _similarity(batch: Batch, given: FlatBoxes, pred: FlatBoxes, p: Pairs, cfg: ObjectLabConfig) -> np.ndarray:
    """Per pair, as cleanlab's similarity_matrix: ``alpha * IoU + (1 - alpha) * exp(-d)``, ``d`` the
    centre distance in units of ``distance_scale`` of the image diagonal."""
    img = given.image[p.given]
    cg = (given.xyxy[:, :2] + given.xyxy[:, 2:]) / 2
    cq = (pred.xyxy[:, :2] + pred.xyxy[:, 2:]) / 2
    dx = cg[p.given, 0] - cq[p.pred, 0]
    dy = cg[p.given, 1] - cq[p.pred, 1]
    d = np.sqrt(dx * dx + dy * dy) / (cfg.distance_scale * np.hypot(batch.width, batch.height))[img]
    return cfg.alpha * p.iou + (1 - cfg.alpha) * np.exp(-d)


def _cleanlab_rules(given: FlatBoxes, pred: FlatBoxes, p: Pairs, same: np.ndarray, sim: np.ndarray, min_sim: float,
                    by_pred: np.ndarray, pred_iou: np.ndarray, seen: np.ndarray, th: Thresholds
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cleanlab's overlooked (per prediction), swap and badloc (per kept given box) box scores."""
    K, M, conf = len(given), len(pred), pred.conf
    pair_conf, pair_seen = conf[p.pred], seen[p.pred]
    same_sim = seg_max(sim[by_pred], p.pred[by_pred], same[by_pred], M, -np.inf)
    overlooked = np.full(M, np.nan)
    # "overlaps a given box": cleanlab tests its own IoU > 0, which is > 0 exactly when ours is
    flag = seen & ~(conf < th.high) & ~(pred_iou > 0)
    overlooked[flag] = np.where(same_sim > -np.inf, same_sim, min_sim * (1 - conf))[flag]

    cand = pair_seen & ~same & (pair_conf > th.high)
    other_sim = seg_max(sim, p.given, cand, K, np.nan)
    swap = np.where(np.isnan(other_sim), 1.0, np.maximum(min_sim, 1 - other_sim))
    swap[_conflicting(given)] = min_sim
    badloc = seg_max(sim, p.given, same & (pair_conf > th.low) & (p.iou > 0), K, 1.0)
    return overlooked, swap, badloc


def _conflicting(given: FlatBoxes) -> np.ndarray:
    """cleanlab's ``_has_overlap``: kept given boxes overlapped at IoU >= 0.95 (cleanlab's IoU, union
    floored at 1e-6) by another given box of another class. The test is symmetric, so each pair of
    one image is made once and marks both boxes."""
    a, b = pairs_within(given)
    c = given.cls[a] != given.cls[b]
    a, b = a[c], b[c]
    x = given.xyxy
    w = np.minimum(x[a, 2], x[b, 2]) - np.maximum(x[a, 0], x[b, 0])
    h = np.minimum(x[a, 3], x[b, 3]) - np.maximum(x[a, 1], x[b, 1])
    inter = np.where((w < 0) | (h < 0), 0.0, w * h)
    area = (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    union = area[a] + area[b] - inter
    overlap = inter / np.maximum(union, _CL_EPSILON) >= _CL_LABEL_OVERLAP
    hit = np.zeros(len(x), dtype=bool)
    hit[a[overlap]] = True
    hit[b[overlap]] = True
    return hit


def _softmin_pool(values: np.ndarray, seg: np.ndarray, n: int, temperature: float) -> np.ndarray:
    """cleanlab's ``pool_box_scores_per_image`` per segment: softmin of the non-NaN values, else 1."""
    ok = ~np.isnan(values)
    v, s = values[ok], seg[ok]
    x = -1 * v / max(temperature, _CL_EPSILON)
    e = np.exp(x - seg_reduce(np.maximum, x, s, n, 0.0)[s])
    out = np.ones(n)
    num = seg_reduce(np.add, e * v, s, n, np.nan)
    den = seg_reduce(np.add, e, s, n, np.nan)
    has = ~np.isnan(den)
    out[has] = num[has] / den[has]
    return out


def _image_quality(overlooked: np.ndarray, swap: np.ndarray, badloc: np.ndarray, given: FlatBoxes,
                   pred: FlatBoxes, n: int, cfg: ObjectLabConfig) -> np.ndarray:
    """Per image: the geometric mean of the softmin-pooled box scores of each kind."""
    pooled = [_softmin_pool(overlooked, pred.image, n, cfg.temperature),
              _softmin_pool(swap, given.image, n, cfg.temperature),
              _softmin_pool(badloc, given.image, n, cfg.temperature)]
    return np.exp(sum(np.log(_CL_TINY + x) for x in pooled) / 3.0)


def _calibrated_signals(given: FlatBoxes, p: Pairs, same: np.ndarray, prob: np.ndarray, pred_iou: np.ndarray,
                        th: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``unsupported``, ``best_iou`` and ``swap_signal`` per kept given box, ``overlooked_signal``
    per prediction: the same questions as cleanlab's, asked with calibrated probabilities."""
    K = len(given)
    pair_prob = prob[p.pred]
    near = p.iou >= MATCH_IOU
    usable = same & (pair_prob >= USABLE_PROBABILITY)
    unsupported = 1 - seg_max(pair_prob * p.iou, p.given, usable, K, 0.0)
    best_iou = seg_max(p.iou, p.given, usable, K, 0.0)
    p_other = seg_max(pair_prob, p.given, ~same & near, K, 0.0)
    p_same = seg_max(pair_prob, p.given, same & near, K, 0.0)
    overlooked_signal = np.where(prob >= th.probability(th.high), prob * (1 - pred_iou), 0.0)
    return unsupported, best_iou, p_other * (1 - p_same), overlooked_signal


def _pieces(given: FlatBoxes, pred: FlatBoxes, p: Pairs, prob: np.ndarray, min_prob: float,
            min_inside: float = 0.7, min_iou: float = 0.5, min_cover: float = 0.8
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxed in pieces, or merged, by the model's account (per kept given box).

    ``split``: the given box is one of two or more boxes of a class that each lie mostly inside
    one trusted prediction of that class, tile their joint box (their areas add up to
    ``min_cover``..1.15 of it) and whose union matches the prediction (IoU >= ``min_iou``): score
    ``p * IoU(union, prediction)``. ``merged``: two or more trusted predictions of the box's class
    lie mostly inside it, their areas add up to at most 1.15 of their joint box (not two boxes of
    one defect) and their union matches it: score ``min p * IoU``. The model-free ``fragment``
    check sees only pieces that touch edge to edge; these see the object the pieces belong to.

    Returns per kept given box: split score, the prediction it is a piece of (-1: none), merged
    score, and the number of predictions inside it.
    """
    K, M = len(given), len(pred)
    pg, pp, iou = p.given, p.pred, p.iou
    if not len(pg):
        return np.zeros(K), np.full(K, -1, np.int64), np.zeros(K), np.zeros(K, np.int64)
    ag, ap = box_area(given.xyxy)[pg], box_area(pred.xyxy)[pp]
    inter = iou * (ag + ap) / (1 + iou)  # from IoU = inter / (ag + ap - inter)
    ok = (given.cls[pg] == pred.cls[pp]) & (prob[pp] >= min_prob)
    # pieces of one object lie side by side: a box that overlaps another of its class by more than
    # a third of the smaller one (nested or stacked boxes of patches) is not a piece
    a_, b_ = pairs_within(given)
    same_c = given.cls[a_] == given.cls[b_]
    a_, b_ = a_[same_c], b_[same_c]
    gi = pair_iou(given.xyxy, a_, given.xyxy, b_)
    ga = box_area(given.xyxy)
    g_inter = gi * (ga[a_] + ga[b_]) / (1 + gi)
    over = g_inter / np.maximum(np.minimum(ga[a_], ga[b_]), 1e-9)
    stacked = np.zeros(K, dtype=bool)
    stacked[a_[over > MAX_PIECE_OVERLAP]] = True
    stacked[b_[over > MAX_PIECE_OVERLAP]] = True
    g_in = ok & (ag > 0) & (inter >= min_inside * ag) & ~stacked[pg]  # the given box lies inside the prediction
    p_in = ok & (ap > 0) & (inter >= min_inside * ap)  # the prediction lies inside the given box

    def union_iou(sel: np.ndarray, seg: np.ndarray, boxes: np.ndarray, n: int, ref: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per segment of the selected pairs: count, IoU(union of ``boxes``, ``ref``), largest
        box area and sum of box areas, both as fractions of the union's area."""
        o = np.argsort(seg[sel], kind="stable")
        s_, b_ = seg[sel][o], boxes[o]
        count = np.bincount(s_, minlength=n)
        lo = np.stack([seg_reduce(np.minimum, b_[:, k], s_, n, 0.0) for k in (0, 1)], axis=1)
        hi = np.stack([seg_reduce(np.maximum, b_[:, k], s_, n, 0.0) for k in (2, 3)], axis=1)
        u = np.hstack([lo, hi])
        ua = np.maximum(box_area(u), 1e-9)
        biggest = seg_reduce(np.maximum, box_area(b_), s_, n, 0.0) / ua
        covered = seg_reduce(np.add, box_area(b_), s_, n, 0.0) / ua
        return count, pair_iou(u, np.arange(n), ref, np.arange(n)), biggest, covered

    # split: per prediction, the given boxes inside it. They must tile their joint box, as pieces of
    # one object do: several small defects the model boxes as one cluster leave most of it empty,
    # and nested or overlapping boxes add up to more than it
    cnt, u_iou, _, cover = union_iou(g_in, pp, given.xyxy[pg[g_in]], M, pred.xyxy)
    tiles = (cover >= min_cover) & (cover <= 1.15)
    per_pred = np.where((cnt >= 2) & (u_iou >= min_iou) & tiles, prob * u_iou, 0.0)
    v = np.where(g_in, per_pred[pp], 0.0)
    split, split_match = seg_argmax(v, pg, pp, v > 0, K)
    # merged: per given box, the predictions inside it: their union clearly bigger than the largest,
    # and not overlapping much (a defect the model boxes twice over is not two defects). pg is
    # sorted already (pairs are given-box-major)
    cnt, u_iou, share, cover = union_iou(p_in, pg, pred.xyxy[pp[p_in]], K, given.xyxy)
    low_p = seg_reduce(np.minimum, prob[pp[p_in]], pg[p_in], K, 0.0)
    merged = np.where((cnt >= 2) & (u_iou >= min_iou) & (share <= 0.8) & (cover <= 1.15), low_p * u_iou, 0.0)
    return split, split_match, merged, cnt


def _evidence(batch: Batch, given: FlatBoxes, pred: FlatBoxes, p: Pairs, same: np.ndarray, prob: np.ndarray,
              pred_iou: np.ndarray, anything: np.ndarray, unsupported: np.ndarray) -> dict[str, np.ndarray]:
    """The evidence of each box-level error type, continuous, 0 none .. 1 strong; the calibration
    (:mod:`~cvcurate.scoring.calibrate`) maps each to the probability of a real error.

    * ``ev_swap`` = ``p_other * (1 - p_same)`` with ``p_other`` / ``p_same`` the best calibrated
      probability of a prediction of another class / of its class at IoU >= 0.5; 0 unless
      ``p_other > p_same`` (the model's best class on the box is another one).
    * ``ev_badloc`` = ``p * (1 - IoU)`` of the prediction of its class that stands for the box:
      the most probable one, weighted by IoU and closeness of centres, among those that overlap it
      or lie within a box diagonal of it and do not stand for another given box of that class
      (IoU >= 0.5 with it). 0 when the model places no box of that class near it.
    * ``ev_spurious`` = ``unsupported * (1 - anything)``: no support of its class, and little of
      anything else.
    * ``ev_overlooked`` per prediction: ``p * (1 - cover)``, ``cover`` the larger of its best IoU
      with any given box and the share of it inside a given box of its class; only the strongest
      candidate of a region (IoU >= 0.5, any class) keeps it.
    """
    K, M = len(given), len(pred)
    pair_prob = prob[p.pred]
    near = p.iou >= MATCH_IOU
    p_other, swap_pred = seg_argmax(pair_prob, p.given, p.pred, ~same & near, K)
    p_same = seg_max(pair_prob, p.given, same & near, K, 0.0)
    ev_swap = np.where(p_other > p_same, p_other * (1 - p_same), 0.0)

    # which given box of its class each prediction stands for (IoU >= 0.5), if any
    by_pred = np.argsort(p.pred, kind="stable")
    best_g_iou, best_g = seg_argmax(p.iou[by_pred], p.pred[by_pred], p.given[by_pred], same[by_pred], M)
    owner = np.where(best_g_iou >= MATCH_IOU, best_g, -1)
    cg = (given.xyxy[:, :2] + given.xyxy[:, 2:]) / 2
    cq = (pred.xyxy[:, :2] + pred.xyxy[:, 2:]) / 2
    dist = np.hypot(*(cg[p.given] - cq[p.pred]).T)
    diag = np.maximum(np.hypot(*(given.xyxy[:, 2:] - given.xyxy[:, :2]).T)[p.given],
                      np.hypot(*(pred.xyxy[:, 2:] - pred.xyxy[:, :2]).T)[p.pred])
    cand = (same & (pair_prob >= USABLE_PROBABILITY) & ((p.iou > 0) | (dist <= diag))
            & ((owner[p.pred] < 0) | (owner[p.pred] == p.given)))
    closeness = np.exp(-dist / np.maximum(diag, 1e-9))
    rank = pair_prob * (0.9 * p.iou + 0.1 * closeness) + 1e-12
    _, bad_pred = seg_argmax(rank, p.given, p.pred, cand, K)
    has = bad_pred >= 0
    bad_iou = np.zeros(K)
    if has.any():  # IoU of the chosen pair: pairs are given-box-major, one pair per (box, prediction)
        key = p.given * max(M, 1) + p.pred
        order = np.argsort(key, kind="stable")
        want = np.flatnonzero(has) * max(M, 1) + bad_pred[has]
        at = order[np.searchsorted(key[order], want)]
        bad_iou[has] = p.iou[at]
    ev_badloc = np.where(has, prob[np.maximum(bad_pred, 0)] * (1 - bad_iou), 0.0) if M else np.zeros(K)
    ev_spurious = unsupported * (1 - anything)

    # overlooked: how much of each prediction a given box covers
    ag = box_area(given.xyxy)[p.given]
    ap = box_area(pred.xyxy)[p.pred]
    inter = p.iou * (ag + ap) / (1 + p.iou)
    inside = np.where(same & (ap > 0), inter / np.maximum(ap, 1e-9), 0.0)
    cover = np.maximum(pred_iou, seg_max(inside[by_pred], p.pred[by_pred], np.ones(len(by_pred), bool), M, 0.0))
    ev = np.where(prob >= USABLE_PROBABILITY, prob * (1 - cover), 0.0) if M else np.zeros(0)
    ev[ev < CANDIDATE_EVIDENCE] = 0.0
    cand_rows = np.flatnonzero(ev > 0)
    if len(cand_rows) > 1:  # the strongest candidate of each region keeps its evidence
        sub = pred.take(cand_rows)
        a, b = pairs_within(sub)
        close = pair_iou(sub.xyxy, a, sub.xyxy, b) >= MATCH_IOU
        a, b = cand_rows[a[close]], cand_rows[b[close]]
        weaker = np.where((ev[a] > ev[b]) | ((ev[a] == ev[b]) & (a < b)), b, a)
        ev[weaker] = 0.0
    return {"ev_swap": ev_swap, "ev_badloc": ev_badloc, "ev_spurious": ev_spurious, "ev_overlooked": ev,
            "p_other": p_other, "p_same": p_same, "swap_pred": swap_pred, "bad_pred": bad_pred, "bad_iou": bad_iou,
            "cover": cover}
