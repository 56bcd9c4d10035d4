"""Label errors from predictions, through cleanlab's ObjectLab: overlooked, swap, badloc.

The data contract is cleanlab's: for image i, ``labels[i] = {"bboxes": (L, 4) xyxy,
"labels": (L,)}`` and the predictions as (M, 4) boxes, (M,) classes and (M,) confidences. We build
it from :class:`~cvcurate.types.Annotations` here and nowhere else.

Two things differ from calling ``cleanlab.object_detection.rank.get_label_quality_scores`` alone,
each because of a measured failure of the plain call:

1. **Thresholds calibrated on the data.** ObjectLab's overlooked and swap checks only look at
   predictions above ``high_probability_threshold`` (0.95) and badloc above
   ``low_probability_threshold`` (0.5). A small detector trained from scratch rarely reaches 0.95,
   so those checks never fire. We fit, per dataset, the precision of the (out-of-fold) predictions
   as a function of confidence (isotonic regression of "matches a given box of its class at
   IoU >= 0.5" on confidence) and take as "high" the lowest confidence whose precision reaches
   ``high_precision`` and as "low" the one reaching ``low_precision``. Label noise makes this
   precision an underestimate, which only makes the thresholds conservative.
2. **Spurious boxes.** cleanlab's badloc score is 1 (clean) for a given box when no prediction of
   its class clears the low threshold, so a box drawn where there is no defect is never flagged.
   We add a ``spurious`` score: 1 minus the best IoU of the box with any usable prediction.
3. **Similarity in numpy, scale-free.** cleanlab computes IoU and centre distance pair by pair in
   Python (seconds per thousand images with 100 predictions each), and its distance term
   ``exp(-0.1 * pixels)`` depends on the image size. We compute the same similarity
   ``alpha * IoU + (1 - alpha) * exp(-d)`` vectorised, with ``d`` the centre distance in units of
   ``distance_scale`` of the image diagonal, and pass it to cleanlab's public
   ``compute_*_box_scores(auxiliary_inputs=...)``, so the scoring rules stay cleanlab's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..types import Annotations, Issue, LabelSet
from .geometry import pairwise_iou


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
    min_score: float = 0.5  # issues below this (1 - cleanlab score) are not listed, still ranked

    def check(self) -> None:
        for name in ("alpha", "high_precision", "low_precision", "max_high_threshold", "max_low_threshold",
                     "fallback_high_quantile", "fallback_low_quantile", "min_score"):
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
class ObjectLabResult:
    issues: list[Issue]
    image_quality: np.ndarray  # (N,) cleanlab-style label quality, 1 clean .. 0 dirty
    overlooked: list[np.ndarray]  # per image, per prediction; nan where not applicable
    swap: list[np.ndarray]  # per image, per given box
    badloc: list[np.ndarray]  # per image, per given box
    spurious: list[np.ndarray]  # per image, per given box: 1 - best support by a prediction
    thresholds: Thresholds
    population: int = 0  # number of given boxes scored (for rank normalisation)


def match_predictions(gt: Annotations, pred: Annotations, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy matching by confidence: True where a prediction hits an unmatched box of its class."""
    hit = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return hit
    iou = pairwise_iou(pred.xyxy, gt.xyxy)
    iou[pred.class_id[:, None] != gt.class_id[None, :]] = 0
    used = np.zeros(len(gt), dtype=bool)
    # only predictions that reach the threshold with some box can match: loop over those alone
    cand = np.flatnonzero(iou.max(axis=1) >= iou_threshold)
    for i in cand[np.argsort(-pred.confidence[cand], kind="stable")]:
        row = np.where(used, 0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            hit[i] = used[j] = True
    return hit


def calibrate_thresholds(labels: LabelSet, preds: Sequence[Annotations], cfg: ObjectLabConfig) -> Thresholds:
    """Confidence thresholds from the precision the predictions actually have on this data."""
    conf = np.concatenate([p.confidence for p in preds if len(p)]) if any(len(p) for p in preds) else np.zeros(0)
    if len(conf) < 20:
        return Thresholds(low=min(cfg.max_low_threshold, 0.5), high=cfg.max_high_threshold,
                          how="defaults (fewer than 20 predictions)")
    hits = np.concatenate([match_predictions(r.gt, p) for r, p in zip(labels.records, preds) if len(p)])
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
    return Thresholds(low=low, high=high, how=how, grid=grid, precision=precision)


def _similarity(gt: Annotations, pred: Annotations, w: int, h: int, alpha: float, scale: float
                ) -> tuple[np.ndarray, np.ndarray]:
    iou = pairwise_iou(gt.xyxy, pred.xyxy)
    cg = (gt.xyxy[:, :2] + gt.xyxy[:, 2:]) / 2
    cp = (pred.xyxy[:, :2] + pred.xyxy[:, 2:]) / 2
    d = np.linalg.norm(cg[:, None, :] - cp[None, :, :], axis=2) / (scale * np.hypot(w, h))
    return alpha * iou + (1 - alpha) * np.exp(-d), iou


def objectlab_scores(labels: LabelSet, preds: Sequence[Annotations], cfg: ObjectLabConfig | None = None
                     ) -> ObjectLabResult:
    """Overlooked, swap and badloc scores for every image, and the issues above ``min_score``."""
    from cleanlab.object_detection import rank

    cfg = cfg or ObjectLabConfig()
    if len(preds) != len(labels.records):
        raise InputError(f"{len(preds)} predictions for {len(labels.records)} images")
    for i, p in enumerate(preds):
        if p is None or p.confidence is None:
            raise InputError(f"{labels.records[i].filepath}: predictions need confidences")
    th = calibrate_thresholds(labels, preds, cfg)
    aux = []
    kept_gt: list[np.ndarray] = []
    kept_pred: list[np.ndarray] = []
    for rec, p in zip(labels.records, preds):
        # degenerate given boxes are the geometry checks' business; predictions below the low
        # threshold cannot change any of the three scores
        g_idx = np.flatnonzero((rec.gt.wh > 0).all(axis=1))
        p_idx = np.flatnonzero(p.confidence >= th.low)
        g, q = rec.gt[g_idx], p[p_idx]
        sim, iou = _similarity(g, q, rec.width, rec.height, cfg.alpha, cfg.distance_scale)
        kept_gt.append(g_idx)
        kept_pred.append(p_idx)
        aux.append({"pred_labels": q.class_id, "pred_label_probs": q.confidence, "pred_bboxes": q.xyxy,
                    "lab_labels": g.class_id, "lab_bboxes": g.xyxy, "similarity_matrix": sim,
                    "iou_matrix": iou, "min_possible_similarity": 0.0})
    nonzero = [a["similarity_matrix"][a["similarity_matrix"] > 0] for a in aux]
    min_sim = float(min((x.min() for x in nonzero if x.size), default=1.0))
    for a in aux:
        a["min_possible_similarity"] = min_sim
    overlooked = rank.compute_overlooked_box_scores(alpha=cfg.alpha, high_probability_threshold=th.high,
                                                    auxiliary_inputs=aux)
    swap = rank.compute_swap_box_scores(alpha=cfg.alpha, high_probability_threshold=th.high,
                                        auxiliary_inputs=aux)
    badloc = rank.compute_badloc_box_scores(alpha=cfg.alpha, low_probability_threshold=th.low,
                                            auxiliary_inputs=aux)
    pooled = [rank.pool_box_scores_per_image(s, temperature=cfg.temperature) for s in (overlooked, swap, badloc)]
    quality = np.exp(sum(np.log(1e-100 + x) for x in pooled) / 3.0)

    issues: list[Issue] = []
    names = labels.classes
    spurious_all: list[np.ndarray] = []
    population = 0
    for i, rec in enumerate(labels.records):
        g_idx, p_idx = kept_gt[i], kept_pred[i]
        q = preds[i][p_idx]
        sig = calibrated_signals(rec.gt[g_idx], preds[i], th, cfg)
        population += len(g_idx)
        spurious_all.append(sig.unsupported)
        # overlooked: cleanlab's rule on trusted predictions, or a probable prediction no box covers
        for k in np.flatnonzero(sig.overlooked >= cfg.min_score):
            s_ = float(sig.overlooked[k])
            box = preds[i].xyxy[k]
            cls = int(preds[i].class_id[k])
            issues.append(Issue(rec.filepath, "overlooked", s_,
                                f"the model sees a {names[cls]} at [{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, "
                                f"{box[3]:.0f}] (confidence {preds[i].confidence[k]:.2f}) that no given box covers",
                                sample_id=rec.sample_id,
                                data={"pred_box": box.tolist(), "pred_class": cls,
                                      "confidence": float(preds[i].confidence[k])}))
        for k, j in enumerate(g_idx):
            j = int(j)
            given = names[rec.gt.class_id[j]]
            s_swap = max(1 - float(swap[i][k]), float(sig.swap[k]))
            if s_swap >= cfg.min_score:
                alt = _best_other(rec.gt.xyxy[j], rec.gt.class_id[j], preds[i], th.low)
                text = f"box {j} is labelled {given}"
                data = {}
                if alt is not None:
                    text += (f" but the model sees a {names[preds[i].class_id[alt]]} there "
                             f"(confidence {preds[i].confidence[alt]:.2f})")
                    data = {"pred_class": int(preds[i].class_id[alt]), "pred_box": preds[i].xyxy[alt].tolist(),
                            "confidence": float(preds[i].confidence[alt])}
                issues.append(Issue(rec.filepath, "swap", s_swap, text, box=j, sample_id=rec.sample_id, data=data))
                continue
            s_bad = max(1 - float(badloc[i][k]) if badloc[i][k] < 1 else 0.0, float(sig.unsupported[k]))
            if s_bad < cfg.min_score:
                continue
            alt = _best_same(rec.gt.xyxy[j], rec.gt.class_id[j], preds[i], th.low)
            if sig.best_iou[k] < 0.1 or alt is None:
                issues.append(Issue(rec.filepath, "spurious", s_bad,
                                    f"box {j} ({given}): the model sees no {given} here "
                                    f"(best support {1 - sig.unsupported[k]:.2f})", box=j, sample_id=rec.sample_id))
            else:
                iou = pairwise_iou(rec.gt.xyxy[j][None], preds[i].xyxy[alt][None])[0, 0]
                issues.append(Issue(rec.filepath, "badloc", s_bad,
                                    f"box {j} ({given}) overlaps the model's {given} only at IoU {iou:.2f}",
                                    box=j, sample_id=rec.sample_id,
                                    data={"pred_box": preds[i].xyxy[alt].tolist(),
                                          "confidence": float(preds[i].confidence[alt])}))
    return ObjectLabResult(issues=issues, image_quality=quality, overlooked=overlooked, swap=swap,
                           badloc=badloc, spurious=spurious_all, thresholds=th, population=population)


@dataclass
class Signals:
    """Calibrated per-box signals of one image (probabilities from :meth:`Thresholds.probability`)."""

    unsupported: np.ndarray  # per given box: 1 - max_j p_j * IoU_j over predictions of its class
    best_iou: np.ndarray  # per given box: best IoU with a prediction of its class (p >= 0.05)
    swap: np.ndarray  # per given box: p(other class here) * (1 - p(given class here)), IoU >= 0.5
    overlooked: np.ndarray  # per prediction: p * (1 - best IoU with any given box)


def calibrated_signals(gt: Annotations, pred: Annotations, th: Thresholds, cfg: ObjectLabConfig) -> Signals:
    """The model's support for each given box and its unexplained predictions, in probabilities.

    Unlike cleanlab's rules these use every prediction, weighted by how often predictions of that
    confidence are right on this dataset, instead of cutting at a threshold.
    """
    prob = th.probability(pred.confidence) if len(pred) else np.zeros(0)
    n, m = len(gt), len(pred)
    if n == 0:
        over = prob.copy()
        return Signals(np.zeros(0), np.zeros(0), np.zeros(0), np.where(prob >= th.probability(th.high), over, 0))
    if m == 0:
        return Signals(np.ones(n), np.zeros(n), np.zeros(n), np.zeros(0))
    iou = pairwise_iou(gt.xyxy, pred.xyxy)
    same = gt.class_id[:, None] == pred.class_id[None, :]
    usable = prob[None, :] >= 0.05
    support = np.where(same & usable, prob[None, :] * iou, 0.0).max(axis=1)
    best_iou = np.where(same & usable, iou, 0.0).max(axis=1)
    near = iou >= 0.5
    p_other = np.where(~same & near, prob[None, :], 0.0).max(axis=1)
    p_same = np.where(same & near, prob[None, :], 0.0).max(axis=1)
    over = prob * (1 - iou.max(axis=0))
    # an unexplained prediction counts only when it is at least as trustworthy as cleanlab's
    # "high" predictions, so that the model's everyday false positives do not flood the queue
    over = np.where(prob >= th.probability(th.high), over, 0.0)
    return Signals(unsupported=1 - support, best_iou=best_iou, swap=p_other * (1 - p_same), overlooked=over)


def _best_other(box: np.ndarray, cls: int, q: Annotations, high: float) -> int | None:
    cand = np.flatnonzero((q.class_id != cls) & (q.confidence > high))
    if not len(cand):
        return None
    iou = pairwise_iou(box[None], q.xyxy[cand])[0]
    return int(cand[np.argmax(iou)]) if iou.max() > 0 else None


def _best_same(box: np.ndarray, cls: int, q: Annotations, low: float) -> int | None:
    cand = np.flatnonzero((q.class_id == cls) & (q.confidence > low))
    if not len(cand):
        return None
    iou = pairwise_iou(box[None], q.xyxy[cand])[0]
    return int(cand[np.argmax(iou)]) if iou.max() > 0 else None
