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


def test_a_degenerate_box_is_not_also_a_size_outlier():
    """A box with a side <= 1 px is a degenerate issue (certain); listing it again as a size
    outlier would be a second, weaker issue for the same fault: only the degenerate one is listed;
    a thin but real box (2 px) stays a size outlier."""
    labels = grid_labels(n=100, seed=2)
    rec = labels.records[5]
    rec.gt = Annotations(np.vstack([rec.gt.xyxy, [[10, 10, 60, 11], [0, 0, 200, 2.5]]]), np.append(rec.gt.class_id, [0, 0]))
    thin, flat = len(rec.gt) - 2, len(rec.gt) - 1
    assert [(i.type, i.box) for i in g.box_issues(labels) if i.filepath == rec.filepath] == [("degenerate", thin)]
    out = {(i.filepath, i.box) for i in g.size_outliers(labels)}
    assert (rec.filepath, flat) in out and (rec.filepath, thin) not in out


def random_labels(n=400, seed=0):
    """Overlapping, inverted, degenerate and outside boxes, pieces and copies, empty images."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        w, h = int(rng.integers(50, 400)), int(rng.integers(50, 400))
        k = int(rng.choice([0, 1, 2, 3, 5, 9]))
        xy = rng.uniform(-20, 1.1 * max(w, h), size=(k, 2))
        wh = rng.choice([0, 0.5, 1, 2, 10, 40, 100], size=(k, 2)) * rng.uniform(0.5, 1.5, size=(k, 2))
        wh[rng.random((k, 2)) < 0.05] *= -1
        boxes = np.hstack([xy, xy + wh])
        if k >= 2 and rng.random() < 0.5:  # a copy, or a box cut in two pieces
            boxes[1] = boxes[0] + rng.choice([0, 0.5, 1], size=4)
            if rng.random() < 0.5:
                b = boxes[0].copy()
                half = (b[0] + b[2]) / 2
                boxes[0, 2] = half
                boxes[1] = [half + rng.choice([0, 1, 3]), b[1], b[2], b[3]]
        recs.append(ImageRecord(f"/r/{i}.jpg", w, h, Annotations(np.round(boxes), rng.integers(0, 3, size=k))))
    return LabelSet(["a", "b", "c"], recs)


def test_whole_dataset_equals_image_by_image():
    """The checks run on all boxes at once; the result is what checking each image alone gives."""
    labels = random_labels()
    whole = g.box_issues(labels)
    alone = [i for r in labels.records for i in g.box_issues(LabelSet(labels.classes, [r]))]
    assert whole == alone
    assert {i.type for i in whole} == {"degenerate", "out_of_image", "duplicate", "class_conflict", "fragment"}


def test_vectorised_fragment_rules_equal_scalar_rules():
    labels = random_labels(seed=3)
    boxes = np.concatenate([r.gt.xyxy for r in labels.records])
    rng = np.random.default_rng(0)
    a, b = boxes[rng.integers(len(boxes), size=3000)], boxes[rng.integers(len(boxes), size=3000)]
    # pieces of one box, with gaps and overlaps around the limits
    cut = a[:500].copy()
    mid = (cut[:, 0] + cut[:, 2]) / 2 + rng.choice([-2, -0.5, 0, 0.5, 1, 3], size=500)
    b[:500] = np.column_stack([mid, cut[:, 1], cut[:, 2], cut[:, 3]])
    a[:500, 2] = mid - rng.choice([0, 0.25, 1], size=500)
    a[:3] = [[0, 0, np.nan, 5], [np.inf, 0, 5, 5], [0, 0, 10, 10]]
    cfg = g.GeometryConfig()
    fast = g._fragment_scores(a, b, cfg)
    slow = [g._fragment_score(x, y, cfg) for x, y in zip(a, b)]
    assert fast.tolist() == slow and (fast > 0).sum() > 100


def _class_mix_reference(labels, frac_limit):
    k = len(labels.classes)
    present = np.array([np.bincount(r.gt.class_id, minlength=k) > 0 for r in labels.records]).astype(np.int64)
    co = present.T @ present
    per_class = np.diag(co)
    out = []
    for idx in np.flatnonzero(present.sum(axis=1) >= 2):
        cls = np.flatnonzero(present[idx])
        worst, pair = 1.0, None
        for a in range(len(cls)):
            for b in range(a + 1, len(cls)):
                frac = co[cls[a], cls[b]] / max(1, min(per_class[cls[a]], per_class[cls[b]]))
                if frac < worst:
                    worst, pair = frac, (cls[a], cls[b])
        if pair is not None and worst < frac_limit:
            out.append((labels.records[idx].filepath, pair, float(1 - worst / frac_limit) * 0.5 + 0.5))
    return out


def test_rarest_class_pair_and_ties():
    rng = np.random.default_rng(7)
    recs = []
    for i in range(300):
        cls = list(rng.choice(6, size=int(rng.integers(1, 4))))
        if i % 60 == 5:
            cls = [3, 4, 5, 0]  # rare pairs with equal rarity: the first in class order wins
        boxes = [[10 * j, 0, 10 * j + 5, 5] for j in range(len(cls))]
        recs.append(ImageRecord(f"/m/{i}.jpg", 100, 100, Annotations(boxes, cls)))
    labels = LabelSet([f"k{j}" for j in range(6)], recs)
    for limit in (0.02, 0.2, 0.5, 1.5):
        got = g.class_mix_issues(labels, g.GeometryConfig(rare_mix_fraction=limit))
        names = [[n.strip("'") for n in i.reason.split(" appear")[0].split(" and ")] for i in got]
        assert all(i.reason.startswith("'k") for i in got)  # class names quoted
        pairs = [(i.filepath, tuple(labels.classes.index(c) for c in n), i.score) for i, n in zip(got, names)]
        assert pairs == _class_mix_reference(labels, limit), limit


def test_style_merged():
    recs = [ImageRecord(f"i{k}.jpg", 100, 100, Annotations([[x, 10, x + 6, 40] for x in range(0, 40, 8)], [0] * 5))
            for k in range(30)]
    recs.append(ImageRecord("one.jpg", 100, 100, Annotations([[0, 10, 40, 40]], [0])))
    style = g.style_issues(LabelSet(["a"], recs))
    assert [(i.filepath, i.type, i.data) for i in style] == [("one.jpg", "style_merged", {"class": "a"})]
    assert style[0].score == 1 - 1 / 5


def test_class_names_are_quoted_in_reasons():
    # class "3" must never read as a count
    recs = [ImageRecord(f"i{k}.jpg", 100, 100, Annotations([[x, 10, x + 6, 40] for x in range(0, 40, 8)], [0] * 5))
            for k in range(30)]
    recs.append(ImageRecord("one.jpg", 100, 100, Annotations([[0, 10, 40, 40]], [0])))
    style = g.style_issues(LabelSet(["3"], recs))
    assert style[0].reason == "1 '3' box(es) here; this class usually has 5 per image"
    assert style[0].data == {"class": "3"}  # the data keeps the bare name
    rec = ImageRecord("f.jpg", 200, 100, Annotations([[10, 10, 30, 50], [32, 10, 52, 50], [0, 0, 0, 30]], [0, 0, 0]))
    reasons = {i.type: i.reason for i in g.box_issues(LabelSet(["3"], [rec]))}
    assert reasons["degenerate"].startswith("box 2 ('3') has width 0")
    assert reasons["fragment"].startswith("boxes 0 and 1 ('3') look like pieces of one box")
