"""Review: the queues in the FiftyOne App, their progress, and decisions taken headless
(``cvcurate decide``). Applying the confirmed fixes and taking them back is :mod:`.apply`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import decisions, store
from ..decisions import APPLIED, CONFIRMED, REJECTED
from ..errors import InputError, interrupt_leaves, kept, pause_point, shell_arg
from ..names import FIX_FIELD, SCORE_FIELD, SUSPECTS_FIELD, Attr, queue_field, view_name
from ..scoring import QUEUES
from . import recovery
from .apply import _decision, check_scored, who


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
            q = type_to_queue.get(d.get(Attr.TYPE))
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
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read decisions file {path}: {exc}") from None
    if "issue_id" not in columns or "decision" not in columns:
        raise InputError(f"decisions file {path} needs the columns issue_id and decision "
                         "(issues.csv of 'cvcurate score' with a decision column added)")
    if not rows:
        raise InputError(f"decisions file {path} has its columns but no rows: nothing to decide")
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
    with store.dataset_lock(name, "decide", user=who(), wait_s=wait):
        recovery.recover(name, "decide")
        return _decide_locked(name, list(dict.fromkeys(confirm)), list(dict.fromkeys(reject)))


def _decide_locked(name: str, confirm: list[str], reject: list[str]) -> DecideResult:
    fixes = store.get_detections(name, FIX_FIELD) if FIX_FIELD in store.field_names(name) else {}
    suspects = store.get_detections(name, SUSPECTS_FIELD) if SUSPECTS_FIELD in store.field_names(name) else {}
    sus_of: dict[str, list[str]] = {}
    fix_of: dict[str, list[str]] = {}
    for sid, lst in suspects.items():
        for d in lst:
            if d.get(Attr.ISSUE):
                sus_of.setdefault(d[Attr.ISSUE], []).append(d["id"])
                # the fixes that change this issue's box for its type: its own, and merges that take it in
                for f in fixes.get(sid, []):
                    if f.get(Attr.ISSUE) == d[Attr.ISSUE] or (
                            d.get(Attr.TARGET) and f.get(Attr.TYPE) == d.get(Attr.TYPE)
                            and d[Attr.TARGET] in decisions.fix_boxes(f)):
                        fix_of.setdefault(d[Attr.ISSUE], []).append(f["id"])
    for lst in fixes.values():  # a run of an older version: fixes name their issue, suspects may not
        for f in lst:
            if f.get(Attr.ISSUE) and f["id"] not in fix_of.setdefault(f[Attr.ISSUE], []):
                fix_of[f[Attr.ISSUE]].append(f["id"])
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
