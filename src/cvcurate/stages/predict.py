"""The predict stage: train the detector, k-fold out-of-fold predictions, predict with a checkpoint,
import predictions made elsewhere, evaluate predictions against the ground truth.

Each function reads the store, calls the detector package (pure compute: torch, no store) and
writes the store. torch is imported only inside these functions, so commands that do not predict
start without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import store
from ..errors import InputError, interrupt_leaves, shell_arg
from ..names import PRED_ATTRIBUTES
from ..types import LabelSet
from .datasets import check_free

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def check_device(device: str) -> str:
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown --device {device!r}: use cpu or cuda")
    return device


def train_records(labels: LabelSet) -> tuple[LabelSet, str]:
    """The records to train on: the 'train' split when there is one, else all."""
    if any(r.split == "train" for r in labels.records):
        recs = [r for r in labels.records if r.split == "train"]
        return LabelSet(classes=list(labels.classes), records=recs), "split 'train'"
    return labels, "all images (no 'train' split)"


@dataclass
class PredictResult:
    field: str
    images: int
    boxes: int
    source: str
    notes: list[str] = field(default_factory=list)


def training_setup(config: str | Path | None, epochs: int | None, init: str | None):
    """The detector config and the starting weights (a Checkpoint, or None from scratch): ``init``
    (else ``train.init`` of the config) names them; starting from them, training runs
    ``train.finetune_epochs`` unless ``epochs`` is given."""
    from ..detector.checkpoint import load_checkpoint
    from ..detector.config import load_detector_config

    cfg = load_detector_config(config, overrides={"train": {"epochs": epochs}})
    src = init if init is not None else cfg.train.init
    if not src:
        return cfg, None
    start = load_checkpoint(src)
    if epochs is None:
        cfg.train.epochs = cfg.train.finetune_epochs
    return cfg, start


def kfold(name: str, *, folds: int, config: str | Path | None = None, epochs: int | None = None,
          device: str = "cpu", pred_field: str = "predictions_oof", init: str | None = None,
          log: Log = _quiet, wait: float = 0.0, flip_check: bool = False) -> PredictResult:
    """Out-of-fold predictions: every image predicted by a model trained on the other folds
    (``flip_check``: with the flip check, as :func:`predict`'s).

    ``init``: every fold fine-tunes these weights (refused when they saw any image of ``name``).
    Finished folds and the fold in training are kept in ``NAME_kfold/`` (in the working folder):
    after Ctrl-C or a kill the same command resumes after them; the folder is removed once the
    predictions are in the store (written under the dataset's lock, waited for as predict waits:
    when it stays busy, the finished folds are kept and the same command writes them)."""
    import shutil

    from ..detector.train import kfold_predict

    check_device(device)
    if folds < 2:
        raise InputError(f"--folds must be at least 2, got {folds}")
    cfg, start = training_setup(config, epochs, init)
    labels = store.read(name)
    state_dir = Path(f"{name}_kfold")
    how = (f"from {start._source}, {cfg.train.epochs} epochs" if start is not None
           else f"from scratch, {cfg.train.epochs} epochs")
    from ..detector.data import kfold_assign

    kfold_assign(len(labels.records), folds)  # too few images: refused before the line below announces the folds
    check_free(name, "train --folds", wait)
    log(f"{len(labels.records)} images in {folds} folds, each model trained {how}")
    preds = kfold_predict(labels, folds, cfg, device=device, progress=True, log=log, state_dir=state_dir, init=start,
                          flip_check=flip_check)
    # when the dataset stays busy, the finished folds are kept: the same command writes them
    write_predictions(name, labels, preds, pred_field, None, wait, what="train --folds", save_on_busy=False)
    shutil.rmtree(state_dir, ignore_errors=True)
    return PredictResult(pred_field, len(preds), sum(len(p) for p in preds),
                         f"{folds}-fold out-of-fold models ({how})" + (", flip-checked" if flip_check else ""))


@dataclass
class TrainResult:
    checkpoint: Path
    train_images: int
    what: str
    seconds: float
    evaluation: Any = None  # EvalResult on the 'val' split, when there is one


def train_model(name: str, *, config: str | Path | None = None, epochs: int | None = None, device: str = "cpu",
                out: str | Path | None = None, init: str | None = None, log: Log = _quiet) -> TrainResult:
    """Train on the 'train' split (all images without one), from scratch or fine-tuning ``init``'s
    weights, evaluate on 'val', save a checkpoint."""
    from ..detector.checkpoint import check_checkpoint_path, save_checkpoint
    from ..detector.evaluate import evaluate
    from ..detector.predict import predict
    from ..detector.train import train

    check_device(device)
    out = check_checkpoint_path(out if out is not None else Path(f"{name}_detector.pt"))
    cfg, start = training_setup(config, epochs, init)
    labels = store.read(name)
    train_set, what = train_records(labels)
    log(f"training on {what}: {len(train_set)} images, {train_set.num_boxes} boxes, {cfg.train.epochs} epochs"
        + (f", starting from {start._source}" if start is not None else ""))
    ckpt = train(train_set, cfg, device=device, progress=True, log=log, init=start)
    val = [r for r in labels.records if r.split == "val"]
    res = None
    if val and sum(len(r.gt) for r in val):
        res = evaluate([r.gt for r in val], predict(ckpt, val, cfg.predict.batch_size, device), labels.classes)
        ckpt.metrics["val"] = res.to_dict()
    path = save_checkpoint(ckpt, out)
    return TrainResult(path, len(train_set), what, float(ckpt.extra["train_seconds"]), res)


# how long a finished prediction run waits for the dataset's lock before it writes (a score or an
# apply that started meanwhile): long, since giving up then would throw the predictions away
WRITE_WAIT_S = 900.0


def write_predictions(name: str, labels: LabelSet, anns: list, pred_field: str, history: dict[str, Any] | None,
                      wait: float, *, what: str = "predict", save_on_busy: bool = True, patient: bool = True) -> None:
    """Write predictions made outside the dataset's lock under it (a score reading them meanwhile
    would see half of them), with their history entry, journaled (a kill -9 half way leaves a
    pending record: every other writer is refused until predictions are written again, read-only
    commands and the gate say so). A command that changes the dataset is refused at once before
    the work (:func:`check_free`); here, after it, the lock is waited for up to
    ``max(wait, WRITE_WAIT_S)`` (``patient``; else ``wait``, for a write after little work); when
    it stays busy, or the database is lost, the predictions go to ``NAME_predictions.json`` (COCO
    results, read back by ``predict --from-file``; ``save_on_busy``) and the error says so: nothing
    is lost."""
    from ..errors import CvcurateError, pause_point
    from . import recovery

    try:
        with store.dataset_lock(name, what, user=store.journal.who(), wait_s=max(wait, WRITE_WAIT_S) if patient else wait):
            # an earlier write of this field killed half way is superseded; other commands' unfinished
            # writes are left to them (a predictions write touches no label, fix or decision)
            recovery.supersede_predictions(name, pred_field)
            entry = store.journal.begin(name, "predict", field=pred_field, command=what)
            pause_point("predict:journaled")
            store.write_detections(name, pred_field, labels.records, anns, labels.classes, attributes=PRED_ATTRIBUTES)
            store.append_history(name, history)
            store.journal.finish(name, entry)
    except CvcurateError as exc:  # busy for too long, or the database lost: the work is kept in a file
        if not save_on_busy:
            raise
        from ..formats.predictions import write_coco_results

        saved = write_coco_results(Path(f"{name}_predictions.json"), labels, anns)
        kept = type(exc)(f"{exc}; the predictions are saved in {saved}: write them with 'cvcurate predict "
                         f"{shell_arg(name)} --from-file {shell_arg(str(saved))} --format coco "
                         f"--pred-field {shell_arg(pred_field)}'")
        raise kept from None


def predict(name: str, *, model: str = "default", device: str = "cpu", batch_size: int = 16,
            pred_field: str = "predictions", engine: str = "local", workers: int | None = None,
            runtime: str = "auto", wait: float = 0.0, class_agnostic: bool = False,
            flip_check: bool = False) -> PredictResult:
    """Predict every image of ``name`` with a shipped or a user's checkpoint.

    ``flip_check``: the network runs again on each image mirrored left-right and top-bottom, and
    each box keeps how well the mirrored images' boxes agree with it (``flip_iou``, ``flip_conf``:
    :mod:`cvcurate.detector.flipcheck`), evidence the scorer's error models read; the boxes are
    the same, the network's work three times.

    ``class_agnostic``: every box read as "a defect", wide images in tiles, each box given the
    class of the given box it overlaps most (:mod:`cvcurate.detector.agnostic`): evidence from a
    checkpoint that does not know the dataset's classes, without training (on this machine only).

    ``runtime``: ``torch``, ``onnx`` (the network on ONNX Runtime: on this machine's CPU the
    torch-free :mod:`cvcurate.detector.lite`, on Ray workers :mod:`cvcurate.detector.runtime`), or
    ``auto`` (onnx on this machine's CPU when ONNX Runtime is installed; else, and on Ray, torch).

    ``engine``: ``local`` (this process) or ``ray`` (``workers`` Ray actors, :mod:`cvcurate.engine`);
    either way the predictions are written once, here, after every image is predicted, under the
    dataset's lock (:func:`write_predictions`)."""
    from ..detector.card import remap_classes
    from ..detector.lite import check_runtime
    from ..engine import get_engine

    check_device(device)
    eng = get_engine(engine, workers)
    if class_agnostic and eng.is_ray:
        raise InputError("--class-agnostic runs on this machine only: leave out --engine ray")
    if class_agnostic and flip_check:
        raise InputError("--flip-check does not combine with --class-agnostic (its boxes come from tiles): "
                         "leave out one of them")
    runtime = check_runtime(runtime, device, ray=eng.is_ray)
    labels = store.read(name)
    # ONNX on this machine's CPU: the torch-free path (torch is imported only the first time a
    # checkpoint is exported); Ray workers and GPUs run the torch model
    lite = runtime == "onnx" and device == "cpu" and not eng.is_ray
    if lite:
        from ..detector import lite as lite_mod

        det = lite_mod.load(model)
        card: Any = det.card
    else:
        from ..detector.checkpoint import load_checkpoint

        card = load_checkpoint(model)
    mapping = None
    try:
        if not class_agnostic:
            mapping = card.class_map(labels.classes, f"dataset {name!r}")
    except InputError as exc:
        raise InputError(f"{exc}; for predictions on these classes, fine-tune its weights with a new head: "
                         f"cvcurate train {shell_arg(name)} --folds 5 --init {shell_arg(str(model))} "
                         f"(out-of-fold), or without --folds for one checkpoint; or, without training, boxes "
                         f"read as 'a defect': cvcurate predict {shell_arg(name)} --model {shell_arg(str(model))} "
                         f"--class-agnostic") from None
    inside = in_sample(card, labels)
    check_free(name, "predict", wait)
    # an image that cannot be read (gone, truncated) gets no predictions and a note, instead of
    # stopping the run at it and losing the others' (score lists it as unreadable)
    if class_agnostic:
        from ..detector.agnostic import assign_classes, predict_tiled

        if lite:
            detect = det
        else:
            from ..detector.predict import square_detector

            detect = square_detector(card, device, runtime)
        mc = card.model_config
        raw = predict_tiled(detect, labels.records, card.input_size, batch_size=batch_size,
                            nms_thresh=float(mc["nms_thresh"]),
                            keep=int(mc["detections_per_img"]), progress=True, skip_unreadable=True)
        anns = assign_classes(raw, [r.gt for r in labels.records], len(labels.classes))
    elif lite:
        raw = lite_mod.predict_records(det, labels.records, batch_size, progress=True, skip_unreadable=True,
                                       flip_check=flip_check)
    else:
        from ..engine import predict as run_predict

        raw = run_predict(eng, card, labels.records, batch_size, device, progress=True, runtime=runtime,
                          skip_unreadable=True, flip_check=flip_check)
    if mapping is not None:
        anns = remap_classes(raw, mapping)
    unread = [r.filepath for r, a in zip(labels.records, anns) if a is None]
    write_predictions(name, labels, anns, pred_field, {
        "action": "predict", "pred_field": pred_field, "model": str(model), "in_sample_images": inside,
        "images": len(labels.records), "runtime": runtime, "unreadable_images": len(unread),
        "class_agnostic": bool(class_agnostic), "flip_check": bool(flip_check)}, wait)
    notes = [in_sample_warning(str(model), inside, len(labels.records), name)] if inside else []
    if unread:
        notes.append(f"warning: {len(unread)} of {len(labels.records)} images could not be read and have no "
                     f"predictions (first: {unread[0]}); 'cvcurate score {shell_arg(name)}' lists them as unreadable")
    done = [a for a in anns if a is not None]
    return PredictResult(pred_field, len(done), sum(len(a) for a in done),
                         f"model {model}" + (", class-agnostic" if class_agnostic else "")
                         + (", flip-checked" if flip_check else ""), notes)


def in_sample(ckpt: Any, labels: LabelSet) -> int | None:
    """How many images of ``labels`` the checkpoint was trained on (same file bytes); None when the
    checkpoint does not say what it was trained on."""
    return ckpt.images_seen([r.filepath for r in labels.records])


def in_sample_digests(name: str, pred_field: str, classes: Sequence[str]) -> set[str] | None:
    """Digests of the images the model behind ``pred_field`` trained on, when it made them and
    says so (None otherwise)."""
    made = [h for h in store.get_history(name) if h.get("action") == "predict" and h.get("pred_field") == pred_field]
    if not made or not made[-1].get("in_sample_images"):
        return None
    from ..detector.checkpoint import load_checkpoint

    try:
        return load_checkpoint(made[-1]["model"], classes=list(classes)).train_digests()
    except InputError:
        return None


def in_sample_warning(model: str, inside: int, total: int, name: str) -> str:
    from ..names import in_sample_remedy

    return (f"warning: model {model} was trained on {inside} of these {total} images: its predictions there are "
            f"in-sample (it has seen those labels), so they hide label errors and flatter its mAP; "
            f"{in_sample_remedy(name, inside, total)}")


def import_predictions(name: str, path: str | Path, *, format: str | None, coco_gt: str | Path | None = None,
                       pred_field: str = "predictions", wait: float = 0.0) -> PredictResult:
    """Read predictions made by another model (COCO results or YOLO txt) into ``pred_field``
    (under the dataset's lock, waiting ``wait`` seconds for another writer)."""
    from ..formats.predictions import FORMATS, read_predictions

    if format not in FORMATS:
        raise InputError(f"--from-file needs --format, one of {', '.join(FORMATS)}")
    labels = store.read(name)
    anns = read_predictions(path, format, labels, coco_gt=coco_gt)
    # an entry of its own: what score and report say of the field (the model behind it, whether it
    # saw these images) is then of these predictions, not of an earlier predict into the same field
    write_predictions(name, labels, anns, pred_field, {
        "action": "predict", "pred_field": pred_field, "model": None, "from_file": str(path),
        "in_sample_images": None, "images": len(labels.records)}, wait, what="predict --from-file",
        save_on_busy=False, patient=False)
    return PredictResult(pred_field, len(anns), sum(len(a) for a in anns), str(path))


@dataclass
class EvalRun:
    result: Any  # detector.evaluate.EvalResult
    path: Path


def evaluate(name: str, *, pred_field: str | None = None, split: str | None = None, conf: float = 0.25,
             out: str | Path | None = None) -> EvalRun:
    """mAP per class and a confusion matrix of ``pred_field`` (default: out-of-fold predictions,
    else the model's) against the ground truth, saved as JSON."""
    from ..detector.evaluate import evaluate as run_evaluate
    from ..names import default_pred_field

    if pred_field is None:
        pred_field = default_pred_field(store.field_names(name))
        if pred_field is None:
            raise InputError(f"dataset {name!r} has no predictions: run 'cvcurate predict {shell_arg(name)}' "
                             f"or 'cvcurate train {shell_arg(name)} --folds 5' first")
    if pred_field not in store.field_names(name):
        raise InputError(f"dataset {name!r} has no field {pred_field!r}: "
                         f"run 'cvcurate predict {shell_arg(name)}' first")
    labels = store.read(name, pred_field=pred_field)
    recs = labels.records
    if split is not None:
        recs = [r for r in recs if r.split == split]
        if not recs:
            found = sorted({r.split for r in labels.records if r.split}) or ["none"]
            raise InputError(f"no images in split {split!r} (splits: {', '.join(found)})")
    res = run_evaluate([r.gt for r in recs], [r.pred for r in recs], labels.classes, conf_thresh=conf)
    res.meta = {"dataset": name, "pred_field": pred_field, "split": split}
    seen = in_sample_digests(name, pred_field, labels.classes)
    if seen:
        from ..detector.data import image_digests

        out_recs = [r for r, d in zip(recs, image_digests([r.filepath for r in recs])) if d not in seen]
        res.meta["in_sample_images"] = len(recs) - len(out_recs)
        if len(out_recs) < len(recs):
            res.meta["warning"] = (f"in-sample: the model behind {pred_field!r} trained on {len(recs) - len(out_recs)} "
                                   f"of these {len(recs)} images, so this mAP flatters it")
            if out_recs:
                o = run_evaluate([r.gt for r in out_recs], [r.pred for r in out_recs], labels.classes,
                                 conf_thresh=conf)
                res.meta["out_of_sample"] = {"images": len(out_recs), "map50": o.map50, "map50_95": o.map50_95}
    path = Path(out) if out is not None else Path(f"{name}_eval_{pred_field}.json")
    with interrupt_leaves(f"the store is unchanged; {path} may be partly written"):
        path = res.save_json(path)
    return EvalRun(res, path)
