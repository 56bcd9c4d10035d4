"""cvcurate report through the CLI: from the store, with and without a score run and predictions;
the gate's Markdown embeds the slice table."""

from __future__ import annotations

import json
import re

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
    # every issue of the run is counted: the overall count is the run's label issues
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert doc["slices"]["overall"]["issues"] <= len(scores["issues"])
    r = run("gate", dataset_name, "--markdown", tmp_path / "g.md")
    assert r.exit_code in (0, 1), r.output
    assert "Where the labels are worst" in (tmp_path / "g.md").read_text()


def test_report_without_score_or_predictions_says_what_it_left_out(tmp_path, dataset_name):
    store.write(md.make_labels(tmp_path / "i", n=8), dataset_name)
    r = run("report", dataset_name, "--out", tmp_path / "rep", "--no-pixels")
    assert r.exit_code == 0, r.output
    assert "left out:" in r.output and "never scored" in r.output and "no predictions" in r.output
    assert (tmp_path / "rep" / "report.md").is_file()
    r = run("report", dataset_name, "--out", tmp_path / "rep2", "--pred-field", "nope")
    assert r.exit_code == 2 and "has no field 'nope'" in r.output
