"""The report: build it from plain data (:func:`build_report`), write it as HTML, Markdown and JSON
(:func:`write_report`); :func:`make_report` does both.

Files in the out dir: ``report.html``, ``report.md``, ``report.json``, the plots (PNG) under
``plots/`` and the thumbnails (JPEG) under ``thumbs/`` (both replaced on each run). The HTML page
embeds every image as a data URI,
so it is one self-contained file (it still opens when mailed or moved); the Markdown references
the image files by relative path, the JSON names them. Nothing refers to the network: no script, no
font, no stylesheet from elsewhere.

A section that cannot be made (never scored: no slices and no top issues; no evaluation: no
detector plots) is left out, and the report says which and why, at the top and in ``left_out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..names import quoted
from ..types import Issue, LabelSet, RunRecord
from . import plots
from .page import to_html
from .slices import (SLICE_COLUMNS, SLICE_KINDS, SliceResult, class_balance, class_balance_markdown,
                     compute_slices, slice_row, slice_table_markdown)
from .thumbs import thumbnail

KIND_TITLES = {"class": "class", "box_size": "box size", "brightness": "image brightness", "split": "split",
               "source": "import source"}


def default_queue_of() -> dict[str, str]:
    from ..scoring import QUEUES

    return {t: q for q, types in QUEUES.items() for t in types}


@dataclass
class ReportInput:
    """Everything the report reads; the stage gathers it from the store.

    ``issues``: the last score run's issues (None: never scored). ``brightness``: per image mean
    grey level 0-255 (NaN where unreadable; None: not measured). ``sources``: per image import
    source name (None: not recorded). ``evaluation``: ``EvalResult.to_dict()`` (see
    :mod:`cvcurate.detector.evaluate`), optionally with ``"pr_curves"`` as returned by
    :func:`cvcurate.analysis.curves.pr_curves`; None: no evaluation. ``why_no_*``: the line the
    report prints where it leaves the section out (the stage knows best: no predictions field,
    never evaluated, ...). ``subtitle``: what the report was made from (dataset, predictions field).
    """

    labels: LabelSet
    issues: list[Issue] | None = None
    brightness: np.ndarray | None = None
    sources: Sequence[str | None] | None = None
    evaluation: Mapping[str, Any] | None = None
    queue_of: dict[str, str] = field(default_factory=default_queue_of)
    title: str = "cvcurate report"
    subtitle: str = ""
    why_no_issues: str = "the dataset was never scored (run 'cvcurate score NAME')"
    why_no_evaluation: str = "no evaluation of predictions was given (run 'cvcurate predict' and 'cvcurate evaluate')"
    shown_paths: Sequence[str] | None = None  # per image, its path as shown (relative; None: the file names)
    min_p: float = 0.0  # issues count (slices, queues) from this probability up: the run's queue threshold
    run: RunRecord | None = None  # the score run's record: its one count of issues and expected errors


@dataclass
class Figure:
    name: str  # file stem
    section: str
    title: str
    png: bytes
    caption: str = ""

    @property
    def file(self) -> str:
        return f"plots/{self.name}.png"


@dataclass
class Thumb:
    queue: str
    rank: int
    issue: Issue
    image: bytes  # JPEG
    drawn: str
    file: str
    shown: str = ""  # the image's path as the report shows it (never absolute: ReportInput.shown_paths)

    def to_dict(self) -> dict[str, Any]:
        i = self.issue
        return {"queue": self.queue, "rank": self.rank, "type": i.type, "score": round(float(i.score), 6),
                "image": self.shown or Path(i.filepath).name, "box": i.box, "sample_id": i.sample_id, "reason": i.reason,
                "drawn": self.drawn, "thumbnail": self.file}


@dataclass
class Report:
    title: str
    subtitle: str
    summary: dict[str, Any]
    slices: SliceResult | None
    balance: dict[str, Any]
    evaluation: dict[str, Any] | None
    figures: list[Figure]
    queues: dict[str, int]  # queue -> issues in it (all of them, not only the thumbnails)
    thumbs: list[Thumb]
    left_out: list[tuple[str, str]]  # (section, why)
    top_slices: int = 10
    conventions: dict[str, Any] | None = None  # the score run's labeling conventions (ClassConvention dicts)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "title": self.title, "subtitle": self.subtitle, "summary": self.summary,
                "left_out": [{"section": s, "why": w} for s, w in self.left_out],
                "slices": self.slices.to_dict() if self.slices else None,
                "top_slices": [s.to_dict() for s in self.slices.ranked()[:self.top_slices]] if self.slices else None,
                "class_balance": self.balance, "evaluation": self.evaluation,
                "figures": [{"name": f.name, "section": f.section, "title": f.title, "file": f.file,
                             "caption": f.caption} for f in self.figures],
                "queues": self.queues, "top_issues": [t.to_dict() for t in self.thumbs],
                "conventions": self.conventions}


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def _figure(figures: list[Figure], left: list[tuple[str, str]], name: str, section: str, title: str,
            png: bytes | None, why: str) -> None:
    """A plot in its section, or the section left out with the reason when there is nothing to plot."""
    if png is None:
        left.append((title.lower(), why))
    else:
        figures.append(Figure(name, section, title, png))


def _queue_order(queue_of: Mapping[str, str]) -> list[str]:
    return list(dict.fromkeys(queue_of.values()))


def build_report(inp: ReportInput, *, top_n: int = 6, top_slices: int = 10,
                 augment_plan: Mapping[str, Any] | None = None) -> Report:
    """Compute every section that the input allows; images are read only for the top ``top_n``
    issues of each queue."""
    labels = inp.labels
    left: list[tuple[str, str]] = []
    n_boxes = labels.num_boxes
    summary: dict[str, Any] = {
        "images": len(labels), "boxes": n_boxes, "classes": len(labels.classes),
        "images_without_boxes": sum(1 for r in labels.records if len(r.gt) == 0),
        "splits": dict(sorted({s: sum(1 for r in labels.records if (r.split or "(no split)") == s)
                               for s in {r.split or "(no split)" for r in labels.records}}.items())),
        "issues": None if inp.issues is None else len(inp.issues)}
    if inp.run is not None and "flagged" in inp.run.summary:  # the run's own count, as score, review and gate print
        rs = inp.run.summary
        summary.update(issues=rs["issues"], flagged=rs["flagged"], flagged_min_p=inp.run.queue_min_p,
                       expected_label_errors=rs.get("expected_label_errors"),
                       expected_label_errors_sd=rs.get("expected_label_errors_sd"))

    slices = None
    queues: dict[str, int] = {}
    thumbs: list[Thumb] = []
    if inp.issues is None:
        left.append(("label issues per slice", inp.why_no_issues))
        left.append(("top issues of each queue", inp.why_no_issues))
    else:
        slices = compute_slices(labels, inp.issues, brightness=inp.brightness, sources=inp.sources,
                                queue_of=inp.queue_of, min_p=inp.min_p)
        for kind, why in slices.left_out.items():
            left.append((f"slices by {KIND_TITLES.get(kind, kind)}", why))
        summary["label_issues_counted"] = slices.overall.issues
        summary["issues_per_100_boxes"] = (None if slices.overall.issues_per_100_boxes is None
                                           else round(slices.overall.issues_per_100_boxes, 3))
        summary["images_with_label_issues"] = slices.overall.images_with_issues
        index = {r.filepath: r for r in labels.records}
        shown = dict(zip((r.filepath for r in labels.records),
                         inp.shown_paths or [Path(r.filepath).name for r in labels.records]))
        by_queue: dict[str, list[Issue]] = {}
        for iss in inp.issues:
            by_queue.setdefault(inp.queue_of.get(iss.type, "other"), []).append(iss)
        order = _queue_order(inp.queue_of) + (["other"] if "other" in by_queue else [])
        for q in order:
            # an issue whose image is not in the labels (a stale score run) gets no thumbnail
            items = sorted((i for i in by_queue.get(q, []) if i.filepath in index and i.score >= inp.min_p),
                           key=lambda i: -i.score)
            queues[q] = len(items)
            for rank, iss in enumerate(items[:top_n], start=1):
                png, drawn = thumbnail(index[iss.filepath], iss, labels.classes)
                thumbs.append(Thumb(q, rank, iss, png, drawn, f"thumbs/{q}_{rank:02d}.jpg", shown[iss.filepath]))
        if not inp.issues:
            left.append(("top issues of each queue", "the score run found no issues"))

    figures: list[Figure] = []
    for name, title, fn, why in (
            ("counts", "Instances and images per class and split", plots.counts_per_class_split,
             "the dataset has no classes"),
            ("boxes_per_image", "Boxes per image", plots.boxes_per_image, "the dataset has no images"),
            ("box_shape", "Box size and aspect ratio per class", plots.box_shape_per_class,
             "the dataset has no box of positive area")):
        _figure(figures, left, name, "dataset", title, fn(labels), why)

    evaluation = None
    if inp.evaluation is None:
        left.append(("detector quality per class, confusion matrix, precision/recall curves", inp.why_no_evaluation))
    else:
        ev = inp.evaluation
        evaluation = {k: ev.get(k) for k in ("map50", "map50_95", "ap50", "ap50_95", "gt_count", "pred_count",
                                             "images", "conf_thresh", "iou_thresh", "confusion",
                                             "confusion_labels", "in_sample", "out_of_sample") if k in ev}
        for name, title, fn, arg, why in (
                ("ap_per_class", "Average precision per class", plots.ap_per_class, ev,
                 "the evaluation has no class with ground truth"),
                ("confusion", "Confusion matrix", plots.confusion, ev, "the evaluation has no confusion matrix"),
                ("pr_curves", f"Precision/recall curves per class (IoU {ev.get('iou_thresh', 0.5)})",
                 plots.pr_curves_plot, ev.get("pr_curves") or {},
                 "the evaluation has no precision/recall curves")):
            _figure(figures, left, name, "detector", title, fn(arg), why)
        if ev.get("pr_curves"):
            evaluation["pr_ap50"] = {c: v.get("ap") for c, v in ev["pr_curves"].items()}

    balance = class_balance(labels, augment_plan)
    conventions = (inp.run.info.get("conventions") if inp.run is not None else None) or None
    if conventions is None and inp.run is not None:  # never scored: the sections above say so
        left.append(("labeling conventions", "the score run measured none (no predictions, or a run of an older "
                                             "cvcurate): run 'cvcurate score NAME' with predictions"))
    return Report(inp.title, inp.subtitle, summary, slices, balance, evaluation, figures, queues, thumbs, left,
                  top_slices, conventions)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _summary_lines(r: Report) -> list[str]:
    s = r.summary
    out = [f"{s['images']} images, {s['boxes']} boxes, {s['classes']} classes; "
           f"{s['images_without_boxes']} images without boxes; splits: "
           + ", ".join(f"{k} {v}" for k, v in s["splits"].items())]
    if s.get("issues") is not None:
        o = r.slices.overall if r.slices else None
        line = f"{s['issues']} issues in the last score run"
        if s.get("flagged") is not None:
            line += f", {s['flagged']} with p >= {s.get('flagged_min_p', 0.5):g}"
        if o is not None:
            per = "-" if o.issues_per_100_boxes is None else f"{o.issues_per_100_boxes:.1f}"
            line += (f"; {o.issues} of those label issues ({per} per 100 boxes), on "
                     f"{o.images_with_issues} of {o.images} images")
        out.append(line)
        if s.get("expected_label_errors") is not None:
            sd = float(s.get("expected_label_errors_sd") or 0.0)
            out.append(f"expected real label errors: {s['expected_label_errors']:.1f} (95 % interval "
                       f"{max(0.0, s['expected_label_errors'] - 1.96 * sd):.1f}-{s['expected_label_errors'] + 1.96 * sd:.1f}), "
                       f"the sum of the issues' probabilities p; slices give theirs as expected errors per 100 boxes")
    return out


def to_markdown(r: Report) -> str:
    L = [f"# {r.title}", ""]
    if r.subtitle:
        L += [r.subtitle, ""]
    L += [f"- {x}" for x in _summary_lines(r)] + [""]
    if r.left_out:
        L += ["Left out:", ""] + [f"- **{s}**: {w}" for s, w in r.left_out] + [""]
    if r.slices:
        L += ["## Label issues per slice", "", slice_table_markdown(r.slices, r.top_slices)]
        for kind in SLICE_KINDS:
            if kind not in r.slices.kinds:
                continue
            L += [f"### By {KIND_TITLES[kind]}", "", "| " + " | ".join(SLICE_COLUMNS) + " |",
                  "|" + "---|" * len(SLICE_COLUMNS)]
            L += ["| " + " | ".join(_md(c) for c in slice_row(s)) + " |" for s in r.slices.kinds[kind]] + [""]
    if r.queues:
        L += ["## Top issues of each queue", ""]
        for q, n in r.queues.items():
            items = [t for t in r.thumbs if t.queue == q]
            L += [f"### {q} ({n} issue{'' if n == 1 else 's'})", ""]
            if not items:
                L += ["No issues in this queue.", ""]
            for t in items:
                L += [f"![{q} {t.rank}]({t.file})", "",
                      f"{t.rank}. **{t.issue.type}** (score {t.issue.score:.2f}) `{Path(t.issue.filepath).name}`: "
                      f"{_md(t.issue.reason)} ({t.drawn})", ""]
    L += ["## Dataset", ""]
    for f in r.figures:
        if f.section == "dataset":
            L += [f"### {f.title}", "", f"![{f.title}]({f.file})", ""]
    b = r.balance
    L += ["## Class balance plan", "",
          f"Against the YOLO rule of thumb of {b['rule_images']:,} images and {b['rule_instances']:,} instances "
          f"per class; largest class: {quoted(b['largest_class']) if b['largest_class'] is not None else 'none'} ({b['largest_instances']} instances, "
          f"{b['largest_images']} images at most in one class).", "",
          class_balance_markdown(b), f"Augment: {b['augment']}.", ""]
    if r.conventions:
        from .conventions_page import INTRO, markdown_table

        L += ["## Labeling conventions", "", INTRO, "", markdown_table(r.conventions["classes"]), ""]
        L += [f"- **mixed**: {quoted(c)} is boxed both ways" for c in r.conventions.get("mixed", [])] + [""]
    if r.evaluation is not None:
        e = r.evaluation
        L += ["## Detector quality", ""]
        if e.get("map50") is not None:
            L += [f"mAP@0.5 {e['map50']:.3f}, mAP@0.5:0.95 {e.get('map50_95', 0):.3f} on {e.get('images')} images"
                  + (f" (**in-sample**: the model trained on {e['in_sample']} of them)" if e.get("in_sample") else "")
                  + ".", ""]
            if e.get("out_of_sample"):
                o = e["out_of_sample"]
                L += [f"Out-of-sample only ({o['images']} images the model did not train on): mAP@0.5 {o['map50']:.3f}, "
                      f"mAP@0.5:0.95 {o['map50_95']:.3f}.", ""]
        for f in r.figures:
            if f.section == "detector":
                L += [f"### {f.title}", "", f"![{f.title}]({f.file})", ""]
    return "\n".join(L).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_report(report: Report, out_dir: str | Path, *, embed_images: bool = True) -> dict[str, Path]:
    """Write report.html / report.md / report.json and the images; returns their paths by name."""
    out = Path(out_dir)
    for sub in ("plots", "thumbs"):
        d = out / sub
        d.mkdir(parents=True, exist_ok=True)
        for old in [*d.glob("*.png"), *d.glob("*.jpg")]:
            old.unlink()
    for f in report.figures:
        (out / f.file).write_bytes(f.png)
    for t in report.thumbs:
        (out / t.file).write_bytes(t.image)
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "report.json"}
    paths["html"].write_text(to_html(report, embed_images=embed_images), encoding="utf-8")
    paths["md"].write_text(to_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(_jsonable(report.to_dict()), indent=1) + "\n", encoding="utf-8")
    return paths


def make_report(inp: ReportInput, out_dir: str | Path, *, top_n: int = 6, top_slices: int = 10,
                augment_plan: Mapping[str, Any] | None = None,
                embed_images: bool = True) -> tuple[Report, dict[str, Path]]:
    """:func:`build_report` then :func:`write_report`."""
    report = build_report(inp, top_n=top_n, top_slices=top_slices, augment_plan=augment_plan)
    return report, write_report(report, out_dir, embed_images=embed_images)
