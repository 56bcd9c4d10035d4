"""The conventions command: how each class is boxed across the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app
from .common import read_pred_field_option, say


@app.command("conventions")
def conventions_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    pred_field: Optional[str] = read_pred_field_option("Predictions the boxes are measured against"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for conventions.html, .md, .json and "
                                       "the example images [default: NAME_conventions]."),
    config: Optional[Path] = typer.Option(None, "--config", help="Score config (the model's confidence "
                                          "thresholds are fitted as score fits them)."),
) -> None:
    """How each class is boxed across the dataset, against the regions the model sees: whole (one
    box per region) or in pieces (several boxes in one region: strips, tiles), boxes nested in a box
    of their class, and margins tighter or looser than the model's. Per class: counts, shares, the
    majority style and example images of each style; a class boxed both ways (the less common style
    in at least a quarter of its images) is marked mixed: no single box is wrong there, but a model
    trained on both learns neither. Needs predictions (cvcurate predict).

    Examples:

      cvcurate conventions neu

      cvcurate conventions neu --out reports/neu-conventions --pred-field predictions_oof
    """
    from ..stages.conventions import run_conventions

    res = run_conventions(name, pred_field=pred_field, config=config, out_dir=out)
    for line in res.lines:
        say(line)
    mixed = res.conventions.mixed
    if mixed:
        say(f"{len(mixed)} class(es) boxed both ways: settle one style per class with the team "
            f"(the report shows examples of each)")
    say(f"conventions of {name} against {res.pred_field!r}: {res.paths['html']} (also {res.paths['md'].name}, "
        f"{res.paths['json'].name})")
