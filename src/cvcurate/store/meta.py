"""The dataset's own metadata: ``ds.info["cvcurate"]``, read and changed in one place; and the
primitives that make concurrent writers safe on a shared database (a lock per dataset, guarded
writes, atomic label tags).

``info["cvcurate"]`` holds the import history (``history``), the registered runs (``runs``), the
applied change sets (``changes``) and a ``version`` counter. Every read-modify-write of it goes
through :func:`update_meta`, which changes a copy and saves it with a compare-and-set on
``version`` (retried when another process saved in between), so two processes never drop each
other's entries. Reads go to the database, not to a cached dataset object, so a long-lived
process sees what others wrote.
"""

from __future__ import annotations

import json

import contextlib
import copy
import datetime as _dt
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from ..errors import DatasetBusyError, StoreError, pause_point
from ._core import INFO_KEY, load, open_read
from .database import boundary


def _dataset(target: Any) -> Any:
    """The dataset for this module's reads and writes, which go through pymongo only (its id, name,
    collections): without importing FiftyOne where the database allows it (``open_read``)."""
    return open_read(target) if isinstance(target, str) else target


def _datasets_collection(ds: Any) -> Any:
    return ds._sample_collection.database["datasets"]


def _raw_info(ds: Any) -> Any:
    doc = _datasets_collection(ds).find_one({"_id": ds._doc.id}, {"info": 1}) or {}
    return doc.get("info")


def get_meta(target: Any, key: str, default: Any = None) -> Any:
    """A copy of ``info["cvcurate"][key]`` of a dataset (given by name or as a dataset), as stored now."""
    meta = (_raw_info(open_read(target) if isinstance(target, str) else target) or {}).get(INFO_KEY) or {}
    return copy.deepcopy(meta.get(key, default))


_META_TRIES = 50


def update_meta(target: Any, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to a copy of ``info["cvcurate"]`` and save it once, compare-and-set on its
    ``version``: when another process saved in between, read again and re-apply ``change`` (it
    must only depend on the ``meta`` it is given)."""
    ds = _dataset(target)
    coll = _datasets_collection(ds)
    for _ in range(_META_TRIES):
        info = _raw_info(ds)
        meta = copy.deepcopy((info or {}).get(INFO_KEY) or {})
        version = meta.get("version")
        change(meta)
        meta["version"] = int(version or 0) + 1
        if isinstance(info, dict):
            update = {"$set": {f"info.{INFO_KEY}": meta}}
        else:
            update = {"$set": {"info": {INFO_KEY: meta}}}
        res = coll.update_one({"_id": ds._doc.id, f"info.{INFO_KEY}.version": version}, update)
        if res.matched_count == 1:
            ds._reload()  # the dataset object shows the new info
            return
    raise StoreError(f"could not save the metadata of dataset {ds.name!r}: "
                     f"{_META_TRIES} other writes came in between")


def get_conventions(target: Any) -> dict[str, dict[str, Any]]:
    """The labeling conventions adopted for the dataset: class -> {style, change_id, at, by}."""
    return dict(get_meta(target, "conventions", {}) or {})


def adopted_styles(target: Any) -> dict[str, str]:
    """The boxing style adopted per class (``whole`` or ``pieces``): what scoring follows."""
    return {c: e["style"] for c, e in get_conventions(target).items() if e.get("style")}


def set_convention(target: Any, cls: str, entry: dict[str, Any] | None) -> None:
    """Record (``entry``) or drop (None) the convention adopted for class ``cls``."""
    def change(meta: dict[str, Any]) -> None:
        conv = meta.setdefault("conventions", {})
        if entry is None:
            conv.pop(cls, None)
        else:
            conv[cls] = entry

    update_meta(target, change)


# -- import and other history ------------------------------------------------------------------
def get_history(target: Any) -> list[dict[str, Any]]:
    return list(get_meta(target, "history") or [])


def append_history(target: Any, entry: dict[str, Any] | None) -> None:
    if entry:
        update_meta(target, lambda m: m.setdefault("history", []).append(entry))


# -- runs --------------------------------------------------------------------------------------
def get_runs(target: Any) -> dict[str, Any]:
    return dict(get_meta(target, "runs") or {})


def set_run(target: Any, key: str, run: dict[str, Any] | None) -> None:
    """Register ``run`` under ``key`` (None removes it); a run set again goes last, where deleting
    and registering it puts it."""
    def change(meta: dict[str, Any]) -> None:
        runs = dict(meta.get("runs") or {})
        runs.pop(key, None)
        if run is not None:
            runs[key] = run
        meta["runs"] = runs

    update_meta(target, change)


# -- change sets (review's apply / undo) ---------------------------------------------------------
def get_changes(target: Any) -> list[dict[str, Any]]:
    return list(get_meta(target, "changes") or [])


def record_change(target: Any, entry: dict[str, Any]) -> None:
    """Add a change-set entry, or update the one with the same id."""
    def change(meta: dict[str, Any]) -> None:
        changes = [c for c in meta.get("changes") or [] if c.get("change_id") != entry["change_id"]]
        changes.append(entry)
        changes.sort(key=lambda c: c["change_id"])
        meta["changes"] = changes

    update_meta(target, change)


CHANGES_COLLECTION = "cvcurate_changes"  # change bodies of older versions: one JSON string each (read only)


def _change_key(ds: Any, change_id: str) -> str:
    return f"change:{ds._doc.id}:{change_id}"


def save_change_body(target: Any, change_id: str, body: dict[str, Any]) -> None:
    """Keep a change set's full record (every sample's ground truth before and after) in the
    database, beside the dataset, so that an undo works from any machine that reaches it. Stored
    in pieces (:func:`~cvcurate.store.journal.put_blob`): any size fits."""
    from .journal import put_blob

    ds = _dataset(target)
    put_blob(ds, _change_key(ds, change_id), body)


def load_change_body(target: Any, change_id: str) -> dict[str, Any] | None:
    """The record :func:`save_change_body` kept (None: none, as for a change of an older version
    that only has its local log file)."""
    from .journal import get_blob

    ds = _dataset(target)
    body = get_blob(ds, _change_key(ds, change_id))
    if body is not None:
        return body
    doc = ds._sample_collection.database[CHANGES_COLLECTION].find_one({"_id": f"{ds._doc.id}:{change_id}"})
    return json.loads(doc["body"]) if doc else None


def forget_change_body(target: Any, change_id: str) -> None:
    from .journal import delete_blob

    ds = _dataset(target)
    delete_blob(ds, _change_key(ds, change_id))
    ds._sample_collection.database[CHANGES_COLLECTION].delete_one({"_id": f"{ds._doc.id}:{change_id}"})


def forget_dataset(ds: Any) -> None:
    """Remove what cvcurate keeps beside a dataset (change bodies, journal, run records, lock), when it is deleted."""
    import re

    from .journal import BLOBS, forget_dataset as forget_journal
    from .records import forget_records

    db = ds._sample_collection.database
    did = str(ds._doc.id)
    db[BLOBS].delete_many({"key": {"$regex": f"^change:{re.escape(did)}:"}})
    db[CHANGES_COLLECTION].delete_many({"_id": {"$regex": f"^{re.escape(did)}:"}})
    forget_journal(db, did)
    forget_records(db, did)
    db[LOCKS_COLLECTION].delete_many({"_id": f"dataset:{did}"})


def forget_change(target: Any, change_id: str) -> None:
    """Remove a change-set entry (rolling back an interrupted apply); nothing if it is absent."""
    if any(c.get("change_id") == change_id for c in get_changes(target)):
        update_meta(target, lambda m: m.__setitem__(
            "changes", [c for c in m.get("changes") or [] if c.get("change_id") != change_id]))


# ===============================================================================================
# Concurrency on a shared database (FIFTYONE_DATABASE_URI): several reviewers and commands on the
# same dataset at once. Three primitives, all plain MongoDB operations in the dataset's database:
#
# * dataset_lock    one holder at a time per dataset and purpose group (apply / undo): a document
#                   with a unique _id in the collection ``cvcurate_locks``, taken with one atomic
#                   upsert, kept alive by a heartbeat, expiring by the *server's* clock
# * guarded_write   per-sample compare-and-set: a sample is written only if the fields the caller
#                   decided on (sample tags, detections' ids, labels, boxes and tags) are still as
#                   it read them; a field's new detections and label tags go in ONE update, so a
#                   fix and its "applied" mark are written together or not at all
# * tag_labels      add / remove label tags atomically per sample document (what the App's own
#                   tagging does), never a read-modify-write of a whole detections list
# ===============================================================================================
LOCKS_COLLECTION = "cvcurate_locks"
LOCK_TTL_S = 60.0  # a holder that stops renewing (crashed, machine gone) loses the lock after this




def _lock_ttl() -> float:
    try:
        return max(1.0, float(os.environ.get("CVCURATE_LOCK_TTL", LOCK_TTL_S)))
    except ValueError:
        return LOCK_TTL_S


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


class DatasetLock:
    """A held lock: ``check()`` raises when it was lost (expired and taken by another process)."""

    def __init__(self, coll: Any, key: str, token: str, ttl: float, dataset: str, purpose: str) -> None:
        self.coll, self.key, self.token, self.ttl = coll, key, token, ttl
        self.dataset, self.purpose = dataset, purpose
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cvcurate-lock", daemon=True)

    def _renew(self) -> bool:
        res = self.coll.update_one({"_id": self.key, "token": self.token},
                                   [{"$set": {"expires": {"$add": ["$$NOW", int(self.ttl * 1000)]}}}])
        return res.matched_count == 1

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._renew():
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - the database is away for a moment: try again
                continue

    @boundary
    def check(self) -> None:
        if self.lost or self.coll.count_documents({"_id": self.key, "token": self.token}) != 1:
            self.lost = True
            raise StoreError(f"the {self.purpose} lock on dataset {self.dataset!r} was lost "
                             f"(this process stalled for over {self.ttl:g} s): nothing more was written")

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.coll.delete_one({"_id": self.key, "token": self.token})


def _busy_message(doc: dict[str, Any], name: str) -> str:
    def t(v: Any) -> str:
        return v.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(v, _dt.datetime) else str(v)

    return (f"dataset {name!r} is locked by another {doc.get('purpose', 'apply')} "
            f"({doc.get('user', '?')} on {doc.get('host', '?')}, pid {doc.get('pid', '?')}, "
            f"since {t(doc.get('since'))}): try again when it has finished, or give --wait SECONDS "
            f"(a lock left by a crashed process expires at {t(doc.get('expires'))})")


@contextlib.contextmanager
def dataset_lock(target: Any, purpose: str, *, user: str | None = None, ttl_s: float | None = None,
                 wait_s: float = 0.0) -> Iterator[DatasetLock]:
    """Hold the dataset's lock for the block (see :func:`_take_lock`); with ``wait_s`` > 0, wait up
    to that many seconds for another holder to finish before giving up."""
    import time

    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            lock = _take_lock(target, purpose, user=user, ttl_s=ttl_s)
            break
        except DatasetBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
    lock._thread.start()
    try:
        yield lock
    finally:
        lock.release()


def read_lock(target: Any, purpose: str, *, safe_writers: Sequence[str] = (), user: str | None = None, wait_s: float = 0.0) -> Any:
    """A reader's (export, gate, report) hold of the lock around its reads only, so none lands half way
    through a change set: waits ``wait_s``, else :class:`DatasetBusyError`. A holder in ``safe_writers``
    (whose writes the reader does not read, e.g. a predict) is not waited for."""
    if (lock_holder(target) or {}).get("purpose") in safe_writers:
        return contextlib.nullcontext()
    return dataset_lock(target, purpose, user=user, wait_s=wait_s)


def _take_lock(target: Any, purpose: str, *, user: str | None = None, ttl_s: float | None = None) -> DatasetLock:
    """Take the dataset's change lock; raise :class:`DatasetBusyError` at once when another
    process holds it. One lock per dataset for every cvcurate writer (score, apply, undo, decide,
    augment, split, conventions --adopt, and the predictions' writes of predict and train --folds).

    One document per dataset in ``cvcurate_locks`` (``_id``: the dataset's id, so a rename keeps
    it), holding who (user, host, pid), ``since`` and ``expires``. Taken by one atomic upsert that
    matches only an expired lock: when a live one exists, the upsert's insert collides on the
    unique ``_id`` (DuplicateKeyError) and the lock is refused. Times are the database server's
    (``$$NOW``), so clients' clocks do not matter. A heartbeat thread renews it every ttl/3; a
    lock whose holder is a dead pid on this host is taken over at once, others after ``ttl_s``.
    Released by :func:`dataset_lock` (only by its holder: the delete matches its token)."""
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    ds = _dataset(target)
    coll = ds._sample_collection.database[LOCKS_COLLECTION]
    ttl = ttl_s or _lock_ttl()
    key = f"dataset:{ds._doc.id}"
    token = uuid.uuid4().hex
    fields = {"token": token, "dataset": ds.name, "purpose": purpose, "user": user or "unknown",
              "host": socket.gethostname(), "pid": os.getpid(), "since": "$$NOW",
              "expires": {"$add": ["$$NOW", int(ttl * 1000)]}}
    take = [{"$set": {k: ({"$literal": v} if isinstance(v, str) and v.startswith("$") and k != "since" else v)
                      for k, v in fields.items()}}]
    for _ in range(5):
        try:
            # only an expired lock matches (by the server's clock; an upsert may not use $expr, so
            # the server's time comes from 'hello'); none there: inserted; a live one: the insert
            # collides on the unique _id
            server_now = coll.database.command("hello")["localTime"]
            coll.find_one_and_update({"_id": key, "expires": {"$lt": server_now}}, take, upsert=True,
                                     return_document=ReturnDocument.AFTER)
            break
        except DuplicateKeyError:
            held = coll.find_one({"_id": key})
            if held is None:
                continue  # released in the meantime: try again
            dead_here = held.get("host") == socket.gethostname() and not _pid_alive(held.get("pid"))
            if dead_here and coll.find_one_and_update({"_id": key, "token": held.get("token")}, take):
                break  # its holder died on this machine: taken over (only one taker matches its token)
            if dead_here:
                continue  # another process took it over first: look again
            raise DatasetBusyError(_busy_message(held, ds.name)) from None
    else:
        raise DatasetBusyError(f"dataset {ds.name!r} is locked by another process: try again") from None
    return DatasetLock(coll, key, token, ttl, ds.name, purpose)


def lock_holder(target: Any) -> dict[str, Any] | None:
    """The lock document of a dataset (who holds it, until when), or None when it is free."""
    ds = open_read(target) if isinstance(target, str) else target
    return ds._sample_collection.database[LOCKS_COLLECTION].find_one({"_id": f"dataset:{ds._doc.id}"})


# -- guarded (compare-and-set) writes -------------------------------------------------------------
@dataclass
class GuardedWrite:
    """One sample's write, done only if what the caller read is still there.

    ``expect_tags``: the sample's tags as read. ``expect_detections``: field -> its detections as
    read (plain, as :func:`~cvcurate.store.io.get_detections` gives them); their ids, labels,
    boxes and label tags must be unchanged. ``set_detections``: field -> new detections (a
    detection without "id" gets one, written back into the dict). ``add_label_tags`` /
    ``remove_label_tags``: field -> (label ids, tags), on labels of a field not being replaced."""

    sample_id: str
    expect_tags: Sequence[str] | None = None
    expect_detections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    set_detections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    add_label_tags: dict[str, tuple[Sequence[str], Sequence[str]]] = field(default_factory=dict)
    remove_label_tags: dict[str, tuple[Sequence[str], Sequence[str]]] = field(default_factory=dict)


def _expect_detections(fld: str, dets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from bson import ObjectId

    def same(path: str, values: list[Any]) -> dict[str, Any]:
        return {"$eq": [{"$ifNull": [f"${fld}.detections.{path}", []]}, values]}

    return [same("_id", [ObjectId(d["id"]) for d in dets if d.get("id")]),
            same("label", [d["label"] for d in dets if "label" in d]),
            same("bounding_box", [list(d["bounding_box"]) for d in dets if "bounding_box" in d]),
            same("tags", [list(d["tags"]) for d in dets if "tags" in d])]


def _guarded_op(w: GuardedWrite, now: Any) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    from bson import ObjectId

    from .convert import _from_plain_detection

    conds: list[dict[str, Any]] = []
    if w.expect_tags is not None:
        conds.append({"$eq": [{"$ifNull": ["$tags", []]}, list(w.expect_tags)]})
    for fld, dets in w.expect_detections.items():
        conds.extend(_expect_detections(fld, dets))
    flt: dict[str, Any] = {"_id": ObjectId(w.sample_id)}
    if conds:
        flt["$expr"] = {"$and": conds}
    sets: dict[str, Any] = {"last_modified_at": now}
    for fld, dets in w.set_detections.items():
        for d in dets:
            d.setdefault("id", str(ObjectId()))
        sets[fld] = {"_cls": "Detections", "detections": [_from_plain_detection(d) for d in dets]}
    update: dict[str, Any] = {"$set": sets}
    filters = []
    for op, tags_by_field in (("$addToSet", w.add_label_tags), ("$pull", w.remove_label_tags)):
        for fld, (ids, tags) in tags_by_field.items():
            if not ids or not tags:
                continue
            if fld in w.set_detections or (op == "$pull" and fld in w.add_label_tags):
                raise ValueError(f"field {fld!r}: replace its detections or tag its labels, not both")
            ident = f"l{len(filters)}"
            value = {"$each": list(tags)} if op == "$addToSet" else {"$in": list(tags)}
            update.setdefault(op, {})[f"{fld}.detections.$[{ident}].tags"] = value
            filters.append({f"{ident}._id": {"$in": [ObjectId(i) for i in ids]}})
    return flt, update, filters


def guarded_write(name: str, writes: Sequence[GuardedWrite], attempted: list[str] | None = None) -> list[str]:
    """Do each write whose sample is unchanged (one atomic update per sample); return the ids of
    the samples written, in order. ``attempted``, when given, receives each sample id *before*
    its write is sent (so that a caller rolling back after an interrupt knows every sample that
    may have been written). One round trip per sample: a compare-and-set must know which
    samples matched, which a bulk write does not tell."""
    from pymongo.errors import WriteError

    ds = load(name)
    coll = ds._sample_collection
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    done = []
    for w in writes:
        flt, update, filters = _guarded_op(w, now)
        if attempted is not None:
            attempted.append(w.sample_id)
        try:
            res = coll.update_one(flt, update, array_filters=filters or None)
        except WriteError as exc:
            if exc.code != 2 or "must exist" not in str(exc):
                raise
            # a field whose labels it tags is not there (a re-score proposed nothing for the
            # sample): nothing to tag, the rest of the write stands
            w = GuardedWrite(w.sample_id, w.expect_tags, w.expect_detections, w.set_detections)
            flt, update, filters = _guarded_op(w, now)
            res = coll.update_one(flt, update, array_filters=filters or None)
        if res.matched_count == 1:
            done.append(w.sample_id)
        pause_point("guarded_write")
    if writes:
        ds.reload()
    return done


def tag_labels(name: str, field: str, label_ids: Sequence[str], *, add: Sequence[str] = (),
               remove: Sequence[str] = ()) -> int:
    """Add ``add`` and remove ``remove`` from the tags of these labels of ``field``, atomically
    per sample (one pipeline update per sample document, as the App tags labels): concurrent
    taggers of the same sample never lose each other's tags. A tag both added and removed ends up
    added. Returns how many of the labels were found."""
    from bson import ObjectId

    if not label_ids or not (add or remove):
        return 0
    ds = load(name)
    coll = ds._sample_collection
    oids = [ObjectId(i) for i in label_ids]
    flt = {f"{field}.detections._id": {"$in": oids}}
    found = len(set(coll.distinct(f"{field}.detections._id", flt)) & set(oids))
    drop = list(dict.fromkeys([*remove, *add]))
    new_tags = {"$concatArrays": [
        {"$filter": {"input": {"$ifNull": ["$$d.tags", []]}, "as": "t", "cond": {"$not": [{"$in": ["$$t", drop]}]}}},
        list(dict.fromkeys(add))]}
    coll.update_many(flt, [{"$set": {
        f"{field}.detections": {"$map": {"input": f"${field}.detections", "as": "d", "in": {
            "$cond": [{"$in": ["$$d._id", oids]}, {"$mergeObjects": ["$$d", {"tags": new_tags}]}, "$$d"]}}},
        "last_modified_at": "$$NOW"}}])
    ds.reload()
    return found
