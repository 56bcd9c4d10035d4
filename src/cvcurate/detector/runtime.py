"""The network of a torch detector on ONNX Runtime, the post-processing staying in torch.

On 2 CPU cores ONNX Runtime runs the shipped FCOS's backbone and heads about 1.4x faster than
torch (16 images of 224 px: 137 ms against 198 ms, session 33) with the same outputs to about
1e-5. :class:`OnnxDetector` is called as the torch model is in evaluation (a list of image
tensors in, a list of ``{"boxes", "scores", "labels"}`` out): torch's own input transform, the
network exported to ONNX and run by ONNX Runtime, then torch's anchors, box decoding, top-k and
NMS (torchvision's ``FCOS.postprocess_detections``) on its outputs. Ray workers, which hold the
torch model anyway, predict through it; ``cvcurate predict`` on this machine's CPU takes the
torch-free :mod:`.lite` instead (the same export, its card cached beside it). The export (about
2 s) is cached per checkpoint in ``$CVCURATE_CACHE`` (default ``~/.cache/cvcurate``)/onnx, keyed
by the weights, the architecture and the versions of torch and the exporter.

It needs the extra ``cvcurate[onnx]`` (onnxruntime, and onnx for the export); ``--runtime onnx``
without it is one line and exit code 2. GPUs keep torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path

import torch

from .lite import MISSING, RUNTIMES, cache_dir as _cache_dir, check_runtime, session, writable  # noqa: F401 - re-exported


class _Core(torch.nn.Module):
    """What is exported: the backbone and the heads, from the transformed batch to the heads' outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = list(self.backbone(x).values())
        out = self.head(feats)
        return out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]


def _key(model: torch.nn.Module, size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": getattr(model, "model_config", None), "size": size, "torch": torch.__version__},
                        sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def export_onnx(model: torch.nn.Module, size: int, path: Path) -> Path:
    """The backbone and heads of ``model`` (in evaluation) exported to ``path`` for ``size`` x ``size``
    inputs and any batch size, unless already there; returns where it is (see :func:`writable`)."""
    path = writable(path)
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        x = torch.zeros(2, 1, size, size)
        with torch.no_grad():
            torch.onnx.export(_Core(model).eval(), (model.transform(list(x))[0].tensors,), str(tmp),
                              input_names=["x"], output_names=["cls", "reg", "ctr"], opset_version=17,
                              dynamic_axes={k: {0: "n"} for k in ("x", "cls", "reg", "ctr")}, dynamo=False)
        os.replace(tmp, path)  # another process exporting the same model writes the same bytes
    return path


_SESSIONS: "weakref.WeakKeyDictionary[torch.nn.Module, OnnxDetector]" = weakref.WeakKeyDictionary()


def onnx_detector(model: torch.nn.Module, size: int) -> "OnnxDetector":
    """The :class:`OnnxDetector` of ``model`` (one per model and thread count, kept while the model lives)."""
    found = _SESSIONS.get(model)
    if found is None or found.size != size or found.threads != torch.get_num_threads():
        found = _SESSIONS[model] = OnnxDetector(model, size)
    return found


class OnnxDetector:
    """An FCOS in evaluation, its network run by ONNX Runtime with ``threads`` threads (default:
    torch's); see the module docstring."""

    def __init__(self, model: torch.nn.Module, size: int, threads: int | None = None) -> None:
        self.model = model.eval()
        self.size = size
        self.threads = threads or torch.get_num_threads()
        path = export_onnx(self.model, size, _cache_dir() / f"{_key(model, size)}.onnx")
        self.session = session(path, self.threads)
        self._levels: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def _level_shapes(self, h: int, w: int) -> list[tuple[int, int]]:
        """The feature maps' sizes for an input of h x w (once per size, from the torch backbone)."""
        if (h, w) not in self._levels:
            with torch.inference_mode():
                feats = self.model.backbone(torch.zeros(1, 1, h, w))
            self._levels[(h, w)] = [tuple(f.shape[-2:]) for f in feats.values()]
        return self._levels[(h, w)]

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        m = self.model
        original = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch, _ = m.transform(images, None)
        x = batch.tensors
        cls, reg, ctr = self.session.run(None, {"x": x.numpy()})
        head = {"cls_logits": torch.from_numpy(cls), "bbox_regression": torch.from_numpy(reg),
                "bbox_ctrness": torch.from_numpy(ctr)}
        n = x.shape[0]
        features = [torch.empty((n, 0, h, w), dtype=x.dtype) for h, w in self._level_shapes(*x.shape[-2:])]
        anchors = m.anchor_generator(batch, features)
        per_level = [h * w for h, w in (f.shape[-2:] for f in features)]
        split_head = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        det = m.postprocess_detections(split_head, split_anchors, batch.image_sizes)
        return m.transform.postprocess(det, batch.image_sizes, original)
