"""A score run's one count (what score, review, gate and report quote) and its issue ids."""

from __future__ import annotations

from ..types import Issue
from . import LABEL_ERROR_TYPES, QUEUES, ScoreResult


def run_summary(result: ScoreResult) -> dict:
    """The one count of a score run that every reader (score, review, gate, report) quotes: the
    issues listed, those flagged (p >= the queue threshold), the expected number of real errors
    (sum of p) per type and per queue, and the calibration."""
    flagged = result.flagged()
    per_queue = {}
    for q, types in QUEUES.items():
        listed = [i for i in result.issues if i.type in types]
        fl = [i for i in listed if i.score >= result.queue_min_p]
        per_queue[q] = {"listed": len(listed), "flagged": len(fl), "expected": round(sum(i.score for i in listed), 3),
                        "expected_flagged": round(sum(i.score for i in fl), 3),
                        "precision": round(sum(i.score for i in fl) / len(fl), 4) if fl else None}
    var = float(sum(i.score * (1 - i.score) for i in result.issues if i.type in LABEL_ERROR_TYPES))
    return {"counts": result.counts(), "issues": len(result.issues), "flagged": len(flagged),
            "flagged_images": len({i.filepath for i in flagged}), "images": len(result.labels.records),
            "boxes": result.labels.num_boxes, "queue_min_p": result.queue_min_p,
            "expected": {k: round(v, 3) for k, v in result.expected().items()},
            "expected_label_errors": round(sum(v for k, v in result.expected().items() if k in LABEL_ERROR_TYPES), 3),
            "expected_label_errors_sd": round(var ** 0.5, 3),
            "queues": per_queue,
            "calibration": result.calibration.to_dict() if result.calibration is not None else None}


def issue_id(sample_id: str | None, iss: Issue, n: int) -> str:
    """The id ``review``, the CSV export and ``cvcurate decide`` use for an issue:
    ``<sample id>:<box>:<type>`` for an issue on a given box, ``<sample id>:+<n>:<type>`` for
    one without (``n``: its rank among the sample's issues)."""
    return f"{sample_id}:{iss.box if iss.box is not None else f'+{n}'}:{iss.type}"
