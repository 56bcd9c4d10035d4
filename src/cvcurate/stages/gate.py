"""The gate stage: gather what the quality gate needs, from the store or straight from a folder.

* A dataset in the store: its labels, the model-free box checks computed now (the labels may have
  changed since the last score: apply), the pixel checks (blur, exposure, near-duplicates,
  leakage) from the last score run's record when it read the pixels of these images (else
  computed now), and the last score run (issue types and exact p per sample, review decisions
  from the tags). Reading no image keeps a gate on a scored dataset short.
* A folder (or file) in any importable format: read with the same parsers as ``cvcurate import``
  (rejected images count as unreadable), model-free checks computed now. Nothing is written to the
  store: the import a gate would do is only read, never stored, so a CI job leaves no dataset
  behind. The score-run checks then warn that no score run exists.

The checks and reports are pure (:mod:`cvcurate.gate`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import formats, gate as g, store
from ..errors import InputError
from ..names import PREDICTION_WRITERS
from ..scoring import score
from ..scoring.images import image_features
from ..types import RunRecord
from .score import load_score_config

from ..decisions import CONFIRMED, REJECTED, expected_after_review


PIXEL_TYPES = ("unreadable", "blur", "underexposed", "overexposed", "near_duplicate", "leakage")


def _pixels_of(run: RunRecord | None, labels: Any) -> list | None:
    """The pixel checks' issues of the score run ``run`` when they still describe ``labels``: the
    run read the pixels of exactly as many images as there are now (an augment or import since
    adds images: then None, and the pixels are read again); the labels may have changed since
    (apply), the pixels and the images' splits have not."""
    if run is None or not run.info.get("pixels") or run.info.get("only_out_of_sample") \
            or run.summary.get("images") != len(labels.records):
        return None
    mine = run.issues_of(labels)
    if len(mine) != len(run.issues):  # an issue of an image that is gone
        return None
    return [i for i in mine if i.type in PIXEL_TYPES]


def _fresh_issues(labels: Any, progress: bool, run: RunRecord | None = None) -> tuple[list, int]:
    """The model-free checks on the labels as they are now; the pixel checks from the score run
    ``run`` when it read them for these images (:func:`_pixels_of`: a gate on a scored dataset
    reads no image), else computed now."""
    cfg = load_score_config()
    kept = _pixels_of(run, labels)
    feats = None if kept is not None else image_features([r.filepath for r in labels.records], cfg.images,
                                                         progress=progress)
    issues = score(labels, features=feats, cfg=cfg).issues + (kept or [])
    unreadable = sum(1 for i in issues if i.type == "unreadable")
    return [i for i in issues if i.type != "unreadable"], unreadable


def _scored_from_store(name: str, labels: Any, rec: RunRecord | None) -> tuple[list[list[g.ScoredIssue]] | None, str]:
    """Per record of ``labels``: the score run's issues (type and exact p, from its record
    ``rec``) and whether a reviewer decided on the sample or any of its fix or suspect boxes."""
    if rec is None:
        return None, ""
    vals = store.sample_values(name, ["tags", "cvc_fixes.detections.tags", "cvc_suspects.detections.tags"])
    decided_ids = set()
    for sid, t, ft, st in zip(vals["id"], vals["tags"], vals["cvc_fixes.detections.tags"],
                              vals["cvc_suspects.detections.tags"]):
        # a decision on the sample or on any of its fix or suspect boxes counts for the sample's issues
        if set(t or []) & {CONFIRMED, REJECTED} or any(set(x or []) & {CONFIRMED, REJECTED}
                                                       for x in list(ft or []) + list(st or [])):
            decided_ids.add(sid)
    by_sample = rec.by_sample()
    out = [[g.ScoredIssue(i.type, i.score, r.sample_id in decided_ids) for i in by_sample.get(r.sample_id, [])]
           for r in labels.records]
    how = (f"score run of {rec.at}, predictions {rec.pred_field or 'none (model-free)'}, "
           f"pixels {'yes' if rec.info.get('pixels') else 'no'}")
    return out, how


def _reviewed_run(name: str, run: RunRecord | None) -> RunRecord | None:
    """The score run's record ``run``, its expected label errors brought up to date with the
    review since (:func:`cvcurate.decisions.expected_after_review`); ``info["reviewed"]`` counts
    the issues applied, rejected and confirmed."""
    from ..scoring import LABEL_ERROR_TYPES
    from ..names import FIX_FIELD

    if run is None or "expected_label_errors" not in run.summary or FIX_FIELD not in store.field_names(name):
        return run
    info = store.sample_info(name, ["tags"])
    sample_tags = {sid: set(t or []) for sid, t in zip(info["id"], info["tags"])}
    delta, counts = expected_after_review(
        [(sample_tags.get(sid, set()), d) for sid, dets in store.get_detections(name, FIX_FIELD).items() for d in dets],
        LABEL_ERROR_TYPES)
    if not any(counts.values()):
        return run
    return replace(run, summary={**run.summary, "expected_label_errors": max(
        0.0, float(run.summary["expected_label_errors"]) + delta)}, info={**run.info, "reviewed": counts})


def gather(target: str | Path, *, progress: bool = False, wait: float = 0.0) -> g.GateInput:
    """The gate's input for a dataset name or a folder path (a name in the store wins).

    A stored dataset is read under its lock (:func:`cvcurate.store.read_lock`): an apply, undo,
    decide, score, augment, split or conventions --adopt running meanwhile is waited for (``wait``
    seconds) or the gate is refused, so the gate never judges half of a change set. A predict is
    read beside (the gate reads no predictions). The checks run after the reads, the lock let go."""
    text = str(target)
    if store.exists(text):
        from .recovery import warn_unfinished
        from .score import mark_augmented

        with store.read_lock(text, "gate", safe_writers=PREDICTION_WRITERS, user=store.journal.who(), wait_s=wait):
            labels = store.read(text)
            mark_augmented(text, labels)
            rec = store.read_record(text, "score")
            scored, how = _scored_from_store(text, labels, rec)
            reviewed = _reviewed_run(text, rec)
            unfinished = [ln.split(": ", 1)[1] for ln in warn_unfinished(text)]
        issues, unreadable = _fresh_issues(labels, progress, rec)
        return g.GateInput(labels=labels, issues=issues, unreadable=unreadable, scored=scored,
                           score_method=how, source=f"dataset {text}", dataset=text, run=reviewed,
                           unfinished=unfinished)
    path = Path(target)
    if not path.exists():
        raise InputError(f"{text} is neither a dataset in the store nor a path "
                         f"(datasets: {', '.join(store.list_datasets()) or 'none'})")
    try:
        labels, report = formats.load(path)
    except InputError as exc:
        raise InputError(f"{path} is not a dataset cvcurate can read: {exc}") from None
    issues, unreadable = _fresh_issues(labels, progress)
    return g.GateInput(labels=labels, issues=issues, unreadable=unreadable, rejected=report.rejected,
                       scored=None, source=f"{report.format} folder {path.name}")


def run_gate(target: str | Path, *, config: str | Path | None = None, progress: bool = False,
             wait: float = 0.0) -> g.GateResult:
    cfg = g.load_gate_config(config)  # validated before any work
    data = gather(target, progress=progress, wait=wait)
    result = g.run_checks(data, cfg)
    if data.run is not None:  # a dataset with a score run: where its labels are worst
        from ..analysis import compute_slices, slice_table_markdown

        issues = data.run.issues_of(data.labels)
        if issues:
            min_p = data.run.queue_min_p
            table = slice_table_markdown(compute_slices(data.labels, issues, min_p=min_p), top=5)
            result.extra["markdown_sections"] = ["### Where the labels are worst (label issues per slice)\n\n" + table]
    return result


def write_reports(result: g.GateResult, *, json_path: Path | None = None, markdown: Path | None = None,
                  junit: Path | None = None, extra_markdown: tuple[str, ...] = ()) -> list[Path]:
    written = []
    sections = tuple(result.extra.get("markdown_sections", ())) + tuple(extra_markdown)
    for path, text in ((json_path, g.to_json(result)), (markdown, g.to_markdown(result, sections)),
                       (junit, g.to_junit(result))):
        if path is None:
            continue
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written
