"""Reads without FiftyOne (store.direct): every reader gives the same result through pymongo as
through FiftyOne on the same dataset, which pins the document layout it relies on against the
installed FiftyOne; the read-only commands never import FiftyOne when a database URI is given."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cvcurate import store
from cvcurate.stages import datasets as datasets_stage
from cvcurate.stages import review
from cvcurate.names import FIX_FIELD, SUSPECTS_FIELD, queue_field
from cvcurate.store import direct
from tests import makedata as md
from tests.conftest import REPO
from tests.test_review import scored_dataset


@pytest.fixture
def both_ways():
    """Call ``f`` once through FiftyOne and once through pymongo; return both results."""
    def call(f, *args, **kw):
        try:
            direct.FORCE = False
            via_fo = f(*args, **kw)
            direct.FORCE = True
            via_db = f(*args, **kw)
        finally:
            direct.FORCE = None
        return via_fo, via_db
    return call


def _labels_equal(a, b):
    assert a.classes == b.classes and len(a.records) == len(b.records)
    for x, y in zip(a.records, b.records):
        assert (x.filepath, x.width, x.height, x.split, x.sample_id) == (y.filepath, y.width, y.height, y.split,
                                                                        y.sample_id)
        np.testing.assert_array_equal(x.gt.xyxy, y.gt.xyxy)
        np.testing.assert_array_equal(x.gt.class_id, y.gt.class_id)
        assert list(x.gt.data["id"]) == list(y.gt.data["id"])
        if x.pred is not None or y.pred is not None:
            np.testing.assert_array_equal(x.pred.xyxy, y.pred.xyxy)
            np.testing.assert_array_equal(x.pred.confidence, y.pred.confidence)


def test_every_reader_agrees_with_fiftyone(tmp_path, dataset_name, both_ways):
    scored_dataset(tmp_path, dataset_name)
    store.tag_samples(dataset_name, [store.read(dataset_name).records[0].sample_id], "error:confirmed")
    a, b = both_ways(store.list_datasets)
    assert a == b and dataset_name in b
    a, b = both_ways(store.field_names, dataset_name)
    assert a == b and {FIX_FIELD, SUSPECTS_FIELD, "predictions", "ground_truth", "id", "tags"} <= set(b)
    _labels_equal(*both_ways(store.read, dataset_name))
    _labels_equal(*both_ways(store.read, dataset_name, pred_field="predictions"))
    # the whole-dataset read (one aggregation, part by part) against FiftyOne's own values()
    # through a view of every sample; a label without a confidence reads as NaN both ways
    from cvcurate.store import io as store_io

    ds = store.load(dataset_name)
    sid = store.read(dataset_name).records[1].sample_id
    ds._sample_collection.update_one({"_id": __import__("bson").ObjectId(sid)},
                                     {"$unset": {"predictions.detections.0.confidence": 1}})
    old_part, store_io._READ_PART = store_io._READ_PART, 7  # several parts
    try:
        for pred in (None, "predictions"):
            via_db = store.read(dataset_name, pred_field=pred)
            _labels_equal(via_db, store.read(dataset_name, pred_field=pred, view=ds.view()))
    finally:
        store_io._READ_PART = old_part
    assert np.isnan(via_db.records[1].pred.confidence[0]) and len(via_db.records) > 7
    paths = ["tags", "filepath", "metadata.width", queue_field("swap"), f"{FIX_FIELD}.detections.tags",
             f"{FIX_FIELD}.detections.cvc_type", f"{SUSPECTS_FIELD}.detections.id", "ground_truth.detections.label"]
    a, b = both_ways(store.sample_info, dataset_name, paths)
    assert a == b
    assert any(b[f"{FIX_FIELD}.detections.tags"]) and "error:confirmed" in b["tags"][0]
    a, b = both_ways(store.sample_values, dataset_name, paths + ["no_such_field", "ground_truth.detections.nothing"])
    assert a == b
    a, b = both_ways(store.get_detections, dataset_name, FIX_FIELD)
    assert a == b and sum(map(len, b.values())) > 0
    a, b = both_ways(store.get_runs, dataset_name)
    assert a == b and "score" in b
    a, b = both_ways(store.get_history, dataset_name)
    assert a == b
    a, b = both_ways(store.counts, dataset_name)
    assert a == b == (len(store.read(dataset_name).records), store.read(dataset_name).num_boxes)
    a, b = both_ways(store.read_record, dataset_name, "score")
    assert [(i.data["id"], i.score) for i in a.issues] == [(i.data["id"], i.score) for i in b.issues]
    a, b = both_ways(datasets_stage.describe, dataset_name)
    assert a == b
    a, b = both_ways(review.summary, dataset_name)
    assert a == b
    a, b = both_ways(store.journal.pending, dataset_name)
    assert a == b
    a, b = both_ways(store.lock_holder, dataset_name)
    assert a == b


def test_an_unknown_dataset_is_the_same_error_both_ways(tmp_path, dataset_name):
    from cvcurate.errors import DatasetNotFoundError

    store.write(md.make_labels(tmp_path / "images", n=2), dataset_name)
    for force in (False, True):
        direct.FORCE = force
        try:
            with pytest.raises(DatasetNotFoundError, match=f"no dataset named 'nope-x' \\(datasets: .*{dataset_name}"):
                store.field_names("nope-x")
        finally:
            direct.FORCE = None


_PROBE = """
import sys
from cvcurate.cli import main
sys.argv = ["cvcurate", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("FIFTYONE-IMPORTED" if "fiftyone" in sys.modules else "FIFTYONE-NOT-IMPORTED")
sys.exit(code)
"""


def test_read_only_commands_do_not_import_fiftyone(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    assert env.get("FIFTYONE_DATABASE_URI")
    for args, expect in ((["datasets"], f"{dataset_name}: 40 images"),
                         (["info", dataset_name], f"{dataset_name}: 40 images"),
                         (["review", dataset_name, "--summary"], "review progress of")):
        r = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert expect in r.stdout, r.stdout
        assert "FIFTYONE-NOT-IMPORTED" in r.stdout, r.stdout
    # "datasets" lists the last score run
    r = subprocess.run([sys.executable, "-c", _PROBE, "datasets"], env=env, capture_output=True, text=True, timeout=120)
    rec = store.read_record(dataset_name, "score", issues=False)
    assert f"last score {rec.at}: {rec.summary['flagged_images']} image(s) with an issue" in r.stdout, r.stdout
