"""Model-free checks of the boxes themselves: no detector needed.

Box issues: ``degenerate`` (zero or tiny width/height), ``out_of_image``, ``duplicate`` (same class,
IoU above a threshold), ``class_conflict`` (two classes on the same region), ``fragment`` (a box
that continues a neighbour of the same class edge to edge, as when one defect is boxed in pieces),
``size_outlier`` (area or aspect far from its class, robust z-score on logs).

Image issues: ``style_fragmented`` / ``style_merged`` (the same class boxed as many pieces in this
image but as one box in most others, or the reverse: the "pineapple" inconsistency of data-centric
AI), ``rare_class_mix`` (classes together that rarely occur together).

Every function takes a :class:`~cvcurate.types.LabelSet` and returns :class:`~cvcurate.types.Issue`
items, scores in [0, 1] with higher meaning more likely a real problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Issue, LabelSet


@dataclass
class GeometryConfig:
    min_box_size: float = 1.0  # px: a side at or below this is degenerate
    outside_tolerance: float = 0.01  # fraction of a box's area allowed outside the image
    duplicate_iou: float = 0.8
    conflict_iou: float = 0.8
    fragment_max_gap: float = 0.1  # gap between two pieces, as a fraction of their joint length
    fragment_min_overlap: float = 0.9  # overlap on the other axis, as a fraction of the smaller piece
    outlier_z: float = 3.0  # robust z-score from which a size/aspect outlier is reported
    min_class_boxes: int = 10  # fewer boxes in a class: no size statistics for it
    style_ratio: float = 3.0  # boxes per image this many times the class's usual count
    style_min_boxes: int = 5  # ... and at least this many boxes of the class in the image
    rare_mix_fraction: float = 0.02  # a class pair in fewer than this fraction of either class's images

    def check(self) -> None:
        for name in ("duplicate_iou", "conflict_iou", "fragment_min_overlap", "outside_tolerance"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.outlier_z <= 0 or self.style_ratio <= 1:
            raise ValueError("outlier_z must be > 0 and style_ratio > 1")


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes (N, 4) x (M, 4); boxes without area have IoU 0."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _fmt(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.1f}"


def box_issues(labels: LabelSet, cfg: GeometryConfig | None = None) -> list[Issue]:
    """Degenerate, out-of-image, duplicate, conflicting and fragment boxes, image by image."""
    cfg = cfg or GeometryConfig()
    names = labels.classes
    out: list[Issue] = []
    for rec in labels.records:
        ann = rec.gt
        n = len(ann)
        if n == 0:
            continue
        wh = ann.wh
        xyxy = ann.xyxy
        bad = (wh[:, 0] <= cfg.min_box_size) | (wh[:, 1] <= cfg.min_box_size)
        for i in np.flatnonzero(bad):
            side = "width" if wh[i, 0] <= cfg.min_box_size else "height"
            out.append(Issue(rec.filepath, "degenerate", 1.0,
                             f"box {i} ({names[ann.class_id[i]]}) has {side} {_fmt(wh[i, 0 if side == 'width' else 1])} px",
                             box=int(i), sample_id=rec.sample_id))
        ok = ~bad
        area = np.prod(np.clip(wh, 0, None), axis=1)
        clipped = np.clip(xyxy, 0, [rec.width, rec.height, rec.width, rec.height])
        inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            outside = np.where(area > 0, 1 - inside / area, 0.0)
        for i in np.flatnonzero(ok & (outside > cfg.outside_tolerance)):
            out.append(Issue(rec.filepath, "out_of_image", float(0.5 + 0.5 * outside[i]),
                             f"{outside[i]:.0%} of box {i} ({names[ann.class_id[i]]}) lies outside the "
                             f"{rec.width}x{rec.height} image", box=int(i), sample_id=rec.sample_id))
        if n < 2:
            continue
        iou = pairwise_iou(xyxy, xyxy)
        same = ann.class_id[:, None] == ann.class_id[None, :]
        upper = np.triu(np.ones((n, n), dtype=bool), k=1) & ok[:, None] & ok[None, :]
        for i, j in zip(*np.nonzero(upper & same & (iou >= cfg.duplicate_iou))):
            out.append(Issue(rec.filepath, "duplicate", float(iou[i, j]),
                             f"box {j} duplicates box {i} ({names[ann.class_id[i]]}, IoU {iou[i, j]:.2f})",
                             box=int(j), sample_id=rec.sample_id, data={"other": int(i)}))
        for i, j in zip(*np.nonzero(upper & ~same & (iou >= cfg.conflict_iou))):
            out.append(Issue(rec.filepath, "class_conflict", float(iou[i, j]),
                             f"box {j} ({names[ann.class_id[j]]}) and box {i} ({names[ann.class_id[i]]}) "
                             f"cover the same region (IoU {iou[i, j]:.2f})",
                             box=int(j), sample_id=rec.sample_id, data={"other": int(i)}))
        out.extend(_fragments(rec, same & upper & (iou < cfg.duplicate_iou), cfg, names))
    return out


def _fragments(rec, pairs: np.ndarray, cfg: GeometryConfig, names: list[str]) -> list[Issue]:
    """Same-class neighbours that continue each other: aligned on one axis, touching on the other."""
    xyxy = rec.gt.xyxy
    out = []
    for i, j in zip(*np.nonzero(pairs)):
        a, b = xyxy[i], xyxy[j]
        best = 0.0
        for axis in (0, 1):  # 0: pieces side by side horizontally; 1: stacked vertically
            other = 1 - axis
            ext_a, ext_b = a[other + 2] - a[other], b[other + 2] - b[other]
            overlap = min(a[other + 2], b[other + 2]) - max(a[other], b[other])
            if min(ext_a, ext_b) <= 0:
                continue
            align = overlap / min(ext_a, ext_b)
            # the larger extent must also match: pieces of one box share both edges
            align *= min(ext_a, ext_b) / max(ext_a, ext_b)
            gap = max(a[axis], b[axis]) - min(a[axis + 2], b[axis + 2])
            joint = (a[axis + 2] - a[axis]) + (b[axis + 2] - b[axis]) + max(gap, 0)
            if joint <= 0 or align < cfg.fragment_min_overlap:
                continue
            rel_gap = gap / joint
            if -0.05 <= rel_gap <= cfg.fragment_max_gap:
                best = max(best, 0.5 + 0.5 * align * (1 - max(rel_gap, 0) / cfg.fragment_max_gap))
        if best > 0:
            out.append(Issue(rec.filepath, "fragment", float(best),
                             f"boxes {i} and {j} ({names[rec.gt.class_id[i]]}) look like pieces of one box: "
                             "aligned edge to edge", box=int(j), sample_id=rec.sample_id, data={"other": int(i)}))
    return out


def _robust_z(x: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """Robust z-score; the spread never counts as less than ``floor`` (10% in log units), so a
    class whose boxes all have one size does not make a 1-pixel difference an outlier."""
    med = np.median(x)
    mad = np.median(np.abs(x - med)) * 1.4826
    return (x - med) / max(mad, floor)


def size_outliers(labels: LabelSet, cfg: GeometryConfig | None = None) -> list[Issue]:
    """Boxes whose area (relative to the image) or aspect ratio is far from their class's."""
    cfg = cfg or GeometryConfig()
    rows = [(r, i) for r in labels.records for i in range(len(r.gt))]
    if not rows:
        return []
    cid = np.concatenate([r.gt.class_id for r in labels.records])
    wh = np.concatenate([r.gt.wh for r in labels.records])
    img = np.concatenate([np.full(len(r.gt), r.width * r.height, dtype=float) for r in labels.records])
    valid = (wh > 0).all(axis=1)
    out = []
    for c in np.unique(cid):
        m = (cid == c) & valid
        if m.sum() < cfg.min_class_boxes:
            continue
        idx = np.flatnonzero(m)
        log_area = np.log(wh[idx, 0] * wh[idx, 1] / img[idx])
        log_aspect = np.log(wh[idx, 0] / wh[idx, 1])
        z_area, z_aspect = _robust_z(log_area), _robust_z(log_aspect)
        z = np.maximum(np.abs(z_area), np.abs(z_aspect))
        for k in np.flatnonzero(z >= cfg.outlier_z):
            rec, i = rows[idx[k]]
            what = "area" if abs(z_area[k]) >= abs(z_aspect[k]) else "aspect ratio"
            zz = z_area[k] if what == "area" else z_aspect[k]
            direction = "larger" if zz > 0 else "smaller"
            if what == "aspect ratio":
                direction = "wider" if zz > 0 else "taller"
            out.append(Issue(rec.filepath, "size_outlier", float(z[k] / (z[k] + cfg.outlier_z)),
                             f"box {i} ({labels.classes[c]}) is much {direction} in {what} than its class "
                             f"(robust z {zz:+.1f})", box=int(i), sample_id=rec.sample_id))
    return out


def style_issues(labels: LabelSet, cfg: GeometryConfig | None = None) -> list[Issue]:
    """Per class, images boxed in pieces where the class is usually one box, or the reverse."""
    cfg = cfg or GeometryConfig()
    k = len(labels.classes)
    counts = np.array([np.bincount(r.gt.class_id, minlength=k) if len(r.gt) else np.zeros(k, int)
                       for r in labels.records]).reshape(-1, k)
    out = []
    for c in range(k):
        present = counts[:, c] > 0
        if present.sum() < cfg.min_class_boxes:
            continue
        typical = float(np.median(counts[present, c]))
        for idx in np.flatnonzero(present):
            n = counts[idx, c]
            rec = labels.records[idx]
            ratio = n / typical
            if ratio >= cfg.style_ratio and n >= cfg.style_min_boxes:
                kind, text = "style_fragmented", f"{n} {labels.classes[c]} boxes here; this class usually has {typical:g} per image"
            elif typical >= 3 and 1 / ratio >= cfg.style_ratio:
                kind, text = "style_merged", f"{n} {labels.classes[c]} box(es) here; this class usually has {typical:g} per image"
            else:
                continue
            r = max(ratio, 1 / ratio)
            out.append(Issue(rec.filepath, kind, float(1 - 1 / r), text, sample_id=rec.sample_id,
                             data={"class": labels.classes[c]}))
    return out


def class_mix_issues(labels: LabelSet, cfg: GeometryConfig | None = None) -> list[Issue]:
    """Images holding two classes that rarely occur together."""
    cfg = cfg or GeometryConfig()
    k = len(labels.classes)
    present = np.array([np.bincount(r.gt.class_id, minlength=k) > 0 if len(r.gt) else np.zeros(k, bool)
                        for r in labels.records]).reshape(-1, k).astype(np.int64)
    co = present.T @ present
    per_class = np.diag(co)
    out = []
    for idx in np.flatnonzero(present.sum(axis=1) >= 2):
        cls = np.flatnonzero(present[idx])
        worst, pair = 1.0, None
        for a in range(len(cls)):
            for b in range(a + 1, len(cls)):
                i, j = cls[a], cls[b]
                frac = co[i, j] / max(1, min(per_class[i], per_class[j]))
                if frac < worst:
                    worst, pair = frac, (i, j)
        if pair is not None and worst < cfg.rare_mix_fraction:
            i, j = pair
            rec = labels.records[idx]
            out.append(Issue(rec.filepath, "rare_class_mix", float(1 - worst / cfg.rare_mix_fraction) * 0.5 + 0.5,
                             f"{labels.classes[i]} and {labels.classes[j]} appear together in only "
                             f"{co[i, j]} image(s) of the dataset", sample_id=rec.sample_id))
    return out
