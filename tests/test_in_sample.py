"""Out-of-sample guard (#15): predicting with a checkpoint trained on images of the dataset warns,
says how many, and the score run records it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from cvcurate.detector.checkpoint import NAMED, load_checkpoint, save_checkpoint
from cvcurate.detector.data import image_digests
from cvcurate.synth import generate


def test_in_sample_predictions_warn_and_are_recorded(tmp_path, dataset_name):
    labels = generate(tmp_path / "d", 12, 5)
    store.write(labels, dataset_name)
    ck = load_checkpoint("default")
    ck.extra["train_image_sha256"] = image_digests([r.filepath for r in labels.records[:5]])
    path = save_checkpoint(ck, tmp_path / "seen5.pt")
    r = CliRunner().invoke(app, ["predict", dataset_name, "--model", path])
    assert r.exit_code == 0, r.output
    assert "was trained on 5 of these 12 images" in r.output
    # the remedies, cheapest first: score the 7 unseen images now, then fine-tuned folds
    one_line = " ".join(r.output.split())
    first = one_line.index(f"cvcurate score {dataset_name} --only-out-of-sample' scores the 7 images")
    assert first < one_line.index(f"cvcurate train {dataset_name} --folds 5 --init synth")
    r = CliRunner().invoke(app, ["score", dataset_name, "--pred-field", "predictions", "--no-pixels",
                                 "--out", tmp_path / "s"])
    assert r.exit_code == 0 and "was trained on 5 of these 12 images" in r.output
    assert store.get_runs(dataset_name)["score"]["in_sample_images"] == 5
    assert "note: warning:" not in r.output  # a warning, not a note
    # the gate says it too, as a check of its own (warn), in JSON, Markdown and JUnit
    r = CliRunner().invoke(app, ["gate", dataset_name, "--json", tmp_path / "g.json", "--markdown", tmp_path / "g.md",
                                 "--junit", tmp_path / "g.xml"])
    import json

    checks = {c["name"]: c for c in json.loads((tmp_path / "g.json").read_text())["checks"]}
    assert checks["in_sample_predictions"]["status"] == "warn" and checks["in_sample_predictions"]["value"] == 5
    msg = checks["in_sample_predictions"]["message"]
    assert msg.index(f"cvcurate score {dataset_name} --only-out-of-sample") < msg.index("--folds 5 --init synth")
    # a warning only: the gate fails (exit 1) here because of this small synthetic set itself (12 images:
    # patches and scratches have none, under 10 per class) and its label-error rate, not the in-sample check
    fails = sorted(n for n, c in checks.items() if c["status"] == "fail")
    assert r.exit_code == 1 and "gate FAIL" in r.output, r.output
    assert fails == ["class_imbalance", "images_per_class", "instances_per_class", "label_error_rate"], fails
    for f in ("g.md", "g.xml"):
        assert "in_sample_predictions" in (tmp_path / f).read_text() and "5 image(s)" in (tmp_path / f).read_text()
    # only the images the model did not train on: scored and queued, the in-sample ones left out
    r = CliRunner().invoke(app, ["score", dataset_name, "--pred-field", "predictions", "--no-pixels",
                                 "--only-out-of-sample", "--out", tmp_path / "s2"])
    assert r.exit_code == 0, r.output
    assert "7 of 12 images scored" in r.output and "warning:" not in r.output
    run = store.get_runs(dataset_name)["score"]
    assert run["in_sample_images"] == 0 and run["only_out_of_sample"] and run["images"] == 7
    seen = {x.filepath for x in labels.records[:5]}
    vals = store.sample_values(dataset_name, ["filepath", "cvc_score"])
    assert not any(v is not None and p in seen for p, v in zip(vals["filepath"], vals["cvc_score"]))
    # evaluate marks the in-sample mAP as such and gives the out-of-sample one beside it
    r = CliRunner().invoke(app, ["evaluate", dataset_name, "--out", tmp_path / "e.json"])
    assert r.exit_code == 0, r.output
    assert "warning: in-sample" in r.output and "out-of-sample only (7 images" in r.output
    import json as _json

    meta = _json.loads((tmp_path / "e.json").read_text())["meta"]
    assert meta["in_sample_images"] == 5 and meta["out_of_sample"]["images"] == 7
    r = CliRunner().invoke(app, ["report", dataset_name, "--out", tmp_path / "rep", "--no-pixels"])
    assert r.exit_code == 0, r.output
    md_ = (tmp_path / "rep" / "report.md").read_text()
    assert "**in-sample**: the model trained on 5 of them" in md_ and "Out-of-sample only (7 images" in md_
    # the shipped synthetic model says nothing of these images: no warning
    r = CliRunner().invoke(app, ["predict", dataset_name])
    assert r.exit_code == 0 and "warning" not in r.output


def test_shipped_neu_det_knows_its_training_images(neu_det):
    from cvcurate import formats
    from cvcurate.detector.data import holdout_split
    from cvcurate.stages.predict import in_sample

    if not NAMED["neu-det"].is_file():
        pytest.skip("shipped weights not built")
    labels, _ = formats.load(neu_det, formats.ImportOptions(voc_origin="1"))
    ck = load_checkpoint("neu-det")
    assert in_sample(ck, labels) == 960
    _, held = holdout_split(labels, 0.2, 0)
    from cvcurate.detector.data import subset

    assert in_sample(ck, subset(labels, held)) == 0


def test_predictions_imported_over_in_sample_ones_are_not_called_in_sample(tmp_path, dataset_name):
    """The in-sample warning belongs to the predictions in the field now: a file imported over
    them (another model's) is not said to come from the model that predicted before."""
    from cvcurate.formats.predictions import write_coco_results

    labels = generate(tmp_path / "d", 8, 5)
    store.write(labels, dataset_name)
    ck = load_checkpoint("default")
    ck.extra["train_image_sha256"] = image_digests([r.filepath for r in labels.records[:3]])
    r = CliRunner().invoke(app, ["predict", dataset_name, "--model", save_checkpoint(ck, tmp_path / "seen3.pt")])
    assert r.exit_code == 0 and "was trained on 3 of these 8 images" in r.output
    stored = store.read(dataset_name, pred_field="predictions")
    write_coco_results(tmp_path / "other.json", stored, [x.pred for x in stored.records])
    r = CliRunner().invoke(app, ["predict", dataset_name, "--from-file", tmp_path / "other.json", "--format", "coco"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["score", dataset_name, "--pred-field", "predictions", "--no-pixels",
                                 "--out", tmp_path / "s"])
    assert r.exit_code == 0 and "was trained on" not in r.output, r.output
    assert not store.get_runs(dataset_name)["score"]["in_sample_images"]
    r = CliRunner().invoke(app, ["score", dataset_name, "--pred-field", "predictions", "--no-pixels",
                                 "--only-out-of-sample", "--out", tmp_path / "s2"])
    assert r.exit_code == 2 and "came from a file" in r.output, r.output
