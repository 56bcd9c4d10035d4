"""The learned error model (cvcurate.scoring.model): strict order within a type, the zero-rate
case, cross-fitting by image, the PU correction's count, and a boxing habit is not an error."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from cvcurate.scoring import model as em
from cvcurate.scoring import overlooked as ov
from cvcurate.scoring.boxpixels import PIXEL_FEATURES
from cvcurate.scoring.conventions import style_cap
from cvcurate.scoring.model import BOX_TYPES, FEATURES, ModelConfig


def test_p_strictly_increases_with_the_odds_and_stays_below_one():
    g0 = np.full(200, 0.5)
    gt = np.linspace(1e-4, 0.5, 200)
    p = em.probability(g0, gt, natural=30.0, n_units=1000)
    assert np.all(np.diff(p) > 0) and p.max() < 1.0  # no flat steps, no ties, never 1
    assert np.isclose(p[0], 30 / 1000 * gt[0] / 0.5, rtol=1e-3)  # p = N / n_U * odds where small


def test_natural_count_integrates_over_its_uncertainty_and_is_never_zero():
    edges = 25
    q_e = np.zeros(edges)
    q_e[-5:] = 0.2  # injected errors score high
    h_u = np.zeros(edges)
    h_u[:5] = 200.0  # every unit as given scores low: the point estimate would be 0
    mean, sd = em.natural_count(h_u, q_e, 1000, 0.3, prior_rate=0.02, prior_weight=50)
    assert 0 < mean < 20 and sd > 0  # shrunk toward the prior, not 0
    h_u2 = h_u.copy()
    h_u2[-5:] = 8.0  # 40 units look like injected errors
    mean2, _ = em.natural_count(h_u2, q_e, 1040, 0.3, prior_rate=0.02, prior_weight=50)
    assert 30 < mean2 < 50 and mean2 > mean


# each type's own evidence column (the one its booster is monotone in)
EV = [FEATURES.index(f) for f in ("ev_swap", "ev_badloc", "ev_spurious", "split", "merged")]


def _toy(n_img=300, boxes=4, err=600, seed=0, natural=0, pixels=False):
    """Units as given (the evidence columns low) and injected errors of each type (its evidence
    column high), scored without pixels (their features unknown: NaN)."""
    rng = np.random.default_rng(seed)
    f = len(FEATURES)
    x_u = rng.normal(0, 1, (n_img * boxes, f))
    x_u[:, FEATURES.index("cls")] = rng.integers(0, 3, len(x_u))
    img_u = np.repeat(np.arange(n_img), boxes)
    types = rng.integers(0, len(BOX_TYPES), err)
    x_e = rng.normal(0, 1, (err, f))
    x_e[:, FEATURES.index("cls")] = rng.integers(0, 3, err)
    x_e[np.arange(err), np.array(EV)[types]] += 6.0  # each type's own evidence says it
    img_e = rng.integers(0, n_img, err)
    if natural:  # some units as given are real errors of type 0
        x_u[:natural, EV[0]] += 6.0
    if not pixels:
        px = [FEATURES.index(k) for k in PIXEL_FEATURES]
        x_u[:, px] = np.nan
        x_e[:, px] = np.nan
    return x_u, img_u, x_e, types, img_e


def test_zero_rate_type_still_ranks_injected_like_units_first_and_above_half():
    x_u, img_u, x_e, types, img_e = _toy()
    x_u[0, EV[0]] += 8.0  # one unit as given with strong swap-like evidence
    m = em.fit(x_u, img_u, x_e, types, img_e, ModelConfig())
    p = m.oof["swap"]
    assert np.argmax(p) == 0 and p[0] > p[1:].max()
    assert p[0] > 0.5, p[0]
    assert np.median(p[1:]) < 0.05  # clean units stay low


def test_count_follows_the_natural_errors():
    x_u, img_u, x_e, types, img_e = _toy(natural=40, seed=1)
    m = em.fit(x_u, img_u, x_e, types, img_e, ModelConfig())
    assert 25 < m.natural["swap"] < 60, m.natural
    assert m.oof["swap"][:40].mean() > 0.5 > 0.01 > m.oof["swap"][40:].mean()
    assert 0.5 * m.natural["swap"] < m.oof["swap"].sum() <= 1.1 * m.natural["swap"]  # sum of p ~ the count


def test_cross_fitting_never_scores_a_unit_with_a_model_that_saw_its_image(monkeypatch):
    x_u, img_u, x_e, types, img_e = _toy(seed=2, pixels=True)  # rows told apart by their values: no NaN
    seen: list[set] = []
    real = em._classifier

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def fit(self, x, y, sample_weight=None):
            # the rows are units (feature rows of x_u) and injected errors: find their images
            rows_u = {tuple(r) for r in x}
            self.seen = ({int(i) for i, r in zip(img_u, x_u) if tuple(r) in rows_u}
                         | {int(i) for i, r in zip(img_e, x_e) if tuple(r) in rows_u})
            seen.append(self.seen)
            self.inner.fit(x, y, sample_weight=sample_weight)
            self.classes_ = self.inner.classes_
            return self

        def predict_proba(self, x):
            imgs = ({int(i) for i, r in zip(img_u, x_u) if any(np.array_equal(r, q) for q in x[:3])}
                    | {int(i) for i, r in zip(img_e, x_e) if any(np.array_equal(r, q) for q in x[:3])})
            assert imgs and not imgs & self.seen, "scored a unit with a model that trained on its image"
            return self.inner.predict_proba(x)

    monkeypatch.setattr(em, "_classifier", lambda *a: Spy(real(*a)))
    cfg = ModelConfig(max_iter=20)
    m = em.fit(x_u, img_u, x_e, types, img_e, cfg)
    assert np.isfinite(m.oof["swap"]).all()
    assert m is not None and len(seen) == cfg.folds
    folds = em.fold_of(np.arange(300), 3, 0)
    assert set(folds.tolist()) == {0, 1, 2}


def _signals(pieces_images: int, n_images: int = 20):
    """Signals of one class: every image has two boxes; in ``pieces_images`` of them the boxes
    are pieces of one object the model sees (split > 0)."""
    image = np.repeat(np.arange(n_images), 2)
    split = np.zeros(2 * n_images)
    split[: 2 * pieces_images] = 0.9
    given = SimpleNamespace(cls=np.zeros(2 * n_images, np.int64), image=image)
    return SimpleNamespace(given=given, split=split, merged=np.zeros(2 * n_images))


def test_a_class_boxed_in_pieces_is_a_habit_not_a_split():
    s = _signals(pieces_images=12)  # 60 % of its multi-box images
    box = {"split": np.full(40, 0.9), "merged": np.zeros(40)}
    notes = style_cap(s, box)
    assert box["split"].max() < 0.5 and notes and "in pieces in 60 %" in notes[0][1]
    s = _signals(pieces_images=2)  # 10 %: a real split stays queued
    box = {"split": np.full(40, 0.9), "merged": np.zeros(40)}
    assert not style_cap(s, box) and box["split"].max() == 0.9


def test_curves_strictly_increase_and_are_never_all_zero():
    """The fallback curves (overlooked, small data): a type whose units all look clean still ranks
    an injected-like unit above them, strictly (no flat steps, no zero curve)."""
    from cvcurate.scoring.calibrate import CalibrationConfig, fit_curve

    rng = np.random.default_rng(0)
    u = rng.uniform(0.02, 0.3, 2000)  # every unit as given has weak evidence: the point fit says N = 0
    e = rng.uniform(0.6, 1.0, 300)  # the injected errors have strong evidence
    cur = fit_curve("badloc", None, u, e, CalibrationConfig())
    s = np.linspace(0.03, 1.0, 50)
    p = cur(s)
    assert np.all(np.diff(p) > 0), p
    assert cur(np.array([0.95]))[0] > cur(np.array([0.1]))[0] + 0.01
    assert cur.natural > 0


def test_overlooked_model_ranks_a_dropped_box_first():
    """Predictions as units: the one over a box the labels miss ranks above those over given boxes."""
    rng = np.random.default_rng(4)
    f = len(ov.PRED_FEATURES)
    n = 1500
    x_u = rng.normal(0, 1, (n, f))
    x_u[:, ov.PRED_FEATURES.index("iou_any")] = rng.uniform(0.6, 1.0, n)  # predictions over given boxes
    x_u[:, -1] = rng.integers(0, 3, n)
    x_u[0, ov.PRED_FEATURES.index("iou_any")] = 0.0  # one the labels miss
    x_e = rng.normal(0, 1, (300, f))
    x_e[:, ov.PRED_FEATURES.index("iou_any")] = rng.uniform(0.0, 0.2, 300)
    x_e[:, -1] = rng.integers(0, 3, 300)
    s = SimpleNamespace(pred=SimpleNamespace(image=np.repeat(np.arange(300), 5)))
    om = ov.fit_overlooked(s, x_u, np.arange(n), x_e, rng.integers(0, 300, 300), ModelConfig(), {})
    assert om is not None and np.argmax(om.oof) == 0 and om.oof[0] > 0.5 > np.median(om.oof)


def test_the_same_labels_under_other_file_names_score_the_same():
    """The calibration's seeded draws go by the images' content, not their order or names."""
    from cvcurate.scoring import score
    from cvcurate.types import LabelSet
    from tests.test_calibration import make_data

    labels, preds = make_data()
    a = score(labels, predictions=preds)
    order = np.random.default_rng(9).permutation(len(labels.records))
    shuffled = LabelSet(labels.classes, [labels.records[i] for i in order])
    b = score(shuffled, predictions=[preds[i] for i in order])
    sa = dict(zip((r.filepath for r in labels.records), a.image_score))
    sb = dict(zip((r.filepath for r in shuffled.records), b.image_score))
    assert all(abs(sa[k] - sb[k]) < 1e-9 for k in sa)
