"""The score run's typed record: written with the dataset, read back as types by every stage, one
count per run (score, review, gate, report), exact p, an older run asks for a new score, and the
record goes with its dataset."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from cvcurate.stages import gate as gate_stage
from cvcurate.stages import review
from cvcurate.stages.score import run_score
from cvcurate.types import RUN_SCHEMA, RunRecord
from tests.test_review import scored_dataset

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_record_holds_every_issue_exactly_as_scored(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    rec = store.read_record(dataset_name, "score")
    assert isinstance(rec, RunRecord) and rec.schema == RUN_SCHEMA and rec.version
    doc = json.loads((tmp_path / "scores" / "scores.json").read_text())  # the export, rounded to 6 places
    assert len(rec.issues) == len(doc["issues"]) == rec.summary["issues"] > 0
    by_id = {i.data["id"]: i for i in rec.issues}
    assert len(by_id) == len(rec.issues)  # every issue has its own id
    for d in doc["issues"]:
        i = by_id[d["id"]]
        assert (i.type, i.box, i.sample_id, i.reason) == (d["type"], d["box"], d["sample_id"], d["reason"])
        assert abs(i.score - d["score"]) <= 5e-7
    assert rec.pred_field == "predictions" and rec.queue_min_p == doc["queue_min_p"]
    from cvcurate.types import RUN_SUMMARY_KEYS  # the record splits the run by the keys run_summary makes

    assert set(rec.summary) == set(RUN_SUMMARY_KEYS) and not set(rec.info) & set(RUN_SUMMARY_KEYS)
    assert len(rec.flagged()) == rec.summary["flagged"] == doc["flagged"]
    # without the files the score wrote, every reader still has the run
    (tmp_path / "scores" / "scores.json").unlink()
    (tmp_path / "scores" / "issues.csv").unlink()
    again = store.read_record(dataset_name, "score")
    assert [(i.data["id"], i.score, i.box) for i in again.issues] == [(i.data["id"], i.score, i.box) for i in rec.issues]


def test_one_count_per_run_in_score_review_gate_and_report(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    rec = store.read_record(dataset_name, "score")
    flagged_images = rec.summary["flagged_images"]
    assert flagged_images == len({i.sample_id for i in rec.flagged()}) > 0
    # the review overview's "all" queue: the images with an issue at p >= the threshold
    sizes = {q.queue: q for q in review.overview(dataset_name)}
    assert sizes["all"].samples == flagged_images
    assert sizes["all"].flagged == rec.summary["flagged"]
    # review --summary: each queue's samples are those its view holds
    for p in review.summary(dataset_name):
        assert p.samples == sizes[p.queue].samples, p.queue
    # the gate counts the same images, from the exact p
    res = gate_stage.run_gate(dataset_name)
    check = {c.name: c for c in res.checks}["images_with_issues"]
    assert check.message.startswith(f"{flagged_images} of ")
    # the report too
    r = run("report", dataset_name, "--out", tmp_path / "rep", "--no-pixels")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "rep" / "report.json").read_text())["summary"]
    assert summary["flagged"] == rec.summary["flagged"]


def test_the_gate_reads_exact_p_not_rounded_text(tmp_path, dataset_name):
    """An issue at p 0.4951 is below a 0.5 threshold; its text says "(0.50)". The gate counts it out."""
    scored_dataset(tmp_path, dataset_name)
    rec = store.read_record(dataset_name, "score")
    blob = store.get_runs(dataset_name)["score"]["record"]
    doc = store.journal.get_blob(dataset_name, blob)
    ps = doc["issues"]["p"]
    # every issue just under the threshold: no image has one at p >= 0.5
    doc["issues"]["p"] = [0.4951 for _ in ps]
    store.journal.put_blob(dataset_name, blob, doc)
    res = gate_stage.run_gate(dataset_name)
    check = {c.name: c for c in res.checks}["images_with_issues"]
    assert check.value == 0.0 and check.message.startswith("0 of "), check.message
    assert rec.queue_min_p == 0.5


def test_an_older_run_says_score_again_in_one_line(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    runs = store.get_runs(dataset_name)
    old = {k: v for k, v in runs["score"].items() if k not in ("record", "schema", "version")}
    store.meta.set_run(dataset_name, "score", old)  # as a run of an older cvcurate is registered
    with pytest.raises(Exception, match="score .* again"):
        store.read_record(dataset_name, "score")
    for args in (["gate", dataset_name], ["review", dataset_name, "--summary"], ["review", dataset_name],
                 ["report", dataset_name, "--out", tmp_path / "rep", "--no-pixels"]):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert f"run 'cvcurate score {dataset_name}' again" in r.output and "Traceback" not in r.output, r.output


def test_records_go_with_rescores_and_with_the_dataset(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    first = store.get_runs(dataset_name)["score"]["record"]
    run_score(dataset_name, pred_field="predictions", pixels=False, out_dir=tmp_path / "scores2")
    second = store.get_runs(dataset_name)["score"]["record"]
    assert second != first
    assert store.journal.get_blob(dataset_name, first) is None  # the earlier run's issues are gone
    assert store.journal.get_blob(dataset_name, second) is not None
    ds = store.load(dataset_name)
    db, did = ds._sample_collection.database, str(ds._doc.id)
    assert db[store.journal.BLOBS].count_documents({"key": {"$regex": f"^run:{did}:"}}) >= 1
    store.delete(dataset_name)
    assert db[store.journal.BLOBS].count_documents({"key": {"$regex": f"^run:{did}:"}}) == 0


def test_the_gate_takes_the_pixel_checks_from_the_run_and_reads_no_image(tmp_path, dataset_name, monkeypatch):
    from cvcurate.stages.score import mark_augmented

    import shutil

    scored_dataset(tmp_path, dataset_name)
    recs = store.read(dataset_name).records
    shutil.copyfile(recs[0].filepath, recs[1].filepath)  # a duplicate image: a pixel issue
    run_score(dataset_name, pred_field="predictions", pixels=True, out_dir=tmp_path / "s2")
    labels = store.read(dataset_name)
    mark_augmented(dataset_name, labels)
    rec = store.read_record(dataset_name, "score")
    fresh, unreadable = gate_stage._fresh_issues(labels, False, None)  # the pixels read now
    assert any(i.type in gate_stage.PIXEL_TYPES for i in rec.issues)
    key = lambda issues: sorted((i.filepath, i.type, round(i.score, 9), i.box) for i in issues)  # noqa: E731

    def no_pixels(*a, **k):
        raise AssertionError("the gate read the images")

    monkeypatch.setattr(gate_stage, "image_features", no_pixels)
    kept, unreadable2 = gate_stage._fresh_issues(labels, False, rec)
    assert key(kept) == key(fresh) and unreadable2 == unreadable
    assert gate_stage.run_gate(dataset_name).status in ("pass", "warn", "fail")
    # an image more than the run saw (an import or augment since): the pixels are read again
    fewer = type(labels)(labels.classes, labels.records[:-1])
    with pytest.raises(AssertionError, match="read the images"):
        gate_stage._fresh_issues(fewer, False, rec)


def test_the_export_manifest_names_the_last_score_run(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    rec = store.read_record(dataset_name, "score", issues=False)
    r = run("export", dataset_name, "--format", "coco", "--out", tmp_path / "ex")
    assert r.exit_code == 0, r.output
    score = json.loads((tmp_path / "ex" / "manifest.json").read_text())["lineage"]["score"]
    assert score["at"] == rec.at and score["pred_field"] == "predictions" and score["schema"] == RUN_SCHEMA
    assert score["flagged_images"] == rec.summary["flagged_images"] > 0
    assert score["expected_label_errors"] == rec.summary["expected_label_errors"]
