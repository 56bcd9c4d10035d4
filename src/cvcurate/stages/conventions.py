"""The conventions stage: read the labels and the model's predictions, find how each class is boxed
(:mod:`cvcurate.scoring.conventions`), write the report (:mod:`cvcurate.analysis.conventions_page`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..errors import InputError
from ..scoring.conventions import Conventions, find_conventions
from ..types import Annotations
from .score import load_score_config


@dataclass
class ConventionsRun:
    conventions: Conventions
    pred_field: str
    paths: dict[str, Path]
    lines: list[str]  # one per class, as the report words it


def run_conventions(name: str, *, pred_field: str | None = None, config: str | Path | None = None,
                    out_dir: str | Path | None = None, instructions: str | Path | None = None) -> ConventionsRun:
    """How each class of dataset ``name`` is boxed, against its predictions (``pred_field``, or the
    field score would use); the report written to ``out_dir`` (default ``NAME_conventions``), and
    labeling instructions for annotators to ``instructions`` when given."""
    from ..analysis.conventions_page import summary_line, write, write_instructions
    from ..analysis.thumbs import style_thumbnail

    cfg = load_score_config(config)
    labels, preds, pred_field = _with_predictions(name, pred_field)
    conv = find_conventions(labels, preds, cfg.objectlab, adopted=store.adopted_styles(name))
    floor = conv.model_floor

    @functools.lru_cache(maxsize=None)  # the report and the instructions show the same examples: drawn once
    def thumb(ci: int, i: int) -> bytes:
        p = preds[i]
        keep = (np.asarray(p.class_id) == ci) & (np.asarray(p.confidence) >= floor)
        return style_thumbnail(labels.records[i], ci, p.xyxy[keep], labels.classes)

    paths = write(conv, Path(out_dir) if out_dir is not None else Path(f"{name}_conventions"), name, thumb)
    if instructions is not None:
        paths["instructions"] = write_instructions(conv, instructions, name, thumb)
    return ConventionsRun(conventions=conv, pred_field=pred_field, paths=paths,
                          lines=[summary_line(c) for c in conv.classes])


@dataclass
class AdoptRun:
    cls: str
    style: str
    change: Any  # the ChangeSet (stages.apply): its changes, log and skipped samples
    lines: list[str]  # one per fix, as apply --dry-run words them
    dry_run: bool


def parse_adopt(text: str, classes: list[str]) -> tuple[str, str]:
    """``CLASS=whole|pieces`` -> (class, style); one clear error otherwise."""
    from ..scoring.conventions import STYLES

    cls, sep, style = text.rpartition("=")
    if not sep or not cls or style not in STYLES:
        raise InputError(f"--adopt takes CLASS=whole or CLASS=pieces, got {text!r}")
    if cls not in classes:
        raise InputError(f"--adopt: no class {cls!r} in the dataset (classes: {', '.join(classes)})")
    return cls, style


def adopt(name: str, assignment: str, *, pred_field: str | None = None, config: str | Path | None = None,
          dry_run: bool = False, wait: float = 0.0, log_dir: str | Path | None = None) -> AdoptRun:
    """Adopt one boxing style for a class (``assignment``: ``CLASS=whole|pieces``): the fixes that
    make every image the model can judge follow it (:func:`~cvcurate.scoring.conventions.convention_fixes`),
    applied as one change set like ``cvcurate apply`` (the dataset's lock, journal, compare-and-set,
    change log; ``cvcurate apply NAME --undo`` takes it back, the convention with it), and the convention
    recorded with the dataset (the export manifest shows it). ``dry_run``: only say what would change."""
    import json

    from .. import decisions
    from ..names import Attr
    from ..scoring.batch import Batch
    from ..scoring.conventions import convention_fixes
    from ..scoring.signals import measure
    from . import apply as apply_stage
    from . import recovery

    cfg = load_score_config(config)
    labels, preds, pred_field = _with_predictions(name, pred_field)
    cls, style = parse_adopt(assignment, labels.classes)
    s = measure(Batch.of(labels, preds), cfg.objectlab)
    proposed = convention_fixes(labels, s, labels.classes.index(cls), style)
    by_sid: dict[str, list[dict[str, Any]]] = {}
    paths: dict[str, str] = {}
    for f in proposed:
        rec = labels.records[f.record]
        ids = list(rec.gt.data["id"])
        rel = store.xyxy_to_rel_xywh(np.asarray(f.xyxy, float), rec.width, rec.height).tolist()
        base = {"id": None, Attr.TYPE: "convention", Attr.CLASS: cls, Attr.TARGET: ids[f.boxes[0]],
                Attr.REASON: f.reason}
        if f.action == "merge":
            fixes = [{**base, Attr.ACTION: "merge", Attr.OTHERS: ",".join(ids[b] for b in f.boxes[1:]),
                      "bounding_box": rel[0]}]
        else:
            fixes = [{**base, Attr.ACTION: "split", "bounding_box": b} for b in rel]
        by_sid.setdefault(rec.sample_id, []).extend(fixes)
        paths[rec.sample_id] = rec.filepath

    def planner(name_: str, cs: Any, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
        sids = [sid for sid in by_sid if only is None or sid in only]
        gt = store.get_detections(name_, store.GT_FIELD, sids) if sids else {}
        plans = {}
        for sid in sids:
            before = gt.get(sid, [])
            after = json.loads(json.dumps(before))
            started: set[str] = set()
            if all(decisions.apply_fix(after, fx, started, new_id=store.new_id) for fx in by_sid[sid]):
                plans[sid] = {"before": before, "after": after, "applied": by_sid[sid], "filepath": paths[sid]}
            else:
                cs.skipped.append({"sample_id": sid, "filepath": paths[sid],
                                   "why": "its boxes changed since they were read: adopt again"})
        return plans

    def writer(sid: str, plan: dict[str, Any]) -> Any:
        return store.GuardedWrite(sid, expect_detections={store.GT_FIELD: plan["before"]},
                                  set_detections={store.GT_FIELD: plan["after"]})

    cs = apply_stage.new_change_set(name)
    entry = {"style": style, "change_id": cs.change_id, "at": cs.at, "by": apply_stage.who(),
             "pred_field": pred_field, "fixes": len(proposed)}
    if dry_run:
        cs.changes = [apply_stage.change_entry(sid, p) for sid, p in planner(name, cs).items()]
        return AdoptRun(cls, style, cs, apply_stage.describe_changes(cs), True)
    with store.dataset_lock(name, "conventions", user=apply_stage.who(), wait_s=wait) as lock:
        recovery.recover(name, "conventions")
        record = {"convention": cls, "convention_entry": entry}
        apply_stage.write_change_set(name, cs, lock, log_dir or f"{name}_changes", planner=planner, writer=writer,
                                     record=record, on_commit=lambda: store.set_convention(name, cls, entry),
                                     on_rollback=lambda: store.set_convention(name, cls, None))
        if not cs.changes:  # nothing to change: every image follows the style already
            store.set_convention(name, cls, entry)
        store.append_history(name, {"action": "conventions", "at": cs.at, "class": cls, "style": style,
                                    "change_id": cs.change_id if cs.changes else None,
                                    "images_changed": len(cs.changes)})
    return AdoptRun(cls, style, cs, apply_stage.describe_changes(cs), False)


def _with_predictions(name: str, pred_field: str | None) -> tuple[Any, list[Annotations], str]:
    from .datasets import pred_field_of

    pred_field = pred_field_of(name, pred_field, needed="conventions are measured against the model's boxes")
    labels = store.read(name, pred_field=pred_field)
    preds = [r.pred if r.pred is not None else Annotations.empty(with_confidence=True) for r in labels.records]
    if not sum(len(p) for p in preds):
        raise InputError(f"field {pred_field!r} of dataset {name!r} holds no predicted boxes")
    return labels, preds, pred_field
