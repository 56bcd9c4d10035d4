"""Prediction on ONNX Runtime without torch: the network exported once, everything else in numpy.

``cvcurate predict --runtime onnx`` on the CPU spent a quarter of its time on 1,200 images
importing torch and torchvision and building the torch model only to post-process the network's
outputs and to read the checkpoint (session 36: torch 1.8 s, torchvision 2.0 s of 18.9 s). Here
the checkpoint is read by torch once, when its network is exported; beside the exported network
(``$CVCURATE_CACHE``, default ``~/.cache/cvcurate``, ``/onnx/lite-<sha256 of the checkpoint
file>.*``) a JSON card keeps what prediction needs: the classes, the input size, the training
images' digests, the post-processing settings and the anchors. Every later run reads the card and
the network and never imports torch.

The post-processing is torchvision's FCOS as the shipped model runs it
(:func:`cvcurate.detector.model._fcos_class`): per level the candidates above ``score_thresh``
(score ``sqrt(sigmoid(cls) * sigmoid(centerness))``), the best ``topk_candidates`` of them, boxes
decoded from the anchors (``BoxLinearCoder`` normalised by the anchor's size) and clipped to the
image, class-wise greedy NMS at ``nms_thresh`` (the overlaps of a class in one matrix), the best
``detections_per_img`` kept. Like the torch model, candidates are taken best first until enough
kept boxes score above the lowest one taken. The boxes equal torch's to float rounding
(``tests/test_lite.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..device import cores
from ..errors import InputError
from ..types import Annotations, ImageRecord
from .card import ClassesAndImages, resolve_model_path

RUNTIMES = ("auto", "torch", "onnx")
MISSING = "--runtime onnx needs ONNX Runtime, which is not installed: install cvcurate[onnx] (pip install 'cvcurate[onnx]')"
CARD_VERSION = 1


def onnx_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def check_runtime(runtime: str, device: str = "cpu", ray: bool = False) -> str:
    """``runtime`` checked and resolved: ``torch`` or ``onnx`` (one line when unknown, or onnx
    without its packages). ``auto``: onnx on this machine's CPU when ONNX Runtime is installed;
    else, and on Ray (its workers hold the torch model), torch."""
    runtime = (runtime or "auto").strip().lower()
    if runtime not in RUNTIMES:
        raise InputError(f"unknown --runtime {runtime!r}: use {', '.join(RUNTIMES[:-1])} or {RUNTIMES[-1]}")
    if runtime == "auto":
        return "onnx" if str(device) == "cpu" and not ray and onnx_installed() else "torch"
    if runtime == "onnx" and not onnx_installed():
        raise InputError(MISSING)
    return runtime


def cache_dir() -> Path:
    root = os.environ.get("CVCURATE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "cvcurate") / "onnx"


def writable(path: Path) -> Path:
    """``path``, or the same name in this process's temporary folder when its folder cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:  # no writable cache: this process's temporary folder
        import tempfile

        path = Path(tempfile.gettempdir()) / f"cvcurate-onnx-{os.getuid() if hasattr(os, 'getuid') else 0}" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU for the exported network at ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # its threads must not spin after a run: the post-processing (and the next batch's decoding)
    # runs on the same cores right after it
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class ModelCard(ClassesAndImages):
    """What prediction needs of a checkpoint, without its weights (they are in the exported network)."""

    classes: list[str]
    input_size: int
    model_config: dict[str, Any]
    mean: list[float]
    std: list[float]
    anchors: list[np.ndarray]  # per level, (H*W, 4) in the input's frame, in the network's output order
    extra: dict[str, Any] = field(default_factory=dict)
    _source: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": CARD_VERSION, "classes": self.classes, "input_size": self.input_size,
                "model_config": self.model_config, "mean": self.mean, "std": self.std,
                "anchors": [a.tolist() for a in self.anchors], "extra": self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any], source: Path) -> "ModelCard":
        if d.get("version") != CARD_VERSION:
            raise ValueError(f"card version {d.get('version')!r}")
        return cls(classes=list(d["classes"]), input_size=int(d["input_size"]), model_config=dict(d["model_config"]),
                   mean=[float(v) for v in d["mean"]], std=[float(v) for v in d["std"]],
                   anchors=[np.asarray(a, dtype=np.float32).reshape(-1, 4) for a in d["anchors"]],
                   extra=dict(d.get("extra") or {}), _source=source)


def _file_key(path: Path) -> str:
    h = hashlib.sha256(f"cvcurate-lite-{CARD_VERSION}\n".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


def _build(ckpt_path: Path, onnx_path: Path, card_path: Path) -> None:
    """Read the checkpoint with torch (once), export its network and write its card."""
    import torch

    from .checkpoint import load_checkpoint
    from .runtime import export_onnx

    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.model()
    size = ckpt.input_size
    export_onnx(model, size, onnx_path)
    with torch.inference_mode():
        x = torch.zeros(1, 1, size, size)
        batch, _ = model.transform(list(x), None)
        feats = list(model.backbone(batch.tensors).values())
        anchors = model.anchor_generator(batch, feats)[0]
    per_level = [int(f.shape[-2] * f.shape[-1]) for f in feats]
    t = model.transform
    extra = {k: v for k, v in ckpt.extra.items() if k == "train_image_sha256"}
    card = ModelCard(classes=list(ckpt.classes), input_size=size, model_config=dict(ckpt.model_config),
                     mean=[float(v) for v in t.image_mean], std=[float(v) for v in t.image_std],
                     anchors=[a.numpy().astype(np.float32) for a in anchors.split(per_level)], extra=extra)
    tmp = card_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(card.to_json()))
    os.replace(tmp, card_path)  # the card last: a card means its network is there


def load(model: str | Path, threads: int | None = None) -> "LiteDetector":
    """The torch-free detector of a checkpoint (a shipped name or a path): its card and exported
    network from the cache, made there first (with torch, a few seconds) when missing."""
    path = resolve_model_path(model)
    onnx_path = writable(cache_dir() / f"lite-{_file_key(path)}.onnx")
    card_path = onnx_path.with_suffix(".json")
    card = _read_card(card_path, path) if onnx_path.is_file() else None
    if card is None:
        _build(path, onnx_path, card_path)
        card = _read_card(card_path, path)
        if card is None:
            raise InputError(f"could not prepare {path} for --runtime onnx (its card at {card_path} is unreadable)")
    return LiteDetector(card, onnx_path, threads or cores())


def _read_card(path: Path, source: Path) -> ModelCard | None:
    try:
        return ModelCard.from_json(json.loads(path.read_text()), source)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, half-written by a killed process, or of another version: made again


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.negative(x)
    np.exp(out, out=out)
    out += np.float32(1.0)
    np.reciprocal(out, out=out)
    return out


class LiteDetector:
    """Boxes for a batch of decoded images (``uint8``, ``size`` x ``size``), in the input's frame,
    in the checkpoint's class ids; see the module docstring."""

    def __init__(self, card: ModelCard, onnx_path: Path, threads: int) -> None:
        self.card = card
        self.size = card.input_size
        self.threads = threads
        self.session = session(onnx_path, threads)
        mc = card.model_config
        self.score_thresh = float(mc["score_thresh"])
        self.nms_thresh = float(mc["nms_thresh"])
        self.want = int(mc["detections_per_img"])
        self.topk = int(mc["topk_candidates"])
        self.anchors = np.concatenate(card.anchors)
        self._wh = np.concatenate([self.anchors[:, 2:] - self.anchors[:, :2]] * 2, axis=1)
        self._ctr = np.concatenate([(self.anchors[:, :2] + self.anchors[:, 2:]) * np.float32(0.5)] * 2, axis=1)
        self.bounds = np.cumsum([0] + [len(a) for a in card.anchors])

    def __call__(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        x = np.stack(images).astype(np.float32)[:, None]
        x /= np.float32(255.0)
        x -= np.asarray(self.card.mean, np.float32)[None, :, None, None]
        x /= np.asarray(self.card.std, np.float32)[None, :, None, None]
        cls, reg, ctr = self.session.run(None, {"x": x})
        scores = np.sqrt(_sigmoid(cls) * _sigmoid(ctr))  # (N, A, C)
        return [self._one(scores[i], reg[i]) for i in range(len(images))]

    def _one(self, scores: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_cls = scores.shape[1]
        s_parts, i_parts = [], []
        for lv in range(len(self.bounds) - 1):
            a0, a1 = self.bounds[lv], self.bounds[lv + 1]
            s = scores[a0:a1].ravel()
            idx = np.flatnonzero(s > self.score_thresh)
            if len(idx) > self.topk:
                idx = idx[np.argpartition(-s[idx], self.topk - 1)[:self.topk]]
            s_parts.append(s[idx])
            i_parts.append(idx + a0 * n_cls)  # flat index over (anchor, class) of the whole image
        cand_s = np.concatenate(s_parts)
        cand_i = np.concatenate(i_parts)
        order = np.argsort(-cand_s, kind="stable")
        total, take = len(order), min(len(order), 8 * self.want)
        while True:
            sel = order[:take]
            s, ids = cand_s[sel], cand_i[sel]
            anchor, labels = np.divmod(ids, n_cls)
            rel = reg[anchor] * self._wh[anchor]
            c = self._ctr[anchor]
            boxes = np.concatenate([c[:, :2] - rel[:, :2], c[:, 2:] + rel[:, 2:]], axis=1)
            np.clip(boxes, 0, self.size, out=boxes)
            keep = nms_classwise(boxes, labels, self.nms_thresh)  # sel is best first: keep is too
            if take >= total or int((s[keep] > cand_s[order[take - 1]]).sum()) >= self.want:
                break
            take = min(total, 2 * take)
        keep = keep[:self.want]
        return boxes[keep], s[keep], labels[keep]


def nms_iou(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``boxes`` (n, 4), as torchvision's NMS computes it."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    w = np.minimum.outer(x2, x2)
    w -= np.maximum.outer(x1, x1)
    np.maximum(w, 0, out=w)
    h = np.minimum.outer(y2, y2)
    h -= np.maximum.outer(y1, y1)
    np.maximum(h, 0, out=h)
    w *= h  # the intersection
    union = np.add.outer(area, area)
    union -= w
    with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: NaN, never above a threshold, as in torch
        w /= union
    return w


def nms_classwise(boxes: np.ndarray, labels: np.ndarray, thresh: float) -> np.ndarray:
    """Indices kept by greedy NMS within each class, best first; ``boxes`` must be sorted best first
    (a box is kept unless a kept box of its class and of higher score overlaps it above ``thresh``)."""
    keep = np.zeros(len(boxes), dtype=bool)
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        over = nms_iou(boxes[m]) > thresh
        removed = np.zeros(len(m), dtype=bool)
        kept = []
        for i in range(len(m)):
            if not removed[i]:
                kept.append(i)
                removed |= over[i]
        keep[m[kept]] = True
    return np.flatnonzero(keep)


def predict_records(det: LiteDetector, records: Sequence[ImageRecord], batch_size: int = 16, *,
                    progress: bool = False, skip_unreadable: bool = False,
                    flip_check: bool = False) -> list[Annotations | None]:
    """:func:`cvcurate.detector.predict.predict` on the torch-free detector: boxes in each record's
    frame, in the checkpoint's class ids; None for an unreadable image (``skip_unreadable``);
    ``flip_check``: each box's agreement with the mirrored images' (:mod:`.flipcheck`) in its data."""
    from .flipcheck import flip_checked
    from .images import run_batches, to_record_frame

    size = det.size
    detect = flip_checked(det, size) if flip_check else det

    def run(recs: Sequence[ImageRecord], ims: Sequence[np.ndarray]) -> list[Annotations]:
        return [to_record_frame(r, size, *out) for r, out in zip(recs, detect(ims))]

    return run_batches(records, size, batch_size, run, progress=progress, skip_unreadable=skip_unreadable)
