"""The fixed detector: torchvision FCOS on a small grayscale backbone with an FPN.

Only the backbone is ours; the head, the losses, the box coding, the transform and the
post-processing (score threshold, NMS, top-k) are torchvision's. Nothing is downloaded: there are
no pretrained weights, every model is trained from scratch.

Input: one grayscale channel (not gray replicated to 3), already resized to a square
``input_size`` by :mod:`cvcurate.detector.data`, with values in [0, 1]. ``min_size = max_size =
input_size`` so torchvision's transform never rescales (never up to 800), and ``size_divisible``
equals the largest stride so no padding is added.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict

import torch
from torch import nn

from .config import ModelConfig

IMAGE_MEAN = [0.45]
IMAGE_STD = [0.25]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # each residual block starts as identity
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class _LastLevels(nn.Module):
    """P6 (and P7) from P5 by stride-2 convolutions, as in FCOS/RetinaNet."""

    def __init__(self, channels: int, n: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1) for _ in range(n))

    def forward(self, p: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, conv in enumerate(self.convs):
            p = conv(p if i == 0 else torch.relu(p))
            out.append(p)
        return out


class TinyBackboneFPN(nn.Module):
    """ResNet-like body (stem stride 2, four stages of BasicBlocks at strides 4..32) + FPN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        s = cfg.stem_channels
        self.stem = nn.Sequential(nn.Conv2d(1, s, 3, 2, 1, bias=False), nn.BatchNorm2d(s), nn.ReLU(inplace=True))
        stages = []
        cin = s
        for w, n in zip(cfg.widths, cfg.blocks):
            blocks = [BasicBlock(cin, w, 2)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(cfg.widths[1:]), cfg.fpn_channels)
        self.extra = _LastLevels(cfg.fpn_channels, cfg.extra_levels) if cfg.extra_levels else None
        self.out_channels = cfg.fpn_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        feats = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                feats[f"p{i + 2}"] = x
        out = self.fpn(feats)
        if self.extra is not None:
            for j, p in enumerate(self.extra(out["p5"])):
                out[f"p{6 + j}"] = p
        return out


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the detector for ``num_classes`` classes (no background class: FCOS uses sigmoids)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    if cfg.arch != "fcos_tiny":
        raise ValueError(f"unknown detector architecture {cfg.arch!r}")
    if num_classes < 1:
        raise ValueError("the detector needs at least one class")
    backbone = TinyBackboneFPN(cfg)
    n_levels = 3 + cfg.extra_levels
    sizes = tuple((8 * 2**i,) for i in range(n_levels))  # anchor size = stride, as FCOS expects
    anchors = AnchorGenerator(sizes, ((1.0,),) * n_levels)
    head = FCOSHead(cfg.fpn_channels, 1, num_classes, num_convs=cfg.head_convs)
    model = FCOS(
        backbone, num_classes,
        min_size=cfg.input_size, max_size=cfg.input_size,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
        anchor_generator=anchors, head=head,
        score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img, topk_candidates=cfg.topk_candidates,
        size_divisible=cfg.max_stride,
    )
    model.arch_name = cfg.arch  # type: ignore[attr-defined]
    model.model_config = asdict(cfg)  # type: ignore[attr-defined]
    model.num_classes = num_classes  # type: ignore[attr-defined]
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device of :func:`cvcurate.device.resolve_device` (the one policy); the detector falls
    back: ``cuda`` without a GPU runs on the CPU with a printed warning."""
    import sys
    import warnings

    from ..device import resolve_device as resolve

    name, note = resolve(str(device) if device is not None else None, fallback=True)
    if note:
        print(f"warning: {note}", file=sys.stderr)
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return torch.device(name)
