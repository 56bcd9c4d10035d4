"""cvcurate report through the CLI: from the store, with and without a score run and predictions;
the gate's Markdown embeds the slice table."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from tests import makedata as md
from tests.test_review import scored_dataset

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_report_of_a_scored_dataset_with_predictions(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    r = run("report", dataset_name, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "rep" / "report.html").read_text()
    assert not re.search(r"https?://", html)
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["top_slices"] and doc["evaluation"] is not None and doc["top_issues"]
    kinds = {s["kind"] for s in doc["top_slices"]} | {k for k in doc["slices"]["kinds"]}
    assert {"class", "box_size", "brightness", "split", "source"} <= kinds
    # every issue of the run is counted: the overall count equals the run's label issues with p at
    # least the queue threshold (the run's "flagged"), its expected count the sum of p of all of them
    from cvcurate.analysis.slices import is_label_issue
    from cvcurate.scoring import QUEUES

    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    queue_of = {t: q for q, types in QUEUES.items() for t in types}
    label = [i for i in scores["issues"] if is_label_issue(i["type"], queue_of)]
    flagged = [i for i in label if i["score"] >= scores["queue_min_p"]]
    overall = doc["slices"]["overall"]
    assert 0 < overall["issues"] == len(flagged) == scores["flagged"] < len(scores["issues"])
    assert overall["images_with_issues"] == len({i["sample_id"] for i in flagged}) == scores["flagged_images"]
    by_type = {}
    for i in flagged:
        by_type[i["type"]] = by_type.get(i["type"], 0) + 1
    assert overall["by_type"] == by_type
    # its expected errors are the run's (and the gate's): label errors only, split pieces once
    assert overall["expected"] == pytest.approx(scores["expected_label_errors"], abs=1e-3)
    assert overall["expected"] < sum(i["score"] for i in label)  # remarks (size outliers, style) add nothing
    # the gate on this data: the corruption's degenerate and out-of-image boxes fail invalid_boxes,
    # and the run's expected label errors (~0.28 per box) fail label_error_rate: exit 1
    r = run("gate", dataset_name, "--markdown", tmp_path / "g.md", "--json", tmp_path / "g.json")
    assert r.exit_code == 1 and "gate FAIL" in r.output, r.output
    checks = {c["name"]: c for c in json.loads((tmp_path / "g.json").read_text())["checks"]}
    assert sorted(n for n, c in checks.items() if c["status"] == "fail") == ["invalid_boxes", "label_error_rate"]
    assert checks["invalid_boxes"]["value"] == pytest.approx(4 / 49, abs=1e-6)  # 3 degenerate, 1 outside
    assert "Where the labels are worst" in (tmp_path / "g.md").read_text()


def test_report_is_relocatable_and_plans_the_augmentation(tmp_path, dataset_name):
    """A report moved to another folder (or machine) still shows everything: no absolute path in
    report.html / .md / .json (images embedded, thumbnails and plots relative, each image shown
    below its import folder's name), every file the Markdown links exists next to it; the class
    balance says what the augment stage would add (no stale "not available" text)."""
    import shutil

    scored_dataset(tmp_path, dataset_name)
    store.append_history(dataset_name, {"action": "import", "source": str(tmp_path / "images")})  # as an import records it
    r = run("report", dataset_name, "--out", tmp_path / "rep", "--no-pixels")
    assert r.exit_code == 0, r.output
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(str(tmp_path / "rep"), moved)
    try:
        texts = {f: (moved / f).read_text() for f in ("report.html", "report.md", "report.json")}
        for f, text in texts.items():
            assert str(tmp_path) not in text, f  # the data's folder, absolute
            assert "not available yet" not in text, f
        for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", texts["report.md"]):
            assert not link.startswith("/") and (moved / link).is_file(), link
        assert 'src="data:image/' in texts["report.html"]
        doc = json.loads(texts["report.json"])
        assert doc["top_issues"] and all(t["image"].startswith("images/") for t in doc["top_issues"])
        aug = doc["class_balance"]["augment"]
        assert "would add" in aug and "cvcurate augment" in aug
        assert sum(c["augment_instances"] for c in doc["class_balance"]["classes"]) > 0
    finally:
        shutil.rmtree(moved, ignore_errors=True)


def test_report_without_score_or_predictions_says_what_it_left_out(tmp_path, dataset_name):
    store.write(md.make_labels(tmp_path / "i", n=8), dataset_name)
    r = run("report", dataset_name, "--out", tmp_path / "rep", "--no-pixels")
    assert r.exit_code == 0, r.output
    assert "left out:" in r.output and "never scored" in r.output and "no predictions" in r.output
    assert (tmp_path / "rep" / "report.md").is_file()
    r = run("report", dataset_name, "--out", tmp_path / "rep2", "--pred-field", "nope")
    assert r.exit_code == 2 and "has no field 'nope'" in r.output
