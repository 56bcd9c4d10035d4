"""The score command: find likely label errors and inconsistencies."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..scoring import QUEUES
from ..stages.score import run_score, truth_check
from . import app
from ..errors import shell_arg
from .common import (check_ray_workers, console, engine_option, esc, ray_workers_option, read_pred_field_option, say,
                     wait_option)


@app.command("score")
def score_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    pred_field: Optional[str] = read_pred_field_option(
        "Field holding predictions (none: model-free checks only)", short=True),
    predictions_alias: Optional[str] = typer.Option(None, "--predictions", hidden=True,
                                                    help="Old name of --pred-field."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Score config [default: configs/score.yaml]."),
    pixels: bool = typer.Option(True, "--pixels/--no-pixels", help="Also check blur, exposure and near-duplicates."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for scores.json, issues.csv, images.csv "
                                       "[default: NAME_scores]."),
    top: int = typer.Option(10, "--top", help="How many of the most suspicious images to print."),
    only_out_of_sample: bool = typer.Option(False, "--only-out-of-sample", help="Score and queue only the images "
                                            "the predictions' model did not train on (their predictions are "
                                            "out-of-sample; in-sample ones hide label errors)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Truth file of 'cvcurate corrupt': also print how "
                                         "well the ranking finds the injected errors."),
    wait: float = wait_option(),
    engine: str = engine_option("Only the pixel features run on it; everything dataset-wide runs here."),
    workers: Optional[int] = ray_workers_option(),
) -> None:
    """Score every image and box for likely label errors, with a reason for each.

    Every issue has p, the estimated probability that it is a real error of its type. From
    predictions: overlooked, swap, badloc, spurious, split and merged boxes, with p calibrated on
    this dataset by injecting known errors into copies of its labels (docs/scoring.md). Without a model: degenerate, out-of-image, duplicate and
    conflicting boxes, fragments, size outliers, inconsistent boxing style per class, rare
    class mixes, blur, exposure, near-duplicates and train/val leakage. Results go to the
    dataset (fields cvc_*, saved views cvc-<queue> for review) and to JSON/CSV files.

    Example: cvcurate score neu --pred-field predictions_oof
    """
    check_ray_workers(engine, workers)
    run = run_score(name, pred_field=pred_field or predictions_alias, config=config, pixels=pixels, out_dir=out,
                    progress=True, only_out_of_sample=only_out_of_sample, wait=wait, engine=engine, workers=workers)
    res = run.result
    for note in run.notes:
        say(note if note.startswith("warning:") else f"note: {note}")
    summ = run.summary
    console.print(f"[bold]{esc(name)}[/]: {summ['flagged']} issues with p >= {summ['queue_min_p']:g} in "
                  f"{summ['flagged_images']} of {summ['images']} images ({summ['issues']} listed in all); expected "
                  f"real label errors {summ['expected_label_errors']:.1f} +- {1.96 * summ['expected_label_errors_sd']:.1f} "
                  f"per {summ['boxes']} boxes (the sum of p)")
    for q, info in summ["queues"].items():
        types = QUEUES[q]
        detail = ", ".join(f"{t} {sum(1 for i in res.issues if i.type == t and i.score >= res.queue_min_p)}"
                           for t in types if any(i.type == t and i.score >= res.queue_min_p for i in res.issues))
        say(f"  queue {q:<12} {info['flagged']:>6}  expected errors {info['expected_flagged']:>7.1f}"
            + (f"  ({detail})" if detail else "") + f"   [{info['listed']} with --all]")
    say("most suspicious images:")
    by_image: dict[str, list] = {}
    for i in res.issues:
        by_image.setdefault(i.filepath, []).append(i)
    for k in res.ranking()[:top]:
        rec = res.labels.records[k]
        if res.image_score[k] <= 0:
            break
        best = max(by_image.get(rec.filepath, []), key=lambda i: i.score, default=None)
        why = f"{best.type}: {best.reason}" if best else "low ObjectLab label quality"
        say(f"  p {res.image_score[k]:.3f}  {Path(rec.filepath).name}  {why}")
    if truth is not None:
        m = truth_check(res, truth)
        say(f"against {truth}: {m.found_in_top_k} of {m.corrupted} corrupted images in the top "
            f"{m.corrupted}; average precision {m.average_precision:.3f}")
        for t, v in m.per_type.items():
            say(f"  {t:<12} {v['found_in_top_k']:>4} of {v['count']:<4} AP {v['average_precision']:.3f}")
    say(f"written: {run.json_path}, {run.csv_path}, {run.images_csv_path}; "
        f"review with 'cvcurate review {shell_arg(name)}'")
