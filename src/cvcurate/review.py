"""Review decisions and fixes: what reviewers tagged in the App, applied to the ground truth, undoable.

The score stage writes each proposed fix as a box in the field ``cvc_fixes`` (label
``action:class``; attributes ``cvc_action``, ``cvc_type``, ``cvc_target``, ``cvc_reason``).
In the FiftyOne App a reviewer tags

* a fix box with ``error:confirmed`` or ``error:rejected`` (label tags), or
* a whole sample with ``error:confirmed`` (all its fixes) or ``error:rejected`` (none).

A label tag wins over the sample's tag. :func:`apply` applies every confirmed, not yet applied fix
to ``ground_truth`` in the store (never to the source files), writes a change log with the
ground truth of every changed sample before and after, and marks the fixes ``fix:applied``;
:func:`undo` puts the "before" back, if nobody changed those samples since.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store
from .errors import InputError
from .scoring import QUEUES

CONFIRMED = "error:confirmed"
REJECTED = "error:rejected"
APPLIED = "fix:applied"
FIX_FIELD = store.FIX_FIELD
GT_FIELD = store.GT_FIELD


def _check_scored(name: str) -> None:
    if "score" not in store.get_runs(name):
        raise InputError(f"dataset {name!r} has not been scored: run 'cvcurate score {name}' first")


@dataclass
class QueueProgress:
    queue: str
    samples: int = 0
    reviewed: int = 0
    confirmed: int = 0
    rejected: int = 0


def summary(name: str) -> list[QueueProgress]:
    """Per queue: samples in it, reviewed samples, and confirmed / rejected decisions."""
    _check_scored(name)
    queue_fields = [f"cvc_{q}" for q in QUEUES]
    info = store.sample_info(name, ["tags", f"{FIX_FIELD}.detections.tags", *queue_fields])
    out = []
    for q, qf in zip(QUEUES, queue_fields):
        p = QueueProgress(q)
        for k, score in enumerate(info[qf]):
            if score is None:
                continue
            p.samples += 1
            tags = set(info["tags"][k] or [])
            label_tags = [set(t or []) for t in (info[f"{FIX_FIELD}.detections.tags"][k] or [])]
            conf = (CONFIRMED in tags) or any(CONFIRMED in t for t in label_tags)
            rej = (REJECTED in tags) or any(REJECTED in t for t in label_tags)
            p.confirmed += conf
            p.rejected += rej
            p.reviewed += conf or rej
        out.append(p)
    return out


def _decision(sample_tags: set[str], label_tags: set[str]) -> str | None:
    for tags in (label_tags, sample_tags):
        if CONFIRMED in tags and REJECTED not in tags:
            return "confirmed"
        if REJECTED in tags:
            return "rejected"
    return None


@dataclass
class ChangeSet:
    change_id: str
    dataset: str
    at: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def applied(self) -> int:
        return sum(len(c["fixes"]) for c in self.changes)


def _apply_fix(dets: list[dict[str, Any]], fix: dict[str, Any]) -> bool:
    """Apply one fix (a cvc_fixes detection) to a list of ground-truth detections in place."""
    action = fix["cvc_action"]
    if action == "add":
        dets.append({"label": fix["cvc_class"], "bounding_box": list(fix["bounding_box"]), "tags": [],
                     "attributes": {}, "cvc_added_by": fix["id"]})
        return True
    k = next((i for i, d in enumerate(dets) if d.get("id") == fix.get("cvc_target")), None)
    if k is None:
        return False  # the box is gone (edited since scoring)
    if action == "remove":
        dets.pop(k)
    elif action == "relabel":
        dets[k]["label"] = fix["cvc_class"]
    elif action in ("move", "clip"):
        dets[k]["bounding_box"] = list(fix["bounding_box"])
    else:
        return False
    return True


def apply(name: str, *, log_dir: str | Path | None = None, dry_run: bool = False) -> ChangeSet:
    """Apply every confirmed, not yet applied fix; write the change log; return what changed."""
    _check_scored(name)
    fixes = store.get_detections(name, FIX_FIELD)
    info = store.sample_info(name, ["tags", "filepath"])
    sample_tags = {sid: set(t or []) for sid, t in zip(info["id"], info["tags"])}
    paths = dict(zip(info["id"], info["filepath"]))
    todo: dict[str, list[dict[str, Any]]] = {}
    for sid, dets in fixes.items():
        for d in dets:
            tags = set(d.get("tags") or [])
            if APPLIED in tags:
                continue
            if _decision(sample_tags.get(sid, set()), tags) == "confirmed":
                todo.setdefault(sid, []).append(d)
    now = _dt.datetime.now(_dt.timezone.utc)
    cs = ChangeSet(change_id=now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6], dataset=name,
                   at=now.isoformat(timespec="seconds"))
    if not todo:
        return cs
    gt = store.get_detections(name, GT_FIELD, list(todo))
    new_gt: dict[str, list[dict[str, Any]]] = {}
    for sid, sample_fixes in todo.items():
        before = gt.get(sid, [])
        after = json.loads(json.dumps(before))
        applied = []
        # removals last and by id, so indices never shift under another fix
        for fx in sorted(sample_fixes, key=lambda f: f["cvc_action"] == "remove"):
            if _apply_fix(after, fx):
                applied.append({k: fx.get(k) for k in ("id", "cvc_action", "cvc_type", "cvc_class",
                                                        "cvc_target", "bounding_box", "cvc_reason")})
        if applied:
            new_gt[sid] = after
            cs.changes.append({"sample_id": sid, "filepath": paths.get(sid), "fixes": applied,
                               "before": before, "after": None})
    if dry_run or not new_gt:
        return cs
    store.set_detections(name, GT_FIELD, new_gt)
    written = store.get_detections(name, GT_FIELD, list(new_gt))
    for c in cs.changes:
        c["after"] = written[c["sample_id"]]
    # mark the applied fixes so a second apply does not repeat them
    marked = {}
    applied_ids = {f["id"] for c in cs.changes for f in c["fixes"]}
    for sid in todo:
        dets = fixes[sid]
        for d in dets:
            if d.get("id") in applied_ids:
                d["tags"] = sorted(set(d.get("tags") or []) | {APPLIED})
        marked[sid] = dets
    store.set_detections(name, FIX_FIELD, marked)
    cs.log_path = _write_log(cs, log_dir)
    store.record_change(name, {"change_id": cs.change_id, "at": cs.at, "log": str(cs.log_path),
                               "samples": len(cs.changes), "fixes": cs.applied, "undone": False})
    return cs


def _write_log(cs: ChangeSet, log_dir: str | Path | None) -> Path:
    folder = Path(log_dir) if log_dir is not None else Path(f"{cs.dataset}_changes")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cs.change_id}.json"
    path.write_text(json.dumps({"change_id": cs.change_id, "dataset": cs.dataset, "at": cs.at,
                                "changes": cs.changes}, indent=1))
    return path.resolve()


def undo(name: str, change_id: str | None = None) -> ChangeSet:
    """Restore the ground truth a change set replaced (the last one not undone by default)."""
    history = [c for c in store.get_changes(name) if not c.get("undone")]
    if not history:
        raise InputError(f"dataset {name!r} has no applied change to undo")
    entry = history[-1] if change_id is None else next((c for c in history if c["change_id"] == change_id), None)
    if entry is None:
        raise InputError(f"no change {change_id!r} to undo in {name!r} "
                         f"(changes: {', '.join(c['change_id'] for c in history)})")
    try:
        log = json.loads(Path(entry["log"]).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the change log {entry['log']}: {exc}") from None
    current = store.get_detections(name, GT_FIELD, [c["sample_id"] for c in log["changes"]])
    conflicts = [c["filepath"] for c in log["changes"] if current.get(c["sample_id"]) != c["after"]]
    if conflicts:
        raise InputError(f"{len(conflicts)} sample(s) changed since {entry['change_id']} was applied "
                         f"(first: {conflicts[0]}); nothing was undone")
    store.set_detections(name, GT_FIELD, {c["sample_id"]: c["before"] for c in log["changes"]})
    fixes = store.get_detections(name, FIX_FIELD, [c["sample_id"] for c in log["changes"]])
    applied_ids = {f["id"] for c in log["changes"] for f in c["fixes"]}
    for dets in fixes.values():
        for d in dets:
            if d.get("id") in applied_ids:
                d["tags"] = [t for t in d.get("tags") or [] if t != APPLIED]
    store.set_detections(name, FIX_FIELD, fixes)
    store.record_change(name, {**entry, "undone": True})
    return ChangeSet(change_id=entry["change_id"], dataset=name, at=entry["at"], changes=log["changes"],
                     log_path=Path(entry["log"]))
