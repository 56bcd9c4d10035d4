"""Unfinished writes: what the next writer does with a journal record a killed command left.

Every writer (apply, undo, score, decide, augment) holds the dataset's lock and calls
:func:`recover` before it reads anything; so a pending record it finds belongs to a command that
is gone (killed, its machine or database lost). Per kind of command:

* apply: the change set is committed when its entry is in the dataset's change list (written
  after every sample). Committed: the record is closed. Not committed: rolled back from the
  record's before-images, each sample only if it still holds what apply wrote (compare-and-set),
  and the ``fix:applied`` marks taken off; the reviewers' decisions stay.
* undo: committed when its change set is marked undone; otherwise the samples it restored get the
  change set's labels back (the undo is rolled back; undo again).
* decide: finished (its label tags are set again: the same operation twice is the same result).
* augment: rolled back: the samples it was adding are removed (its image files stay on disk, and
  the next run resumes from them).
* score: only a score finishes a score: its record holds every review decision the run's fields
  held before it began, and the next score carries them to its own fixes. Until then other writers
  refuse to run (their decisions would land on a half-written run) and read-only commands say so.

Each recovery says what it did in one line (:func:`cvcurate.errors.notice`).
"""

from __future__ import annotations

from typing import Any

from .. import store
from ..decisions import APPLIED, Decided
from ..errors import InputError, notice, shell_arg
from ..names import FIX_FIELD, GT_FIELD


def _a(op: str) -> str:
    return f"an {op}" if op[:1] in "aeiou" else f"a {op}"


def _who(entry: dict[str, Any]) -> str:
    return (f"{entry.get('op')} of {entry.get('started')} by {entry.get('user', '?')} on {entry.get('host', '?')}, "
            f"pid {entry.get('pid', '?')}")


def _live(name: str, entry: dict[str, Any]) -> bool:
    """Whether the record's command still runs: it holds the dataset's lock."""
    import socket

    from ..store.meta import _pid_alive

    held = store.lock_holder(name)
    if not held or held.get("pid") != entry.get("pid") or held.get("host") != entry.get("host"):
        return False
    return held.get("host") != socket.gethostname() or _pid_alive(held.get("pid"))


def unfinished(name: str) -> list[dict[str, Any]]:
    return store.journal.pending(name)


def warn_unfinished(name: str) -> list[str]:
    """For read-only commands: one line per unfinished write on ``name`` (a live one is said to
    be running), naming the command that finishes it. Returns the lines."""
    lines = []
    for e in unfinished(name):
        op = e.get("op")
        if op == "score" and not e.get("writing") and not _live(name, e):
            continue  # stopped before writing anything: nothing is unfinished
        if _live(name, e):
            lines.append(f"note: {_a(op)} of dataset {name!r} is running ({_who(e)}): what is read now may "
                         f"change when it finishes")
            continue
        if op == "predict":
            lines.append(f"warning: dataset {name!r}: {_partial_predictions(name, e)}")
            continue
        fixer = f"cvcurate score {shell_arg(name)}" if op == "score" else \
            f"any cvcurate writer on it (e.g. 'cvcurate apply {shell_arg(name)}')"
        what = ("its fields may be partly written, the review decisions it held are kept in its journal; "
                f"run '{fixer}' to finish it") if op == "score" else \
            f"it may be partly written; {fixer} {'finishes' if op == 'decide' else 'rolls back'} it"
        lines.append(f"warning: dataset {name!r} has an unfinished {_who(e)}: {what}")
    for line in lines:
        notice(line)
    return lines


def recover(name: str, doing: str) -> list[dict[str, Any]]:
    """Finish or roll back every unfinished write on ``name``; the caller holds the dataset's lock.

    Returns the unfinished score records when ``doing`` is "score" (the score carries their
    decisions and closes them); any other writer is refused while a score is unfinished."""
    scores = []
    for e in unfinished(name):
        op = e.get("op")
        if op == "score" and not e.get("writing"):  # stopped before its first field write: nothing to finish
            store.journal.finish(name, e, store.journal.ROLLED_BACK)
            notice(f"recovered: the {_who(e)} stopped before it wrote anything: nothing to finish")
            continue
        if op == "score":
            scores.append(e)
            continue
        _RECOVER[op](name, e)
    if scores and doing != "score":
        e = scores[-1]
        raise InputError(f"the score run of dataset {name!r} ({_who(e)}) did not finish: its fields may be partly "
                         f"written; run 'cvcurate score {shell_arg(name)}' first (the review decisions it held are "
                         f"kept in its journal and carried to the new run)")
    return scores


def score_decisions(name: str, entries: list[dict[str, Any]]) -> list[Decided]:
    """The review decisions the unfinished score runs held before they began."""
    out: list[Decided] = []
    for e in entries:
        body = store.journal.payload(name, e) or {}
        out += [Decided.from_record(d) for d in body.get("decided") or []]
    return out


def _recover_apply(name: str, e: dict[str, Any]) -> None:
    change_id = e.get("change_id")
    body = store.journal.payload(name, e) or {}
    record = body.get("record") or {}
    kept_change = next((c for c in store.get_changes(name) if c.get("change_id") == change_id), None)
    if kept_change is not None:
        if kept_change.get("convention") and not kept_change.get("undone"):  # committed: its convention too
            store.set_convention(name, kept_change["convention"], kept_change.get("convention_entry"))
        store.journal.finish(name, e)
        notice(f"recovered: the {_who(e)} had written its change set {change_id} before it stopped: kept")
        return
    changes = body.get("changes") or []
    done = store.guarded_write(name, [store.GuardedWrite(
        c["sample_id"], expect_detections={GT_FIELD: c["after"]}, set_detections={GT_FIELD: c["before"]},
        remove_label_tags={FIX_FIELD: ([f["id"] for f in c["fixes"] if f.get("id")], [APPLIED])}) for c in changes])
    store.forget_change_body(name, change_id)
    store.journal.finish(name, e, store.journal.ROLLED_BACK)
    again = (f"cvcurate conventions {shell_arg(name)} --adopt {shell_arg(record['convention'] + '=' + record.get('convention_entry', {}).get('style', ''))}"
             if record.get("convention") else f"cvcurate apply {shell_arg(name)}")
    notice(f"recovered: the {_who(e)} did not finish: rolled back, {len(done)} sample(s) restored; "
           f"run '{again}' again")


def _recover_undo(name: str, e: dict[str, Any]) -> None:
    change_id = e.get("change_id")
    entry = next((c for c in store.get_changes(name) if c.get("change_id") == change_id), None)
    if entry is not None and entry.get("undone"):
        store.journal.finish(name, e)
        notice(f"recovered: the {_who(e)} had undone {change_id} before it stopped: kept")
        return
    body = store.journal.payload(name, e) or {}
    restored = body.get("restored") or []  # [sample id, labels before the undo, labels it wrote, fix ids]
    done = store.guarded_write(name, [store.GuardedWrite(
        sid, expect_detections={GT_FIELD: wrote}, set_detections={GT_FIELD: was},
        add_label_tags={FIX_FIELD: (fixes, [APPLIED])}) for sid, was, wrote, fixes in restored])
    store.journal.finish(name, e, store.journal.ROLLED_BACK)
    notice(f"recovered: the {_who(e)} did not finish: rolled back, change {change_id} stays applied "
           f"({len(done)} sample(s) put back); run 'cvcurate apply {shell_arg(name)} --undo' again")


def _recover_decide(name: str, e: dict[str, Any]) -> None:
    body = store.journal.payload(name, e) or {}
    n = 0
    for fld, ids, add, remove in body.get("ops") or []:
        n += store.tag_labels(name, fld, ids, add=add, remove=remove)
    store.journal.finish(name, e)
    notice(f"recovered: the {_who(e)} did not finish: finished ({n} label(s) tagged)")


def _recover_augment(name: str, e: dict[str, Any]) -> None:
    body = store.journal.payload(name, e) or {}
    n = store.delete_samples_by_path(name, body.get("paths") or [])
    store.journal.finish(name, e, store.journal.ROLLED_BACK)
    notice(f"recovered: the {_who(e)} did not finish: rolled back, {n} sample(s) it had added removed (its "
           f"images stay in {body.get('out_dir')}; augment again to resume from them)")


def _partial_predictions(name: str, e: dict[str, Any]) -> str:
    return (f"the {_who(e)} stopped while writing field {e.get('field')!r}: its predictions are partly written "
            f"(some images have the new ones, some the old or none); run 'cvcurate predict {shell_arg(name)} "
            f"--pred-field {shell_arg(str(e.get('field')))}' (or the train --folds that made them) again first")


def _recover_predict(name: str, e: dict[str, Any]) -> None:
    """A predictions write killed half way cannot be taken back (the old predictions are not kept):
    every other writer is refused until the field is written again (:func:`supersede_predictions`)."""
    raise InputError(_partial_predictions(name, e))


def supersede_predictions(name: str, field: str) -> None:
    """Close the records of predictions writes of ``field`` killed half way: the caller, holding the
    dataset's lock, is about to write the whole field again."""
    for e in unfinished(name):
        if e.get("op") == "predict" and e.get("field") == field:
            store.journal.finish(name, e, store.journal.ROLLED_BACK)
            notice(f"recovered: the {_who(e)} stopped while writing field {field!r}: written again now")


_RECOVER = {"apply": _recover_apply, "undo": _recover_undo, "decide": _recover_decide, "augment": _recover_augment,
            "predict": _recover_predict}
