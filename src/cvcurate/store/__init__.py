"""The persistent store: FiftyOne datasets. The only package that imports fiftyone.

It converts and moves data in bulk and knows nothing of what the stages mean: a stage that writes
fields declares them (:class:`~cvcurate.store.runs.RunSpec`), the store writes and registers them.

* :mod:`._core`     importing fiftyone, listing / loading / deleting datasets
* :mod:`.convert`   xyxy pixels <-> FiftyOne's relative boxes; raw sample and label documents
* :mod:`.io`        all-or-nothing writes and merges, bulk reads, detections fields, raw labels
* :mod:`.meta`      the dataset's ``info["cvcurate"]``: history, runs, change sets (one helper,
                    compare-and-set on a version); concurrency on a shared database: a lock per
                    dataset, guarded (compare-and-set) sample writes, atomic label tags
* :mod:`.runs`      the generic run writer (fields, box attributes, saved views) and its removal
* :mod:`.app`       the FiftyOne App and saved views
* :mod:`.journal`   the writers' intent records (write-ahead journal) and chunked payloads
* :mod:`.records`   a run's typed record (:class:`~cvcurate.types.RunRecord`): its issues kept with the dataset
* :mod:`.database`  where the database is, what losing it becomes (:func:`lost_database`), and a
                    private MongoDB for tests and benchmarks (by URI, never the user's)
"""

from __future__ import annotations

from ._core import (GT_FIELD, INFO_KEY, PRED_FIELD, _TMP_PREFIX, _fo, shielded, delete, exists, field_names,
                    get_classes, list_datasets, load)
from .app import configure_app, count_view, launch_app, list_saved_views
from .convert import rel_xywh_to_xyxy, xyxy_to_rel_xywh
from .database import boundary, database_location, lost_database, private_database, start_private_database
from .io import (WriteResult, counts, delete_samples, delete_samples_by_path, get_detections, read, sample_info, sample_values, set_detections,
                 set_dict_field, set_field, tag_samples, write, write_detections)
from ..errors import DatasetBusyError
from .meta import (DatasetLock, GuardedWrite, append_history, dataset_lock, forget_change,
                   adopted_styles, get_changes, get_conventions, get_history, get_runs, guarded_write, lock_holder,
                   read_lock, record_change, set_convention, tag_labels)
from .runs import RunBox, RunRow, RunSpec, ViewSpec, delete_run, register_run, rewrite_rows, write_run
from . import journal
from .records import drop_old_records, put_record, read_record
from .meta import load_change_body, save_change_body, forget_change_body


def new_id() -> str:
    """A fresh label id (a box a fix adds gets it before it is written, so the journal knows it)."""
    from bson import ObjectId

    return str(ObjectId())

__all__ = [
    "DatasetBusyError", "DatasetLock", "GuardedWrite", "dataset_lock", "guarded_write", "lock_holder", "read_lock", "tag_labels",
    "append_history", "GT_FIELD", "INFO_KEY", "PRED_FIELD", "_TMP_PREFIX", "_fo", "shielded", "RunBox", "RunRow", "RunSpec", "ViewSpec", "WriteResult", "delete",
    "configure_app", "count_view", "database_location", "lost_database", "delete_run", "delete_samples", "set_dict_field", "tag_samples", "exists", "field_names", "forget_change", "get_changes", "get_classes", "get_detections",
    "get_history", "get_runs", "launch_app", "list_datasets", "list_saved_views", "load", "private_database",
    "read", "record_change", "rel_xywh_to_xyxy", "sample_info", "sample_values", "set_detections",
    "start_private_database", "write", "write_detections", "write_run", "xyxy_to_rel_xywh",
    "delete_samples_by_path", "journal", "load_change_body", "save_change_body", "forget_change_body", "new_id", "register_run",
    "rewrite_rows", "counts", "drop_old_records", "put_record", "read_record", "set_field",
    "get_conventions", "set_convention", "adopted_styles",
]

# The boundary: every function the store exports, and the journal's, raises a lost database as
# StoreError (database.boundary); the callers above never see pymongo. Internal calls between the
# store's modules stay direct (they are inside). tests/test_faults.py checks that all are wrapped.
for _name in __all__:
    _obj = globals()[_name]
    if callable(_obj) and not isinstance(_obj, type) and _obj is not lost_database:
        globals()[_name] = boundary(_obj)
for _name in journal.__all__:
    setattr(journal, _name, boundary(getattr(journal, _name)))
del _name, _obj
