"""The synthetic-data stage: a NEU-DET-like dataset written to a folder (images and labels in
several formats), checked before any work."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, interrupt_leaves
from ..types import LabelSet


def make_synthetic(out: Path, images: int, seed: int, config: Path | None = None, *, workers: int = 1,
                   overwrite: bool = False, progress: bool = True) -> LabelSet:
    """Write ``images`` synthetic images and their labels to ``out`` (:func:`cvcurate.synth.generate`)."""
    from ..synth import generate, load_synth_config

    if images < 1:
        raise InputError(f"--images must be at least 1, got {images}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    cfg = load_synth_config(config)
    with interrupt_leaves(f"{out} may hold part of a synthetic dataset: run the command again with --overwrite"):
        return generate(out, images, seed, cfg, workers=workers, overwrite=overwrite, progress=progress)
