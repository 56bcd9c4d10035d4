"""The report stage: gather what the error-analysis report needs from the store, then render it.

Labels and splits from the store; the last score run's issues (its typed record, :func:`cvcurate.store.read_record`);
per-image brightness from the pixels (the same features the score stage reads); the import source
of each image (the import in the history whose folder holds it); and, when a predictions field is
there, an evaluation with precision/recall curves. Rendering is pure (:mod:`cvcurate.analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .. import store
from ..analysis import ReportInput, make_report, pr_curves
from ..errors import InputError, shell_arg
from ..names import PREDICTION_WRITERS
from ..scoring.images import image_features
from ..types import Annotations, LabelSet
from .score import load_score_config


@dataclass
class ReportRun:
    paths: dict[str, Path]
    left_out: list[str]
    images: int


def image_sources(name: str, labels: LabelSet) -> tuple[list[str | None], list[str]]:
    """Per image, the folder name of the import that holds it (the longest matching source), and
    its path as the report shows it: below that folder's name (``neu-det/JPEGImages/x.jpg``), else
    its file name; never an absolute path (a report is moved and shared)."""
    roots = sorted({h["source"] for h in store.get_history(name) if h.get("action") == "import" and h.get("source")},
                   key=len, reverse=True)
    names: list[str | None] = []
    shown: list[str] = []
    for r in labels.records:
        src = next((s for s in roots if r.filepath.startswith(s.rstrip("/") + "/") or r.filepath == s), None)
        names.append(PurePath(src).name if src else None)
        rel = PurePath(r.filepath).relative_to(src).as_posix() if src and r.filepath != src else PurePath(r.filepath).name
        shown.append(f"{PurePath(src).name}/{rel}" if src else rel)
    return names, shown


def augment_plan(name: str) -> dict[str, Any] | None:
    """What ``cvcurate augment NAME`` (its defaults: the shipped pipeline, every class raised to
    the largest class's instances) would add per class, for the report's class balance; None when
    it has nothing to plan from (no boxes)."""
    from .augment import augment

    try:
        run = augment(name, dry_run=True)
    except InputError:
        return None
    plan = run.plan
    return {"method": f"'{run.pipeline}' pipeline, every class raised to {plan.target} instances "
                      f"('cvcurate augment {shell_arg(name)} --dry-run' shows the plan)",
            "per_class": {r.name: {"images": int(r.new_images), "instances": int(r.new_instances)} for r in plan.rows}}


def _evaluation(labels: LabelSet, seen: Any = None) -> dict[str, Any]:
    """mAP and PR curves of the labels' predictions; ``seen``: the digests of the images the
    predicting model trained on (:func:`~.predict.in_sample_digests`), for the mAP without them."""
    from ..detector.evaluate import evaluate

    preds = [r.pred if r.pred is not None else Annotations.empty(with_confidence=True) for r in labels.records]
    res = evaluate([r.gt for r in labels.records], preds, labels.classes)
    doc = res.to_dict()
    doc["pr_curves"] = pr_curves([r.gt for r in labels.records], preds, labels.classes)
    if seen:  # the model trained on some of these images: say so, and give the mAP without them
        from ..detector.data import image_digests

        out = [k for k, d in enumerate(image_digests([r.filepath for r in labels.records])) if d not in seen]
        doc["in_sample"] = len(labels.records) - len(out)
        if out and doc["in_sample"]:
            o = evaluate([labels.records[k].gt for k in out], [preds[k] for k in out], labels.classes)
            doc["out_of_sample"] = {"images": len(out), "map50": o.map50, "map50_95": o.map50_95}
    return doc


def report(name: str, out: str | Path, *, pred_field: str | None = None, top_n: int = 6,
           pixels: bool = True, progress: bool = False, wait: float = 0.0) -> ReportRun:
    """The HTML/Markdown report of dataset ``name`` in ``out``. The store is read under the
    dataset's lock (:func:`cvcurate.store.read_lock`): a command changing the dataset meanwhile is
    waited for (``wait`` seconds) or the report is refused, so it never shows half of a change set;
    a predict is read beside unless the report reads predictions. Pixels and charts come after."""
    from .datasets import pred_field_of

    pred_field = pred_field_of(name, pred_field)
    from .predict import in_sample_digests
    from .recovery import warn_unfinished

    safe = () if pred_field is not None else PREDICTION_WRITERS
    with store.read_lock(name, "report", safe_writers=safe, user=store.journal.who(), wait_s=wait):
        warn_unfinished(name)
        labels = store.read(name, pred_field=pred_field)
        if not labels.records:
            raise InputError(f"dataset {name!r} has no images to report on")
        run = store.read_record(name, "score")
        sources, shown = image_sources(name, labels)
        plan = augment_plan(name)
        seen = in_sample_digests(name, pred_field, labels.classes) if pred_field is not None else None
    issues, how = None, ""
    if run is not None:
        issues = run.issues_of(labels)
        how = f"score run of {run.at}"
    brightness = None
    if pixels:
        feats = image_features([r.filepath for r in labels.records], load_score_config().images, progress=progress)
        brightness = np.where(feats.ok, feats.mean, np.nan)
    evaluation = None
    why_eval = f"dataset {name!r} has no predictions (run 'cvcurate predict' or 'cvcurate train --folds K')"
    if pred_field is not None:
        evaluation = _evaluation(labels, seen)
    subtitle = f"dataset {name} ({len(labels.records)} images)" + (f", predictions {pred_field}" if pred_field else "") \
        + (f", {how}" if how else "")
    inp = ReportInput(labels=labels, issues=issues, brightness=brightness, sources=sources, shown_paths=shown,
                      min_p=run.queue_min_p if run is not None else 0.0, run=run,
                      evaluation=evaluation, title=f"cvcurate report: {name}", subtitle=subtitle,
                      why_no_issues=f"dataset {name!r} was never scored (run 'cvcurate score {shell_arg(name)}')",
                      why_no_evaluation=why_eval)
    rep, paths = make_report(inp, out, top_n=top_n, augment_plan=plan)
    return ReportRun(paths=paths, left_out=[f"{sec}: {why}" for sec, why in rep.left_out], images=len(labels.records))
