"""The report's plots: matplotlib figures drawn with the Agg canvas straight to PNG bytes.

Figures are made with :class:`matplotlib.figure.Figure` (no pyplot, no global backend switch), so
the module is safe to call from any process. Each function returns PNG bytes, or None when there
is nothing to draw (the caller says why). PNG metadata is left out (matplotlib would write its
web address into it).
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

from ..names import quoted
from ..types import LabelSet
from .slices import LARGE_FROM, SMALL_BELOW, flatten

DPI = 96
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _class_height(k: int) -> float:
    return max(2.6, 0.32 * k + 1.2)


def counts_per_class_split(labels: LabelSet) -> bytes | None:
    """Instances and images per class, stacked by split."""
    k = len(labels.classes)
    if k == 0:
        return None
    order = {s: j for j, s in enumerate(("train", "val", "validation", "test"))}
    splits = sorted({r.split or "(no split)" for r in labels.records}, key=lambda s: (order.get(s, 9), s)) \
        or ["(no split)"]
    inst = np.zeros((len(splits), k), np.int64)
    imgs = np.zeros((len(splits), k), np.int64)
    pos = {s: j for j, s in enumerate(splits)}
    for r in labels.records:
        if len(r.gt):
            j = pos[r.split or "(no split)"]
            ids = r.gt.class_id[(r.gt.class_id >= 0) & (r.gt.class_id < k)]
            inst[j] += np.bincount(ids, minlength=k)
            imgs[j, np.unique(ids)] += 1
    fig = _figure(10, _class_height(k))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(k)
    for ax, data, what in ((axes[0], inst, "instances"), (axes[1], imgs, "images")):
        left = np.zeros(k)
        for j, s in enumerate(splits):
            ax.barh(y, data[j], left=left, color=PALETTE[j % len(PALETTE)], label=s, height=0.7)
            left += data[j]
        for yi, v in zip(y, left):
            ax.text(v, yi, f" {int(v)}", va="center", fontsize=8)
        ax.set_xlabel(f"{what} per class")
        ax.set_xlim(0, max(1, left.max()) * 1.15)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels.classes)
    axes[0].invert_yaxis()
    axes[1].legend(title="split", fontsize=8, loc="lower right")
    return _png(fig)


def boxes_per_image(labels: LabelSet) -> bytes | None:
    if not labels.records:
        return None
    n = np.array([len(r.gt) for r in labels.records])
    fig = _figure(6, 3)
    ax = fig.subplots()
    counts = np.bincount(n)
    ax.bar(np.arange(len(counts)), counts, color=PALETTE[0], width=0.8)
    ax.set_xlabel("boxes per image")
    ax.set_ylabel("images")
    ax.set_title(f"{len(n)} images, {int(n.sum())} boxes, {int((n == 0).sum())} without boxes", fontsize=9)
    if len(counts) <= 30:
        ax.set_xticks(np.arange(len(counts)))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def box_shape_per_class(labels: LabelSet) -> bytes | None:
    """Relative box area (with the size-bucket limits) and aspect ratio per class, as box plots."""
    k = len(labels.classes)
    flat = flatten(labels)
    if k == 0 or len(flat.cls) == 0:
        return None
    wh = np.concatenate([r.gt.wh for r in labels.records if len(r.gt)])
    ok = (wh > 0).all(1)
    area, aspect, cls = flat.rel[ok], wh[ok, 0] / wh[ok, 1], flat.cls[ok]
    if not ok.any():
        return None
    fig = _figure(10, _class_height(k))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    present = [c for c in range(k) if (cls == c).any()]
    pos = np.arange(len(present))
    for ax, values, label in ((ax1, area, "box area / image area (log)"),
                              (ax2, aspect, "aspect ratio width / height (log)")):
        data = [values[cls == c] for c in present]
        ax.boxplot(data, positions=pos, vert=False, widths=0.6, showfliers=True,
                   flierprops={"markersize": 2, "alpha": 0.3, "markeredgecolor": PALETTE[0]},
                   medianprops={"color": PALETTE[1]})
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3, which="both")
    for lim in (SMALL_BELOW, LARGE_FROM):
        ax1.axvline(lim, color="#999", ls="--", lw=1)
    ax1.set_yticks(pos, [f"{quoted(labels.classes[c])} ({int((cls == c).sum())})" for c in present])
    ax1.invert_yaxis()
    ax1.set_title("small < 1% | medium | large >= 10%", fontsize=8)
    ax2.axvline(1.0, color="#999", ls="--", lw=1)
    return _png(fig)


def ap_per_class(evaluation: Mapping[str, Any]) -> bytes | None:
    classes = list(evaluation.get("classes") or [])
    ap50, ap = evaluation.get("ap50") or {}, evaluation.get("ap50_95") or {}
    present = [c for c in classes if ap50.get(c) is not None]
    if not present:
        return None
    k = len(present)
    fig = _figure(7, _class_height(k))
    ax = fig.subplots()
    y = np.arange(k)
    a50 = [ap50[c] for c in present]
    a = [ap.get(c) or 0.0 for c in present]
    ax.barh(y - 0.2, a50, height=0.4, color=PALETTE[0], label="AP@0.5")
    ax.barh(y + 0.2, a, height=0.4, color=PALETTE[1], label="AP@0.5:0.95")
    for yi, v in zip(y, a50):
        ax.text(v, yi - 0.2, f" {v:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, present)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("average precision")
    m50, m = evaluation.get("map50"), evaluation.get("map50_95")
    if m50 is not None:
        ax.set_title(f"mAP@0.5 {m50:.3f}, mAP@0.5:0.95 {m:.3f}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def confusion(evaluation: Mapping[str, Any]) -> bytes | None:
    m = np.asarray(evaluation.get("confusion") or [], dtype=np.float64)
    names = list(evaluation.get("confusion_labels") or [])
    if m.ndim != 2 or m.size == 0 or m.shape != (len(names), len(names)):
        return None
    n = len(names)
    side = max(4.0, 0.45 * n + 2)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    rows = m.sum(1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"counts; colour = share of the row (IoU >= {evaluation.get('iou_thresh', 0.5)}, "
                 f"confidence >= {evaluation.get('conf_thresh', '?')})", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.7)
    return _png(fig)


def pr_curves_plot(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> bytes | None:
    items = [(c, v) for c, v in curves.items() if v and v.get("recall") and v.get("gt", 1)]
    if not items:
        return None
    fig = _figure(7.5, 4.5)
    ax = fig.subplots()
    cmap = PALETTE if len(items) <= len(PALETTE) else None
    for j, (name, v) in enumerate(items):
        ap = v.get("ap")
        kw = {"color": cmap[j]} if cmap else {}
        ax.plot(v["recall"], v["precision"], lw=1.5, label=f"{quoted(name)} ({ap:.2f})" if ap is not None else name, **kw)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="class (AP)")
    return _png(fig)
