"""Reading the store without importing FiftyOne, for the commands that only read.

``import fiftyone`` takes 3-4 s (it loads its ODM, plugins and App config), so ``datasets``,
``info``, ``review --summary`` paid more for the import than for their work. With a database given
by ``FIFTYONE_DATABASE_URI`` (a server that is already running: without one, FiftyOne starts its
own on import, and only FiftyOne knows where), read-only store functions open a dataset here
instead: a :class:`Handle` over the same MongoDB documents FiftyOne reads (the ``datasets``
collection and the dataset's sample collection), through pymongo. The layout they rely on (field
declarations in ``sample_fields``, ``_id`` for ids, ``default_classes``, labels as embedded
documents) is pinned against the installed FiftyOne by ``tests/test_direct_reads.py``, which
compares every reader's result both ways on the same dataset.

Once FiftyOne is imported in the process (any writer, the App, tests), reads go through it again:
its connection is there, and one process then sees one connection's view of the data.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DatasetNotFoundError

FORCE: bool | None = None  # tests: True / False decides instead of the environment

_client: Any = None


def usable() -> bool:
    """Whether reads may skip FiftyOne now: a database URI is given and FiftyOne is not loaded."""
    if FORCE is not None:
        return FORCE
    return bool(os.environ.get("FIFTYONE_DATABASE_URI")) and "fiftyone" not in sys.modules


def _database_name() -> str:
    """FiftyOne's database name: ``FIFTYONE_DATABASE_NAME``, else its config file, else "fiftyone"."""
    name = os.environ.get("FIFTYONE_DATABASE_NAME")
    if name:
        return name
    cfg = Path(os.environ.get("FIFTYONE_CONFIG_PATH") or Path.home() / ".fiftyone" / "config.json")
    try:
        value = json.loads(cfg.read_text()).get("database_name")
    except (OSError, ValueError, AttributeError):
        value = None
    return str(value) if value else "fiftyone"


def database() -> Any:
    """The pymongo database FiftyOne keeps its datasets in (FiftyOne's own connection when it is
    loaded)."""
    global _client
    if "fiftyone" in sys.modules:
        import fiftyone.core.odm as foo

        return foo.get_db_conn()
    if _client is None:
        from pymongo import MongoClient

        # as FiftyOne connects: the URI's own options (a server selection timeout, say) hold
        _client = MongoClient(host=os.environ["FIFTYONE_DATABASE_URI"], appname="cvcurate")
        _close_at_exit()
    return _client[_database_name()]


def _close_at_exit() -> None:
    """Close the client at exit instead of letting pymongo join its monitor threads: they sleep
    in steps of 0.5 s and notice a close only after one, so every command that read through here
    ended 0.5 s late (a third of ``cvcurate datasets``). Closed first, the (daemon) threads have
    nothing left to do; nothing is written through this client."""
    import atexit

    try:
        from pymongo.synchronous import monitor

        atexit.unregister(monitor._shutdown_resources)
    except (ImportError, AttributeError):  # another pymongo layout: keep its own shutdown
        pass

    def close() -> None:
        if _client is not None:
            _client.close()

    atexit.register(close)


def _listed(db: Any) -> list[str]:
    """Dataset names as ``fiftyone.list_datasets()`` gives them (its query: sample collections
    named ``samples.*``; patches and frames datasets are private)."""
    return sorted(n for n in db.datasets.find({"sample_collection_name": {"$regex": r"^samples\."}}).distinct("name")
                  if n is not None)


def list_datasets(tmp_prefix: str) -> list[str]:
    return [n for n in _listed(database()) if not n.startswith(tmp_prefix)]


class Handle:
    """A dataset opened for reading: what the store's readers use of a FiftyOne dataset."""

    def __init__(self, doc: dict[str, Any], db: Any) -> None:
        self.name = doc["name"]
        self._doc = SimpleNamespace(id=doc["_id"])
        self._sample_collection = db[doc["sample_collection_name"]]
        self.default_classes = list(doc.get("default_classes") or [])
        self._fields = list(doc.get("sample_fields") or [])

    def _reload(self) -> None:  # nothing cached beyond the declarations
        pass

    reload = _reload

    def declares_detections(self, name: str) -> bool:
        """Whether sample field ``name`` is declared, as FiftyOne declares a Detections field."""
        doc = next((f for f in self._fields if f.get("name") == name), None)
        return bool(doc) and str(doc.get("ftype", "")).endswith(".EmbeddedDocumentField") \
            and doc.get("embedded_doc_type") == "fiftyone.core.labels.Detections"

    def get_field_schema(self, flat: bool = False) -> dict[str, None]:
        """The declared sample fields, keyed as FiftyOne's ``get_field_schema`` keys them (in its
        order: its defaults first, then the declared order); ``flat``: every declared path
        (``a``, ``a.b``, ...) too. The readers use the keys only."""
        names = [f["name"] for f in self._fields if not f["name"].startswith("_")]
        first = [n for n in ("id", "filepath", "tags", "metadata", "created_at", "last_modified_at") if n in names]
        out = dict.fromkeys(first + [n for n in names if n not in first])
        if flat:

            def walk(prefix: str, docs: Sequence[dict[str, Any]]) -> None:
                for f in docs:
                    if not f["name"].startswith("_"):
                        path = f"{prefix}{f['name']}"
                        out[path] = None
                        walk(path + ".", f.get("fields") or [])

            walk("", self._fields)
        return out

    def _db_path(self, path: str) -> list[str]:
        """A public path's segments as stored (``id`` -> ``_id`` where declared so)."""
        docs: Sequence[dict[str, Any]] = self._fields
        out = []
        for seg in path.split("."):
            f = next((d for d in docs if d["name"] == seg), None)
            out.append(f.get("db_field") or seg if f is not None else ("_id" if seg == "id" else seg))
            docs = (f.get("fields") or []) if f is not None else []
        return out

    def values(self, paths: Sequence[str]) -> list[list[Any]]:
        """``values()`` of several paths in one pass over the samples: lists of embedded documents
        are mapped over (``f.detections.tags`` gives one list per sample), ids come as strings."""
        segs = [self._db_path(p) for p in paths]
        # only the paths asked for (a path inside another asked for is covered by it): the rest of
        # each label (tags, attributes, ...) is never sent nor decoded
        want = sorted({".".join(s) for s in segs})
        proj = {p: 1 for p in want if not any(p.startswith(q + ".") for q in want)}
        out: list[list[Any]] = [[] for _ in paths]
        getters = [_getter(s) for s in segs]
        for doc in self._sample_collection.find({}, proj):
            for k, get in enumerate(getters):
                out[k].append(get(doc))
        return out

    def iter_columns(self, paths: Sequence[str], batch: int = 2000) -> Iterator[list[list[Any]]]:
        """:meth:`values`, ``batch`` samples at a time, for the paths a whole-dataset read asks for (plain paths, ``id``, and
        a label attribute ``field.detections.attr``), shaped by the database: one aggregation
        returns each sample's attribute as a plain list (``$map`` over the labels: a missing
        attribute is None at its place, ids are strings), so no per-label document is decoded or
        walked in Python. ``field.detections.bounding_box`` comes as an (n, 4) float64 array per
        sample, sent as four lists of numbers (a list per box costs more to decode than the rest).
        About four times faster than the find's documents on a million boxes."""
        expr: dict[str, Any] = {}
        getters = []
        for k, p in enumerate(paths):
            segs = self._db_path(p)
            key = f"c{k}"
            getters.append(lambda doc, key=key: doc.get(key))
            if segs == ["_id"]:
                expr[key] = {"$toString": "$_id"}
            elif len(segs) == 3 and p.split(".")[1] == "detections":
                labels = f"${segs[0]}.{segs[1]}"

                def each(inner: Any, labels: str = labels) -> dict[str, Any]:
                    return {"$cond": [{"$isArray": labels}, {"$map": {"input": labels, "as": "d", "in": inner}}, None]}

                if p.split(".")[2] == "bounding_box":
                    for j in range(4):
                        expr[f"{key}_{j}"] = each({"$arrayElemAt": [f"$$d.{segs[2]}", j]})
                    getters[-1] = lambda doc, key=key: _boxes([doc.get(f"{key}_{j}") for j in range(4)])
                else:
                    expr[key] = each({"$toString": f"$$d.{segs[2]}"} if segs[2] == "_id" else f"$$d.{segs[2]}")
            elif "detections" in segs or "_id" in segs[1:]:
                raise ValueError(f"iter_columns does not read {p!r}: use values")
            else:
                expr[key] = "$" + ".".join(segs)
        for docs in _prefetched(self._sample_collection.aggregate([{"$project": {"_id": 0, **expr}}]), batch):
            yield [[get(doc) for doc in docs] for get in getters]


def _prefetched(cursor: Any, batch: int) -> Iterator[list[Any]]:
    """The cursor's documents ``batch`` at a time, fetched by a thread while the caller converts
    the previous ones (the database prepares the next batch meanwhile instead of waiting for the
    request). Two batches ahead at most; an error in the thread is raised here; a caller that
    stops early stops the thread and closes the cursor."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            docs: list[Any] = []
            for doc in cursor:
                docs.append(doc)
                if len(docs) >= batch:
                    if not put(docs):
                        return
                    docs = []
            if docs and not put(docs):
                return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            put(exc)
        finally:
            cursor.close()

    thread = threading.Thread(target=fetch, name="cvcurate-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _boxes(coords: list[Any]) -> Any:
    """Four lists of coordinates (None: no labels field) as an (n, 4) float64 array."""
    if coords[0] is None:
        return None
    return np.array(coords, dtype=np.float64).T.reshape(-1, 4)


def _plain(v: Any) -> Any:
    return str(v) if type(v).__name__ == "ObjectId" else v  # bson's, without importing it per value


def _getter(segs: Sequence[str]) -> Any:
    """``doc -> _get(doc, segs)``; for a label attribute (``field.detections.attr``, most of what
    the readers ask for) one list comprehension instead of a recursive call per label."""
    if len(segs) != 3:
        return lambda doc: _get(doc, segs)
    a, b, c = segs

    def get(doc: Any) -> Any:
        x = doc.get(a)
        if not isinstance(x, dict):
            return None
        y = x.get(b)
        if not isinstance(y, list):
            return _get(y, [c]) if b in x else None
        if any(not isinstance(d, dict) for d in y):
            return [_get(d, [c]) for d in y]
        return [_plain(d[c]) if c in d else None for d in y]

    return get


def _get(doc: Any, segs: Sequence[str]) -> Any:
    if not segs:
        return _plain(doc)
    if isinstance(doc, list):
        return [_get(d, segs) for d in doc]
    if not isinstance(doc, dict):
        return None
    return _get(doc.get(segs[0]), segs[1:]) if segs[0] in doc else None


def handle_of(ds: Any) -> Handle:
    """A FiftyOne dataset's own collections read as a :class:`Handle` (the same values, without
    FiftyOne's per-label document conversion: about twice as fast on a million boxes)."""
    db = ds._sample_collection.database
    return Handle(db.datasets.find_one({"_id": ds._doc.id}), db)


def load(name: str, tmp_prefix: str) -> Handle:
    db = database()
    doc = db.datasets.find_one({"name": name, "sample_collection_name": {"$regex": r"^samples\."}})
    if doc is None:
        known = ", ".join(n for n in _listed(db) if not n.startswith(tmp_prefix)) or "none"
        raise DatasetNotFoundError(f"no dataset named {name!r} (datasets: {known})")
    return Handle(doc, db)
