"""The score stage end to end: read the store, score, write fields, saved views, JSON and CSV."""

from __future__ import annotations

import csv
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import decisions, store
from ..config import load_config, to_dict
from ..errors import InputError, interrupt_leaves, pause_point, shell_arg
from ..names import (FIX_ATTRS, FIX_FIELD, GT_FIELD, ISSUES_FIELD, OOF_FIELD, PRED_FIELD, PRED_FIELDS,  # noqa: F401
                     REASON_FIELD, SCORE_FIELD, SUSPECT_ATTRS, SUSPECTS_FIELD, TOP_P_FIELD, default_pred_field,
                     queue_field, queue_reason_field, view_name)
from ..types import Annotations, Fix, ImageRecord, Issue, LabelSet
from ..scoring import LABEL_ERROR_TYPES, QUEUES, ScoreConfig, ScoreResult, score
from ..scoring.batch import box_iou
from ..scoring.images import image_features


@dataclass
class ScoreRun:
    result: ScoreResult
    json_path: Path
    csv_path: Path
    images_csv_path: Path
    notes: list[str]
    summary: dict = field(default_factory=dict)  # the run's one count (:func:`run_summary`), as stored


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


def _shown(xyxy: np.ndarray, wh: tuple[int, int] | None, grow: float) -> np.ndarray:
    """For display: a box grown (or shrunk) by 5 % of the image side (at least 3 px) ``grow``
    times, so that a suspect drawn around its ground-truth box, a second suspect around the first,
    or a relabel / remove fix drawn inside it, and their labels stay visible instead of hiding
    under the same outline."""
    w, h = wh or (0, 0)
    pad = max(3.0, 0.05 * max(w or 0, h or 0)) * grow
    x1, y1, x2, y2 = map(float, xyxy.tolist() if isinstance(xyxy, np.ndarray) else xyxy)  # plain floats: called per box
    b = [x1 - pad, y1 - pad, x2 + pad, y2 + pad]
    if grow < 0 and (b[2] <= b[0] or b[3] <= b[1]):
        return np.array([x1, y1, x2, y2])
    if w and h:
        b = [min(max(v, 0.0), float(side)) for v, side in zip(b, (w, h, w, h))]
    return np.array(b)


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
            w, h = sizes.get(sid, (0, 0)) or (0, 0)
            for d in dets:
                tags = [t for t in (d.get("tags") or []) if t in decisions.DECISION_TAGS]
                if not tags:
                    continue
                xyxy = None
                if w and h and d.get("bounding_box"):
                    xyxy = store.rel_xywh_to_xyxy(np.asarray([d["bounding_box"]], float), w, h)[0].tolist()
                out.append(decisions.Decided(sid, kind, tags, d.get("cvc_type"), d.get("cvc_action"),
                                             d.get("cvc_class"), d.get("cvc_target"), d.get("cvc_others"),
                                             d.get("cvc_issue"), d.get("cvc_reason"), xyxy))
    for sid in expect:  # a sample with one of the two fields has the other as read too (empty)
        expect[sid].setdefault(FIX_FIELD, [])
        if SUSPECTS_FIELD in have:
            expect[sid].setdefault(SUSPECTS_FIELD, [])
    return out, expect, labels


def _run_rows(rows: Sequence[SampleScores], queues: Sequence[str], classes: Sequence[str],
              sizes: dict[str, tuple[int, int]], shown: dict[str, list[list[float]]]) -> list[store.RunRow]:
    def boxes(fixes: Sequence[Fix], sid: str) -> list[store.RunBox]:
        return [store.RunBox(_shown(f.xyxy, sizes.get(sid), -1) if f.action in ("relabel", "remove") else f.xyxy,
                             (f"#{f.box} " if f.box is not None else "+ ") + f"{f.action} {classes[f.class_id]}",
                             float(f.score),
                             {"cvc_action": f.action, "cvc_type": f.issue_type, "cvc_class": classes[f.class_id],
                              "cvc_target": f.target, "cvc_reason": f.reason,
                              "cvc_others": ",".join(f.others) or None, "cvc_group": f.group, "cvc_issue": f.issue},
                             tags=list(f.tags)) for f in fixes]

    def suspects(r: SampleScores) -> list[store.RunBox]:
        out = []
        for s, at in zip(r.suspects, shown[r.sample_id]):
            b, j, t, sc, why, iid, target, nest = s[:8]
            tags = list(s[8]) if len(s) > 8 else []
            label = f"#{j} {t}" if j is not None else f"+ {t}" if t == "overlooked" else f"image: {t}"
            out.append(store.RunBox(np.array(at), label, float(sc),
                                    {"cvc_type": t, "cvc_reason": why, "cvc_issue": iid, "cvc_target": target},
                                    tags=tags))
        return out

    return [store.RunRow(
        r.sample_id,
        {SCORE_FIELD: r.score, TOP_P_FIELD: r.top_p, REASON_FIELD: r.reason, ISSUES_FIELD: r.issues, FIX_FIELD: boxes(r.fixes, r.sample_id),
         SUSPECTS_FIELD: suspects(r),
         **{queue_field(q): r.queue_scores.get(q) for q in queues},
         **{queue_reason_field(q): r.queue_reasons.get(q) for q in queues}}) for r in rows]


def _suspect_boxes(rows: Sequence[SampleScores], sizes: dict[str, tuple[int, int]]) -> dict[str, list[list[float]]]:
    """Where every row's suspects are drawn (per sample, in the order of its suspects): around its
    box (the k-th on a box k steps further out), or a frame inside the image's border for an image
    issue. :func:`_shown` for all suspects at once (27,000 suspects: 0.9 s one by one)."""
    flat = [(s[0], s[1] is not None or s[6] is None and s[2] == "overlooked", s[7], sizes.get(r.sample_id) or (0, 0))
            for r in rows for s in r.suspects]
    if not flat:
        return {r.sample_id: [] for r in rows}
    b = np.array([np.asarray(f[0], float).reshape(4) for f in flat])
    grow = np.array([(1 + f[2]) if f[1] else -(1 + f[2]) for f in flat], float)
    wh = np.array([[w or 0, h or 0] for w, h in (f[3] for f in flat)], float)
    pad = np.maximum(3.0, 0.05 * wh.max(axis=1)) * grow
    out = b + pad[:, None] * np.array([-1.0, -1.0, 1.0, 1.0])
    sized = (wh[:, 0] > 0) & (wh[:, 1] > 0)
    lim = np.concatenate([wh, wh], axis=1)
    out = np.where(sized[:, None], np.clip(out, 0.0, lim), out)
    # a frame shrunk to nothing: the box itself (checked before clipping, as _shown does)
    raw = b + pad[:, None] * np.array([-1.0, -1.0, 1.0, 1.0])
    empty = (grow < 0) & ((raw[:, 2] <= raw[:, 0]) | (raw[:, 3] <= raw[:, 1]))
    out[empty] = b[empty]
    shown, k = {}, 0
    for r in rows:
        n = len(r.suspects)
        shown[r.sample_id] = out[k:k + n].tolist()
        k += n
    return shown


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


def load_score_config(path: str | Path | None = None) -> ScoreConfig:
    return load_config(ScoreConfig, path, default_name="score.yaml")


def run_score(name: str, *, pred_field: str | None = None, config: str | Path | None = None,
              pixels: bool = True, out_dir: str | Path | None = None, progress: bool = False,
              only_out_of_sample: bool = False, wait: float = 0.0) -> ScoreRun:
    """Score dataset ``name``; predictions from ``pred_field`` when given (or found).
    ``only_out_of_sample``: score (and queue) only the images the predictions' model did not train
    on; the other images keep their fixes and decisions, in no queue.

    Holds the dataset's lock for the whole run (a decide, apply or second score is refused, or
    waits ``wait`` seconds), finishes what a killed writer left (:mod:`.recovery`; an interrupted
    score's decisions are carried to this run), and journals every review decision before it
    writes."""
    from . import recovery

    cfg = load_score_config(config)  # a bad config is one line before any wait for the lock
    store.load(name)
    with store.dataset_lock(name, "score", user=store.journal.who(), wait_s=wait):
        earlier = recovery.recover(name, "score")
        return _run_score(name, pred_field=pred_field, config=config, pixels=pixels, out_dir=out_dir,
                          progress=progress, only_out_of_sample=only_out_of_sample, earlier=earlier)


def _run_score(name: str, *, pred_field: str | None, config: str | Path | None, pixels: bool,
               out_dir: str | Path | None, progress: bool, only_out_of_sample: bool, earlier: list) -> ScoreRun:
    cfg = load_score_config(config)
    schema = store.field_names(name)
    notes: list[str] = []
    if pred_field is not None and pred_field not in schema:
        found = [f for f in PRED_FIELDS if f in schema]
        raise InputError(f"dataset {name!r} has no field {pred_field!r}"
                         + (f" (prediction fields: {', '.join(found)})" if found else
                            ": run 'cvcurate predict' or 'cvcurate train --folds K' first"))
    if pred_field is None:
        pred_field = default_pred_field(schema)
        if pred_field is None:
            notes.append("no predictions in the dataset: model-free checks only (no overlooked, swap, "
                         "badloc); run 'cvcurate train NAME --folds 5' or 'cvcurate predict NAME' for those")
        else:
            notes.append(f"predictions from field {pred_field!r}")
    in_sample = None
    made = [h for h in store.get_history(name) if h.get("action") == "predict" and h.get("pred_field") == pred_field] \
        if pred_field is not None else []
    if only_out_of_sample:
        if pred_field is None:
            raise InputError("--only-out-of-sample needs predictions: run 'cvcurate predict' first")
        if not made or made[-1].get("in_sample_images") is None:
            raise InputError(f"cannot tell which images the model behind {pred_field!r} trained on (its checkpoint "
                             "does not say, or the predictions came from a file): --only-out-of-sample cannot be used")
    elif pred_field is not None:
        if made and made[-1].get("in_sample_images"):
            from .predict import in_sample_warning

            in_sample = made[-1]["in_sample_images"]
            notes.append(in_sample_warning(made[-1]["model"], in_sample, made[-1]["images"], name))
    labels = store.read(name, pred_field=pred_field)
    if only_out_of_sample:
        from ..detector.checkpoint import load_checkpoint
        from ..detector.data import image_digests

        seen = load_checkpoint(made[-1]["model"], classes=labels.classes).train_digests() or set()
        keep = [r for r, d in zip(labels.records, image_digests([r.filepath for r in labels.records])) if d not in seen]
        notes.append(f"--only-out-of-sample: {len(keep)} of {len(labels.records)} images scored (the model behind "
                     f"{pred_field!r} trained on the other {len(labels.records) - len(keep)}); queues hold only these")
        if not keep:
            raise InputError(f"the model behind {pred_field!r} trained on every image of {name!r}: nothing is out of "
                             "sample; use out-of-fold predictions (cvcurate train NAME --folds 5)")
        labels = LabelSet(labels.classes, keep)
        in_sample = 0
    mark_augmented(name, labels)
    preds = None
    if pred_field is not None:
        preds = [r.pred if r.pred is not None else Annotations.empty(with_confidence=True) for r in labels.records]
        for p in preds:
            if p.confidence is not None and np.isnan(p.confidence).any():
                raise InputError(f"field {pred_field!r} has boxes without confidence: it cannot be used "
                                 "as predictions")
        if sum(len(p) for p in preds) == 0:
            raise InputError(f"field {pred_field!r} holds no predicted boxes")
    feats = image_features([r.filepath for r in labels.records], cfg.images, progress=progress) if pixels else None
    if not pixels:
        notes.append("pixel checks skipped (--no-pixels): no blur, exposure or near-duplicate checks")
    result = score(labels, predictions=preds, features=feats, cfg=cfg)
    if result.thresholds is not None:
        t = result.thresholds
        notes.append(f"confidence thresholds from the data: high {t.high:.3f}, low {t.low:.3f} ({t.how})")

    if result.calibration is not None:
        cal = result.calibration
        how = sorted({c.how for c in cal.curves.values()})
        notes.append(f"probabilities calibrated on this data in {cal.seconds:.1f} s ({cal.images} images with injected "
                     f"errors; held-out calibration error {cal.ece.get('all', float('nan')):.3f}; curves: "
                     f"{', '.join(how)})")
        notes += [f"calibration: {n}" for n in cal.notes]
        notes += [f"style: {text.format(cls=labels.classes[c])}" for c, text in cal.style_notes]
    else:
        notes.append("no predictions: the probabilities of the model-free checks are shipped priors, not "
                     "calibrated on this data")
    rows = _sample_rows(result)
    run = {"at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "pred_field": pred_field,
           "pixels": pixels, "config": to_dict(cfg), "in_sample_images": in_sample,
           "only_out_of_sample": only_out_of_sample, **(summary := run_summary(result))}
    pred_filter = (pred_field, result.thresholds.low) if pred_field and result.thresholds else None
    out = Path(out_dir) if out_dir is not None else Path(f"{name}_scores")
    run.update(store.put_record(name, "score", result.issues))  # the typed record's issues, before the run points to them
    write_score_run(name, rows, list(QUEUES), labels.classes, run, pred_filter=pred_filter,
                    queue_min_p=cfg.calibration.queue_min_p, earlier_entries=earlier,
                    keep_unscored=only_out_of_sample, journal=True)
    store.drop_old_records(name, "score")
    dec = run.get("decisions") or {}
    if dec.get("carried") or dec.get("no_longer_apply") or dec.get("applied_not_proposed") or dec.get("kept_unscored"):
        notes.append(f"review decisions: {dec['carried']} carried over to the same fix or issue of this run; "
                     f"{dec['no_longer_apply']} no longer apply (this run proposes no such fix or issue; kept in the "
                     f"dataset's history); {dec['applied_not_proposed']} applied fix(es) are in the labels now"
                     + (f"; {dec['kept_unscored']} kept on images this run did not score" if dec.get("kept_unscored")
                        else ""))
    if dec.get("kept_changing"):
        notes.append(f"warning: {dec['kept_changing']} sample(s) kept being tagged in the App while score wrote: "
                     f"they keep the previous run's fixes and decisions; score again")
    json_path, csv_path, images_csv = write_outputs(result, out, name, notes, summary)
    return ScoreRun(result=result, json_path=json_path, csv_path=csv_path, images_csv_path=images_csv, notes=notes,
                    summary=summary)


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


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with each of ``b`` (N, 4)."""
    return box_iou(np.asarray(a, dtype=np.float64).reshape(1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4))[0]


MATCH_IOU = 0.5  # a prediction overlapping a given box of its class this much already stands for it


def _free_predictions(rec: ImageRecord, cls: int, min_conf: float, except_box: int | None) -> np.ndarray:
    """Indices of the record's predictions of class ``cls`` (confidence >= ``min_conf``) that do
    not already stand for another given box of that class: a move or an add must never take the
    prediction that matches a neighbour (it would leave two boxes on one defect and none on the
    other)."""
    p = rec.pred
    if p is None or not len(p):
        return np.zeros(0, np.int64)
    conf = p.confidence if p.confidence is not None else np.ones(len(p))
    cand = np.flatnonzero((p.class_id == cls) & (np.nan_to_num(conf, nan=1.0) >= min_conf))
    others = [j for j in range(len(rec.gt)) if j != except_box and int(rec.gt.class_id[j]) == cls]
    if not others or not len(cand):
        return cand
    taken = np.array([(_iou(p.xyxy[q], rec.gt.xyxy[others]) >= MATCH_IOU).any() for q in cand])
    return cand[~taken]


def _split_pieces(rec: ImageRecord, j: int, min_conf: float) -> list[np.ndarray]:
    """The model's boxes of box ``j``'s class that lie (90 % of their area) inside it."""
    p = rec.pred
    if p is None or not len(p):
        return []
    box, cls = rec.gt.xyxy[j], int(rec.gt.class_id[j])
    conf = p.confidence if p.confidence is not None else np.ones(len(p))
    out = []
    for q in np.flatnonzero((p.class_id == cls) & (np.nan_to_num(conf, nan=1.0) >= min_conf)):
        pb = p.xyxy[q]
        inter = np.clip(np.minimum(box[2:], pb[2:]) - np.maximum(box[:2], pb[:2]), 0, None).prod()
        area = np.clip(pb[2:] - pb[:2], 0, None).prod()
        if area > 0 and inter / area >= 0.9:
            out.append(pb)
    return sorted(out, key=lambda b: (b[0], b[1]))


def _taken(fixes: Sequence[Fix], box: np.ndarray, cls: int) -> bool:
    """Whether a fix already proposed puts a box of class ``cls`` where ``box`` is (IoU >= 0.5):
    two fixes must never put two boxes on one defect."""
    placed = [f.xyxy for f in fixes if f.action in ("add", "move", "clip", "split", "merge") and f.class_id == cls]
    return bool(placed) and bool((_iou(box, np.asarray(placed)) >= MATCH_IOU).any())


def proposed_fixes(rec: ImageRecord, issues: list[Issue], min_conf: float = 0.0) -> list[Fix]:
    """The fix each issue suggests, at most one per given box (the best-scoring issue wins).

    overlooked: add the model's box; swap: relabel to the model's class; badloc and size_outlier:
    move to the model's box of that class that overlaps it most and stands for no other given box
    (none: no fix, and ``issue.data["no_fix"]`` says why, shown after its reason); out_of_image:
    clip; spurious, degenerate, duplicate: remove; fragment and split: merge the pieces into their
    joint box; merged: split the box along the model's boxes inside it (at least two). No fix ever
    puts a second box of a class where a more probable one already puts one. Boxing style, class
    conflicts and image issues propose nothing: they need a person's judgement. ``min_conf``: the predictions a fix may use (the score run's
    calibrated low threshold).
    """
    ids = rec.gt.data.get("id")
    fixes: list[Fix] = []
    done: set[int] = set()
    w, h = rec.width, rec.height
    for x in sorted(issues, key=lambda i: -i.score):
        if x.type == "overlooked" and "pred_box" in x.data:
            pb = np.asarray(x.data["pred_box"], dtype=np.float64)
            covered = [j for j in range(len(rec.gt)) if int(rec.gt.class_id[j]) == x.data["pred_class"]]
            if covered and (_iou(pb, rec.gt.xyxy[covered]) >= MATCH_IOU).any():
                continue  # a given box of that class is already there
            if _taken(fixes, pb, x.data["pred_class"]):
                continue  # a more probable fix already puts a box there
            fixes.append(Fix("add", x.type, pb, x.data["pred_class"], x.score, x.reason, issue=x.data.get("id")))
            continue
        if x.box is None or x.box in done or ids is None or x.box >= len(ids):
            continue
        j = x.box
        box, cls, target = rec.gt.xyxy[j], int(rec.gt.class_id[j]), str(ids[j])
        fix = None
        if x.type == "swap" and "pred_class" in x.data:
            fix = Fix("relabel", x.type, box, x.data["pred_class"], x.score, x.reason, target)
        elif x.type in ("badloc", "size_outlier"):
            free = _free_predictions(rec, cls, min_conf, j) if rec.pred is not None else None
            if free is None:  # no predictions at hand: the issue's own
                if "pred_box" in x.data:
                    fix = Fix("move", x.type, x.data["pred_box"], cls, x.score, x.reason, target)
                else:
                    x.data["no_fix"] = "no predictions to take the box from (run 'cvcurate predict')"
            elif len(free):
                ious = _iou(box, rec.pred.xyxy[free])
                if ious.max() > 0:
                    fix = Fix("move", x.type, rec.pred.xyxy[free[int(np.argmax(ious))]], cls, x.score, x.reason,
                              target)
                else:
                    x.data["no_fix"] = "no box of the model of this class overlaps it"
            else:
                x.data["no_fix"] = "the model's boxes of this class here stand for other given boxes"
            if fix is not None and _taken(fixes, fix.xyxy, fix.class_id):
                fix = None
                x.data["no_fix"] = "a more probable fix already puts a box of this class there"
        elif x.type == "out_of_image":
            fix = Fix("clip", x.type, np.clip(box, 0, [w, h, w, h]), cls, x.score, x.reason, target)
        elif x.type in ("spurious", "degenerate", "duplicate"):
            fix = Fix("remove", x.type, box, cls, x.score, x.reason, target)
        elif x.type == "fragment" and isinstance(x.data.get("other"), int) and x.data["other"] < len(ids) \
                and x.data["other"] not in done:
            o = x.data["other"]
            joint = np.concatenate([np.minimum(box[:2], rec.gt.xyxy[o][:2]), np.maximum(box[2:], rec.gt.xyxy[o][2:])])
            fix = Fix("merge", x.type, joint, cls, x.score, x.reason, target, others=(str(ids[o]),))
            done.add(o)
        elif x.type == "split" and "pred_box" in x.data:
            pb = np.asarray(x.data["pred_box"], dtype=np.float64)
            inside = [k for k in range(len(rec.gt)) if k != j and k not in done and int(rec.gt.class_id[k]) == cls
                      and _iou(rec.gt.xyxy[k], pb[None]).item() > 0
                      and np.all(rec.gt.xyxy[k][:2] >= pb[:2] - 0.1 * (pb[2:] - pb[:2]))
                      and np.all(rec.gt.xyxy[k][2:] <= pb[2:] + 0.1 * (pb[2:] - pb[:2]))]
            if inside:
                parts = rec.gt.xyxy[[j, *inside]]
                joint = np.concatenate([parts[:, :2].min(0), parts[:, 2:].max(0)])
                fix = Fix("merge", x.type, joint, cls, x.score, x.reason, target,
                          others=tuple(str(ids[k]) for k in inside))
                done.update(inside)
        elif x.type == "merged":
            pieces = _split_pieces(rec, j, min_conf)
            if len(pieces) >= 2:
                for pbox in pieces:
                    fixes.append(Fix("split", x.type, pbox, cls, x.score, x.reason, target, group=target,
                                     issue=x.data.get("id")))
                done.add(j)
                continue
        if fix is not None and fix.action in ("move", "clip") and _taken(fixes, fix.xyxy, fix.class_id):
            fix = None  # a more probable fix already puts a box of that class there
        if fix is not None:
            fix.issue = x.data.get("id")
            fixes.append(fix)
            done.add(j)
    return fixes


def write_outputs(result: ScoreResult, out: Path, name: str, notes: list[str], summary: dict | None = None
                  ) -> tuple[Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    recs = result.labels.records
    order = result.ranking()
    issues_sorted = sorted(result.issues, key=lambda i: -i.score)
    doc = {
        "dataset": name,
        "notes": notes,
        "used_predictions": result.used_predictions,
        "used_pixels": result.used_pixels,
        **(summary if summary is not None else run_summary(result)),
        "images": [{"filepath": recs[i].filepath, "sample_id": recs[i].sample_id,
                    "score": round(float(result.image_score[i]), 6)} for i in order],
        "issues": [{"id": i.data.get("id"), "filepath": i.filepath, "sample_id": i.sample_id, "type": i.type,
                    "score": round(i.score, 6),
                    "box": i.box, "reason": i.reason, "data": i.data} for i in issues_sorted],
    }
    json_path = out / "scores.json"
    json_path.write_text(json.dumps(doc, indent=1))
    csv_path = out / "issues.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        # decision: empty, for a reviewer to fill in (confirm / reject) and feed back with
        # 'cvcurate decide NAME --from-file issues.csv'
        w.writerow(["issue_id", "filepath", "type", "p", "box", "reason", "decision"])
        for i in issues_sorted:
            w.writerow([i.data.get("id", ""), i.filepath, i.type, f"{i.score:.6f}", "" if i.box is None else i.box,
                        i.reason, ""])
    images_csv = out / "images.csv"
    with open(images_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "filepath", "score", "split", "boxes"])
        for rank, i in enumerate(order, start=1):
            w.writerow([rank, recs[i].filepath, f"{result.image_score[i]:.6f}", recs[i].split or "", len(recs[i].gt)])
    return json_path, csv_path, images_csv


def load_run_issues(name: str, labels: LabelSet | None = None) -> tuple[list[Issue] | None, str]:
    """The issues of the last score run of ``name`` (its typed record: exact p, box, evidence),
    those of the records of ``labels`` when given, and where they came from. ``None`` when the
    dataset was never scored; a run written by an older cvcurate raises :class:`InputError`
    saying to score again."""
    rec = store.read_record(name, "score")
    if rec is None:
        return None, ""
    issues = rec.issues
    if labels is not None:
        by_id = {r.sample_id: r for r in labels.records}
        issues = [i for i in issues if i.sample_id in by_id]
        for i in issues:
            i.filepath = by_id[i.sample_id].filepath
    return issues, f"score run of {rec.at}"


def mark_augmented(name: str, labels: LabelSet) -> None:
    """Note each augmented record's source in ``meta["augmented_from"]`` (leakage checks skip it)."""
    from .augment import source_of

    src = source_of(name)
    for r in labels.records:
        if r.sample_id in src:
            r.meta["augmented_from"] = src[r.sample_id]
