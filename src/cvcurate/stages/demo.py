"""The whole loop on the embedded synthetic steel data, with nothing downloaded.

synth -> import -> corrupt (known errors) -> predict (shipped default detector, flip-checked) -> score -> top
issues and how many injected errors were found -> export v1 and gate (noisy) -> confirm the fixes
the truth file agrees with (standing in for a reviewer) -> apply -> augment the rarest class
-> score again -> gate (after fixes) -> export v2 -> diff v1 v2 -> (the App).

Every step is the same stage function the CLI command of that step calls; this module only
chains them and says what happened, line by line (``log``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import gate as g
from .. import store
from ..boxes import iou as _iou
from ..corrupt import load_truth
from ..scoring.truth import truth_metrics
from . import apply as apply_stage
from . import review
from .corrupt import corrupt
from .export import diff, export
from .gate import run_gate, write_reports
from .imports import ImportOptions, import_dataset
from .predict import predict
from ..names import FIX_FIELD, Attr
from .score import run_score

# which proposed fix repairs which injected error (merge and split have no fix yet)
FIX_FOR = {"swap": ("relabel",), "overlooked": ("add",), "spurious": ("remove",), "degenerate": ("remove", "clip"),
           "badloc": ("move",)}


@dataclass
class DemoResult:
    out: Path
    dataset: str
    injected: int
    found_in_top_k: int
    average_precision: float
    confirmed: int
    applied: int
    gate_before: str
    gate_after: str
    diff: Any
    seconds: float
    notes: list[str] = field(default_factory=list)


def fixes_the_truth_agrees_with(name: str, truth: dict[str, Any]) -> list[str]:
    """Ids of the proposed fixes that repair an injected error of the truth file: the right
    action on the injected box (or, for an added or moved box, within IoU 0.5 of the true box)."""
    labels = store.read(name)
    classes = truth["classes"]
    errors: dict[str, list[dict]] = {}
    for e in truth["errors"]:
        errors.setdefault(e["filepath"], []).append(e)
    fixes = store.get_detections(name, FIX_FIELD)
    ids = {r.sample_id: r for r in labels.records}
    agree = []
    for sid, dets in fixes.items():
        rec = ids.get(sid)
        if rec is None or rec.filepath not in errors:
            continue
        gt_ids = [str(i) for i in rec.gt.data.get("id", [])]
        for d in dets:
            for e in errors[rec.filepath]:
                if d.get(Attr.ACTION) not in FIX_FOR.get(e["type"], ()):
                    continue
                box = gt_ids.index(d[Attr.TARGET]) if d.get(Attr.TARGET) in gt_ids else None
                xyxy = store.rel_xywh_to_xyxy(np.asarray([d["bounding_box"]], float), rec.width, rec.height)[0].tolist()
                if e["type"] == "overlooked":
                    ok = any(_iou(xyxy, o) >= 0.5 and d.get(Attr.CLASS) == classes[c]
                             for o, c in zip(e["original"], e["original_class"]))
                elif e["type"] == "badloc":
                    ok = box in e["boxes"] and any(_iou(xyxy, o) >= 0.5 for o in e["original"])
                elif e["type"] == "swap":
                    ok = box in e["boxes"] and d.get(Attr.CLASS) in [classes[c] for c in e["original_class"]]
                else:
                    ok = box in e["boxes"]
                if ok:
                    agree.append(d["id"])
                    break
    return agree


def run_demo(out: str | Path = "out/demo", *, images: int = 300, seed: int = 7, name: str = "demo",
             log: Callable[[str], None] = print, progress: bool = False) -> DemoResult:
    from ..synth import generate

    t0 = time.time()
    out = Path(out)
    noisy = f"{name}_noisy"
    for d in ("data", "export-v1", "export-v2", "scores", "scores-after", "changes", "augment"):
        shutil.rmtree(out / d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    step = [0]

    def say(text: str) -> None:
        step[0] += 1
        log(f"[{step[0]:>2}] {text}  ({time.time() - t0:.0f} s)")

    labels = generate(out / "data", images, seed, workers=2, overwrite=True, progress=progress)
    say(f"synth: {len(labels)} synthetic steel images, {labels.num_boxes} exact boxes in {out / 'data'}")
    imp = import_dataset(out / "data", name, ImportOptions(format="voc"), overwrite=True,
                         report_path=out / "import_report.json")
    say(f"import: dataset {name!r}, {imp.write.added} images")
    run = corrupt(name, noisy, rate=0.1, seed=0, truth=out / "truth.json", overwrite=True)
    say(f"corrupt: {len(run.result.errors)} known label errors injected into {noisy!r} "
        f"({', '.join(f'{k} {v}' for k, v in run.result.by_type().items())}); truth in {run.truth_path}")
    pr = predict(noisy, model="default", flip_check=True)
    say(f"predict: {pr.boxes} boxes from the shipped default detector, flip-checked (predict --flip-check)")
    sc = run_score(noisy, pred_field="predictions", out_dir=out / "scores", progress=progress)
    truth = load_truth(out / "truth.json")
    m = truth_metrics(sc.result, truth)
    summ = sc.summary
    say(f"score: {summ['flagged']} issues with p >= {summ['queue_min_p']:g} ({summ['issues']} listed); expected real "
        f"label errors {summ['expected_label_errors']:.1f} (the sum of p) against {len(truth['errors'])} injected; "
        f"{m.found_in_top_k} of {m.corrupted} corrupted images in the top {m.corrupted}; average precision "
        f"{m.average_precision:.3f}")
    by_image: dict[str, list] = {}
    for i in sc.result.issues:
        by_image.setdefault(i.filepath, []).append(i)
    for k in sc.result.ranking()[:5]:
        rec = sc.result.labels.records[k]
        best = max(by_image.get(rec.filepath, []), key=lambda i: i.score, default=None)
        if best is not None:
            log(f"       {sc.result.image_score[k]:.2f}  {Path(rec.filepath).name}  {best.type}: {best.reason}")
    v1 = export(noisy, out / "export-v1", format="yolo", overwrite=True)
    before = run_gate(noisy)
    write_reports(before, markdown=out / "gate-before.md", junit=out / "gate-before.xml")
    say(f"export v1 ({v1.images} images) and gate on the noisy data: {before.status.upper()} "
        f"({', '.join(c.name for c in before.checks if c.status == g.FAIL) or 'no failed check'})")
    agree = fixes_the_truth_agrees_with(noisy, truth)
    confirmed = review.confirm_fixes(noisy, agree)
    say(f"review: {confirmed} proposed fixes confirmed automatically where the truth file agrees "
        f"(this stands in for a reviewer in the App)")
    cs = apply_stage.apply(noisy, log_dir=out / "changes")
    say(f"apply: {cs.applied} fixes applied to {len(cs.changes)} images (undo: cvcurate apply {noisy} --undo)")
    sc2 = run_score(noisy, pred_field="predictions", out_dir=out / "scores-after")
    left = len(truth["errors"]) - cs.applied
    say(f"score again: expected real label errors {sc2.summary['expected_label_errors']:.1f} against "
        f"{left} left of the {len(truth['errors'])} injected ({cs.applied} fixed)")
    after = run_gate(noisy)
    write_reports(after, markdown=out / "gate-after.md", junit=out / "gate-after.xml", json_path=out / "gate-after.json")
    failed = [c for c in after.checks if c.status == g.FAIL]
    say(f"gate after the fixes: {after.status.upper()} "
        + (f"({'; '.join(f'{c.name}: {c.message}' for c in failed)})" if failed else "(no failed check)"))
    for b, a in zip(before.checks, after.checks):
        if b.value != a.value and b.value is not None and a.value is not None:
            log(f"       {a.name}: {b.value:g} -> {a.value:g} ({b.status} -> {a.status})")
    from .augment import augment as run_augment

    notes: list[str] = []
    before_counts = {c: 0 for c in sc.result.labels.classes}
    for r in store.read(noisy).records:
        for c in r.gt.class_id:
            before_counts[sc.result.labels.classes[int(c)]] += 1
    rarest = min(before_counts, key=before_counts.get)
    aug = run_augment(noisy, classes=[rarest], workers=2, seed=0, out=out / "augment", progress=progress)
    say(f"augment: {aug.added} samples of the rarest class {rarest!r} ({before_counts[rarest]} instances) "
        f"added, to {max(before_counts.values())} instances (pipeline {aug.pipeline}, tagged 'augmented')")
    export(noisy, out / "export-v2", format="yolo", overwrite=True)
    d = diff(out / "export-v1", out / "export-v2")
    per = d.per_class()
    total = {k: sum(v[k] for v in per.values()) for k in ("added", "removed", "moved", "relabelled")}
    say(f"export v2 and diff v1 -> v2: {len(d.images_changed)} images changed; boxes "
        + ", ".join(f"{k} {v}" for k, v in total.items()))
    return DemoResult(out=out, dataset=noisy, injected=len(run.result.errors), found_in_top_k=m.found_in_top_k,
                      average_precision=m.average_precision, confirmed=confirmed, applied=cs.applied,
                      gate_before=before.status, gate_after=after.status, diff=d, seconds=time.time() - t0,
                      notes=notes)
