"""Detection metrics: COCO mAP (pycocotools ``COCOeval``) per class and a confusion matrix."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..boxes import box_iou

from ..errors import InputError
from ..types import Annotations


@dataclass
class EvalResult:
    """mAP@0.5 and mAP@0.5:0.95 (mean over classes that have ground truth), AP per class
    (``None`` for a class without ground truth), and a confusion matrix whose rows are ground
    truth and columns predictions, the last row/column being ``background`` (missed ground truth
    in the last column, false detections in the last row)."""

    classes: list[str]
    map50: float
    map50_95: float
    ap50: dict[str, float | None]
    ap50_95: dict[str, float | None]
    gt_count: dict[str, int]
    pred_count: dict[str, int]
    confusion: list[list[int]]
    confusion_labels: list[str]
    images: int
    conf_thresh: float
    iou_thresh: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def format(self) -> str:
        """Plain-text tables (per-class AP, confusion matrix)."""
        w = max(12, *(len(c) for c in self.confusion_labels)) + 1
        lines = [f"{self.images} images; mAP@0.5 {self.map50:.4f}, mAP@0.5:0.95 {self.map50_95:.4f}", ""]
        lines.append(f"{'class':<{w}}{'gt':>7}{'pred':>8}{'AP50':>8}{'AP50:95':>9}")
        for c in self.classes:
            a50, a = self.ap50[c], self.ap50_95[c]
            lines.append(f"{c:<{w}}{self.gt_count[c]:>7}{self.pred_count[c]:>8}"
                         f"{'-' if a50 is None else f'{a50:.3f}':>8}{'-' if a is None else f'{a:.3f}':>9}")
        lines.append("")
        lines.append(f"confusion matrix (rows: ground truth, columns: predicted; IoU >= {self.iou_thresh}, "
                     f"confidence >= {self.conf_thresh})")
        cw = max(6, *(len(c) for c in self.confusion_labels)) + 1
        lines.append(" " * w + "".join(f"{c[:cw - 1]:>{cw}}" for c in self.confusion_labels))
        for name, row in zip(self.confusion_labels, self.confusion):
            lines.append(f"{name:<{w}}" + "".join(f"{v:>{cw}}" for v in row))
        return "\n".join(lines)


def _nan_to_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def confusion_matrix(gts: Sequence[Annotations], preds: Sequence[Annotations], k: int,
                     iou_thresh: float = 0.5, conf_thresh: float = 0.25) -> np.ndarray:
    """(k+1) x (k+1): greedy class-agnostic matching by IoU (highest first), one-to-one."""
    m = np.zeros((k + 1, k + 1), dtype=np.int64)
    for gt, pr in zip(gts, preds):
        if pr.confidence is not None and len(pr):
            pr = pr[np.nan_to_num(pr.confidence, nan=1.0) >= conf_thresh]
        iou = box_iou(gt.xyxy, pr.xyxy)
        gi, pi = np.nonzero(iou >= iou_thresh)
        order = np.argsort(-iou[gi, pi], kind="stable")
        used_g, used_p = set(), set()
        for j in order:
            g, p = int(gi[j]), int(pi[j])
            if g in used_g or p in used_p:
                continue
            used_g.add(g)
            used_p.add(p)
            m[gt.class_id[g], pr.class_id[p]] += 1
        for g in range(len(gt)):
            if g not in used_g:
                m[gt.class_id[g], k] += 1
        for p in range(len(pr)):
            if p not in used_p:
                m[k, pr.class_id[p]] += 1
    return m


def evaluate(gts: Sequence[Annotations], preds: Sequence[Annotations], classes: Sequence[str], *,
             conf_thresh: float = 0.25, iou_thresh: float = 0.5) -> EvalResult:
    """Compare predictions (with confidences) to ground truth, image by image.

    mAP comes from pycocotools' ``COCOeval`` (bbox, all areas, up to 100 detections per image);
    predictions without confidences (or with missing ones, NaN) count as confidence 1.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(gts) != len(preds):
        raise InputError(f"{len(gts)} ground-truth images but {len(preds)} prediction lists")
    k = len(classes)
    images, anns, dets = [], [], []
    for i, (gt, pr) in enumerate(zip(gts, preds), start=1):
        images.append({"id": i})
        for b, c in zip(gt.xyxy, gt.class_id):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": max(w, 0) * max(h, 0), "iscrowd": 0})
        conf = np.nan_to_num(pr.confidence, nan=1.0) if pr.confidence is not None else np.ones(len(pr))
        for b, c, s in zip(pr.xyxy, pr.class_id, conf):
            dets.append({"image_id": i, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "score": float(s)})
    if not anns:
        raise InputError("there are no ground-truth boxes to evaluate against")
    gt_count = np.bincount(np.concatenate([g.class_id for g in gts]), minlength=k)
    pred_count = np.bincount(np.concatenate([p.class_id for p in preds]) if preds else np.zeros(0, int),
                             minlength=k)
    ap50 = np.full(k, np.nan)
    ap = np.full(k, np.nan)
    if dets:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = {"images": images, "annotations": anns,
                               "categories": [{"id": j + 1, "name": n} for j, n in enumerate(classes)]}
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets)
            E = COCOeval(coco_gt, coco_dt, "bbox")
            E.evaluate()
            E.accumulate()
        prec = E.eval["precision"]  # [iou thresholds, recall, class, area range, max dets]
        for j in range(k):
            if gt_count[j] == 0:
                continue
            p50 = prec[0, :, j, 0, -1]
            pall = prec[:, :, j, 0, -1]
            ap50[j] = p50[p50 > -1].mean() if (p50 > -1).any() else 0.0
            ap[j] = pall[pall > -1].mean() if (pall > -1).any() else 0.0
    else:
        ap50[gt_count > 0] = 0.0
        ap[gt_count > 0] = 0.0
    has = gt_count > 0
    cm = confusion_matrix(gts, preds, k, iou_thresh, conf_thresh)
    return EvalResult(
        classes=list(classes),
        map50=float(np.nanmean(ap50[has])), map50_95=float(np.nanmean(ap[has])),
        ap50={c: _nan_to_none(ap50[j]) for j, c in enumerate(classes)},
        ap50_95={c: _nan_to_none(ap[j]) for j, c in enumerate(classes)},
        gt_count={c: int(gt_count[j]) for j, c in enumerate(classes)},
        pred_count={c: int(pred_count[j]) for j, c in enumerate(classes)},
        confusion=cm.tolist(), confusion_labels=list(classes) + ["background"],
        images=len(gts), conf_thresh=conf_thresh, iou_thresh=iou_thresh,
    )
