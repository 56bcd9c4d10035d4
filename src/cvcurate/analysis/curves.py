"""Precision/recall curves per class, for the report's evaluation section. Pure numpy.

:func:`pr_curves` gives what ``evaluation["pr_curves"]`` holds: per class, precision at the 101
recall levels 0, 0.01, ..., 1 (COCO's interpolation: the best precision at that recall or more;
0 where the recall is never reached), at one IoU threshold. Matching is COCO/VOC style: per image
and class, predictions in descending confidence each take the unmatched ground-truth box of the
same class they overlap most, at IoU >= ``iou_thresh``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..boxes import box_iou
from ..types import Annotations

RECALL_LEVELS = np.linspace(0.0, 1.0, 101)


def pr_curves(gts: Sequence[Annotations], preds: Sequence[Annotations], classes: Sequence[str], *,
              iou_thresh: float = 0.5) -> dict[str, dict[str, Any]]:
    """``{class: {"recall": [101 levels], "precision": [101], "ap": float | None, "gt": int}}``."""
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction lists")
    k = len(classes)
    conf_all: list[list[np.ndarray]] = [[] for _ in range(k)]
    tp_all: list[list[np.ndarray]] = [[] for _ in range(k)]
    n_gt = np.zeros(k, np.int64)
    for gt, pr in zip(gts, preds):
        conf = np.nan_to_num(pr.confidence, nan=1.0) if pr.confidence is not None else np.ones(len(pr))
        for c in np.union1d(np.unique(gt.class_id), np.unique(pr.class_id)).astype(int):
            if not 0 <= c < k:
                continue
            g = gt.xyxy[gt.class_id == c]
            n_gt[c] += len(g)
            pm = pr.class_id == c
            if not pm.any():
                continue
            p, s = pr.xyxy[pm], conf[pm]
            order = np.argsort(-s, kind="stable")
            p, s = p[order], s[order]
            tp = np.zeros(len(p), bool)
            if len(g):
                iou = box_iou(p, g)
                used = np.zeros(len(g), bool)
                for j in range(len(p)):
                    row = np.where(used, -1.0, iou[j])
                    m = int(np.argmax(row))
                    if row[m] >= iou_thresh:
                        used[m] = True
                        tp[j] = True
            conf_all[c].append(s)
            tp_all[c].append(tp)
    out: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        prec_at = np.zeros(len(RECALL_LEVELS))
        if n_gt[c] and conf_all[c]:
            s = np.concatenate(conf_all[c])
            tp = np.concatenate(tp_all[c])[np.argsort(-s, kind="stable")]
            ctp = np.cumsum(tp)
            recall = ctp / n_gt[c]
            precision = ctp / np.arange(1, len(tp) + 1)
            # best precision at this recall or more
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            idx = np.searchsorted(recall, RECALL_LEVELS, side="left")
            ok = idx < len(recall)
            prec_at[ok] = envelope[idx[ok]]
        out[name] = {"recall": [round(float(r), 4) for r in RECALL_LEVELS],
                     "precision": [round(float(p), 6) for p in prec_at],
                     "ap": float(prec_at.mean()) if n_gt[c] else None, "gt": int(n_gt[c])}
    return out
