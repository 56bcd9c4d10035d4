"""Applying review decisions: what reviewers tagged in the App, applied to the ground truth, undoable.

The score stage writes each proposed fix as a box in the field ``cvc_fixes`` (label
``#<box> <action> <class>``; attributes ``cvc_action``, ``cvc_type``, ``cvc_target``, ``cvc_reason``).
In the FiftyOne App a reviewer tags

* a fix box with ``error:confirmed`` or ``error:rejected`` (label tags), or
* a whole sample with ``error:confirmed`` (all its fixes) or ``error:rejected`` (none).

A label tag wins over the sample's tag. A sample tagged ``error:confirmed`` applies all of its
fixes (less those tagged ``error:rejected`` one by one) or none: when one of them no longer applies
(its box was edited since scoring), none of that sample's fixes is applied and ``apply`` says so.
A fix confirmed on its own that no longer applies is skipped alone. :func:`apply` applies every confirmed, not yet applied fix
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

from .. import decisions, store
from ..decisions import APPLIED, CONFIRMED
from ..errors import NOTHING_WRITTEN, InputError, interrupt_leaves, kept, pause_point, settle, shell_arg
from ..names import FIX_FIELD, SUSPECTS_FIELD, Attr
from . import recovery

GT_FIELD = store.GT_FIELD


def who() -> str:
    """Who applied a change set: $CVCURATE_USER, else the login name."""
    import getpass
    import os

    try:
        return os.environ.get("CVCURATE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_scored(name: str) -> None:
    if "score" not in store.get_runs(name):
        raise InputError(f"dataset {name!r} has not been scored: run 'cvcurate score {shell_arg(name)}' first")


def _decision(sample_tags: set[str], label_tags: set[str]) -> str | None:
    d = decisions.decision(sample_tags, label_tags)
    return None if d == "conflict" else d


@dataclass
class ChangeSet:
    change_id: str
    dataset: str
    at: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    log_path: Path | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)  # confirmed fixes that could not be applied

    @property
    def applied(self) -> int:
        return sum(len(c["fixes"]) for c in self.changes)

    def by_action(self) -> dict[str, int]:
        """How many of its fixes each action applies (relabel 3, remove 1, ...)."""
        out: dict[str, int] = {}
        for c in self.changes:
            for f in c["fixes"]:
                out[f[Attr.ACTION]] = out.get(f[Attr.ACTION], 0) + 1
        return dict(sorted(out.items()))


_ROUNDS = 3  # compare-and-set rounds: a sample a reviewer changed while apply ran is read and decided again


def _plan(name: str, cs: ChangeSet, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Read the decisions and the ground truth (of the samples ``only``, or all) and work out each
    sample's change: sample id -> {tags, fixes, suspects, before, after, applied} (what was read,
    what it becomes, the fixes it applies). Confirmed fixes that cannot be applied, and fixes
    whose decisions conflict, go to ``cs.skipped``. Boxes a fix adds get their ids here, so that
    the journal written before the first write knows every label apply will write."""
    fixes = store.get_detections(name, FIX_FIELD, only)
    suspects = store.get_detections(name, SUSPECTS_FIELD, only) if SUSPECTS_FIELD in store.field_names(name) else {}
    info = store.sample_info(name, ["tags", "filepath", "last_modified_at"])
    sample_tags = {sid: list(t or []) for sid, t in zip(info["id"], info["tags"])}
    # FiftyOne keeps no time per tag: a sample's last modification before apply is when its tags
    # (the reviewer's decisions) were last set
    tagged_at = {sid: (t.isoformat(timespec="seconds") if hasattr(t, "isoformat") else t)
                 for sid, t in zip(info["id"], info["last_modified_at"])}
    paths = dict(zip(info["id"], info["filepath"]))
    todo: dict[str, list[dict[str, Any]]] = {}
    for sid, dets in fixes.items():
        for d in dets:
            tags = set(d.get("tags") or [])
            if APPLIED in tags:
                continue
            dec, why = decisions.fix_decision(d, sample_tags.get(sid, []), suspects.get(sid, []))
            if dec == "confirmed":
                todo.setdefault(sid, []).append(d)
            elif dec == "conflict":
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid), "fix": d.get("id"), "conflict": True,
                                   "why": f"conflicting decisions on its {d.get(Attr.ACTION)} fix ({why}): "
                                          f"nothing of it applied; decide it again"})
    if not todo:
        return {}
    gt = store.get_detections(name, GT_FIELD, list(todo))
    from .score import load_score_config

    dup_iou = load_score_config().geometry.duplicate_iou
    plans: dict[str, dict[str, Any]] = {}
    for sid, sample_fixes in todo.items():
        before = gt.get(sid, [])
        after = json.loads(json.dumps(before))
        applied = []
        split_started: set[str] = set()
        whole = CONFIRMED in sample_tags.get(sid, [])  # a sample-level decision: all its fixes or none
        # removals last and by id, so indices never shift under another fix; the others best first,
        # so of two fixes that would box the same defect the more probable one wins
        for fx in sorted(sample_fixes, key=lambda f: (f[Attr.ACTION] == "remove", -float(f.get("confidence") or 0))):
            trial = json.loads(json.dumps(after))
            started = set(split_started)
            ok = decisions.apply_fix(trial, fx, started, new_id=store.new_id)
            if ok and decisions.duplicate_pairs(trial, dup_iou) > decisions.duplicate_pairs(after, dup_iou):
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid), "fix": fx.get("id"), "conflict": True,
                                   "why": f"the {fx[Attr.ACTION]} fix would put a second {fx.get(Attr.CLASS)} box on "
                                          f"a defect that already has one (a box there, or a more probable fix): "
                                          f"not applied, conflicting"})
                continue
            if ok:
                after[:] = trial
                split_started.clear()
                split_started.update(started)
                applied.append({k: fx.get(k) for k in ("id", Attr.ACTION, Attr.TYPE, Attr.CLASS,
                                                        Attr.TARGET, Attr.OTHERS, "bounding_box", Attr.REASON)}
                               | {"tagged_at": tagged_at.get(sid)})
            elif whole:
                applied, after = [], before  # one of them cannot be applied: none of this sample's
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid),
                                   "why": f"its {fx[Attr.ACTION]} fix no longer applies (boxes edited since scoring)"})
                break
            else:
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid), "fix": fx.get("id"),
                                   "why": f"the {fx[Attr.ACTION]} fix no longer applies (box edited since scoring)"})
        if applied:
            plans[sid] = {"tags": sample_tags.get(sid, []), "fixes": fixes[sid], "suspects": suspects.get(sid, []),
                          "before": before, "after": after, "applied": applied, "filepath": paths.get(sid)}
    return plans


def new_change_set(name: str) -> ChangeSet:
    """An empty change set of dataset ``name``, its id from the time (sortable) and a random tail."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return ChangeSet(change_id=now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6], dataset=name,
                     at=now.isoformat(timespec="seconds"))


def change_entry(sid: str, plan: dict[str, Any], with_after: bool = False) -> dict[str, Any]:
    """A sample's entry in a change set (and its log) from its plan: what it held, what it holds."""
    return {"sample_id": sid, "filepath": plan["filepath"], "fixes": plan["applied"], "before": plan["before"],
            "after": plan["after"] if with_after else None}


def apply(name: str, *, log_dir: str | Path | None = None, dry_run: bool = False, wait: float = 0.0) -> ChangeSet:
    """Apply every confirmed, not yet applied fix; write the change log; return what changed.

    Safe with other processes on a shared database: it holds the dataset's lock (another writer
    is refused with :class:`~cvcurate.store.DatasetBusyError`, or waited for up to ``wait``
    seconds), finishes or rolls back what a killed writer left (:mod:`.recovery`), journals its
    change before the first write, and writes each sample with a compare-and-set: its new ground
    truth and its fixes' ``fix:applied`` mark in one update, done only if the sample's tags,
    fixes, suspect boxes and ground truth are still as read (a sample a reviewer tagged in between
    is read and decided again). Reviewers' tags are never rewritten: the mark is added to the
    applied fixes' own tags."""
    check_scored(name)
    cs = new_change_set(name)
    if dry_run:
        recovery.warn_unfinished(name)
        cs.changes = [change_entry(sid, p) for sid, p in _plan(name, cs).items()]
        return cs
    with store.dataset_lock(name, "apply", user=who(), wait_s=wait) as lock:
        recovery.recover(name, "apply")
        return write_change_set(name, cs, lock, log_dir)


def _apply_write(sid: str, plan: dict[str, Any]) -> Any:
    expect = {FIX_FIELD: plan["fixes"], GT_FIELD: plan["before"]}
    if plan.get("suspects"):
        expect[SUSPECTS_FIELD] = plan["suspects"]
    return store.GuardedWrite(sid, expect_tags=plan["tags"], expect_detections=expect,
                              set_detections={GT_FIELD: plan["after"]},
                              add_label_tags={FIX_FIELD: ([f["id"] for f in plan["applied"]], [APPLIED])})


def write_change_set(name: str, cs: ChangeSet, lock: Any, log_dir: str | Path | None, *,
                  planner: Any = _plan, writer: Any = _apply_write, record: dict[str, Any] | None = None,
                  on_commit: Any = None, on_rollback: Any = None) -> ChangeSet:
    """Write the plans of ``planner(name, cs, only=None)`` (sample id -> before, after, applied:
    see :func:`_plan`) as one change set: journaled first, each sample by compare-and-set
    (``writer(sid, plan)``), stale samples planned again up to ``_ROUNDS`` times, logged and
    listed for :func:`undo`; all or nothing. ``apply`` writes the reviewers' confirmed fixes;
    ``cvcurate conventions --adopt`` the fixes of an adopted labeling convention. ``record``:
    more fields for the change set's entry; ``on_commit()`` runs right after the commit and
    ``on_rollback()`` when the change set is rolled back after it."""
    plans = planner(name, cs)
    if not plans:
        return cs
    attempted: list[str] = []  # filled before each sample's write is sent
    sent: dict[str, dict[str, Any]] = {}  # sample -> the plan last sent for it (what a rollback takes back)
    written: dict[str, dict[str, Any]] = {}
    entry: dict[str, Any] | None = None
    partly = (f"the apply on dataset {name!r} may be partly written; its journal holds the labels of before: "
              f"the next cvcurate writer on it (e.g. 'cvcurate apply {shell_arg(name)}') rolls it back")
    try:
        with interrupt_leaves(partly):
            todo = plans
            for round_ in range(_ROUNDS):
                lock.check()
                sent.update(todo)
                body = {"changes": [change_entry(sid, p, True) for sid, p in sent.items()], "record": record or {}}
                if entry is None:  # the intent, with every before-image, is in the database before any write
                    entry = store.journal.begin(name, "apply", body, change_id=cs.change_id)
                else:
                    store.journal.set_payload(name, entry, body)
                pause_point("apply:journaled")
                done = set(store.guarded_write(name, [writer(sid, p) for sid, p in todo.items()], attempted))
                written.update({sid: p for sid, p in todo.items() if sid in done})
                stale = [sid for sid in todo if sid not in done]
                if not stale:
                    break
                if round_ == _ROUNDS - 1:
                    paths = {sid: todo[sid]["filepath"] for sid in stale}
                    cs.skipped.extend({"sample_id": sid, "filepath": paths.get(sid),
                                       "why": "it kept changing while apply ran: run apply again"} for sid in stale)
                    break
                todo = planner(name, cs, only=stale)
                if not todo:
                    break
            if not written:
                store.journal.finish(name, entry, store.journal.ROLLED_BACK)
                return cs
            cs.changes = [change_entry(sid, p) for sid, p in written.items()]
            after = store.get_detections(name, GT_FIELD, list(written))
            for c in cs.changes:
                c["after"] = after[c["sample_id"]]
            lock.check()
            cs.log_path = _write_log(cs, log_dir)
            store.save_change_body(name, cs.change_id, json.loads(cs.log_path.read_text()))
            pause_point("apply:before-commit")
            # the commit: once the change set is listed, a recovery keeps it (undo takes it back)
            store.record_change(name, {"change_id": cs.change_id, "at": cs.at, "by": who(), "log": str(cs.log_path),
                                       "samples": len(cs.changes), "fixes": cs.applied, "undone": False,
                                       **(record or {})})
            if on_commit is not None:
                on_commit()
            store.journal.finish(name, entry)
    except BaseException:
        # all or nothing (Ctrl-C and SIGTERM included): a change that is not logged could not be
        # undone. Each sample sent is put back only if it still holds what apply wrote (one never
        # written is left). If this fails too (the database is gone), the journal stays pending
        # and the next writer rolls it back.
        with store.shielded():
            store.guarded_write(name, [store.GuardedWrite(
                sid, expect_detections={GT_FIELD: sent[sid]["after"]}, set_detections={GT_FIELD: sent[sid]["before"]},
                remove_label_tags={FIX_FIELD: ([f["id"] for f in sent[sid]["applied"] if f.get("id")], [APPLIED])})
                for sid in dict.fromkeys(attempted)])
            store.forget_change(name, cs.change_id)
            store.forget_change_body(name, cs.change_id)
            if on_rollback is not None:
                on_rollback()
            if cs.log_path is not None:
                cs.log_path.unlink(missing_ok=True)
            if entry is not None:
                store.journal.finish(name, entry, store.journal.ROLLED_BACK)
            settle(f"the apply was rolled back: {NOTHING_WRITTEN}")
        raise
    kept(f"{cs.applied} fix(es) applied to dataset {name!r} and logged in {cs.log_path}")
    return cs


def _write_log(cs: ChangeSet, log_dir: str | Path | None) -> Path:
    folder = Path(log_dir) if log_dir is not None else Path(f"{cs.dataset}_changes")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cs.change_id}.json"
    path.write_text(json.dumps({"change_id": cs.change_id, "dataset": cs.dataset, "at": cs.at,
                                "changes": cs.changes}, indent=1))
    return path.resolve()


def undo(name: str, change_id: str | None = None, *, force: bool = False, wait: float = 0.0) -> ChangeSet:
    """Restore the ground truth a change set replaced (the last one not undone by default).

    Holds the dataset's lock like :func:`apply` and journals before it writes. Each sample is
    restored only if its boxes (ids, classes, places: not the attributes a score run or the App
    adds) are still as the change set left them; otherwise nothing is undone and the message names
    the boxes that changed, unless ``force``: then those samples get their labels of before too
    (the later edits of their boxes are lost). The ``fix:applied`` marks are taken off the fixes'
    own tags, leaving reviewers' tags alone."""
    with store.dataset_lock(name, "undo", user=who(), wait_s=wait) as lock:
        recovery.recover(name, "undo")
        return _undo_locked(name, change_id, lock, force)


def _undo_locked(name: str, change_id: str | None, lock: Any, force: bool = False) -> ChangeSet:
    history = [c for c in store.get_changes(name) if not c.get("undone")]
    if not history:
        raise InputError(f"dataset {name!r} has no applied change to undo")
    entry = history[-1] if change_id is None else next((c for c in history if c["change_id"] == change_id), None)
    if entry is None:
        raise InputError(f"no change {change_id!r} to undo in {name!r} "
                         f"(changes: {', '.join(c['change_id'] for c in history)})")
    log = store.load_change_body(name, entry["change_id"])  # in the database: undo from any machine
    if log is None:  # a change set of an older version: only its local log file has it
        try:
            log = json.loads(Path(entry["log"]).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the change log {entry['log']}: {exc}") from None
    current = store.get_detections(name, GT_FIELD, [c["sample_id"] for c in log["changes"]])
    conflicts = [(c, decisions.changed_boxes(c["after"], current.get(c["sample_id"], [])))
                 for c in log["changes"]
                 if decisions.labels_of(current.get(c["sample_id"], [])) != decisions.labels_of(c["after"])]
    if conflicts and not force:
        first = "; ".join(f"{Path(c['filepath'] or '?').name}: {', '.join(why[:3]) or 'boxes changed'}"
                          for c, why in conflicts[:3])
        raise InputError(f"{len(conflicts)} sample(s) changed since {entry['change_id']} was applied ({first}"
                         f"{'; ...' if len(conflicts) > 3 else ''}); nothing was undone. Give --force to restore "
                         f"their labels of before anyway (the later edits of those boxes are lost)")
    by_sid = {c["sample_id"]: c for c in log["changes"]}

    def fix_ids(sid: str) -> list[str]:  # a convention's fixes have no label in cvc_fixes (no id)
        return [f["id"] for f in by_sid[sid]["fixes"] if f.get("id")]

    def put_back(sids: list[str]) -> None:  # the change set again, where the undo got to
        store.guarded_write(name, [store.GuardedWrite(
            sid, expect_detections={GT_FIELD: by_sid[sid]["before"]}, set_detections={GT_FIELD: current[sid]},
            add_label_tags={FIX_FIELD: (fix_ids(sid), [APPLIED])}) for sid in dict.fromkeys(sids)])

    attempted: list[str] = []
    journal_entry = None
    partly = (f"the undo of {entry['change_id']} on dataset {name!r} may be partly written; its journal holds "
              f"the labels of before: the next cvcurate writer on it rolls it back")
    try:  # all or nothing, like apply
        with interrupt_leaves(partly):
            lock.check()
            journal_entry = store.journal.begin(name, "undo", {"restored": [
                [sid, current.get(sid, []), c["before"], fix_ids(sid)] for sid, c in by_sid.items()]},
                change_id=entry["change_id"])
            pause_point("undo:journaled")
            done = store.guarded_write(name, [store.GuardedWrite(
                sid, expect_detections={GT_FIELD: current.get(sid, [])}, set_detections={GT_FIELD: c["before"]},
                remove_label_tags={FIX_FIELD: (fix_ids(sid), [APPLIED])}) for sid, c in by_sid.items()], attempted)
            if len(done) < len(by_sid):
                with store.shielded():
                    put_back(done)
                    store.journal.finish(name, journal_entry, store.journal.ROLLED_BACK)
                    settle(f"the undo was rolled back: {NOTHING_WRITTEN}")
                raise InputError(f"{len(by_sid) - len(done)} sample(s) changed while {entry['change_id']} was being "
                                 f"undone; nothing was undone")
            lock.check()
            store.record_change(name, {**entry, "undone": True})  # the commit
            if entry.get("convention"):  # the convention its change set adopted goes with it
                store.set_convention(name, entry["convention"], None)
            store.journal.finish(name, journal_entry)
    except InputError:
        raise
    except BaseException:
        with store.shielded():
            put_back(attempted)
            store.record_change(name, entry)
            if journal_entry is not None:
                store.journal.finish(name, journal_entry, store.journal.ROLLED_BACK)
            settle(f"the undo was rolled back: {NOTHING_WRITTEN}")
        raise
    kept(f"change {entry['change_id']} of dataset {name!r} undone")
    return ChangeSet(change_id=entry["change_id"], dataset=name, at=entry["at"], changes=log["changes"],
                     log_path=Path(entry["log"]))


def _box_text(det: dict[str, Any] | None, wh: tuple[int, int] | None = None) -> str:
    """``label [x1, y1, x2, y2]``: in pixels of the image when its size ``wh`` is known, else relative."""
    if det is None:
        return "-"
    x, y, w, h = det["bounding_box"]
    if wh and wh[0] and wh[1]:
        W, H = wh
        return f"{det.get('label')} [{x * W:.1f}, {y * H:.1f}, {(x + w) * W:.1f}, {(y + h) * H:.1f}] px"
    return f"{det.get('label')} [{x:.3f}, {y:.3f}, {x + w:.3f}, {y + h:.3f}] (relative)"


def describe_changes(cs: ChangeSet) -> list[str]:
    """One line per fix of a change set: image, box number (its index among the image's boxes
    before the change), before -> after in pixels, and the boxes a merge removes by number."""
    info = store.sample_info(cs.dataset, ["metadata.width", "metadata.height"]) if cs.changes else {"id": []}
    sizes = {sid: (w, h) for sid, w, h in zip(info["id"], info.get("metadata.width", []),
                                                info.get("metadata.height", []))}
    lines = []
    for c in cs.changes:
        before = {d.get("id"): d for d in c["before"]}
        order = list(before)
        wh = sizes.get(c.get("sample_id"))
        name = Path(c["filepath"] or "?").name
        for f in c["fixes"]:
            old = before.get(f.get(Attr.TARGET))
            idx = order.index(f[Attr.TARGET]) if f.get(Attr.TARGET) in before else None
            box = f"box {idx}" if idx is not None else "new box"
            new = {"label": f.get(Attr.CLASS) if f[Attr.ACTION] != "remove" else None,
                   "bounding_box": f["bounding_box"]}
            if f[Attr.ACTION] == "relabel" and old is not None:
                new["bounding_box"] = old["bounding_box"]
            after = "removed" if f[Attr.ACTION] == "remove" else _box_text(new, wh)
            others = [o for o in str(f.get(Attr.OTHERS) or "").split(",") if o]
            extra = (" (and removes " + ", ".join(f"box {order.index(o)}" if o in before else "a box no longer there"
                                                  for o in others) + ")") if others else ""
            lines.append(f"{name} {box}: {f[Attr.ACTION]} ({f[Attr.TYPE]}) {_box_text(old, wh)} -> {after}{extra}")
    return lines
