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

Combination. Each issue has a score in [0, 1] (its own scale: an IoU, a probability, a z-score
mapped to [0, 1]). Those scales are not comparable across types, and a detector that disagrees a
little with many correct boxes produces many mid-level scores, so raw scores are first made
relative: an issue's ``relative`` score is the fraction of the dataset's objects (given boxes for
box issues, images for image issues) that have a lower score of that type. An image's score is
the largest relative score among its issues times the weight of the issue's type (``weights`` in
configs/score.yaml); with predictions, ``1 - ObjectLab image quality``, made relative over the
images, counts as one more issue (``label_quality``). A box's score is the same maximum over the
issues that point at it. Max-pooling was chosen over a noisy-OR of all issues because on real
data (NEU-DET) the noisy-OR of many weak disagreements pushed most clean images near 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..types import Annotations, Issue, LabelSet
from .geometry import GeometryConfig, box_issues, class_mix_issues, size_outliers, style_issues
from .images import ImageConfig, ImageFeatures, image_issues
from .objectlab import ObjectLabConfig, Thresholds, objectlab_scores

# review queues: each groups issue types a reviewer handles the same way
QUEUES: dict[str, tuple[str, ...]] = {
    "overlooked": ("overlooked",),
    "swap": ("swap",),
    "badloc": ("badloc", "spurious"),
    "geometry": ("degenerate", "out_of_image"),
    "inconsistent": ("split", "merged", "fragment", "style_fragmented", "style_merged", "size_outlier", "class_conflict",
                     "rare_class_mix"),
    "duplicates": ("duplicate", "near_duplicate", "leakage"),
    "image": ("blur", "underexposed", "overexposed", "unreadable"),
}
ISSUE_TYPES = tuple(t for types in QUEUES.values() for t in types)

DEFAULT_WEIGHTS = {
    "overlooked": 1.0, "swap": 1.0, "badloc": 0.9, "spurious": 0.9,
    "degenerate": 1.0, "out_of_image": 1.0, "duplicate": 0.9, "class_conflict": 0.9,
    "split": 0.5, "merged": 0.5, "fragment": 0.8, "style_fragmented": 0.5, "style_merged": 0.5, "size_outlier": 0.6,
    "rare_class_mix": 0.5, "near_duplicate": 0.6, "leakage": 0.9,
    "blur": 0.4, "underexposed": 0.4, "overexposed": 0.3, "unreadable": 1.0,
    "label_quality": 0.8,
}


@dataclass
class ScoreConfig:
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    objectlab: ObjectLabConfig = field(default_factory=ObjectLabConfig)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def check(self) -> None:
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

    def queue(self, name: str) -> list[Issue]:
        """Issues of one queue (or one issue type), best first."""
        types = QUEUES.get(name, (name,))
        return sorted((i for i in self.issues if i.type in types), key=lambda i: -i.score)

    def counts(self) -> dict[str, int]:
        out = {t: 0 for t in ISSUE_TYPES}
        for i in self.issues:
            out[i.type] = out.get(i.type, 0) + 1
        return {k: v for k, v in out.items() if v}

    def ranking(self) -> np.ndarray:
        """Image indices, most suspicious first."""
        return np.argsort(-self.image_score, kind="stable")


IMAGE_LEVEL = {"style_fragmented", "style_merged", "rare_class_mix", "near_duplicate", "leakage", "blur",
               "underexposed", "overexposed", "unreadable"}


def _relative(values: np.ndarray) -> np.ndarray:
    """For each value, the fraction of all values strictly below it."""
    order = np.sort(values)
    return np.searchsorted(order, values, side="left") / max(1, len(values))


def relative_scores(issues: Sequence[Issue], *, n_boxes: int, n_images: int) -> None:
    """Set ``issue.data["relative"]``: the fraction of the dataset's objects scoring lower on that type.

    Objects without an issue of a type count as scoring 0 on it, so a type that fires on few
    objects gives its issues relative scores near 1, and one that fires everywhere does not.
    """
    by_type: dict[str, list[Issue]] = {}
    for iss in issues:
        by_type.setdefault(iss.type, []).append(iss)
    for t, group in by_type.items():
        n = n_images if t in IMAGE_LEVEL else n_boxes
        n = max(n, len(group))
        scores = np.sort(np.array([g.score for g in group]))
        for g in group:
            higher_or_equal = len(scores) - np.searchsorted(scores, g.score, side="left")
            g.data["relative"] = float(1.0 - (higher_or_equal - 1) / n - 1.0 / n) if n else 0.0


def score(labels: LabelSet, *, predictions: Sequence[Annotations] | None = None,
          features: ImageFeatures | None = None, cfg: ScoreConfig | None = None) -> ScoreResult:
    """Score every image and box; see the module docstring for how signals combine."""
    cfg = cfg or ScoreConfig()
    issues: list[Issue] = []
    issues += box_issues(labels, cfg.geometry)
    issues += size_outliers(labels, cfg.geometry)
    issues += style_issues(labels, cfg.geometry)
    issues += class_mix_issues(labels, cfg.geometry)
    if features is not None:
        issues += image_issues(labels, features, cfg.images)
    quality = None
    thresholds = None
    if predictions is not None:
        ol = objectlab_scores(labels, predictions, cfg.objectlab)
        issues += ol.issues
        quality, thresholds = ol.image_quality, ol.thresholds
    index = {r.filepath: i for i, r in enumerate(labels.records)}
    relative_scores(issues, n_boxes=max(1, labels.num_boxes), n_images=max(1, len(labels.records)))
    image_score = np.zeros(len(labels.records))
    box_scores = [np.zeros(len(r.gt)) for r in labels.records]
    for iss in issues:
        i = index[iss.filepath]
        v = cfg.weights.get(iss.type, 1.0) * iss.data["relative"]
        image_score[i] = max(image_score[i], v)
        if iss.box is not None and iss.box < len(box_scores[i]):
            box_scores[i][iss.box] = max(box_scores[i][iss.box], v)
    if quality is not None:
        image_score = np.maximum(image_score, cfg.weights["label_quality"] * _relative(1 - quality))
    return ScoreResult(labels=labels, issues=issues, image_score=image_score,
                       box_scores=box_scores, image_quality=quality,
                       thresholds=thresholds, used_predictions=predictions is not None,
                       used_pixels=features is not None)
