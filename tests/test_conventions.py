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


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Default outputs (NAME_conventions/, NAME_changes/) go to the test's folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


def styled(n: int, pieces_share: float, seed: int = 0, folder=None, loose: bool = False, model_strips: bool = False):
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
        if model_strips:  # the model sees the region as three strips
            xs = np.linspace(x, x + w, 4)
            seen = [[xs[j] + 1, y, xs[j + 1] - 1, y + h] for j in range(3)]
        else:
            seen = [region]
        pb = np.array(seen + [other], float) + rng.normal(0, 1.0, (len(seen) + 1, 4))
        preds.append(Annotations(pb, np.array([0] * len(seen) + [1]), np.array([0.9] * len(seen) + [0.85])))
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


def _stored(tmp_path, name, share, **kw):
    labels, preds = styled(40, share, seed=3, folder=tmp_path / "images", **kw)
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


def _gt(name):
    from cvcurate.store import GT_FIELD

    return store.get_detections(name, GT_FIELD)


def _pit_boxes(name):
    """Per image file: the pit boxes (pixel xyxy), sorted."""
    out = {}
    for r in store.read(name).records:
        out[r.filepath] = sorted(map(tuple, np.round(r.gt.xyxy[r.gt.class_id == 0], 3).tolist()))
    return out


def test_adopting_whole_merges_exactly_the_pieces_and_undo_restores_every_byte(tmp_path, dataset_name):
    labels = _stored(tmp_path, dataset_name, 0.5)
    pieces_files = {r.filepath for r in labels.records if (r.gt.class_id == 0).sum() == 3}
    before = _gt(dataset_name)
    r = run("conventions", dataset_name, "--adopt", "pit=whole", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "would change 20 image(s) (20 fix(es)); nothing was written" in r.output
    assert r.output.count(": merge (convention)") == 20 and _gt(dataset_name) == before

    r = run("conventions", dataset_name, "--adopt", "pit=whole")
    assert r.exit_code == 0, r.output
    assert "adopted pit=whole: 20 image(s) changed (20 fix(es))" in r.output
    after = _pit_boxes(dataset_name)
    recs = {rec.filepath: rec for rec in labels.records}
    preds = {rec.filepath: p for rec, p in zip(*styled(40, 0.5, seed=3, folder=tmp_path / "images"))}
    for f, boxes in after.items():
        assert len(boxes) == 1  # every image follows the convention now
        if f not in pieces_files:  # an image that followed it already: untouched
            assert boxes == sorted(map(tuple, np.round(recs[f].gt.xyxy[recs[f].gt.class_id == 0], 3).tolist()))
        else:  # merged into the model's box of the region
            model = preds[f].xyxy[0]
            assert np.allclose(boxes[0], model, atol=1e-3)
    assert store.get_conventions(dataset_name)["pit"]["style"] == "whole"
    out = tmp_path / "export"
    assert run("export", dataset_name, "--format", "coco", "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lineage"]["conventions"]["pit"]["style"] == "whole"
    conv = json.loads((run("conventions", dataset_name, "--out", tmp_path / "c2") and
                       (tmp_path / "c2" / "conventions.json")).read_text())
    assert conv["classes"][0]["adopted"] == "whole" and not conv["mixed"]

    r = run("apply", dataset_name, "--undo")
    assert r.exit_code == 0, r.output
    assert _gt(dataset_name) == before  # every box, id and attribute as it was
    assert "pit" not in store.get_conventions(dataset_name)


def test_adopting_pieces_splits_only_boxes_over_several_model_regions(tmp_path, dataset_name):
    labels = _stored(tmp_path, dataset_name, 0.5, model_strips=True)
    whole_files = {r.filepath for r in labels.records if (r.gt.class_id == 0).sum() == 1}
    before = _pit_boxes(dataset_name)
    r = run("conventions", dataset_name, "--adopt", "pit=pieces")
    assert r.exit_code == 0, r.output
    after = _pit_boxes(dataset_name)
    assert {f for f in after if after[f] != before[f]} == whole_files  # images boxed in pieces: no fix
    assert all(len(after[f]) == 3 for f in after)
    assert f"adopted pit=pieces: {len(whole_files)} image(s) changed ({3 * len(whole_files)} fix(es))" in r.output


def test_adopt_refuses_bad_input_in_one_line(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.5)
    for arg, msg in (("pit=round", "takes CLASS=whole or CLASS=pieces"), ("rust=whole", "no class 'rust'"),
                     ("pit", "takes CLASS=whole")):
        r = run("conventions", dataset_name, "--adopt", arg)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
    r = run("conventions", dataset_name, "--dry-run")
    assert r.exit_code == 2 and "--dry-run goes with --adopt" in r.output


def test_an_interrupted_adopt_leaves_labels_and_conventions_as_they_were(tmp_path, dataset_name, monkeypatch):
    _stored(tmp_path, dataset_name, 0.5)
    before = _gt(dataset_name)
    real = store.journal.finish
    calls = []

    def stop(name, entry, *args, **kw):
        calls.append(args)
        if len(calls) == 1:  # after the commit and the convention, as the journal entry closes
            assert store.get_conventions(name)["pit"]["style"] == "whole"
            raise KeyboardInterrupt
        return real(name, entry, *args, **kw)

    monkeypatch.setattr(store.journal, "finish", stop)
    r = run("conventions", dataset_name, "--adopt", "pit=whole")
    assert r.exit_code == 130, r.output
    monkeypatch.undo()
    assert _gt(dataset_name) == before and store.get_conventions(dataset_name) == {}
    assert not [c for c in store.get_changes(dataset_name) if not c.get("undone")]


def test_labeling_instructions_show_a_good_and_a_bad_example(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.3)
    path = tmp_path / "labeling.md"
    r = run("conventions", dataset_name, "--out", tmp_path / "c", "--instructions", path)
    assert r.exit_code == 0, r.output
    text = path.read_text()
    pit = text.split("## pit")[1].split("## scratch")[0]
    assert "majority of the data:** Box each defect region with one box" in pit
    assert "Good:" in pit and "Not like this:" in pit
    for ref in ("labeling_images/0_whole.jpg", "labeling_images/0_pieces.jpg"):
        assert ref in pit and (tmp_path / ref).stat().st_size > 500
    assert "(No image in the data breaks it.)" in text.split("## scratch")[1]


def test_an_adopted_class_is_not_warned_about_however_mixed(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.5)
    r = run("conventions", dataset_name, "--adopt", "pit=pieces")  # the model sees no whole to split
    assert r.exit_code == 0 and "every image the model judges follows it already" in r.output, r.output
    assert store.get_conventions(dataset_name)["pit"]["style"] == "pieces"
    assert run("score", dataset_name, "--no-pixels", "--out", tmp_path / "scores").exit_code == 0
    run("gate", dataset_name, "--json", tmp_path / "gate.json")
    checks = {c["name"]: c for c in json.loads((tmp_path / "gate.json").read_text())["checks"]}
    assert checks["labeling_conventions"]["status"] == "pass"
    rec = store.read_record(dataset_name, "score")
    assert rec.info["conventions"]["classes"][0]["adopted"] == "pieces"


def test_adopt_with_instructions_as_the_help_shows(tmp_path, dataset_name):
    _stored(tmp_path, dataset_name, 0.3)
    r = run("conventions", dataset_name, "--adopt", "pit=whole", "--instructions", "neu-labeling.md")
    assert r.exit_code == 0, r.output
    assert "adopted pit=whole" in r.output and "labeling instructions:" in r.output
    text = (tmp_path / "neu-labeling.md").read_text()
    assert "**Convention (adopted):** Box each defect region with one box" in text.split("## pit")[1]


def _pit_issues(labels, result):
    """(type, p, data) of the split / merged / convention issues on 'pit' boxes, and the images they are on."""
    cls = {r.filepath: r.gt.class_id for r in labels.records}
    return [(i.type, i.score, i.data, i.filepath) for i in result.issues
            if i.type in ("split", "merged", "convention") and i.box is not None and cls[i.filepath][i.box] == 0]


def test_later_scoring_follows_an_adopted_convention():
    """A class boxed in pieces in 60 % of its images: a habit (nothing queued) until a convention is
    adopted; adopted whole, every piece breaks it (a ``convention`` issue, p >= 0.5, as the split it
    is); adopted pieces, the pieces are clean (no issue of any kind on them)."""
    from cvcurate.scoring import score

    labels, preds = styled(60, 0.6, seed=5)
    pieces = {r.filepath for r in labels.records if (r.gt.class_id == 0).sum() == 3}
    habit = _pit_issues(labels, score(labels, predictions=preds))
    assert all(p < 0.5 and t != "convention" for t, p, _, _ in habit), habit
    whole = _pit_issues(labels, score(labels, predictions=preds, conventions={"pit": "whole"}))
    queued = {f for t, p, d, f in whole if p >= 0.5}
    assert all(t == "convention" and d["deviation"] == "split" and d["convention"] == "whole" for t, _, d, _ in whole)
    assert queued <= pieces and len(queued) >= 0.8 * len(pieces), (len(queued), len(pieces))
    assert not _pit_issues(labels, score(labels, predictions=preds, conventions={"pit": "pieces"}))


def test_a_deviation_is_queued_with_its_fix(tmp_path, dataset_name):
    """The convention recorded with the dataset (as ``--adopt`` records it) while images still break
    it (labels boxed the old way after adoption): the score run lists them in the conventions queue,
    each with the fix that merges its pieces."""
    _stored(tmp_path, dataset_name, 0.5)
    store.set_convention(dataset_name, "pit", {"style": "whole", "change_id": "test"})
    r = run("score", dataset_name, "--no-pixels", "--out", tmp_path / "scores")
    assert r.exit_code == 0, r.output
    rec = store.read_record(dataset_name, "score")
    dev = [i for i in rec.issues if i.type == "convention" and i.score >= 0.5]
    assert len({i.filepath for i in dev}) >= 15, len(dev)  # 20 images boxed in pieces
    assert all("breaks the adopted convention ('pit' boxed whole)" in i.reason for i in dev)
    assert rec.summary["counts"].get("convention", 0) >= 15
    r = run("review", dataset_name, "--summary")
    assert r.exit_code == 0 and "conventions" in r.output, r.output
    from cvcurate.names import FIX_FIELD

    fixes = [d for dets in store.get_detections(dataset_name, FIX_FIELD).values() for d in dets]
    merges = [d for d in fixes if d.get("cvc_type") == "convention" and d.get("cvc_action") == "merge"]
    assert len(merges) >= 15, [(d.get("cvc_type"), d.get("cvc_action")) for d in fixes][:5]
