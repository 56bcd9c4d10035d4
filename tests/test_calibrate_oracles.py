"""Oracles for the code that replaced library calls and per-image loops in the calibration
(scoring/calibrate.py), on random inputs:

* ``pava_rows``: a min-max isotonic regression of many rows at once, which replaced one scikit-learn
  ``IsotonicRegression`` fit per row, against that fit row by row (both directions, with weights);
* ``_profile``: the mixture fit's clean counts and Poisson cost for every count ``N`` of a grid at once,
  against the loop it replaced (``IsotonicRegression(increasing=False, y_min=0)`` per ``N``);
* ``_injected_units``: the vectorised lookup of the injected errors' evidence in the scored copies,
  against a plain loop over the errors (the code it replaced).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from cvcurate.scoring.batch import FlatBoxes
from cvcurate.scoring.calibrate import CalibrationConfig, _profile, pava_rows
from cvcurate.scoring.units import BOX_TYPES, CALIBRATED_TYPES, INJECTED_AS, _injected_units, inject_copies


def sklearn_isotonic(y, w, increasing, y_min=None):
    x = np.arange(len(y), dtype=np.float64)
    return IsotonicRegression(increasing=increasing, y_min=y_min).fit(x, y, sample_weight=w).predict(x)


@pytest.mark.parametrize("increasing", [True, False])
@pytest.mark.parametrize("length", [1, 2, 3, 7, 25])
def test_pava_rows_equals_sklearn_isotonic_row_by_row(increasing, length):
    rng = np.random.default_rng(length * 2 + increasing)
    rows = 40
    y = rng.normal(0, 3, size=(rows, length))
    y[:5] = np.round(y[:5])  # ties
    y[5] = 1.5  # a constant row
    y[6] = np.arange(length)[::-1 if increasing else 1]  # wholly against the direction: one pool
    w = rng.uniform(0.05, 5.0, size=length)
    got = pava_rows(y, w, increasing=increasing)
    assert got.shape == (rows, length)
    for g in range(rows):
        want = sklearn_isotonic(y[g], w, increasing)
        np.testing.assert_allclose(got[g], want, rtol=0, atol=1e-9, err_msg=f"row {g}")
    # unit weights too (the usual case of the library call)
    ones = np.ones(length)
    got = pava_rows(y, ones, increasing=increasing)
    for g in range(rows):
        np.testing.assert_allclose(got[g], sklearn_isotonic(y[g], ones, increasing), rtol=0, atol=1e-9)


def test_pava_rows_on_a_known_sequence():
    # 1, 3, 2 -> 1, 2.5, 2.5 (equal weights); with weight 3 on the 3: 1, 2.75, 2.75
    np.testing.assert_allclose(pava_rows(np.array([[1.0, 3.0, 2.0]]), np.ones(3)), [[1.0, 2.5, 2.5]])
    np.testing.assert_allclose(pava_rows(np.array([[1.0, 3.0, 2.0]]), np.array([1.0, 3.0, 1.0])), [[1.0, 2.75, 2.75]])
    np.testing.assert_allclose(pava_rows(np.array([[1.0, 3.0, 2.0]]), np.ones(3), increasing=False), [[2.0, 2.0, 2.0]])


@pytest.mark.parametrize("seed", range(6))
def test_profile_equals_one_sklearn_fit_per_count(seed):
    """What ``mixture_fit`` computed for each N before: the clean counts, non-increasing and >= 0
    (sklearn's isotonic fit with y_min=0, weights 1/max(h, 1)), and the Poisson cost of h under c + N q."""
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(2, 26))
    hu = rng.poisson(rng.uniform(0, 60), size=bins).astype(np.float64)
    hu[: bins // 3] += rng.poisson(100, size=bins // 3)  # clean units gather at low evidence
    qe = rng.dirichlet(np.ones(bins))
    grid = np.unique(np.r_[0.0, np.geomspace(0.25, max(hu.sum(), 1.0), 30)])
    clean, costs = _profile(hu, qe, grid)
    assert clean.shape == (len(grid), bins) and costs.shape == (len(grid),)
    w = 1.0 / np.maximum(hu, 1.0)
    for i, n in enumerate(grid):
        c = sklearn_isotonic(hu - n * qe, w, increasing=False, y_min=0.0)
        lam = np.maximum(c + n * qe, 1e-6)
        np.testing.assert_allclose(clean[i], c, rtol=1e-9, atol=1e-9, err_msg=f"N={n}")
        assert costs[i] == pytest.approx(float(np.sum(lam - hu * np.log(lam))), rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# the injected errors' evidence


def loop_injected_units(s, errors):
    """One error at a time: each box error's own kept boxes (a degenerate result, not kept, is left
    out), and for a dropped box the strongest overlooked evidence among the predictions of its copy
    with IoU >= 0.3 with it (0 when none)."""
    by_kind = {v: k for k, v in INJECTED_AS.items()}
    kept_row = {int(b): k for k, b in enumerate(s.kept)}
    ev_box = {"swap": s.ev_swap, "badloc": s.ev_badloc, "spurious": s.ev_spurious, "split": s.split,
              "merged": s.merged}
    out = {t: ([], [], []) for t in CALIBRATED_TYPES}
    for j, err in errors:
        t = by_kind.get(err.type)
        if t is None:
            continue
        ev, cl, im = out[t]
        if t == "overlooked":
            box = [float(v) for v in err.original[0]]
            best = 0.0
            for r in range(int(s.pred.start[j]), int(s.pred.start[j] + s.pred.count[j])):
                p = [float(v) for v in s.pred.xyxy[r]]
                iw = max(0.0, min(p[2], box[2]) - max(p[0], box[0]))
                ih = max(0.0, min(p[3], box[3]) - max(p[1], box[1]))
                union = (p[2] - p[0]) * (p[3] - p[1]) + (box[2] - box[0]) * (box[3] - box[1]) - iw * ih
                if union > 0 and iw * ih / union >= 0.3:
                    best = max(best, float(s.ev_overlooked[r]))
            ev.append(best)
            cl.append(int(err.original_class[0]))
            im.append(j)
            continue
        for b in err.boxes:
            k = kept_row.get(int(s.batch.given.start[j]) + b)
            if k is None:
                continue
            ev.append(float(ev_box[t][k]))
            cl.append(int(s.given.cls[k]))
            im.append(j)
    return out


def assert_same_units(got, want):
    assert set(got) == set(CALIBRATED_TYPES)
    for t in CALIBRATED_TYPES:
        ev, cl, im = want[t]
        np.testing.assert_array_equal(got[t].evidence, np.asarray(ev, np.float64), err_msg=t)
        np.testing.assert_array_equal(got[t].cls, np.asarray(cl, np.int64), err_msg=t)
        np.testing.assert_array_equal(got[t].image, np.asarray(im, np.int64), err_msg=t)


def flat(xyxy, cls, count):
    start = np.cumsum(count) - count
    image = np.repeat(np.arange(len(count)), count)
    return FlatBoxes(xyxy=xyxy, cls=cls, conf=None, image=image, local=np.arange(len(image)) - start[image],
                     count=count, start=start)


def random_signals(rng, n_copies):
    """Signals-like arrays of ``n_copies`` scored copies: given boxes (some not kept, as degenerate
    ones are not), predictions (none in some copies, some piled on one spot), evidence per box and
    per prediction; and one or two injected errors per copy of every kind, unknown kinds included."""
    n_given = rng.integers(0, 5, size=n_copies)
    n_given[rng.random(n_copies) < 0.5] += 1
    g_start = np.cumsum(n_given) - n_given
    kept = np.flatnonzero(rng.random(int(n_given.sum())) < 0.85)
    k = len(kept)
    n_pred = rng.integers(0, 7, size=n_copies)
    p_start = np.cumsum(n_pred) - n_pred
    m = int(n_pred.sum())
    spot = rng.uniform(0, 80, size=(n_copies, 2))  # where each copy's dropped box lies
    xy = np.repeat(spot, n_pred, axis=0) + rng.normal(0, 6, size=(m, 2))  # near the dropped box ...
    far = rng.random(m) < 0.3
    xy[far] = rng.uniform(0, 80, size=(int(far.sum()), 2))  # ... or anywhere
    wh = rng.uniform(5, 25, size=(m, 2))
    pred_xyxy = np.hstack([xy, xy + wh])
    s = SimpleNamespace(
        kept=kept,
        batch=SimpleNamespace(given=flat(np.zeros((int(n_given.sum()), 4)), rng.integers(0, 4, size=int(n_given.sum())),
                                         n_given)),
        given=SimpleNamespace(cls=rng.integers(0, 4, size=k)),
        pred=flat(pred_xyxy, rng.integers(0, 4, size=m), n_pred),
        ev_overlooked=np.round(rng.random(m), 2), ev_swap=rng.random(k), ev_badloc=rng.random(k),
        ev_spurious=rng.random(k), split=rng.random(k), merged=rng.random(k))
    kinds = list(INJECTED_AS.values()) + ["overlooked"] * 3 + ["degenerate", "out_of_image", "duplicate"]
    errors = []
    for j in range(n_copies):
        for _ in range(int(rng.integers(1, 3))):
            kind = kinds[int(rng.integers(len(kinds)))]
            boxes = sorted(rng.choice(n_given[j], size=min(int(n_given[j]), int(rng.integers(1, 3))), replace=False)
                           .tolist()) if n_given[j] else []
            if kind == "overlooked":
                x, y = spot[j] + rng.normal(0, 2, size=2)
                w, h = rng.uniform(5, 25, size=2)
                errors.append((j, SimpleNamespace(type=kind, boxes=[], original=[[x, y, x + w, y + h]],
                                                  original_class=[int(rng.integers(4))])))
            else:
                errors.append((j, SimpleNamespace(type=kind, boxes=boxes, original=[], original_class=[])))
    return s, errors


@pytest.mark.parametrize("seed", range(8))
def test_injected_units_equal_a_loop_over_the_errors(seed):
    rng = np.random.default_rng(seed)
    s, errors = random_signals(rng, n_copies=int(rng.integers(1, 120)))
    got = _injected_units(s, errors)
    want = loop_injected_units(s, errors)
    assert_same_units(got, want)
    # the case is not trivial: dropped boxes seen and unseen, box errors of several types, some left out
    over = np.asarray(want["overlooked"][0])
    assert (over > 0).any() and (over == 0).any()
    box_errors = sum(len(e.boxes) for _, e in errors if e.type in {INJECTED_AS[t] for t in BOX_TYPES})
    assert 0 < sum(len(want[t][0]) for t in BOX_TYPES) < box_errors


def test_injected_units_equal_a_loop_on_real_copies():
    """The same on the copies the calibration really scores: injected errors of corrupt, measured."""
    from cvcurate.scoring.batch import Batch
    from cvcurate.scoring.signals import ObjectLabConfig, measure
    from tests.test_corrupt import grid_labels
    from tests.test_score import weak_model_predictions

    labels = grid_labels(n=120, seed=2)
    preds = weak_model_predictions(labels, seed=1)
    copies, cpreds, _, errors = inject_copies(labels, preds, CalibrationConfig(copies=2))
    s = measure(Batch.of(copies, cpreds), ObjectLabConfig())
    want = loop_injected_units(s, errors)
    assert_same_units(_injected_units(s, errors), want)
    assert all(len(want[t][0]) for t in CALIBRATED_TYPES), {t: len(want[t][0]) for t in CALIBRATED_TYPES}
