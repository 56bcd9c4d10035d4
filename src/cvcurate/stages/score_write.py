"""Writing a score run to the store: the rows of every sample (fields, queue scores, fixes and
suspect boxes), the run's saved views, and every review decision carried to the fix or suspect box
of the new run that means the same thing (journaled, compare-and-set per sample)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .. import decisions, store
from ..errors import interrupt_leaves, pause_point, shell_arg
from ..names import (FIX_ATTRS, Attr, FIX_FIELD, GT_FIELD, ISSUES_FIELD, OOF_FIELD, PRED_FIELD, PRED_FIELDS,
                     REASON_FIELD, SCORE_FIELD, SUSPECT_ATTRS, SUSPECTS_FIELD, TOP_P_FIELD,
                     queue_field, queue_reason_field, view_name)
from ..scoring import QUEUES, ScoreResult
from ..scoring.fixes import proposed_fixes
from ..scoring.summary import issue_id
from ..types import Fix

# what the score stage writes to the store: the names live in cvcurate.names (review, gate and
# export read them too), the declaration of the run here
# colours that stay apart on grey steel: ground truth green, predictions cyan, suspects magenta,
# fixes orange (saved with the dataset as its App colour scheme)
FIELD_COLORS = {GT_FIELD: "#00e676", PRED_FIELD: "#00b8d4", OOF_FIELD: "#00b8d4",
                SUSPECTS_FIELD: "#ff00ff", FIX_FIELD: "#ff9100"}


def score_run_spec(queues: Sequence[str], queue_min_p: float = 0.5) -> store.RunSpec:
    """The fields and saved views of a score run: the image score, its issues and fixes, one score
    per queue (the largest p of its issues), one suspect box per issue (the box it is about, the
    image for an image issue); nothing is written into the labels themselves (a score running
    beside an apply cannot touch them, and undo compares labels only); views
    cvc-all and cvc-<queue> (samples with an issue of p >= ``queue_min_p``: the run's
    ``flagged_images`` for cvc-all, whatever the image score says) and cvc-<queue>-all (every
    listed issue)."""
    return store.RunSpec(
        key="score",
        fields={SCORE_FIELD: "float", TOP_P_FIELD: "float", REASON_FIELD: "string", ISSUES_FIELD: "strings", FIX_FIELD: "detections",
                SUSPECTS_FIELD: "detections", **{queue_field(q): "float" for q in queues},
                **{queue_reason_field(q): "string" for q in queues}},
        detection_attrs={FIX_FIELD: FIX_ATTRS, SUSPECTS_FIELD: SUSPECT_ATTRS},
        views=[store.ViewSpec(view_name("all"), SCORE_FIELD, "positive", at_least=queue_min_p,
                              at_least_field=TOP_P_FIELD),
               store.ViewSpec(view_name("all", True), SCORE_FIELD, "positive")]
        + [store.ViewSpec(view_name(q), queue_field(q), at_least=queue_min_p,
                          set_fields={REASON_FIELD: queue_reason_field(q)}) for q in queues]
        + [store.ViewSpec(view_name(q, True), queue_field(q), set_fields={REASON_FIELD: queue_reason_field(q)})
           for q in queues])


@dataclass
class SampleScores:
    """What the score stage writes for one stored record."""

    sample_id: str
    score: float
    queue_scores: dict[str, float]  # queue -> best issue score in it
    issues: list[str]  # "type (score): reason", best first
    box_scores: list[float] = field(default_factory=list)  # per given box (not stored: the issues say it)
    box_issues: list[str] = field(default_factory=list)  # per given box, "" when none (not stored)
    fixes: list[Fix] = field(default_factory=list)  # proposed fixes, shown as boxes in the field cvc_fixes
    # one per issue: box, its index (None: a box that is missing, or the image), issue type, score,
    # reason, issue id, the id of the given box, nesting (k-th suspect on that box: drawn k steps out)
    suspects: list[tuple] = field(default_factory=list)
    reason: str | None = None  # the top issue, "type: reason"
    queue_reasons: dict[str, str] = field(default_factory=dict)  # queue -> its top issue, "type: reason"

    @property
    def top_p(self) -> float | None:
        """The highest p of its issues (None: no issue); every issue type belongs to a queue."""
        return max(self.queue_scores.values()) if self.queue_scores else None


def decided_in_store(name: str, sizes: dict[str, tuple[int, int]], only: Sequence[str] | None = None
                     ) -> tuple[list[decisions.Decided], dict[str, dict[str, list[list[str]]]], dict[str, dict]]:
    """The review decisions the score fields hold now (decided fixes and suspect boxes), the label
    tags of every sample's fixes and suspects as read (for the compare-and-set of the write), and
    the raw labels per sample ({field: detections}: what a sample not scored again keeps)."""
    have = set(store.field_names(name))
    raw = {f: (store.get_detections(name, f, only) if f in have else {}) for f in (FIX_FIELD, SUSPECTS_FIELD)}
    out: list[decisions.Decided] = []
    expect: dict[str, dict[str, list[list[str]]]] = {}
    labels: dict[str, dict] = {}
    for fld, kind in ((FIX_FIELD, "fix"), (SUSPECTS_FIELD, "suspect")):
        for sid, dets in raw[fld].items():
            if dets:
                expect.setdefault(sid, {})[fld] = [list(d.get("tags") or []) for d in dets]
                labels.setdefault(sid, {})[fld] = dets
            for d in dets:
                got = decisions.Decided.from_label(sid, kind, d, sizes.get(sid))
                if got is not None:
                    out.append(got)
    for sid in expect:  # a sample with one of the two fields has the other as read too (empty)
        expect[sid].setdefault(FIX_FIELD, [])
        if SUSPECTS_FIELD in have:
            expect[sid].setdefault(SUSPECTS_FIELD, [])
    return out, expect, labels


def _run_rows(rows: Sequence[SampleScores], queues: Sequence[str], classes: Sequence[str],
              sizes: dict[str, tuple[int, int]], shown: dict[str, list[list[float]]]) -> list[store.RunRow]:
    drawn = _fix_boxes(rows, sizes)

    def boxes(fixes: Sequence[Fix], sid: str) -> list[store.RunBox]:
        return [store.RunBox(np.array(at) if f.action in INSIDE else f.xyxy,
                             (f"#{f.box} " if f.box is not None else "+ ") + f"{f.action} {classes[f.class_id]}",
                             float(f.score),
                             {Attr.ACTION: f.action, Attr.TYPE: f.issue_type, Attr.CLASS: classes[f.class_id],
                              Attr.TARGET: f.target, Attr.REASON: f.reason,
                              Attr.OTHERS: ",".join(f.others) or None, Attr.GROUP: f.group, Attr.ISSUE: f.issue},
                             tags=list(f.tags)) for f, at in zip(fixes, drawn[sid])]

    def suspects(r: SampleScores) -> list[store.RunBox]:
        out = []
        for s, at in zip(r.suspects, shown[r.sample_id]):
            b, j, t, sc, why, iid, target, nest = s[:8]
            tags = list(s[8]) if len(s) > 8 else []
            label = f"#{j} {t}" if j is not None else f"+ {t}" if t == "overlooked" else f"image: {t}"
            out.append(store.RunBox(np.array(at), label, float(sc),
                                    {Attr.TYPE: t, Attr.REASON: why, Attr.ISSUE: iid, Attr.TARGET: target},
                                    tags=tags))
        return out

    return [store.RunRow(
        r.sample_id,
        {SCORE_FIELD: r.score, TOP_P_FIELD: r.top_p, REASON_FIELD: r.reason, ISSUES_FIELD: r.issues, FIX_FIELD: boxes(r.fixes, r.sample_id),
         SUSPECTS_FIELD: suspects(r),
         **{queue_field(q): r.queue_scores.get(q) for q in queues},
         **{queue_reason_field(q): r.queue_reasons.get(q) for q in queues}}) for r in rows]


def _display(b: np.ndarray, grow: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """For display, boxes ``b`` (n, 4 pixels) grown (or shrunk) by 5 % of their image's side (at
    least 3 px) ``grow`` times each, so that a suspect drawn around its ground-truth box, a second
    suspect around the first, or a relabel / remove fix drawn inside it, and their labels stay
    visible instead of hiding under the same outline; clipped to the image (``wh``: (n, 2), 0 where
    unknown); a box shrunk to nothing stays itself."""
    pad = np.maximum(3.0, 0.05 * wh.max(axis=1)) * grow
    raw = b + pad[:, None] * np.array([-1.0, -1.0, 1.0, 1.0])
    sized = (wh[:, 0] > 0) & (wh[:, 1] > 0)
    out = np.where(sized[:, None], np.clip(raw, 0.0, np.concatenate([wh, wh], axis=1)), raw)
    empty = (grow < 0) & ((raw[:, 2] <= raw[:, 0]) | (raw[:, 3] <= raw[:, 1]))  # checked before clipping
    out[empty] = b[empty]
    return out


def _sizes_of(ids: Sequence[str], sizes: dict[str, tuple[int, int]]) -> np.ndarray:
    return np.array([[w or 0, h or 0] for w, h in ((sizes.get(i) or (0, 0)) for i in ids)], float).reshape(-1, 2)


def _suspect_boxes(rows: Sequence[SampleScores], sizes: dict[str, tuple[int, int]]) -> dict[str, list[list[float]]]:
    """Where every row's suspects are drawn (per sample, in the order of its suspects): around its
    box (the k-th on a box k steps further out), or a frame inside the image's border for an image
    issue (:func:`_display`, all suspects at once: 27,000 suspects in ~0.05 s)."""
    flat = [(r.sample_id, s[0], s[1] is not None or s[6] is None and s[2] == "overlooked", s[7])
            for r in rows for s in r.suspects]
    if not flat:
        return {r.sample_id: [] for r in rows}
    b = np.array([np.asarray(f[1], float).reshape(4) for f in flat])
    grow = np.array([(1 + f[3]) if f[2] else -(1 + f[3]) for f in flat], float)
    return _per_row(rows, _display(b, grow, _sizes_of([f[0] for f in flat], sizes)), lambda r: len(r.suspects))


def _per_row(rows: Sequence[SampleScores], out: np.ndarray, count) -> dict[str, list[list[float]]]:  # type: ignore[no-untyped-def]
    """The rows of ``out`` given back to each row's sample, ``count(row)`` of them, in order."""
    shown, k = {}, 0
    for r in rows:
        n = count(r)
        shown[r.sample_id] = out[k:k + n].tolist()
        k += n
    return shown


INSIDE = ("relabel", "remove")  # fixes drawn inside the box they change (its suspect is drawn around it)


def _fix_boxes(rows: Sequence[SampleScores], sizes: dict[str, tuple[int, int]]) -> dict[str, list[list[float]]]:
    """Where every row's fixes are drawn (per sample, in order): a relabel or remove inside the box
    it changes (:func:`_display` once, shrunk one step), any other fix at its proposed box."""
    flat = [(r.sample_id, f) for r in rows for f in r.fixes]
    if not flat:
        return {r.sample_id: [] for r in rows}
    b = np.array([np.asarray(f.xyxy, float).reshape(4) for _, f in flat])
    inside = np.array([f.action in INSIDE for _, f in flat])
    out = b.copy()
    if inside.any():
        out[inside] = _display(b[inside], np.full(int(inside.sum()), -1.0),
                               _sizes_of([sid for (sid, _), i in zip(flat, inside) if i], sizes))
    return _per_row(rows, out, lambda r: len(r.fixes))


def _candidates(rows: Sequence[SampleScores], classes: Sequence[str],
                shown: dict[str, list[list[float]]]) -> dict[str, list]:
    """The new run's labels a decision may be carried to, per sample (each knows where it goes);
    ``shown``: where the suspects are drawn (:func:`_suspect_boxes`)."""
    out: dict[str, list] = {}
    for r in rows:
        lst = out.setdefault(r.sample_id, [])
        for f in r.fixes:
            c = decisions.Candidate("fix", f.issue_type, f.action, classes[f.class_id], f.target or None,
                                    np.asarray(f.xyxy, float).tolist(), list(f.tags))
            c.owner = f  # type: ignore[attr-defined]
            lst.append(c)
        for k, s in enumerate(r.suspects):
            t, target = s[2], s[6]
            c = decisions.Candidate("suspect", t, None, None, target, list(shown[r.sample_id][k]),
                                    list(s[8]) if len(s) > 8 else [])
            c.owner = (r, k)  # type: ignore[attr-defined]
            lst.append(c)
    return out


def _give_tags(cands: dict[str, list]) -> None:
    for lst in cands.values():
        for c in lst:
            if c.kind == "fix":
                c.owner.tags = list(c.tags)
            else:
                r, k = c.owner
                r.suspects[k] = tuple(r.suspects[k][:8]) + (list(c.tags),)


def _kept_row(sid: str, labels: dict, queues: Sequence[str]) -> store.RunRow:
    """A sample this run did not score (``--only-out-of-sample``) that holds decided labels: it
    keeps them (and the rest of its fixes and suspects) as they are, in no queue."""
    def back(d: dict, wh: tuple[int, int]) -> store.RunBox:
        xyxy = store.rel_xywh_to_xyxy(np.asarray([d["bounding_box"]], float), *wh)[0]
        attrs = {k: v for k, v in d.items() if k.startswith("cvc_")}
        return store.RunBox(xyxy, d.get("label"), float(d.get("confidence") or 0.0), attrs, list(d.get("tags") or []))

    wh = labels["_wh"]
    return store.RunRow(sid, {SCORE_FIELD: None, TOP_P_FIELD: None, REASON_FIELD: None, ISSUES_FIELD: None,
                              FIX_FIELD: [back(d, wh) for d in labels.get(FIX_FIELD, [])],
                              SUSPECTS_FIELD: [back(d, wh) for d in labels.get(SUSPECTS_FIELD, [])],
                              **{queue_field(q): None for q in queues},
                              **{queue_reason_field(q): None for q in queues}})


_CAS_ROUNDS = 3


def write_score_run(name: str, rows: Sequence[SampleScores], queues: Sequence[str], classes: Sequence[str],
                    run: dict, pred_filter: tuple[str, float] | None = None, queue_min_p: float = 0.5,
                    earlier_entries: Sequence[dict] = (), keep_unscored: bool = False,
                    journal: bool = False) -> None:
    """Write score rows through the store's generic run writer (fields, views), every review
    decision carried to the fix or suspect box of the new run that means the same thing.

    Decisions come from the fields as they are now and from ``earlier`` (an interrupted score's
    journal). Each sample is written only if its fixes' and suspects' tags are still as read
    (compare-and-set): a sample tagged in the App meanwhile is read, carried and written again.
    ``keep_unscored``: samples without a row keep their fixes and suspects (and so their
    decisions), in no queue. ``journal``: keep every decision in a journal record (begun before
    the first write, closed once the run is registered) and close ``earlier_entries`` with it: a
    score killed at any point loses no decision, the next score carries them."""
    from .recovery import score_decisions

    earlier = score_decisions(name, list(earlier_entries))
    info = store.sample_info(name, ["metadata.width", "metadata.height"])
    sizes = {sid: (w, h) for sid, w, h in zip(info["id"], info["metadata.width"], info["metadata.height"])}
    now_decided, expect, old_labels = decided_in_store(name, sizes)
    decided = decisions.merge_decided(now_decided, earlier)
    entry = store.journal.begin(name, "score", {"decided": [d.record() for d in decided]}) if journal else None
    try:
        _write_score_run(name, rows, queues, classes, run, pred_filter, queue_min_p, earlier, keep_unscored,
                         sizes, now_decided, decided, expect, old_labels, entry)
    except BaseException:
        if entry is not None and not entry.get("writing"):  # nothing written yet: nothing to finish
            with store.shielded():
                store.journal.finish(name, entry, store.journal.ROLLED_BACK)
        raise
    if entry is not None:
        for e in earlier_entries:
            store.journal.finish(name, e, store.journal.DONE, superseded_by=entry["_id"])
        store.journal.finish(name, entry)


def _write_score_run(name, rows, queues, classes, run, pred_filter, queue_min_p, earlier, keep_unscored,  # type: ignore[no-untyped-def]
                     sizes, now_decided, decided, expect, old_labels, entry) -> None:
    pause_point("score:journaled")
    scored = {r.sample_id for r in rows}
    kept_rows = []
    if keep_unscored:
        for sid, lab in old_labels.items():
            if sid not in scored and sid in sizes:
                kept_rows.append(_kept_row(sid, {**lab, "_wh": sizes[sid]}, queues))
    kept_ids = {r.sample_id for r in kept_rows}
    shown = _suspect_boxes(rows, sizes)
    cands = _candidates(rows, classes, shown)
    result = decisions.carry(cands, [d for d in decided if d.sample_id not in kept_ids])
    _give_tags(cands)
    run_rows = _run_rows(rows, queues, classes, sizes, shown) + kept_rows
    for rr in run_rows:
        rr.expect_tags = expect.get(rr.sample_id) or None
    by_id = {r.sample_id: r for r in rows}
    run["decisions"] = {"carried": result.carried, "no_longer_apply": len(result.not_carried),
                        "applied_not_proposed": result.applied_not_proposed,
                        "kept_unscored": sum(d.sample_id in kept_ids for d in now_decided)}
    spec = score_run_spec(queues, queue_min_p)
    redo = f"run 'cvcurate score {shell_arg(name)}' again (the review decisions are kept in its journal)"
    if entry is not None:  # from here on the fields may be partly written: only a score finishes it
        store.journal.update(name, entry, writing=True)
    missed = store.write_run(name, spec, run_rows, run, view_filter=pred_filter, redo=redo, register=False)
    with interrupt_leaves(f"the score fields of dataset {name!r} may be partly written: {redo}"):
        for _ in range(_CAS_ROUNDS):  # samples a reviewer tagged while this ran: read, carry, write again
            if not missed:
                break
            fresh, fresh_expect, _ = decided_in_store(name, sizes, missed)
            redo_rows = [by_id[sid] for sid in missed if sid in by_id]
            for r in redo_rows:
                for f in r.fixes:
                    f.tags = []
                r.suspects = [tuple(s[:8]) for s in r.suspects]
            shown2 = _suspect_boxes(redo_rows, sizes)
            c2 = _candidates(redo_rows, classes, shown2)
            decisions.carry(c2, decisions.merge_decided(fresh, [d for d in earlier if d.sample_id in set(missed)]))
            _give_tags(c2)
            rr2 = _run_rows(redo_rows, queues, classes, sizes, shown2)
            for rr in rr2:
                rr.expect_tags = fresh_expect.get(rr.sample_id) or None
            missed = store.rewrite_rows(name, spec, rr2)
        if missed:
            run.setdefault("decisions", {})["kept_changing"] = len(missed)
        store.register_run(name, spec, run, view_filter=pred_filter)
    if result.not_carried:  # after the run is written: a lost database before it leaves the store as it was
        store.append_history(name, {
            "action": "score: decisions that no longer apply", "at": run.get("at"),
            "fixes": [d.record() for d in result.not_carried]})
    store.configure_app(name, field_colors=FIELD_COLORS, sidebar_first=[REASON_FIELD, SCORE_FIELD, ISSUES_FIELD],
                        active=[GT_FIELD, *(f for f in PRED_FIELDS if f == (pred_filter or ("",))[0]),
                                SUSPECTS_FIELD, FIX_FIELD, REASON_FIELD])


def _sample_rows(result: ScoreResult) -> list[SampleScores]:
    min_conf = result.thresholds.low if result.thresholds is not None else 0.0
    by_image: dict[str, list] = {}
    for iss in result.issues:
        by_image.setdefault(iss.filepath, []).append(iss)
    type_to_queue = {t: q for q, types in QUEUES.items() for t in types}
    rows = []
    for i, rec in enumerate(result.labels.records):
        issues = sorted(by_image.get(rec.filepath, []), key=lambda x: -x.score)
        for n, iss in enumerate(issues):
            iss.data["id"] = issue_id(rec.sample_id, iss, n)
        queue_scores: dict[str, float] = {}
        queue_reasons: dict[str, str] = {}
        for iss in issues:  # best first: the first of a queue is its top issue
            q = type_to_queue.get(iss.type)
            if q is not None:
                queue_scores[q] = max(queue_scores.get(q, 0.0), iss.score)
                queue_reasons.setdefault(q, f"{iss.type}: {iss.reason}")
        ids = [str(v) for v in rec.gt.data.get("id", [])]
        sus, nest = [], {}
        for iss in issues:  # one suspect box per issue, so that every issue can be decided
            if iss.box is not None and iss.box < len(rec.gt):
                k = nest[iss.box] = nest.get(iss.box, -1) + 1  # the k-th on this box: drawn k steps further out
                sus.append((rec.gt.xyxy[iss.box], iss.box, iss.type, iss.score, iss.reason, iss.data["id"],
                            ids[iss.box] if iss.box < len(ids) else None, k))
            elif iss.type == "overlooked" and "pred_box" in iss.data:  # where the missing box would go
                sus.append((np.asarray(iss.data["pred_box"], float), None, iss.type, iss.score, iss.reason,
                            iss.data["id"], None, 0))
            else:  # an issue of the whole image: a frame inside its border
                k = nest["image"] = nest.get("image", -1) + 1
                sus.append((np.array([0.0, 0.0, rec.width, rec.height]), None, iss.type, iss.score, iss.reason,
                            iss.data["id"], None, k))
        fixes = proposed_fixes(rec, issues, min_conf)
        for f in fixes:
            f.box = ids.index(f.target) if f.target in ids else None
        rows.append(SampleScores(
            sample_id=rec.sample_id, score=float(result.image_score[i]), queue_scores=queue_scores,
            issues=[f"{x.type} ({x.score:.2f}): {x.reason}" + (f" (no fix: {x.data['no_fix']})" if x.data.get("no_fix")
                                                               else "") for x in issues],
            fixes=fixes, suspects=sus,
            reason=f"{issues[0].type}: {issues[0].reason}" if issues else None, queue_reasons=queue_reasons))
    return rows
