"""The synth command: write a synthetic NEU-DET-like dataset (see cvcurate.synth)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import shell_arg
from . import app
from .common import say


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (must be new or empty)."),
    images: int = typer.Option(1200, "--images", "-n", help="Number of images to draw."),
    seed: int = typer.Option(0, "--seed", help="Random seed: one seed gives one dataset, byte for byte."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Synth config YAML [default: configs/synth.yaml, else built-in defaults]."),
    workers: int = typer.Option(1, "--workers", "-w", help="Processes drawing images (any number: same output)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synthetic dataset already in OUT."),
) -> None:
    """Draw a synthetic steel-defect dataset like NEU-DET, with exact boxes, ready to import.

    Writes 200x200 grayscale steel images with six defect classes (crazing, inclusion, patches,
    pitted_surface, rolled-in_scale, scratches), Pascal VOC XMLs in OUT/annotations and the same
    boxes as COCO in OUT/coco/labels.json. Every box is the tight box of the pixels its defect
    changed. Class frequencies, defects per image and texture are set in the config.

    Examples:

      cvcurate synth data/synth --images 600 --seed 1

      cvcurate synth data/synth --images 5000 --config my_synth.yaml --workers 2 --overwrite
    """
    from ..stages.synth import make_synthetic

    labels = make_synthetic(out, images, seed, config, workers=workers, overwrite=overwrite)
    splits: dict[str, int] = {}
    for rec in labels.records:
        splits[rec.split or "-"] = splits.get(rec.split or "-", 0) + 1
    split_text = ", ".join(f"{n} {s}" for s, n in sorted(splits.items(), key=lambda kv: kv[0] != "train"))
    say(f"wrote {len(labels)} images ({split_text}) and {labels.num_boxes} boxes to {out}")
    for name, n in labels.class_counts().items():
        say(f"  {name:<16} {n:>6} boxes")
    say(f"next: cvcurate import {shell_arg(out)} --name synth   "
        f"(or: cvcurate import {shell_arg(out / 'coco' / 'labels.json')} --format coco --name synth)")
