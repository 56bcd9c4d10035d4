"""Defect copy-paste (Simple Copy-Paste, Ghiasi et al. 2021), targeted at rare classes.

A donor defect is cut out of its image (its box, rounded outwards to whole pixels) with a mask:

* ``contrast``: a soft mask from local contrast: a pixel belongs to the defect where it departs
  from the steel around the box (median of a ring just outside the box, robust spread from the
  ring's MAD) by more than ``contrast_k`` spreads; fully at twice that, smoothed by ``feather``;
* ``box``: the whole box, its edge feathered.

The cut is trimmed to the pixels its mask touches, so the pasted box is exactly the region that
was pasted and no pixel outside it changes. It is placed at a random spot of the destination whose
box, grown by ``min_gap`` pixels, has IoU at most ``max_iou`` with every box already there
(default 0: no overlap at all, and a gap), and blended:

* ``alpha``: ``out = (1 - a) * dst + a * (donor - donor_level + dst_level)``: the defect keeps its
  contrast to the steel around it, moved to the destination's grey level;
* ``seamless`` / ``seamless_mixed``: OpenCV's Poisson blending (``cv2.seamlessClone`` with
  ``NORMAL_CLONE`` / ``MIXED_CLONE``) inside the mask, then cut back to the pasted region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..boxes import box_iou
from .pipeline import CopyPasteConfig

__all__ = ["Cut", "Donor", "Pasted", "blend", "cut_defect", "find_place", "int_rect",
           "local_level", "paste_defects", "soft_mask"]

MIN_MASK_PIXELS = 12  # a cut whose mask covers fewer pixels is no defect worth pasting
ALPHA_FLOOR = 0.05  # mask values below this are zero: the pasted region is where the mask is not


@dataclass
class Cut:
    """A donor defect: pixels (h, w[, c]) uint8, mask (h, w) float32 in [0, 1], its steel level."""

    pixels: np.ndarray
    mask: np.ndarray
    level: float
    rect: tuple[int, int, int, int]  # where it was cut in the donor (x0, y0, x1, y1), after trimming


@dataclass
class Donor:
    """One instance that may be pasted: ``record`` indexes the label set, ``box`` its gt box."""

    record: int
    box: int
    class_id: int


@dataclass
class Pasted:
    """What one paste did: the donor, where its cut came from and the new box."""

    donor: Donor
    source_rect: tuple[int, int, int, int]
    box: tuple[float, float, float, float]
    flipped: tuple[bool, bool]


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _match_channels(pixels: np.ndarray, like: np.ndarray) -> np.ndarray:
    if pixels.ndim == like.ndim:
        return pixels
    if like.ndim == 2:
        return _grey(pixels)
    return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)


def int_rect(xyxy: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A box rounded outwards to whole pixels and clipped to the image."""
    x0 = max(0, int(np.floor(xyxy[0] + 1e-6)))
    y0 = max(0, int(np.floor(xyxy[1] + 1e-6)))
    x1 = min(width, int(np.ceil(xyxy[2] - 1e-6)))
    y1 = min(height, int(np.ceil(xyxy[3] - 1e-6)))
    return x0, y0, x1, y1


def local_level(grey: np.ndarray, rect: tuple[int, int, int, int], ring: int = 4) -> tuple[float, float]:
    """(median, robust sd) of the steel in a ring of ``ring`` px around ``rect`` (else its border)."""
    H, W = grey.shape
    x0, y0, x1, y1 = rect
    X0, Y0, X1, Y1 = max(0, x0 - ring), max(0, y0 - ring), min(W, x1 + ring), min(H, y1 + ring)
    region = grey[Y0:Y1, X0:X1].astype(np.float32)
    keep = np.ones(region.shape, bool)
    keep[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = False
    vals = region[keep]
    if vals.size < 20:  # the box fills the image: its own border is the best guess
        inner = grey[y0:y1, x0:x1].astype(np.float32)
        vals = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)))
    return med, 1.4826 * mad + 1.0


def soft_mask(grey: np.ndarray, rect: tuple[int, int, int, int], cfg: CopyPasteConfig) -> tuple[np.ndarray, float]:
    """Mask (h, w) float32 of the defect inside ``rect`` and the level of the steel around it."""
    x0, y0, x1, y1 = rect
    level, spread = local_level(grey, rect)
    patch = grey[y0:y1, x0:x1].astype(np.float32)
    if cfg.mask == "box":
        mask = np.ones(patch.shape, np.float32)
        if cfg.feather > 0:
            pad = int(np.ceil(2 * cfg.feather))
            big = np.pad(mask, pad)
            big = cv2.GaussianBlur(big, (0, 0), cfg.feather)
            mask = big[pad:-pad, pad:-pad] / big.max()
        return mask, level
    smooth = cv2.GaussianBlur(patch, (0, 0), 0.8)
    dev = np.abs(smooth - level)
    thr = cfg.contrast_k * spread
    mask = np.clip((dev - thr) / thr, 0.0, 1.0).astype(np.float32)
    if cfg.feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), cfg.feather)
    return mask, level


def cut_defect(image: np.ndarray, xyxy: Sequence[float], cfg: CopyPasteConfig) -> Cut | None:
    """Cut the defect in box ``xyxy`` out of ``image``; None when its mask is (almost) empty."""
    H, W = image.shape[:2]
    rect = int_rect(xyxy, W, H)
    if rect[2] - rect[0] < 2 or rect[3] - rect[1] < 2:
        return None
    mask, level = soft_mask(_grey(image), rect, cfg)
    mask[mask < ALPHA_FLOOR] = 0.0
    if int((mask > 0).sum()) < MIN_MASK_PIXELS:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    ty0, ty1, tx0, tx1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    x0, y0 = rect[0], rect[1]
    pixels = image[y0 + ty0:y0 + ty1, x0 + tx0:x0 + tx1].copy()
    return Cut(pixels=pixels, mask=mask[ty0:ty1, tx0:tx1].copy(), level=level,
               rect=(x0 + tx0, y0 + ty0, x0 + tx1, y0 + ty1))


def find_place(rng: np.random.Generator, size: tuple[int, int], image_hw: tuple[int, int],
               boxes: np.ndarray, cfg: CopyPasteConfig, margin: int = 1) -> tuple[int, int] | None:
    """A random top-left (x, y) for an (h, w) cut that keeps clear of ``boxes``; None if none fits.

    With ``max_iou`` 0 the free positions are found exactly (each box, grown by ``min_gap`` and
    by the cut's size, forbids a rectangle of top-left corners) and one is drawn uniformly, so a
    cut that fits anywhere is placed; otherwise ``tries`` random positions are tested.
    """
    h, w = size
    H, W = image_hw
    if w + 2 * margin > W or h + 2 * margin > H:
        return None
    g = cfg.min_gap
    if cfg.max_iou <= 0:
        nx, ny = W - w - 2 * margin + 1, H - h - 2 * margin + 1  # top-left x in margin..W-w-margin
        free = np.ones((ny, nx), bool)
        for bx1, by1, bx2, by2 in boxes:
            # overlap (positive area) when x < bx2 + g and x + w > bx1 - g, same for y
            xa = int(np.floor(bx1 - g - w)) + 1 - margin
            xb = int(np.ceil(bx2 + g)) - margin
            ya = int(np.floor(by1 - g - h)) + 1 - margin
            yb = int(np.ceil(by2 + g)) - margin
            if xb <= 0 or yb <= 0 or xa >= nx or ya >= ny or bx2 <= bx1 or by2 <= by1:
                continue
            free[max(ya, 0):max(yb, 0), max(xa, 0):max(xb, 0)] = False
        idx = np.flatnonzero(free)
        if len(idx) == 0:
            return None
        k = int(idx[int(rng.integers(len(idx)))])
        return k % nx + margin, k // nx + margin
    xs = rng.integers(margin, W - w - margin + 1, size=cfg.tries)
    ys = rng.integers(margin, H - h - margin + 1, size=cfg.tries)
    if len(boxes) == 0:
        return int(xs[0]), int(ys[0])
    cand = np.stack([xs - g, ys - g, xs + w + g, ys + h + g], axis=1).astype(np.float64)
    ok = box_iou(cand, boxes).max(axis=1) <= cfg.max_iou
    hits = np.flatnonzero(ok)
    if len(hits) == 0:
        return None
    return int(xs[hits[0]]), int(ys[hits[0]])


def blend(dst: np.ndarray, cut: Cut, x: int, y: int, cfg: CopyPasteConfig) -> np.ndarray:
    """``dst`` with ``cut`` blended in at top-left (x, y); pixels outside the cut's region unchanged."""
    h, w = cut.mask.shape
    out = dst.copy()
    pixels = _match_channels(cut.pixels, dst)
    region = dst[y:y + h, x:x + w]
    dst_level, _ = local_level(_grey(dst), (x, y, x + w, y + h))
    shifted = pixels.astype(np.float32) - cut.level + dst_level
    a = cut.mask if dst.ndim == 2 else cut.mask[..., None]
    mixed = (1.0 - a) * region.astype(np.float32) + a * shifted
    alpha_out = out.copy()
    alpha_out[y:y + h, x:x + w] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if cfg.blend == "alpha":
        return alpha_out
    # Poisson blending: OpenCV wants 3-channel images and a binary mask; the source is the
    # destination with the level-matched cut in place, so the mask's region aligns exactly
    src = out.copy()
    src[y:y + h, x:x + w] = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    src3 = src if src.ndim == 3 else cv2.cvtColor(src, cv2.COLOR_GRAY2BGR)
    dst3 = dst if dst.ndim == 3 else cv2.cvtColor(dst, cv2.COLOR_GRAY2BGR)
    m = np.zeros(dst.shape[:2], np.uint8)
    m[y:y + h, x:x + w] = (cut.mask > 0).astype(np.uint8) * 255
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    by, bx = rows[0], cols[0]
    bh, bw = rows[-1] + 1 - by, cols[-1] + 1 - bx
    center = (int(bx + bw // 2), int(by + bh // 2))  # OpenCV places the mask's rect at center - size // 2
    flag = cv2.MIXED_CLONE if cfg.blend == "seamless_mixed" else cv2.NORMAL_CLONE
    res = cv2.seamlessClone(src3, dst3, m, center, flag)
    res = res if dst.ndim == 3 else cv2.cvtColor(res, cv2.COLOR_BGR2GRAY)
    # where the mask is off, nothing changes; the soft mask's falloff still applies at its edge
    soft = np.clip(a * 2.0, 0.0, 1.0)
    mixed = (1.0 - soft) * region.astype(np.float32) + soft * res[y:y + h, x:x + w].astype(np.float32)
    out[y:y + h, x:x + w] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    # Poisson blending can keep the destination's gradients and leave the defect all but gone
    # (MIXED_CLONE on a faint defect): a box over nothing would be a label error, so a paste
    # that changes the defect's core less than half as much as the alpha blend does is alpha-blended
    core = cut.mask >= 0.5
    if not core.any():
        core = cut.mask > 0
    ref = region.astype(np.float32)
    got = np.abs(out[y:y + h, x:x + w].astype(np.float32) - ref)
    want = np.abs(alpha_out[y:y + h, x:x + w].astype(np.float32) - ref)
    if got.ndim == 3:
        got, want = got.mean(-1), want.mean(-1)
    if float(got[core].mean()) < 0.5 * float(want[core].mean()):
        return alpha_out
    return out


def paste_defects(
    image: np.ndarray,
    xyxy: np.ndarray,
    donors: Sequence[Donor],
    n: int,
    rng: np.random.Generator,
    cfg: CopyPasteConfig,
    read_donor: Callable[[int], tuple[np.ndarray, np.ndarray]],
    *,
    exclude_record: int | None = None,
    cache: dict[tuple[int, int], Cut | None] | None = None,
    max_donor_tries: int = 8,
) -> tuple[np.ndarray, list[Pasted]]:
    """Paste up to ``n`` defects drawn from ``donors`` into ``image`` away from boxes ``xyxy``.

    ``read_donor(record)`` returns (image, gt xyxy) of a donor record; donors of
    ``exclude_record`` (the destination itself) are never drawn; ``cache`` keeps cuts between
    calls (a cut depends only on its donor and the config). Returns the new image and what was
    pasted (the new boxes are ``Pasted.box``, exactly the pasted regions); fewer than ``n`` when
    no room or no usable donor was found (the caller sees it in the result).
    """
    out = image
    H, W = image.shape[:2]
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    done: list[Pasted] = []
    if n <= 0 or not donors:
        return out, done
    margin = 2 if cfg.blend != "alpha" else 1
    for _ in range(n):
        for _try in range(max_donor_tries):
            d = donors[int(rng.integers(len(donors)))]
            if d.record == exclude_record:
                continue
            key = (d.record, d.box)
            if cache is not None and key in cache:
                cut = cache[key]
            else:
                d_img, d_xyxy = read_donor(d.record)
                cut = cut_defect(d_img, d_xyxy[d.box], cfg)
                if cache is not None:
                    cache[key] = cut
            if cut is None:
                continue
            fh = bool(cfg.flip and rng.random() < 0.5)
            fv = bool(cfg.flip and rng.random() < 0.5)
            if fh:
                cut = Cut(cut.pixels[:, ::-1].copy(), cut.mask[:, ::-1].copy(), cut.level, cut.rect)
            if fv:
                cut = Cut(cut.pixels[::-1].copy(), cut.mask[::-1].copy(), cut.level, cut.rect)
            place = find_place(rng, cut.mask.shape, (H, W), boxes, cfg, margin)
            if place is None:
                continue
            x, y = place
            h, w = cut.mask.shape
            out = blend(out, cut, x, y, cfg)
            box = (float(x), float(y), float(x + w), float(y + h))
            boxes = np.concatenate([boxes, np.array([box])])
            done.append(Pasted(donor=d, source_rect=cut.rect, box=box, flipped=(fh, fv)))
            break
    return out, done
