"""Detector commands: train, predict, evaluate (see cvcurate.detector)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from . import app
from .common import (check_ray_workers, engine_option, ray_workers_option, read_pred_field_option, say,
                     wait_option)

DEVICE_HELP = "cpu or cuda (cuda without a GPU falls back to the CPU with a warning)."


@app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Detector YAML [default: configs/detector.yaml]."),
    folds: Optional[int] = typer.Option(
        None, "--folds", "-k", help="Make K-fold out-of-fold predictions (field predictions_oof) instead of "
        "one checkpoint."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Checkpoint path [default: NAME_detector.pt]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs of the config "
                                         "(train.finetune_epochs with --init)."),
    init: Optional[str] = typer.Option(
        None, "--init", help="Start from these weights and fine-tune instead of training from scratch: synth, "
        "neu-det or a checkpoint path; classes are matched by name, new classes get a fresh head "
        "[default: train.init of the config, empty: from scratch]."),
    pred_field: Optional[str] = typer.Option(None, "--pred-field", help="Field for the out-of-fold predictions "
                                             "[default: predictions_oof]."),
    field_alias: Optional[str] = typer.Option(None, "--field", hidden=True, help="Old name of --pred-field."),
    wait: float = wait_option(),
    flip_check: bool = typer.Option(
        False, "--flip-check", help="With --folds: each fold also predicts its images mirrored, as 'predict "
        "--flip-check' does."),
) -> None:
    """Train the detector, or make out-of-fold predictions for label-error scoring.

    Without --folds: trains on the dataset's 'train' split (all images when it has none), evaluates
    on the 'val' split when there is one, and saves a checkpoint. With --folds K: every image gets a
    prediction from a model trained on the other K-1 folds, written to the field predictions_oof;
    finished folds and the fold in training are kept in NAME_kfold/ after Ctrl-C or a kill, and the
    same command resumes after them. With --init every model starts from shipped or earlier weights
    and is fine-tuned briefly (a fraction of training from scratch); for --folds the weights must
    never have seen this dataset's images (else the predictions would be in-sample: refused).

    Examples:

      cvcurate train neu --epochs 40 --out models/neu.pt

      cvcurate train neu --folds 5 --init synth

      cvcurate train neu --folds 5 --init synth --flip-check

      cvcurate train mysteel --folds 5 --init neu-det
    """
    from ..stages import predict as stage

    if flip_check and folds is None:
        raise InputError("--flip-check applies to the out-of-fold predictions of --folds K (or to 'cvcurate predict')")
    if folds is not None:
        res = stage.kfold(name, folds=folds, config=config, epochs=epochs, device=device, init=init,
                          pred_field=pred_field or field_alias or "predictions_oof", log=say, wait=wait,
                          flip_check=flip_check)
        say(f"wrote {res.boxes} out-of-fold predicted boxes for {res.images} images to field "
            f"{res.field!r} of {name} ({folds} folds)")
        return
    tr = stage.train_model(name, config=config, epochs=epochs, device=device, out=out, init=init, log=say)
    if tr.evaluation is not None:
        say(tr.evaluation.format())
    say(f"checkpoint saved to {tr.checkpoint} ({tr.seconds:.0f} s of training)")


@app.command("predict")
def predict_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    model: str = typer.Option("default", "--model", "-m", help="default (synthetic-data weights), neu-det, or a "
                              "checkpoint path."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1, help="Images per batch."),
    pred_field: Optional[str] = typer.Option(None, "--pred-field", help="Dataset field to write the predictions "
                                             "to [default: predictions]."),
    field_alias: Optional[str] = typer.Option(None, "--field", hidden=True, help="Old name of --pred-field."),
    from_file: Optional[Path] = typer.Option(
        None, "--from-file", help="Import predictions made elsewhere from this file/folder instead of running "
        "the detector."),
    predictions_alias: Optional[Path] = typer.Option(None, "--predictions", hidden=True,
                                                     help="Old name of --from-file."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Format of --from-file: coco or yolo."),
    coco_gt: Optional[Path] = typer.Option(
        None, "--coco-gt", help="COCO ground-truth JSON to resolve numeric image_id/category_id of COCO results."),
    engine: str = engine_option("With ray and --device cuda: one GPU per worker."),
    workers: Optional[int] = ray_workers_option(),
    runtime: str = typer.Option("auto", "--runtime", help="auto (onnx on the CPU when cvcurate[onnx] is "
                                "installed; else, and with --engine ray, torch), torch, or onnx: the network on ONNX Runtime and the "
                                "rest in numpy, without loading torch once the checkpoint's export is cached "
                                "(CPU; about 1.5x faster end to end on 2 cores, the same boxes to about 1e-6)."),
    wait: float = wait_option(),
    class_agnostic: bool = typer.Option(
        False, "--class-agnostic", help="Read every predicted box as 'a defect' whatever the model's classes "
        "(for a dataset whose classes the model does not know): wide images in square tiles, each box given the "
        "class of the given box it overlaps most. Gives overlooked, spurious and badly-placed evidence without "
        "training; never swap evidence (the classes come from the labels)."),
    flip_check: bool = typer.Option(
        False, "--flip-check", help="Run the network again on each image mirrored left-right and top-bottom and "
        "keep, per box, how well the mirrored images' boxes agree with it: evidence 'score' reads (it ranked "
        "injected errors higher on synthetic data, no better on NEU-DET: docs/benchmarks.md). The boxes are the "
        "same; the network's work three times."),
) -> None:
    """Predict boxes for every image of a dataset, or import predictions made by another model.

    Images are matched to imported predictions by file-name stem. Nothing is written when any
    prediction refers to an unknown image or class.

    Examples:

      cvcurate predict neu --model neu-det

      cvcurate predict neu --model neu-det --runtime onnx

      cvcurate predict neu --model neu-det --flip-check

      cvcurate predict neu --model neu-det --engine ray --workers 4

      cvcurate predict severstal --model neu-det --class-agnostic

      cvcurate predict neu --from-file results.json --format coco --coco-gt instances_val.json
    """
    from ..stages import predict as stage

    field = pred_field or field_alias or "predictions"
    source_file = from_file or predictions_alias
    if source_file is not None:
        if class_agnostic or flip_check:
            raise InputError(f"{'--class-agnostic' if class_agnostic else '--flip-check'} applies to the detector's "
                             "predictions, not to --from-file")
        res = stage.import_predictions(name, source_file, format=format, coco_gt=coco_gt, pred_field=field,
                                       wait=wait)
    else:
        if format is not None:
            raise InputError("--format applies to --from-file only")
        check_ray_workers(engine, workers)
        res = stage.predict(name, model=model, device=device, batch_size=batch_size, pred_field=field,
                            engine=engine, workers=workers, runtime=runtime, wait=wait,
                            class_agnostic=class_agnostic, flip_check=flip_check)
    for note in res.notes:
        say(note)
    say(f"wrote {res.boxes} predicted boxes for {res.images} images to field "
        f"{res.field!r} of {name} (from {res.source})")


@app.command("evaluate")
def evaluate_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    pred_field: Optional[str] = read_pred_field_option(),
    split: Optional[str] = typer.Option(None, "--split", help="Evaluate one split only (e.g. val)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Confidence threshold for the confusion matrix."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON path [default: NAME_eval_FIELD.json]."),
) -> None:
    """Score predictions against the ground truth: mAP@0.5 and mAP@0.5:0.95 per class (pycocotools)
    and a confusion matrix with a background row and column. Saves the numbers as JSON.

    Example: cvcurate evaluate neu --pred-field predictions_oof --split val
    """
    from ..stages.predict import evaluate

    run = evaluate(name, pred_field=pred_field, split=split, conf=conf, out=out)
    meta = run.result.meta
    if meta.get("warning"):
        say(f"warning: {meta['warning']}")
    say(run.result.format())
    if meta.get("out_of_sample"):
        o = meta["out_of_sample"]
        say(f"out-of-sample only ({o['images']} images the model did not train on): mAP@0.5 {o['map50']:.4f}, "
            f"mAP@0.5:0.95 {o['map50_95']:.4f}")
    say(f"saved to {run.path}")
