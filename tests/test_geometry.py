"""Model-free box checks: each injected geometric error is found and ranked; clean data is quiet."""

from __future__ import annotations

import numpy as np

from cvcurate import corrupt
from cvcurate.scoring import geometry as g
from cvcurate.types import Annotations, ImageRecord, LabelSet
from tests.test_corrupt import grid_labels


def one(boxes, classes, w=100, h=100):
    return LabelSet(["a", "b"], [ImageRecord("x.jpg", w, h, Annotations(np.array(boxes, float), classes))])


def types_of(issues):
    return sorted((i.type, i.box) for i in issues)


def test_each_box_check_on_a_hand_made_image():
    assert types_of(g.box_issues(one([[10, 10, 10, 30]], [0]))) == [("degenerate", 0)]
    iss = g.box_issues(one([[80, 10, 130, 30]], [0]))
    assert types_of(iss) == [("out_of_image", 0)] and "60% of box 0" in iss[0].reason
    assert types_of(g.box_issues(one([[10, 10, 50, 50], [11, 10, 50, 51]], [0, 0]))) == [("duplicate", 1)]
    assert types_of(g.box_issues(one([[10, 10, 50, 50], [11, 10, 50, 51]], [0, 1]))) == [("class_conflict", 1)]
    assert types_of(g.box_issues(one([[10, 10, 30, 50], [32, 10, 52, 50]], [0, 0]))) == [("fragment", 1)]
    # separate boxes of one class are not fragments
    assert g.box_issues(one([[10, 10, 30, 50], [60, 60, 70, 90]], [0, 0])) == []


def test_fragment_score_falls_with_the_gap():
    scores = [g.box_issues(one([[10, 10, 30, 50], [30 + gap, 10, 50 + gap, 50]], [0, 0]))[0].score
              for gap in (0, 1, 2)]
    assert scores[0] > scores[1] > scores[2] >= 0.5


def test_injected_geometry_errors_rank_on_top():
    labels = grid_labels(n=200, seed=1)
    assert g.box_issues(labels) == []  # clean data: no box issues
    res = corrupt.corrupt(labels, rate=0.2, seed=0, types=["degenerate", "split"])
    issues = g.box_issues(res.labels)
    truth = {e.filepath: e for e in res.errors}
    for kind, checks in (("degenerate", ("degenerate", "out_of_image")), ("split", ("fragment",))):
        expected = {p for p, e in truth.items() if e.type == kind}
        found = {i.filepath for i in issues if i.type in checks}
        assert expected and expected <= found, kind
    # every flagged image is a corrupted one
    assert {i.filepath for i in issues} <= set(truth)


def test_size_outlier_and_style():
    labels = grid_labels(n=100, seed=2)
    rec = labels.records[5]
    rec.gt = Annotations(np.vstack([rec.gt.xyxy, [[0, 0, 200, 5]]]), np.append(rec.gt.class_id, 0))
    out = g.size_outliers(labels)
    assert out and out[0].filepath == rec.filepath and out[0].box == len(rec.gt) - 1
    assert max(out, key=lambda i: i.score).filepath == rec.filepath
    # one image with 12 boxes of a class that usually has 1 per image
    recs = [ImageRecord(f"i{k}.jpg", 100, 100, Annotations([[10, 10, 40, 40]], [0])) for k in range(30)]
    recs.append(ImageRecord("many.jpg", 100, 100, Annotations([[x, 10, x + 6, 40] for x in range(0, 96, 8)], [0] * 12)))
    style = g.style_issues(LabelSet(["a"], recs))
    assert [(i.filepath, i.type) for i in style] == [("many.jpg", "style_fragmented")]
