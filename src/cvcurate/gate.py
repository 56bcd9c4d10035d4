"""The pre-training quality gate: checks with thresholds, pass / warn / fail, and CI reports.

Pure compute: :func:`run_checks` takes a :class:`GateInput` (the labels, the model-free issues
found now, and what the last score run said) and returns a :class:`GateResult`; the gate stage
(:mod:`cvcurate.stages.gate`) gathers the input from the store or from a folder. Reports:
:func:`to_json` (with a schema version), :func:`to_junit` (one test case per check, which CI
systems show as tests) and :func:`to_markdown` (for a pull-request comment).

Every threshold is in ``configs/gate.yaml`` (:class:`GateConfig`), validated like the other
configs (unknown keys rejected with a suggestion). Each check has a direction: ``*_above``
checks fail when the measured value is above ``fail`` (warn above ``warn``), ``*_below`` checks
fail when it is below. ``null`` switches a level off. The gate fails when any check fails;
warnings do not fail it (exit 0 pass, 1 fail, 2 usage or input error).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from xml.etree import ElementTree as ET

import numpy as np

from .config import load_config
from .names import in_sample_remedy, quoted
from .scoring import LABEL_ERROR_TYPES
from .types import Issue, LabelSet, RunRecord

SCHEMA_VERSION = 1
PASS, WARN, FAIL = "pass", "warn", "fail"

YOLO_IMAGES_PER_CLASS = 1500
YOLO_INSTANCES_PER_CLASS = 10000


@dataclass
class Level:
    """Warn and fail thresholds of one check (``None``: that level is off)."""

    warn: float | None = None
    fail: float | None = None


@dataclass
class GateConfig:
    # counts of images that cannot be decoded (or were rejected at import)
    unreadable_images_above: Level = field(default_factory=lambda: Level(None, 0))
    # share of boxes that are degenerate (zero width or height) or outside the image
    invalid_boxes_above: Level = field(default_factory=lambda: Level(None, 0.0))
    # per class, the smallest number of images / instances (the YOLO rule of thumb, 1,500 images
    # and 10,000 instances per class, is reported as a note below it, never as a failure)
    images_per_class_below: Level = field(default_factory=lambda: Level(50, 10))
    instances_per_class_below: Level = field(default_factory=lambda: Level(100, 10))
    # instances of the largest class / instances of the smallest (Datumaro warns at 50)
    class_imbalance_above: Level = field(default_factory=lambda: Level(50, None))
    # share of images that are near-duplicates of another image of the same split
    duplicate_images_above: Level = field(default_factory=lambda: Level(0.0, 0.05))
    # images that have a near-duplicate in another split (train/val/test leakage)
    leakage_images_above: Level = field(default_factory=lambda: Level(None, 0))
    # expected share of boxes with a label error (from the last score run: the sum of p of its
    # label-error issues over the boxes)
    label_error_rate_above: Level = field(default_factory=lambda: Level(0.02, 0.05))
    # unreviewed issues (no decision in review) scored at least unreviewed_min_score
    unreviewed_issues_above: Level = field(default_factory=lambda: Level(0, None))
    unreviewed_min_score: float = 0.8
    # share of images with at least one issue in the last score run
    images_with_issues_above: Level = field(default_factory=lambda: Level(0.25, 0.5))
    # images whose predictions (of the last score run) come from a model trained on them: they
    # hide label errors there (warn by default)
    in_sample_images_above: Level = field(default_factory=lambda: Level(0, None))

    def check(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, Level):
                for lv in (value.warn, value.fail):
                    if lv is not None and (not math.isfinite(lv) or lv < 0):
                        raise ValueError(f"{name}: thresholds must be non-negative numbers, got {lv}")
        for name in ("unreviewed_min_score",):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def load_gate_config(path: str | Path | None = None) -> GateConfig:
    return load_config(GateConfig, path, default_name="gate.yaml")


@dataclass
class ScoredIssue:
    """One issue of the last score run, as the gate sees it."""

    type: str
    score: float
    decided: bool  # a reviewer confirmed or rejected it (or its fix)


@dataclass
class GateInput:
    labels: LabelSet
    issues: list[Issue]  # model-free issues computed now (boxes, pixels)
    unreadable: int = 0  # images that could not be decoded
    rejected: int = 0  # images rejected at import (folder mode), counted as unreadable
    scored: list[list[ScoredIssue]] | None = None  # per image, from the last score run (None: never scored)
    score_method: str = ""  # how the score run was made (model, predictions field, date)
    source: str = ""
    dataset: str = ""  # the dataset's name in the store ("" for a folder)
    run: RunRecord | None = None  # the score run's record (its one count: issues, flagged, expected errors)
    unfinished: list[str] = field(default_factory=list)  # writes a killed command left unfinished (the journal)


@dataclass
class CheckResult:
    name: str
    status: str
    value: float | None
    threshold: str
    message: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "value": self.value, "threshold": self.threshold,
                "message": self.message, "notes": self.notes}


@dataclass
class GateResult:
    source: str
    checks: list[CheckResult]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        s = {c.status for c in self.checks}
        return FAIL if FAIL in s else WARN if WARN in s else PASS

    @property
    def passed(self) -> bool:
        return self.status != FAIL

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def _judge(value: float | None, level: Level, above: bool) -> str:
    if value is None:
        return WARN
    worse = (lambda t: value > t) if above else (lambda t: value < t)
    if level.fail is not None and worse(level.fail):
        return FAIL
    if level.warn is not None and worse(level.warn):
        return WARN
    return PASS


def _threshold(level: Level, above: bool) -> str:
    op = ">" if above else "<"
    parts = [f"fail if {op} {level.fail:g}" if level.fail is not None else "",
             f"warn if {op} {level.warn:g}" if level.warn is not None else ""]
    return "; ".join(p for p in parts if p) or "off"


def _check(name: str, value: float | None, level: Level, above: bool, message: str,
           notes: Sequence[str] = ()) -> CheckResult:
    if level.warn is None and level.fail is None:
        return CheckResult(name, PASS, value, "off", message + " (check switched off)", list(notes))
    return CheckResult(name, _judge(value, level, above), value, _threshold(level, above), message, list(notes))


def run_checks(data: GateInput, cfg: GateConfig | None = None) -> GateResult:
    """Every check on ``data``; see :class:`GateConfig` for what each measures."""
    cfg = cfg or GateConfig()
    labels = data.labels
    k = len(labels.classes)
    n_images = len(labels.records)
    n_boxes = labels.num_boxes
    by_type: dict[str, list[Issue]] = {}
    for iss in data.issues:
        by_type.setdefault(iss.type, []).append(iss)
    out: list[CheckResult] = []

    # half-written labels or score fields are not fit to train on, whatever the other checks say
    out.append(CheckResult("unfinished_writes", FAIL if data.unfinished else PASS, float(len(data.unfinished)),
                           "fail if > 0", "; ".join(data.unfinished) if data.unfinished else
                           "no write to the dataset was left unfinished"))
    bad = data.unreadable + data.rejected
    out.append(_check("unreadable_images", bad, cfg.unreadable_images_above, True,
                      f"{data.unreadable} image(s) cannot be decoded, {data.rejected} rejected at import"))

    invalid = len(by_type.get("degenerate", [])) + len(by_type.get("out_of_image", []))
    frac = invalid / n_boxes if n_boxes else 0.0
    out.append(_check("invalid_boxes", round(frac, 6), cfg.invalid_boxes_above, True,
                      f"{invalid} of {n_boxes} boxes are degenerate ({len(by_type.get('degenerate', []))}) "
                      f"or outside the image ({len(by_type.get('out_of_image', []))})"))

    inst = np.zeros(k, np.int64)
    imgs = np.zeros(k, np.int64)
    for r in labels.records:
        if len(r.gt):
            inst += np.bincount(r.gt.class_id, minlength=k)
            imgs[np.unique(r.gt.class_id)] += 1
    for what, counts, level, rule in (("images_per_class", imgs, cfg.images_per_class_below, YOLO_IMAGES_PER_CLASS),
                                      ("instances_per_class", inst, cfg.instances_per_class_below,
                                       YOLO_INSTANCES_PER_CLASS)):
        if k == 0:
            out.append(_check(what, None, level, False, "the dataset has no classes"))
            continue
        low = int(np.argmin(counts))
        under = [quoted(labels.classes[c]) for c in range(k) if counts[c] < rule]
        notes = [f"{len(under)} of {k} classes are under the YOLO rule of thumb of {rule:,} "
                 f"{what.split('_')[0]} per class: {', '.join(under)}"] if under else []
        per = ", ".join(f"{quoted(labels.classes[c])} {int(counts[c])}" for c in range(k))
        out.append(_check(what, int(counts[low]), level, False,
                          f"fewest: {quoted(labels.classes[low])} ({int(counts[low])}); {per}", notes))

    if k and inst.min() > 0:
        ratio = float(inst.max() / inst.min())
        msg = (f"largest class {quoted(labels.classes[int(np.argmax(inst))])} has {int(inst.max())} instances, "
               f"smallest {quoted(labels.classes[int(np.argmin(inst))])} {int(inst.min())}")
        out.append(_check("class_imbalance", round(ratio, 3), cfg.class_imbalance_above, True, msg))
    else:
        empty = [quoted(labels.classes[c]) for c in range(k) if inst[c] == 0]
        out.append(CheckResult("class_imbalance", FAIL if k else WARN, None, _threshold(cfg.class_imbalance_above, True),
                               f"class(es) without any instance: {', '.join(empty)}" if k else "no classes"))

    dup = len(by_type.get("near_duplicate", []))
    out.append(_check("duplicate_images", round(dup / n_images, 6) if n_images else 0.0,
                      cfg.duplicate_images_above, True,
                      f"{dup} of {n_images} images are near-duplicates of an earlier image of their split"))
    leak = len(by_type.get("leakage", []))
    out.append(_check("leakage", leak, cfg.leakage_images_above, True,
                      f"{leak} image(s) have a near-duplicate in another split"))

    if data.scored is None:
        for name, level in (("label_error_rate", cfg.label_error_rate_above),
                            ("in_sample_predictions", cfg.in_sample_images_above),
                            ("unreviewed_issues", cfg.unreviewed_issues_above),
                            ("images_with_issues", cfg.images_with_issues_above)):
            out.append(CheckResult(name, WARN, None, _threshold(level, True),
                                   "no score run: run 'cvcurate score' first for this check"))
    else:
        flat = [s for per in data.scored for s in per]
        run = data.run
        summary = run.summary if run is not None else {}
        if "expected_label_errors" in summary:
            expected, sd = float(summary["expected_label_errors"]), float(summary.get("expected_label_errors_sd", 0.0))
        else:  # no run record with the scores: their sum and spread
            expected = float(sum(s.score for s in flat if s.type in LABEL_ERROR_TYPES))
            sd = float(sum(s.score * (1 - s.score) for s in flat if s.type in LABEL_ERROR_TYPES)) ** 0.5
        rate = expected / n_boxes if n_boxes else 0.0
        lo, hi = max(0.0, expected - 1.96 * sd), expected + 1.96 * sd
        reviewed = (run.info.get("reviewed") if run is not None else None) or {}
        cal = (summary.get("calibration") or {})
        how = ("calibrated on this data by injected errors" if cal.get("curves") else "shipped priors")
        out.append(_check(
            "label_error_rate", round(rate, 6), cfg.label_error_rate_above, True,
            f"expected {expected:.1f} real label errors (95 % interval {lo:.1f}-{hi:.1f}) per {n_boxes} boxes: the "
            f"sum of p over {summary.get('issues', len(flat))} issues"
            + (f", after review: {reviewed.get('applied', 0)} fixed, {reviewed.get('rejected', 0)} rejected, "
               f"{reviewed.get('confirmed', 0)} confirmed and not applied yet" if reviewed else "")
            + f" ({data.score_method})",
            ["label_error_rate is the expected number of real errors per box: the sum of each label-error issue's "
             "probability p (" + ", ".join(LABEL_ERROR_TYPES) + f"; {how}). The interval counts only the chance in "
             "those probabilities, not an error of the calibration itself; it assumes the data's own errors look "
             "like the injected ones and misses errors no signal sees (docs/scoring.md)"]))
        open_ = sum(1 for s in flat if s.score >= cfg.unreviewed_min_score and not s.decided)
        out.append(_check("unreviewed_issues", open_, cfg.unreviewed_issues_above, True,
                          f"{open_} issue(s) scored >= {cfg.unreviewed_min_score:g} have no review decision"))
        inside = run.in_sample_images if run is not None else None
        out.append(_check("in_sample_predictions", int(inside or 0), cfg.in_sample_images_above, True,
                          (f"{inside} image(s) were scored with predictions of a model trained on them: in-sample, "
                           f"they hide label errors there; {in_sample_remedy(data.dataset or 'NAME', inside, n_images)}")
                          if inside else "the score run's predictions are out-of-sample (or their model is unknown)"))
        conv = (run.info.get("conventions") if run is not None else None) or {}
        mixed = [c for c in conv.get("classes", []) if c.get("mixed") and not c.get("adopted")]
        out.append(CheckResult(
            "labeling_conventions", WARN if mixed else PASS, float(len(mixed)), "warn if > 0",
            ("; ".join(f"{quoted(c['name'])} is boxed whole in {100 * c['shares']['whole']:.0f} % and in pieces in "
                       f"{100 * c['shares']['pieces']:.0f} % of its {c['judged']} judged images" for c in mixed)
             + ": the model learns neither style; settle one per class ('cvcurate conventions' shows them)")
            if mixed else ("every class is boxed one way (pieces or whole)" if conv else
                           "no conventions in the score run (no predictions, or an older run)")))
        min_p = run.queue_min_p if run is not None else 0.5
        with_issues = sum(1 for per in data.scored if any(s.score >= min_p for s in per))
        out.append(_check("images_with_issues", round(with_issues / n_images, 6) if n_images else 0.0,
                          cfg.images_with_issues_above, True,
                          f"{with_issues} of {n_images} images have at least one issue with p >= {min_p:g} "
                          f"(the review queues' threshold)"))
    return GateResult(source=data.source, checks=out)


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
def to_dict(result: GateResult) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "source": result.source, "status": result.status,
            "passed": result.passed, "checks": [c.to_dict() for c in result.checks], **result.extra}


def to_json(result: GateResult) -> str:
    return json.dumps(to_dict(result), indent=2) + "\n"


def to_junit(result: GateResult) -> str:
    """JUnit XML: one ``testsuite`` named cvcurate-gate, one ``testcase`` per check; a failed
    check is a ``failure``, a warning passes with its message in ``system-out``."""
    fails = sum(c.status == FAIL for c in result.checks)
    suite = ET.Element("testsuite", name="cvcurate-gate", tests=str(len(result.checks)), failures=str(fails),
                       errors="0", skipped="0")
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname="cvcurate.gate", name=c.name)
        text = f"{c.status}: {c.message} (value {c.value}, threshold {c.threshold})"
        if c.notes:
            text += "\n" + "\n".join(c.notes)
        if c.status == FAIL:
            ET.SubElement(case, "failure", message=c.message, type="gate").text = text
        else:
            ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites", name="cvcurate gate", tests=str(len(result.checks)), failures=str(fails))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_ICON = {PASS: "pass", WARN: "warn", FAIL: "**FAIL**"}


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(result: GateResult, extra_sections: Sequence[str] = ()) -> str:
    lines = [f"## cvcurate gate: {result.status.upper()}", "", f"Source: `{_md(result.source)}`", "",
             "| check | status | value | threshold | details |", "|---|---|---|---|---|"]
    for c in result.checks:
        value = "-" if c.value is None else f"{c.value:g}" if isinstance(c.value, float) else str(c.value)
        lines.append(f"| {c.name} | {_ICON[c.status]} | {value} | {_md(c.threshold)} | {_md(c.message)} |")
    notes = [n for c in result.checks for n in c.notes]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {_md(n)}" for n in notes]
    for sec in extra_sections:
        lines += ["", sec]
    return "\n".join(lines) + "\n"
