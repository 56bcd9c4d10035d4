"""Proposing fixes: the change each issue suggests to an image's boxes (pure box compute over one
image's labels, predictions and issues; the score stage stores them for review)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..types import Fix, ImageRecord, Issue
from ..boxes import iou_one


_iou = iou_one


MATCH_IOU = 0.5  # a prediction overlapping a given box of its class this much already stands for it


def _free_predictions(rec: ImageRecord, cls: int, min_conf: float, except_box: int | None) -> np.ndarray:
    """Indices of the record's predictions of class ``cls`` (confidence >= ``min_conf``) that do
    not already stand for another given box of that class: a move or an add must never take the
    prediction that matches a neighbour (it would leave two boxes on one defect and none on the
    other)."""
    p = rec.pred
    if p is None or not len(p):
        return np.zeros(0, np.int64)
    conf = p.confidence if p.confidence is not None else np.ones(len(p))
    cand = np.flatnonzero((p.class_id == cls) & (np.nan_to_num(conf, nan=1.0) >= min_conf))
    others = [j for j in range(len(rec.gt)) if j != except_box and int(rec.gt.class_id[j]) == cls]
    if not others or not len(cand):
        return cand
    taken = np.array([(_iou(p.xyxy[q], rec.gt.xyxy[others]) >= MATCH_IOU).any() for q in cand])
    return cand[~taken]


def _split_pieces(rec: ImageRecord, j: int, min_conf: float) -> list[np.ndarray]:
    """The model's boxes of box ``j``'s class that lie (90 % of their area) inside it."""
    p = rec.pred
    if p is None or not len(p):
        return []
    box, cls = rec.gt.xyxy[j], int(rec.gt.class_id[j])
    conf = p.confidence if p.confidence is not None else np.ones(len(p))
    out = []
    for q in np.flatnonzero((p.class_id == cls) & (np.nan_to_num(conf, nan=1.0) >= min_conf)):
        pb = p.xyxy[q]
        inter = np.clip(np.minimum(box[2:], pb[2:]) - np.maximum(box[:2], pb[:2]), 0, None).prod()
        area = np.clip(pb[2:] - pb[:2], 0, None).prod()
        if area > 0 and inter / area >= 0.9:
            out.append(pb)
    return sorted(out, key=lambda b: (b[0], b[1]))


def _taken(fixes: Sequence[Fix], box: np.ndarray, cls: int) -> bool:
    """Whether a fix already proposed puts a box of class ``cls`` where ``box`` is (IoU >= 0.5):
    two fixes must never put two boxes on one defect."""
    placed = [f.xyxy for f in fixes if f.action in ("add", "move", "clip", "split", "merge") and f.class_id == cls]
    return bool(placed) and bool((_iou(box, np.asarray(placed)) >= MATCH_IOU).any())


def proposed_fixes(rec: ImageRecord, issues: list[Issue], min_conf: float = 0.0) -> list[Fix]:
    """The fix each issue suggests, at most one per given box (the best-scoring issue wins).

    overlooked: add the model's box; swap: relabel to the model's class; badloc and size_outlier:
    move to the model's box of that class that overlaps it most and stands for no other given box
    (none: no fix, and ``issue.data["no_fix"]`` says why, shown after its reason); out_of_image:
    clip; spurious, degenerate, duplicate: remove; fragment and split: merge the pieces into their
    joint box; merged: split the box along the model's boxes inside it (at least two); convention
    (a box that breaks an adopted boxing style): as the split or merged box it is. No fix ever
    puts a second box of a class where a more probable one already puts one. Boxing style, class
    conflicts and image issues propose nothing: they need a person's judgement. ``min_conf``: the predictions a fix may use (the score run's
    calibrated low threshold).
    """
    ids = rec.gt.data.get("id")
    fixes: list[Fix] = []
    done: set[int] = set()
    w, h = rec.width, rec.height
    for x in sorted(issues, key=lambda i: -i.score):
        if x.type == "overlooked" and "pred_box" in x.data:
            pb = np.asarray(x.data["pred_box"], dtype=np.float64)
            covered = [j for j in range(len(rec.gt)) if int(rec.gt.class_id[j]) == x.data["pred_class"]]
            if covered and (_iou(pb, rec.gt.xyxy[covered]) >= MATCH_IOU).any():
                continue  # a given box of that class is already there
            if _taken(fixes, pb, x.data["pred_class"]):
                continue  # a more probable fix already puts a box there
            fixes.append(Fix("add", x.type, pb, x.data["pred_class"], x.score, x.reason, issue=x.data.get("id")))
            continue
        if x.box is None or x.box in done or ids is None or x.box >= len(ids):
            continue
        j = x.box
        box, cls, target = rec.gt.xyxy[j], int(rec.gt.class_id[j]), str(ids[j])
        fix = None
        kind = x.data.get("deviation", x.type) if x.type == "convention" else x.type  # a deviation is fixed as its kind
        if x.type == "swap" and "pred_class" in x.data:
            fix = Fix("relabel", x.type, box, x.data["pred_class"], x.score, x.reason, target)
        elif x.type in ("badloc", "size_outlier"):
            free = _free_predictions(rec, cls, min_conf, j) if rec.pred is not None else None
            if free is None:  # no predictions at hand: the issue's own
                if "pred_box" in x.data:
                    fix = Fix("move", x.type, x.data["pred_box"], cls, x.score, x.reason, target)
                else:
                    x.data["no_fix"] = "no predictions to take the box from (run 'cvcurate predict')"
            elif len(free):
                ious = _iou(box, rec.pred.xyxy[free])
                if ious.max() > 0:
                    fix = Fix("move", x.type, rec.pred.xyxy[free[int(np.argmax(ious))]], cls, x.score, x.reason,
                              target)
                else:
                    x.data["no_fix"] = "no box of the model of this class overlaps it"
            else:
                x.data["no_fix"] = "the model's boxes of this class here stand for other given boxes"
            if fix is not None and _taken(fixes, fix.xyxy, fix.class_id):
                fix = None
                x.data["no_fix"] = "a more probable fix already puts a box of this class there"
        elif x.type == "out_of_image":
            fix = Fix("clip", x.type, np.clip(box, 0, [w, h, w, h]), cls, x.score, x.reason, target)
        elif x.type in ("spurious", "degenerate", "duplicate"):
            fix = Fix("remove", x.type, box, cls, x.score, x.reason, target)
        elif x.type == "fragment" and isinstance(x.data.get("other"), int) and x.data["other"] < len(ids) \
                and x.data["other"] not in done:
            o = x.data["other"]
            joint = np.concatenate([np.minimum(box[:2], rec.gt.xyxy[o][:2]), np.maximum(box[2:], rec.gt.xyxy[o][2:])])
            fix = Fix("merge", x.type, joint, cls, x.score, x.reason, target, others=(str(ids[o]),))
            done.add(o)
        elif kind == "split" and "pred_box" in x.data:
            pb = np.asarray(x.data["pred_box"], dtype=np.float64)
            inside = [k for k in range(len(rec.gt)) if k != j and k not in done and int(rec.gt.class_id[k]) == cls
                      and _iou(rec.gt.xyxy[k], pb[None]).item() > 0
                      and np.all(rec.gt.xyxy[k][:2] >= pb[:2] - 0.1 * (pb[2:] - pb[:2]))
                      and np.all(rec.gt.xyxy[k][2:] <= pb[2:] + 0.1 * (pb[2:] - pb[:2]))]
            if inside:
                parts = rec.gt.xyxy[[j, *inside]]
                joint = np.concatenate([parts[:, :2].min(0), parts[:, 2:].max(0)])
                fix = Fix("merge", x.type, joint, cls, x.score, x.reason, target,
                          others=tuple(str(ids[k]) for k in inside))
                done.update(inside)
        elif kind == "merged":
            pieces = _split_pieces(rec, j, min_conf)
            if len(pieces) >= 2:
                for pbox in pieces:
                    fixes.append(Fix("split", x.type, pbox, cls, x.score, x.reason, target, group=target,
                                     issue=x.data.get("id")))
                done.add(j)
                continue
        if fix is not None and fix.action in ("move", "clip") and _taken(fixes, fix.xyxy, fix.class_id):
            fix = None  # a more probable fix already puts a box of that class there
        if fix is not None:
            fix.issue = x.data.get("id")
            fixes.append(fix)
            done.add(j)
    return fixes
