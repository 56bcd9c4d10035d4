"""The corrupt command: inject known label errors into a copy of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import corrupt as corrupt_lib
from . import app
from .common import say, wait_option


@app.command("corrupt")
def corrupt_cmd(
    name: str = typer.Argument(..., help="Dataset to copy (it is not changed)."),
    out: str = typer.Option(..., "--out", "-o", help="Name of the corrupted copy."),
    rate: float = typer.Option(0.1, "--rate", help="Fraction of images that get one error each."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same errors)."),
    types: Optional[str] = typer.Option(
        None, "--types", help=f"Comma-separated error types [default: all: {','.join(corrupt_lib.ERROR_TYPES)}]."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Truth file to write [default: OUT_truth.json]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    wait: float = wait_option(),
) -> None:
    """Inject known label errors into a copy of a dataset and write a truth file.

    Types: swap (wrong class), badloc (box shifted/scaled to IoU 0.2-0.5), overlooked (box
    dropped), spurious (box added), merge (two boxes into one), split (one box into fragments),
    degenerate (zero-area or out-of-image box). The truth file lists every injected error with the
    true and the corrupted boxes, so a scorer can be measured against it.

    Example: cvcurate corrupt neu --rate 0.1 --seed 0 --out neu_noisy
    """
    from ..stages.corrupt import corrupt
    from ..stages.datasets import validate_dataset_name

    validate_dataset_name(out, "--out")
    type_list = [t.strip() for t in types.split(",") if t.strip()] if types else None
    if truth is not None:
        from ..errors import check_writable_file

        check_writable_file(truth, "--truth")
    run = corrupt(name, out, rate=rate, seed=seed, types=type_list, truth=truth, overwrite=overwrite, wait=wait)
    result = run.result
    by_type = ", ".join(f"{k} {v}" for k, v in result.by_type().items())
    say(f"{out}: {len(result.errors)} errors injected into {run.images} images ({by_type}); "
        f"truth written to {run.truth_path}")
