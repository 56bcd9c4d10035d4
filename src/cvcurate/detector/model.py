"""The fixed detector: torchvision FCOS on a small grayscale backbone with an FPN.

Only the backbone is ours; the head, the losses, the box coding, the transform and the
post-processing (score threshold, NMS, top-k) are torchvision's (the post-processing computed with
less work for the same boxes: :func:`_fcos_class`). Nothing is downloaded: there are
no pretrained weights, every model is trained from scratch.

Input: one grayscale channel (not gray replicated to 3), already resized to a square
``input_size`` by :mod:`cvcurate.detector.data`, with values in [0, 1]. ``min_size = max_size =
input_size`` so torchvision's transform never rescales (never up to 800), and ``size_divisible``
equals the largest stride so no padding is added.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)  # one class per process, not one per model built
def _fcos_class():
    """torchvision's FCOS with the same post-processing computed with less work (same boxes).

    torchvision decodes every candidate (up to ``topk_candidates`` per level above ``score_thresh``,
    ~2,400 per image here) and runs class-wise NMS over all of them, then keeps the best
    ``detections_per_img``. Greedy NMS decides a box only from boxes of higher score, so the kept
    boxes scoring above some ``t`` are the same whether or not the candidates below ``t`` take part.
    Here the candidates are taken best first, 8 times ``detections_per_img`` at once (doubling
    when too few survive), until ``detections_per_img`` kept boxes score strictly above the lowest
    candidate taken (or every candidate was taken): the result is torchvision's, at a fraction of
    the NMS and decoding. Scores of a level are computed for the whole batch at once.
    """
    from torchvision.models.detection import FCOS
    from torchvision.ops import boxes as box_ops

    class FastFCOS(FCOS):
        def postprocess_detections(self, head_outputs, anchors, image_shapes):
            n_img = len(image_shapes)
            # per level, the whole batch: (B, HWA, C) -> (B, HWA * C)
            level_scores = [torch.sqrt(torch.sigmoid(cl) * torch.sigmoid(bc)).flatten(1)
                            for cl, bc in zip(head_outputs["cls_logits"], head_outputs["bbox_ctrness"])]
            detections = []
            for i in range(n_img):
                scores, idx, level_of = [], [], []
                for lv, sc in enumerate(level_scores):
                    s_i = sc[i]
                    keep = torch.where(s_i > self.score_thresh)[0]
                    s_k = s_i[keep]
                    k = min(self.topk_candidates, s_k.numel())
                    s_k, order = s_k.topk(k)
                    scores.append(s_k)
                    idx.append(keep[order])
                    level_of.append(torch.full((k,), lv, dtype=torch.long))
                scores_all, idx_all, level_all = torch.cat(scores), torch.cat(idx), torch.cat(level_of)
                detections.append(self._nms_best(head_outputs, anchors[i], image_shapes[i], i,
                                                 scores_all, idx_all, level_all))
            return detections

        def _nms_best(self, head_outputs, anchors_i, image_shape, i, scores, idx, level):
            num_classes = head_outputs["cls_logits"][0].shape[-1]
            total = scores.numel()
            want = self.detections_per_img
            take = min(total, 8 * want)  # measured on NEU-DET: one NMS pass on 800 is the fastest
            order = torch.sort(scores, descending=True).indices if total else scores.new_zeros(0, dtype=torch.long)
            while True:
                sel = torch.sort(order[:take]).values  # torchvision's concatenation order, for equal scores
                s, ids, lv = scores[sel], idx[sel], level[sel]
                anchor_idx = torch.div(ids, num_classes, rounding_mode="floor")
                labels = ids % num_classes
                boxes = torch.empty((len(sel), 4), dtype=scores.dtype)
                for l_ in range(len(head_outputs["bbox_regression"])):
                    m = lv == l_
                    if m.any():
                        a = anchor_idx[m]
                        boxes[m] = self.box_coder.decode(head_outputs["bbox_regression"][l_][i][a],
                                                         anchors_i[l_][a]).to(boxes.dtype)
                boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
                keep = box_ops.batched_nms(boxes, s, labels, self.nms_thresh)
                if take >= total:
                    break
                cutoff = scores[order[take - 1]]
                if int((s[keep] > cutoff).sum()) >= want:
                    break
                take = min(total, 2 * take)
            keep = keep[:want]
            return {"boxes": boxes[keep], "scores": s[keep], "labels": labels[keep]}

    return FastFCOS


@functools.lru_cache(maxsize=None)
def _transform_class():
    """torchvision's input transform; in evaluation, a batch of images already at the input size
    (what :mod:`cvcurate.detector.data` gives) is normalised in one operation instead of image by
    image, and neither resized (torchvision's resize to the same size is a copy) nor padded (the
    size is a multiple of the largest stride): the same tensors, and the boxes need no rescaling
    back. Anything else (training, other sizes) is torchvision's own path."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class SquareTransform(GeneralizedRCNNTransform):
        def _as_is(self, images) -> bool:
            s = self.min_size[-1]
            return (not self.training and len(images) > 0 and self.fixed_size is None
                    and len(self.min_size) == 1 and self.max_size == s and s % self.size_divisible == 0
                    and all(im.dim() == 3 and tuple(im.shape[-2:]) == (s, s) for im in images))

        def forward(self, images, targets=None):
            if targets is not None or not self._as_is(images):
                return super().forward(images, targets)
            x = torch.stack(list(images))
            mean = torch.as_tensor(self.image_mean, dtype=x.dtype, device=x.device)[None, :, None, None]
            std = torch.as_tensor(self.image_std, dtype=x.dtype, device=x.device)[None, :, None, None]
            s = int(x.shape[-1])
            return ImageList((x - mean) / std, [(s, s)] * len(images)), None

        def postprocess(self, result, image_shapes, original_image_sizes):
            if not self.training and all(tuple(a) == tuple(b) for a, b in zip(image_shapes, original_image_sizes)):
                return result  # the boxes are in the images' own frame already
            return super().postprocess(result, image_shapes, original_image_sizes)

    return SquareTransform


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the detector for ``num_classes`` classes (no background class: FCOS uses sigmoids)."""
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
    model = _fcos_class()(
        backbone, num_classes,
        min_size=cfg.input_size, max_size=cfg.input_size,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
        anchor_generator=anchors, head=head,
        score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img, topk_candidates=cfg.topk_candidates,
        size_divisible=cfg.max_stride,
    )
    t = model.transform
    model.transform = _transform_class()(t.min_size, t.max_size, t.image_mean, t.image_std,
                                         size_divisible=t.size_divisible, fixed_size=t.fixed_size)
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
