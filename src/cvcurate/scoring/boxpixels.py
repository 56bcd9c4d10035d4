"""What the pixels say about a box: its inside against the ring around it.

A box drawn where nothing is (a spurious box), a box that slipped off its defect (badly placed) or
one drawn around two defects and the plain steel between them (merged) looks more like its
surroundings than a box on a defect does; a defect the labels miss looks unlike its surroundings
whatever the detector says. These features need no model: they are measured on a small grey map
of each image (:data:`GRID` x :data:`GRID`, read once with the other pixel features,
:class:`~cvcurate.scoring.images.ImageFeatures`), through integral images, for thousands of boxes
at once.

Per box (coordinates scaled to the map; at least one cell; the ring is the box grown by half its
side, at least one cell, on each side, clipped to the image, minus the box):
  * ``px_contrast``: (mean inside - mean of the ring) / (spread of the ring + 2), signed;
  * ``px_texture``: log of the inside's spread over the ring's (spread + 1 each);
  * ``px_detail``: log of the inside's fine detail (mean |pixel - its 3x3 mean|) over the ring's
    (+ 0.5 each);
  * ``px_zimage``: (mean inside - the image's mean) / (the image's spread + 2).
NaN where the image could not be read or the ring is empty (a box covering the whole image);
the error models' boosted trees take NaN as "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

GRID = 48  # side of the grey map of every image (2.3 KB an image)
PIXEL_FEATURES = ("px_contrast", "px_texture", "px_detail", "px_zimage")
_CHUNK = 1024  # images whose integral maps are built at once (3 x 49 x 49 float64 each: 58 KB)


@dataclass
class BoxPixels:
    """The grey maps of the images and, for a batch of other records (copies of the images),
    which map each of its images reads (``index``; None: the batch is the images themselves)."""

    maps: np.ndarray  # (N, GRID, GRID) uint8
    ok: np.ndarray  # (N,) bool: False where the image could not be read
    index: np.ndarray | None = None

    def take(self, index: np.ndarray) -> "BoxPixels":
        """The same maps for a batch whose image ``i`` is image ``index[i]`` of this one."""
        index = np.asarray(index, np.int64)
        return BoxPixels(self.maps, self.ok, index if self.index is None else self.index[index])

    def features(self, xyxy: np.ndarray, image: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """(K, 4) :data:`PIXEL_FEATURES` of boxes ``xyxy`` (pixels) on images ``image`` of the batch,
        whose sizes are ``width`` / ``height`` (per image of the batch)."""
        k = len(xyxy)
        out = np.full((k, len(PIXEL_FEATURES)), np.nan)
        if not k:
            return out
        image = np.asarray(image, np.int64)
        rows = image if self.index is None else self.index[image]
        sx = GRID / np.maximum(np.asarray(width, np.float64)[image], 1.0)
        sy = GRID / np.maximum(np.asarray(height, np.float64)[image], 1.0)
        g = np.asarray(xyxy, np.float64) * np.column_stack([sx, sy, sx, sy])
        inner = _cells(g)
        grow_x = np.maximum((g[:, 2] - g[:, 0]) / 2, 1.0)
        grow_y = np.maximum((g[:, 3] - g[:, 1]) / 2, 1.0)
        outer = _cells(g + np.column_stack([-grow_x, -grow_y, grow_x, grow_y]))
        uniq, inv = np.unique(rows, return_inverse=True)
        for lo in range(0, len(uniq), _CHUNK):
            sel = (inv >= lo) & (inv < lo + _CHUNK)
            if not sel.any():
                continue
            ii = _integrals(self.maps[uniq[lo:lo + _CHUNK]])
            out[sel] = _measure(ii, inv[sel] - lo, inner[sel], outer[sel])
        out[~self.ok[rows]] = np.nan
        return out


def pixel_features(s: Any, xyxy: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The :data:`PIXEL_FEATURES` of boxes ``xyxy`` on images ``image`` of signals ``s``
    (:class:`~.signals.Signals`; NaN where it has no pixels)."""
    if getattr(s, "pixels", None) is None:
        return np.full((len(xyxy), len(PIXEL_FEATURES)), np.nan)
    return s.pixels.features(xyxy, image, s.batch.width, s.batch.height)


def _cells(g: np.ndarray) -> np.ndarray:
    """Integer cell ranges [x1, y1, x2, y2) of boxes in map coordinates: at least one cell, inside."""
    x1 = np.clip(np.floor(np.nan_to_num(g[:, 0])), 0, GRID - 1)
    y1 = np.clip(np.floor(np.nan_to_num(g[:, 1])), 0, GRID - 1)
    x2 = np.clip(np.maximum(np.ceil(np.nan_to_num(g[:, 2])), x1 + 1), 1, GRID)
    y2 = np.clip(np.maximum(np.ceil(np.nan_to_num(g[:, 3])), y1 + 1), 1, GRID)
    return np.column_stack([x1, y1, x2, y2]).astype(np.int64)


def grey_map(img: np.ndarray) -> np.ndarray:
    """The :data:`GRID` x :data:`GRID` grey map of a uint8 image: first reduced by whole factors
    (OpenCV's fast box-average path; the few rows and columns beyond a multiple of the factor are
    left out), then area-resampled to the grid. A direct non-integer reduction costs 5-10x more
    (416 px: 311 against 64 us; 1600 x 256: 1.1 ms)."""
    import cv2

    h, w = img.shape[:2]
    ky, kx = max(1, h // GRID), max(1, w // GRID)
    if kx > 1 or ky > 1:
        img = cv2.resize(img[:h - h % ky, :w - w % kx], (w // kx, h // ky), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (GRID, GRID), interpolation=cv2.INTER_AREA)


def _integrals(maps: np.ndarray) -> np.ndarray:
    """(n, 3, GRID + 1, GRID + 1) integral images of the grey level, its square and its fine
    detail (|pixel - the mean of its 3x3 neighbourhood|, edges repeated), one OpenCV call each."""
    import cv2

    ii = np.empty((len(maps), 3, GRID + 1, GRID + 1))
    for k, m in enumerate(maps):
        ii[k, 0], ii[k, 1] = cv2.integral2(m, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
        f = m.astype(np.float32)
        detail = cv2.absdiff(f, cv2.blur(f, (3, 3), borderType=cv2.BORDER_REPLICATE))
        ii[k, 2] = cv2.integral(detail, sdepth=cv2.CV_64F)
    return ii


def _sums(ii: np.ndarray, img: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(K, 3) sums of the three maps over the cell ranges ``c`` of images ``img``."""
    x1, y1, x2, y2 = c.T
    return ii[img, :, y2, x2] - ii[img, :, y1, x2] - ii[img, :, y2, x1] + ii[img, :, y1, x1]


def _measure(ii: np.ndarray, img: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    a_in = ((inner[:, 2] - inner[:, 0]) * (inner[:, 3] - inner[:, 1])).astype(np.float64)
    a_out = ((outer[:, 2] - outer[:, 0]) * (outer[:, 3] - outer[:, 1])).astype(np.float64)
    s_in = _sums(ii, img, inner)
    s_ring = _sums(ii, img, outer) - s_in
    a_ring = a_out - a_in
    whole = ii[img, :, GRID, GRID] / float(GRID * GRID)

    def stats(s: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s[:, 0] / a
            sd = np.sqrt(np.maximum(s[:, 1] / a - mean ** 2, 0.0))
            return mean, sd, s[:, 2] / a

    m_in, sd_in, d_in = stats(s_in, a_in)
    m_r, sd_r, d_r = stats(s_ring, np.where(a_ring > 0, a_ring, np.nan))
    m_img = whole[:, 0]
    sd_img = np.sqrt(np.maximum(whole[:, 1] - m_img ** 2, 0.0))
    return np.column_stack([(m_in - m_r) / (sd_r + 2.0), np.log((sd_in + 1.0) / (sd_r + 1.0)),
                            np.log((d_in + 0.5) / (d_r + 0.5)), (m_in - m_img) / (sd_img + 2.0)])
