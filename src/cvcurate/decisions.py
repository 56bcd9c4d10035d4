"""Review decisions, pure: what a fix's tags decide, carrying decisions to a new score run, and
applying a fix to a sample's ground truth.

A reviewer decides in the FiftyOne App (label tags on a proposed fix or on a suspect box, or a
sample tag for all of a sample's fixes) or headless with ``cvcurate decide``; both write the same
tags. This module knows what they mean and nothing of where they are stored: the stages read the
tags from the store, call these functions, and write back what they return.

* :func:`decision`: the decision of one label from its own tags and its sample's tags (a label
  tag wins; both tags on one label is a conflict, never silently one of them).
* :func:`fix_decision`: the decision of a proposed fix, with the suspect boxes of the issues it
  touches: confirmed on one and rejected on another is a conflict, and nothing of that fix is
  applied.
* :func:`carry`: a previous run's decided labels matched to the labels of a new run that mean the
  same change (same sample, action, class, target box; the result box within IoU 0.5), so that no
  decision is lost by scoring again.
* :func:`apply_fix`, :func:`duplicate_pairs`: a fix applied to a list of plain detections.
* :func:`expected_after_review`: a run's expected number of label errors brought up to date with
  the review since it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .boxes import iou
from .names import Attr

CONFIRMED = "error:confirmed"
REJECTED = "error:rejected"
APPLIED = "fix:applied"
DECISION_TAGS = (CONFIRMED, REJECTED, APPLIED)  # what a re-score carries over
BOXED_ACTIONS = ("add", "move", "split", "merge", "clip")  # their result is a new box: matched by IoU
CARRY_IOU = 0.5


def decision(sample_tags: Sequence[str] | set[str], label_tags: Sequence[str] | set[str]) -> str | None:
    """``"confirmed"``, ``"rejected"``, ``"conflict"`` (one label tagged both ways) or None.

    The label's own tags win over the sample's; a sample tagged both ways decides nothing."""
    label_tags, sample_tags = set(label_tags or ()), set(sample_tags or ())
    if CONFIRMED in label_tags and REJECTED in label_tags:
        return "conflict"
    for tags in (label_tags, sample_tags):
        if CONFIRMED in tags and REJECTED not in tags:
            return "confirmed"
        if REJECTED in tags and CONFIRMED not in tags:
            return "rejected"
    return None


def fix_boxes(fix: dict[str, Any]) -> set[str]:
    """The ids of the given boxes a fix changes: its target and the boxes it merges."""
    out = {fix[Attr.TARGET]} if fix.get(Attr.TARGET) else set()
    out.update(o for o in (fix.get(Attr.OTHERS) or "").split(",") if o)
    return out


def fix_decision(fix: dict[str, Any], sample_tags: Sequence[str], suspects: Sequence[dict[str, Any]] = ()
                 ) -> tuple[str | None, str]:
    """The decision of a proposed fix (a plain ``cvc_fixes`` detection) and why.

    Its own tags first, then its sample's; undecided, the suspect box of its own issue decides
    (a reviewer may tag the suspect instead of the fix). Then every suspect box of the same issue
    type on a box the fix changes must agree: a merge of boxes A and B confirmed on A's issue and
    rejected on B's is a ``"conflict"``, as is a fix tagged both ways."""
    own = decision(sample_tags, fix.get("tags") or [])
    if own == "conflict":
        return own, "the fix is tagged both error:confirmed and error:rejected"
    if own is None:
        mine = [s for s in suspects if s.get(Attr.ISSUE) and s.get(Attr.ISSUE) == fix.get(Attr.ISSUE)]
        votes = {decision((), s.get("tags") or []) for s in mine} - {None}
        if len(votes) == 1:
            own = votes.pop()
        elif votes:
            return "conflict", "its suspect boxes are tagged both ways"
    if own != "confirmed":
        return own, ""
    boxes = fix_boxes(fix)
    for s in suspects:
        if s.get(Attr.TYPE) == fix.get(Attr.TYPE) and s.get(Attr.TARGET) in boxes \
                and decision((), s.get("tags") or []) == "rejected":
            return "conflict", (f"confirmed, but the {s.get(Attr.TYPE)} issue {s.get(Attr.ISSUE)} on a box it "
                                f"changes was rejected")
    return own, ""


# -- carrying decisions to a new run ---------------------------------------------------------------
@dataclass
class Decided:
    """A decided label of a score run: a proposed fix (``kind="fix"``) or a suspect box
    (``"suspect"``), with its decision tags. ``xyxy``: its box in pixels (None when unknown)."""

    sample_id: str
    kind: str
    tags: list[str]
    type: str | None = None
    action: str | None = None
    cls: str | None = None
    target: str | None = None
    others: str | None = None
    issue: str | None = None
    reason: str | None = None
    xyxy: list[float] | None = None

    def record(self) -> dict[str, Any]:
        """As the history and the journal keep it (JSON)."""
        return {"sample_id": self.sample_id, "kind": self.kind, "tags": list(self.tags), "type": self.type,
                "action": self.action, "class": self.cls, "target": self.target, "others": self.others,
                "issue": self.issue, "reason": self.reason, "xyxy": self.xyxy}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "Decided":
        return cls(d["sample_id"], d.get("kind") or "fix", list(d.get("tags") or []), d.get("type"), d.get("action"),
                   d.get("class"), d.get("target"), d.get("others"), d.get("issue"), d.get("reason"), d.get("xyxy"))

    @classmethod
    def from_label(cls, sample_id: str, kind: str, label: dict[str, Any], size: tuple[int, int] | None
                   ) -> "Decided | None":
        """The decision a stored label of a score run holds (a proposed fix or a suspect box, as
        the store reads it: its tags, the fix attributes, FiftyOne's relative ``bounding_box``),
        with its box in pixels for an image of ``size`` (w, h); None when it holds no decision."""
        tags = [t for t in (label.get("tags") or []) if t in DECISION_TAGS]
        if not tags:
            return None
        w, h = size or (0, 0)
        box = label.get("bounding_box")
        xyxy = None
        if w and h and box:
            x, y, bw, bh = (float(v) for v in box)
            xyxy = [x * w, y * h, (x + bw) * w, (y + bh) * h]
        return cls(sample_id, kind, tags, label.get(Attr.TYPE), label.get(Attr.ACTION), label.get(Attr.CLASS),
                   label.get(Attr.TARGET), label.get(Attr.OTHERS), label.get(Attr.ISSUE), label.get(Attr.REASON),
                   xyxy)

    def key(self) -> tuple:
        return (self.sample_id, self.kind, self.type, self.action, self.cls, self.target, self.others,
                None if self.xyxy is None else tuple(round(v, 1) for v in self.xyxy))


@dataclass
class Candidate:
    """A label of the new run a decision may be carried to."""

    kind: str  # "fix" | "suspect"
    type: str | None
    action: str | None
    cls: str | None
    target: str | None
    xyxy: Any  # pixels
    tags: list[str] = field(default_factory=list)


@dataclass
class CarryResult:
    carried: int = 0
    applied_not_proposed: int = 0  # applied fixes the new run no longer proposes: the labels hold them
    not_carried: list[Decided] = field(default_factory=list)  # decided, but the new run proposes no such thing


def _iou(a: Any, b: Any) -> float:
    return iou([float(v) for v in a], [float(v) for v in b])


def _same(d: Decided, c: Candidate, min_iou: float) -> bool:
    if c.kind != d.kind:
        return False
    if d.kind == "fix":
        if c.action != d.action or c.cls != d.cls or (c.target or None) != (d.target or None):
            return False
        if c.action in BOXED_ACTIONS and d.xyxy is not None and c.xyxy is not None:
            return _iou(c.xyxy, d.xyxy) >= min_iou
        return True
    if c.type != d.type or (c.target or None) != (d.target or None):
        return False
    if c.target is None and d.xyxy is not None and c.xyxy is not None:  # a box that is missing: where
        return _iou(c.xyxy, d.xyxy) >= min_iou
    return True


def carry(candidates: dict[str, list[Candidate]], decided: Sequence[Decided], min_iou: float = CARRY_IOU
          ) -> CarryResult:
    """Give each decided label's tags to the new label of its sample that means the same change
    (each new label takes at most one decision; the first decided label wins). Sets the
    candidates' ``tags``; returns the counts and the decisions that found no such label."""
    out = CarryResult()
    used: set[int] = set()
    for d in decided:
        tags = [t for t in d.tags if t in DECISION_TAGS]
        if not tags:
            continue
        match = next((c for c in candidates.get(d.sample_id, ()) if id(c) not in used and _same(d, c, min_iou)),
                     None)
        if match is not None:
            used.add(id(match))
            match.tags = sorted(set(match.tags) | set(tags))
            out.carried += 1
        elif APPLIED in tags:
            out.applied_not_proposed += 1
        else:
            out.not_carried.append(d)
    return out


def merge_decided(*sources: Sequence[Decided]) -> list[Decided]:
    """Decided labels of several sources (the store now, an interrupted run's journal), each once:
    the first source wins for the same label."""
    seen: set[tuple] = set()
    out = []
    for src in sources:
        for d in src:
            k = d.key()
            if k not in seen:
                seen.add(k)
                out.append(d)
    return out


# -- applying a fix ------------------------------------------------------------------------------
def apply_fix(dets: list[dict[str, Any]], fix: dict[str, Any], split_started: set[str],
              new_id: Any = lambda: None) -> bool:
    """Apply one fix (a plain ``cvc_fixes`` detection) to a list of plain ground-truth detections
    in place. ``new_id()`` gives the id of a box the fix adds.

    False when it cannot be applied: its box (or a box it merges) is gone, edited since scoring.
    ``split_started``: targets that already took their first split piece (the next pieces are added).
    """
    action = fix[Attr.ACTION]

    def added(label: str) -> dict[str, Any]:
        d = {"label": label, "bounding_box": list(fix["bounding_box"]), "tags": [], "attributes": {},
             Attr.ADDED_BY: fix["id"]}
        i = new_id()
        if i is not None:
            d["id"] = i
        return d

    if action == "add":
        dets.append(added(fix[Attr.CLASS]))
        return True
    k = next((i for i, d in enumerate(dets) if d.get("id") == fix.get(Attr.TARGET)), None)
    if k is None:
        return False  # the box is gone (edited since scoring)
    if action == "remove":
        dets.pop(k)
    elif action == "relabel":
        dets[k]["label"] = fix[Attr.CLASS]
    elif action in ("move", "clip"):
        dets[k]["bounding_box"] = list(fix["bounding_box"])
    elif action == "merge":
        others = [o for o in (fix.get(Attr.OTHERS) or "").split(",") if o]
        if not all(any(d.get("id") == o for d in dets) for o in others):
            return False
        dets[k]["bounding_box"] = list(fix["bounding_box"])
        dets[:] = [d for d in dets if d.get("id") not in others]
    elif action == "split":
        if fix[Attr.TARGET] in split_started:
            dets.append(added(dets[k]["label"]))
        else:
            dets[k]["bounding_box"] = list(fix["bounding_box"])
            split_started.add(fix[Attr.TARGET])
    else:
        return False
    return True


def duplicate_pairs(dets: list[dict[str, Any]], min_iou: float) -> int:
    """Pairs of boxes of one class that overlap at IoU above ``min_iou`` (relative xywh boxes; IoU
    does not change with the image's scale)."""
    from .boxes import box_iou

    n = 0
    by_cls: dict[str, list[list[float]]] = {}
    for d in dets:
        x, y, w, h = d["bounding_box"]
        by_cls.setdefault(d.get("label"), []).append([x, y, x + w, y + h])
    for boxes in by_cls.values():
        if len(boxes) > 1:
            a = np.asarray(boxes, float)
            iou = box_iou(a, a)
            n += int((np.triu(iou, 1) > min_iou).sum())
    return n


def expected_after_review(fixes: Sequence[tuple[set[str], dict[str, Any]]], error_types: Sequence[str]
                          ) -> tuple[float, dict[str, int]]:
    """How a run's expected label errors (the sum of p) change with the review since: ``fixes``
    are (its sample's tags, a plain ``cvc_fixes`` detection with ``cvc_issue``, ``cvc_type``,
    ``confidence`` = p and its tags). An issue whose fix was applied, or that a reviewer rejected,
    is no longer an expected error (its p comes off); one confirmed and not applied yet is a known
    error (it counts 1, so 1 - p is added). Each issue counts once (the pieces of a split share
    one). Returns (the change, how many issues were applied, rejected and confirmed)."""
    seen: dict[str, tuple[float, str]] = {}
    for sample_tags, d in fixes:
        iid, t = d.get(Attr.ISSUE), d.get(Attr.TYPE)
        if not iid or t not in error_types or iid in seen:
            continue
        tags = set(d.get("tags") or [])
        p = float(d.get("confidence") or 0.0)
        dec = decision(sample_tags, tags)
        if APPLIED in tags:
            seen[iid] = (-p, "applied")
        elif dec == "rejected":
            seen[iid] = (-p, "rejected")
        elif dec == "confirmed":
            seen[iid] = (1.0 - p, "confirmed")
    counts = {k: sum(1 for _, w in seen.values() if w == k) for k in ("applied", "rejected", "confirmed")}
    return float(sum(v for v, _ in seen.values())), counts


def labels_of(dets: Sequence[dict[str, Any]]) -> list[tuple]:
    """What undo compares: each box's id, class and box, not the attributes a score run or the
    App may add."""
    return [(d.get("id"), d.get("label"), tuple(round(float(v), 9) for v in d.get("bounding_box") or ()))
            for d in dets]


def changed_boxes(expected: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]]) -> list[str]:
    """How ``current`` differs from ``expected`` box by box, for a message: 'box 2 (crazing) moved'."""
    exp = {d.get("id"): d for d in expected}
    cur = {d.get("id"): d for d in current}
    out = []
    for i, d in enumerate(expected):
        c = cur.get(d.get("id"))
        what = f"box {i} ({d.get('label')})"
        if c is None:
            out.append(f"{what} removed")
        elif c.get("label") != d.get("label"):
            out.append(f"{what} relabelled {c.get('label')}")
        elif labels_of([c]) != labels_of([d]):
            out.append(f"{what} moved")
    out += [f"box ({c.get('label')}) added" for k, c in cur.items() if k not in exp]
    return out
