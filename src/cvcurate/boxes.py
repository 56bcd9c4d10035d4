"""Box math, one home: areas and IoU of pixel ``xyxy`` boxes, as arrays (many at once) or for two
boxes (plain floats, for loops over a few boxes). Pure numpy; every module that compares boxes
uses these (``scoring.batch`` keeps its names for its many callers)."""

from __future__ import annotations

from typing import Any

import numpy as np


def box_area(xyxy: np.ndarray) -> np.ndarray:
    """Area of each xyxy box (0 for inverted boxes)."""
    return np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)


def row_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection area of each row pair of xyxy boxes ``a`` and ``b`` (same length, or one box
    against many by broadcasting)."""
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    return np.clip(rb - lt, 0, None).prod(axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box of ``a`` (M, 4) with every box of ``b`` (N, 4): (M, N); boxes
    without area have IoU 0."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_one(a: Any, b: Any) -> np.ndarray:
    """IoU of one box ``a`` (4,) with each box of ``b`` (N, 4): (N,)."""
    return box_iou(np.asarray(a, dtype=np.float64).reshape(1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4))[0]


def pair_iou(a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a[ia]`` and ``b[ib]`` row by row; boxes without area have IoU 0."""
    w = np.clip(np.minimum(a[ia, 2], b[ib, 2]) - np.maximum(a[ia, 0], b[ib, 0]), 0, None)
    h = np.clip(np.minimum(a[ia, 3], b[ib, 3]) - np.maximum(a[ia, 1], b[ib, 1]), 0, None)
    inter = w * h
    union = box_area(a)[ia] + box_area(b)[ib] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def iou(a: Any, b: Any) -> float:
    """IoU of two boxes in plain floats (no array per call: for loops). Areas as the boxes give
    them (``x2 - x1`` times ``y2 - y1``), so valid boxes match :func:`box_iou`."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
