"""Procedural NEU-DET-like steel-defect images with exact boxes (nothing downloaded).

``generate(out_dir, n_images, seed)`` writes a dataset that ``cvcurate import`` reads; the
boxes are the tight bounding boxes of the pixels each drawn defect changed.
"""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from .config import CLASSES, SynthConfig, TextureConfig
from .generator import generate, image_rng
from .render import Defect, Rendered, mask_box, render_image

__all__ = [
    "CLASSES", "Defect", "Rendered", "SynthConfig", "TextureConfig", "generate", "image_rng",
    "load_synth_config", "mask_box", "render_image",
]


def load_synth_config(path: str | Path | None = None) -> SynthConfig:
    """Load ``path`` (or ``configs/synth.yaml``, or the defaults) as a :class:`SynthConfig`."""
    return load_config(SynthConfig, path, default_name="synth.yaml")
