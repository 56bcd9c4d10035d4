"""Detector commands: train, predict, evaluate (see cvcurate.detector)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import store
from ..errors import InputError, interrupt_leaves, shell_arg
from ..types import LabelSet
from . import app
from .common import say

DEVICE_HELP = "cpu or cuda (cuda without a GPU falls back to the CPU with a warning)."


def _check_device(device: str) -> str:
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown --device {device!r}: use cpu or cuda")
    return device


def _train_records(labels: LabelSet) -> tuple[LabelSet, str]:
    if any(r.split == "train" for r in labels.records):
        recs = [r for r in labels.records if r.split == "train"]
        return LabelSet(classes=list(labels.classes), records=recs), "split 'train'"
    return labels, "all images (no 'train' split)"


@app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Detector YAML [default: configs/detector.yaml]."),
    folds: Optional[int] = typer.Option(
        None, "--folds", "-k", help="Make K-fold out-of-fold predictions (field predictions_oof) instead of "
        "one checkpoint."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Checkpoint path [default: NAME_detector.pt]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs of the config."),
    field: str = typer.Option("predictions_oof", "--field", help="Field for the out-of-fold predictions."),
) -> None:
    """Train the detector from scratch, or make out-of-fold predictions for label-error scoring.

    Without --folds: trains on the dataset's 'train' split (all images when it has none), evaluates
    on the 'val' split when there is one, and saves a checkpoint. With --folds K: every image gets a
    prediction from a model trained on the other K-1 folds, written to the field predictions_oof.

    Examples:

      cvcurate train neu --epochs 40 --out models/neu.pt

      cvcurate train neu --folds 5
    """
    from ..detector.checkpoint import save_checkpoint
    from ..detector.config import load_detector_config

    _check_device(device)
    cfg = load_detector_config(config, overrides={"train": {"epochs": epochs}})
    labels = store.read(name)
    if folds is not None:
        from ..detector.train import kfold_predict

        if folds < 2:
            raise InputError(f"--folds must be at least 2, got {folds}")
        preds = kfold_predict(labels, folds, cfg, device=device, progress=True, log=say)
        store.write_detections(name, field, labels.records, preds, labels.classes)
        n = sum(len(p) for p in preds)
        say(f"wrote {n} out-of-fold predicted boxes for {len(preds)} images to field {field!r} "
            f"of {name} ({folds} folds)")
        return
    from ..detector.evaluate import evaluate
    from ..detector.predict import predict
    from ..detector.train import train

    train_set, what = _train_records(labels)
    say(f"training on {what}: {len(train_set)} images, {train_set.num_boxes} boxes, "
        f"{cfg.train.epochs} epochs")
    ckpt = train(train_set, cfg, device=device, progress=True, log=say)
    val = [r for r in labels.records if r.split == "val"]
    if val and sum(len(r.gt) for r in val):
        res = evaluate([r.gt for r in val], predict(ckpt, val, cfg.predict.batch_size, device), labels.classes)
        ckpt.metrics["val"] = res.to_dict()
        say(res.format())
    path = save_checkpoint(ckpt, out if out is not None else Path(f"{name}_detector.pt"))
    say(f"checkpoint saved to {path} ({ckpt.extra['train_seconds']:.0f} s of training)")


@app.command("predict")
def predict_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    model: str = typer.Option("default", "--model", "-m", help="default (synthetic-data weights), neu-det, or a "
                              "checkpoint path."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1, help="Images per batch."),
    field: str = typer.Option("predictions", "--field", help="Dataset field to write the predictions to."),
    predictions: Optional[Path] = typer.Option(
        None, "--predictions", help="Import predictions made elsewhere from this file/folder instead of running "
        "the detector."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Format of --predictions: coco or yolo."),
    coco_gt: Optional[Path] = typer.Option(
        None, "--coco-gt", help="COCO ground-truth JSON to resolve numeric image_id/category_id of COCO results."),
) -> None:
    """Predict boxes for every image of a dataset, or import predictions made by another model.

    Images are matched to imported predictions by file-name stem. Nothing is written when any
    prediction refers to an unknown image or class.

    Examples:

      cvcurate predict neu --model neu-det

      cvcurate predict neu --predictions results.json --format coco --coco-gt instances_val.json
    """
    labels = store.read(name)
    if predictions is not None:
        from ..detector.io import FORMATS, read_predictions

        if format not in FORMATS:
            raise InputError(f"--predictions needs --format, one of {', '.join(FORMATS)}")
        anns = read_predictions(predictions, format, labels, coco_gt=coco_gt)
        source = str(predictions)
    else:
        if format is not None:
            raise InputError("--format applies to --predictions only")
        from ..detector.checkpoint import load_checkpoint
        from ..detector.predict import predict, remap_classes

        _check_device(device)
        ckpt = load_checkpoint(model)
        mapping = ckpt.class_map(labels.classes, f"dataset {name!r}")
        anns = remap_classes(predict(ckpt, labels.records, batch_size, device, progress=True), mapping)
        source = f"model {model}"
    store.write_detections(name, field, labels.records, anns, labels.classes)
    say(f"wrote {sum(len(a) for a in anns)} predicted boxes for {len(anns)} images to field "
        f"{field!r} of {name} (from {source})")


@app.command("evaluate")
def evaluate_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    pred_field: str = typer.Option("predictions", "--pred-field", help="Field holding the predictions."),
    split: Optional[str] = typer.Option(None, "--split", help="Evaluate one split only (e.g. val)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Confidence threshold for the confusion matrix."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON path [default: NAME_eval_FIELD.json]."),
) -> None:
    """Score predictions against the ground truth: mAP@0.5 and mAP@0.5:0.95 per class (pycocotools)
    and a confusion matrix with a background row and column. Saves the numbers as JSON.

    Example: cvcurate evaluate neu --pred-field predictions_oof --split val
    """
    from ..detector.evaluate import evaluate

    if pred_field not in store.load(name).get_field_schema():
        raise InputError(f"dataset {name!r} has no field {pred_field!r}: "
                         f"run 'cvcurate predict {shell_arg(name)}' first")
    labels = store.read(name, pred_field=pred_field)
    recs = labels.records
    if split is not None:
        recs = [r for r in recs if r.split == split]
        if not recs:
            found = sorted({r.split for r in labels.records if r.split}) or ["none"]
            raise InputError(f"no images in split {split!r} (splits: {', '.join(found)})")
    res = evaluate([r.gt for r in recs], [r.pred for r in recs], labels.classes, conf_thresh=conf)
    res.meta = {"dataset": name, "pred_field": pred_field, "split": split}
    say(res.format())
    path = out if out is not None else Path(f"{name}_eval_{pred_field}.json")
    with interrupt_leaves(f"the store is unchanged; {path} may be partly written"):
        path = res.save_json(path)
    say(f"saved to {path}")
