"""One learned error model over all the evidence of a given box.

The per-type curves of :mod:`.calibrate` turn one scalar evidence per type into ``p``; this module
learns from every signal at once. Per kept given box, a feature vector (:func:`box_features`):
what the model sees on it (the IoU and confidence of its best same-class prediction, the best
other-class prediction, support, cleanlab's scores, the predictions of its class inside it and
the prediction it is a piece of), its geometry relative to its class (size, aspect, position),
its neighbours among the given boxes (overlaps, boxes of its class in the image) and its class's
own habits (how often the class comes several to an image).

Gradient-boosted classifiers (LightGBM, one binary booster per box type, each monotone in its
type's own evidence) learn to tell the boxes as given (0) from the injected errors of that type
(1; the same injected copies the curves are fitted on). They are **cross-fitted by image**: the images are dealt
into folds, and a box is scored only by the model trained on the other folds (its image's
injected copies included), so no unit is scored by a model that saw its image.

From the classifier's odds to a probability, the positive-unlabelled correction: with ``g_t``
the classifier's probability of injected type ``t`` and ``g_0`` of "as given", the density ratio
``f_Et(x) / f_U(x) = (g_t / g_0) (n_U / n_Et)``, and the probability that a box of the labels as
given is an error of type ``t`` is ``p_t(x) = N_t / n_U * f_Et(x) / f_U(x)`` with ``N_t`` the type's
natural count. ``N_t`` is estimated from the one-dimensional score ``r_t = g_t / (g_t + g_0)`` with
the mixture fit of :mod:`.calibrate` (its Poisson likelihood over ``N``), integrated over its
uncertainty and shrunk toward a prior rate (:func:`natural_count`), so ``p`` never trusts one
point estimate and a type whose estimate is 0 still gives a unit that looks like an injected error
a probability above the clean units. ``p_t`` is strictly increasing in the classifier's odds (no
flat steps, no ties), saturating smoothly below 1.

The same for a prediction that marks a box the labels miss (``overlooked``): :mod:`.overlooked`.
The classes' boxing habits (pieces or whole) that keep split and merged boxes below the queues:
:func:`.conventions.habits`, :func:`.conventions.style_cap`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..names import BOX_TYPES, PRED_ATTRIBUTES
from ..boxes import pair_iou
from .batch import pairs_within
from .boxpixels import PIXEL_FEATURES, pixel_features

FEATURES = ("swap", "badloc", "swap_signal", "unsupported", "best_iou", "anything", "split", "merged", "n_inside",
            "ev_swap", "ev_badloc", "ev_spurious", "p_other", "p_same", "bad_iou", "has_bad_pred",
            "log_area_rel", "log_aspect_rel", "area_share", "cx", "cy", "at_border", "n_boxes", "n_same",
            "max_iou_same", "max_iou_other", "gap_same", "class_multi") + PRED_ATTRIBUTES + PIXEL_FEATURES + ("cls",)


@dataclass
class ModelConfig:
    enabled: bool = True  # false: the per-type curves only
    folds: int = 3  # cross-fitting folds (by image)
    max_units: int = 8000  # boxes as given the model trains on at most (a random sample; all are scored)
    min_injected: int = 60  # injected box errors it needs (else: the curves)
    max_iter: int = 60  # boosting rounds
    learning_rate: float = 0.15
    max_leaf_nodes: int = 7
    min_leaf: int = 40  # rows a leaf needs at least: the model must learn densities, not memorise units
    prior_rate: float = 0.02  # the natural rate of each type the estimate is shrunk toward...
    prior_weight: float = 50.0  # ...as this many units' worth of evidence
    seed: int = 0

    def check(self) -> None:
        if self.folds < 2:
            raise ValueError(f"model.folds must be at least 2, got {self.folds}")
        for name in ("max_units", "min_injected", "max_iter", "max_leaf_nodes", "min_leaf"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"model.learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0 <= self.prior_rate < 1 or self.prior_weight < 0:
            raise ValueError("model.prior_rate must be in [0, 1) and model.prior_weight >= 0")


def _sizes(s: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = s.given
    w = np.maximum(g.xyxy[:, 2] - g.xyxy[:, 0], 1e-3)
    h = np.maximum(g.xyxy[:, 3] - g.xyxy[:, 1], 1e-3)
    return w, h, np.log(w * h)


def class_stats(s: Any) -> dict[int, tuple[float, float, float]]:
    """Per class of the dataset's own boxes: median log area, median log aspect, and the share of
    its images with two or more of its boxes (its habits). Copies with injected errors are
    described against the original's statistics, never their own (a batch of copies has other
    medians: the classifier would tell copies from originals by that alone)."""
    g = s.given
    w, h, log_area = _sizes(s)
    out = {}
    for c in np.unique(g.cls).tolist():
        m = g.cls == c
        _, per = np.unique(g.image[m], return_counts=True)
        out[int(c)] = (float(np.median(log_area[m])), float(np.median(np.log(w[m] / h[m]))),
                       float((per >= 2).mean()) if len(per) else 0.0)
    return out


def box_features(s: Any, stats: dict[int, tuple[float, float, float]] | None = None,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """(K, F) features of the kept given boxes of signals ``s`` (:data:`FEATURES`, in order);
    ``stats``: the class statistics to describe them against (:func:`class_stats` of the
    original dataset; default: ``s``'s own); ``rows``: only these boxes (their pixels alone are read)."""
    g = s.given
    k = len(g)
    b = s.batch
    if not k:
        return np.zeros((0, len(FEATURES)))
    stats = stats if stats is not None else class_stats(s)
    w, h, log_area = _sizes(s)
    iw = b.width[g.image].astype(np.float64)
    ih = b.height[g.image].astype(np.float64)
    log_aspect = np.log(w / h)
    area_rel, aspect_rel = np.zeros(k), np.zeros(k)
    class_multi = np.zeros(k)
    n_boxes = np.bincount(g.image, minlength=b.width.shape[0])[g.image].astype(np.float64)
    key = g.image * (int(g.cls.max()) + 1 if k else 1) + g.cls
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    n_same = cnt[inv].astype(np.float64)
    for c in np.unique(g.cls).tolist():
        m = g.cls == c
        med_a, med_r, multi = stats.get(int(c), (float(np.median(log_area[m])), float(np.median(log_aspect[m])), 0.0))
        area_rel[m] = log_area[m] - med_a
        aspect_rel[m] = log_aspect[m] - med_r
        class_multi[m] = multi
    cx = (g.xyxy[:, 0] + g.xyxy[:, 2]) / 2 / iw
    cy = (g.xyxy[:, 1] + g.xyxy[:, 3]) / 2 / ih
    border = ((g.xyxy[:, 0] <= 1) | (g.xyxy[:, 1] <= 1) | (g.xyxy[:, 2] >= iw - 1) | (g.xyxy[:, 3] >= ih - 1))
    max_same, max_other, gap_same = _neighbours(g, np.maximum(iw, ih))
    has_bad = (s.bad_pred >= 0).astype(np.float64)
    cols = [s.swap, s.badloc, s.swap_signal, s.unsupported, s.best_iou, s.anything, s.split, s.merged,
            s.n_inside, s.ev_swap, s.ev_badloc, s.ev_spurious, s.p_other, s.p_same, np.where(has_bad > 0, s.bad_iou, 0.0),
            has_bad, area_rel, aspect_rel, (w * h) / (iw * ih), cx, cy, border.astype(np.float64), n_boxes, n_same,
            max_same, max_other, gap_same, class_multi] + [pred_data(s.pred, k, s.bad_pred) for k in PRED_ATTRIBUTES]
    x = np.column_stack([np.nan_to_num(np.asarray(c, np.float64), nan=-1.0) for c in cols])
    rows = np.arange(k) if rows is None else np.asarray(rows, np.int64)
    return np.column_stack([x[rows], pixel_features(s, g.xyxy[rows], g.image[rows]), g.cls[rows].astype(np.float64)])



def pred_data(pred: Any, key: str, rows: np.ndarray) -> np.ndarray:
    """A per-prediction array predict wrote (``flip_iou``...) at prediction ``rows``; -1 at a row
    < 0 (no prediction) and everywhere when the predictions have no such array."""
    rows = np.asarray(rows, np.int64)
    arr = pred.data.get(key) if pred is not None else None
    if arr is None or not len(arr):
        return np.full(len(rows), -1.0)
    return np.where(rows >= 0, arr[np.maximum(rows, 0)], -1.0)


def _neighbours(g: Any, side: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per given box of ``g`` (flat boxes), over the other boxes of its image (every pair at once,
    :func:`~.batch.pairs_within`): the largest IoU with a box of its class and with a box of
    another class (0 when none), and the gap to the nearest box of its class relative to its
    image's longer side ``side`` (pieces touch; 1 when none, at most 1)."""
    k = len(g)
    max_same, max_other, gap_same = np.zeros(k), np.zeros(k), np.full(k, 1.0)
    i, j = pairs_within(g)
    if not len(i):
        return max_same, max_other, gap_same
    iou = pair_iou(g.xyxy, i, g.xyxy, j)
    same = g.cls[i] == g.cls[j]
    a, b = g.xyxy[i], g.xyxy[j]
    dx = np.maximum(0, np.maximum(a[:, 0] - b[:, 2], b[:, 0] - a[:, 2]))
    dy = np.maximum(0, np.maximum(a[:, 1] - b[:, 3], b[:, 1] - a[:, 3]))
    gap = np.minimum(np.hypot(dx, dy) / np.maximum(side[i], 1.0), 1.0)
    both = np.r_[i, j]
    np.maximum.at(max_same, both, np.tile(np.where(same, iou, 0.0), 2))
    np.maximum.at(max_other, both, np.tile(np.where(same, 0.0, iou), 2))
    np.minimum.at(gap_same, both, np.tile(np.where(same, gap, 1.0), 2))
    return max_same, max_other, gap_same


@dataclass
class ErrorModel:
    """The fitted fold models and what turns their odds into ``p``."""

    models: list[Any]
    stats: dict[int, tuple[float, float, float]]  # the original's class statistics (features of any batch use them)
    n_units: int  # boxes as given in the training data (all, not only the sample)
    n_injected: dict[str, int]  # injected errors per box type
    natural: dict[str, float]  # expected natural count per type (posterior mean)
    natural_sd: dict[str, float]
    scale: dict[str, float] = field(default_factory=dict)  # per type: the odds' factor (default N / n_U)
    seconds: float = 0.0
    folds: int = 0
    trained_on: int = 0  # rows (sampled units + injected errors) per fit
    notes: list[str] = field(default_factory=list)
    oof: dict[str, np.ndarray] | None = None  # p of each type for the units it was fitted on (cross-fitted)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities averaged over the fold models (for boxes none of them trained on)."""
        return np.mean([m.predict_proba(x) for m in self.models], axis=0)

    def p_from_proba(self, proba: np.ndarray) -> dict[str, np.ndarray]:
        return {t: probability(proba[:, 0], proba[:, j + 1], self.natural[t], self.n_units, self.scale.get(t))
                for j, t in enumerate(BOX_TYPES)}

    def to_dict(self) -> dict[str, Any]:
        return {"method": "gradient-boosted classifier of injected errors against the boxes as given, cross-fitted "
                          "by image, positive-unlabelled correction (docs/scoring.md)",
                "folds": self.folds, "units": self.n_units, "trained_on": self.trained_on,
                "injected": self.n_injected, "seconds": round(self.seconds, 3),
                "natural": {t: round(v, 3) for t, v in self.natural.items()},
                "natural_sd": {t: round(v, 3) for t, v in self.natural_sd.items()}, "notes": self.notes}


def probability(g0: np.ndarray, gt: np.ndarray, natural: float, n_units: int, scale: float | None = None
                ) -> np.ndarray:
    """``p_t = N_t / n_U * g_t / g_0`` (the PU correction; the classifier was trained with every
    class weighted to the units' total, so its odds ``g_t / g_0`` estimate ``f_Et / f_U``),
    saturated smoothly below 1: ``x / (1 + x^4)^(1/4)`` is ``x`` where ``x`` is small and strictly
    increasing everywhere. ``scale``: the factor of the odds (default ``N / n_U``; see :func:`matched`)."""
    odds = np.asarray(gt, np.float64) / np.maximum(np.asarray(g0, np.float64), 1e-12)
    return _sat(scale * odds) if scale is not None else _sat(max(natural, 0.0) / max(n_units, 1) * odds)


def matched(odds: np.ndarray, natural: float, n_units: int) -> float:
    """The scale ``c`` of ``p = sat(c * odds)`` that makes the units' probabilities add up to the
    natural count, ``sum p = N`` (the identity the PU model gives; trees trained with strong class
    weights under-predict the rare class out of fold, so ``N / n_U`` alone undercounts). Never
    below ``N / n_U``."""
    odds = np.asarray(odds, np.float64)
    lo = max(natural, 0.0) / max(n_units, 1)
    if natural <= 0 or not len(odds) or _sat(lo * odds).sum() >= natural:
        return lo
    hi = lo
    for _ in range(60):
        hi *= 2
        if _sat(hi * odds).sum() >= natural:
            break
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sat(mid * odds).sum() < natural else (lo, mid)
    return hi


def _sat(x: np.ndarray) -> np.ndarray:
    return x / np.power(1.0 + np.power(x, 4), 1.0 / 4)


def natural_count(h_u: np.ndarray, q_e: np.ndarray, n_u: int, max_rate: float, prior_rate: float,
                  prior_weight: float) -> tuple[float, float]:
    """Posterior mean and sd of a type's natural count ``N`` among ``n_u`` units: the mixture
    likelihood of the binned scores (``h_u`` the units' counts, ``q_e`` the injected errors'
    shares; :func:`~.calibrate.mixture_fit`'s model, profiled over the clean counts) on a grid of
    ``N``, times a beta prior on the rate ``N / n_u`` with mean ``prior_rate`` worth
    ``prior_weight`` units."""
    from .calibrate import _profile

    b0 = int(np.argmax(h_u)) if h_u.any() else 0
    hu, qe = h_u[b0:].astype(float), q_e[b0:]
    top = max(1.0, max_rate * n_u)
    grid = np.unique(np.r_[0.0, np.geomspace(0.25, top, 120)])
    loglik = -_profile(hu, qe, grid)[1]
    a = max(prior_rate * prior_weight, 1e-3) + 1.0
    bb = max((1 - prior_rate) * prior_weight, 1e-3) + 1.0
    rate = np.clip(grid / max(n_u, 1), 1e-9, 1 - 1e-9)
    logpost = loglik + (a - 1) * np.log(rate) + (bb - 1) * np.log1p(-rate)
    # the grid is geometric: weight each point by the width of N it stands for
    width = np.gradient(grid) if len(grid) > 1 else np.ones(1)
    wts = np.exp(logpost - logpost.max()) * np.maximum(width, 1e-6)
    wts /= wts.sum()
    mean = float((wts * grid).sum())
    sd = float(np.sqrt(max((wts * (grid - mean) ** 2).sum(), 0.0)))
    return mean, sd


class _Booster:
    """One binary LightGBM booster (labels 0 / 1), fitted and asked like a scikit-learn classifier
    (one thread: the same result on every machine, and no oversubscription beside other work).
    ``monotone``: per feature, +1 where the odds may only rise with it."""

    def __init__(self, cfg: ModelConfig, monotone: list[int] | None = None) -> None:
        self.cfg = cfg
        self.monotone = monotone

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "_Booster":
        import lightgbm as lgb

        params = {"objective": "binary", "learning_rate": self.cfg.learning_rate,
                  "num_leaves": self.cfg.max_leaf_nodes, "min_data_in_leaf": self.cfg.min_leaf, "lambda_l2": 1.0,
                  "feature_fraction": 0.8,
                  "num_threads": 1, "verbosity": -1, "seed": self.cfg.seed, "deterministic": True,
                  "force_row_wise": True}
        if self.monotone is not None:
            params["monotone_constraints"] = list(self.monotone)
            params["monotone_constraints_method"] = "intermediate"  # "basic" blunts every split near them
        cat = [x.shape[1] - 1]  # the class: the last feature of both feature sets
        data = lgb.Dataset(x, y, weight=sample_weight, categorical_feature=cat, free_raw_data=True)
        self.booster = lgb.train(params, data, num_boost_round=self.cfg.max_iter)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.booster.predict(x))
        return np.column_stack([1.0 - out, out])


class _PerType:
    """One binary booster per error type against the units as given (label 0), each kept
    monotone in its type's own evidence: ``p`` of a type never falls where its evidence rises and
    nothing else changes (LightGBM keeps no monotone constraint for a multi-class objective).
    Asked like a classifier over labels ``0..T``: its "probabilities" are
    the per-type odds ``o_t``, normalised (``o_t / (1 + sum o)``; label 0 ``1 / (1 + sum o)``), so
    that ``g_t / g_0`` is type ``t``'s odds."""

    def __init__(self, cfg: ModelConfig, evidence: dict[int, dict[int, int]], n_features: int) -> None:
        self.cfg, self.evidence, self.n_features = cfg, evidence, n_features

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> "_PerType":
        self.classes_ = np.unique(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        self.boosters: dict[int, _Booster] = {}
        base = y == 0
        for c in self.classes_[self.classes_ > 0].tolist():
            rows = base | (y == c)
            mono = [0] * self.n_features
            for f, sign in self.evidence.get(c, {}).items():
                mono[f] = sign
            self.boosters[c] = _Booster(self.cfg, mono).fit(x[rows], (y[rows] == c).astype(np.int64), w[rows])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        odds = np.zeros((len(x), len(self.classes_)))
        for j, c in enumerate(self.classes_.tolist()):
            if c in self.boosters:
                g = self.boosters[c].predict_proba(x)[:, 1]
                odds[:, j] = g / np.maximum(1.0 - g, 1e-12)
        odds[:, self.classes_ == 0] = 1.0
        return odds / odds.sum(axis=1, keepdims=True)


# monotone in each type's evidence; swap also up in its signal and the other class's p, down in cleanlab's quality
BOX_EVIDENCE = {j + 1: {FEATURES.index(f): 1} for j, f in enumerate(("ev_swap", "ev_badloc", "ev_spurious", "split", "merged"))}
BOX_EVIDENCE[1] = {FEATURES.index(f): (-1 if f == "swap" else 1) for f in ("ev_swap", "swap_signal", "p_other", "swap")}


def _classifier(cfg: ModelConfig, n_features: int, evidence: dict[int, dict[int, int]] | None = None) -> Any:
    """One fold's classifier: a booster per type, monotone in ``evidence[type]`` ({feature index: +1 / -1})."""
    return _PerType(cfg, evidence or {}, n_features)


def fold_of(image: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each image id (a fixed random deal, so a copy of an image goes with it)."""
    n = int(image.max()) + 1 if len(image) else 0
    deal = np.random.default_rng(seed).permutation(n) % folds
    return deal[image] if len(image) else np.zeros(0, np.int64)


def _cross_folds(img_u: np.ndarray, img_e: np.ndarray, cfg: ModelConfig) -> Any:
    """Per fold ``k``: the rows of the units and of the injected errors a model trains on (the
    other folds; a bounded random sample of the units, drawn in image-key order so that it is the
    same whatever the files' order; rows in image-key order), and the masks of the rows it scores
    (fold ``k``). The images are dealt by :func:`fold_of`: a copy of an image goes with it."""
    rng = np.random.default_rng(cfg.seed)
    fu, fe = fold_of(img_u, cfg.folds, cfg.seed), fold_of(img_e, cfg.folds, cfg.seed)
    train_u = np.ones(len(img_u), bool)  # every unit is still scored
    if len(img_u) > cfg.max_units:
        train_u[:] = False
        train_u[np.argsort(img_u, kind="stable")[rng.choice(len(img_u), cfg.max_units, replace=False)]] = True
    for k in range(cfg.folds):
        tu, te = train_u & (fu != k), fe != k
        su = np.flatnonzero(tu)[np.argsort(img_u[tu], kind="stable")]
        se = np.flatnonzero(te)[np.argsort(img_e[te], kind="stable")]
        yield su, se, fu == k, fe == k


def _fit_folds(cfg: ModelConfig, jobs: list[tuple], evidence: dict[int, dict[int, int]] | None = None) -> list[Any]:
    """One booster per fold job ``(x, y, sample_weight, ...)``; the folds are independent and each
    booster uses one thread, so they train side by side on the cores (LightGBM releases the GIL)
    with the same result as one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    from .images import _cores

    def one(job: tuple) -> Any:
        return _classifier(cfg, job[0].shape[1], evidence).fit(job[0], job[1], sample_weight=job[2])

    workers = max(1, min(len(jobs), _cores()))
    if workers == 1:
        return [one(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def fit(x_u: np.ndarray, img_u: np.ndarray, x_e: np.ndarray, type_e: np.ndarray, img_e: np.ndarray,
        cfg: ModelConfig, max_rate: float = 0.3, stats: dict | None = None) -> ErrorModel | None:
    """Fit the cross-fitted model: ``x_u`` the boxes as given (image ``img_u``), ``x_e`` the
    injected errors (their type index into :data:`BOX_TYPES` ``type_e``, their original image
    ``img_e``). Returns None when there are too few injected errors."""
    t0 = time.perf_counter()
    if len(x_e) < cfg.min_injected or len(x_u) < 2 * cfg.folds:
        return None
    proba_u = np.zeros((len(x_u), len(BOX_TYPES) + 1))
    proba_e = np.zeros((len(x_e), len(BOX_TYPES) + 1))
    models, rows = [], 0
    n_e = {t: int((type_e == j).sum()) for j, t in enumerate(BOX_TYPES)}
    # class weights: every class as much weight as the units (a rare type is still learned)
    jobs = []
    for su, se, mu, me in _cross_folds(img_u, img_e, cfg):
        y = np.concatenate([np.zeros(len(su), np.int64), type_e[se] + 1])
        if len(np.unique(y)) < 2:
            continue
        counts = np.bincount(y, minlength=len(BOX_TYPES) + 1).astype(float)
        jobs.append((np.concatenate([x_u[su], x_e[se]]), y, (counts[0] / np.maximum(counts, 1.0))[y], mu, me))
    for (x, y, _, mu, me), m in zip(jobs, _fit_folds(cfg, jobs, BOX_EVIDENCE)):
        models.append(m)
        rows = max(rows, len(y))
        cols = list(m.classes_)

        def full(pr: np.ndarray) -> np.ndarray:
            out = np.zeros((len(pr), len(BOX_TYPES) + 1))
            out[:, cols] = pr
            return out

        if mu.any():
            proba_u[mu] = full(m.predict_proba(x_u[mu]))
        if me.any():
            proba_e[me] = full(m.predict_proba(x_e[me]))
    if not models:
        return None
    n_u = len(x_u)
    natural, sd = {}, {}
    for j, t in enumerate(BOX_TYPES):
        if not n_e[t]:
            natural[t], sd[t] = 0.0, 0.0
            continue
        r_u = proba_u[:, j + 1] / np.maximum(proba_u[:, j + 1] + proba_u[:, 0], 1e-12)
        r_e = proba_e[type_e == j, j + 1] / np.maximum(proba_e[type_e == j, j + 1] + proba_e[type_e == j, 0], 1e-12)
        edges = np.linspace(0.0, 1.0, 26)
        h_u = np.histogram(r_u, edges)[0].astype(float)
        q_e = np.histogram(r_e, edges)[0] / max(len(r_e), 1)
        natural[t], sd[t] = natural_count(h_u, q_e, n_u, max_rate, cfg.prior_rate, cfg.prior_weight)
    em = ErrorModel(models, stats or {}, n_u, n_e, natural, sd, folds=len(models), trained_on=rows)
    em.oof = em.p_from_proba(proba_u)
    em.seconds = time.perf_counter() - t0
    return em
