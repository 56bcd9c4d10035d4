"""Inject known label errors into a copy of a dataset, and record exactly what was done.

With the truth file a test or benchmark measures how many injected errors a scorer ranks on top.

Error types (one per corrupted image; ``rate`` is the fraction of images corrupted):

==============  ==================================================================================
``swap``        a box's class is changed to another class
``badloc``      a box is shifted and/or scaled so that its IoU with the true box is 0.2-0.5
``overlooked``  a box is dropped (the annotator missed the defect)
``spurious``    a box (class and size of a real box) is added where there is no defect
``merge``       two neighbouring boxes (of one class where it can) become one box around both
``split``       one box is replaced by 2-3 fragments along its long side
``degenerate``  a box is collapsed to zero width or height, or pushed partly out of the image
==============  ==================================================================================

Every type that can be applied appears: types are dealt round-robin over the chosen images, and an
image where a type cannot be applied (``merge`` needs two boxes) takes the next type that can.
Deterministic for a seed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .boxes import iou
from .errors import InputError
from .types import Annotations, ImageRecord, LabelSet

ERROR_TYPES = ("swap", "badloc", "overlooked", "spurious", "merge", "split", "degenerate")
MERGE_JITTER = 0.08  # a merged box's sides land up to this share of the union's side in or out


@dataclass
class InjectedError:
    """One injected error. Box indices refer to the corrupted record's ``gt``."""

    type: str
    filepath: str
    boxes: list[int] = field(default_factory=list)  # indices of the affected boxes after corruption
    original: list[list[float]] = field(default_factory=list)  # the true boxes involved (xyxy)
    original_class: list[int] = field(default_factory=list)
    new: list[list[float]] = field(default_factory=list)  # the corrupted boxes (xyxy)
    new_class: list[int] = field(default_factory=list)
    detail: str = ""


@dataclass
class CorruptionResult:
    labels: LabelSet
    errors: list[InjectedError]
    seed: int
    rate: float

    def by_type(self) -> dict[str, int]:
        out = {t: 0 for t in ERROR_TYPES}
        for e in self.errors:
            out[e.type] += 1
        return {k: v for k, v in out.items() if v}

    def to_dict(self, source: str | None = None) -> dict[str, Any]:
        return {
            "source": source,
            "seed": self.seed,
            "rate": self.rate,
            "images": len(self.labels),
            "corrupted_images": len({e.filepath for e in self.errors}),
            "by_type": self.by_type(),
            "classes": self.labels.classes,
            "errors": [asdict(e) for e in self.errors],
        }

    def write_truth(self, path: str | Path, source: str | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(source), indent=1))
        return path


def _valid(ann: Annotations) -> np.ndarray:
    wh = ann.wh
    return np.flatnonzero((wh[:, 0] > 1) & (wh[:, 1] > 1))


def _badloc_box(rng: np.random.Generator, box: np.ndarray, w: int, h: int) -> np.ndarray | None:
    bw, bh = box[2] - box[0], box[3] - box[1]
    for _ in range(200):
        scale = rng.uniform(0.5, 1.8, size=2)
        shift = rng.uniform(-0.8, 0.8, size=2) * np.array([bw, bh])
        cx, cy = (box[0] + box[2]) / 2 + shift[0], (box[1] + box[3]) / 2 + shift[1]
        nw, nh = bw * scale[0], bh * scale[1]
        cand = np.array([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2])
        cand = np.clip(np.round(cand), [0, 0, 0, 0], [w, h, w, h])
        if cand[2] - cand[0] < 2 or cand[3] - cand[1] < 2:
            continue
        if 0.2 <= iou(cand, box) <= 0.5:
            return cand
    return None


def box_sizes(labels: LabelSet) -> np.ndarray:
    """(n, 3) rows ``(width, height, class)`` of the dataset's boxes with both sides > 1 px, in an
    order of their own (by value, not by file): what a spurious box is drawn from."""
    rows = [np.column_stack([r.gt.wh, r.gt.class_id]) for r in labels.records if len(r.gt)]
    a = np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 3))
    a = a[(a[:, :2] > 1).all(axis=1)]
    return a[np.lexsort((a[:, 2], a[:, 1], a[:, 0]))] if len(a) else a


def _spurious_box(rng: np.random.Generator, ann: Annotations, w: int, h: int,
                  sizes: np.ndarray) -> tuple[np.ndarray, int | None] | None:
    """A box away from every box of ``ann`` (IoU < 0.05), the size (and, where ``sizes`` has a
    third column, the class) of one real box drawn from ``sizes``: a spurious box looks like a box
    someone drew for a defect of that class."""
    for _ in range(200):
        row = sizes[rng.integers(len(sizes))] if len(sizes) else (w * 0.2, h * 0.2)
        bw, bh = min(row[0], w * 0.9), min(row[1], h * 0.9)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        cand = np.round(np.array([x1, y1, x1 + bw, y1 + bh]))
        if cand[2] - cand[0] < 2 or cand[3] - cand[1] < 2:
            continue
        if all(iou(cand, b) < 0.05 for b in ann.xyxy):
            return cand, (int(row[2]) if len(sizes) and len(row) > 2 else None)
    return None


def apply_error(kind: str, rec: ImageRecord, rng: np.random.Generator, num_classes: int,
           sizes: np.ndarray) -> InjectedError | None:
    """Apply one error of ``kind`` to ``rec`` in place; None when it does not apply."""
    ann, w, h = rec.gt, rec.width, rec.height
    valid = _valid(ann)
    err = InjectedError(type=kind, filepath=rec.filepath)
    if kind == "spurious":
        got = _spurious_box(rng, ann, w, h, sizes)
        if got is None:
            return None
        box, cls = got
        cls = int(rng.integers(num_classes)) if cls is None or not 0 <= cls < num_classes else cls
        rec.gt = Annotations.concat([ann, Annotations(box[None], [cls])])
        err.boxes, err.new, err.new_class = [len(ann)], [box.tolist()], [cls]
        return err
    if len(valid) == 0:
        return None
    if kind == "merge":
        if len(valid) < 2:
            return None
        i = int(rng.choice(valid))
        others = [j for j in valid if j != i]
        same = [j for j in others if ann.class_id[j] == ann.class_id[i]]  # neighbours of one kind merge
        centers = (ann.xyxy[:, :2] + ann.xyxy[:, 2:]) / 2
        j = int(min(same or others, key=lambda k: float(np.sum((centers[k] - centers[i]) ** 2))))
        union = np.concatenate([np.minimum(ann.xyxy[i, :2], ann.xyxy[j, :2]),
                                np.maximum(ann.xyxy[i, 2:], ann.xyxy[j, 2:])])
        # drawn by hand, not computed: each side lands up to 8 % of the union's side in or out
        side = np.tile(union[2:] - union[:2], 2)
        union = union + rng.uniform(-MERGE_JITTER, MERGE_JITTER, 4) * side * np.array([-1, -1, 1, 1])
        union = np.clip(np.round(union), 0, [w, h, w, h])
        keep = [k for k in range(len(ann)) if k not in (i, j)]
        cls = int(ann.class_id[i] if ann.area[i] >= ann.area[j] else ann.class_id[j])
        rec.gt = Annotations.concat([ann[keep], Annotations(union[None], [cls])])
        err.boxes, err.new, err.new_class = [len(keep)], [union.tolist()], [cls]
        err.original = [ann.xyxy[i].tolist(), ann.xyxy[j].tolist()]
        err.original_class = [int(ann.class_id[i]), int(ann.class_id[j])]
        return err
    i = int(rng.choice(valid))
    box, cls = ann.xyxy[i].copy(), int(ann.class_id[i])
    err.original, err.original_class = [box.tolist()], [cls]
    if kind == "swap":
        if num_classes < 2:
            return None
        new_cls = int((cls + rng.integers(1, num_classes)) % num_classes)
        ids = ann.class_id.copy()
        ids[i] = new_cls
        rec.gt = Annotations(ann.xyxy.copy(), ids)
        err.boxes, err.new, err.new_class = [i], [box.tolist()], [new_cls]
    elif kind == "badloc":
        new = _badloc_box(rng, box, w, h)
        if new is None:
            return None
        xyxy = ann.xyxy.copy()
        xyxy[i] = new
        rec.gt = Annotations(xyxy, ann.class_id.copy())
        err.boxes, err.new, err.new_class = [i], [new.tolist()], [cls]
        err.detail = f"IoU with the true box {iou(new, box):.2f}"
    elif kind == "overlooked":
        keep = [k for k in range(len(ann)) if k != i]
        rec.gt = ann[keep]
        err.boxes = []
    elif kind == "split":
        n = int(rng.integers(2, 4))
        horizontal = (box[2] - box[0]) >= (box[3] - box[1])
        lo, hi = (box[0], box[2]) if horizontal else (box[1], box[3])
        if hi - lo < 3 * n:
            return None
        cuts = np.arange(1, n) / n + rng.uniform(-0.1, 0.1, size=n - 1)  # near-even fragments
        edges = np.round(np.concatenate([[lo], lo + cuts * (hi - lo), [hi]]))
        gap = max(1.0, 0.03 * (hi - lo))
        frags = []
        for k in range(n):
            a, b = edges[k] + (gap / 2 if k else 0), edges[k + 1] - (gap / 2 if k < n - 1 else 0)
            frags.append([a, box[1], b, box[3]] if horizontal else [box[0], a, box[2], b])
        frags_arr = np.round(np.array(frags))
        keep = [k for k in range(len(ann)) if k != i]
        rec.gt = Annotations.concat([ann[keep], Annotations(frags_arr, [cls] * n)])
        err.boxes = list(range(len(keep), len(keep) + n))
        err.new, err.new_class = frags_arr.tolist(), [cls] * n
    elif kind == "degenerate":
        new = box.copy()
        how = int(rng.integers(3))
        if how == 0:
            new[2] = new[0]
            err.detail = "zero width"
        elif how == 1:
            new[3] = new[1]
            err.detail = "zero height"
        else:
            bw = box[2] - box[0]
            shift = np.round(w - box[0] - 0.3 * bw)  # 70% of the box beyond the right edge
            new[[0, 2]] += shift
            err.detail = "outside the image"
        xyxy = ann.xyxy.copy()
        xyxy[i] = new
        rec.gt = Annotations(xyxy, ann.class_id.copy())
        err.boxes, err.new, err.new_class = [i], [new.tolist()], [cls]
    else:
        raise InputError(f"unknown error type {kind!r}: use {', '.join(ERROR_TYPES)}")
    return err


def corrupt(labels: LabelSet, rate: float = 0.1, seed: int = 0, *,
            types: Sequence[str] = ERROR_TYPES) -> CorruptionResult:
    """Return a corrupted copy of ``labels`` and the list of injected errors.

    ``rate`` is the fraction of images that get one error each. ``labels`` is not modified.
    """
    if not 0 < rate <= 1:
        raise InputError(f"rate must be in (0, 1], got {rate}")
    unknown = [t for t in types if t not in ERROR_TYPES]
    if unknown or not types:
        raise InputError(f"unknown error type(s) {unknown or types}: use {', '.join(ERROR_TYPES)}")
    if not len(labels):
        raise InputError("the dataset has no images to corrupt")
    rng = np.random.default_rng(seed)
    out = LabelSet(classes=list(labels.classes), records=[copy.deepcopy(r) for r in labels.records])
    for r in out.records:
        r.sample_id = None
    sizes = box_sizes(labels)
    n = max(1, int(round(rate * len(out))))
    chosen = rng.permutation(len(out))[:n]
    order = list(types)
    errors: list[InjectedError] = []
    for k, idx in enumerate(chosen):
        rec = out.records[int(idx)]
        for attempt in range(len(order)):
            kind = order[(k + attempt) % len(order)]
            err = apply_error(kind, rec, rng, len(labels.classes), sizes)
            if err is not None:
                errors.append(err)
                break
    return CorruptionResult(labels=out, errors=errors, seed=seed, rate=rate)


def load_truth(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read truth file {path}: {exc}") from None
