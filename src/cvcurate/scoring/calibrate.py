"""Scores that mean a probability: calibrate each issue type on the dataset being scored.

Nothing here needs ground truth. The labels as given are a mixture: most boxes are right, a few
are errors of each type. We make errors whose nature we know by injecting them
(:func:`cvcurate.corrupt.apply_error`, the same code as ``cvcurate corrupt``) into copies of the
labels of randomly drawn images, one error per copied image, and score the copies with the same
signals and the same confidence thresholds (:func:`~cvcurate.scoring.signals.measure`). The
predictions depend on the pixels, not on the labels, so nothing is predicted again: a copy costs a
pass of the (fast) signal computation over its images only.

For each error type ``t`` (and each class, where there is enough data) we then have, for one
scalar evidence ``s`` (:func:`~cvcurate.scoring.signals._evidence`), two samples: ``U``, the
evidence of every unit of the original labels (a given box, or for ``overlooked`` a prediction),
and ``E``, the evidence of the injected errors. Assuming the data's own errors of type ``t`` look
like injected ones (``f_err = f_E``), the original data's density is
``f_U = (1 - pi) f_clean + pi f_E``, and:

* the **natural count** ``N_t = pi * n_U`` comes from a binned mixture fit
  (:func:`mixture_fit`): per evidence bin, the original units' count is ``c + N q_E`` with ``q_E``
  the injected errors' share of the bin and ``c`` the clean units, taken non-increasing above the
  bin where the original units peak (clean units gather at low evidence); a Poisson likelihood
  over ``N`` on a grid. ``N`` is not used as one point: :func:`~.model.natural_count` integrates
  over its uncertainty and shrinks it toward the shipped prior rate (``model.prior_rate``, worth
  ``model.prior_weight`` units), so a type the fit puts at 0 still ranks units that look like its
  injected errors;
* the **probability** that a unit in a bin is an error of type ``t`` is that bin's posterior
  ``N q_E / (N q_E + c + 0.5)`` (:func:`fit_curve`; the 0.5 pseudo-clean unit keeps a bin of one
  unit from saying 1), made non-decreasing in ``s`` by an isotonic fit and then strictly
  increasing by a 2 % share of a straight line (:data:`STRICT`), so that no flat step loses the
  order the evidence gives.

Where there is enough data (``min_units``), one learned error model replaces these per-type
curves for the box types and for ``overlooked`` (:mod:`.model`: gradient-boosted trees over every
signal of a unit, cross-fitted by image, with the same positive-unlabelled correction); the curves
are the fallback for small data, and the run's notes say which was used. The units and the
injected copies are built in :mod:`.units`.

Part of the images (``holdout``) is kept out of the fit: their injected and original units
measure the calibration (reliability curve and expected calibration error of the predicted
probability that a unit is an injected error in the held-out mixture, which is what the density
ratio claims; the data's own errors are accounted for by ``N_t``). Types or classes with too few
units or injected errors use the type-wide curve, and a type with too few for that falls back to
the shipped priors (:data:`PRIOR_FILE`, fitted the same way on synthetic data), which the result
says. See ``docs/scoring.md`` for what this assumes and when it is wrong.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..types import Annotations, LabelSet
from .batch import Batch
from .model import ErrorModel, ModelConfig, box_features, class_stats, fit as fit_model, natural_count
from .overlooked import OverlookedModel, fit_overlooked, pred_features, pred_units
from .signals import CANDIDATE_EVIDENCE, ObjectLabConfig, Signals, Thresholds, measure

PRIOR_FILE = Path(__file__).resolve().parents[1] / "weights" / "priors.json"

from .units import (CALIBRATED_TYPES, BOX_TYPES, Units, _injected_units, content_rank,  # noqa: E402  (units: .units)
                    inject_copies, injected_box_rows, injected_pred_rows, units_of)



@dataclass
class CalibrationConfig:
    enabled: bool = True  # false: every type uses the shipped priors
    copies: int = 4  # injected copies at least; each draws up to max_images images, one error each
    max_images: int = 1000  # bounds the cost on big datasets (the fit needs errors, not all images)
    injected_images: int = 4000  # small datasets get more copies, until this many images are injected...
    max_copies: int = 16  # ...but at most this many copies
    holdout: float = 0.25  # share of the images whose units measure the calibration, not fit it
    min_units: int = 150  # original units (boxes; predictions for overlooked) a type needs
    min_injected: int = 30  # injected errors a type needs (else: shipped priors)
    class_min_units: int = 100  # the same for a class of its own curve (else: the type-wide one)
    class_min_injected: int = 30
    max_rate: float = 0.3  # never estimate more than this share of a type's units as errors
    seed: int = 0
    list_min_p: float = 0.1  # issues are listed (stored, exported) from this probability up
    queue_min_p: float = 0.5  # review queues, the gate's flagged counts: from this probability up
    model: ModelConfig = field(default_factory=ModelConfig)  # the learned error model of the box types

    def check(self) -> None:
        self.model.check()
        for name in ("holdout", "max_rate", "list_min_p", "queue_min_p"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"calibration.{name} must be in [0, 1], got {v}")
        for name in ("copies", "max_images", "injected_images", "max_copies", "min_units", "min_injected",
                     "class_min_units", "class_min_injected"):
            if getattr(self, name) < 1:
                raise ValueError(f"calibration.{name} must be at least 1, got {getattr(self, name)}")
        if self.holdout >= 1:
            raise ValueError("calibration.holdout must be below 1")
        if self.max_copies < self.copies:
            raise ValueError(f"calibration.max_copies ({self.max_copies}) must be at least copies ({self.copies})")

    def n_copies(self, images: int) -> int:
        """How many injected copies a dataset of ``images`` images gets: ``copies``, more for a small
        one (until ``injected_images`` images are injected, at most ``max_copies``): the model and
        the curves learn from the injected errors, and a few hundred of them per type are noisy."""
        per = max(1, min(images, self.max_images))
        return int(min(self.max_copies, max(self.copies, -(-self.injected_images // per))))


@dataclass
class Curve:
    """``p(s)`` of one type (and class): piecewise linear on the isotonic breakpoints ``x``; 0
    below the candidate floor."""

    type: str
    cls: int | None  # None: every class
    x: np.ndarray
    p: np.ndarray
    how: str  # "data" | "data (type-wide)" | "prior"
    units: int = 0  # original units fitted on
    injected: int = 0  # injected errors fitted on
    natural: float = 0.0  # estimated errors of this type in the original units (all, seen or not)
    share_e: np.ndarray | None = None  # per bin: share of the injected errors (for the held-out check)...
    density_u: np.ndarray | None = None  # ...and of the original units, as fitted

    def __call__(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        if not len(self.x):
            return np.zeros_like(s)
        out = np.interp(s, self.x, self.p)
        out[s < CANDIDATE_EVIDENCE] = 0.0
        return out

    def densities(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per evidence (above the floor): the injected errors' and the original units' fitted
        share of its bin."""
        b = np.maximum(_bin(np.asarray(s, dtype=np.float64)), 0)
        return self.share_e[b], self.density_u[b]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "class": self.cls, "how": self.how, "units": self.units,
                "injected": self.injected, "natural": round(float(self.natural), 3),
                "x": [round(float(v), 6) for v in self.x], "p": [round(float(v), 6) for v in self.p]}


@dataclass
class Calibration:
    """The fitted curves of one score run, and how well they hold on held-out images."""

    curves: dict[tuple[str, int | None], Curve]
    injected: dict[str, int] = field(default_factory=dict)  # injected errors per type (fit + held out)
    ece: dict[str, float] = field(default_factory=dict)  # per type, and "all"
    reliability: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # per type, and "all"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    copies: int = 0
    images: int = 0  # images injected into (over all copies)
    model: ErrorModel | None = None  # the learned error model of the box types (None: the curves)
    overlooked_model: OverlookedModel | None = None  # the same for overlooked (its units are predictions)
    style_notes: list[tuple[int, str]] = field(default_factory=list)  # (class, note): habits that keep split / merged out
    fitted_on: Any = None  # the signals the model was cross-fitted on (their boxes use its out-of-fold p)

    def curve(self, t: str, cls: int | None = None) -> Curve:
        return self.curves.get((t, cls)) or self.curves[(t, None)]

    def probability(self, t: str, evidence: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """``p`` of error type ``t`` for units with these evidences and classes."""
        evidence = np.asarray(evidence, dtype=np.float64)
        cls = np.asarray(cls, dtype=np.int64)
        out = self.curve(t)(evidence)
        for (tt, c), cur in self.curves.items():
            if tt == t and c is not None:
                m = cls == c
                if m.any():
                    out[m] = cur(evidence[m])
        return out

    def how(self, t: str) -> str:
        return self.curve(t).how

    def box_probabilities(self, s: Signals, units: dict[str, "Units"],
                          adopted: dict[int, str] | None = None) -> dict[str, np.ndarray]:
        """``p`` of every box type for the kept given boxes of ``s``: from the learned model when
        there is one (cross-fitted for the boxes it was fitted on, the fold models' mean for
        others), else from the per-type curves. ``adopted``: the classes' adopted boxing styles
        (:func:`~.conventions.style_cap`)."""
        from .conventions import style_cap

        if self.model is not None:
            if s is self.fitted_on and self.model.oof is not None:
                box = {t: v.copy() for t, v in self.model.oof.items()}
            elif len(s.given):
                box = self.model.p_from_proba(self.model.proba(box_features(s, self.model.stats)))
            else:
                box = {t: np.zeros(0) for t in BOX_TYPES}
        else:
            box = {t: self.probability(t, units[t].evidence, units[t].cls) for t in BOX_TYPES}
        # the fixes need what a swap and a split are made of: a swap is relabelled to the model's best
        # class on the box (it must be another), a split's pieces are merged into the object the
        # model sees; badloc and merged are probable from any evidence, and their reasons say which
        # (a badloc the model sees no box of its class for, a merged box with no object inside)
        present = {"swap": (s.swap_pred >= 0) & (s.ev_swap > 0), "split": (s.split_match >= 0) & (s.split > 0)}
        for t, m in present.items():
            box[t] = np.where(m, box[t], 0.0)
        self.style_notes = style_cap(s, box, adopted=adopted)
        return box

    def overlooked_probabilities(self, s: Signals, units: dict[str, "Units"]) -> np.ndarray:
        """``p`` of ``overlooked`` for every prediction of ``s``: the learned model where there is
        one (0 for a prediction that is not the most probable of its region), else the curve."""
        om = self.overlooked_model
        if om is not None:
            if s is self.fitted_on and om.oof is not None:
                out = np.zeros(len(s.pred))
                out[om.oof_rows] = om.oof
                return out
            return om.p(s)
        return self.probability("overlooked", units["overlooked"].evidence, units["overlooked"].cls)

    def to_dict(self) -> dict[str, Any]:
        return {"overlooked_model": self.overlooked_model.to_dict() if self.overlooked_model is not None else None,
                "method": "injected errors into copies of the labels; box types: a gradient-boosted error model over "
                          "every signal, cross-fitted by image, positive-unlabelled correction (when fitted: see "
                          "'model'); overlooked and fallback: per-type mixture curves (docs/scoring.md)",
                "model": self.model.to_dict() if self.model is not None else None,
                "copies": self.copies, "images_injected": self.images, "seconds": round(self.seconds, 3),
                "injected": self.injected, "ece": {k: round(v, 4) for k, v in self.ece.items()},
                "reliability": self.reliability, "notes": self.notes,
                "curves": [c.to_dict() for c in self.curves.values()]}


# ----------------------------------------------------------------------------------------------
# the fit


STRICT = 0.02  # share of a straight line in every curve, so that p strictly increases with the evidence
PSEUDO_CLEAN = 0.5  # clean units added to every bin of the posterior (a bin of one unit gives p <= 2/3)
BINS = 25  # evidence bins of the mixture fit, equal width over [floor, 1]


def _edges() -> np.ndarray:
    return np.linspace(CANDIDATE_EVIDENCE, 1.0, BINS + 1)


def _bin(s: np.ndarray) -> np.ndarray:
    """Bin of each evidence (-1 below the floor)."""
    b = np.minimum(np.searchsorted(_edges(), s, side="right") - 1, BINS - 1)
    return np.where(np.asarray(s) < CANDIDATE_EVIDENCE, -1, b)


def pava_rows(y: np.ndarray, w: np.ndarray, increasing: bool = True) -> np.ndarray:
    """Weighted isotonic regression of every row of ``y`` (G, L) at once, with the same weights
    ``w`` (L,) > 0: the non-decreasing (or non-increasing) sequence closest to each row in weighted
    least squares, by its min-max form ``f_i = max_{j<=i} min_{k>=i} mean_w(y[j..k])`` in one
    (G, L, L) array (the sequences are short: the evidence bins)."""
    y = np.atleast_2d(np.asarray(y, np.float64))
    if not increasing:
        return -pava_rows(-y, w, True)
    n = y.shape[1]
    w = np.asarray(w, np.float64)
    cw = np.r_[0.0, np.cumsum(w)]
    cy = np.concatenate([np.zeros((len(y), 1)), np.cumsum(y * w, axis=1)], axis=1)
    j, k = np.arange(n)[:, None], np.arange(n)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (cy[:, None, 1:] - cy[:, :-1, None]) / (cw[None, 1:] - cw[:-1, None])  # [g, j, k]: y[j..k]
    mean = np.where(k >= j, mean, np.inf)
    low = np.minimum.accumulate(mean[:, :, ::-1], axis=2)[:, :, ::-1]  # [g, j, i]: min over k >= i
    return np.where(k >= j, low, -np.inf).max(axis=1)


def _profile(hu: np.ndarray, qe: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ``N`` of ``grid``: the clean counts (non-increasing, >= 0) that fit ``hu - N qe``
    best, and the Poisson negative log-likelihood of ``hu`` under ``c + N qe`` (the mixture model of
    :func:`mixture_fit`), all ``N`` at once."""
    w = 1.0 / np.maximum(hu, 1.0)
    c = np.maximum(pava_rows(hu[None, :] - grid[:, None] * qe[None, :], w, increasing=False), 0.0)
    lam = np.maximum(c + grid[:, None] * qe[None, :], 1e-6)
    return c, np.sum(lam - hu[None, :] * np.log(lam), axis=1)


def mixture_fit(h_u: np.ndarray, q_e: np.ndarray, max_count: float) -> tuple[float, np.ndarray]:
    """Fit ``h_u ~ c + N q_e`` per bin: ``h_u`` the original units' counts, ``q_e`` the injected
    errors' shares, ``c`` the clean units' counts, non-increasing from the bin where ``h_u`` peaks
    (clean units gather at low evidence and thin out above it) and >= 0. Poisson
    likelihood over ``N`` on a grid (``c`` for each ``N`` by a weighted isotonic fit); returns ``N``
    and ``c``. Without the shape constraint the data's
    own errors could not be told from clean units that look like them (see docs/scoring.md)."""
    b0 = int(np.argmax(h_u)) if h_u.any() else 0
    hu, qe = h_u[b0:].astype(float), q_e[b0:]
    top = min(max_count, float(hu.sum() / max(qe.sum(), 1e-12)))
    best = (np.inf, 0.0, np.maximum(hu, 0))
    # geometric: a few errors among many thousand units must be found too
    grid = np.unique(np.r_[0.0, np.geomspace(0.25, max(top, 0.25), 100)]) if top > 0 else np.zeros(1)
    clean, costs = _profile(hu, qe, grid)
    for i, cost in enumerate(costs.tolist()):  # the first N of the lowest cost (ties: the smaller N)
        if cost < best[0] - 1e-9:
            best = (cost, float(grid[i]), clean[i])
    c_full = h_u.astype(float).copy()
    c_full[b0:] = best[2]
    if b0:  # below the peak every unit is taken as clean, except the errors' own share there
        c_full[:b0] = np.maximum(h_u[:b0] - best[1] * q_e[:b0], 0)
    return best[1], c_full


def fit_curve(t: str, cls: int | None, u: np.ndarray, e: np.ndarray, cfg: CalibrationConfig, how: str = "data"
              ) -> Curve:
    """``p(s)`` of type ``t`` from the original units' evidence ``u`` and the injected errors' ``e``:
    the posterior of the mixture :func:`mixture_fit` finds, made non-decreasing in ``s``."""
    from sklearn.isotonic import IsotonicRegression

    n_u, n_e = len(u), len(e)
    bu, be = _bin(u) + 1, _bin(e) + 1  # bin 0: below the floor (no evidence)
    h_u = np.bincount(bu, minlength=BINS + 1).astype(float)
    q_e = np.bincount(be, minlength=BINS + 1) / max(n_e, 1)
    edges = _edges()
    centre = (edges[:-1] + edges[1:]) / 2
    if not q_e[1:].any():  # the signals never see this kind of error: no evidence, p = 0
        return Curve(t, cls, np.zeros(0), np.zeros(0), how + ", injected errors not seen", n_u, n_e, 0.0)
    point, clean = mixture_fit(h_u, q_e, cfg.max_rate * n_u)
    # the count integrated over its uncertainty and shrunk toward the prior rate (never one point
    # estimate: a type the fit puts at 0 still gives units that look like its errors a probability)
    natural, _ = natural_count(h_u, q_e, n_u, cfg.max_rate, cfg.model.prior_rate, cfg.model.prior_weight)
    if natural > point:  # the clean counts of the point fit leave room for the extra errors
        clean = np.maximum(h_u - natural * q_e, 0.0)
    h_u, q_e, clean = h_u[1:], q_e[1:], clean[1:]
    err = natural * q_e
    with np.errstate(divide="ignore", invalid="ignore"):  # PSEUDO_CLEAN: a sparse bin never says p = 1
        post = np.where(h_u > 0, err / (err + clean + PSEUDO_CLEAN), np.nan)
    # bins without original units: the posterior of the nearest bin below (1 when none)
    ok = ~np.isnan(post)
    if ok.any():
        wts = np.maximum(h_u, 1e-3)
        post = IsotonicRegression(increasing=True, y_min=0, y_max=1, out_of_bounds="clip").fit(
            centre[ok], post[ok], sample_weight=wts[ok]).predict(centre)
    else:
        post = np.zeros(BINS)
    x = np.concatenate([[CANDIDATE_EVIDENCE], centre, [1.0]])
    p = np.concatenate([[post[0]], post, [post[-1]]])
    # strictly increasing: isotonic pooling leaves flat steps, and ties lose the order the evidence
    # gives; a 2 % share of a straight line to the curve's top breaks them (p moves by <= 0.02)
    top = float(p.max())
    p = (1 - STRICT) * p + STRICT * top * (x - CANDIDATE_EVIDENCE) / (1.0 - CANDIDATE_EVIDENCE)
    if top <= 0:
        p = STRICT * (x - CANDIDATE_EVIDENCE) / (1.0 - CANDIDATE_EVIDENCE)
    density = (err + clean) / max(n_u, 1)  # the original units' density per bin, as fitted
    return Curve(t, cls, x, p, how, n_u, n_e, natural, q_e, density)


def _fit_type(t: str, u: Units, e: Units, cfg: CalibrationConfig, n_classes: int) -> list[Curve]:
    out = [fit_curve(t, None, u.evidence, e.evidence, cfg)]
    for c in range(n_classes):
        mu, me = u.cls == c, e.cls == c
        if mu.sum() >= cfg.class_min_units and me.sum() >= cfg.class_min_injected:
            out.append(fit_curve(t, c, u.evidence[mu], e.evidence[me], cfg))
    return out


def _reliability(q: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error (equal-width bins, weighted by count) and the reliability curve."""
    if not len(q):
        return float("nan"), []
    b = np.minimum((q * bins).astype(int), bins - 1)
    curve, ece = [], 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            mq, my = float(q[m].mean()), float(y[m].mean())
            ece += m.sum() / len(q) * abs(mq - my)
            curve.append({"predicted": round(mq, 4), "observed": round(my, 4), "count": int(m.sum())})
    return float(ece), curve


def _held_out(cal: Calibration, t: str, u: Units, e: Units) -> tuple[np.ndarray, np.ndarray]:
    """Predicted probability that a held-out unit (evidence above the floor) is an injected error
    in the held-out mixture of ``n_E`` injected and ``n_U`` original units, from the fitted
    mixture (``n_E f_E / (n_E f_E + n_U f_U)`` per curve), and whether it is."""
    qs, ys = [], []
    curves = {c: cur for (tt, c), cur in cal.curves.items() if tt == t}
    classes_own = [c for c in curves if c is not None]
    for c, cur in curves.items():
        mu = ~np.isin(u.cls, classes_own) if c is None else u.cls == c
        me = ~np.isin(e.cls, classes_own) if c is None else e.cls == c
        su, se = u.evidence[mu], e.evidence[me]
        if cur.share_e is None or not len(se):
            continue
        s = np.concatenate([su[su >= CANDIDATE_EVIDENCE], se[se >= CANDIDATE_EVIDENCE]])
        fe, fu = cur.densities(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.nan_to_num(len(se) * fe / (len(se) * fe + len(su) * fu), nan=0.0)
        qs.append(q)
        ys.append(np.concatenate([np.zeros(int((su >= CANDIDATE_EVIDENCE).sum())),
                                  np.ones(int((se >= CANDIDATE_EVIDENCE).sum()))]))
    if not qs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(qs), np.concatenate(ys)


def load_priors(path: Path = PRIOR_FILE) -> dict[str, Curve]:
    """The shipped curves (per type, every class) used where the data is too small to fit."""
    doc = json.loads(path.read_text()) if path.is_file() else {"curves": []}
    out = {}
    for c in doc.get("curves", []):
        if c.get("class") is None and np.max(c["p"] or [0]) > 0:  # a prior never rules a type out
            out[c["type"]] = Curve(c["type"], None, np.asarray(c["x"], float), np.asarray(c["p"], float), "prior")
    for t in CALIBRATED_TYPES:  # no file: a conservative straight line
        out.setdefault(t, Curve(t, None, np.array([CANDIDATE_EVIDENCE, 1.0]), np.array([0.0, 0.5]), "prior"))
    return out


def calibrate(labels: LabelSet, preds: Sequence[Annotations], signals: Signals, thresholds: Thresholds,
              ol_cfg: ObjectLabConfig, cfg: CalibrationConfig | None = None) -> Calibration:
    """Fit ``p`` for every calibrated type on ``labels`` (scored as ``signals``), see the module
    docstring; types the data is too small for get the shipped priors, with a note."""
    cfg = cfg or CalibrationConfig()
    t0 = time.perf_counter()
    priors = load_priors()
    if not cfg.enabled or not len(labels.records):
        cal = Calibration({(t, None): priors[t] for t in CALIBRATED_TYPES},
                          notes=["calibration off: every type uses the shipped priors (fitted on synthetic data)"])
        cal.seconds = time.perf_counter() - t0
        return cal
    n = len(labels.records)
    rank = content_rank(labels, preds)
    hold = (np.random.default_rng(cfg.seed + 1).random(n) < cfg.holdout)[rank]
    copies, cpreds, origin, errors = inject_copies(labels, preds, cfg, rank)
    sc = measure(Batch.of(copies, cpreds), ol_cfg, thresholds)
    inj = _injected_units(sc, errors)
    origin_arr = np.asarray(origin, np.int64)
    sc.pixels = signals.pixels.take(origin_arr) if signals.pixels is not None else None
    orig = units_of(signals)
    cal = Calibration({}, copies=cfg.n_copies(n), images=len(copies.records))
    qs_all, ys_all = [], []
    for t in CALIBRATED_TYPES:
        u, e = orig[t], inj[t]
        e_hold = hold[origin_arr[e.image]] if len(e.image) else np.zeros(0, bool)
        u_hold = hold[u.image] if len(u.image) else np.zeros(0, bool)
        uf = Units(u.evidence[~u_hold], u.cls[~u_hold], u.image[~u_hold])
        ef = Units(e.evidence[~e_hold], e.cls[~e_hold], e.image[~e_hold])
        cal.injected[t] = int(len(e.evidence))
        if len(uf.evidence) < cfg.min_units or len(ef.evidence) < cfg.min_injected:
            cal.curves[(t, None)] = priors[t]
            cal.notes.append(f"{t}: too few {'predictions' if t == 'overlooked' else 'boxes'} "
                             f"({len(uf.evidence)}) or injected errors ({len(ef.evidence)}) to calibrate on this "
                             f"data: shipped priors (fitted on synthetic data)")
            continue
        for cur in _fit_type(t, uf, ef, cfg, len(labels.classes)):
            cal.curves[(t, cur.cls)] = cur
        q, y = _held_out(cal, t, Units(u.evidence[u_hold], u.cls[u_hold], u.image[u_hold]),
                         Units(e.evidence[e_hold], e.cls[e_hold], e.image[e_hold]))
        if len(q):
            cal.ece[t], cal.reliability[t] = _reliability(q, y)
            qs_all.append(q)
            ys_all.append(y)
    if qs_all:
        cal.ece["all"], cal.reliability["all"] = _reliability(np.concatenate(qs_all), np.concatenate(ys_all))
    # the copies are described against the original's class statistics (both models)
    stats = class_stats(signals) if cfg.model.enabled and len(signals.given) else {}
    if cfg.model.enabled and len(signals.given):
        rows, types, cps = injected_box_rows(sc, errors)
        # a model needs the boxes of many images (it is cross-fitted by image), not only many copies
        enough = len(signals.given) >= cfg.min_units and len(rows)
        em = fit_model(box_features(signals, stats), rank[signals.given.image], box_features(sc, stats, rows), types,
                       rank[origin_arr[cps]], cfg.model, cfg.max_rate, stats) if enough else None
        if em is None:
            cal.notes.append(f"error model: too few boxes ({len(signals.given)}, needs {cfg.min_units}) or injected box "
                             f"errors ({len(rows)}, needs {cfg.model.min_injected}): the per-type curves give p")
        else:
            cal.model, cal.fitted_on = em, signals
            cal.notes.append(f"box types: learned error model ({em.folds} folds by image, {em.trained_on} rows a fit, "
                             f"{em.seconds:.1f} s); natural counts "
                             + ", ".join(f"{t} {em.natural[t]:.1f} +- {em.natural_sd[t]:.1f}" for t in BOX_TYPES))
    cur = cal.curves.get(("overlooked", None))
    # small data (the curve itself fell back to the shipped prior): the curve, not a model
    count = cur.natural if cur is not None and cur.how.startswith("data") else None
    if cfg.model.enabled and len(signals.pred) and len(signals.given) and count is not None:
        rows_u = pred_units(signals)
        inj_rows, inj_img = injected_pred_rows(sc, errors, rank[origin_arr] if len(origin_arr) else origin_arr)
        om = fit_overlooked(signals, pred_features(signals, rows_u, stats), rows_u, pred_features(sc, inj_rows, stats),
                            inj_img, cfg.model, stats, cfg.max_rate, count, rank)
        if om is not None:
            cal.overlooked_model, cal.fitted_on = om, signals
            cal.notes.append(f"overlooked: learned error model ({len(rows_u)} candidate predictions, {om.n_injected} "
                             f"dropped boxes the model sees, {om.seconds:.1f} s); natural count {om.natural:.1f} +- "
                             f"{om.natural_sd:.1f}")
    cal.seconds = time.perf_counter() - t0
    return cal
