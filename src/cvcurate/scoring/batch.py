"""One flat batch of boxes over all images, the box pairs built on it, and reductions over them.

Every check of :mod:`~cvcurate.scoring.geometry` and of the prediction-based scoring
(:mod:`~cvcurate.scoring.signals`) runs on the whole dataset at once rather than image by image:

* :class:`FlatBoxes`: the boxes of every image concatenated in record order, with per-image
  ``count`` and ``start`` offsets (image ``k`` owns rows ``start[k]:start[k] + count[k]``);
  :class:`Batch`: the given boxes and the predictions of a :class:`~cvcurate.types.LabelSet`
  as two of them, with the image sizes;
* pairs as two index arrays: :func:`pairs_within` (all pairs of boxes of one image) and
  :func:`pairs_between` (every (a, b) pair of two box sets within each image), made image chunk
  by image chunk (:func:`image_chunks`) where their number must stay bounded;
* segment reductions (:func:`seg_reduce`, :func:`seg_max`, :func:`seg_argmax`) turn per-pair
  values into per-box or per-image ones, and :func:`per_image` splits a flat array back into
  per-image views;
* box math on rows of those arrays: :mod:`cvcurate.boxes` (``box_area``, ``pair_iou``).

Python then builds an :class:`~cvcurate.types.Issue` only for a flagged box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..names import PRED_ATTRIBUTES
from ..types import Annotations, LabelSet


def _cat(parts: list[np.ndarray], shape: tuple, dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(shape, dtype)


@dataclass
class FlatBoxes:
    """Boxes of every image in one array, in record order; image ``k`` owns the rows
    ``start[k]:start[k] + count[k]``."""

    xyxy: np.ndarray  # (B, 4)
    cls: np.ndarray  # (B,) class ids
    conf: np.ndarray | None  # (B,) confidences (predictions), else None
    image: np.ndarray  # (B,) image of each box
    local: np.ndarray  # (B,) index of each box in its image's Annotations
    count: np.ndarray  # (N,) boxes per image
    start: np.ndarray  # (N,) row of each image's first box
    data: dict[str, np.ndarray] = field(default_factory=dict)  # (B,) the per-box arrays of ``keys`` (concat)

    @classmethod
    def concat(cls, anns: Sequence[Annotations], with_confidence: bool = False, keys: Sequence[str] = ()) -> FlatBoxes:
        n = len(anns)
        count = np.fromiter(map(len, anns), dtype=np.int64, count=n)
        start = np.cumsum(count) - count
        image = np.repeat(np.arange(n, dtype=np.int64), count)
        keys = [k for k in keys if any(k in a.data for a in anns)]  # an image without one: NaN
        return cls(xyxy=_cat([a.xyxy for a in anns], (0, 4), np.float64).reshape(-1, 4),
                   cls=_cat([a.class_id for a in anns], (0,), np.int64),
                   conf=_cat([a.confidence for a in anns], (0,), np.float64) if with_confidence else None,
                   image=image, local=np.arange(len(image), dtype=np.int64) - start[image],
                   count=count, start=start,
                   data={k: _cat([np.asarray(a.data[k], np.float64) if k in a.data else np.full(len(a), np.nan)
                                  for a in anns], (0,), np.float64) for k in keys})

    def __len__(self) -> int:
        return len(self.cls)

    @property
    def n_images(self) -> int:
        return len(self.count)

    def take(self, rows: np.ndarray) -> FlatBoxes:
        """The boxes at ``rows`` (ascending), with new per-image offsets; ``local`` stays the index
        in the image's Annotations."""
        image = self.image[rows]
        count = np.bincount(image, minlength=self.n_images).astype(np.int64)
        return FlatBoxes(xyxy=self.xyxy[rows], cls=self.cls[rows], conf=None if self.conf is None else self.conf[rows],
                         image=image, local=self.local[rows], count=count, start=np.cumsum(count) - count,
                         data={k: v[rows] for k, v in self.data.items()})


@dataclass
class Batch:
    """The given boxes (and predictions) of every image of a dataset, flat."""

    width: np.ndarray  # (N,)
    height: np.ndarray  # (N,)
    given: FlatBoxes
    pred: FlatBoxes | None  # with confidences; None without predictions

    @classmethod
    def of(cls, labels: LabelSet, preds: Sequence[Annotations] | None = None) -> Batch:
        recs = labels.records
        size = np.array([(r.width, r.height) for r in recs], dtype=np.int64).reshape(len(recs), 2)
        return cls(width=size[:, 0], height=size[:, 1], given=FlatBoxes.concat([r.gt for r in recs]),
                   pred=None if preds is None else FlatBoxes.concat(preds, with_confidence=True, keys=PRED_ATTRIBUTES))


# ----------------------------------------------------------------------------------------------
# pairs


def pairs_within(boxes: FlatBoxes) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j, of boxes in one image, as rows: by image, then row-major."""
    pos = np.arange(len(boxes), dtype=np.int64) - boxes.start[boxes.image]
    later = boxes.count[boxes.image] - pos - 1  # boxes after this one in its image
    i = np.repeat(np.arange(len(later), dtype=np.int64), later)
    run = np.cumsum(later) - later
    j = i + 1 + (np.arange(len(i), dtype=np.int64) - np.repeat(run, later))
    return i, j


def pairs_between(a: FlatBoxes, b: FlatBoxes, first: int = 0, stop: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b) pair within each of the images ``first:stop``, as rows of ``a`` and ``b``:
    ordered by image, then a, then b."""
    count_a, start_a = a.count[first:stop], a.start[first:stop]
    count_b, start_b = b.count[first:stop], b.start[first:stop]
    c = count_a * count_b
    img = np.repeat(np.arange(len(c)), c)
    t = np.arange(len(img)) - np.repeat(np.cumsum(c) - c, c)
    nb = count_b[img]
    la = t // nb
    return start_a[img] + la, start_b[img] + (t - la * nb)


def image_chunks(pairs_per_image: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive image ranges ``(first, stop)`` with at most ``max_pairs`` pairs each (or one
    image, when a single image has more)."""
    cum = np.cumsum(pairs_per_image)
    out, a = [], 0
    while a < len(pairs_per_image):
        base = int(cum[a - 1]) if a else 0
        b = max(int(np.searchsorted(cum, base + max_pairs, side="right")), a + 1)
        out.append((a, b))
        a = b
    return out


# ----------------------------------------------------------------------------------------------
# segment reductions: ``seg`` is the segment (box, prediction or image) of each value, ascending


def seg_reduce(ufunc: np.ufunc, values: np.ndarray, seg: np.ndarray, n: int, default, dtype=np.float64
               ) -> np.ndarray:
    """``ufunc``-reduce ``values`` by segment id ``seg`` (sorted ascending); empty segments: default."""
    out = np.full(n, default, dtype=dtype)
    if len(values):
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        out[seg[starts]] = ufunc.reduceat(values, starts)
    return out


def seg_max(values: np.ndarray, seg: np.ndarray, mask: np.ndarray, n: int, default: float) -> np.ndarray:
    """Per segment, the max of ``values[mask]`` (``default`` when empty)."""
    return seg_reduce(np.maximum, values[mask], seg[mask], n, default)


def seg_argmax(values: np.ndarray, seg: np.ndarray, idx: np.ndarray, mask: np.ndarray, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, the max of ``values[mask]`` (0 when empty) and the smallest ``idx`` reaching it
    (-1 unless that max is > 0)."""
    v, s, i = values[mask], seg[mask], idx[mask]
    best = seg_reduce(np.maximum, v, s, n, 0.0)
    at = (v == best[s]) & (v > 0)
    return best, seg_reduce(np.minimum, i[at], s[at], n, -1, dtype=np.int64)


def per_image(flat: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Per-image views of a flat array (``np.split`` is ten times slower for many small pieces)."""
    ends = np.cumsum(counts).tolist()
    return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]
