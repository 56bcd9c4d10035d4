"""Closing the loop: export -> import is lossless per format, manifests are deterministic, diff
finds confirmed fixes, the gate's exit codes and reports, and bad input is one line, exit 2."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import formats, store
from cvcurate.cli import app
from cvcurate.stages import apply as apply_stage
from cvcurate import decisions
from cvcurate.stages.export import export
from tests import makedata as md
from tests.test_review import scored_dataset, tag_fixes

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def stored_labels(tmp_path, name, n=9):
    """A dataset with fractional boxes, three splits, an empty image, two images of one name."""
    labels = md.make_labels(tmp_path / "src" / "a", n=n, width=64, height=48)
    twin = md.make_labels(tmp_path / "src" / "b", n=1, width=64, height=48)  # img_000.jpg again
    labels.records += twin.records
    for k, r in enumerate(labels.records):
        r.split = ("train", "val", "test")[k % 3]
        if len(r.gt):
            r.gt = type(r.gt)(r.gt.xyxy + 0.371, r.gt.class_id)
    store.write(labels, name)
    return store.read(name)


def boxes_by_file(labels):
    out = {}
    for r in labels.records:
        out[(r.split, r.filepath.rsplit("/", 1)[1])] = (r.gt.xyxy, [labels.classes[c] for c in r.gt.class_id])
    return out


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_export_import_round_trip_is_lossless(tmp_path, dataset_name, fmt):
    before = stored_labels(tmp_path, dataset_name)
    res = export(dataset_name, tmp_path / "out", format=fmt)
    assert res.images == len(before.records) and res.boxes == before.num_boxes
    back, report = formats.load(tmp_path / "out")
    assert report.format == fmt and report.rejected == 0
    assert set(back.classes) == set(before.classes)
    assert len(back.records) == len(before.records)
    # the twin image got another name; match by pixels' place in the manifest instead of names
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    exported = {d["file"].rsplit("/", 1)[1]: d for d in doc["images"]}
    for r in back.records:
        d = exported[r.filepath.rsplit("/", 1)[1]]
        assert r.split == d["split"]
        want = np.array([row[1:] for row in d["boxes"]], float).reshape(-1, 4)
        assert np.allclose(r.gt.xyxy, want, atol=1e-6, rtol=0)
        assert [back.classes[c] for c in r.gt.class_id] == [row[0] for row in d["boxes"]]
    # and the manifest holds exactly the stored boxes (VOC: in whole pixels, rounded outward, as VOC keeps them)
    from cvcurate.formats.writers import voc_pixels

    def boxes(r):
        return voc_pixels(r.gt.xyxy, r.width, r.height) if fmt == "voc" else r.gt.xyxy

    src = sorted((r.split, tuple(np.round(boxes(r), 6).ravel()), tuple(before.classes[c] for c in r.gt.class_id))
                 for r in before.records)
    got = sorted((r.split, tuple(np.round(r.gt.xyxy, 6).ravel()), tuple(back.classes[c] for c in r.gt.class_id))
                 for r in back.records)
    assert src == got


def test_manifest_is_byte_identical_relative_and_hashes_images(tmp_path, dataset_name):
    from cvcurate.stages.imports import ImportOptions, import_dataset

    stored_labels(tmp_path, dataset_name)
    # three more images through the import stage, which records its source (an absolute path)
    md.write_voc(tmp_path / "src" / "steel-v1", n=3, width=64, height=48)
    imp = import_dataset(tmp_path / "src" / "steel-v1", dataset_name, ImportOptions(split="val"))
    assert imp.write.added == 3
    (hist,) = [h for h in store.get_history(dataset_name) if h.get("action") == "import"]
    assert hist["source"] == str(tmp_path / "src" / "steel-v1")
    export(dataset_name, tmp_path / "e1", format="yolo")
    export(dataset_name, tmp_path / "e2", format="yolo")
    m1, m2 = (tmp_path / "e1" / "manifest.json").read_bytes(), (tmp_path / "e2" / "manifest.json").read_bytes()
    assert m1 == m2
    text = m1.decode()
    assert str(tmp_path) not in text and '"/' not in text  # no absolute path inside
    doc = json.loads(text)
    assert doc["schema_version"] == 1 and doc["cvcurate_version"]
    # lineage: the one import, its source by folder name only, as the history holds it; no change set
    (entry,) = doc["lineage"]["imports"]
    assert {k: entry[k] for k in ("source", "format", "split", "at", "summary")} == {
        "source": "steel-v1", "format": "voc", "split": "val", "at": hist["at"], "summary": imp.report.summary()}
    assert entry["voc_origin"] == hist["settings"]["voc_origin"] in (0, 1)  # how its boxes were read
    assert doc["lineage"]["changes"] == []
    assert doc["lineage"]["score"] is None and doc["lineage"]["split"] is None  # never scored, never split
    import hashlib

    first = doc["images"][0]
    assert hashlib.sha256((tmp_path / "e1" / first["file"]).read_bytes()).hexdigest() == first["sha256"]
    assert set(doc["counts"]["per_split"]) == {"train", "val", "test"}


def test_confirmed_relabel_and_removal_show_up_in_diff(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    run("export", dataset_name, "--format", "coco", "--out", tmp_path / "v1")
    assert tag_fixes(dataset_name, "relabel", decisions.CONFIRMED) >= 1
    assert tag_fixes(dataset_name, "remove", decisions.CONFIRMED) >= 1
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "log")
    actions = [f["cvc_action"] for c in cs.changes for f in c["fixes"]]
    r = run("export", dataset_name, "--format", "coco", "--out", tmp_path / "v2")
    assert r.exit_code == 0, r.output
    r = run("diff", tmp_path / "v1", tmp_path / "v2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    kinds = sorted(c["change"] for c in d["boxes"])
    assert kinds.count("relabelled") == actions.count("relabel")
    assert kinds.count("removed") == actions.count("remove")
    assert len(kinds) == len(actions) and d["images"]["added"] == [] and d["images"]["removed"] == []
    assert len(d["images"]["changed"]) == len(cs.changes)
    # lineage names the change set, who applied it and what it did
    doc = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    (entry,) = doc["lineage"]["changes"]
    assert entry["change_id"] == cs.change_id and entry["by"] and len(entry["what"]) == len(actions)
    r = run("diff", tmp_path / "v1", tmp_path / "v2")
    assert "relabelled" in r.output and "boxes per class" in r.output


def test_gate_passes_clean_and_fails_broken_with_reports(tmp_path, dataset_name):
    labels = md.make_labels(tmp_path / "ok", n=30, width=64, height=48)
    for k, r in enumerate(labels.records):
        r.gt = type(r.gt)([[4 + k % 5, 5, 30, 30]], [k % 3])
    store.write(labels, dataset_name)
    cfg = tmp_path / "gate.yaml"
    cfg.write_text("images_per_class_below: {warn: null, fail: 5}\ninstances_per_class_below: {warn: null, fail: 5}\n")
    r = run("gate", dataset_name, "--config", cfg, "--junit", tmp_path / "g.xml", "--json", tmp_path / "g.json",
            "--markdown", tmp_path / "g.md")
    assert r.exit_code == 0, r.output
    cases = ET.parse(tmp_path / "g.xml").getroot().findall("./testsuite/testcase")
    assert len(cases) == 12 and not any(c.find("failure") is not None for c in cases)
    assert json.loads((tmp_path / "g.json").read_text())["passed"] is True
    assert (tmp_path / "g.md").read_text().startswith("## cvcurate gate:")

    broken = store.read(dataset_name)
    r0 = broken.records[0]
    r0.gt = type(r0.gt)([[10, 10, 10, 30]], [0])  # a zero-width box
    store.write(broken, dataset_name)
    r = run("gate", dataset_name, "--config", cfg, "--junit", tmp_path / "g.xml")
    assert r.exit_code == 1, r.output
    failed = [c.get("name") for c in ET.parse(tmp_path / "g.xml").getroot().iter("testcase")
              if c.find("failure") is not None]
    assert failed == ["invalid_boxes"] and "gate FAIL" in r.output


def test_gate_on_a_folder_reads_it_without_storing(tmp_path):
    md.write_voc(tmp_path / "d", n=6)  # 6 images, 2 boxes of each of 3 classes
    before = store.list_datasets()
    r = run("gate", tmp_path / "d", "--json", tmp_path / "g.json")
    # under the default 10 images / 10 instances per class: those two checks fail, so exit 1; the
    # score-run checks warn (a folder is never scored), everything else passes
    assert r.exit_code == 1 and "gate FAIL" in r.output, r.output
    doc = json.loads((tmp_path / "g.json").read_text())
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert sorted(n for n, s in status.items() if s == "fail") == ["images_per_class", "instances_per_class"]
    no_run = ["images_with_issues", "in_sample_predictions", "label_error_rate", "unreviewed_issues"]
    assert sorted(n for n, s in status.items() if s == "warn") == no_run
    assert all("no score run" in c["message"] for c in doc["checks"] if c["name"] in no_run)
    assert doc["passed"] is False and doc["status"] == "fail"
    # the same folder with those thresholds lowered: warnings only, which pass (exit 0)
    cfg = tmp_path / "gate.yaml"
    cfg.write_text("images_per_class_below: {warn: null, fail: 2}\ninstances_per_class_below: {warn: null, fail: 2}\n")
    r = run("gate", tmp_path / "d", "--config", cfg, "--json", tmp_path / "g2.json")
    assert r.exit_code == 0 and "gate WARN" in r.output, r.output
    doc = json.loads((tmp_path / "g2.json").read_text())
    assert doc["passed"] is True and doc["status"] == "warn"
    assert sorted(c["name"] for c in doc["checks"] if c["status"] != "pass") == no_run
    assert store.list_datasets() == before


def test_bad_input_is_one_line_exit_2_and_nothing_half_written(tmp_path, dataset_name):
    stored_labels(tmp_path, dataset_name, n=3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.txt").write_text("hello")
    (tmp_path / "bad.yaml").write_text("leakage_above: {fail: 0}\n")
    (tmp_path / "type.yaml").write_text("leakage_images_above: {fail: lots}\n")
    (tmp_path / "notdata").mkdir()
    (tmp_path / "notdata" / "readme.md").write_text("hi")
    for args, expected in [
        (["export", dataset_name, "--format", "yolo", "--out", tmp_path / "full"], "not empty"),
        (["export", dataset_name, "--format", "pascal", "--out", tmp_path / "x"], "unknown --format"),
        (["diff", tmp_path / "a.json", tmp_path / "b.txt"], "not a cvcurate manifest"),
        (["gate", dataset_name, "--config", tmp_path / "bad.yaml"], "did you mean 'leakage_images_above'"),
        (["gate", dataset_name, "--config", tmp_path / "type.yaml"], "expected a number"),
        (["gate", tmp_path / "notdata"], "not a dataset cvcurate can read"),
        (["gate", "no_such_thing_here"], "neither a dataset in the store nor a path"),
    ]:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert expected in r.output and "Traceback" not in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "x" and len(list((tmp_path / "full").iterdir())) == 1
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))
    # --overwrite replaces only an earlier export (tests/test_export_overwrite.py), once the new one is complete
    r = run("export", dataset_name, "--format", "yolo", "--out", tmp_path / "full", "--overwrite")
    assert r.exit_code == 2 and "not written by cvcurate export" in r.output, r.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "x" and len(list((tmp_path / "full").iterdir())) == 1
    assert run("export", dataset_name, "--format", "coco", "--out", tmp_path / "x").exit_code == 0
    r = run("export", dataset_name, "--format", "yolo", "--out", tmp_path / "x", "--overwrite")
    assert r.exit_code == 0 and (tmp_path / "x" / "data.yaml").is_file(), r.output
    assert not (tmp_path / "x" / "annotations").exists()


def test_demo_runs_the_whole_loop(tmp_path):
    import re

    try:
        r = run("demo", "--no-app", "--out", tmp_path / "demo", "--images", 60)
        assert r.exit_code == 0, r.output
        for step in ("synth:", "corrupt:", "predict:", "score:", "review:", "apply:", "augment:", "gate",
                     "diff v1 -> v2"):
            assert step in r.output, (step, r.output)
        assert "stands in for a reviewer" in r.output
        for f in ("gate-before.md", "gate-after.md", "gate-after.json", "export-v1/manifest.json",
                  "export-v2/manifest.json", "truth.json"):
            assert (tmp_path / "demo" / f).is_file(), f
        after = json.loads((tmp_path / "demo" / "gate-after.json").read_text())
        assert after["schema_version"] == 1 and len(after["checks"]) == 13
        assert "labeling_conventions" in {c["name"] for c in after["checks"]}
        # fixes were really confirmed and applied (not 0), and the labels changed by exactly those fixes
        confirmed = int(re.search(r"review: (\d+) proposed fixes confirmed", r.output).group(1))
        applied, images = map(int, re.search(r"apply: (\d+) fixes applied to (\d+) images", r.output).groups())
        assert 0 < applied <= confirmed and 0 < images <= applied, r.output
        assert f"({applied} fixed)" in r.output
        v1 = json.loads((tmp_path / "demo" / "export-v1" / "manifest.json").read_text())
        (change,) = json.loads((tmp_path / "demo" / "export-v2" / "manifest.json").read_text())["lineage"]["changes"]
        assert v1["lineage"]["changes"] == []
        assert change["fixes"] == applied and change["samples"] == images and len(change["what"]) == applied
        # every applied fix is in an image the truth file injected an error into (the demo's "reviewer")
        truth = json.loads((tmp_path / "demo" / "truth.json").read_text())
        injected = {e["filepath"].rsplit("/", 1)[1] for e in truth["errors"]}
        assert {w["file"].rsplit("/", 1)[1] for w in change["what"]} <= injected
        # v1 -> v2: exactly the images the fixes touched changed, each relabel / removal / move as such
        d = json.loads(run("diff", tmp_path / "demo" / "export-v1", tmp_path / "demo" / "export-v2", "--json").output)
        assert sorted(d["images"]["changed"]) == sorted({w["file"] for w in change["what"]})
        kinds = {"relabel": "relabelled", "remove": "removed", "move": "moved"}
        for w in change["what"]:
            if w["action"] in kinds:
                assert any(b["file"] == w["file"] and b["change"] == kinds[w["action"]]
                           and (w["action"] != "relabel" or b["new"][0] == w["class"]) for b in d["boxes"]), (w, d["boxes"])
    finally:
        for n in ("demo", "demo_noisy"):
            if store.exists(n):
                store.delete(n)
