"""The augment command: new samples for under-represented classes (albumentations + copy-paste)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import shell_arg
from . import app
from .common import console, engine_option, esc, ray_workers_option, say, wait_option

COLUMNS = ("class", "images", "instances", "target", "samples", "new instances", "after", "images after")


@app.command("augment")
def augment_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML [default: "
                                          "configs/augment/steel.yaml]; also steel_light."),
    target: Optional[int] = typer.Option(None, "--target", help="Instances each selected class is raised "
                                         "to, 1 to 10,000,000 [default: the largest class's count]."),
    balance: bool = typer.Option(False, "--balance", help="Aim at equal counts after augmentation (the side "
                                 "effects on other classes included)."),
    classes: List[str] = typer.Option([], "--classes", help="Only raise these classes (repeatable)."),
    device: str = typer.Option("cpu", "--device", help="cpu (albumentations workers) or cuda (batched on the GPU)."),
    workers: Optional[int] = ray_workers_option("CPU worker processes [default: 1; with --engine ray: Ray workers, all "
                                                "cores or the cluster's]."),
    engine: str = engine_option("With ray, the cluster must see --out."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same samples (for any worker count)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the new images "
                                       "[default: NAME_augment/<pipeline>-s<seed>]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    undo: bool = typer.Option(False, "--undo", help="Remove the samples and files an augmentation added "
                              "(all of them, or those of --out)."),
    wait: float = wait_option(),
) -> None:
    """Add bbox-correct samples of under-represented classes, from an albumentations pipeline
    (flips, small affine, brightness/contrast, noise, blur) and rare-class defect copy-paste.

    Plans how many samples each class needs to reach the target, prints the plan (noting classes
    under the YOLO rule of thumb of 1,500 images / 10,000 instances), picks source images that
    carry the rare class with few common ones, generates the samples, and adds them to the dataset
    tagged 'augmented' with their provenance (cvc_augment), in their source's split. Originals are
    never touched; an interrupted run resumes with no duplicate; --undo removes what was added.

    Examples:

      cvcurate augment neu --dry-run

      cvcurate augment neu --balance --workers 2 --seed 1

      cvcurate augment neu --undo
    """
    from ..stages import augment as stage

    if undo:
        n, files = stage.undo(name, out=out, wait=wait)
        say(f"removed {n} augmented sample(s) from {name} and {files} file(s)")
        return
    res = stage.augment(name, config=config, target=target, balance=balance, classes=classes or None,
                        device=device, workers=workers if engine == "ray" else (workers or 1), seed=seed, out=out,
                        dry_run=dry_run, progress=True, wait=wait, engine=engine)
    from rich.table import Table

    t = Table(title=f"augmentation plan for {esc(name)} ({esc(res.pipeline)}, seed {seed})")
    heads = {"instances": "inst", "new instances": "+inst", "after": "inst after", "images after": "img after",
             "images": "img"}
    for col in COLUMNS:
        t.add_column(heads.get(col, col), justify="left" if col == "class" else "right", no_wrap=col == "class")
    rows = res.plan.table()
    for row in rows:
        t.add_row(*(esc(row[c]) for c in COLUMNS))
    console.print(t)
    under = [r["class"] for r in rows if "YOLO" in str(r["notes"])]
    if under:
        say(f"note: under the YOLO rule of thumb (1,500 images / 10,000 instances per class): {', '.join(under)}")
    for r in rows:
        other = [n for n in str(r["notes"]).split("; ") if n and "YOLO" not in n]
        for n in other:
            say(f"note: {r['class']}: {n}")
    for note in res.notes:
        say(f"note: {note}")
    if res.dry_run:
        say(f"dry run: {res.plan.n_samples} sample(s) would be written to {res.out_dir}")
        return
    if res.plan.n_samples == 0:
        say("nothing to add: every selected class is at its target")
        return
    say(f"added {res.added} augmented sample(s) to {name} ({res.written} written now, {res.resumed} resumed) "
        f"in {res.out_dir}; undo with 'cvcurate augment {shell_arg(name)} --undo'")
    for cls, n in res.short.items():
        say(f"note: {cls} is still {n} instance(s) short of the target")
