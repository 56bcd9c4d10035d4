"""Detector configuration: ``configs/detector.yaml`` is a copy of these defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import from_dict, load_config

ARCHITECTURES = ("fcos_tiny",)


@dataclass
class ModelConfig:
    """The network. ``fcos_tiny``: torchvision FCOS (head, losses, post-processing) on a small
    ResNet-like backbone with BatchNorm and an FPN over P3..P5 (plus ``extra_levels`` more).

    Input is one grayscale channel, resized to a square ``input_size`` x ``input_size``.
    """

    arch: Literal["fcos_tiny"] = "fcos_tiny"
    input_size: int = 224
    stem_channels: int = 16
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # strides 4, 8, 16, 32
    blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    fpn_channels: int = 64
    head_convs: int = 2
    extra_levels: int = 0  # 1 adds P6 (stride 64), 2 adds P6 and P7
    score_thresh: float = 0.01  # keep low-confidence boxes: label-error scoring needs them
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    topk_candidates: int = 1000

    @property
    def max_stride(self) -> int:
        return 2 ** (5 + self.extra_levels)

    def check(self) -> None:
        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise ValueError("widths and blocks need 4 entries (strides 4, 8, 16, 32)")
        if any(b < 1 for b in self.blocks) or any(w < 1 for w in self.widths):
            raise ValueError("widths and blocks must be positive")
        if self.fpn_channels % 32:
            raise ValueError(f"fpn_channels must be a multiple of 32 (the FCOS head uses GroupNorm(32)), "
                             f"got {self.fpn_channels}")
        if self.extra_levels not in (0, 1, 2):
            raise ValueError(f"extra_levels must be 0, 1 or 2, got {self.extra_levels}")
        if self.input_size < self.max_stride or self.input_size % self.max_stride:
            raise ValueError(f"input_size must be a multiple of the largest stride {self.max_stride} "
                             f"(so feature-map locations line up with pixels), got {self.input_size}")
        if not 0 <= self.score_thresh < 1:
            raise ValueError("score_thresh must be in [0, 1)")


@dataclass
class TrainConfig:
    epochs: int = 90
    batch_size: int = 16
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 0.002
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 2.0  # linear warm-up, then cosine decay to 0
    grad_clip: float = 10.0
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 0.15  # random +- shift of the mean, in [0, 1] intensity units
    contrast: float = 0.15  # random 1 +- factor
    scale_jitter: float = 0.25  # half of the images zoomed in/out by up to this factor (0: off)
    rot90: float = 0.0  # probability of a quarter turn (either way) of the square frame
    noise: float = 0.0  # half of the images get Gaussian noise of sigma up to this (in [0, 1] units)
    blur: float = 0.0  # probability of a light Gaussian blur (sigma 0.5-1.2 px)
    # rare classes' images drawn more often (repeat-factor sampling): an image is drawn with weight
    # max(1, sqrt(t / f)) over its classes, f the share of training images holding a class (0: off)
    repeat_threshold: float = 0.0
    mosaic: float = 0.0  # probability that a training image is a 2 x 2 mosaic window with three others (0: off)
    seed: int = 0
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default
    max_steps: int = 0  # stop after this many optimizer steps (0: no limit); for smoke tests
    time_budget_min: float = 0.0  # wall-time cap (0: none); when it binds, the cosine schedule follows
    #   elapsed time instead of steps and training ends on time with the LR at 0 (then not bit-reproducible)
    folds: int = 5  # default K for out-of-fold predictions
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off; e.g. 0.999)
    init: str = ""  # start from these weights (synth, neu-det or a checkpoint path) instead of from scratch
    finetune_epochs: int = 12  # epochs when starting from init weights and no --epochs is given

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.folds < 2:
            raise ValueError("folds must be >= 2")
        if self.finetune_epochs < 1:
            raise ValueError("finetune_epochs must be >= 1")
        for name in ("hflip", "vflip", "rot90", "blur", "mosaic"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.repeat_threshold <= 1:
            raise ValueError(f"repeat_threshold is a share of images in [0, 1] (0: off), got {self.repeat_threshold}")
        if not 0 <= self.noise <= 0.5:
            raise ValueError(f"noise must be in [0, 0.5], got {self.noise}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1) (0: off), got {self.ema}")


@dataclass
class PredictConfig:
    batch_size: int = 16


@dataclass
class DetectorConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)


def load_detector_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DetectorConfig:
    """``configs/detector.yaml`` (or ``path``) over the defaults; ``overrides`` nested like the file."""
    cfg = load_config(DetectorConfig, path, default_name="detector.yaml")
    if overrides:
        import dataclasses

        data = dataclasses.asdict(cfg)
        for section, values in overrides.items():
            for k, v in (values or {}).items():
                if v is not None:
                    data.setdefault(section, {})[k] = v
        cfg = from_dict(DetectorConfig, data, "detector config")
    return cfg
