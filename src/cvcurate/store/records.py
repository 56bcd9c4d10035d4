"""The typed record of a run, kept with the dataset in its database.

A score run's fields (queues, fixes, suspects) are what the App shows; its record is what every
other stage reads: the run's settings and one count (registered in the dataset's info with the
run, as :func:`.runs.register_run` does) and its issues with their exact ``p``, box and evidence.
The issues are stored column by column as one JSON payload in the chunked blobs of
:mod:`.journal` (any size: a MongoDB document holds at most 16 MB), under a key of their own
per run, written before the run is registered and pointed to by it: a reader sees the issues of
the registered run or, when the run was written by an older cvcurate (no record, or an older
schema), one line saying to score again. Record blobs go with their dataset.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .. import __version__
from ..errors import InputError
from ..types import RUN_SCHEMA, RUN_SUMMARY_KEYS, Issue, RunRecord
from ._core import load, open_read
from .journal import BLOBS, get_blob, put_blob
from .meta import get_runs

_COLUMNS = ("filepath", "sample_id", "type", "p", "reason", "box", "data")


def _prefix(ds: Any, key: str) -> str:
    return f"run:{ds._doc.id}:{key}:"


def put_record(target: Any, key: str, issues: list[Issue]) -> dict[str, Any]:
    """Store the issues of a new run of ``key``; return what the run's registered entry must
    hold to point to them (``record``, ``schema``, ``version``). The previous run's issues stay
    until :func:`drop_old_records` (after the new run is registered)."""
    ds = load(target) if isinstance(target, str) else target
    blob = _prefix(ds, key) + uuid.uuid4().hex
    cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    for i in issues:
        cols["filepath"].append(i.filepath)
        cols["sample_id"].append(i.sample_id)
        cols["type"].append(i.type)
        cols["p"].append(float(i.score))
        cols["reason"].append(i.reason)
        cols["box"].append(None if i.box is None else int(i.box))
        cols["data"].append(i.data or {})
    put_blob(ds, blob, {"schema": RUN_SCHEMA, "version": __version__, "issues": cols})
    return {"record": blob, "schema": RUN_SCHEMA, "version": __version__}


def drop_old_records(target: Any, key: str) -> None:
    """Remove the issues of every run of ``key`` but the registered one (an earlier run's, or a
    run killed before it was registered)."""
    ds = load(target) if isinstance(target, str) else target
    keep = (get_runs(ds).get(key) or {}).get("record")
    db = ds._sample_collection.database
    flt: dict[str, Any] = {"key": {"$regex": f"^{re.escape(_prefix(ds, key))}"}}
    if keep:
        flt = {"$and": [flt, {"key": {"$not": {"$regex": f"^{re.escape(keep)}$"}}}]}
    db[BLOBS].delete_many(flt)


def forget_records(db: Any, dataset_id: str) -> None:
    """Remove every run record of a dataset (when it is deleted)."""
    db[BLOBS].delete_many({"key": {"$regex": f"^run:{re.escape(dataset_id)}:"}})


def read_record(name: str, key: str = "score", *, issues: bool = True) -> RunRecord | None:
    """The last run of ``key`` as a :class:`RunRecord` (None: never run); ``issues=False`` skips
    loading the issues (a summary is all some readers need). A run without a record of this
    schema (written by an older cvcurate, or its record lost) raises :class:`InputError` with
    the one thing to do: score again."""
    ds = open_read(name)
    run = get_runs(ds).get(key)
    if not run:
        return None
    stale = InputError(f"the last {key} run of {name!r} was written by an older cvcurate or its record is "
                       f"gone: run 'cvcurate {key} {name}' again")
    if run.get("schema") != RUN_SCHEMA or not run.get("record"):
        raise stale
    summary = {k: run[k] for k in RUN_SUMMARY_KEYS if k in run}
    info = {k: v for k, v in run.items() if k not in RUN_SUMMARY_KEYS and k not in ("record", "schema", "version")}
    out: list[Issue] = []
    if issues:
        doc = get_blob(ds, run["record"])
        if not isinstance(doc, dict) or doc.get("schema") != RUN_SCHEMA:
            raise stale
        c = doc["issues"]
        out = [Issue(fp, t, float(p), why, box=b, sample_id=sid, data=d)
               for fp, sid, t, p, why, b, d in zip(c["filepath"], c["sample_id"], c["type"], c["p"], c["reason"],
                                                   c["box"], c["data"])]
    return RunRecord(at=str(run.get("at") or ""), issues=out, summary=summary, info=info,
                     schema=int(run["schema"]), version=str(run.get("version") or ""))
