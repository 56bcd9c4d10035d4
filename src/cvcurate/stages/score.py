"""The score stage end to end: read the store, score, write fields, saved views, JSON and CSV."""

from __future__ import annotations

import csv
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..config import load_config, to_dict
from ..errors import InputError, shell_arg
from ..names import PRED_ATTRIBUTES, quoted
from ..scoring import QUEUES, ScoreConfig, ScoreResult, score
from ..scoring.summary import run_summary
from ..types import Annotations, LabelSet
from .score_write import _sample_rows, write_score_run



@dataclass
class ScoreRun:
    result: ScoreResult
    json_path: Path
    csv_path: Path
    images_csv_path: Path
    notes: list[str]
    summary: dict = field(default_factory=dict)  # the run's one count (:func:`run_summary`), as stored


def flip_checked(labels: LabelSet) -> bool:
    """Whether any prediction carries ``predict --flip-check``'s numbers (predicted with it, or
    imported from a file that has them); where none does, the empty columns are dropped."""
    preds = [r.pred for r in labels.records if r.pred is not None]
    found = any(np.isfinite(p.data[k]).any() for p in preds for k in PRED_ATTRIBUTES if k in p.data)
    if not found:
        for p in preds:
            for k in PRED_ATTRIBUTES:
                p.data.pop(k, None)
    return found


def load_score_config(path: str | Path | None = None) -> ScoreConfig:
    return load_config(ScoreConfig, path, default_name="score.yaml")


def run_score(name: str, *, pred_field: str | None = None, config: str | Path | None = None,
              pixels: bool = True, out_dir: str | Path | None = None, progress: bool = False,
              only_out_of_sample: bool = False, wait: float = 0.0, engine: str = "local",
              workers: int | None = None) -> ScoreRun:
    """Score dataset ``name``; predictions from ``pred_field`` when given (or found).
    ``only_out_of_sample``: score (and queue) only the images the predictions' model did not train
    on; the other images keep their fixes and decisions, in no queue.

    Holds the dataset's lock for the whole run (a decide, apply or second score is refused, or
    waits ``wait`` seconds), finishes what a killed writer left (:mod:`.recovery`; an interrupted
    score's decisions are carried to this run), and journals every review decision before it
    writes.

    ``engine``: where the per-image pixel features are measured, ``local`` or ``ray`` (``workers``
    Ray workers, :mod:`cvcurate.engine`); everything dataset-wide runs here on the gathered features."""
    from . import recovery
    from ..engine import get_engine

    load_score_config(config)  # a bad config is one line before any wait for the lock
    eng = get_engine(engine, workers)
    store.load(name)
    with store.dataset_lock(name, "score", user=store.journal.who(), wait_s=wait):
        earlier = recovery.recover(name, "score")
        return _run_score(name, pred_field=pred_field, config=config, pixels=pixels, out_dir=out_dir,
                          progress=progress, only_out_of_sample=only_out_of_sample, earlier=earlier, engine=eng)


def _run_score(name: str, *, pred_field: str | None, config: str | Path | None, pixels: bool,
               out_dir: str | Path | None, progress: bool, only_out_of_sample: bool, earlier: list,
               engine: Any = None) -> ScoreRun:
    from ..engine import LOCAL, image_features
    from .datasets import pred_field_of

    cfg = load_score_config(config)
    notes: list[str] = []
    named = pred_field is not None
    pred_field = pred_field_of(name, pred_field)  # a named field that is not there: refused in one line
    if not named:
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
    if made and made[-1].get("class_agnostic"):
        notes.append(f"the predictions in {pred_field!r} are class-agnostic ('predict --class-agnostic'): their "
                     "classes come from the labels, so a wrong class (swap) is not found, and the class named for "
                     "an overlooked box is a guess")
    labels = store.read(name, pred_field=pred_field, pred_attributes=PRED_ATTRIBUTES)
    if flip_checked(labels):
        notes.append(f"the predictions in {pred_field!r} are flip-checked ('predict --flip-check'): the error models "
                     "read how each predicted box agrees with the mirrored images' boxes")
    if only_out_of_sample:
        from ..detector.checkpoint import load_checkpoint
        from ..detector.data import image_digests

        seen = load_checkpoint(made[-1]["model"], classes=labels.classes).train_digests() or set()
        keep = [r for r, d in zip(labels.records, image_digests([r.filepath for r in labels.records])) if d not in seen]
        notes.append(f"--only-out-of-sample: {len(keep)} of {len(labels.records)} images scored (the model behind "
                     f"{pred_field!r} trained on the other {len(labels.records) - len(keep)}); queues hold only these")
        if not keep:
            raise InputError(f"the model behind {pred_field!r} trained on every image of {name!r}: nothing is out of "
                             f"sample; use out-of-fold predictions: cvcurate train {shell_arg(name)} --folds 5 "
                             f"--init synth")
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
    feats = image_features(engine or LOCAL, [r.filepath for r in labels.records], cfg.images,
                           progress=progress) if pixels else None
    if not pixels:
        notes.append("pixel checks skipped (--no-pixels): no blur, exposure or near-duplicate checks")
    adopted = store.adopted_styles(name)
    result = score(labels, predictions=preds, features=feats, cfg=cfg, conventions=adopted)
    if result.thresholds is not None:
        t = result.thresholds
        notes.append(f"confidence thresholds from the data: high {t.high:.3f}, low {t.low:.3f} ({t.how})")
        agree = float(np.max(t.precision)) if t.precision is not None and len(t.precision) else None
        if agree is not None and agree < cfg.objectlab.weak_agreement:
            model = made[-1].get("model") if made else None
            notes.append(f"warning: the predictions in {pred_field!r} hardly agree with these labels: at no confidence "
                         f"do more than {agree:.0%} of them lie on a given box of their class, so the model does not "
                         f"know this data and its overlooked and spurious evidence is weak (expect many overlooked "
                         f"issues); fine-tune it on these labels first: cvcurate train {shell_arg(name)} --folds 5"
                         + (f" --init {shell_arg(str(model))}" if model else ""))

    if result.calibration is not None:
        cal = result.calibration
        how = sorted({c.how for c in cal.curves.values()})
        notes.append(f"probabilities calibrated on this data in {cal.seconds:.1f} s ({cal.images} images with injected "
                     f"errors; held-out calibration error {cal.ece.get('all', float('nan')):.3f}; curves: "
                     f"{', '.join(how)})")
        notes += [f"calibration: {n}" for n in cal.notes]
        notes += [f"style: {text.format(cls=labels.classes[c])}" for c, text in cal.style_notes]
    conventions = None
    if result.objectlab is not None and result.objectlab.signals is not None:
        from ..scoring.conventions import conventions_from_signals

        conventions = conventions_from_signals(labels, result.objectlab.signals, adopted)
        for c in conventions.mixed:
            notes.append(f"conventions: {quoted(c.name)} is boxed whole in {100 * c.share('whole'):.0f} % and in "
                         f"pieces in {100 * c.share('pieces'):.0f} % of the {c.judged} images the model can judge: "
                         f"a question for the team ('cvcurate conventions {shell_arg(name)}' shows both styles)")
    else:
        notes.append("no predictions: the probabilities of the model-free checks are shipped priors, not "
                     "calibrated on this data")
    rows = _sample_rows(result)
    run = {"at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "pred_field": pred_field,
           "pixels": pixels, "config": to_dict(cfg), "in_sample_images": in_sample,
           "only_out_of_sample": only_out_of_sample, **(summary := run_summary(result))}
    if conventions is not None:
        run["conventions"] = conventions.to_dict()
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


def truth_check(result: ScoreResult, truth: str | Path) -> Any:
    """How well a run's ranking finds the errors of a truth file of ``cvcurate corrupt``
    (:func:`cvcurate.scoring.truth.truth_metrics`)."""
    from ..corrupt import load_truth
    from ..scoring.truth import truth_metrics

    return truth_metrics(result, load_truth(truth))


def mark_augmented(name: str, labels: LabelSet) -> None:
    """Note each augmented record's source in ``meta["augmented_from"]`` (leakage checks skip it)."""
    from .augment import source_of

    src = source_of(name)
    for r in labels.records:
        if r.sample_id in src:
            r.meta["augmented_from"] = src[r.sample_id]
