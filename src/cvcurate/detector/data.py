"""Images and boxes for the detector: grayscale, square-resized, with flips and light jitter.

Boxes are clipped to the image and boxes with zero or negative area after clipping are skipped
(torchvision raises on degenerate boxes); the label-error scorers see those boxes, the detector
does not need to learn from them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..types import Annotations, ImageRecord, LabelSet
from .images import image_digests, load_gray  # noqa: F401 - their home is the torch-free module


MOSAIC_KEEP = 0.25  # a box cut by a mosaic's window is kept when this share of it stays visible


def scaled_boxes(rec: ImageRecord, size: int, ann: Annotations | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of ``rec`` in the ``size`` x ``size`` frame, clipped, degenerate ones dropped."""
    ann = rec.gt if ann is None else ann
    if len(ann) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    sx, sy = size / rec.width, size / rec.height
    b = ann.xyxy * np.array([sx, sy, sx, sy])
    b = np.clip(b, 0, size)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(b).all(axis=1)
    return b[keep].astype(np.float32), ann.class_id[keep].astype(np.int64)


def repeat_factors(classes_per_image: Sequence[np.ndarray], n_classes: int, threshold: float) -> np.ndarray:
    """Repeat-factor sampling (Gupta et al., LVIS, 2019): per image, ``max(1, sqrt(t / f_c))`` over
    the classes ``c`` it holds, ``f_c`` the share of the images holding ``c`` (1 for an image
    without boxes): the images of a class rarer than ``t`` are drawn more often."""
    n = len(classes_per_image)
    if n == 0 or threshold <= 0:
        return np.ones(n)
    holds = np.zeros((n, max(n_classes, 1)), bool)
    for i, c in enumerate(classes_per_image):
        holds[i, np.asarray(c, np.int64)] = True
    f = holds.mean(axis=0)
    with np.errstate(divide="ignore"):
        r_c = np.maximum(1.0, np.sqrt(threshold / np.where(f > 0, f, np.inf)))
    return np.where(holds, r_c[None, :], 1.0).max(axis=1)


def _in_frame(b: np.ndarray, labels: np.ndarray, size: int, min_side: float, min_share: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes moved in a ``size`` x ``size`` frame (by a zoom or a mosaic's window), clipped to it:
    kept where both sides are at least ``min_side`` and at least ``min_share`` of the box's area
    stays inside."""
    full = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    b = np.clip(b, 0, size)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = (b[:, 2] - b[:, 0] >= min_side) & (b[:, 3] - b[:, 1] >= min_side) & (area >= min_share * full)
    return b[keep].astype(np.float32), labels[keep]


class DetectionDataset(torch.utils.data.Dataset):
    """A torch Dataset over the records of a :class:`LabelSet`.

    ``cache=True`` keeps the resized grayscale images in memory (1,200 images at 224 px is 60 MB),
    so epochs after the first do not decode JPEGs again.
    """

    def __init__(self, records: Sequence[ImageRecord], size: int, *, augment: bool = False,
                 hflip: float = 0.5, vflip: float = 0.5, brightness: float = 0.0, contrast: float = 0.0,
                 scale_jitter: float = 0.0, rot90: float = 0.0, noise: float = 0.0, blur: float = 0.0,
                 mosaic: float = 0.0, seed: int = 0, cache: bool = True) -> None:
        self.records = list(records)
        self.size = size
        self.augment = augment
        self.hflip, self.vflip = hflip, vflip
        self.brightness, self.contrast = brightness, contrast
        self.scale_jitter = scale_jitter
        self.rot90, self.noise, self.blur = rot90, noise, blur
        self.mosaic = mosaic
        self.rng = np.random.default_rng(seed)
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.targets = [scaled_boxes(r, size) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        rec = self.records[i]
        img = load_gray(rec.filepath, self.size, (rec.width, rec.height))
        if self.cache is not None:
            self.cache[i] = img
        return img

    def _zoom(self, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random zoom in/out by up to ``scale_jitter`` with a random shift; the border left by
        zooming out is filled with the image mean (not mirrored: that would copy unlabelled
        defects). Boxes keeping less than 40% of their area are dropped."""
        import cv2

        s = self.size
        z = self.rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter)
        lo, hi = sorted((0.0, s - z * s))
        tx, ty = self.rng.uniform(lo, hi), self.rng.uniform(lo, hi)
        m = np.array([[z, 0, tx], [0, z, ty]], dtype=np.float64)
        img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=float(img.mean()))
        b, labels = _in_frame(boxes * z + np.array([tx, ty, tx, ty], dtype=np.float32), labels, s, 1, 0.4)
        return img, b, labels

    def _mosaic(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mosaic (Bochkovskiy et al., YOLOv4, 2020): image ``i`` and three others drawn at random
        tiled 2 x 2 at full scale, and a ``size`` window cut at a random place of the tiling:
        every defect keeps its scale, seen beside others and cut at new places. A box keeps its
        visible part when at least ``MOSAIC_KEEP`` of it is visible (a texture defect's visible part
        is still that defect), otherwise it is dropped."""
        s = self.size
        picks = [i, *self.rng.integers(0, len(self.records), 3).tolist()]
        canvas = np.empty((2 * s, 2 * s), np.uint8)
        all_b, all_c = [], []
        for q, j in enumerate(picks):
            ox, oy = (q % 2) * s, (q // 2) * s
            canvas[oy:oy + s, ox:ox + s] = self.image(j)
            b, c = self.targets[j]
            all_b.append(b + np.array([ox, oy, ox, oy], np.float32))
            all_c.append(c)
        x0, y0 = (int(v) for v in self.rng.integers(0, s + 1, 2))
        img = canvas[y0:y0 + s, x0:x0 + s]
        b, c = _in_frame(np.concatenate(all_b) - np.array([x0, y0, x0, y0], np.float32), np.concatenate(all_c),
                         s, 2, MOSAIC_KEEP)
        return img, b, c

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.augment and self.mosaic > 0 and self.rng.random() < self.mosaic:
            img, boxes, labels = self._mosaic(i)
        else:
            img = self.image(i)
            boxes, labels = self.targets[i]
            boxes = boxes.copy()
        s = self.size
        if self.augment and self.scale_jitter > 0 and self.rng.random() < 0.5:
            img, boxes, labels = self._zoom(img, boxes, labels)
        img = img.astype(np.float32) / 255.0
        if self.augment:
            if self.rng.random() < self.hflip:
                img = img[:, ::-1]
                boxes[:, [0, 2]] = s - boxes[:, [2, 0]]
            if self.rng.random() < self.vflip:
                img = img[::-1, :]
                boxes[:, [1, 3]] = s - boxes[:, [3, 1]]
            if self.rng.random() < self.rot90:
                img, boxes = rotate90(img, boxes, s, clockwise=bool(self.rng.random() < 0.5))
            if self.rng.random() < self.blur:
                import cv2

                img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), float(self.rng.uniform(0.5, 1.2)))
            if self.noise > 0 and self.rng.random() < 0.5:
                sigma = self.rng.uniform(0.0, self.noise)
                img = np.clip(img + self.rng.normal(0.0, sigma, img.shape).astype(np.float32), 0.0, 1.0)
            if self.contrast or self.brightness:
                c = 1.0 + self.rng.uniform(-self.contrast, self.contrast)
                b = self.rng.uniform(-self.brightness, self.brightness)
                m = float(img.mean())
                img = np.clip((img - m) * c + m + b, 0.0, 1.0)
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
        return x, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}


def rotate90(img: np.ndarray, boxes: np.ndarray, size: int, *, clockwise: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """A quarter turn of a ``size`` x ``size`` image and its xyxy boxes.

    Counter-clockwise (``np.rot90``), the point (x, y) goes to (y, size - x); clockwise to
    (size - y, x).
    """
    b = boxes.copy()
    if clockwise:
        out = np.rot90(img, -1)
        b[:, 0], b[:, 2] = size - boxes[:, 3], size - boxes[:, 1]
        b[:, 1], b[:, 3] = boxes[:, 0], boxes[:, 2]
    else:
        out = np.rot90(img, 1)
        b[:, 0], b[:, 2] = boxes[:, 1], boxes[:, 3]
        b[:, 1], b[:, 3] = size - boxes[:, 2], size - boxes[:, 0]
    return out, b


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def data_fingerprint(labels: LabelSet, records: Sequence[ImageRecord] | None = None) -> str:
    """SHA-256 of the training data: sorted file names (not folders, so moving the data keeps
    the hash) with their boxes (rounded to 0.01 px) and class names."""
    recs = labels.records if records is None else records
    lines = []
    for r in recs:
        boxes = ";".join(f"{labels.classes[int(c)]}:{x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f}"
                         for (x1, y1, x2, y2), c in zip(r.gt.xyxy, r.gt.class_id))
        lines.append(f"{Path(r.filepath).name}|{boxes}")
    lines.sort()
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def holdout_split(labels: LabelSet, fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """A fixed, seeded split ``(train_idx, heldout_idx)``, stratified by each image's first class.

    Depends only on file names, classes and the seed (not on the order of the records), so the
    benchmark and the shipped NEU-DET checkpoint agree on which 20% is held out.
    """
    rng = np.random.default_rng(seed)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(labels.records):
        key = int(r.gt.class_id[0]) if len(r.gt) else -1
        groups.setdefault(key, []).append(i)
    held: list[int] = []
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: Path(labels.records[i].filepath).name)
        idx = [idx[j] for j in rng.permutation(len(idx))]
        held.extend(idx[: int(round(fraction * len(idx)))])
    held_set = set(held)
    train = [i for i in range(len(labels.records)) if i not in held_set]
    return train, sorted(held)


def kfold_assign(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of each of ``n`` images: a seeded permutation dealt round-robin."""
    if k < 2:
        raise InputError(f"k-fold needs at least 2 folds, got {k}")
    if n < k:
        raise InputError(f"k-fold with {k} folds needs at least {k} images, the dataset has {n}")
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return folds


def subset(labels: LabelSet, idx: Sequence[int]) -> LabelSet:
    return LabelSet(classes=list(labels.classes), records=[labels.records[i] for i in idx])
