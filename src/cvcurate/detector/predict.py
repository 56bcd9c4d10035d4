"""Inference: boxes with confidences, in each record's own pixel frame."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..progress import track
from ..types import Annotations, ImageRecord
from .checkpoint import Checkpoint, load_checkpoint
from .data import load_gray
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


def decode(records: Sequence[ImageRecord], size: int, skip_unreadable: bool = False) -> list[np.ndarray | None]:
    """The network's input of each record: the image read as grey and resized to ``size`` x ``size``.
    An image that cannot be read raises :class:`InputError`, or is None with ``skip_unreadable``."""
    if not skip_unreadable:
        return [load_gray(r.filepath, size, (r.width, r.height)) for r in records]
    out: list[np.ndarray | None] = []
    for r in records:
        try:
            out.append(load_gray(r.filepath, size, (r.width, r.height)))
        except InputError:
            out.append(None)
    return out


def _boxes(model: Any, dev: torch.device, size: int, records: Sequence[ImageRecord],
           imgs: Sequence[np.ndarray | None]) -> list[Annotations | None]:
    """One batch through the network (``imgs`` from :func:`decode`), boxes back in each record's
    frame; None for an image :func:`decode` could not read."""
    if any(im is None for im in imgs):
        ok = [i for i, im in enumerate(imgs) if im is not None]
        got = iter(_boxes(model, dev, size, [records[i] for i in ok], [imgs[i] for i in ok]))
        keep = set(ok)
        return [next(got) if i in keep else None for i in range(len(imgs))]
    if not len(imgs):
        return []
    x = list(torch.from_numpy(np.stack(imgs)).to(dev).float().div_(255.0)[:, None])  # one op for the batch
    out = []
    for rec, r in zip(records, model(x)):
        b = r["boxes"].detach().cpu().numpy().astype(np.float64)
        sx, sy = rec.width / size, rec.height / size
        b = b * np.array([sx, sy, sx, sy])
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, rec.width)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, rec.height)
        conf = np.clip(r["scores"].detach().cpu().numpy().astype(np.float64), 0.0, 1.0)
        out.append(Annotations(xyxy=b, class_id=r["labels"].detach().cpu().numpy().astype(np.int64),
                               confidence=conf))
    return out


def _runner(model: torch.nn.Module, size: int, dev: torch.device, runtime: str):
    """What runs the batches: the torch model, or its network on ONNX Runtime (CPU only: on a GPU
    torch runs, with a notice)."""
    from .runtime import check_runtime, onnx_detector

    if check_runtime(runtime) == "onnx":
        if dev.type != "cpu":
            from ..errors import notice

            notice(f"note: --runtime onnx runs on the CPU only: predicting with torch on {dev}")
            return model
        return onnx_detector(model, size)
    return model


def predict_decoded(model_or_checkpoint, records: Sequence[ImageRecord], images: Sequence[np.ndarray],
                    device: str = "cpu", runtime: str = "torch") -> list[Annotations]:
    """:func:`predict` of one batch whose images :func:`decode` already read (the Ray engine decodes
    on tasks of their own and sends the network only the decoded batch): the same boxes."""
    model, size = _as_model(model_or_checkpoint)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    with torch.inference_mode():
        return _boxes(_runner(model, size, dev, runtime), dev, size, records, images)


def predict(model_or_checkpoint, records: Sequence[ImageRecord], batch_size: int = 16, device: str = "cpu",
            progress: bool = False, runtime: str = "torch", skip_unreadable: bool = False) -> list[Annotations | None]:
    """Predict every record; boxes are absolute ``xyxy`` in the record's ``width`` x ``height``.

    Class ids are the checkpoint's; map them with ``Checkpoint.class_map`` when the dataset orders
    its classes differently. Images of the next batch are decoded in a background thread while
    the current one runs. ``runtime``: ``torch``, or ``onnx`` (the network on ONNX Runtime, the
    post-processing in torch: :mod:`.runtime`; the same boxes to about 1e-5). An image that cannot
    be read stops it (:class:`InputError`), or with ``skip_unreadable`` gets None in its place.
    """
    model, size = _as_model(model_or_checkpoint)
    dev = resolve_device(device)
    was_training = model.training
    model = model.to(dev).eval()
    run = _runner(model, size, dev, runtime)
    records = list(records)
    out: list[Annotations] = []
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            nxt = pool.submit(decode, batches[0], size, skip_unreadable) if batches else None
            # progress counts images (a batch is predicted when its first image comes up)
            for i in track(range(len(records)), description="predicting images", total=len(records),
                           enabled=progress):
                if i % batch_size:
                    continue
                bi = i // batch_size
                imgs = nxt.result()
                nxt = pool.submit(decode, batches[bi + 1], size, skip_unreadable) if bi + 1 < len(batches) else None
                out += _boxes(run, dev, size, batches[bi], imgs)
    finally:
        if was_training:
            model.train()
    return out


def remap_classes(anns: Sequence[Annotations | None], mapping: np.ndarray) -> list[Annotations | None]:
    """Change class ids by ``mapping[old_id] = new_id`` (None stays None)."""
    return [None if a is None else Annotations(a.xyxy, mapping[a.class_id] if len(a) else a.class_id, a.confidence)
            for a in anns]
