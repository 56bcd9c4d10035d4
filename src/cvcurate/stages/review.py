"""Review decisions and fixes: what reviewers tagged in the App, applied to the ground truth, undoable.

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
from typing import Any, Sequence

from .. import decisions, store
from ..decisions import APPLIED, CONFIRMED, REJECTED
from ..errors import NOTHING_WRITTEN, InputError, interrupt_leaves, kept, pause_point, settle, shell_arg
from ..names import FIX_FIELD, SCORE_FIELD, SUSPECTS_FIELD, queue_field, view_name
from ..scoring import QUEUES
from . import recovery
from . import score as score_stage

GT_FIELD = store.GT_FIELD


def check_port(address: str, port: int) -> None:
    """Raise :class:`InputError` unless the App could listen on ``address:port`` (1-65535, free).

    Checked before launching: FiftyOne itself retries a busy or impossible port for 30 s and then
    fails with a traceback.
    """
    import errno
    import socket

    if not 1 <= port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"cannot serve on --address {address!r}: {getattr(exc, 'strerror', None) or exc}") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as a server binds: a port in TIME_WAIT is free, one another program listens on is not
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"port {port} on {address} is in use (another App or server?): "
                                 f"give another --port") from None
            if exc.errno == errno.EACCES:
                raise InputError(f"port {port} on {address} needs privileges: give a --port above 1023") from None
            raise InputError(f"cannot serve on {address}:{port}: {exc.strerror or exc}") from None


def _who() -> str:
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


@dataclass
class QueueProgress:
    """One queue's bookkeeping: samples in it, and its proposed fixes by decision."""

    queue: str
    samples: int = 0
    fixes: int = 0
    confirmed: int = 0
    rejected: int = 0
    applied: int = 0

    @property
    def open(self) -> int:
        return self.fixes - self.confirmed - self.rejected


def summary(name: str) -> list[QueueProgress]:
    """Per queue: its samples (an issue of the queue at p >= the run's threshold, as its view
    holds them), and every fix the run proposes for the queue's issues (those below the
    threshold too: a decision on one is a decision), confirmed, rejected, open and applied (a fix
    belongs to the queue of the issue that proposed it; a sample-level tag decides each of its
    fixes)."""
    check_scored(name)
    recovery.warn_unfinished(name)
    run = store.read_record(name, "score", issues=False)
    min_p = run.queue_min_p if run is not None else 0.5
    type_to_queue = {t: q for q, types in QUEUES.items() for t in types}
    queue_fields = [queue_field(q) for q in QUEUES]
    info = store.sample_info(name, ["tags", *queue_fields])
    out = {q: QueueProgress(q) for q in QUEUES}
    for q, qf in zip(QUEUES, queue_fields):  # the queue as its view holds it: an issue of p >= the run's threshold
        out[q].samples = sum(v is not None and v >= min_p for v in info[qf])
    sample_tags = {sid: set(t or []) for sid, t in zip(info["id"], info["tags"])}
    for sid, dets in store.get_detections(name, FIX_FIELD).items():
        for d in dets:
            q = type_to_queue.get(d.get("cvc_type"))
            if q is None:
                continue
            p = out[q]
            p.fixes += 1
            tags = set(d.get("tags") or [])
            decision = _decision(sample_tags.get(sid, set()), tags)
            p.confirmed += decision == "confirmed"
            p.rejected += decision == "rejected"
            p.applied += APPLIED in tags
    return list(out.values())


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
                                   "why": f"conflicting decisions on its {d.get('cvc_action')} fix ({why}): "
                                          f"nothing of it applied; decide it again"})
    if not todo:
        return {}
    gt = store.get_detections(name, GT_FIELD, list(todo))
    dup_iou = score_stage.load_score_config().geometry.duplicate_iou
    plans: dict[str, dict[str, Any]] = {}
    for sid, sample_fixes in todo.items():
        before = gt.get(sid, [])
        after = json.loads(json.dumps(before))
        applied = []
        split_started: set[str] = set()
        whole = CONFIRMED in sample_tags.get(sid, [])  # a sample-level decision: all its fixes or none
        # removals last and by id, so indices never shift under another fix; the others best first,
        # so of two fixes that would box the same defect the more probable one wins
        for fx in sorted(sample_fixes, key=lambda f: (f["cvc_action"] == "remove", -float(f.get("confidence") or 0))):
            trial = json.loads(json.dumps(after))
            started = set(split_started)
            ok = decisions.apply_fix(trial, fx, started, new_id=store.new_id)
            if ok and decisions.duplicate_pairs(trial, dup_iou) > decisions.duplicate_pairs(after, dup_iou):
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid), "fix": fx.get("id"), "conflict": True,
                                   "why": f"the {fx['cvc_action']} fix would put a second {fx.get('cvc_class')} box on "
                                          f"a defect that already has one (a box there, or a more probable fix): "
                                          f"not applied, conflicting"})
                continue
            if ok:
                after[:] = trial
                split_started.clear()
                split_started.update(started)
                applied.append({k: fx.get(k) for k in ("id", "cvc_action", "cvc_type", "cvc_class",
                                                        "cvc_target", "cvc_others", "bounding_box", "cvc_reason")}
                               | {"tagged_at": tagged_at.get(sid)})
            elif whole:
                applied, after = [], before  # one of them cannot be applied: none of this sample's
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid),
                                   "why": f"its {fx['cvc_action']} fix no longer applies (boxes edited since scoring)"})
                break
            else:
                cs.skipped.append({"sample_id": sid, "filepath": paths.get(sid), "fix": fx.get("id"),
                                   "why": f"the {fx['cvc_action']} fix no longer applies (box edited since scoring)"})
        if applied:
            plans[sid] = {"tags": sample_tags.get(sid, []), "fixes": fixes[sid], "suspects": suspects.get(sid, []),
                          "before": before, "after": after, "applied": applied, "filepath": paths.get(sid)}
    return plans


def _change_entry(sid: str, plan: dict[str, Any], with_after: bool = False) -> dict[str, Any]:
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
    now = _dt.datetime.now(_dt.timezone.utc)
    cs = ChangeSet(change_id=now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6], dataset=name,
                   at=now.isoformat(timespec="seconds"))
    if dry_run:
        recovery.warn_unfinished(name)
        cs.changes = [_change_entry(sid, p) for sid, p in _plan(name, cs).items()]
        return cs
    with store.dataset_lock(name, "apply", user=_who(), wait_s=wait) as lock:
        recovery.recover(name, "apply")
        return _apply_locked(name, cs, lock, log_dir)


def _apply_write(sid: str, plan: dict[str, Any]) -> Any:
    expect = {FIX_FIELD: plan["fixes"], GT_FIELD: plan["before"]}
    if plan.get("suspects"):
        expect[SUSPECTS_FIELD] = plan["suspects"]
    return store.GuardedWrite(sid, expect_tags=plan["tags"], expect_detections=expect,
                              set_detections={GT_FIELD: plan["after"]},
                              add_label_tags={FIX_FIELD: ([f["id"] for f in plan["applied"]], [APPLIED])})


def _apply_locked(name: str, cs: ChangeSet, lock: Any, log_dir: str | Path | None) -> ChangeSet:
    plans = _plan(name, cs)
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
                body = {"changes": [_change_entry(sid, p, True) for sid, p in sent.items()]}
                if entry is None:  # the intent, with every before-image, is in the database before any write
                    entry = store.journal.begin(name, "apply", body, change_id=cs.change_id)
                else:
                    store.journal.set_payload(name, entry, body)
                pause_point("apply:journaled")
                done = set(store.guarded_write(name, [_apply_write(sid, p) for sid, p in todo.items()], attempted))
                written.update({sid: p for sid, p in todo.items() if sid in done})
                stale = [sid for sid in todo if sid not in done]
                if not stale:
                    break
                if round_ == _ROUNDS - 1:
                    paths = {sid: todo[sid]["filepath"] for sid in stale}
                    cs.skipped.extend({"sample_id": sid, "filepath": paths.get(sid),
                                       "why": "it kept changing while apply ran: run apply again"} for sid in stale)
                    break
                todo = _plan(name, cs, only=stale)
                if not todo:
                    break
            if not written:
                store.journal.finish(name, entry, store.journal.ROLLED_BACK)
                return cs
            cs.changes = [_change_entry(sid, p) for sid, p in written.items()]
            after = store.get_detections(name, GT_FIELD, list(written))
            for c in cs.changes:
                c["after"] = after[c["sample_id"]]
            lock.check()
            cs.log_path = _write_log(cs, log_dir)
            store.save_change_body(name, cs.change_id, json.loads(cs.log_path.read_text()))
            pause_point("apply:before-commit")
            # the commit: once the change set is listed, a recovery keeps it (undo takes it back)
            store.record_change(name, {"change_id": cs.change_id, "at": cs.at, "by": _who(), "log": str(cs.log_path),
                                       "samples": len(cs.changes), "fixes": cs.applied, "undone": False})
            store.journal.finish(name, entry)
    except BaseException:
        # all or nothing (Ctrl-C and SIGTERM included): a change that is not logged could not be
        # undone. Each sample sent is put back only if it still holds what apply wrote (one never
        # written is left). If this fails too (the database is gone), the journal stays pending
        # and the next writer rolls it back.
        with store.shielded():
            store.guarded_write(name, [store.GuardedWrite(
                sid, expect_detections={GT_FIELD: sent[sid]["after"]}, set_detections={GT_FIELD: sent[sid]["before"]},
                remove_label_tags={FIX_FIELD: ([f["id"] for f in sent[sid]["applied"]], [APPLIED])})
                for sid in dict.fromkeys(attempted)])
            store.forget_change(name, cs.change_id)
            store.forget_change_body(name, cs.change_id)
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
    with store.dataset_lock(name, "undo", user=_who(), wait_s=wait) as lock:
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

    def fix_ids(sid: str) -> list[str]:
        return [f["id"] for f in by_sid[sid]["fixes"]]

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


def _queue_view(name: str, queue: str, everything: bool = False) -> tuple[str, str]:
    """The saved view of a queue: its issues with p >= the run's queue threshold, or with
    ``everything`` all of its listed issues; and the field it is sorted by."""
    view = view_name(queue, everything)
    if view not in store.list_saved_views(name):
        raise InputError(f"dataset {name!r} has no view {view!r}: run 'cvcurate score {shell_arg(name)}' again")
    field = SCORE_FIELD if queue == "all" else queue_field(queue)
    return view, field


def open_app(name: str, queue: str, *, port: int, address: str, remote: bool, top: int | None = None,
             min_score: float | None = None, everything: bool = False) -> Any:
    """Check the port, the score run and the queue's saved view, then open the App on it, sorted by
    the queue's score: its ``top`` samples and / or those scoring at least ``min_score``.

    Returns the FiftyOne session (the caller waits on it and closes it)."""
    check_port(address, port)  # before anything slow: a bad port is a usage error
    check_scored(name)
    view, field = _queue_view(name, queue, everything or (min_score is not None))
    at_least = (field, min_score) if min_score is not None else None
    return store.launch_app(name, view, port=port, address=address, remote=remote, at_least=at_least, limit=top)


@dataclass
class QueueSize:
    queue: str
    samples: int  # samples with an issue of this queue at p >= the queue threshold
    shown: int  # after --min-score (which may go below the threshold) / --all
    estimated_precision: float | None  # mean p of its flagged issues: the share expected to be real errors
    expected: float | None = None  # expected number of real errors among its flagged issues (sum of p)
    flagged: int = 0  # its issues at p >= the threshold
    listed: int = 0  # all its listed issues (--all)
    expected_all: float | None = None  # sum of p over all its listed issues


def overview(name: str, min_score: float | None = None, everything: bool = False) -> list[QueueSize]:
    """Each queue's size (and what --min-score or --all makes of it), with the expected number of
    real errors in it (the sum of its issues' probabilities) and its estimated precision (their
    mean), from the score run's record."""
    check_scored(name)
    recovery.warn_unfinished(name)
    rec = store.read_record(name, "score", issues=False)
    run = rec.summary if rec is not None else {}
    per_queue = run.get("queues") or {}
    flagged_all = run.get("flagged")
    out = []
    for q in ("all", *QUEUES):
        view, field = _queue_view(name, q)
        n = store.count_view(name, view)
        if min_score is not None or everything:
            wide, _ = _queue_view(name, q, True)
            shown = store.count_view(name, wide, (field, min_score)) if min_score is not None else store.count_view(name, wide)
        else:
            shown = n
        info = per_queue.get(q) if q != "all" else None
        if q == "all" and per_queue:
            info = {"flagged": flagged_all, "listed": run.get("issues"),
                    "expected_flagged": sum(v.get("expected_flagged", 0.0) for v in per_queue.values()),
                    "expected": sum(v.get("expected", 0.0) for v in per_queue.values())}
            info["precision"] = info["expected_flagged"] / flagged_all if flagged_all else None
        if info and "expected_flagged" in info:
            out.append(QueueSize(q, n, shown, info.get("precision"), info["expected_flagged"], info.get("flagged") or 0,
                                 info.get("listed") or 0, info.get("expected")))
        else:  # a run of an older version, without probabilities
            out.append(QueueSize(q, n, shown, None))
    return out


def confirm_fixes(name: str, fix_ids: list[str], tag: str = CONFIRMED) -> int:
    """Tag the proposed fixes with these ids (as a reviewer does in the App); return how many.
    Atomic per sample (:func:`cvcurate.store.tag_labels`): a reviewer tagging the same sample at the
    same time loses nothing."""
    other = [t for t in (CONFIRMED, REJECTED) if t != tag]
    return store.tag_labels(name, FIX_FIELD, list(fix_ids), add=[tag], remove=other)


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
            old = before.get(f.get("cvc_target"))
            idx = order.index(f["cvc_target"]) if f.get("cvc_target") in before else None
            box = f"box {idx}" if idx is not None else "new box"
            new = {"label": f.get("cvc_class") if f["cvc_action"] != "remove" else None,
                   "bounding_box": f["bounding_box"]}
            if f["cvc_action"] == "relabel" and old is not None:
                new["bounding_box"] = old["bounding_box"]
            after = "removed" if f["cvc_action"] == "remove" else _box_text(new, wh)
            others = [o for o in str(f.get("cvc_others") or "").split(",") if o]
            extra = (" (and removes " + ", ".join(f"box {order.index(o)}" if o in before else "a box no longer there"
                                                  for o in others) + ")") if others else ""
            lines.append(f"{name} {box}: {f['cvc_action']} ({f['cvc_type']}) {_box_text(old, wh)} -> {after}{extra}")
    return lines


@dataclass
class DecideResult:
    confirmed: int  # issues recorded as confirmed
    rejected: int
    fixes_tagged: int  # proposed fixes that got the decision (what apply uses)
    without_fix: list[str]  # issues decided that propose no fix (their suspect box carries the decision)
    unknown: list[str]  # ids the last score run does not have


def read_decisions(path: str | Path) -> tuple[list[str], list[str]]:
    """Issue ids to confirm and to reject from a CSV with columns ``issue_id`` and ``decision``
    (``confirm``/``confirmed``/``yes`` or ``reject``/``rejected``/``no``; empty: undecided), as
    the score stage's issues.csv with a decision column added."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read decisions file {path}: {exc}") from None
    if not rows or "issue_id" not in rows[0] or "decision" not in rows[0]:
        raise InputError(f"decisions file {path} needs the columns issue_id and decision "
                         "(issues.csv of 'cvcurate score' with a decision column added)")
    confirm, reject = [], []
    for n, r in enumerate(rows, start=2):
        d = (r.get("decision") or "").strip().lower()
        iid = (r.get("issue_id") or "").strip()
        if not d:
            continue
        if d in ("confirm", "confirmed", "yes", "y", "true", "1"):
            confirm.append(iid)
        elif d in ("reject", "rejected", "no", "n", "false", "0"):
            reject.append(iid)
        else:
            raise InputError(f"{path} line {n}: decision {d!r} is neither confirm nor reject")
    return confirm, reject


def decide(name: str, *, confirm: Sequence[str] = (), reject: Sequence[str] = (), wait: float = 0.0) -> DecideResult:
    """Record reviewers' decisions on issues by id, headless: the same tags the App writes
    (``error:confirmed`` / ``error:rejected``) on the issue's suspect box (every listed issue has
    one) and on the fixes that change its box for the same issue type (what ``apply`` reads): the
    issue's own fix, and a merge fix that takes its box in. An id both confirmed and rejected, or
    two ids that decide one fix both ways, is an error and nothing is recorded. Ids the last score
    run does not have are reported (``unknown``); the others are recorded.

    Holds the dataset's lock (a running score or apply refuses it, or ``wait`` seconds are waited)
    and journals the tags first: a decide killed half way is finished by the next writer."""
    check_scored(name)
    both = sorted(set(confirm) & set(reject))
    if both:
        raise InputError(f"issue(s) both confirmed and rejected: {', '.join(both[:5])}")
    with store.dataset_lock(name, "decide", user=_who(), wait_s=wait):
        recovery.recover(name, "decide")
        return _decide_locked(name, list(dict.fromkeys(confirm)), list(dict.fromkeys(reject)))


def _decide_locked(name: str, confirm: list[str], reject: list[str]) -> DecideResult:
    fixes = store.get_detections(name, FIX_FIELD) if FIX_FIELD in store.field_names(name) else {}
    suspects = store.get_detections(name, SUSPECTS_FIELD) if SUSPECTS_FIELD in store.field_names(name) else {}
    sus_of: dict[str, list[str]] = {}
    fix_of: dict[str, list[str]] = {}
    for sid, lst in suspects.items():
        for d in lst:
            if d.get("cvc_issue"):
                sus_of.setdefault(d["cvc_issue"], []).append(d["id"])
                # the fixes that change this issue's box for its type: its own, and merges that take it in
                for f in fixes.get(sid, []):
                    if f.get("cvc_issue") == d["cvc_issue"] or (
                            d.get("cvc_target") and f.get("cvc_type") == d.get("cvc_type")
                            and d["cvc_target"] in decisions.fix_boxes(f)):
                        fix_of.setdefault(d["cvc_issue"], []).append(f["id"])
    for lst in fixes.values():  # a run of an older version: fixes name their issue, suspects may not
        for f in lst:
            if f.get("cvc_issue") and f["id"] not in fix_of.setdefault(f["cvc_issue"], []):
                fix_of[f["cvc_issue"]].append(f["id"])
    known = set(fix_of) | set(sus_of)
    unknown = sorted({i for i in (*confirm, *reject) if i not in known})
    confirm = [i for i in confirm if i in known]
    reject = [i for i in reject if i in known]
    yes_fixes = {f: i for i in confirm for f in fix_of.get(i, [])}
    no_fixes = {f: i for i in reject for f in fix_of.get(i, [])}
    clash = sorted(set(yes_fixes) & set(no_fixes))
    if clash:
        pairs = ", ".join(f"{yes_fixes[f]} (confirmed) and {no_fixes[f]} (rejected)" for f in clash[:3])
        raise InputError(f"{len(clash)} proposed fix(es) would be both confirmed and rejected: {pairs} decide the "
                         f"same fix; decide them alike. Nothing was recorded")
    ops = []
    for ids, tag in ((confirm, CONFIRMED), (reject, REJECTED)):
        other = [t for t in (CONFIRMED, REJECTED) if t != tag]
        f_ids = list(dict.fromkeys(f for i in ids for f in fix_of.get(i, [])))
        s_ids = [s for i in ids for s in sus_of.get(i, [])]
        if f_ids:
            ops.append([FIX_FIELD, f_ids, [tag], other])
        if s_ids:
            ops.append([SUSPECTS_FIELD, s_ids, [tag], other])
    tagged = 0
    if ops:
        entry = store.journal.begin(name, "decide", {"ops": ops})
        with interrupt_leaves(f"the decisions on dataset {name!r} may be partly recorded: the next cvcurate writer "
                              f"on it finishes recording them (its journal holds them)"):
            for n, (fld, ids, add, remove) in enumerate(ops):
                got = store.tag_labels(name, fld, ids, add=add, remove=remove)
                tagged += got if fld == FIX_FIELD else 0
                pause_point("decide:tagged")
            store.journal.finish(name, entry)
        kept(f"{len(confirm) + len(reject)} decision(s) recorded on dataset {name!r}")
    return DecideResult(len(set(confirm)), len(set(reject)), tagged,
                        sorted(i for i in {*confirm, *reject} if not fix_of.get(i)), unknown)
