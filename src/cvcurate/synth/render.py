"""Drawing one synthetic steel image and its defects, with the exact footprint of every defect.

Everything is drawn in a canonical frame where the rolling direction is vertical (as in NEU-DET)
and transposed at the end when the config asks for horizontal rolling. Each defect is a float
field of grey-level changes (``delta``); its mask is where it changes the image by at least one
grey level, so every pixel of the mask is changed by the defect and no pixel outside it is, and
its box is the tight bounding box of the mask. Sizes are given for 200-pixel images and scale
with ``image_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .config import CLASSES, SynthConfig

Array = np.ndarray

MIN_PIXELS = 12  # a defect smaller than this is drawn again


@dataclass
class Defect:
    """One drawn defect: class, footprint (bool HxW) and tight box (x1, y1, x2, y2)."""

    class_id: int
    mask: Array
    xyxy: tuple[float, float, float, float]


@dataclass
class Rendered:
    """One image (uint8 HxW), the same image without its defects, and the defects."""

    image: Array
    background: Array
    defects: list[Defect]


def mask_box(mask: Array) -> tuple[float, float, float, float]:
    """Tight box of a non-empty mask, pixel edges at integers (columns 0..9 give x1=0, x2=10)."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


# ---------------------------------------------------------------------------------------------
# helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> Array:
    """Low-frequency noise of ``shape`` (about unit std) from a ``cells`` grid, cubic-upsampled."""
    grid = rng.standard_normal(cells, dtype=np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _blur(a: Array, sigma: float) -> Array:
    return cv2.GaussianBlur(a, (0, 0), sigmaX=max(sigma, 0.3), borderType=cv2.BORDER_REPLICATE)


def _paste(canvas: Array, patch: Array, y0: int, x0: int) -> None:
    """Add ``patch`` into ``canvas`` with its top-left at (y0, x0), clipped to the canvas."""
    h, w = patch.shape
    H, W = canvas.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, H), min(x0 + w, W)
    if ya < yb and xa < xb:
        canvas[ya:yb, xa:xb] += patch[ya - y0:yb - y0, xa - x0:xb - x0]


def _region(rng: np.random.Generator, size: int, w: float, h: float,
            overhang: float = 0.0) -> tuple[int, int, int, int]:
    """A random (x0, y0, w, h) rectangle; up to ``overhang`` of it may lie outside the image."""
    w, h = max(2, int(round(min(w, size)))), max(2, int(round(min(h, size))))
    ox, oy = int(w * overhang), int(h * overhang)
    x0 = int(rng.integers(-ox, size - w + ox + 1))
    y0 = int(rng.integers(-oy, size - h + oy + 1))
    return x0, y0, w, h


# ---------------------------------------------------------------------------------------------
# background


def background(rng: np.random.Generator, cfg: SynthConfig, main_class: int) -> Array:
    """Defect-free steel (float32, canonical frame): grey level, streaks, grain, light, noise."""
    t = cfg.texture
    s = cfg.image_size
    k = s / 200.0
    name = CLASSES[main_class]
    level = t.class_brightness.get(name, 128.0) + rng.uniform(-1, 1) * t.brightness_jitter
    rough = t.class_roughness.get(name, 1.0)
    # streaks along the rolling direction: a per-column profile, fine and broad, that drifts
    # slowly, and a fine grain elongated the same way
    profile = 0.5 * _blur(rng.standard_normal((1, s), dtype=np.float32), 1.0 * k)
    profile += 2.0 * _blur(rng.standard_normal((1, s), dtype=np.float32), 5.0 * k)
    profile /= profile.std() + 1e-6
    img = t.streaks * profile * (1.0 + 0.35 * _smooth_noise(rng, (s, 1), (4, 1)))
    img += 0.5 * t.streaks * _smooth_noise(rng, (s, s), (max(2, s // 10), max(2, s // 3)))
    # fine noise, and mottled grain made from it: isotropic blotches of a few pixels, strong on
    # rough steel (blurring unit noise with sigma 0.9 leaves a std of about 0.31)
    white = rng.standard_normal((s, s), dtype=np.float32)
    img += (t.grain * rough / 0.31) * _blur(white, 0.9 * k)
    img += t.noise * white
    img += (0.4 * t.grain * rough) * _smooth_noise(rng, (s, s), (max(2, s // 25), max(2, s // 25)))
    # uneven illumination: a ramp in a random direction and slow blotches
    axis = np.linspace(-0.5, 0.5, s, dtype=np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    amp = t.gradient * rng.uniform(0.3, 1.0) * 2.0
    img += (amp * np.cos(theta)) * axis[None, :] + (amp * np.sin(theta)) * axis[:, None]
    img += t.gradient * 0.5 * _smooth_noise(rng, (s, s), (3, 3))
    img += np.float32(level)
    return img


# ---------------------------------------------------------------------------------------------
# defects: each returns an unsigned intensity field (float32 SxS, peak about 1) and a sign


def _crazing(rng: np.random.Generator, s: int, k: float) -> tuple[Array, float, float]:
    """Fine dark crack networks over a wide region: short branching random-walk polylines."""
    x0, y0, w, h = _region(rng, s, rng.uniform(70, 195) * k, rng.uniform(40, 140) * k)
    n = max(6, int(w * h / (rng.uniform(200, 450) * k * k)))
    steps = int(rng.integers(5, 12))
    start = np.stack([x0 + rng.random(n) * w, y0 + rng.random(n) * h], axis=1)
    base = rng.choice([0.0, np.pi], size=n) + rng.normal(0, 0.45, n)  # mostly across the rolling
    ang = base[:, None] + np.cumsum(rng.normal(0, 0.7, (n, steps)), axis=1)
    step = rng.uniform(2, 5, (n, steps)) * k
    pts = start[:, None, :] + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], axis=2) * step[..., None], axis=1)
    pts = np.concatenate([start[:, None, :], pts], axis=1)
    pts[..., 0] = np.clip(pts[..., 0], x0, x0 + w - 1)
    pts[..., 1] = np.clip(pts[..., 1], y0, y0 + h - 1)
    canvas = np.zeros((s, s), np.uint8)
    cv2.polylines(canvas, list(np.round(pts).astype(np.int32)), False, 255, thickness=1, lineType=cv2.LINE_8)
    field = canvas.astype(np.float32) / 255.0
    field *= 0.55 + 0.45 * np.clip(_smooth_noise(rng, (s, s), (5, 5)) * 0.6 + 0.5, 0, 1)
    return _blur(field, 0.6 * k), -1.0, rng.uniform(55, 95)


def _inclusion(rng: np.random.Generator, s: int, k: float) -> tuple[Array, float, float]:
    """Dark elongated spots strung along the rolling direction."""
    length = rng.uniform(20, 170) * k
    cx = rng.uniform(8 * k, s - 8 * k)
    cy0 = rng.uniform(-0.1 * length, s - 0.9 * length)
    spread = rng.uniform(2, 10) * k
    n = int(rng.integers(1, 8))
    canvas = np.zeros((s, s), np.float32)
    for i in range(n):
        a = rng.uniform(4, 20) * k if i else min(length / 2, rng.uniform(8, 30) * k)
        b = rng.uniform(1.5, 6.0) * k
        x = cx + rng.normal(0, spread)
        y = cy0 + (rng.uniform(a, max(a, length - a)) if i else length / 2)
        ang = rng.normal(90, 6)
        cv2.ellipse(canvas, (int(round(x)), int(round(y))), (max(1, int(round(a))), max(1, int(round(b)))),
                    ang, 0, 360, float(rng.uniform(0.55, 1.0)), thickness=-1, lineType=cv2.LINE_AA)
    return _blur(canvas, 1.6 * k), -1.0, rng.uniform(25, 55)


def _patches(rng: np.random.Generator, s: int, k: float) -> tuple[Array, float, float]:
    """Dark irregular blobs with soft edges."""
    w = rng.uniform(35, 100) * k
    h = w * rng.uniform(0.8, 2.2)
    x0, y0, wi, hi = _region(rng, s, w, h, overhang=0.3)
    yy, xx = np.mgrid[0:hi, 0:wi].astype(np.float32)
    u, v = (xx + 0.5) / wi * 2 - 1, (yy + 0.5) / hi * 2 - 1
    envelope = 1.0 - (u * u + v * v)
    shape = envelope + 0.45 * _smooth_noise(rng, (hi, wi), (5, 5))
    blob = np.clip(shape * 4.0, 0, 1)
    blob *= 0.85 + 0.15 * _smooth_noise(rng, (hi, wi), (max(2, hi // 6), max(2, wi // 6)))
    canvas = np.zeros((s, s), np.float32)
    _paste(canvas, np.clip(blob, 0, None), y0, x0)
    return _blur(canvas, 2.5 * k), -1.0, rng.uniform(80, 140)


def _pitted_surface(rng: np.random.Generator, s: int, k: float) -> tuple[Array, float, float]:
    """Dense small dark pits, unevenly spread over a large area."""
    x0, y0, w, h = _region(rng, s, rng.uniform(60, 200) * k, rng.uniform(100, 200) * k)
    x0, y0 = max(x0, 0), max(y0, 0)
    density = rng.uniform(0.008, 0.03) / (k * k)
    p = density * np.clip(0.6 + 0.6 * _smooth_noise(rng, (h, w), (4, 4)), 0.05, None)
    seeds = (rng.random((h, w), dtype=np.float32) < p).astype(np.float32)
    seeds *= rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    pw = int(rng.integers(2, 4))
    ph = pw + int(rng.integers(1, 4))  # pits are stretched along the rolling direction
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(1, int(pw * k)), max(2, int(ph * k))))
    pits = cv2.dilate(seeds, kernel)
    canvas = np.zeros((s, s), np.float32)
    _paste(canvas, pits, y0, x0)
    return _blur(canvas, 1.0 * k), -1.0, rng.uniform(50, 90)


def _rolled_in_scale(rng: np.random.Generator, s: int, k: float) -> tuple[Array, float, float]:
    """A cluster of small dark flakes of scale pressed into the surface."""
    x0, y0, w, h = _region(rng, s, rng.uniform(35, 120) * k, rng.uniform(30, 120) * k)
    n = int(rng.integers(10, 40))
    canvas = np.zeros((s, s), np.float32)
    cx = np.clip(rng.normal(x0 + w / 2, w / 4, n), x0, x0 + w)
    cy = np.clip(rng.normal(y0 + h / 2, h / 4, n), y0, y0 + h)
    for x, y in zip(cx, cy):
        for _ in range(int(rng.integers(1, 3))):
            a, b = rng.uniform(1.5, 4.0) * k, rng.uniform(0.8, 2.0) * k
            cv2.ellipse(canvas, (int(x + rng.normal(0, 1.5 * k)), int(y + rng.normal(0, 1.5 * k))),
                        (max(1, int(round(a))), max(1, int(round(b)))), float(rng.uniform(0, 180)), 0, 360,
                        float(rng.uniform(0.5, 1.0)), thickness=-1, lineType=cv2.LINE_AA)
    return _blur(canvas, 0.7 * k), -1.0, rng.uniform(35, 65)


def _scratches(rng: np.random.Generator, s: int, k: float) -> tuple[Array, float, float]:
    """Thin bright long lines, nearly parallel, mostly along the rolling direction."""
    canvas = np.zeros((s, s), np.float32)
    n = 1 if rng.random() < 0.55 else int(rng.integers(2, 5))
    way = rng.random()  # mostly along the rolling direction, some across, a few diagonal
    if way < 0.72:
        ang = rng.normal(0, 0.05)
    elif way < 0.88:
        ang = np.pi / 2 + rng.normal(0, 0.05)
    else:
        ang = rng.uniform(0.3, 1.1) * rng.choice([-1, 1])
    length = rng.uniform(70, 260) * k
    cx, cy = rng.uniform(0.1 * s, 0.9 * s), rng.uniform(0.1 * s, 0.9 * s)
    wide = rng.random() < 0.3
    blur = 0.6 * k
    for i in range(n):
        off = (rng.uniform(3, 18) * k * i) * rng.choice([-1, 1]) if i else 0.0
        # a wide band usually runs across the whole image, thin lines need not
        ln = s * rng.uniform(0.8, 1.5) if wide and i == 0 else length * rng.uniform(0.6, 1.0)
        dx, dy = np.sin(ang) * ln / 2, np.cos(ang) * ln / 2
        px, py = cx + off * np.cos(ang), cy - off * np.sin(ang)
        thick = int(rng.uniform(5, 18) * k) if wide and i == 0 else int(rng.integers(1, 3))
        blur = max(blur, thick / 5.0) if wide and i == 0 else blur
        p1 = (int(round((px - dx) * 16)), int(round((py - dy) * 16)))
        p2 = (int(round((px + dx) * 16)), int(round((py + dy) * 16)))
        cv2.line(canvas, p1, p2, float(rng.uniform(0.55, 1.0)), thickness=max(1, thick),
                 lineType=cv2.LINE_AA, shift=4)
    return _blur(canvas, blur), 1.0, rng.uniform(60, 130) if wide else rng.uniform(45, 100)


DRAWERS: dict[str, Callable[[np.random.Generator, int, float], tuple[Array, float, float]]] = {
    "crazing": _crazing,
    "inclusion": _inclusion,
    "patches": _patches,
    "pitted_surface": _pitted_surface,
    "rolled-in_scale": _rolled_in_scale,
    "scratches": _scratches,
}


def defect_delta(rng: np.random.Generator, class_id: int, cfg: SynthConfig) -> tuple[Array, Array]:
    """Draw one defect (canonical frame): (grey-level change float32, mask of changed pixels)."""
    s = cfg.image_size
    k = s / 200.0
    draw = DRAWERS[CLASSES[class_id]]
    for _ in range(20):
        field, sign, contrast = draw(rng, s, k)
        peak = float(field.max())
        if peak <= 0:
            continue
        field = field / peak
        # a soft threshold at 20% of the peak: the faint halo of a blurred shape is no defect,
        # and the change stays continuous at the footprint's edge
        amp = np.float32(contrast * cfg.contrast / 0.8) * np.clip(field - 0.2, 0, None)
        mask = amp >= 1.0
        if mask.sum() >= MIN_PIXELS:
            amp[~mask] = 0
            return np.float32(sign) * amp, mask
    raise RuntimeError(f"could not draw a {CLASSES[class_id]} defect of {MIN_PIXELS}+ pixels")


# ---------------------------------------------------------------------------------------------
# one image


def render_image(rng: np.random.Generator, cfg: SynthConfig) -> Rendered:
    """Draw one image: classes and defect count from ``rng``, then background and defects."""
    w = np.asarray(cfg.weights())
    w = w / w.sum()
    lo, hi = cfg.defects_per_image
    main = int(rng.choice(len(CLASSES), p=w))
    n = int(rng.integers(lo, hi + 1))
    classes = [main] + [int(rng.choice(len(CLASSES), p=w)) if rng.random() < cfg.mixed_class_prob else main
                        for _ in range(n - 1)]
    bg = background(rng, cfg, main)
    total = np.zeros_like(bg)
    masks = []
    for c in classes:
        delta, mask = defect_delta(rng, c, cfg)
        total += delta
        masks.append(mask)
    image = np.clip(np.rint(bg + total), 0, 255).astype(np.uint8)
    plain = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    if cfg.texture.direction == "horizontal":
        image, plain, masks = image.T.copy(), plain.T.copy(), [m.T.copy() for m in masks]
    defects = [Defect(class_id=c, mask=m, xyxy=mask_box(m)) for c, m in zip(classes, masks)]
    return Rendered(image=image, background=plain, defects=defects)
