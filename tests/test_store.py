"""The FiftyOne store: bulk round trips, merge and idempotence, all-or-nothing writes, and score runs
written through the store's generic run writer (``stages.score.write_score_run``)."""

from __future__ import annotations

import numpy as np
import pytest

from cvcurate import store
from cvcurate.stages import datasets
from cvcurate.stages import imports as importer
from cvcurate.stages import score_write as score_stage
from cvcurate.errors import DatasetNotFoundError
from cvcurate.types import Annotations, LabelSet
from tests import makedata as md


def sorted_records(labels):
    return sorted(labels.records, key=lambda r: r.filepath)


def test_write_read_round_trip(tmp_path, dataset_name):
    labels = md.make_labels(tmp_path / "images", n=7, split="train")
    labels.records[1].gt = Annotations([[1.5, 2.25, 30.75, 40.0], [10, 10, 10, 20]], [2, 0])  # fractional + degenerate
    result = store.write(labels, dataset_name)
    assert result.added == 7 and all(r.sample_id for r in labels.records)
    back = store.read(dataset_name)
    assert back.classes == labels.classes
    for a, b in zip(sorted_records(labels), sorted_records(back)):
        assert (a.filepath, a.width, a.height, a.split) == (b.filepath, b.width, b.height, b.split)
        assert a.gt.equals(b.gt), a.filepath
    ds = store.load(dataset_name)
    assert ds.persistent and ds.count("ground_truth.detections") == labels.num_boxes


def test_raw_documents_match_fiftyone_add_samples(tmp_path, monkeypatch, dataset_name):
    """The fast path writes exactly what FiftyOne's own add_samples writes."""
    labels = md.make_labels(tmp_path / "images", n=5, split="val")
    for r in labels.records:
        r.pred = Annotations(r.gt.xyxy + 1, r.gt.class_id, confidence=np.linspace(0.1, 0.9, len(r.gt)))
    store.write(labels, dataset_name)
    monkeypatch.setenv("CVCURATE_STORE_SAFE", "1")
    store.write(labels, dataset_name + "_safe")
    try:
        fast, safe = store.load(dataset_name), store.load(dataset_name + "_safe")
        assert fast.get_field_schema().keys() == safe.get_field_schema().keys()
        for field in ["filepath", "split", "metadata.width", "metadata.height", "ground_truth.detections.label",
                      "ground_truth.detections.bounding_box", "predictions.detections.confidence"]:
            assert fast.values(field) == safe.values(field), field
        # the App and FiftyOne's own tools read the fast documents
        assert fast.count_values("ground_truth.detections.label") == safe.count_values("ground_truth.detections.label")
        assert fast.skip(1).first().ground_truth.detections[0].label == safe.skip(1).first().ground_truth.detections[0].label
        back = store.read(dataset_name, pred_field="predictions")
        for a, b in zip(sorted_records(labels), sorted_records(back)):
            assert a.pred.equals(b.pred)
    finally:
        store.delete(dataset_name + "_safe")


def test_merge_is_idempotent_and_updates(tmp_path, dataset_name):
    md.write_voc(tmp_path, n=6)
    first = importer.import_dataset(tmp_path, dataset_name)
    assert first.write.as_dict() == {"added": 6, "updated": 0, "unchanged": 0}
    ids_before = sorted(store.load(dataset_name).values("id"))
    again = importer.import_dataset(tmp_path, dataset_name)
    assert again.write.as_dict() == {"added": 0, "updated": 0, "unchanged": 6}
    assert sorted(store.load(dataset_name).values("id")) == ids_before
    # a changed label updates that sample only, a new image is added
    from cvcurate.formats import voc

    (tmp_path / "annotations" / "img_000.xml").write_text(
        voc.to_xml_text("img_000.jpg", 64, 48, ["pit"], [(0, 0, 8, 8)]))
    md.make_image(tmp_path / "images" / "img_new.jpg")
    (tmp_path / "annotations" / "img_new.xml").write_text(voc.to_xml_text("img_new.jpg", 64, 48, ["newclass"], [(1, 1, 9, 9)]))
    third = importer.import_dataset(tmp_path, dataset_name)
    assert third.write.as_dict() == {"added": 1, "updated": 1, "unchanged": 5}
    back = store.read(dataset_name)
    assert len(back) == 7 and "newclass" in back.classes
    rec = next(r for r in back.records if r.filepath.endswith("img_000.jpg"))
    assert [back.classes[c] for c in rec.gt.class_id] == ["pit"]
    history = datasets.describe(dataset_name)["history"]
    assert len(history) == 2  # the unchanged re-import did not write


def test_failed_new_write_leaves_nothing(tmp_path, monkeypatch, dataset_name):
    labels = md.make_labels(tmp_path / "images", n=4)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.meta, "append_history", boom)
    with pytest.raises(RuntimeError):
        store.write(labels, dataset_name, history={"x": 1})
    assert not store.exists(dataset_name)
    assert not [n for n in store._fo().list_datasets() if n.startswith("_cvcurate_tmp_")]


def test_failed_merge_restores_existing(tmp_path, monkeypatch, dataset_name):
    base = md.make_labels(tmp_path / "a", n=3)
    store.write(base, dataset_name)
    before = store.read(dataset_name)
    more = md.make_labels(tmp_path / "b", n=3)
    changed = LabelSet(base.classes, [r for r in more.records])
    # one existing image with changed labels, three new images
    old = base.records[0]
    changed.records.append(type(old)(filepath=old.filepath, width=old.width, height=old.height,
                                     gt=Annotations([[0, 0, 5, 5]], [1])))
    real_update = store.io._update
    calls = {"n": 0}

    def failing_update(ds, recs, classes, gt_field):
        calls["n"] += 1
        if calls["n"] == 1:
            real_update(ds, recs, classes, gt_field)
            raise KeyboardInterrupt  # Ctrl-C halfway
        return real_update(ds, recs, classes, gt_field)

    monkeypatch.setattr(store.io, "_update", failing_update)
    with pytest.raises(KeyboardInterrupt):
        store.write(changed, dataset_name, history={"x": 1})
    after = store.read(dataset_name)
    assert len(after) == 3
    for a, b in zip(sorted_records(before), sorted_records(after)):
        assert a.filepath == b.filepath and a.gt.equals(b.gt)


def test_overwrite_replaces(tmp_path, dataset_name):
    store.write(md.make_labels(tmp_path / "a", n=3), dataset_name)
    store.write(md.make_labels(tmp_path / "b", n=2), dataset_name, overwrite=True)
    assert len(store.read(dataset_name)) == 2


def test_write_detections_bulk(tmp_path, dataset_name):
    labels = md.make_labels(tmp_path / "images", n=4)
    store.write(labels, dataset_name)
    recs = store.read(dataset_name).records
    preds = [Annotations(r.gt.xyxy, r.gt.class_id, confidence=np.full(len(r.gt), 0.5)) for r in recs]
    store.write_detections(dataset_name, "predictions", recs, preds, labels.classes)
    back = store.read(dataset_name, pred_field="predictions")
    for r, p in zip(back.records, preds):
        assert r.pred.equals(p)


def test_describe_counts_images_boxes_splits_and_sizes(tmp_path, dataset_name):
    md.write_yolo(tmp_path, n=9)
    importer.import_dataset(tmp_path, dataset_name)
    info = datasets.describe(dataset_name)
    assert info["images"] == 9 and info["boxes"] == 9
    assert info["images_per_split"] == {"train": 6, "val": 3}
    assert sum(info["boxes_per_class_and_split"]["train"].values()) == 6
    assert info["boxes_per_image"]["images_without_boxes"] == 3
    assert info["box_size"]["crack"]["count"] == 3


def test_missing_dataset_is_a_clear_error():
    with pytest.raises(DatasetNotFoundError, match="no dataset named 'does_not_exist'"):
        store.read("does_not_exist")


def _score_rows(records, seed, drop_samples=0, short_box=False):
    """``SampleScores`` rows for stored records: scores, queue scores, issues, box scores, and fixes of two
    actions: ``remove`` (its target a box id) and ``add`` (no target)."""
    from cvcurate.types import Fix

    rng = np.random.default_rng(seed)
    rows = []
    for k, r in enumerate(sorted(records, key=lambda r: r.filepath)[drop_samples:]):
        n = len(r.gt) - (1 if short_box and k == 0 and len(r.gt) else 0)
        fixes = []
        if len(r.gt) and k % 2:
            fixes.append(Fix("remove", "duplicate", r.gt.xyxy[0], int(r.gt.class_id[0]), 0.7, "dup",
                             target=str(r.gt.data["id"][0])))
        if k % 3 == 0:
            fixes.append(Fix("add", "overlooked", [1, 2, 11, 12.5], 1, float(rng.random()), "missed"))
        rows.append(score_stage.SampleScores(
            sample_id=r.sample_id, score=float(rng.random()),
            queue_scores={"q1": float(rng.random())} if k % 2 else {"q2": 0.5},
            issues=[f"issue {seed} {k}"] * (k % 3), box_scores=[float(v) for v in rng.random(n)],
            box_issues=[f"t{seed}" if j % 2 else "" for j in range(n)], fixes=fixes))
    return rows


def _stored_state(name):
    ds = store.load(name)

    def clean(v):
        if isinstance(v, dict):
            return {k: "ID" if k == "cvc_target" and x else clean(x) for k, x in v.items()
                    if k not in ("_id", "last_modified_at", "created_at", "_dataset_id", "_rand")}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    docs = {d["filepath"]: clean(d) for d in ds._sample_collection.find({})}
    schema = [(k, type(v).__name__) for k, v in ds.get_field_schema(flat=True).items()]
    views = {v: ds.load_saved_view(v).values("filepath") for v in ds.list_saved_views()}
    return docs, schema, views, store.get_runs(name)


def test_rescoring_equals_deleting_the_run_and_writing(tmp_path, monkeypatch, dataset_name):
    """``write_score_run`` over a previous score run (its fields rewritten in place, or deleted first
    when the queues changed or a field was added after the run's) leaves exactly what deleting the
    run (``store.delete_run``) and writing anew leaves."""
    import fiftyone as fo

    deleted = []
    real_delete = fo.Dataset.delete_sample_fields
    monkeypatch.setattr(fo.Dataset, "delete_sample_fields",
                        lambda self, *a, **k: (deleted.append(self.name), real_delete(self, *a, **k))[1])
    labels = md.make_labels(tmp_path / "images", n=12, split="train")
    ref = dataset_name + "_ref"
    store.write(labels, dataset_name)
    store.write(labels, ref)
    try:
        recs = {n: store.read(n).records for n in (dataset_name, ref)}
        steps = [  # (rows kwargs, queues, add a field before)
            ({"seed": 0}, ["q1", "q2"], False),
            ({"seed": 1, "drop_samples": 2, "short_box": True}, ["q1", "q2"], False),  # in place
            ({"seed": 2}, ["q1", "q2"], False),  # in place, the dropped samples come back
            ({"seed": 3}, ["q1", "q3"], False),  # queues changed: deleted, then written
            ({"seed": 4}, ["q1", "q3"], True),  # a field added after the run's: deleted, then written
        ]
        for kw, queues, add_field in steps:
            deleted.clear()
            for n in (dataset_name, ref):
                if add_field:
                    store.load(n).add_sample_field(f"extra_{kw['seed']}", fo.StringField)
                if n == ref:
                    store.delete_run(n, "score")
                score_stage.write_score_run(n, _score_rows(recs[n], **kw), queues, labels.classes, {"step": kw["seed"]},
                                   pred_filter=None)
            (d1, s1, v1, r1), (d2, s2, v2, r2) = _stored_state(dataset_name), _stored_state(ref)
            # the order of fields FiftyOne discovers itself (metadata.width/height) is not ours:
            # it differed between two runs of this test
            assert (d1, sorted(s1), v1, r1) == (d2, sorted(s2), v2, r2), kw
            assert (dataset_name in deleted) == (kw["seed"] >= 3), kw  # replaced in place before
        _, schema, _, runs = _stored_state(dataset_name)
        names = [k for k, _ in schema]
        assert not [n for n in names if n.startswith("ground_truth.detections.cvc_")]  # nothing in the labels
        assert "cvc_fixes.detections.cvc_target" in names and "metadata.width" in names
        assert list(runs) == ["score"] and runs["score"]["views"] == ["cvc-all", "cvc-all-all", "cvc-q1", "cvc-q3",
                                                                       "cvc-q1-all", "cvc-q3-all"]
    finally:
        if store.exists(ref):
            store.delete(ref)


def test_write_score_run_with_an_unknown_sample_changes_nothing(tmp_path, dataset_name):
    import dataclasses

    labels = md.make_labels(tmp_path / "images", n=6, split="train")
    store.write(labels, dataset_name)
    recs = store.read(dataset_name).records
    score_stage.write_score_run(dataset_name, _score_rows(recs, 0), ["q1", "q2"], labels.classes, {"step": 0})
    before = _stored_state(dataset_name)
    rows = _score_rows(recs, 1)
    rows[-1] = dataclasses.replace(rows[-1], sample_id="0123456789abcdef01234567")
    with pytest.raises(KeyError, match="1 score row"):
        score_stage.write_score_run(dataset_name, rows, ["q1", "q3"], labels.classes, {"step": 1})
    assert _stored_state(dataset_name) == before


def test_queue_views_break_score_ties_by_file(tmp_path, dataset_name):
    """Equal scores come in file order, so the App and scripts see one order (the browser test
    once saw another tile first)."""
    import dataclasses

    labels = md.make_labels(tmp_path / "images", n=6, split="train")
    labels.records.sort(key=lambda r: r.filepath, reverse=True)  # stored in reverse file order
    store.write(labels, dataset_name)
    recs = store.read(dataset_name).records
    rows = [dataclasses.replace(r, score=0.5, queue_scores={"q1": 0.5}) for r in _score_rows(recs, 0)]
    score_stage.write_score_run(dataset_name, rows, ["q1"], labels.classes, {"step": 0})
    ds = store.load(dataset_name)
    for view in ("cvc-all", "cvc-q1"):
        paths = ds.load_saved_view(view).values("filepath")
        assert paths == sorted(r.filepath for r in recs), view


def test_object_ids_made_in_bulk_are_unique_and_well_formed():
    """The label ids a bulk write makes (one numpy pass, not bson's per-id lock): 12-byte
    ObjectIds of this second, all different, also across the counter's 2^24 wrap (a new random
    value is drawn) and from one call to the next."""
    import time

    from bson import ObjectId

    from cvcurate.store import convert

    def new_ids(n):
        raw = convert.new_object_id_bytes(n)
        assert raw.shape == (n, 12) and raw.dtype == np.uint8
        return [ObjectId(row.tobytes()) for row in raw]

    new_ids(1)
    convert._ID_STATE["counter"] = (1 << 24) - 5  # the counter about to wrap
    first = new_ids(10)
    more = new_ids(1000)
    ids = first + more
    assert all(isinstance(i, ObjectId) for i in ids) and len(set(ids)) == len(ids) == 1010
    assert abs(ids[0].generation_time.timestamp() - time.time()) < 5
    assert first[4].binary[4:9] != first[5].binary[4:9]  # the wrap drew a new random value
    assert ObjectId(str(more[-1])) == more[-1]
