"""The score stage: every signal in one ranking of images and boxes, and one queue per issue type.

:func:`score` is a pure function of a :class:`~cvcurate.types.LabelSet`, optional predictions and
optional pixel features; it returns a :class:`ScoreResult`. Storing it (FiftyOne fields, saved
views) and writing JSON/CSV happen elsewhere (:mod:`cvcurate.stages.score`).

Layout: :mod:`.batch` holds the flat batch of given boxes and predictions over all images, its
box pairs, segment reductions and box math; on it run :mod:`.geometry` (model-free box and image
checks) and the prediction-based checks: :mod:`.objectlab` (entry point and result),
:mod:`.signals` (thresholds, cleanlab's rules, calibrated signals) and :mod:`.issues` (decisions
and reason text). :mod:`.images` checks the pixels, :mod:`.truth` compares with known injected
errors.

Probabilities. Every issue's ``score`` is ``p``, the estimated probability that it is a real error
of its type. For the prediction-based types (overlooked, swap, badloc, spurious, split, merged) it
is calibrated on the dataset being scored, with no ground truth, by injecting known errors into
copies of its labels (:mod:`.calibrate`; ``docs/scoring.md``). The model-free checks are facts
(degenerate, out-of-image boxes: p = 1) or use a shipped prior, ``p = weight x raw score``
(``weights`` in configs/score.yaml; the raw score is kept in ``issue.data["raw"]``), which the
model's support scales down for size outliers and fragments (:func:`.issues.answer_by_model`). An image's
score is the probability that at least one of its issues is real, ``1 - prod(1 - p)``, the possible
errors below the listing threshold (``list_min_p``: boxes and predictions the error models give a
small ``p``, model-free checks below it) included, so images no issue names are still ranked; a box's
score is the largest ``p`` of the issues that point at it. :meth:`ScoreResult.expected` sums ``p``:
the expected number of real errors, by type, of any set of issues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..names import CERTAIN_TYPES, ISSUE_TYPES, LABEL_ERROR_TYPES, QUEUES  # noqa: F401  (the taxonomy, kept here)
from ..types import Annotations, Issue, LabelSet
from .geometry import GeometryConfig, box_issues, class_mix_issues, size_outliers, style_issues
from .boxpixels import BoxPixels
from .calibrate import Calibration, CalibrationConfig
from .images import ImageConfig, ImageFeatures, image_issues
from .issues import answer_by_model
from .objectlab import ObjectLabConfig, ObjectLabResult, Thresholds, objectlab_scores

# the shipped prior of each model-free type: p = weight x raw score (the calibrated types ignore it)
DEFAULT_WEIGHTS = {
    "duplicate": 0.9, "class_conflict": 0.5, "fragment": 0.5, "style_fragmented": 0.3, "style_merged": 0.3,
    "size_outlier": 0.4, "rare_class_mix": 0.3, "near_duplicate": 0.6, "leakage": 0.9,
    "blur": 0.4, "underexposed": 0.4, "overexposed": 0.3,
}


@dataclass
class ScoreConfig:
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    objectlab: ObjectLabConfig = field(default_factory=ObjectLabConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def check(self) -> None:
        self.calibration.check()
        unknown = sorted(set(self.weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown issue type(s) in weights: {', '.join(unknown)} "
                             f"(known: {', '.join(DEFAULT_WEIGHTS)})")
        bad = {k: v for k, v in self.weights.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"weights must be in [0, 1], got {bad}")
        merged = dict(DEFAULT_WEIGHTS)
        merged.update(self.weights)
        self.weights = merged


@dataclass
class ScoreResult:
    labels: LabelSet
    issues: list[Issue]
    image_score: np.ndarray  # (N,) in [0, 1], higher = more likely wrong
    box_scores: list[np.ndarray]  # per image, per given box
    image_quality: np.ndarray | None  # ObjectLab label quality (1 clean), None without predictions
    thresholds: Thresholds | None
    used_predictions: bool
    used_pixels: bool
    calibration: Calibration | None = None
    objectlab: ObjectLabResult | None = None
    queue_min_p: float = 0.5

    def queue(self, name: str) -> list[Issue]:
        """Issues of one queue (or one issue type), best first."""
        types = QUEUES.get(name, (name,))
        return sorted((i for i in self.issues if i.type in types), key=lambda i: -i.score)

    def counts(self) -> dict[str, int]:
        out = {t: 0 for t in ISSUE_TYPES}
        for i in self.issues:
            out[i.type] = out.get(i.type, 0) + 1
        return {k: v for k, v in out.items() if v}

    def flagged(self, min_p: float | None = None) -> list[Issue]:
        """The issues with ``p`` at least ``min_p`` (the queue threshold by default)."""
        m = self.queue_min_p if min_p is None else min_p
        return [i for i in self.issues if i.score >= m]

    def expected(self, issues: Sequence[Issue] | None = None) -> dict[str, float]:
        """Expected number of real errors per issue type: the sum of ``p`` (all issues by default).
        The pieces of one split defect (the boxes inside the one object the model sees) are one
        error: each is listed with its own ``p``, and the group counts its largest."""
        chosen = list(self.issues if issues is None else issues)
        out: dict[str, float] = {}
        for i, w in zip(chosen, expected_weights(chosen)):
            out[i.type] = out.get(i.type, 0.0) + w
        return out

    def ranking(self) -> np.ndarray:
        """Image indices, most suspicious first."""
        return np.argsort(-self.image_score, kind="stable")


IMAGE_LEVEL = {"style_fragmented", "style_merged", "rare_class_mix", "near_duplicate", "leakage", "blur",
               "underexposed", "overexposed", "unreadable"}


def expected_weights(issues: Sequence[Issue]) -> list[float]:
    """What each issue adds to an expected number of real errors: its ``p``, except that the
    pieces of one split defect (split issues on the same object the model sees) are one error,
    counted once at the largest ``p`` of the group (the other pieces add 0). The one rule of the
    run's, the gate's and the report's expected counts."""
    out = [float(i.score) for i in issues]
    best: dict[tuple, int] = {}
    for k, i in enumerate(issues):
        if (i.type == "split" or (i.data or {}).get("deviation") == "split") and "pred_box" in (i.data or {}):
            key = (i.filepath, tuple(round(float(v), 3) for v in i.data["pred_box"]))
            j = best.get(key)
            if j is None or out[k] > out[j] or (out[k] == out[j] and k < j):
                if j is not None:
                    out[j] = 0.0
                best[key] = k
            else:
                out[k] = 0.0
    return out


def prior_probabilities(issues: Sequence[Issue], weights: dict[str, float]) -> None:
    """Model-free issues: keep the check's own score as ``data["raw"]`` and set ``score`` to ``p``
    (1 for the certain types, ``weight x raw`` for the others)."""
    for iss in issues:
        iss.data["raw"] = iss.score
        iss.score = 1.0 if iss.type in CERTAIN_TYPES else float(np.clip(weights.get(iss.type, 0.5) * iss.score, 0, 1))


def _unlisted_clean(ol: ObjectLabResult, n: int, list_min_p: float) -> np.ndarray:
    """(n,) per image, the probability that none of its boxes and predictions below the listing
    threshold is a real error: ``prod(1 - p)`` over its boxes' most probable error type and its
    candidate predictions' overlooked ``p``, each below ``list_min_p`` (those at or above it are
    issues, counted with them). The ranking of the images no issue names is then theirs, not a
    tie at 0."""
    out = np.ones(n)
    pr, s = ol.probabilities, ol.signals
    if pr is None or s is None:
        return out
    for p, image in ((pr.best, s.given.image), (pr.overlooked, s.pred.image)):
        p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
        low = p < list_min_p
        np.multiply.at(out, np.asarray(image, np.int64)[low], 1.0 - p[low])
    return out


def score(labels: LabelSet, *, predictions: Sequence[Annotations] | None = None,
          features: ImageFeatures | None = None, cfg: ScoreConfig | None = None,
          fitted: Calibration | None = None, thresholds: Thresholds | None = None,
          conventions: dict[str, str] | None = None) -> ScoreResult:
    """Score every image and box; see the module docstring for what the scores mean.

    ``fitted`` / ``thresholds``: score with this calibration and these confidence thresholds
    instead of fitting them on ``labels`` (a copy of a dataset scored as the original).
    ``conventions``: class name -> the boxing style the team adopted (``whole`` or ``pieces``):
    boxes that follow it are clean, boxes that break it are ``convention`` issues."""
    cfg = cfg or ScoreConfig()
    issues: list[Issue] = []
    issues += box_issues(labels, cfg.geometry)
    issues += size_outliers(labels, cfg.geometry)
    issues += style_issues(labels, cfg.geometry)
    issues += class_mix_issues(labels, cfg.geometry)
    if features is not None:
        issues += image_issues(labels, features, cfg.images)
    prior_probabilities(issues, cfg.weights)
    index = {r.filepath: i for i, r in enumerate(labels.records)}
    quality = None
    ol = None
    if predictions is not None:
        ids = {n: k for k, n in enumerate(labels.classes)}
        adopted = {ids[c]: style for c, style in (conventions or {}).items() if c in ids and style}
        pixels = BoxPixels(features.gray, features.ok) if features is not None else None
        ol = objectlab_scores(labels, predictions, cfg.objectlab, thresholds=thresholds,
                              calibration=cfg.calibration, fitted=fitted, conventions=adopted, pixels=pixels)
        if ol.signals is not None:
            answer_by_model(issues, ol.signals, labels, index)
    # per image, the probability that none of its possible errors is real: the issues below the
    # listing threshold count too (they are not listed, but they are not certainly clean either)
    clean = np.ones(len(labels.records))
    listed = [i.score >= cfg.calibration.list_min_p or i.type in CERTAIN_TYPES for i in issues]
    for iss in (i for i, keep in zip(issues, listed) if not keep):
        clean[index[iss.filepath]] *= 1.0 - iss.score
    issues = [i for i, keep in zip(issues, listed) if keep]
    if ol is not None:
        issues += ol.issues
        quality = ol.image_quality
        clean *= _unlisted_clean(ol, len(labels.records), cfg.calibration.list_min_p)
    box_scores = [np.zeros(len(r.gt)) for r in labels.records]
    for iss in issues:
        i = index[iss.filepath]
        clean[i] *= 1.0 - iss.score
        if iss.box is not None and iss.box < len(box_scores[i]):
            box_scores[i][iss.box] = max(box_scores[i][iss.box], iss.score)
    return ScoreResult(labels=labels, issues=issues, image_score=1.0 - clean,
                       box_scores=box_scores, image_quality=quality,
                       thresholds=ol.thresholds if ol is not None else None, used_predictions=predictions is not None,
                       used_pixels=features is not None, calibration=ol.calibration if ol is not None else None,
                       objectlab=ol, queue_min_p=cfg.calibration.queue_min_p)
