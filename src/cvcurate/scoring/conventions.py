"""How each class is boxed across a dataset: its labeling conventions, measured against the model.

One annotator boxes a pitted surface whole, the next in vertical strips; neither box is wrong,
and a model trained on both learns neither. This module finds, per class, which styles the data
follows, from the same signals the scorer uses (:func:`~cvcurate.scoring.signals.measure`):

* **pieces or whole** (per image with the class that the model can judge): *pieces* when two or
  more of the class's boxes are pieces of one region the model sees as one (the split signal:
  strips, tiles); *whole* when the class's boxes each cover a region the model sees (a box that
  matches a prediction of its class at IoU >= ``MATCH_IOU``, or one box over regions the model
  sees apart: the merged signal, counted as ``whole_over_several``). Images where the model sees
  none of the class's boxes are not judged.
* **nested**: images where a box of the class lies inside another box of the class (at least
  ``NESTED_INSIDE`` of its area).
* **margins** (per box matched to the model's box of its class at IoU >= ``MATCH_IOU``): *tight*
  when its side is under ``1 / MARGIN_RATIO`` of the model's (square root of the area ratio),
  *loose* when over ``MARGIN_RATIO``, else *as the model*.

A class is **mixed** when the less common of pieces / whole is followed in at least
``MIXED_SHARE`` of its judged images (the share the scorer's habits use, see
:data:`~cvcurate.scoring.model.STYLE_SHARE`): a question for the team, not an error per box.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..types import Annotations, LabelSet
from .batch import Batch, FlatBoxes, pairs_within
from .model import STYLE_SHARE
from .signals import ObjectLabConfig, measure

STYLES = ("whole", "pieces")
MATCH_IOU = 0.5
NESTED_INSIDE = 0.9
MARGIN_RATIO = 1.15
MIXED_SHARE = STYLE_SHARE
EXAMPLES = 3


@dataclass
class ClassConvention:
    """The styles one class is boxed in (counts of images, and of boxes for margins)."""

    name: str
    images: int  # images with at least one box of the class
    boxes: int
    judged: int  # images the model can judge (some box of the class meets a region it sees)
    whole: int
    pieces: int
    whole_over_several: int  # of ``whole``: a box spanning regions the model sees apart
    nested: int  # images with a box of the class inside another of the class
    tight: int
    as_model: int
    loose: int
    adopted: str | None = None  # the team's convention, when one is adopted
    examples: dict[str, list[int]] = field(default_factory=dict)  # style -> record indexes

    def share(self, style: str) -> float:
        """Share of the judged images that follow ``style`` (whole or pieces)."""
        return getattr(self, style) / self.judged if self.judged else 0.0

    @property
    def majority(self) -> str | None:
        if not self.judged or self.whole == self.pieces:
            return None
        return "whole" if self.whole > self.pieces else "pieces"

    @property
    def mixed(self) -> bool:
        """Both styles followed, the less common in at least ``MIXED_SHARE`` of judged images."""
        return self.judged > 0 and min(self.whole, self.pieces) / self.judged >= MIXED_SHARE

    @property
    def margin(self) -> str | None:
        """The margin most matched boxes have (tight, as the model, loose), None without any."""
        counts = {"tight": self.tight, "as the model": self.as_model, "loose": self.loose}
        return max(counts, key=counts.get) if sum(counts.values()) else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(majority=self.majority, mixed=self.mixed, margin=self.margin,
                 shares={s: round(self.share(s), 4) for s in STYLES})
        return d


@dataclass
class Conventions:
    """Every class's styles, in the dataset's class order."""

    classes: list[ClassConvention]
    images: int
    model_floor: float = 0.5  # the confidence from which the model's boxes count (the scorer's ``low``)

    @property
    def mixed(self) -> list[ClassConvention]:
        return [c for c in self.classes if c.mixed and c.adopted is None]

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "classes": [c.to_dict() for c in self.classes],
                "mixed": [c.name for c in self.mixed],
                "definitions": {"match_iou": MATCH_IOU, "nested_inside": NESTED_INSIDE,
                                "margin_ratio": MARGIN_RATIO, "mixed_share": MIXED_SHARE}}


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection area of each row pair of ``a`` and ``b`` (same length)."""
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    return np.clip(rb - lt, 0, None).prod(axis=1)


def find_conventions(labels: LabelSet, preds: Sequence[Annotations], cfg: ObjectLabConfig | None = None,
                     adopted: dict[str, str] | None = None) -> Conventions:
    """The styles of every class of ``labels`` against the model's ``preds`` (one per record)."""
    s = None
    if labels.records and any(len(p) for p in preds):
        s = measure(Batch.of(labels, preds), cfg or ObjectLabConfig())
    return conventions_from_signals(labels, s, adopted)


def conventions_from_signals(labels: LabelSet, s: Any, adopted: dict[str, str] | None = None) -> Conventions:
    """:func:`find_conventions` from the signals a score run measured already (``s`` None: no
    predictions, nothing judged)."""
    k = len(labels.classes)
    n = len(labels.records)
    # per (class, image): the style found
    pieces: dict[tuple[int, int], float] = {}  # -> strength (the best split score)
    whole: dict[tuple[int, int], float] = {}
    over: set[tuple[int, int]] = set()
    margin = np.zeros((k, 3), np.int64)  # tight, as the model, loose
    if s is not None:
        g, pr = s.given, s.pred
        split_match = np.asarray(s.split_match)
        split = np.asarray(s.split)
        merged = np.asarray(s.merged)
        bad_pred = np.asarray(s.bad_pred)
        bad_iou = np.asarray(s.bad_iou)
        # pieces: two or more boxes of a class that are pieces of the same prediction
        m = (split > 0) & (split_match >= 0)
        if m.any():
            key = np.stack([g.image[m], g.cls[m], split_match[m]], axis=1)
            uniq, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
            best = np.zeros(len(uniq))
            np.maximum.at(best, inv.reshape(-1), split[m])
            for (img, c, _), nb, b in zip(uniq.tolist(), cnt.tolist(), best.tolist()):
                if nb >= 2:
                    pieces[(c, img)] = max(pieces.get((c, img), 0.0), b)
        matched = (bad_pred >= 0) & (bad_iou >= MATCH_IOU)
        for i in np.flatnonzero(matched | (merged > 0)).tolist():
            ci, im = int(g.cls[i]), int(g.image[i])
            if (ci, im) in pieces:
                continue
            strength = float(merged[i]) if merged[i] > 0 else float(bad_iou[i])
            whole[(ci, im)] = max(whole.get((ci, im), 0.0), strength)
            if merged[i] > 0:
                over.add((ci, im))
        if matched.any():
            gi = np.flatnonzero(matched)
            ga = np.prod(np.clip(g.xyxy[gi, 2:] - g.xyxy[gi, :2], 0, None), axis=1)
            pb = pr.xyxy[bad_pred[gi]]
            pa = np.prod(np.clip(pb[:, 2:] - pb[:, :2], 0, None), axis=1)
            ratio = np.sqrt(ga / np.maximum(pa, 1e-12))
            kind = np.where(ratio < 1 / MARGIN_RATIO, 0, np.where(ratio > MARGIN_RATIO, 2, 1))
            np.add.at(margin, (g.cls[gi], kind), 1)
    flat = FlatBoxes.concat([r.gt for r in labels.records])
    # nested: same-class pairs of one image where one box lies inside the other
    a, b = pairs_within(flat)
    same = flat.cls[a] == flat.cls[b]
    a, b = a[same], b[same]
    inter = _intersection(flat.xyxy[a], flat.xyxy[b])
    area = np.prod(np.clip(flat.xyxy[:, 2:] - flat.xyxy[:, :2], 0, None), axis=1)
    nest = (inter >= NESTED_INSIDE * area[a]) & (area[a] > 0) | (inter >= NESTED_INSIDE * area[b]) & (area[b] > 0)
    nested_pairs = np.unique(np.stack([flat.cls[a][nest], flat.image[a][nest]], axis=1), axis=0)
    nested_count = np.bincount(nested_pairs[:, 0], minlength=k) if len(nested_pairs) else np.zeros(k, np.int64)
    out = []
    for c, name in enumerate(labels.classes):
        mine = flat.cls == c
        imgs = np.unique(flat.image[mine]).tolist()
        nested = int(nested_count[c])
        w = {i: whole[(c, i)] for i in imgs if (c, i) in whole}
        p = {i: pieces[(c, i)] for i in imgs if (c, i) in pieces}
        examples = {style: [i for i, _ in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:EXAMPLES]]
                    for style, found in (("whole", w), ("pieces", p)) if found}
        out.append(ClassConvention(
            name=name, images=len(imgs), boxes=int(mine.sum()),
            judged=len(w) + len(p), whole=len(w), pieces=len(p),
            whole_over_several=sum(1 for i in w if (c, i) in over), nested=nested,
            tight=int(margin[c, 0]), as_model=int(margin[c, 1]), loose=int(margin[c, 2]),
            adopted=(adopted or {}).get(name), examples=examples))
    return Conventions(classes=out, images=n,
                       model_floor=float(s.thresholds.low) if s is not None else 0.5)
