"""From the predictions' :class:`~cvcurate.scoring.signals.Signals` to issues: which boxes and
predictions are listed, as what, with which score and reason (the "filter" and "summary" steps of
cleanlab's rank / filter / summary).

Decisions (:func:`decide`), per kept given box: a ``swap`` when ``max(1 - swap, swap_signal)``
reaches ``min_score``; otherwise a ``badloc`` or ``spurious`` one when
``max(1 - badloc, unsupported)`` does, ``spurious`` when the model places no box of its class near
it (best IoU < 0.1, or none above ``low``), its score then scaled by ``1 - anything`` (how little
the model sees of any class there). A prediction is ``overlooked`` when its calibrated signal
reaches ``min_score``; a box is ``split`` / ``merged`` when that score does.

Issues come image by image: its overlooked predictions, then its boxes in order; the split and
merged issues of all images follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Issue, LabelSet
from .signals import ObjectLabConfig, Signals


@dataclass
class Decisions:
    """Per kept given box: which issue it gets, if any, and its score."""

    swap_score: np.ndarray  # max(1 - cleanlab swap, swap signal)
    bad_score: np.ndarray  # max(1 - cleanlab badloc, unsupported), spurious ones scaled
    is_swap: np.ndarray
    is_bad: np.ndarray  # badloc or spurious (never also a swap)
    spurious: np.ndarray  # the model places no box of its class near it


def decide(s: Signals, cfg: ObjectLabConfig) -> Decisions:
    swap_score = np.maximum(1 - s.swap, s.swap_signal)
    bad_score = np.maximum(np.where(s.badloc < 1, 1 - s.badloc, 0.0), s.unsupported)
    is_swap = swap_score >= cfg.min_score
    # a box the model does not place elsewhere is spurious; its score is scaled by how little the
    # model sees of anything there (confidence x IoU, any class), before the min_score cut
    spurious = (s.best_iou < 0.1) | (s.same_class_match < 0)
    bad_score = np.where(spurious, bad_score * (1 - s.anything), bad_score)
    is_bad = ~is_swap & (bad_score >= cfg.min_score)
    return Decisions(swap_score, bad_score, is_swap, is_bad, spurious)


def find_issues(labels: LabelSet, s: Signals, cfg: ObjectLabConfig) -> list[Issue]:
    """Every issue of the predictions' signals above ``min_score``, in the order described above."""
    return _box_issues(labels, s, decide(s, cfg), cfg) + _piece_issues(labels, s, cfg)


def _pred_info(s: Signals, k: np.ndarray) -> tuple[list, list, list, list]:
    """Class, confidence, box and image of predictions ``k`` (-1: none, values then unused)."""
    pred = s.pred
    if not len(pred):  # only -1 (no prediction): values unused
        return ([None] * len(k),) * 4
    k = np.maximum(k, 0)
    return pred.cls[k].tolist(), pred.conf[k].tolist(), pred.xyxy[k].tolist(), pred.image[k].tolist()


def _box_issues(labels: LabelSet, s: Signals, d: Decisions, cfg: ObjectLabConfig) -> list[Issue]:
    """Issue objects, image by image: its overlooked predictions, then its boxes in order."""
    names = labels.classes
    recs = labels.records
    ov = np.flatnonzero(s.overlooked_signal >= cfg.min_score)
    bx = np.flatnonzero(d.is_swap | d.is_bad)

    items: list[tuple[int, int, int, Issue]] = []
    o_cls, o_conf, o_box, o_img = _pred_info(s, ov)
    for n_, (c, cf, box, i, score) in enumerate(zip(o_cls, o_conf, o_box, o_img, s.overlooked_signal[ov].tolist())):
        rec = recs[i]
        items.append((i, 0, n_, Issue(
            rec.filepath, "overlooked", score,
            f"the model sees a {names[c]} at [{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}] "
            f"(confidence {cf:.2f}) that no given box covers",
            sample_id=rec.sample_id, data={"pred_box": box, "pred_class": c, "confidence": cf})))

    # given boxes: swap, else spurious or badloc, each next to the prediction that says so
    alt = np.where(d.is_swap[bx], s.other_class_match[bx], s.same_class_match[bx])
    a_cls, a_conf, a_box, _ = _pred_info(s, alt)
    for n_, (i, j, c, swp, spur, a, ac, acf, abox, ss, sb, unsup, aiou, anys) in enumerate(zip(
            s.given.image[bx].tolist(), s.given.local[bx].tolist(), s.given.cls[bx].tolist(), d.is_swap[bx].tolist(),
            d.spurious[bx].tolist(), alt.tolist(), a_cls, a_conf, a_box, d.swap_score[bx].tolist(),
            d.bad_score[bx].tolist(), s.unsupported[bx].tolist(), s.same_class_iou[bx].tolist(),
            s.anything[bx].tolist())):
        rec = recs[i]
        given = names[c]
        if swp:
            text = f"box {j} is labelled {given}"
            data = {}
            if a >= 0:
                text += f" but the model sees a {names[ac]} there (confidence {acf:.2f})"
                data = {"pred_class": ac, "pred_box": abox, "confidence": acf}
            iss = Issue(rec.filepath, "swap", ss, text, box=j, sample_id=rec.sample_id, data=data)
        elif spur:
            iss = Issue(rec.filepath, "spurious", sb,
                        f"box {j} ({given}): the model sees no {given} here (best support {1 - unsup:.2f}"
                        f", of any class {anys:.2f})", box=j, sample_id=rec.sample_id)
        else:
            iss = Issue(rec.filepath, "badloc", sb,
                        f"box {j} ({given}) overlaps the model's {given} only at IoU {aiou:.2f}",
                        box=j, sample_id=rec.sample_id, data={"pred_box": abox, "confidence": acf})
        items.append((i, 1, n_, iss))
    items.sort(key=lambda t: t[:3])
    return [t[3] for t in items]


def _piece_issues(labels: LabelSet, s: Signals, cfg: ObjectLabConfig) -> list[Issue]:
    names, recs = labels.classes, labels.records
    given, pred = s.given, s.pred
    out = []
    for k in np.flatnonzero(s.split >= cfg.min_score):
        i = int(given.image[k])
        j, q, rec = int(given.local[k]), int(s.split_match[k]), recs[i]
        box = pred.xyxy[q]
        out.append(Issue(rec.filepath, "split", float(s.split[k]),
                         f"box {j} ({names[given.cls[k]]}) is one of several boxes inside the one {names[pred.cls[q]]} "
                         f"the model sees at [{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}] "
                         f"(confidence {pred.conf[q]:.2f}): one defect boxed in pieces?", box=j,
                         sample_id=rec.sample_id, data={"pred_box": box.tolist(), "confidence": float(pred.conf[q])}))
    for k in np.flatnonzero(s.merged >= cfg.min_score):
        i = int(given.image[k])
        j, rec = int(given.local[k]), recs[i]
        out.append(Issue(rec.filepath, "merged", float(s.merged[k]),
                         f"box {j} ({names[given.cls[k]]}) spans {s.n_inside[k]} {names[given.cls[k]]} the model sees "
                         "separately: several defects in one box?", box=j, sample_id=rec.sample_id))
    return out
