"""The write-ahead journal of cvcurate's writers, and chunked records that no 16 MB limit breaks.

Every command that changes labels or decisions (apply, undo, score, decide, augment) first writes
an intent record here, in the dataset's database: what it is about to change and the before-images
it needs to take the change back (or the ids it needs to finish it), then does its writes, then
marks the record done. A writer killed in between (kill -9, a lost machine, a lost database)
leaves the record ``pending``; the next writer on that dataset, which holds the dataset's lock and
so knows nobody else is writing, finds it and finishes or rolls it back (what that means is the
stage's: :mod:`cvcurate.stages.recovery`); read-only commands say that it exists and which
command finishes it.

Records are plain MongoDB documents in ``cvcurate_journal`` (one per command run); their payloads
(before-images, decisions) go through :func:`put_blob`: a JSON text cut into pieces of at most
4 MB in ``cvcurate_blobs``, so any size fits (a MongoDB document holds at most 16 MB). A payload is
written before the record that points to it, and replaced by writing a new one and moving the
pointer, so a pending record always has its whole payload.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import uuid
from typing import Any

from ._core import open_read

JOURNAL = "cvcurate_journal"
BLOBS = "cvcurate_blobs"
PIECE = 4 * 1024 * 1024  # characters of JSON per blob document (well under MongoDB's 16 MB)

PENDING, DONE, ROLLED_BACK = "pending", "done", "rolled_back"


__all__ = ["put_blob", "get_blob", "delete_blob", "who", "begin", "set_payload", "payload", "update", "finish",
           "pending", "history", "forget_dataset"]

def _db(target: Any) -> Any:
    ds = open_read(target) if isinstance(target, str) else target
    return ds, ds._sample_collection.database


def _durable(coll: Any) -> Any:
    """The collection with writes acknowledged only once in the database's own journal on disk
    (``j: true``): an intent record survives a crash of the database right after it, and so does
    everything written before it."""
    from pymongo import WriteConcern

    return coll.with_options(write_concern=WriteConcern(w=1, j=True))


# -- chunked payloads ----------------------------------------------------------------------------
def put_blob(target: Any, key: str, value: Any) -> int:
    """Store ``value`` (JSON-able) under ``key``, replacing what was there; return the pieces."""
    _, db = _db(target)
    text = json.dumps(value)
    pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]
    coll = db[BLOBS]
    coll.delete_many({"key": key})
    coll.insert_many([{"_id": f"{key}#{n}", "key": key, "n": n, "of": len(pieces), "text": p}
                      for n, p in enumerate(pieces)], ordered=True)
    return len(pieces)


def get_blob(target: Any, key: str) -> Any:
    """What :func:`put_blob` stored under ``key``; None when nothing (or not all of it) is there."""
    _, db = _db(target)
    docs = sorted(db[BLOBS].find({"key": key}), key=lambda d: d["n"])
    if not docs or len(docs) != docs[0].get("of") or [d["n"] for d in docs] != list(range(len(docs))):
        return None
    return json.loads("".join(d["text"] for d in docs))


def delete_blob(target: Any, key: str) -> None:
    _, db = _db(target)
    db[BLOBS].delete_many({"key": key})


# -- the journal -----------------------------------------------------------------------------------
def who() -> str:
    """Who runs this command: $CVCURATE_USER, else the login name."""
    import getpass

    try:
        return os.environ.get("CVCURATE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def begin(target: Any, op: str, payload: Any = None, **info: Any) -> dict[str, Any]:
    """Write the intent record of ``op`` (its payload first); return the record."""
    ds, db = _db(target)
    jid = uuid.uuid4().hex
    key = f"journal:{jid}:0"
    if payload is not None:
        put_blob(ds, key, payload)
    doc = {"_id": jid, "dataset_id": str(ds._doc.id), "dataset": ds.name, "op": op, "state": PENDING,
           "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "user": who(),
           "host": socket.gethostname(), "pid": os.getpid(), "payload": key if payload is not None else None,
           "rev": 0, **info}
    _durable(db[JOURNAL]).insert_one(doc)
    return doc


def set_payload(target: Any, entry: dict[str, Any], payload: Any) -> None:
    """Replace the payload of a pending record: the new one is written whole before the record
    points to it, then the old one is removed."""
    ds, db = _db(target)
    rev = int(entry.get("rev", 0)) + 1
    key = f"journal:{entry['_id']}:{rev}"
    put_blob(ds, key, payload)
    old = entry.get("payload")
    _durable(db[JOURNAL]).update_one({"_id": entry["_id"]}, {"$set": {"payload": key, "rev": rev}})
    entry.update(payload=key, rev=rev)
    if old:
        delete_blob(ds, old)


def payload(target: Any, entry: dict[str, Any]) -> Any:
    return get_blob(target, entry["payload"]) if entry.get("payload") else None


def update(target: Any, entry: dict[str, Any], **fields: Any) -> None:
    _, db = _db(target)
    _durable(db[JOURNAL]).update_one({"_id": entry["_id"]}, {"$set": fields})
    entry.update(fields)


def finish(target: Any, entry: dict[str, Any], state: str = DONE, **fields: Any) -> None:
    """Mark a record done (or rolled back) and drop its payload: nothing is left to take back."""
    ds, db = _db(target)
    _durable(db[JOURNAL]).update_one({"_id": entry["_id"]}, {"$set": {
        "state": state, "ended": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **fields}})
    if entry.get("payload"):
        delete_blob(ds, entry["payload"])
    entry["state"] = state


def pending(target: Any) -> list[dict[str, Any]]:
    """The unfinished records of a dataset, oldest first."""
    ds, db = _db(target)
    return list(db[JOURNAL].find({"dataset_id": str(ds._doc.id), "state": PENDING}).sort("started", 1))


def history(target: Any, limit: int = 50) -> list[dict[str, Any]]:
    ds, db = _db(target)
    return list(db[JOURNAL].find({"dataset_id": str(ds._doc.id)}).sort("started", -1).limit(limit))


def forget_dataset(db: Any, dataset_id: str) -> None:
    """Remove every record and payload of a deleted dataset."""
    keys = [d["payload"] for d in db[JOURNAL].find({"dataset_id": dataset_id}, {"payload": 1}) if d.get("payload")]
    if keys:
        db[BLOBS].delete_many({"key": {"$in": keys}})
    db[JOURNAL].delete_many({"dataset_id": dataset_id})
