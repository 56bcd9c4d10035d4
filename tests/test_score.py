"""The score stage: injected errors rank at the top of their queues; results reach the store and files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import corrupt, store
from cvcurate.cli import app
from cvcurate.scoring import QUEUES, ScoreConfig, score
from cvcurate.scoring.objectlab import ObjectLabConfig
from cvcurate.scoring.signals import Thresholds
from cvcurate.types import Annotations
from tests import makedata as md
from tests.test_corrupt import grid_labels


def weak_model_predictions(labels, seed=0):
    """What a detector trained from scratch gives: right boxes at modest confidence, some noise."""
    rng = np.random.default_rng(seed)
    k = len(labels.classes)
    out = []
    for r in labels.records:
        g = r.gt
        xy = g.xyxy + rng.normal(0, 2, size=g.xyxy.shape)
        conf = rng.uniform(0.35, 0.75, size=len(g))
        fp = rng.uniform(0, 160, size=(3, 2))
        fpb = np.hstack([fp, fp + rng.uniform(10, 40, size=(3, 2))])
        out.append(Annotations(np.vstack([xy, fpb]), np.concatenate([g.class_id, rng.integers(0, k, 3)]),
                               confidence=np.concatenate([conf, rng.uniform(0.01, 0.3, 3)])))
    return out


@pytest.fixture(scope="module")
def scored():
    clean = grid_labels(n=300, seed=4)
    preds = weak_model_predictions(clean)  # the model saw the true labels
    res = corrupt.corrupt(clean, rate=0.2, seed=1)
    return res, score(res.labels, predictions=preds)


def test_thresholds_are_calibrated_below_cleanlab_defaults(scored):
    res, result = scored
    th, cfg = result.thresholds, ObjectLabConfig()
    # the weak model never reaches cleanlab's 0.95: the thresholds come from the data instead, each the
    # lowest confidence at which the fitted precision reaches its target
    assert th.how == "precision targets reached"
    assert th.high < 0.95 and th.low <= th.high
    for t, target in ((th.high, cfg.high_precision), (th.low, cfg.low_precision)):
        i = int(np.searchsorted(th.grid, t))
        assert th.grid[i] == t and th.precision[i] >= target and (i == 0 or th.precision[i - 1] < target), (t, target)
    # the other path: a copy scored with given thresholds (``thresholds=``, as the calibration scores its
    # copies with the original's) uses them instead of fitting its own, and they change what it finds
    given = Thresholds(low=0.6, high=0.7, how="given")
    other = score(res.labels, predictions=weak_model_predictions(grid_labels(n=300, seed=4)), thresholds=given)
    assert other.thresholds is given and other.objectlab.signals.thresholds is given
    assert other.counts() != result.counts(), other.counts()


@pytest.mark.parametrize("kind,queue", [
    ("swap", "swap"), ("overlooked", "overlooked"), ("badloc", "badloc"), ("spurious", "badloc"),
    ("degenerate", "geometry"), ("split", "inconsistent"), ("merge", "inconsistent"),
])
def test_each_error_type_tops_its_queue(kind, queue):
    clean = grid_labels(n=300, seed=4)
    preds = weak_model_predictions(clean)
    res = corrupt.corrupt(clean, rate=0.1, seed=2, types=[kind])
    result = score(res.labels, predictions=preds)
    queue_types = QUEUES[queue]
    truth = {e.filepath for e in res.errors}
    ranked = []
    for i in sorted((i for i in result.issues if i.type in queue_types), key=lambda i: -i.score):
        if i.filepath not in ranked:
            ranked.append(i.filepath)
    top = ranked[:len(truth)]
    recall_at_k = len(set(top) & truth) / len(truth)
    assert recall_at_k >= 0.8, (kind, recall_at_k, len(truth))


def test_combined_ranking_finds_corrupted_images(scored):
    from sklearn.metrics import average_precision_score

    res, result = scored
    truth = {e.filepath for e in res.errors}
    y = np.array([r.filepath in truth for r in res.labels.records])
    ap = average_precision_score(y, result.image_score)
    assert ap >= 0.8, ap


def test_images_no_issue_names_are_still_ranked(scored):
    """An image's score counts its boxes and predictions below the listing threshold too: images
    without a listed issue are not one tie at 0, their order follows their boxes' p, and every
    score is at least what its listed issues give (1 - prod(1 - p))."""
    res, result = scored
    ol = result.objectlab
    pr, s = ol.probabilities, ol.signals
    n = len(res.labels.records)
    listed = np.ones(n)
    index = {r.filepath: i for i, r in enumerate(res.labels.records)}
    for iss in result.issues:
        listed[index[iss.filepath]] *= 1 - iss.score
    assert np.all(result.image_score >= 1 - listed - 1e-12)
    named = {iss.filepath for iss in result.issues}
    quiet = np.array([r.filepath not in named for r in res.labels.records])
    assert quiet.sum() >= 50
    q = result.image_score[quiet]
    assert (q > 0).all() and len(np.unique(q)) >= 0.9 * len(q)  # ranked, not tied at 0
    # each quiet image's score is exactly what its units below the threshold give
    low = np.ones(n)
    np.multiply.at(low, s.given.image, 1 - pr.best)
    np.multiply.at(low, s.pred.image, 1 - pr.overlooked)
    assert np.allclose(q, 1 - low[quiet])


def test_clean_data_yields_few_issues():
    clean = grid_labels(n=300, seed=4)
    result = score(clean, predictions=weak_model_predictions(clean))
    flagged = {i.filepath for i in result.issues}
    assert len(flagged) <= 0.05 * len(clean), result.counts()


def test_works_without_predictions(scored):
    res, _ = scored
    result = score(res.labels)
    assert not result.used_predictions and result.thresholds is None
    assert {"swap", "overlooked", "badloc"}.isdisjoint(result.counts())
    assert result.counts().get("degenerate", 0) + result.counts().get("out_of_image", 0) > 0


def test_score_cli_writes_store_views_and_files(tmp_path, dataset_name):
    labels = md.make_labels(tmp_path / "images", n=30, width=96, height=80)
    res = corrupt.corrupt(labels, rate=0.3, seed=0, types=["degenerate", "swap"])
    store.write(res.labels, dataset_name)
    r = CliRunner().invoke(app, ["score", dataset_name, "--out", str(tmp_path / "s1")])
    assert r.exit_code == 0, r.output
    assert "model-free checks only" in r.output
    ds = store.load(dataset_name)
    assert set(ds.list_saved_views()) == ({"cvc-all", "cvc-all-all"} | {f"cvc-{q}" for q in QUEUES}
                                          | {f"cvc-{q}-all" for q in QUEUES})
    geo = ds.load_saved_view("cvc-geometry")
    deg = {e.filepath for e in res.errors if e.type == "degenerate"}
    assert set(geo.values("filepath")) == deg
    scores = geo.values("cvc_geometry")
    assert scores == sorted(scores, reverse=True)
    # the issue's suspect box says it; nothing is written into the labels themselves
    assert "degenerate" in ds.values("cvc_suspects.detections.cvc_type", unwind=True)
    assert not [p for p in ds.get_field_schema(flat=True) if p.startswith("ground_truth.detections.cvc_")]
    data = json.loads((tmp_path / "s1" / "scores.json").read_text())
    assert data["counts"]["degenerate"] + data["counts"].get("out_of_image", 0) >= len(deg)
    assert (tmp_path / "s1" / "issues.csv").read_text().count("\n") == len(data["issues"]) + 1

    # with predictions: a run replaces the previous one, and the field is checked
    recs = store.read(dataset_name).records
    preds = weak_model_predictions(store.read(dataset_name))
    store.write_detections(dataset_name, "predictions", recs, preds, labels.classes)
    r = CliRunner().invoke(app, ["score", dataset_name, "--predictions", "predictions", "--no-pixels",
                                 "--out", str(tmp_path / "s2")])
    assert r.exit_code == 0, r.output
    assert "confidence thresholds from the data" in r.output
    assert store.get_runs(dataset_name)["score"]["pred_field"] == "predictions"
    removed = store.delete_run(dataset_name, "score")
    assert "cvc_score" in removed and "cvc_score" not in store.load(dataset_name).get_field_schema()
    r = CliRunner().invoke(app, ["score", dataset_name, "--predictions", "nope"])
    assert r.exit_code == 2 and "no field 'nope'" in r.output


def test_config_rejects_unknown_weight(tmp_path):
    from cvcurate.config import load_config
    from cvcurate.errors import ConfigError

    p = tmp_path / "s.yaml"
    p.write_text("weights:\n  swapp: 0.5\n")
    with pytest.raises(ConfigError, match="unknown issue type"):
        load_config(ScoreConfig, p)
    p.write_text("geometry:\n  duplicate_io: 0.5\n")
    with pytest.raises(ConfigError, match="did you mean 'duplicate_iou'"):
        load_config(ScoreConfig, p)


def test_truth_metrics_match_the_injected_errors(scored):
    from cvcurate.scoring.truth import truth_metrics

    res, result = scored
    m = truth_metrics(result, res.to_dict())
    assert m.corrupted == len({e.filepath for e in res.errors}) and m.images == len(res.labels)
    assert sum(v["count"] for v in m.per_type.values()) == len(res.errors)
    assert 0 <= m.found_in_top_k <= m.corrupted and 0.5 < m.average_precision <= 1 + 1e-9
    # a perfect ranking scores AP 1
    perfect = type(result)(**{**result.__dict__, "image_score": np.array(
        [float(r.filepath in {e.filepath for e in res.errors}) for r in res.labels.records])})
    assert truth_metrics(perfect, res.to_dict()).average_precision == pytest.approx(1.0)


def test_shipped_score_config_equals_the_defaults():
    from cvcurate.config import CONFIG_DIR, load_config

    assert load_config(ScoreConfig, CONFIG_DIR / "score.yaml") == ScoreConfig()


def _shown(xyxy: np.ndarray, wh: tuple[int, int] | None, grow: float) -> np.ndarray:
    """For display: a box grown (or shrunk) by 5 % of the image side (at least 3 px) ``grow``
    times, so that a suspect drawn around its ground-truth box, a second suspect around the first,
    or a relabel / remove fix drawn inside it, and their labels stay visible instead of hiding
    under the same outline."""
    w, h = wh or (0, 0)
    pad = max(3.0, 0.05 * max(w or 0, h or 0)) * grow
    x1, y1, x2, y2 = map(float, xyxy.tolist() if isinstance(xyxy, np.ndarray) else xyxy)  # plain floats: called per box
    b = [x1 - pad, y1 - pad, x2 + pad, y2 + pad]
    if grow < 0 and (b[2] <= b[0] or b[3] <= b[1]):
        return np.array([x1, y1, x2, y2])
    if w and h:
        b = [min(max(v, 0.0), float(side)) for v, side in zip(b, (w, h, w, h))]
    return np.array(b)


def test_display_boxes_in_one_pass_equal_one_by_one():
    """Oracle: the display boxes of all suspects (and fixes) at once are those of :func:`_shown`
    one by one (grown around a box, a frame inside the border for an image issue, clipped to the
    image, the box itself where a frame would shrink to nothing; a relabel or remove fix shrunk one
    step inside its box, other fixes where they are)."""
    from types import SimpleNamespace

    from cvcurate.stages.score_write import _fix_boxes, _suspect_boxes

    rng = np.random.default_rng(0)
    sizes, rows = {}, []
    for i in range(200):
        wh = [(200, 200), (0, 0), (640, 480), None][i % 4]
        if wh is not None:
            sizes[f"s{i}"] = wh
        sus = []
        for _ in range(int(rng.integers(0, 5))):
            x1, y1 = rng.uniform(-5, 190, 2)
            bw, bh = rng.uniform(0, 30, 2)
            sus.append((np.array([x1, y1, x1 + bw, y1 + bh]), [None, 0, 1][rng.integers(3)],
                        ["overlooked", "swap", "duplicate"][rng.integers(3)], 0.5, "why", "id",
                        [None, "x"][rng.integers(2)], int(rng.integers(0, 3))))
        fixes = [SimpleNamespace(xyxy=np.array([x1, y1, x1 + rng.uniform(0, 30), y1 + rng.uniform(0, 30)]),
                                 action=["relabel", "remove", "move", "add"][rng.integers(4)])
                 for x1, y1 in rng.uniform(-5, 190, (int(rng.integers(0, 4)), 2))]
        rows.append(SimpleNamespace(sample_id=f"s{i}", suspects=sus, fixes=fixes))
    drawn = _fix_boxes(rows, sizes)
    m = 0
    for r in rows:
        assert len(drawn[r.sample_id]) == len(r.fixes)
        for f, g in zip(r.fixes, drawn[r.sample_id]):
            want = _shown(f.xyxy, sizes.get(r.sample_id), -1) if f.action in ("relabel", "remove") else f.xyxy
            np.testing.assert_allclose(g, want)
            m += f.action in ("relabel", "remove")
    assert m > 100
    got = _suspect_boxes(rows, sizes)
    n = 0
    for r in rows:
        assert len(got[r.sample_id]) == len(r.suspects)
        for s, g in zip(r.suspects, got[r.sample_id]):
            b, j, t, _, _, _, target, nest = s
            grow = (1 + nest) if (j is not None or target is None and t == "overlooked") else -(1 + nest)
            np.testing.assert_allclose(g, _shown(b, sizes.get(r.sample_id), grow))
            n += 1
    assert n > 300


def test_a_size_outlier_the_model_draws_alike_is_less_likely_an_error():
    """The same odd-sized box in two images: where the model draws it too (a confident prediction of
    its class over it) its size_outlier ``p`` falls below the shipped prior, and the reason says
    why; where the model sees nothing there, the prior stands."""
    labels = grid_labels(n=120, seed=2)
    odd = [0.0, 0.0, 200.0, 5.0]
    for k in (5, 6):
        rec = labels.records[k]
        rec.gt = Annotations(np.vstack([rec.gt.xyxy, [odd]]), np.append(rec.gt.class_id, 0))
    preds = weak_model_predictions(labels)
    seen = preds[5]  # every given box has a noisy prediction; the odd box's is at its row
    unseen = preds[6]
    keep = np.ones(len(unseen), bool)
    keep[len(labels.records[6].gt) - 1] = False  # image 6: the model sees nothing where the odd box is
    preds[6] = Annotations(unseen.xyxy[keep], unseen.class_id[keep], confidence=unseen.confidence[keep])
    seen.xyxy[len(labels.records[5].gt) - 1] = odd  # drawn alike, confidently
    seen.confidence[len(labels.records[5].gt) - 1] = 0.9
    cfg = ScoreConfig()
    cfg.calibration.list_min_p = 0.0  # list every size outlier, however unlikely
    res = score(labels, predictions=preds, cfg=cfg)
    odd_issue = {i.filepath: i for i in res.issues if i.type == "size_outlier"
                 and i.box == len(labels.records[5].gt) - 1 and i.filepath in (labels.records[5].filepath,
                                                                            labels.records[6].filepath)}
    a, b = odd_issue[labels.records[5].filepath], odd_issue[labels.records[6].filepath]
    assert b.score == pytest.approx(b.data["raw"] * cfg.weights["size_outlier"]) and "support" not in b.data
    assert a.score < 0.5 * b.score and a.data["support"] > 0.5 and a.data["prior_p"] == pytest.approx(b.score)
    assert "the model draws it too" in a.reason and "the model draws" not in b.reason
