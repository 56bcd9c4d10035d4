"""The units the calibration and the error model work on, and the copies with injected errors
they learn from: a unit is a kept given box (for the box types) or a candidate prediction (for
``overlooked``); its evidence per type; the evidence of each injected error in the scored copies;
and the copies themselves (``cvcurate.corrupt``'s injector, drawn in an order given by the images'
content, not their names)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..boxes import iou_one
from ..names import BOX_TYPES  # one of them per given box at most
from ..types import Annotations, LabelSet
from ..boxes import pair_iou
from .overlooked import pred_units
from .signals import Signals

if TYPE_CHECKING:
    from .calibrate import CalibrationConfig

CALIBRATED_TYPES = BOX_TYPES + ("overlooked",)
INJECTED_AS = {"swap": "swap", "badloc": "badloc", "spurious": "spurious", "overlooked": "overlooked",
               "merged": "merge", "split": "split"}  # issue type -> the error cvcurate.corrupt injects


@dataclass
class Units:
    """The units of one error type: evidence, class and image of each."""

    evidence: np.ndarray
    cls: np.ndarray
    image: np.ndarray


def box_evidence(s: Signals) -> dict[str, np.ndarray]:
    """The evidence of each box type (:data:`BOX_TYPES`), per kept given box of ``s``."""
    return {"swap": s.ev_swap, "badloc": s.ev_badloc, "spurious": s.ev_spurious, "split": s.split,
            "merged": s.merged}


def units_of(s: Signals) -> dict[str, Units]:
    """Every unit of every calibrated type in the signals ``s``: the kept given boxes for the box
    types, the predictions for ``overlooked``."""
    g, pred = s.given, s.pred
    out = {t: Units(np.asarray(v, np.float64), g.cls, g.image) for t, v in box_evidence(s).items()}
    out["overlooked"] = Units(np.asarray(s.ev_overlooked, np.float64), pred.cls, pred.image)
    return out


def _injected_units(s: Signals, errors: list[tuple[int, Any]]) -> dict[str, Units]:
    """The evidence of each injected error in the scored copies: the error's own box(es) for the
    box types; for a dropped box (``overlooked``) the strongest candidate prediction over it
    (IoU >= 0.3, any class), 0 when the model sees nothing there. Vectorised over the errors."""
    g, pred = s.given, s.pred
    inv = np.full(len(s.batch.given), -1, np.int64)
    inv[s.kept] = np.arange(len(s.kept))
    ev_box = box_evidence(s)
    by_kind = {v: k for k, v in INJECTED_AS.items()}
    start = s.batch.given.start
    out: dict[str, Units] = {}
    empty = Units(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    # box types: one row per (error, box)
    rows_t, rows_j, rows_b = [], [], []
    drops_j, drops_box, drops_cls = [], [], []
    for j, err in errors:
        t = by_kind.get(err.type)
        if t == "overlooked":
            drops_j.append(j)
            drops_box.append(err.original[0])
            drops_cls.append(int(err.original_class[0]))
        elif t is not None:
            for b in err.boxes:
                rows_t.append(t)
                rows_j.append(j)
                rows_b.append(b)
    rt, rj = np.asarray(rows_t, dtype=object), np.asarray(rows_j, np.int64)
    k = inv[start[rj] + np.asarray(rows_b, np.int64)] if len(rj) else np.zeros(0, np.int64)
    for t in BOX_TYPES:
        m = (rt == t) & (k >= 0)  # a degenerate result is the geometry checks' business
        out[t] = Units(ev_box[t][k[m]].astype(np.float64), g.cls[k[m]], rj[m]) if m.any() else empty
    if not drops_j:
        out["overlooked"] = empty
        return out
    dj = np.asarray(drops_j, np.int64)
    boxes = np.asarray(drops_box, np.float64).reshape(-1, 4)
    cnt = pred.count[dj]
    err_of = np.repeat(np.arange(len(dj)), cnt)  # every (dropped box, prediction of its image) pair
    rows = np.repeat(pred.start[dj] - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
    iou = pair_iou(pred.xyxy, rows, boxes, err_of)
    near = iou >= 0.3
    ev = np.zeros(len(dj))
    np.maximum.at(ev, err_of[near], s.ev_overlooked[rows[near]])
    out["overlooked"] = Units(ev, np.asarray(drops_cls, np.int64), dj)
    return out


def injected_box_rows(s: Signals, errors: list[tuple[int, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept box rows of ``s`` that carry an injected box error: (rows, type index into
    :data:`BOX_TYPES`, copy index of each)."""
    inv = np.full(len(s.batch.given), -1, np.int64)
    inv[s.kept] = np.arange(len(s.kept))
    by_kind = {v: k for k, v in INJECTED_AS.items()}
    start = s.batch.given.start
    rows, types, copies = [], [], []
    for j, err in errors:
        t = by_kind.get(err.type)
        if t is None or t == "overlooked":
            continue
        for b in err.boxes:
            k = int(inv[start[j] + b])
            if k >= 0:
                rows.append(k)
                types.append(BOX_TYPES.index(t))
                copies.append(j)
    return np.asarray(rows, np.int64), np.asarray(types, np.int64), np.asarray(copies, np.int64)


def content_rank(labels: LabelSet, preds: Sequence[Annotations] | None = None) -> np.ndarray:
    """Each image's rank in an order given by its content (size, boxes, classes, predictions),
    not by its position or file name: every seeded draw of the calibration (which images get
    injected copies, which are held out, which fold an image is in) goes by this order, so that the
    same labels under other file names (another import order) score the same."""
    import hashlib

    from .batch import FlatBoxes

    # rounded once for all images (the same bytes per image as rounding each image's own arrays)
    g = FlatBoxes.concat([r.gt for r in labels.records])
    g_xy, g_cls = np.round(g.xyxy, 2), g.cls
    has_p = preds is not None
    if has_p:
        p = FlatBoxes.concat([Annotations.empty(True) if a is None else a if a.confidence is not None else
                              Annotations(a.xyxy, a.class_id, confidence=np.zeros(len(a))) for a in preds],
                             with_confidence=True)
        p_xy, p_cls, p_conf = np.round(p.xyxy, 2), p.cls, np.round(p.conf, 4)
        p_has_conf = [a is not None and a.confidence is not None for a in preds]
    sizes = np.array([(r.width, r.height) for r in labels.records], np.int64).reshape(-1, 2)
    keys = []
    for i in range(len(labels.records)):
        h = hashlib.blake2b(digest_size=8)
        h.update(sizes[i].tobytes())
        a, b = int(g.start[i]), int(g.start[i] + g.count[i])
        h.update(g_xy[a:b].tobytes())
        h.update(g_cls[a:b].tobytes())
        if has_p and p.count[i]:
            a, b = int(p.start[i]), int(p.start[i] + p.count[i])
            h.update(p_xy[a:b].tobytes())
            h.update(p_cls[a:b].tobytes())
            if p_has_conf[i]:
                h.update(p_conf[a:b].tobytes())
        keys.append(h.digest())
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    return rank


def inject_copies(labels: LabelSet, preds: Sequence[Annotations], cfg: CalibrationConfig,
                  rank: np.ndarray | None = None) -> tuple[LabelSet, list[Annotations], list[int], list[tuple[int, Any]]]:
    """``cfg.n_copies`` copies of randomly drawn images (up to ``max_images`` each), each with one
    injected error, types dealt round-robin. Returns the copied records as one label set, their
    predictions, the original image of each copy, and (copy index, error) pairs. ``rank``: the
    images' :func:`content_rank` (computed when not given)."""
    from ..corrupt import apply_error, box_sizes

    rng = np.random.default_rng(cfg.seed)
    recs = labels.records
    sizes = box_sizes(labels)
    kinds = [INJECTED_AS[t] for t in CALIBRATED_TYPES]
    out_recs, out_preds, origin, errors = [], [], [], []
    k = int(rng.integers(len(kinds)))
    rank = content_rank(labels, preds) if rank is None else rank
    by_content = np.argsort(rank, kind="stable")  # position of the r-th image in content order
    for _ in range(cfg.n_copies(len(recs))):
        for idx in by_content[rng.permutation(len(recs))[:cfg.max_images]]:
            rec = copy.copy(recs[int(idx)])
            for attempt in range(len(kinds)):
                err = apply_error(kinds[(k + attempt) % len(kinds)], rec, rng, len(labels.classes), sizes)
                if err is not None:
                    errors.append((len(out_recs), err))
                    out_recs.append(rec)
                    out_preds.append(preds[int(idx)])
                    origin.append(int(idx))
                    break
            k += 1
    return LabelSet(list(labels.classes), out_recs), out_preds, origin, errors


def injected_pred_rows(s: Signals, errors: list[tuple[int, Any]], origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each dropped box of the copies ``s``: the candidate prediction (:func:`pred_units`)
    that overlaps it most (IoU >= 0.3), and the original image; dropped boxes the model does not
    see there are no units."""
    cand = pred_units(s)
    if not len(cand):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    by_img: dict[int, np.ndarray] = {}
    img = s.pred.image[cand]
    order = np.argsort(img, kind="stable")
    rows, imgs = [], []
    for j, err in errors:
        if INJECTED_AS.get("overlooked") != err.type:
            continue
        if j not in by_img:
            lo, hi = np.searchsorted(img[order], j), np.searchsorted(img[order], j, side="right")
            by_img[j] = cand[order[lo:hi]]
        here = by_img[j]
        if not len(here):
            continue
        iou = iou_one(np.asarray(err.original[0], np.float64), s.pred.xyxy[here])
        k = int(np.argmax(iou))
        if iou[k] >= 0.3:
            rows.append(int(here[k]))
            imgs.append(int(origin[j]))
    return np.asarray(rows, np.int64), np.asarray(imgs, np.int64)
