"""Inference: boxes with confidences, in each record's own pixel frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..types import Annotations, ImageRecord
from .checkpoint import Checkpoint, load_checkpoint
from .card import remap_classes  # noqa: F401 - its home is the torch-free module
from .images import decode, run_batches, to_record_frame, with_gaps  # noqa: F401 - decode's home is there
from .model import resolve_device


def _as_model(model_or_checkpoint) -> tuple[torch.nn.Module, int]:
    obj = model_or_checkpoint
    if isinstance(obj, (str, Path)):
        obj = load_checkpoint(obj)
    if isinstance(obj, Checkpoint):
        return obj.model(), obj.input_size
    if isinstance(obj, torch.nn.Module):
        cfg = getattr(obj, "model_config", None)
        if not cfg:
            raise InputError("a bare model needs a 'model_config' attribute (build it with build_model)")
        return obj, int(cfg["input_size"])
    raise InputError(f"cannot predict with a {type(obj).__name__}: give a checkpoint, its path or a model")


def _boxes(model: Any, dev: torch.device, size: int, records: Sequence[ImageRecord],
           imgs: Sequence[np.ndarray | None], flip_check: bool = False) -> list[Annotations | None]:
    """One batch through the network (``imgs`` from :func:`decode`), boxes back in each record's
    frame; None for an image :func:`decode` could not read; ``flip_check``: :mod:`.flipcheck`."""
    from .flipcheck import flip_checked

    def detect(ims: Sequence[np.ndarray]) -> list:
        return _raw(model, dev, ims)

    checked = flip_checked(detect, size) if flip_check else detect

    def run(recs: Sequence[ImageRecord], ims: Sequence[np.ndarray]) -> list[Annotations]:
        return [to_record_frame(rec, size, *out) for rec, out in zip(recs, checked(ims))]

    return with_gaps(run, records, imgs)


def _raw(model: Any, dev: torch.device, ims: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One batch of decoded square images through ``model``: per image (boxes in the input's
    frame, scores, labels) as numpy arrays."""
    x = list(torch.from_numpy(np.stack(ims)).to(dev).float().div_(255.0)[:, None])  # one op for the batch
    return [(r["boxes"].detach().cpu().numpy(), r["scores"].detach().cpu().numpy(), r["labels"].detach().cpu().numpy())
            for r in model(x)]


def _runner(model: torch.nn.Module, size: int, dev: torch.device, runtime: str):
    """What runs the batches: the torch model, or its network on ONNX Runtime (CPU only: on a GPU
    torch runs, with a notice)."""
    from .runtime import check_runtime, onnx_detector

    if check_runtime(runtime, dev.type) == "onnx":
        if dev.type != "cpu":
            from ..errors import notice

            notice(f"note: --runtime onnx runs on the CPU only: predicting with torch on {dev}")
            return model
        return onnx_detector(model, size)
    return model


def predict_decoded(model_or_checkpoint, records: Sequence[ImageRecord], images: Sequence[np.ndarray],
                    device: str = "cpu", runtime: str = "torch", flip_check: bool = False) -> list[Annotations]:
    """:func:`predict` of one batch whose images :func:`decode` already read (the Ray engine decodes
    on tasks of their own and sends the network only the decoded batch): the same boxes."""
    model, size = _as_model(model_or_checkpoint)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    with torch.inference_mode():
        return _boxes(_runner(model, size, dev, runtime), dev, size, records, images, flip_check)


def square_detector(model_or_checkpoint, device: str = "cpu", runtime: str = "torch"):
    """A callable from decoded square images (``uint8``, the input's size) to per image (boxes in
    the input's frame, scores, labels) as numpy arrays, as :class:`~.lite.LiteDetector` is: what
    class-agnostic prediction (:mod:`.agnostic`) runs its tiles through."""
    model, size = _as_model(model_or_checkpoint)
    dev = resolve_device(device)
    run = _runner(model.to(dev).eval(), size, dev, runtime)

    def detect(ims: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        with torch.inference_mode():
            return _raw(run, dev, ims)

    return detect


def predict(model_or_checkpoint, records: Sequence[ImageRecord], batch_size: int = 16, device: str = "cpu",
            progress: bool = False, runtime: str = "torch", skip_unreadable: bool = False,
            flip_check: bool = False) -> list[Annotations | None]:
    """Predict every record; boxes are absolute ``xyxy`` in the record's ``width`` x ``height``.

    Class ids are the checkpoint's; map them with ``Checkpoint.class_map`` when the dataset orders
    its classes differently. Images of the next batch are decoded in a background thread while
    the current one runs. ``runtime``: ``torch``, or ``onnx`` (the network on ONNX Runtime, the
    post-processing in torch: :mod:`.runtime`; the same boxes to about 1e-5). An image that cannot
    be read stops it (:class:`InputError`), or with ``skip_unreadable`` gets None in its place.
    ``flip_check``: each box's agreement with the mirrored images' boxes in its data (:mod:`.flipcheck`).
    """
    model, size = _as_model(model_or_checkpoint)
    dev = resolve_device(device)
    was_training = model.training
    model = model.to(dev).eval()
    run = _runner(model, size, dev, runtime)
    try:
        with torch.inference_mode():
            return run_batches(records, size, batch_size,
                               lambda recs, ims: _boxes(run, dev, size, recs, ims, flip_check),
                               progress=progress, skip_unreadable=skip_unreadable)
    finally:
        if was_training:
            model.train()
