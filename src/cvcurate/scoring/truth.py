"""Measure a scoring against a truth file written by ``cvcurate corrupt``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ScoreResult


@dataclass
class TruthMetrics:
    corrupted: int
    images: int
    average_precision: float  # of finding corrupted images with the combined ranking
    found_in_top_k: int  # corrupted images among the top k, k = number of corrupted images
    per_type: dict[str, dict[str, float]]  # type -> {"count", "average_precision", "found_in_top_k"}


def _ap(scores: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores)) if y.any() else float("nan")


def truth_metrics(result: ScoreResult, truth: dict[str, Any]) -> TruthMetrics:
    """AP and hits in the top k, overall and per error type (each type against the clean images)."""
    paths = [r.filepath for r in result.labels.records]
    index = {p: i for i, p in enumerate(paths)}
    by_type: dict[str, set[int]] = {}
    for e in truth.get("errors", []):
        if e["filepath"] in index:
            by_type.setdefault(e["type"], set()).add(index[e["filepath"]])
    n = len(paths)
    y = np.zeros(n, bool)
    for idx in by_type.values():
        y[list(idx)] = True
    s = result.image_score
    k = int(y.sum())
    top = np.argsort(-s, kind="stable")[:k]
    per = {}
    for t, idx in sorted(by_type.items()):
        m = ~y
        m[list(idx)] = True
        yt = np.zeros(n, bool)
        yt[list(idx)] = True
        kt = len(idx)
        top_t = np.argsort(-s[m], kind="stable")[:kt]
        per[t] = {"count": kt, "average_precision": _ap(s[m], yt[m]), "found_in_top_k": int(yt[m][top_t].sum())}
    return TruthMetrics(corrupted=k, images=n, average_precision=_ap(s, y), found_in_top_k=int(y[top].sum()),
                        per_type=per)
