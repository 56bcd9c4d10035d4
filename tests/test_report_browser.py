"""In a real browser (headless Chromium): the report page opens from disk (file://), every image
renders and the top slice table is there. Skipped when chromium, chromedriver or selenium is absent.

The screenshot goes to the test's tmp dir, and to docs/report.png when that file is missing or
CVCURATE_SCREENSHOTS=1 (so a plain test run never changes a tracked file).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.chrome import headless_chrome

from cvcurate.analysis import ReportInput, make_report, pr_curves
from cvcurate.detector.evaluate import evaluate
from cvcurate.synth import CLASSES, SynthConfig, image_rng, render_image
from cvcurate.types import Annotations, ImageRecord, Issue, LabelSet

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "report.png"


def browser(width: int = 1400, height: int = 2000):
    return headless_chrome(width, height)


def synth_input(folder: Path, n: int = 36) -> ReportInput:
    """Synthetic steel images with a few issues of each kind and an evaluation of noisy predictions."""
    cfg = SynthConfig()
    folder.mkdir(parents=True, exist_ok=True)
    recs, preds, bright = [], [], []
    rng = np.random.default_rng(3)
    for i in range(n):
        r = render_image(image_rng(7, i), cfg)
        path = folder / f"synth_{i:03d}.png"
        cv2.imwrite(str(path), r.image)
        bright.append(float(r.image.mean()))
        gt = Annotations([d.xyxy for d in r.defects], [d.class_id for d in r.defects])
        recs.append(ImageRecord(str(path), r.image.shape[1], r.image.shape[0], gt,
                                split="val" if i % 4 == 0 else "train"))
        keep = rng.random(len(gt)) > 0.15
        cls = np.where(rng.random(len(gt)) < 0.15, rng.integers(0, len(CLASSES), len(gt)), gt.class_id)
        preds.append(Annotations(gt.xyxy[keep] + rng.normal(0, 3, (int(keep.sum()), 4)), cls[keep],
                                 rng.uniform(0.3, 1.0, int(keep.sum()))))
    labels = LabelSet(list(CLASSES), recs)
    issues = []
    for i, rec in enumerate(recs):
        if i % 3 == 0:
            j = 0
            c = (int(rec.gt.class_id[j]) + 1) % len(CLASSES)
            issues.append(Issue(rec.filepath, "swap", 0.5 + i / (2 * n),
                                f"box {j} is labelled {CLASSES[rec.gt.class_id[j]]} but the model sees a "
                                f"{CLASSES[c]} there (confidence 0.8{i % 10})", box=j,
                                data={"pred_box": (rec.gt.xyxy[j] + 4).tolist(), "pred_class": c}))
        if i % 5 == 1:
            issues.append(Issue(rec.filepath, "overlooked", 0.4 + i / (2 * n),
                                "the model sees a scratches at [20, 30, 60, 150] (confidence 0.77) that no given "
                                "box covers", data={"pred_box": [20, 30, 60, 150], "pred_class": 5}))
        if i % 7 == 2:
            issues.append(Issue(rec.filepath, "badloc", 0.6, f"box 0 ({CLASSES[rec.gt.class_id[0]]}) overlaps the "
                                "model's box only at IoU 0.31", box=0,
                                data={"pred_box": (rec.gt.xyxy[0] + [15, 10, 25, 5]).tolist()}))
        if i % 11 == 3:
            issues.append(Issue(rec.filepath, "size_outlier", 0.7, "box 0 is far larger than the class's boxes "
                                "(robust z +3.9)", box=0))
        if i == 5:
            issues.append(Issue(rec.filepath, "blur", 0.8, "much less sharp than the rest of the dataset"))
    ev = evaluate([r.gt for r in recs], preds, CLASSES).to_dict()
    ev["pr_curves"] = pr_curves([r.gt for r in recs], preds, CLASSES)
    sources = ["neu-det" if i % 2 else "synth" for i in range(n)]
    return ReportInput(labels, issues, brightness=np.array(bright), sources=sources, evaluation=ev,
                       title="cvcurate report: synth", subtitle="dataset synth (36 synthetic steel images), "
                       "predictions field predictions, score run of today")


def test_report_renders_in_chromium(tmp_path):
    driver = browser()
    try:
        inp = synth_input(tmp_path / "images")
        report, paths = make_report(inp, tmp_path / "report")
        assert report.thumbs and len(report.figures) == 6
        driver.get(paths["html"].resolve().as_uri())
        state = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
        assert len(state) == len(report.figures) + len(report.thumbs)
        bad = [s for s in state if not (s[0] and s[1] > 0 and s[2] > 0)]
        assert not bad, bad
        rows = driver.find_elements("css selector", "#top-slices tbody tr")
        assert len(rows) == min(10, sum(len(v) for v in report.slices.kinds.values()))
        first = report.slices.ranked()[0]
        assert rows[0].find_elements("tag name", "td")[0].text == first.name
        assert "Label issues per slice" in driver.find_element("tag name", "body").text
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 20_000
    if os.environ.get("CVCURATE_SCREENSHOTS") == "1" or not DOCS.exists():
        DOCS.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS)
