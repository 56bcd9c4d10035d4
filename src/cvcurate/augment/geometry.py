"""Exact boxes of rotated boxes cut by the image border (numpy; :mod:`.gpu` has the torch twin).

albumentations moves a box through its four corners and takes their bounding box
(``rotate_method="largest_box"``), then clips that box to the image. When a rotated box is cut
by the border this is loose: the clipped box still spans the height (or width) of corners that
lie outside the image, by up to ``overhang * tan(angle)`` pixels. The visible part of the box is
the intersection of the rotated quadrilateral with the image, and its bounding box is exact:
:func:`quad_bbox_in_image` computes it from the candidate points (the quad's corners inside the
image, the image's corners inside the quad, and where the quad's edges cross the image border).
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-9


def affine_matrix(sx: float, sy: float, angle: float, tx: float, ty: float, width: int, height: int) -> np.ndarray:
    """albumentations' bbox matrix for ``Affine`` (edge coordinates, centre at (W/2, H/2))."""
    r = math.radians(angle % 360)
    c, s = math.cos(r), math.sin(r)
    cx, cy = width / 2.0, height / 2.0
    shift = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]], np.float64)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]], np.float64)
    scale = np.diag([sx, sy, 1.0])
    return back @ rot @ scale @ shift


def flip_matrix(horizontal: bool, width: int, height: int) -> np.ndarray:
    if horizontal:
        return np.array([[-1, 0, width], [0, 1, 0], [0, 0, 1]], np.float64)
    return np.array([[1, 0, 0], [0, -1, height], [0, 0, 1]], np.float64)


def box_corners(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4, 2) corners in order (x1,y1) (x2,y1) (x2,y2) (x1,y2)."""
    x1, y1, x2, y2 = (xyxy[:, i] for i in range(4))
    return np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1),
                     np.stack([x1, y2], -1)], axis=1)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply the 3x3 affine ``m`` to points (..., 2)."""
    return pts @ m[:2, :2].T + m[:2, 2]


def quad_bbox_in_image(quads: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (N, 4) of convex quads (N, 4, 2) intersected with [0, W] x [0, H].

    Returns (boxes, nonempty mask). Degenerate quads (zero area) fall back to the clipped
    bounding box of their corners.
    """
    n = len(quads)
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0, bool)
    W, H = float(width), float(height)
    cands, valid = [], []
    # 1. corners of the quad inside the image
    inside = ((quads[..., 0] >= -EPS) & (quads[..., 0] <= W + EPS) & (quads[..., 1] >= -EPS)
              & (quads[..., 1] <= H + EPS))
    cands.append(quads)
    valid.append(inside)
    # 2. corners of the image inside the quad (same side of every edge)
    img = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float64)
    a = quads
    b = np.roll(quads, -1, axis=1)
    e = b - a  # (N, 4, 2)
    rel = img[None, :, None, :] - a[:, None, :, :]  # (N, 4 img corners, 4 edges, 2)
    cross = e[:, None, :, 0] * rel[..., 1] - e[:, None, :, 1] * rel[..., 0]
    scale = np.abs(e).sum(-1).max(-1)[:, None, None] + 1.0
    tol = 1e-9 * scale
    in_quad = (cross >= -tol).all(-1) | (cross <= tol).all(-1)
    cands.append(np.broadcast_to(img, (n, 4, 2)))
    valid.append(in_quad)
    # 3. crossings of the quad's edges with the four border lines
    for axis, value in ((0, 0.0), (0, W), (1, 0.0), (1, H)):
        d = e[..., axis]
        safe = np.where(np.abs(d) < EPS, 1.0, d)
        t = (value - a[..., axis]) / safe
        p = a + t[..., None] * e
        other = 1 - axis
        lim = H if other == 1 else W
        ok = (np.abs(d) >= EPS) & (t >= -EPS) & (t <= 1 + EPS) & (p[..., other] >= -EPS) & (p[..., other] <= lim + EPS)
        p = p.copy()
        p[..., axis] = value
        cands.append(p)
        valid.append(ok)
    pts = np.concatenate(cands, axis=1)  # (N, 24, 2)
    ok = np.concatenate(valid, axis=1)
    big = np.inf
    xs = np.where(ok, pts[..., 0], big)
    ys = np.where(ok, pts[..., 1], big)
    x1, y1 = xs.min(1), ys.min(1)
    xs = np.where(ok, pts[..., 0], -big)
    ys = np.where(ok, pts[..., 1], -big)
    x2, y2 = xs.max(1), ys.max(1)
    out = np.stack([x1, y1, x2, y2], axis=1)
    nonempty = ok.any(1)
    # fallback for degenerate quads: the clipped corner box
    corner_box = np.stack([quads[..., 0].min(1), quads[..., 1].min(1), quads[..., 0].max(1), quads[..., 1].max(1)], 1)
    corner_box = np.clip(corner_box, 0, [W, H, W, H])
    out = np.where(nonempty[:, None], out, corner_box)
    out = np.clip(out, 0, [W, H, W, H])
    return out, nonempty


def applied_matrix(applied: list, registry: dict) -> np.ndarray | None:
    """The box matrix of what albumentations applied (``save_applied_params``), or None when it
    cannot be told exactly (an unknown geometric transform, a size change, two affines)."""
    from albumentations.core.transforms_interface import ImageOnlyTransform

    m = np.eye(3)
    affines = 0
    for name, params in applied:
        shape = params.get("shape")
        if shape is None:
            return None
        h, w = shape[:2]
        if name == "HorizontalFlip":
            m = flip_matrix(True, w, h) @ m
        elif name == "VerticalFlip":
            m = flip_matrix(False, w, h) @ m
        elif name == "Affine":
            affines += 1
            if affines > 1 or tuple(params.get("output_shape", shape)[:2]) != (h, w):
                return None
            m = np.asarray(params["bbox_matrix"], np.float64) @ m
        else:
            cls = registry.get(name)
            if cls is None or not issubclass(cls, ImageOnlyTransform):
                return None
    return m
