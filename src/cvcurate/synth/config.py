"""Settings of the synthetic NEU-DET-like generator (``configs/synth.yaml`` mirrors the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CLASSES: tuple[str, ...] = (
    "crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches",
)


def _default_weights() -> dict[str, float]:
    # pitted_surface and scratches are rare on purpose: a curation tool must cope with imbalance
    return {"crazing": 1.0, "inclusion": 1.0, "patches": 1.0, "pitted_surface": 0.3,
            "rolled-in_scale": 1.0, "scratches": 0.3}


def _default_class_brightness() -> dict[str, float]:
    # mean grey level of the steel around each kind of defect, measured on real NEU-DET images
    return {"crazing": 128.0, "inclusion": 100.0, "patches": 175.0, "pitted_surface": 185.0,
            "rolled-in_scale": 128.0, "scratches": 90.0}


def _default_class_roughness() -> dict[str, float]:
    # how grainy the steel around each kind of defect is (multiplies ``grain``), as in NEU-DET
    return {"crazing": 2.2, "inclusion": 0.5, "patches": 2.2, "pitted_surface": 0.7,
            "rolled-in_scale": 0.8, "scratches": 0.5}


@dataclass
class TextureConfig:
    """The defect-free steel: grey level, rolling streaks, illumination, noise (grey levels 0-255)."""

    direction: Literal["vertical", "horizontal"] = "vertical"  # rolling direction (NEU-DET: vertical)
    class_brightness: dict[str, float] = field(default_factory=_default_class_brightness)
    class_roughness: dict[str, float] = field(default_factory=_default_class_roughness)
    brightness_jitter: float = 20.0  # per-image random shift of the mean grey level, +-
    gradient: float = 18.0  # amplitude of the uneven illumination (ramp and slow blotches)
    streaks: float = 4.0  # contrast of the streaks along the rolling direction
    grain: float = 7.0  # contrast of the mottled grain of the surface (times class_roughness)
    noise: float = 3.0  # standard deviation of the fine per-pixel noise

    def check(self) -> None:
        for key in ("class_brightness", "class_roughness"):
            unknown = sorted(set(getattr(self, key)) - set(CLASSES))
            if unknown:
                raise ValueError(f"{key}: unknown class {unknown[0]!r} (classes: {', '.join(CLASSES)})")
        for name, v in self.class_brightness.items():
            if not 0 <= v <= 255:
                raise ValueError(f"class_brightness.{name} must be within 0..255, got {v}")
        for name, v in self.class_roughness.items():
            if v < 0:
                raise ValueError(f"class_roughness.{name} must be >= 0, got {v}")
        for name in ("brightness_jitter", "gradient", "streaks", "grain", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class SynthConfig:
    """What a synthetic dataset looks like. Class weights are the expected share of boxes per class."""

    image_size: int = 200  # square images, like NEU-DET
    image_format: Literal["png", "jpg"] = "png"  # png: exact pixels; jpg: realistic compression
    jpeg_quality: int = 95
    class_weights: dict[str, float] = field(default_factory=_default_weights)
    defects_per_image: list[int] = field(default_factory=lambda: [1, 4])  # [min, max], inclusive
    mixed_class_prob: float = 0.05  # chance that a further defect of an image is of any class
    contrast: float = 1.0  # scales the darkness / brightness of every defect
    val_fraction: float = 0.2  # expected share of images in the "val" split
    texture: TextureConfig = field(default_factory=TextureConfig)

    def check(self) -> None:
        if not 32 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be within 32..4096, got {self.image_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {self.jpeg_quality}")
        unknown = sorted(set(self.class_weights) - set(CLASSES))
        if unknown:
            raise ValueError(f"class_weights: unknown class {unknown[0]!r} (classes: {', '.join(CLASSES)})")
        if any(w < 0 for w in self.class_weights.values()):
            raise ValueError("class_weights must be >= 0")
        if sum(self.class_weights.values()) <= 0:
            raise ValueError("class_weights: at least one class needs a positive weight")
        lo_hi = self.defects_per_image
        if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1] or lo_hi[1] > 50:
            raise ValueError(f"defects_per_image must be [min, max] with 1 <= min <= max <= 50, got {lo_hi}")
        if not 0 <= self.mixed_class_prob <= 1:
            raise ValueError(f"mixed_class_prob must be within 0..1, got {self.mixed_class_prob}")
        if not 0 < self.contrast <= 5:
            raise ValueError(f"contrast must be within 0..5 (exclusive of 0), got {self.contrast}")
        if not 0 <= self.val_fraction <= 1:
            raise ValueError(f"val_fraction must be within 0..1, got {self.val_fraction}")
        self.texture.check()

    def weights(self) -> list[float]:
        """Class weights in :data:`CLASSES` order (a class left out of the mapping weighs 0)."""
        return [float(self.class_weights.get(c, 0.0)) for c in CLASSES]
