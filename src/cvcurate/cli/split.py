"""The split command: assign train / val / test, stratified, near-duplicates kept together."""

from __future__ import annotations

import typer

from ..errors import shell_arg
from ..stages import split as split_stage
from . import app
from .common import console, esc, say, wait_option


@app.command("split")
def split_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    val: float = typer.Option(..., "--val", help="Fraction of the images for val, in [0, 1)."),
    test: float = typer.Option(0.0, "--test", help="Fraction of the images for test, in [0, 1); val + test < 1."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed: the same seed gives the same split."),
    reassign: bool = typer.Option(
        False, "--reassign", help="Assign every image again (default: images that have a split keep it; only "
        "the others are assigned, aiming at the fractions over all images)."),
    wait: float = wait_option(),
) -> None:
    """Assign each image to train, val or test: stratified, near-duplicates never split.

    Each class's images, and as far as sizes allow each mix of classes in one image, are spread
    over the splits in the asked fractions (the rest is train). Near-duplicate images (by pixels,
    as the leakage check finds them), copies of one file and augmented images with their source
    go to one split together. Images that already have a split keep it unless --reassign. An image
    that cannot be read goes to train. The same seed gives the same split, whatever the order of
    the samples. Written all or nothing, and recorded in the dataset's history (the export
    manifest shows it).

    Examples:

      cvcurate split neu --val 0.2 --seed 0

      cvcurate split neu --val 0.15 --test 0.15 --seed 1 --reassign
    """
    res = split_stage.split_dataset(name, val=val, test=test, seed=seed, reassign=reassign, progress=True,
                                    wait=wait)
    from rich.table import Table

    t = Table(title=f"boxes per class and split (seed {seed})")
    t.add_column("class")
    for s, n in res.images.items():
        t.add_column(esc(f"{s} ({n} img)"), justify="right")
    for c in res.classes:
        t.add_row(esc(c), *(str(res.boxes[s][c]) for s in res.images))
    console.print(t)
    kept = (f", {res.kept} kept the split they had (--reassign to assign them too)" if res.kept
            else "")
    say(f"{name}: {res.assigned} image(s) assigned ({res.changed} changed){kept}")
    if res.groups:
        say(f"{res.groups} group(s) of near-duplicate or identical images ({res.grouped_images} images) "
            f"each kept in one split")
    if res.mixed_groups:
        say(f"warning: {res.mixed_groups} group(s) of near-duplicates already spanned splits and kept them; "
            f"'cvcurate split {shell_arg(name)} --val {val:g} --test {test:g} --seed {seed} --reassign' "
            f"puts each in one split")
    if res.unreadable:
        say(f"{res.unreadable} image(s) cannot be read: put in train (unless they kept a split)")
