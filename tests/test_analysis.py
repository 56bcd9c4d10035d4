"""The report's pure compute and rendering: slice rates with known answers, Wilson intervals, the
class-balance plan, PR curves, thumbnails, and pages that never refer to the network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvcurate.analysis import (NO_AUGMENT, ReportInput, build_report, class_balance, compute_slices,
                               make_report, pr_curves, slice_table_markdown, wilson)
from cvcurate.analysis.slices import size_bucket
from cvcurate.analysis.thumbs import thumbnail
from cvcurate.detector.evaluate import EvalResult
from cvcurate.types import Annotations, ImageRecord, Issue, LabelSet

CLASSES = ["crack", "pit", "scratch"]
EXTERNAL = re.compile(r"https?://|(?:src|href)\s*=\s*[\"']?\s*//|url\(\s*[\"']?\s*//|@import", re.I)


def known_dataset() -> tuple[LabelSet, list[Issue]]:
    """40 images of 100x100: 30 train images with 2 small crack boxes each, 10 val images with one
    large pit box each; every pit box has a swap issue, nothing else has an issue. So the pit
    class, the large size bucket and the val split hold all 10 errors."""
    recs, issues = [], []
    for i in range(30):
        recs.append(ImageRecord(f"/d/train_{i}.jpg", 100, 100,
                                Annotations([[0, 0, 5, 5], [50, 50, 58, 58]], [0, 0]), split="train"))
    for i in range(10):
        path = f"/d/val_{i}.jpg"
        recs.append(ImageRecord(path, 100, 100, Annotations([[10, 10, 60, 60]], [1]), split="val"))
        issues.append(Issue(path, "swap", 0.9, "box 0 is labelled pit but the model sees a crack", box=0))
    return LabelSet(list(CLASSES), recs), issues


def by_name(result, kind):
    return {s.name.split(" ")[0]: s for s in result.kinds[kind]}


def test_rates_on_a_known_dataset():
    labels, issues = known_dataset()
    res = compute_slices(labels, issues)
    cls = by_name(res, "class")
    assert set(cls) == {"crack", "pit"}  # scratch has no box and no issue: no slice
    pit, crack = cls["pit"], cls["crack"]
    assert (pit.boxes, pit.images, pit.issues, pit.boxes_with_issues, pit.images_with_issues) == (10, 10, 10, 10, 10)
    assert pit.issues_per_100_boxes == 100.0 and pit.box_share == 1.0 and pit.image_share == 1.0
    assert (crack.boxes, crack.images, crack.issues) == (60, 30, 0) and crack.box_share == 0.0
    size = by_name(res, "box_size")
    assert size["large"].issues == 10 and size["large"].boxes == 10
    assert size["small"].boxes == 60 and size["small"].issues == 0  # 25 and 64 px of 10,000: < 1%
    split = by_name(res, "split")
    assert (split["val"].boxes, split["val"].images, split["val"].issues) == (10, 10, 10)
    assert split["train"].issues == 0 and split["train"].image_share == 0.0
    assert res.overall.issues == 10 and res.overall.boxes == 70 and res.overall.images == 40
    assert res.overall.issues_per_100_boxes == pytest.approx(100 * 10 / 70)
    # the slices holding the errors come first; every kind is ranked
    assert {s.name.split(" ")[0] for s in res.ranked()[:3]} == {"pit", "large", "val"}
    assert res.kinds["class"][0].name == "pit"
    assert res.left_out == {"brightness": "no image brightness was measured",
                            "source": "no import source was recorded for the images"}
    md = slice_table_markdown(res, top=3)
    assert md.count("\n| ") == 4 and "| pit | class | 10 | 10 | 10 | 100.0 |" in md
    assert "Wilson 95%" in md


def test_image_kinds_count_image_level_issues_and_sources_brightness():
    labels, issues = known_dataset()
    issues.append(Issue("/d/train_0.jpg", "style_fragmented", 0.5, "style"))  # image-level label issue
    issues.append(Issue("/d/train_1.jpg", "blur", 0.9, "blurred"))  # pixel issue: not counted
    issues.append(Issue("/d/elsewhere.jpg", "swap", 0.9, "not in the labels", box=0))
    bright = np.array([50.0] * 30 + [200.0] * 10)
    bright[5] = np.nan
    sources = ["a"] * 30 + ["b"] * 10
    res = compute_slices(labels, issues, brightness=bright, sources=sources)
    assert res.issues_not_counted == 1 and res.issues_unmatched == 1
    assert "blur" not in res.counted_types and "style_fragmented" in res.counted_types
    src = {s.name: s for s in res.kinds["source"]}
    assert src["b"].issues == 10 and src["a"].issues == 1 and src["a"].images_with_issues == 1
    assert src["a"].boxes_with_issues == 0  # an image-level issue points at no box
    names = [s.name for s in res.kinds["brightness"]]
    assert "unmeasured" in names and any(n.startswith("bright") for n in names)
    assert sum(s.images for s in res.kinds["brightness"]) == 40
    # box kinds only count issues that point at their boxes
    assert by_name(res, "class")["crack"].issues == 0


def test_overlooked_counts_for_the_class_and_size_the_model_saw():
    labels, _ = known_dataset()
    iss = Issue("/d/train_3.jpg", "overlooked", 0.8, "missing", data={"pred_box": [0, 0, 40, 40], "pred_class": 2})
    res = compute_slices(labels, [iss])
    scratch = by_name(res, "class")["scratch"]
    assert (scratch.boxes, scratch.issues, scratch.images, scratch.images_with_issues) == (0, 1, 1, 1)
    assert by_name(res, "box_size")["large"].issues == 1  # 1,600 of 10,000 px


def test_wilson_interval():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    widths = [np.subtract(*wilson(n // 5, n)[::-1]) for n in (5, 50, 500, 5000)]
    assert all(a > b for a, b in zip(widths, widths[1:]))  # same 20%, narrower with more boxes


def test_intervals_widen_for_small_slices_and_small_slices_do_not_rank_first():
    """A class of 3 boxes with 1 issue (33%) against one of 1,000 boxes with 100 (10%)."""
    recs, issues = [], []
    for i in range(1000):
        recs.append(ImageRecord(f"/d/a{i}.jpg", 100, 100, Annotations([[0, 0, 20, 20]], [0])))
        if i < 100:
            issues.append(Issue(f"/d/a{i}.jpg", "badloc", 0.7, "x", box=0))
    for i in range(3):
        recs.append(ImageRecord(f"/d/b{i}.jpg", 100, 100, Annotations([[0, 0, 20, 20]], [1])))
    issues.append(Issue("/d/b0.jpg", "badloc", 0.7, "x", box=0))
    res = compute_slices(LabelSet(["big", "tiny"], recs), issues)
    big, tiny = res.kinds["class"]
    assert (big.name, tiny.name) == ("big", "tiny")  # ranked by the lower bound, not the rate
    assert tiny.box_share > big.box_share
    assert tiny.box_ci[1] - tiny.box_ci[0] > 4 * (big.box_ci[1] - big.box_ci[0])
    assert tiny.box_ci[0] < big.box_ci[0]


def test_size_buckets():
    assert list(size_bucket(np.array([0.0, 0.005, 0.01, 0.0999, 0.1, 0.8, -1]))) == \
        ["zero-area", "small", "medium", "medium", "large", "large", "zero-area"]


def test_class_balance_plan():
    labels, _ = known_dataset()
    plan = class_balance(labels)
    rows = {r["class"]: r for r in plan["classes"]}
    assert rows["crack"] == {"class": "crack", "images": 30, "instances": 60, "to_largest_images": 0,
                             "to_largest_instances": 0, "to_rule_images": 1470, "to_rule_instances": 9940}
    assert rows["pit"]["to_largest_instances"] == 50 and rows["pit"]["to_largest_images"] == 20
    assert rows["scratch"]["to_rule_images"] == 1500 and rows["scratch"]["to_rule_instances"] == 10000
    assert plan["largest_class"] == "crack" and plan["augment"] == NO_AUGMENT
    assert plan["under_rule"] == CLASSES
    aug = class_balance(labels, {"method": "copy-paste", "per_class": {"pit": {"images": 1490, "instances": 9990}}})
    rows = {r["class"]: r for r in aug["classes"]}
    assert rows["pit"]["after_images"] == 1500 and rows["pit"]["after_instances"] == 10000
    assert "copy-paste" in aug["augment"] and "would add 1490 images" in aug["augment"]
    assert "2 of 3 classes would still be under" in aug["augment"]


def test_pr_curves():
    gts = [Annotations([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1]) for _ in range(4)]
    perfect = [Annotations(g.xyxy, g.class_id, [0.9, 0.8]) for g in gts]
    cur = pr_curves(gts, perfect, ["a", "b", "c"])
    assert cur["a"]["ap"] == pytest.approx(1.0) and all(p == 1.0 for p in cur["a"]["precision"])
    assert cur["c"]["ap"] is None and cur["c"]["gt"] == 0
    # class a: two of four images found (high confidence), plus two false detections (low)
    preds = []
    for k, g in enumerate(gts):
        boxes = [[0, 0, 10, 10]] if k < 2 else [[50, 50, 60, 60]]
        preds.append(Annotations(boxes, [0], [0.9 if k < 2 else 0.1]))
    a = pr_curves(gts, preds, ["a", "b"])["a"]
    assert a["precision"][50] == 1.0 and a["precision"][51] == 0.0  # recall 0.5 reached at precision 1
    assert a["ap"] == pytest.approx(51 / 101)


def write_images(folder: Path, labels: LabelSet) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for r in labels.records:
        cv2.imwrite(r.filepath, rng.integers(90, 170, (r.height, r.width), dtype=np.uint8))


def small_dataset(tmp_path: Path) -> tuple[LabelSet, list[Issue]]:
    recs = []
    for i in range(12):
        w = 400 if i == 0 else 80  # image 0 is wide: cropped round its box
        recs.append(ImageRecord(str(tmp_path / "img" / f"i{i}.png"), w, 60,
                                Annotations([[5, 5, 30, 30], [40, 10, 70, 50]], [i % 3, (i + 1) % 3]),
                                split="val" if i % 4 == 0 else "train"))
    labels = LabelSet(list(CLASSES), recs)
    write_images(tmp_path / "img", labels)
    issues = [Issue(recs[0].filepath, "swap", 0.9, "box 1 is labelled pit but the model sees a crack", box=1,
                    data={"pred_box": [40, 10, 70, 50], "pred_class": 0, "confidence": 0.9}),
              Issue(recs[1].filepath, "overlooked", 0.8, "the model sees a scratch no box covers",
                    data={"pred_box": [10, 35, 40, 55], "pred_class": 2}),
              Issue(recs[2].filepath, "degenerate", 1.0, "box 0 has zero area", box=0),
              Issue(recs[3].filepath, "blur", 0.5, "much less sharp"),
              Issue(str(tmp_path / "img" / "missing.png"), "swap", 0.95, "image gone", box=0)]
    return labels, issues


def evaluation(labels: LabelSet) -> dict:
    gts = [r.gt for r in labels.records]
    preds = [Annotations(g.xyxy + 1, g.class_id, np.full(len(g), 0.7)) for g in gts]
    ev = EvalResult(CLASSES, 0.7, 0.5, {c: 0.7 for c in CLASSES}, {c: 0.5 for c in CLASSES},
                    {c: 8 for c in CLASSES}, {c: 8 for c in CLASSES}, np.eye(4, dtype=int).tolist(),
                    CLASSES + ["background"], len(gts), 0.25).to_dict()
    ev["pr_curves"] = pr_curves(gts, preds, CLASSES)
    return ev


def all_text(paths: dict) -> dict[str, str]:
    return {k: Path(p).read_text(encoding="utf-8") for k, p in paths.items()}


def test_full_report_has_no_external_url(tmp_path):
    labels, issues = small_dataset(tmp_path)
    inp = ReportInput(labels, issues, brightness=np.linspace(40, 200, 12), sources=["voc"] * 6 + ["coco"] * 6,
                      evaluation=evaluation(labels), title="test <report>", subtitle="dataset t")
    report, paths = make_report(inp, tmp_path / "out", top_n=2)
    text = all_text(paths)
    for name, t in text.items():
        assert not EXTERNAL.search(t), (name, EXTERNAL.search(t).group(0))
    html = text["html"]
    assert "<title>test &lt;report&gt;</title>" in html and 'id="top-slices"' in html
    # every image embedded, one per figure and thumbnail
    assert html.count('<img src="data:image/') == len(report.figures) + len(report.thumbs)
    assert {f.name for f in report.figures} == {"counts", "boxes_per_image", "box_shape", "ap_per_class",
                                                "confusion", "pr_curves"}
    assert report.left_out == []
    assert {t.queue for t in report.thumbs} == {"swap", "overlooked", "geometry", "image"}
    for f in report.figures:
        assert (tmp_path / "out" / f.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for t in report.thumbs:
        img = cv2.imread(str(tmp_path / "out" / t.file))
        assert img is not None and max(img.shape[:2]) <= 320
    wide = next(t for t in report.thumbs if t.issue.filepath == labels.records[0].filepath)
    h, w = cv2.imread(str(tmp_path / "out" / wide.file)).shape[:2]
    assert w / h == pytest.approx(3.0, rel=0.05)  # 400x60 cropped to a 3:1 window
    missing = next(t for t in report.thumbs if "missing" in t.issue.filepath) if any(
        "missing" in t.issue.filepath for t in report.thumbs) else None
    assert missing is None  # an issue whose image is not in the labels gets no thumbnail
    md = text["md"]
    assert "![swap 1](thumbs/swap_01.jpg)" in md and "(plots/confusion.png)" in md
    assert "| slice | kind |" in md
    doc = json.loads(text["json"])
    assert doc["top_slices"] and doc["top_issues"][0]["thumbnail"].startswith("thumbs/")
    assert doc["class_balance"]["augment"] == NO_AUGMENT
    assert doc["evaluation"]["map50"] == 0.7
    # embed_images=False: the page refers to the files beside it, by relative path
    make_report(inp, tmp_path / "out2", top_n=1, embed_images=False)
    html2 = (tmp_path / "out2" / "report.html").read_text()
    assert 'src="plots/counts.png"' in html2 and not EXTERNAL.search(html2)


def test_report_without_issues_or_predictions_says_what_it_left_out(tmp_path):
    labels, _ = small_dataset(tmp_path)
    report, paths = make_report(ReportInput(labels), tmp_path / "out")
    left = dict(report.left_out)
    assert left["label issues per slice"].startswith("the dataset was never scored")
    assert left["top issues of each queue"].startswith("the dataset was never scored")
    assert "no evaluation" in left["detector quality per class, confusion matrix, precision/recall curves"]
    assert report.slices is None and report.thumbs == [] and {f.section for f in report.figures} == {"dataset"}
    text = all_text(paths)
    for t in text.values():
        assert "never scored" in t and "no evaluation" in t and not EXTERNAL.search(t)
    assert 'id="top-slices"' not in text["html"] and 'id="left-out"' in text["html"]
    assert "Left out:" in text["md"] and "## Label issues per slice" not in text["md"]
    doc = json.loads(text["json"])
    assert doc["slices"] is None and {d["section"] for d in doc["left_out"]} >= {"label issues per slice"}
    assert list((tmp_path / "out" / "thumbs").iterdir()) == []
    # scored but without brightness, sources or PR curves: those parts are left out, with why
    labels, issues = small_dataset(tmp_path)
    ev = evaluation(labels)
    del ev["pr_curves"]
    report = build_report(ReportInput(labels, issues, evaluation=ev,
                                      why_no_evaluation="unused"), top_n=1)
    left = dict(report.left_out)
    assert left["slices by image brightness"] == "no image brightness was measured"
    assert left["slices by import source"] == "no import source was recorded for the images"
    assert "precision/recall curves" in " ".join(left)
    assert "confusion" in {f.name for f in report.figures}


def test_empty_dataset_and_missing_image(tmp_path):
    report = build_report(ReportInput(LabelSet([], []), issues=[]))
    assert {s for s, _ in report.left_out} >= {"instances and images per class and split", "boxes per image"}
    rec = ImageRecord(str(tmp_path / "nope.png"), 50, 50, Annotations([[1, 1, 9, 9]], [0]))
    data, drawn = thumbnail(rec, Issue(rec.filepath, "swap", 0.5, "x", box=0), ["a"])
    assert drawn == "image not readable" and cv2.imdecode(np.frombuffer(data, np.uint8), 1) is not None
