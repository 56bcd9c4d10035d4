"""Bulk reading and writing of labels: datasets from a :class:`~cvcurate.types.LabelSet`
(all or nothing, merged by file path), a LabelSet from a dataset, detections fields, raw label
documents and plain field values.

Bulk in both directions, never a per-sample ``save()`` loop: reading uses ``values()`` on whole
fields; writing builds MongoDB documents in the shape FiftyOne's ``add_samples`` writes
(:mod:`.convert`) and inserts them with one ``insert_many`` per chunk, or updates them with one
``bulk_write``: ~25x faster than building ``fo.Sample`` objects (``scripts/bench/bench_import.py``).
Set ``CVCURATE_STORE_SAFE=1`` to use ``add_samples`` anyway.

Writes are all-or-nothing, Ctrl-C included: a new dataset is built under a temporary name and
renamed when complete; samples added to an existing dataset are removed again and changed labels,
classes and info restored if anything fails on the way.
"""

from __future__ import annotations

import copy
import datetime as _dt
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import StoreError, interrupt_leaves, kept
from ..types import Annotations, ImageRecord, LabelSet
from . import meta
from ._core import (GT_FIELD, PRED_FIELD, _TMP_PREFIX, _fo, _merge_classes, _safe_mode, shielded, exists, open_read,
                    get_classes, load)
from .convert import _fo_sample, annotations_from_columns, _from_plain_detection, _sample_doc, _to_plain
from .encode import detections_bson

_CHUNK = 5000
_READ_PART = 2000  # samples converted at a time by read()
_WRITE_LABELS = 100_000  # labels (detections) built and in flight at a time by a bulk write


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _rows_per_chunk(labels: int, rows: int) -> int:
    """Samples per bulk request when ``rows`` samples hold ``labels`` detections in all: about
    ``_WRITE_LABELS`` labels a request (never more than ``_CHUNK`` samples), so that what a write
    builds and has in flight stays bounded whatever the boxes per image."""
    per = max(1.0, labels / max(1, rows))
    return int(min(_CHUNK, max(50, _WRITE_LABELS // per)))


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
    step = _rows_per_chunk(sum(len(r.gt) + (len(r.pred) if r.pred is not None else 0) for r in records),
                           len(records))
    for start in range(0, len(records), step):
        recs = records[start:start + step]
        sizes = [(r.width, r.height) for r in recs]
        gts = detections_bson([r.gt for r in recs], sizes, classes)
        preds = detections_bson([r.pred for r in recs], sizes, classes)
        docs = [_sample_doc(r, g, p, dataset_id, now, gt_field) for r, g, p in zip(recs, gts, preds)]
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
    for chunk in _chunks([ObjectId(i) for i in ids], _CHUNK):
        coll.delete_many({"_id": {"$in": list(chunk)}})
    for chunk in _chunks(list(paths), _CHUNK):
        coll.delete_many({"filepath": {"$in": list(chunk)}})
    ds.reload()


def _bulk_set(ds: Any, updates: Iterable[tuple[str, dict[str, Any]]], chunk: int = _CHUNK) -> None:
    """``$set`` fields on many samples by id: one ``bulk_write`` per chunk, ``last_modified_at``
    stamped, the dataset reloaded. Every bulk update of this module goes through it except
    :func:`~cvcurate.store.runs.write_run`, which also unsets fields and sends its batches on two threads."""
    from concurrent.futures import ThreadPoolExecutor

    from bson import ObjectId
    from pymongo import UpdateOne

    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    coll = ds._sample_collection
    # streamed: the updates are built chunk by chunk while the previous chunk is sent (memory flat
    # in the number of samples); two chunks in flight at most, as mongod applies two at once
    sent: list[Any] = []
    ops: list[Any] = []
    with ThreadPoolExecutor(max_workers=2) as sender:
        for sid, fields in updates:
            ops.append(UpdateOne({"_id": ObjectId(sid)}, {"$set": {**fields, "last_modified_at": now}}))
            if len(ops) >= chunk:
                if len(sent) >= 2:
                    sent.pop(0).result()  # raises the first failure
                sent.append(sender.submit(coll.bulk_write, ops, ordered=False))
                ops = []
        if ops:
            sent.append(sender.submit(coll.bulk_write, ops, ordered=False))
        for f in sent:
            f.result()
    if sent:
        ds.reload()


def _raw_set_detections(ds: Any, ids: Sequence[str], field: str, anns: Sequence[Annotations | None],
                        sizes: Sequence[tuple[int, int]], classes: Sequence[str],
                        attributes: Sequence[str] = ()) -> None:
    """Set a Detections field on many samples in bulk (``None`` clears it); ``attributes``: the
    per-box numbers of the annotations' ``data`` written as the labels' attributes."""
    if field not in ds.get_field_schema():
        fo = _fo()
        ds.add_sample_field(field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    step = _rows_per_chunk(sum(len(a) for a in anns if a is not None), len(anns))

    def updates() -> Iterable[tuple[str, dict[str, Any]]]:  # encoded a chunk at a time, as sent
        for start in range(0, len(ids), step):
            docs = detections_bson(anns[start:start + step], sizes[start:start + step], classes,
                                   attributes=attributes)
            yield from ((sid, {field: d}) for sid, d in zip(ids[start:start + step], docs))

    _bulk_set(ds, updates(), chunk=step)


@dataclass
class WriteResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged}


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
        meta.append_history(ds, history)
        if exists(name):  # overwrite
            old_name = f"{_TMP_PREFIX}old_{uuid.uuid4().hex[:12]}"
            fo.load_dataset(name).name = old_name
        ds.name = name
        ds.persistent = True
    except BaseException:
        with shielded():
            ds.delete()  # the new dataset, under whichever name it had got
            if old_name is not None and old_name in fo.list_datasets():
                fo.load_dataset(old_name).name = name
        raise
    if old_name is not None:
        fo.delete_dataset(old_name)  # if this is interrupted, a hidden temporary dataset stays behind
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
            meta.append_history(ds, history)
    except BaseException:
        # restore: remove what was added, put back what was changed, the class list and the info
        with shielded():
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
    step = _rows_per_chunk(sum(len(r.gt) for r in recs), len(recs))

    def updates() -> Iterable[tuple[str, dict[str, Any]]]:
        for start in range(0, len(recs), step):
            part = recs[start:start + step]
            docs = detections_bson([r.gt for r in part], [(r.width, r.height) for r in part], classes)
            yield from ((r.sample_id, {"metadata": {"_cls": "ImageMetadata", "width": r.width, "height": r.height},
                                       "split": r.split, gt_field: d}) for r, d in zip(part, docs))

    _bulk_set(ds, updates(), chunk=step)


def read(name: str, *, gt_field: str = GT_FIELD, pred_field: str | None = None,
         view: Any = None, pred_attributes: Sequence[str] = ()) -> LabelSet:
    """Read a dataset (or a view of it) into a :class:`LabelSet`, in bulk.

    Ground-truth boxes carry the store's detection ids in ``gt.data["id"]``; predictions the
    numbers ``pred_attributes`` names (``predict --flip-check``'s) in their ``data``, NaN where a
    box has none (a whole-dataset read only: a view reads them where FiftyOne declares them)."""
    from . import direct

    ds = open_read(name) if view is None else load(name)
    # the whole dataset through pymongo (the same values: tests/test_direct_reads.py), a view
    # through FiftyOne
    coll = view if view is not None else ds if isinstance(ds, direct.Handle) else direct.handle_of(ds)
    classes = get_classes(ds)
    index = {c: i for i, c in enumerate(classes)}
    schema = ds.get_field_schema()
    has_split = "split" in schema
    want = ["id", "filepath", "metadata.width", "metadata.height"] + (["split"] if has_split else [])
    dets = [f for f in (gt_field, pred_field) if f is not None and f in schema]
    for f in dets:
        want += [f"{f}.detections.label", f"{f}.detections.bounding_box"]
    if gt_field in schema:
        want.append(f"{gt_field}.detections.id")
    extra: list[str] = []  # attributes read as columns; the others of pred_attributes no label has (all NaN)
    if pred_field in dets:
        want.append(f"{pred_field}.detections.confidence")
        # a column of None per box costs more than asking the database whether any label has it
        flat = ds.get_field_schema(flat=True) if view is not None and pred_attributes else {}
        extra = [k for k in pred_attributes if f"{pred_field}.detections.{k}" in flat or view is None and
                 coll._sample_collection.find_one({f"{pred_field}.detections.{k}": {"$exists": True}}, {"_id": 1})]
        want += [f"{pred_field}.detections.{k}" for k in extra]
    # one pass over the samples, converted part by part: a part's Python lists (a label string, a
    # 4-float list per box) are dropped once its records hold numpy arrays, so the read's memory
    # is the LabelSet's plus one part's
    parts = coll.iter_columns(want, _READ_PART) if view is None else [coll.values(want)]
    p_conf = pred_field is not None and pred_field in schema
    records: list[ImageRecord] = []
    for part in parts:
        got = dict(zip(want, part))
        ids, paths, widths, heights = (got[k] for k in want[:4])
        n = len(ids)
        splits = got["split"] if has_split else [None] * n
        bad = next((i for i in range(n) if not widths[i] or not heights[i]), None)
        if bad is not None:
            raise StoreError(f"sample {paths[bad]} has no image size in its metadata")
        if gt_field in schema:
            gts = annotations_from_columns(*(got[f"{gt_field}.detections.{k}"] for k in ("label", "bounding_box")),
                                           None, got[f"{gt_field}.detections.id"], widths, heights, index, classes)
        else:
            gts = annotations_from_columns([None] * n, [None] * n, None, [None] * n, widths, heights, index, classes)
        preds: list[Any] = [None] * n
        if p_conf:
            preds = annotations_from_columns(
                *(got[f"{pred_field}.detections.{k}"] for k in ("label", "bounding_box", "confidence")),
                None, widths, heights, index, classes,
                {k: got[f"{pred_field}.detections.{k}"] if k in extra else None for k in pred_attributes})
        records += [ImageRecord(filepath=paths[i], width=widths[i], height=heights[i], gt=gts[i], pred=preds[i],
                                split=splits[i], sample_id=ids[i]) for i in range(n)]
        del got, part
    return LabelSet(classes=classes, records=records)


def write_detections(name: str, field: str, records: Sequence[ImageRecord],
                     anns: Sequence[Annotations | None], classes: Sequence[str], attributes: Sequence[str] = ()) -> None:
    """Write one Detections field (predictions, fixes) for stored records, in bulk; ``attributes``:
    per-box numbers of the annotations' ``data`` kept as the labels' attributes.

    Without importing FiftyOne (:mod:`.direct`) when the database allows it, the field is already
    declared as detections and the dataset already lists every class: then nothing but the
    samples' documents changes, which is all this does through pymongo either way."""
    from . import direct

    if any(r.sample_id is None for r in records):
        raise StoreError("records must be read from the store before writing detections to it")
    ds = direct.load(name, _TMP_PREFIX) if direct.usable() else None
    if ds is None or not ds.declares_detections(field) or _merge_classes(get_classes(ds), classes) != get_classes(ds):
        ds = load(name)
    with interrupt_leaves(f"field {field!r} of dataset {name!r} may be partly written: run the command again"):
        merged = _merge_classes(get_classes(ds), classes)
        if merged != get_classes(ds):
            ds.default_classes = merged
        _raw_set_detections(ds, [r.sample_id for r in records], field, anns,
                            [(r.width, r.height) for r in records], classes, attributes)
    kept(f"field {field!r} of dataset {name!r} written")


def counts(name: str, gt_field: str = GT_FIELD) -> tuple[int, int]:
    """The images and ground-truth boxes of dataset ``name``, counted in the database."""
    ds = open_read(name)
    got = list(ds._sample_collection.aggregate([{"$group": {"_id": None, "n": {"$sum": 1}, "boxes": {
        "$sum": {"$size": {"$ifNull": [f"${gt_field}.detections", []]}}}}}]))
    return (int(got[0]["n"]), int(got[0]["boxes"])) if got else (0, 0)


def get_detections(name: str, field: str, sample_ids: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The raw detections of ``field`` per sample id (ids as strings, all attributes kept)."""
    from bson import ObjectId

    ds = open_read(name)
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
    ds = open_read(name)
    vals = ds.values(["id", *fields])
    return dict(zip(["id", *fields], vals))


def sample_values(name: str, fields: Sequence[str]) -> dict[str, list[Any]]:
    """Like :func:`sample_info`, but a field the dataset does not have gives ``None`` per sample."""
    ds = open_read(name)
    flat = ds.get_field_schema(flat=True)
    have = [f for f in fields if f in flat]
    vals = dict(zip(["id", *have], ds.values(["id", *have])))
    n = len(vals["id"])
    return {"id": vals["id"], **{f: vals[f] if f in vals else [None] * n for f in fields}}


def tag_samples(name: str, ids: Sequence[str], tag: str) -> None:
    """Add ``tag`` to the samples with these ids."""
    if ids:
        load(name).select(list(ids)).tag_samples(tag)


def set_dict_field(name: str, field: str, by_sample: dict[str, dict[str, Any]]) -> None:
    """Set a dict-valued sample field (declared as a DictField when new) on many samples."""
    fo = _fo()
    ds = load(name)
    if field not in ds.get_field_schema():
        ds.add_sample_field(field, fo.DictField)
    _bulk_set(ds, by_sample.items() and ((sid, {field: v}) for sid, v in by_sample.items()))


_PLAIN_FIELDS = ((bool, "BooleanField"), (int, "IntField"), (float, "FloatField"), (str, "StringField"))


def set_field(name: str, field: str, values: dict[str, Any], *, history: dict[str, Any] | None = None) -> int:
    """Set a plain sample field (a string, number or bool; None clears it) on many samples by
    sample id, in bulk, all or nothing, and append ``history`` to the dataset's history with it.

    Every id must be a sample of the dataset (else nothing is written). A new field is declared
    from its values' type. On any failure, Ctrl-C included, the samples get their previous values
    back (and a field this call declared is removed). Returns the number of samples set."""
    from bson import ObjectId

    fo = _fo()
    ds = load(name)
    kinds = {next((k for t, k in _PLAIN_FIELDS if isinstance(v, t)), None) for v in values.values() if v is not None}
    if None in kinds or len(kinds) > 1:
        raise StoreError(f"field {field!r}: values must be all strings, all numbers or all booleans")
    coll = ds._sample_collection
    before: dict[str, Any] = {}
    for chunk in _chunks([ObjectId(s) for s in values], _CHUNK):
        for doc in coll.find({"_id": {"$in": list(chunk)}}, {field: 1}):
            before[str(doc["_id"])] = doc.get(field)
    missing = [s for s in values if s not in before]
    if missing:
        raise StoreError(f"{len(missing)} sample(s) are not in dataset {name!r} (first: {missing[0]}): "
                         f"nothing was written; run the command again")
    declared = False
    try:
        if field not in ds.get_field_schema() and kinds:
            ds.add_sample_field(field, getattr(fo, kinds.pop()))
            declared = True
        _bulk_set(ds, ((sid, {field: v}) for sid, v in values.items() if before[sid] != v))
        meta.append_history(ds, history)
    except BaseException:
        with shielded():
            _bulk_set(ds, ((sid, {field: v}) for sid, v in before.items() if values[sid] != v))
            if declared:
                ds.delete_sample_field(field)
        raise
    return len(values)


def delete_samples(name: str, ids: Sequence[str]) -> int:
    """Delete the samples with these ids (image files are never touched); return how many."""
    if not ids:
        return 0
    ds = load(name)
    ds.delete_samples(list(ids))
    return len(ids)


def delete_samples_by_path(name: str, paths: Sequence[str]) -> int:
    """Delete the samples with these file paths (image files are never touched); return how many."""
    if not paths:
        return 0
    ds = load(name)
    n = 0
    for chunk in _chunks(list(paths), _CHUNK):
        n += ds._sample_collection.delete_many({"filepath": {"$in": list(chunk)}}).deleted_count
    ds.reload()
    return n
