"""Labeling conventions: how each class is boxed (whole or in pieces, nested, margins), from a known
mix of styles; the command's report; the score run's note and the gate's warning for a mixed class."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from cvcurate.scoring.conventions import find_conventions
from cvcurate.types import Annotations, ImageRecord, LabelSet
from tests import makedata as md

runner = CliRunner()
W = H = 256


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def styled(n: int, pieces_share: float, seed: int = 0, folder=None, loose: bool = False):
    """``n`` images: class 'pit' has one defect region the model sees, boxed whole or in 3 vertical
    strips (a known share of the images); class 'scratch' is always boxed whole. Returns the labels
    and the model's predictions (one box per region)."""
    rng = np.random.default_rng(seed)
    n_pieces = int(round(pieces_share * n))
    recs, preds = [], []
    for i in range(n):
        x, y = rng.uniform(10, 100, 2)
        w, h = rng.uniform(50, 90, 2)
        region = [x, y, x + w, y + h]
        x2, y2 = rng.uniform(0, 60, 2)
        other = [x2 + 130, y2 + 130, x2 + 180, y2 + 170]
        if i < n_pieces:
            xs = np.linspace(x, x + w, 4)
            gt = [[xs[j] + 1, y, xs[j + 1] - 1, y + h] for j in range(3)]
        else:
            gt = [region]
        cls = [0] * len(gt)
        if loose:
            pad = 0.1 * np.array([-w, -h, w, h])
            gt = [list(np.array(gt[0]) + pad)] if i >= n_pieces else gt
        gt.append(other)
        cls.append(1)
        path = f"/nowhere/{i}.png" if folder is None else str(md.make_image(folder / f"s{i:03d}.png", W, H, seed=i))
        recs.append(ImageRecord(path, W, H, Annotations(np.array(gt, float), np.array(cls))))
        pb = np.array([region, other], float) + rng.normal(0, 1.0, (2, 4))
        preds.append(Annotations(pb, np.array([0, 1]), np.array([0.9, 0.85])))
    order = rng.permutation(n)  # styles interleaved, not in blocks
    return (LabelSet(["pit", "scratch"], [recs[i] for i in order]), [preds[i] for i in order])


@pytest.mark.parametrize("share", [0.5, 0.3])
def test_a_known_mix_of_styles_is_found_with_its_shares(share):
    labels, preds = styled(60, share, seed=1)
    conv = find_conventions(labels, preds)
    pit, scratch = conv.classes
    assert pit.judged >= 57  # the model sees every region
    assert abs(pit.share("pieces") - share) <= 0.05 and abs(pit.share("whole") - (1 - share)) <= 0.05
    assert pit.mixed and [c.name for c in conv.mixed] == ["pit"]
    assert pit.majority == ("whole" if share < 0.5 else None)
    assert scratch.share("whole") == 1.0 and not scratch.mixed and scratch.majority == "whole"
    # examples of each style really are of that style
    for i in pit.examples["pieces"]:
        assert (labels.records[i].gt.class_id == 0).sum() == 3
    for i in pit.examples["whole"]:
        assert (labels.records[i].gt.class_id == 0).sum() == 1


def test_one_style_is_not_mixed_and_margins_and_nesting_are_counted():
    labels, preds = styled(40, 0.1, seed=2, loose=True)
    pit = find_conventions(labels, preds).classes[0]
    assert not pit.mixed and pit.majority == "whole"
    assert pit.loose >= 30 and pit.tight == 0 and pit.margin == "loose"  # whole boxes 20 % wider than the model's
    assert pit.nested == 0
    rec = labels.records[0]
    big = [0, 0, 200, 200]
    rec.gt = Annotations(np.vstack([rec.gt.xyxy, [big, [10, 10, 50, 50]]]), np.r_[rec.gt.class_id, [1, 1]])
    assert find_conventions(labels, preds).classes[1].nested == 1


def test_no_predictions_judges_nothing():
    labels, preds = styled(10, 0.5)
    conv = find_conventions(labels, [Annotations.empty(with_confidence=True) for _ in preds])
    assert all(c.judged == 0 and not c.mixed for c in conv.classes)


def _stored(tmp_path, name, share):
    labels, preds = styled(40, share, seed=3, folder=tmp_path / "images")
    store.write(labels, name)
    back = store.read(name)
    by = {r.filepath: p for r, p in zip(labels.records, preds)}
    store.write_detections(name, "predictions", back.records, [by[r.filepath] for r in back.records], labels.classes)
    return labels


def test_command_writes_the_report_and_refuses_without_predictions(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.5)
    out = tmp_path / "conv"
    r = run("conventions", dataset_name, "--out", out)
    assert r.exit_code == 0, r.output
    assert "'pit': whole in" in r.output and "MIXED" in r.output and "1 class(es) boxed both ways" in r.output
    doc = json.loads((out / "conventions.json").read_text())
    pit = doc["classes"][0]
    assert pit["name"] == "pit" and pit["mixed"] and abs(pit["shares"]["pieces"] - 0.5) <= 0.05
    assert doc["mixed"] == ["pit"]
    files = pit["example_files"]["pieces"] + pit["example_files"]["whole"]
    assert len(files) == 6 and all((out / f).stat().st_size > 500 for f in files)
    assert all(f in (out / "conventions.md").read_text() for f in files)
    html = (out / "conventions.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 6 and "/nowhere" not in html

    other = dataset_name + "-bare"
    store.write(md.make_labels(tmp_path / "bare", n=3), other)
    r = run("conventions", other)
    assert r.exit_code == 2 and "run 'cvcurate predict" in r.output and "Traceback" not in r.output


def test_score_notes_a_mixed_class_and_the_gate_warns(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.5)
    r = run("score", dataset_name, "--no-pixels", "--out", tmp_path / "scores")
    assert r.exit_code == 0, r.output
    assert "conventions: 'pit' is boxed whole in" in r.output
    rec = store.read_record(dataset_name, "score")
    assert [c["name"] for c in rec.info["conventions"]["classes"] if c["mixed"]] == ["pit"]
    r = run("gate", dataset_name, "--json", tmp_path / "gate.json")
    checks = {c["name"]: c for c in json.loads((tmp_path / "gate.json").read_text())["checks"]}
    assert checks["labeling_conventions"]["status"] == "warn" and "'pit' is boxed whole" in \
        checks["labeling_conventions"]["message"]
    r = run("report", dataset_name, "--out", tmp_path / "report", "--no-pixels", "--top", "0")
    assert r.exit_code == 0, r.output
    md_text = (tmp_path / "report" / "report.md").read_text()
    assert "## Labeling conventions" in md_text and "**mixed**: 'pit' is boxed both ways" in md_text
    assert "id=\"conventions\"" in (tmp_path / "report" / "report.html").read_text()
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["conventions"]["mixed"] == ["pit"]


def test_the_gate_passes_the_check_when_every_class_has_one_style(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.0)
    assert run("score", dataset_name, "--no-pixels", "--out", tmp_path / "scores").exit_code == 0
    run("gate", dataset_name, "--json", tmp_path / "gate.json")
    checks = {c["name"]: c for c in json.loads((tmp_path / "gate.json").read_text())["checks"]}
    assert checks["labeling_conventions"]["status"] == "pass"
