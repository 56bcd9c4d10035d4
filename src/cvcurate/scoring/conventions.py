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
:data:`STYLE_SHARE`): a question for the team, not an error per box.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..boxes import box_area, box_iou, row_intersection
from ..types import Annotations, LabelSet
from .batch import Batch, FlatBoxes, pairs_within
from .signals import ObjectLabConfig, measure

STYLES = ("whole", "pieces")
MATCH_IOU = 0.5
NESTED_INSIDE = 0.9
MARGIN_RATIO = 1.15
STYLE_SHARE = 0.25  # a class boxed this way in at least this share of its images has a habit, not errors
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


def find_conventions(labels: LabelSet, preds: Sequence[Annotations], cfg: ObjectLabConfig | None = None,
                     adopted: dict[str, str] | None = None) -> Conventions:
    """The styles of every class of ``labels`` against the model's ``preds`` (one per record)."""
    from .objectlab import drop_hopeless  # the predictions a score's signals see, the same here

    s = None
    cfg = cfg or ObjectLabConfig()
    if labels.records and any(len(p) for p in preds):
        preds, th = drop_hopeless(labels, preds, cfg, None)
        s = measure(Batch.of(labels, preds), cfg, th)
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
            ga = box_area(g.xyxy[gi])
            pa = box_area(pr.xyxy[bad_pred[gi]])
            ratio = np.sqrt(ga / np.maximum(pa, 1e-12))
            kind = np.where(ratio < 1 / MARGIN_RATIO, 0, np.where(ratio > MARGIN_RATIO, 2, 1))
            np.add.at(margin, (g.cls[gi], kind), 1)
    flat = FlatBoxes.concat([r.gt for r in labels.records])
    # nested: same-class pairs of one image where one box lies inside the other
    a, b = pairs_within(flat)
    same = flat.cls[a] == flat.cls[b]
    a, b = a[same], b[same]
    inter = row_intersection(flat.xyxy[a], flat.xyxy[b])
    area = box_area(flat.xyxy)
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


# ----------------------------------------------------------------------------------------------
# adopting a convention: the fixes that make a class follow one style

PIECE_INSIDE = 0.7  # a prediction is a piece of a whole box when this share of it lies inside (as _pieces)


@dataclass
class ConventionFix:
    """One change an adopted convention asks of one image, in the record's pixel frame.

    ``merge``: the boxes ``boxes`` (indexes into the record's ``gt``) become one box ``xyxy[0]``;
    ``split``: the box ``boxes[0]`` becomes the boxes ``xyxy`` (the model's pieces)."""

    record: int
    action: str  # merge | split
    boxes: list[int]
    xyxy: list[list[float]]
    reason: str


def convention_fixes(labels: LabelSet, s: Any, cls: int, style: str) -> list[ConventionFix]:
    """The fixes that make class ``cls`` follow ``style`` everywhere the model can tell (``s``: the
    signals of the labels against the model, :func:`~cvcurate.scoring.signals.measure`).

    ``whole``: the pieces of one region the model sees (two or more boxes of the class, each a
    piece of the same prediction) are merged into the model's box where it covers their union at
    IoU >= ``MATCH_IOU``, else into their union. ``pieces``: a box of the class over regions the
    model sees apart (the merged signal) is split into the model's boxes of the class that lie
    inside it (at least ``PIECE_INSIDE`` of each), clipped to it. An image that already follows
    the style gets no fix; boxes the model does not judge are left alone."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if s is None:
        return []
    g, pr = s.given, s.pred
    split, split_match, merged = (np.asarray(x) for x in (s.split, s.split_match, s.merged))
    out: list[ConventionFix] = []
    name = labels.classes[cls]
    if style == "whole":
        m = (g.cls == cls) & (split > 0) & (split_match >= 0)
        groups: dict[tuple[int, int], list[int]] = {}
        for i in np.flatnonzero(m).tolist():
            groups.setdefault((int(g.image[i]), int(split_match[i])), []).append(i)
        for (img, pm), rows in sorted(groups.items()):
            if len(rows) < 2:
                continue
            boxes = g.xyxy[rows]
            union = np.r_[boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)]
            model = pr.xyxy[pm]
            iou = float(box_iou(union[None], model[None])[0, 0])
            target = model if iou >= MATCH_IOU else union
            local = sorted(int(g.local[i]) for i in rows)
            how = (f"the model's box (IoU {iou:.2f} with their union)" if iou >= MATCH_IOU
                   else f"their union (the model's box covers it at IoU {iou:.2f} only)")
            out.append(ConventionFix(img, "merge", local, [target.tolist()],
                                     f"convention '{name}' = whole: boxes {', '.join(map(str, local))} are pieces of "
                                     f"one region the model sees; merged into {how}"))
    else:
        floor = float(s.thresholds.low)
        for i in np.flatnonzero((g.cls == cls) & (merged > 0)).tolist():
            img = int(g.image[i])
            box = g.xyxy[i]
            lo, hi = int(pr.start[img]), int(pr.start[img] + pr.count[img])
            cand = np.arange(lo, hi)
            cand = cand[(pr.cls[cand] == cls) & (pr.conf[cand] >= floor)]
            pb = pr.xyxy[cand]
            inter = row_intersection(pb, box)
            area = box_area(pb)
            inside = pb[(area > 0) & (inter >= PIECE_INSIDE * area)]
            if len(inside) < 2:
                continue
            inside = inside[np.lexsort((inside[:, 1], inside[:, 0]))]  # left to right, then top down
            clipped = np.c_[np.maximum(inside[:, :2], box[:2]), np.minimum(inside[:, 2:], box[2:])]
            j = int(g.local[i])
            out.append(ConventionFix(img, "split", [j], clipped.tolist(),
                                     f"convention '{name}' = pieces: box {j} spans {len(clipped)} regions the model "
                                     f"sees apart; split into the model's boxes"))
    return out


# ----------------------------------------------------------------------------------------------
# boxing habits: a style is not an error


STYLE_CAP = 0.49  # while no convention is adopted, a box that follows its class's habit stays below the queues


def habits(s: Any) -> dict[int, dict[str, float]]:
    """Per class, how often it is boxed in pieces and how often whole: ``pieces`` the share of the
    images with two or more boxes of the class where some of them are pieces of one object the
    model sees (the split signal); ``whole`` the share of the images with a box of the class where
    one box spans several objects the model sees (the merged signal)."""
    g = s.given
    out: dict[int, dict[str, float]] = {}
    for c in np.unique(g.cls).tolist():
        m = g.cls == c
        imgs, per = np.unique(g.image[m], return_counts=True)
        multi = set(imgs[per >= 2].tolist())
        pieces = set(g.image[m & (np.asarray(s.split) > 0)].tolist()) & multi
        whole = set(g.image[m & (np.asarray(s.merged) > 0)].tolist())
        out[int(c)] = {"pieces": len(pieces) / len(multi) if multi else 0.0,
                       "whole": len(whole) / len(imgs) if len(imgs) else 0.0,
                       "images": float(len(imgs)), "multi_box_images": float(len(multi))}
    return out


CONFORMING = {"whole": "merged", "pieces": "split"}  # an adopted style -> the box type that follows it
DEVIATING = {"whole": "split", "pieces": "merged"}  # ... and the box type that breaks it


def style_cap(s: Any, box: dict[str, np.ndarray], share: float = STYLE_SHARE,
              adopted: dict[int, str] | None = None) -> list[tuple[int, str]]:
    """Keep boxes that follow their class's habit out of the queues: a split (a piece) where the
    class is boxed in pieces in at least ``share`` of its multi-box images, a merged box where it
    is boxed whole that often, get ``p`` at most :data:`STYLE_CAP` (in place). Returns one note
    per class with a habit (reported per class, not box by box): (class, text with ``'{cls}'`` for
    its name, quoted as :func:`cvcurate.names.quoted` quotes it).

    ``adopted``: class -> the style the team adopted for it (``cvcurate conventions --adopt``).
    Such a class has a rule, not a habit: a box that follows it is clean (its conforming type's
    ``p`` set to 0: a piece where pieces were adopted is no split) and a box that breaks it is an
    error by the rule wherever the model's view holds, so its ``p`` is at least the signal that
    measures that view (split: the probability that the model's region is real times how well the
    pieces tile it; merged: the same for the regions inside the box). The calibrated ``p`` alone
    would not do: it compares a box with the data as given, where the old style is common (listed
    as a ``convention`` issue by :func:`~.issues.find_issues`)."""
    notes = []
    adopted = adopted or {}
    for c, style in adopted.items():
        m = s.given.cls == c
        if CONFORMING.get(style) in box:
            box[CONFORMING[style]][m] = 0.0
        dev = DEVIATING.get(style)
        if dev in box:
            box[dev][m] = np.maximum(box[dev][m], np.clip(np.asarray(getattr(s, dev), float)[m], 0.0, 1.0))
    for c, h in habits(s).items():
        if c in adopted:
            continue
        m = s.given.cls == c
        for t, key, how in (("split", "pieces", "in pieces"), ("merged", "whole", "whole over several defects")):
            if h[key] >= share and t in box:
                box[t][m] = np.minimum(box[t][m], STYLE_CAP)
                notes.append((c, f"'{{cls}}' is boxed {how} in {100 * h[key]:.0f} % of its "
                                 f"{'multi-box ' if key == 'pieces' else ''}images: a habit, not an error: {t} "
                                 f"kept below the queues (p < 0.5) until a convention is adopted"))
    return notes
