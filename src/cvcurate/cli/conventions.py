"""The conventions command: how each class is boxed across the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import shell_arg
from . import app
from .common import read_pred_field_option, say, wait_option


@app.command("conventions")
def conventions_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    pred_field: Optional[str] = read_pred_field_option("Predictions the boxes are measured against"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for conventions.html, .md, .json and "
                                       "the example images [default: NAME_conventions]."),
    config: Optional[Path] = typer.Option(None, "--config", help="Score config (the model's confidence "
                                          "thresholds are fitted as score fits them)."),
    adopt: Optional[str] = typer.Option(None, "--adopt", metavar="CLASS=whole|pieces",
                                        help="Settle one class's style: fix every image the model can judge to "
                                        "follow it (pieces merged into the model's box, or a box over several "
                                        "regions split into the model's pieces), as one change set that "
                                        "'cvcurate apply NAME --undo' takes back; the convention is recorded with the dataset."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --adopt: only list the changes."),
    instructions: Optional[Path] = typer.Option(None, "--instructions", help="Write labeling instructions for "
                                                "annotators (Markdown, with a good and a bad example per class)."),
    wait: float = wait_option(),
) -> None:
    """How each class is boxed across the dataset, against the regions the model sees: whole (one
    box per region) or in pieces (several boxes in one region: strips, tiles), boxes nested in a box
    of their class, and margins tighter or looser than the model's. Per class: counts, shares, the
    majority style and example images of each style; a class boxed both ways (the less common style
    in at least a quarter of its images) is marked mixed: no single box is wrong there, but a model
    trained on both learns neither. Needs predictions (cvcurate predict).

    Examples:

      cvcurate conventions neu

      cvcurate conventions neu --adopt pitted_surface=whole --dry-run

      cvcurate conventions neu --adopt pitted_surface=whole --instructions neu-labeling.md
    """
    from ..stages.conventions import adopt as adopt_style, run_conventions

    if dry_run and adopt is None:
        raise typer.BadParameter("--dry-run goes with --adopt CLASS=whole|pieces")
    if instructions is not None:  # before a convention is adopted and the pages are measured
        from ..errors import check_writable_file

        check_writable_file(instructions, "--instructions")
    if adopt is not None:
        run = adopt_style(name, adopt, pred_field=pred_field, config=config, dry_run=dry_run, wait=wait)
        cs = run.change
        for line in run.lines:
            say(line)
        for s in cs.skipped:
            say(f"skipped {s.get('filepath')}: {s['why']}")
        if dry_run:
            say(f"dry run: adopting {run.cls}={run.style} would change {len(cs.changes)} image(s) "
                f"({cs.applied} fix(es)); nothing was written")
            return
        say(f"adopted {run.cls}={run.style}: {len(cs.changes)} image(s) changed ({cs.applied} fix(es))"
            + (f", logged in {cs.log_path}; undo with 'cvcurate apply {shell_arg(name)} --undo --change {cs.change_id}'"
               if cs.changes else "; every image the model judges follows it already"))
        if instructions is None:
            return

    res = run_conventions(name, pred_field=pred_field, config=config, out_dir=out, instructions=instructions)
    for line in res.lines:
        say(line)
    mixed = res.conventions.mixed
    if mixed:
        say(f"{len(mixed)} class(es) boxed both ways: settle one style per class with the team "
            f"(the report shows examples of each)")
    say(f"conventions of {name} against {res.pred_field!r}: {res.paths['html']} (also {res.paths['md'].name}, "
        f"{res.paths['json'].name})")
    if "instructions" in res.paths:
        say(f"labeling instructions: {res.paths['instructions']}")
