"""Conversion at the boundary: our absolute ``xyxy`` pixels <-> FiftyOne's relative
``[x, y, w, h]``, and the raw MongoDB documents of samples and detections in the exact shape
FiftyOne's own ``add_samples`` writes (checked by a test against ``add_samples`` itself)."""

from __future__ import annotations

import datetime as _dt
import random
from typing import Any, Sequence

import numpy as np

from ..types import Annotations, ImageRecord
from ._core import PRED_FIELD

_ID_STATE = {"random": b"", "counter": 0}


def new_object_id_bytes(n: int) -> np.ndarray:
    """``n`` fresh ObjectIds as an (n, 12) uint8 array, laid out as MongoDB's own (4-byte time,
    5-byte random value, 3-byte counter) but built in one numpy pass: bson makes each one under
    a lock, ~10 us apiece, most of a million-box write. A new random value is drawn every 2^24
    ids (the counter's range) and by every process, so no two ids are ever equal."""
    import os
    import time

    parts = []
    while n > 0:
        st = _ID_STATE
        if not st["random"] or st["counter"] >= 1 << 24 or st.get("pid") != os.getpid():
            st.update(random=os.urandom(5), counter=0, pid=os.getpid())
        k = min(n, (1 << 24) - st["counter"])
        count = np.arange(st["counter"], st["counter"] + k, dtype=np.uint32)
        st["counter"] += k
        raw = np.empty((k, 12), np.uint8)
        raw[:, :4] = np.frombuffer(int(time.time()).to_bytes(4, "big"), np.uint8)
        raw[:, 4:9] = np.frombuffer(st["random"], np.uint8)
        raw[:, 9] = (count >> 16) & 0xFF
        raw[:, 10] = (count >> 8) & 0xFF
        raw[:, 11] = count & 0xFF
        parts.append(raw)
        n -= k
    return np.concatenate(parts) if parts else np.zeros((0, 12), np.uint8)


def xyxy_to_rel_xywh(xyxy: np.ndarray, width: Any, height: Any) -> np.ndarray:
    """Pixel xyxy boxes to FiftyOne's relative xywh; width/height: one size, or one per box."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(xyxy)
    out[:, 0] = xyxy[:, 0] / width
    out[:, 1] = xyxy[:, 1] / height
    out[:, 2] = (xyxy[:, 2] - xyxy[:, 0]) / width
    out[:, 3] = (xyxy[:, 3] - xyxy[:, 1]) / height
    return out


def rel_xywh_to_xyxy(xywh: np.ndarray, width: int, height: int) -> np.ndarray:
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(xywh)
    out[:, 0] = xywh[:, 0] * width
    out[:, 1] = xywh[:, 1] * height
    out[:, 2] = (xywh[:, 0] + xywh[:, 2]) * width
    out[:, 3] = (xywh[:, 1] + xywh[:, 3]) * height
    return out


def _sample_doc(rec: ImageRecord, gt_doc: Any, pred_doc: Any, dataset_id: Any, now: Any, gt_field: str) -> dict:
    """A new sample's document; ``gt_doc``/``pred_doc``: its Detections fields, encoded
    (:func:`~cvcurate.store.encode.detections_bson`; ``pred_doc`` None: no predictions field)."""
    from bson import ObjectId

    doc = {
        "_id": ObjectId(),
        "filepath": rec.filepath,
        "tags": [],
        "metadata": {"_cls": "ImageMetadata", "width": rec.width, "height": rec.height},
        "_media_type": "image",
        "_rand": random.random(),
        "split": rec.split,
        gt_field: gt_doc,
        "_dataset_id": dataset_id,
        "created_at": now,
        "last_modified_at": now,
    }
    if pred_doc is not None:
        doc[PRED_FIELD] = pred_doc
    return doc


def _fo_sample(fo: Any, rec: ImageRecord, classes: Sequence[str], gt_field: str) -> Any:
    def dets(ann: Annotations) -> Any:
        rel = xyxy_to_rel_xywh(ann.xyxy, rec.width, rec.height)
        return fo.Detections(detections=[
            fo.Detection(label=classes[int(ann.class_id[i])], bounding_box=[float(v) for v in rel[i]],
                         **({} if ann.confidence is None else {"confidence": float(ann.confidence[i])}))
            for i in range(len(ann))
        ])

    fields: dict[str, Any] = {
        "metadata": fo.ImageMetadata(width=rec.width, height=rec.height),
        "split": rec.split,
        gt_field: dets(rec.gt),
    }
    if rec.pred is not None:
        fields[PRED_FIELD] = dets(rec.pred)
    return fo.Sample(filepath=rec.filepath, **fields)


def annotations_from_columns(labels: Sequence[Any], boxes: Sequence[Any], confs: Sequence[Any] | None,
                             det_ids: Sequence[Any] | None, widths: Sequence[Any], heights: Sequence[Any],
                             index: dict[str, int], classes: list[str],
                             extra: dict[str, Sequence[Any]] | None = None) -> list[Annotations]:
    """One :class:`Annotations` per sample from the columns a read gives (per sample: the labels'
    class names, their relative xywh boxes, confidences, ids; None or [] where a sample has
    none), converted for all samples at once. ``confs`` None: no confidences (ground truth);
    ``det_ids`` given: the ids in ``data["id"]``. A class name not in ``index`` is appended to
    ``classes`` (and ``index``) in the order met. Each sample's arrays are views into one array.
    ``extra``: more per-label numbers by name (columns as ``confs``; a missing one reads as NaN,
    and a column None as NaN for every label), kept in each annotation's ``data``."""
    from itertools import chain

    counts = np.fromiter((len(lb) if lb else 0 for lb in labels), dtype=np.int64, count=len(labels))
    total = int(counts.sum())
    flat = list(chain.from_iterable(lb for lb in labels if lb))
    for name in dict.fromkeys(flat):  # new names in the order met
        if name not in index:
            index[name] = len(classes)
            classes.append(name)
    cls = np.fromiter((index[name] for name in flat), dtype=np.int64, count=total)
    if total:
        rel = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b, n in zip(boxes, counts) if n])
    else:
        rel = np.zeros((0, 4))
    xyxy = rel_xywh_to_xyxy(rel, np.repeat(np.asarray(widths, np.float64), counts),
                            np.repeat(np.asarray(heights, np.float64), counts))
    conf = ids = None
    if confs is not None:  # None inside a list (a label without a confidence) reads as NaN
        conf = np.array(list(chain.from_iterable(c for c, n in zip(confs, counts) if n)), dtype=np.float64)
    # a number, or NaN: missing, or anything else a hand-edited database may hold there (text, a list)
    more = {k: np.full(total, np.nan) if col is None else
            np.array([x if type(x) in (float, int) else np.nan
                      for x in chain.from_iterable(c for c, n in zip(col, counts) if n)],
                     dtype=np.float64).reshape(total) for k, col in (extra or {}).items()}
    if det_ids is not None:
        ids = np.empty(total, dtype=object)
        ids[:] = list(chain.from_iterable(d for d, n in zip(det_ids, counts) if n))
    out = []
    end = np.cumsum(counts)
    for a, b in zip((end - counts).tolist(), end.tolist()):
        data = {} if ids is None else {"id": ids[a:b]}
        data.update({k: v[a:b] for k, v in more.items()})
        out.append(Annotations(xyxy=xyxy[a:b], class_id=cls[a:b], confidence=None if conf is None else conf[a:b],
                               data=data))
    return out


def _to_plain(doc: Any) -> Any:
    from bson import ObjectId

    if isinstance(doc, dict):
        return {("id" if k == "_id" else k): _to_plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_to_plain(v) for v in doc]
    if isinstance(doc, ObjectId):
        return str(doc)
    if isinstance(doc, (_dt.datetime, _dt.date)):
        return doc.isoformat()
    return doc


def _from_plain_detection(det: dict[str, Any]) -> dict[str, Any]:
    from bson import ObjectId

    out = {("_id" if k == "id" else k): v for k, v in det.items()}
    out["_id"] = ObjectId(out["_id"]) if out.get("_id") else ObjectId()
    out.setdefault("_cls", "Detection")
    out.setdefault("attributes", {})
    out.setdefault("tags", [])
    return out