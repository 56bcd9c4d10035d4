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


def new_object_ids(n: int) -> list[Any]:
    """``n`` fresh ObjectIds at once, laid out as MongoDB's own (4-byte time, 5-byte random
    value, 3-byte counter) but built in one numpy pass: bson makes each one under a lock, ~10 us
    apiece, most of a million-box write. A new random value is drawn every 2^24 ids (the
    counter's range) and by every process, so no two ids are ever equal."""
    import os
    import time

    from bson import ObjectId

    out: list[Any] = []
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
        buf = raw.tobytes()
        out += [ObjectId(buf[i:i + 12]) for i in range(0, 12 * k, 12)]
        n -= k
    return out


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


def _detections_doc(ann: Annotations, width: int, height: int, classes: Sequence[str]) -> dict:
    rel = xyxy_to_rel_xywh(ann.xyxy, width, height).tolist()
    ids = new_object_ids(len(ann))
    labels = [classes[c] for c in np.asarray(ann.class_id, np.int64).tolist()]
    conf = None if ann.confidence is None else np.asarray(ann.confidence, np.float64).tolist()
    dets = []
    for i in range(len(ann)):
        d: dict[str, Any] = {
            "_id": ids[i],
            "_cls": "Detection",
            "attributes": {},
            "tags": [],
            "label": labels[i],
            "bounding_box": rel[i],
        }
        if conf is not None:
            d["confidence"] = conf[i]
        dets.append(d)
    return {"_cls": "Detections", "detections": dets}


def _sample_doc(rec: ImageRecord, classes: Sequence[str], dataset_id: Any, now: Any,
                gt_field: str) -> dict:
    from bson import ObjectId

    doc = {
        "_id": ObjectId(),
        "filepath": rec.filepath,
        "tags": [],
        "metadata": {"_cls": "ImageMetadata", "width": rec.width, "height": rec.height},
        "_media_type": "image",
        "_rand": random.random(),
        "split": rec.split,
        gt_field: _detections_doc(rec.gt, rec.width, rec.height, classes),
        "_dataset_id": dataset_id,
        "created_at": now,
        "last_modified_at": now,
    }
    if rec.pred is not None:
        doc[PRED_FIELD] = _detections_doc(rec.pred, rec.width, rec.height, classes)
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


def _annotations_from_values(labels: Any, boxes: Any, confs: Any, w: int, h: int,
                             index: dict[str, int], classes: list[str], det_ids: Any = None) -> Annotations:
    if not labels:
        empty = Annotations.empty(with_confidence=confs is not None)
        if det_ids is not None:
            empty.data["id"] = np.zeros(0, dtype=object)
        return empty
    ids = []
    for lb in labels:
        if lb not in index:
            index[lb] = len(classes)
            classes.append(lb)
        ids.append(index[lb])
    conf = None
    if confs is not None:
        conf = np.array([np.nan if c is None else c for c in confs], dtype=np.float64)
    data = {} if det_ids is None else {"id": np.array(det_ids, dtype=object)}
    return Annotations(xyxy=rel_xywh_to_xyxy(np.asarray(boxes, dtype=np.float64), w, h),
                       class_id=np.asarray(ids, dtype=np.int64), confidence=conf, data=data)


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