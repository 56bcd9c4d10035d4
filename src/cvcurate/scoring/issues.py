"""From the predictions' :class:`~cvcurate.scoring.signals.Signals` and the run's
:class:`~cvcurate.scoring.calibrate.Calibration` to issues: which boxes and predictions are listed,
as what, with which probability and reason (the "filter" and "summary" steps of cleanlab's
rank / filter / summary).

Every kept given box has a probability of being each kind of box error (``swap``, ``badloc``,
``spurious``, ``split``, ``merged``); it is listed once, as its most probable kind, when that
probability reaches ``list_min_p``. A prediction is listed as ``overlooked`` the same way (only the
strongest candidate of a region has evidence). ``Issue.score`` is that probability;
``Issue.data`` keeps the evidence (``evidence``) and, for boxes, the probability of every kind
(``p_by_type``).

Reasons quote the evidence and never contradict it: a swap names the strongest prediction on the
box (always of another class, by construction of its evidence), a badloc says how its IoU with the
model ranks among the boxes of its class in this dataset (or, where no prediction of its class
stands for it, its best IoU, its support and its size against its class), a merged box names the
objects the model sees inside it (or, where it sees them not apart, its size and what it sees
inside), an overlooked region says how much of it a given box covers.

Issues come image by image: its overlooked predictions, then its boxes in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Issue, LabelSet
from ..names import BOX_TYPES, quoted
from .calibrate import Calibration
from .units import units_of
from .conventions import DEVIATING
from .model import _sizes
from .signals import Signals


@dataclass
class Probabilities:
    """Per kept given box: the probability of each box error type, and the most probable one;
    per prediction: the probability that it marks a missing box."""

    box: dict[str, np.ndarray]  # type -> (K,)
    best_type: np.ndarray  # (K,) index into BOX_TYPES
    best: np.ndarray  # (K,) its probability
    overlooked: np.ndarray  # (M,)
    iou_rank: np.ndarray  # (K,) share of the boxes of its class whose IoU with the model is <= its own
    evidence: dict[str, np.ndarray]  # type -> (K,) the box types' evidence (:func:`~.units.box_evidence`)
    area_ratio: np.ndarray  # (K,) area over the median area of its class's boxes in this dataset


def probabilities(s: Signals, cal: Calibration, adopted: dict[int, str] | None = None) -> Probabilities:
    units = units_of(s)
    box = cal.box_probabilities(s, units, adopted)
    stack = np.stack([box[t] for t in BOX_TYPES]) if len(s.given) else np.zeros((len(BOX_TYPES), 0))
    best_type = np.argmax(stack, axis=0) if stack.shape[1] else np.zeros(0, np.int64)
    best = stack.max(axis=0) if stack.shape[1] else np.zeros(0)
    ov = cal.overlooked_probabilities(s, units)
    # how unusual a box's agreement with the model is for its class (no prediction near: IoU 0)
    iou = np.where(s.bad_pred >= 0, s.bad_iou, 0.0)
    rank = np.zeros(len(iou))
    for c in np.unique(s.given.cls):
        m = s.given.cls == c
        v = np.sort(iou[m])
        rank[m] = np.searchsorted(v, iou[m], side="right") / len(v)
    w, h, _ = _sizes(s)
    area = w * h
    ratio = np.ones(len(area))
    for c in np.unique(s.given.cls):
        m = s.given.cls == c
        ratio[m] = area[m] / np.median(area[m])
    return Probabilities(box, best_type, best, ov, rank, {t: units[t].evidence for t in BOX_TYPES}, ratio)


def _size_words(ratio: float, lab: str) -> str:
    """How a box's area compares with its class's median, in words."""
    if ratio >= 1.5:
        return f"{ratio:.1f}x the area of the median {lab} box"
    if ratio <= 1 / 1.5:
        return f"{1 / max(ratio, 1e-9):.1f}x smaller than the median {lab} box"
    return f"about the size of the median {lab} box"


def find_issues(labels: LabelSet, s: Signals, cal: Calibration, list_min_p: float,
                adopted: dict[int, str] | None = None) -> tuple[list[Issue], Probabilities]:
    """Every issue whose probability reaches ``list_min_p``, in the order described above.
    ``adopted``: class -> its adopted boxing style; a split or merged box of such a class breaks
    the rule (one that follows it has p 0 there): it is listed as type ``convention``, with the
    type it deviates as (``data["deviation"]``) and the adopted style."""
    adopted = adopted or {}
    pr = probabilities(s, cal, adopted)
    names, recs = labels.classes, labels.records
    pred, given = s.pred, s.given
    items: list[tuple[int, int, int, Issue]] = []
    for m in np.flatnonzero(pr.overlooked >= list_min_p).tolist():
        i, c, cf, box, cov = int(pred.image[m]), int(pred.cls[m]), float(pred.conf[m]), pred.xyxy[m].tolist(), \
            float(s.cover[m])
        where = ("that no given box covers" if cov < 0.1 else
                 f"that given boxes cover only in part (IoU or share inside a {quoted(names[c])} box {cov:.2f})")
        rec = recs[i]
        items.append((i, 0, m, Issue(
            rec.filepath, "overlooked", float(pr.overlooked[m]),
            f"the model sees a {quoted(names[c])} at [{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}] "
            f"(confidence {cf:.2f}) {where}",
            sample_id=rec.sample_id, data={"pred_box": box, "pred_class": c, "confidence": cf,
                                           "evidence": float(s.ev_overlooked[m]), "cover": cov})))
    for k in np.flatnonzero(pr.best >= list_min_p).tolist():
        i, j, c = int(given.image[k]), int(given.local[k]), int(given.cls[k])
        t = BOX_TYPES[int(pr.best_type[k])]
        rec, lab = recs[i], quoted(names[c])
        data = {"evidence": float(pr.evidence[t][k]),
                "p_by_type": {tt: round(float(pr.box[tt][k]), 4) for tt in BOX_TYPES}}
        if t == "swap":
            q = int(s.swap_pred[k])
            text = (f"box {j} is labelled {lab}, but the model's strongest prediction on it is a "
                    f"{quoted(names[pred.cls[q]])} (confidence {pred.conf[q]:.2f}; its {lab} at most p {s.p_same[k]:.2f})")
            data.update({"pred_class": int(pred.cls[q]), "pred_box": pred.xyxy[q].tolist(),
                         "confidence": float(pred.conf[q])})
        elif t == "badloc" and s.bad_pred[k] >= 0:
            q = int(s.bad_pred[k])
            iou, pct = float(s.bad_iou[k]), max(1, int(np.ceil(100 * pr.iou_rank[k])))
            text = (f"box {j} ({lab}): the model's {lab} (confidence {pred.conf[q]:.2f}) overlaps it at IoU {iou:.2f}, "
                    f"lowest {pct} % of {lab} boxes in this dataset")
            data.update({"pred_box": pred.xyxy[q].tolist(), "confidence": float(pred.conf[q]), "iou": iou,
                         "class_rank": round(float(pr.iou_rank[k]), 4)})
        elif t == "badloc":  # no prediction of its class stands for it: what else the model sees there
            text = (f"box {j} ({lab}): no {lab} the model sees stands for it (best IoU with one "
                    f"{float(s.best_iou[k]):.2f}, support of any class {float(s.anything[k]):.2f}); "
                    f"{_size_words(pr.area_ratio[k], lab)}")
        elif t == "spurious":
            text = (f"box {j} ({lab}): the model sees no {lab} here (best support {1 - s.unsupported[k]:.2f}, "
                    f"of any class {s.anything[k]:.2f})")
        elif t == "split":
            q = int(s.split_match[k])
            box = pred.xyxy[q]
            text = (f"box {j} ({lab}) is one of several boxes inside the one {quoted(names[pred.cls[q]])} the model sees at "
                    f"[{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}] (confidence {pred.conf[q]:.2f}): "
                    "one defect boxed in pieces?")
            data.update({"pred_box": box.tolist(), "confidence": float(pred.conf[q])})
        elif s.merged[k] > 0:
            text = f"box {j} ({lab}) spans {s.n_inside[k]} {lab} the model sees separately: several defects in one box?"
        else:  # the model does not see the defects apart: the box's size and what lies inside it
            inside = {0: f"sees no {lab} inside it", 1: f"sees one {lab} inside it"}.get(
                int(s.n_inside[k]), f"sees {s.n_inside[k]} {lab} inside it, not apart")
            text = f"box {j} ({lab}): {_size_words(pr.area_ratio[k], lab)}; the model {inside}: several defects in one box?"
        if c in adopted and t == DEVIATING.get(adopted[c]) and getattr(s, t)[k] > 0:  # breaks the adopted convention
            data.update({"deviation": t, "convention": adopted[c]})
            text = f"breaks the adopted convention ({lab} boxed {adopted[c]}): {text}"
            t = "convention"
        items.append((i, 1, k, Issue(rec.filepath, t, float(pr.best[k]), text, box=j, sample_id=rec.sample_id,
                                     data=data)))
    items.sort(key=lambda x: x[:3])
    return [x[3] for x in items], pr


# model-free box checks the detector can answer: a box the model draws alike (a prediction of its
# class that stands for it) is a defect of that size or that continues a neighbour, not a mistake
MODEL_ANSWERS = ("size_outlier", "fragment")


def answer_by_model(issues: list[Issue], s: Signals, labels: LabelSet, index: dict[str, int]) -> None:
    """Scale ``p`` of the :data:`MODEL_ANSWERS` issues by how little the model supports the box:
    ``p x unsupported`` (``unsupported`` = 1 - the best calibrated probability x IoU of a prediction
    of its class). The prior ``p`` stays in ``data["prior_p"]``, the support in ``data["support"]``,
    and the reason says what the model sees. ``index``: each record's filepath -> its position."""
    todo = [i for i in issues if i.type in MODEL_ANSWERS and i.box is not None]
    g = s.given
    if not todo or not len(g):
        return
    # the kept boxes are in image order and, within an image, in box order: their (image, box)
    # keys are sorted, so each issue's row is one binary search
    span = int(g.local.max()) + 1
    keys = g.image * span + g.local
    box = np.array([int(i.box) for i in todo], np.int64)
    want = np.array([index[i.filepath] for i in todo], np.int64) * span + box
    rows = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    found = (box < span) & (keys[rows] == want)  # a box past every kept one of its image is none of them
    for iss, r, hit in zip(todo, rows, found):
        support = float(np.clip(1.0 - s.unsupported[r], 0.0, 1.0)) if hit else 0.0
        if support <= 0:
            continue
        iss.data["prior_p"], iss.data["support"] = iss.score, round(support, 4)
        iss.score = float(iss.score * (1.0 - support))
        iss.reason += (f"; the model draws it too (its {quoted(labels.classes[int(g.cls[r])])} at IoU "
                       f"{s.best_iou[r]:.2f}), so p falls from {iss.data['prior_p']:.2f} to {iss.score:.2f}")
