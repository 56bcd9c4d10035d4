"""Dataset commands: import, datasets, info, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..stages import datasets
from ..stages import imports as importer
from ..config import load_import_limits
from ..errors import InputError, check_writable_file
from ..formats import FORMATS, VOC_ORIGINS
from . import app
from .common import console, print_report, wait_option

FORMAT_HELP = f"Annotation format: {', '.join(FORMATS)}. Detected from the folder when omitted."
VOC_ORIGIN_HELP = (
    "How VOC/GC10 xmin..xmax are read: 0 = as written (x1 = xmin, x2 = xmax; FiftyOne's, Roboflow's and "
    "CVAT's convention), 1 = 1-based inclusive pixels of the VOC devkit (x1 = xmin - 1; NEU-DET), auto = "
    "0 if any xmin/ymin is below 1, else 1 if some box starts at 1, else 0. The choice is printed and "
    "recorded in the dataset's history.")


@app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="Dataset folder (or COCO JSON / Severstal CSV / YOLO data.yaml)."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the dataset to create or merge into."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
    split: Optional[str] = typer.Option(None, "--split", "-s", help="Split to give every image (train, val, ...)."),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="Comma-separated class names to accept, in id order; boxes of other classes "
        "are left out and reported."),
    keep_unlabeled: bool = typer.Option(
        False, "--keep-unlabeled", help="Import images that have no annotation file as images without "
        "defects (default: reject and report them)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset instead of merging into it."),
    report: Optional[Path] = typer.Option(
        None, "--report", help="Where to write the JSON import report [default: NAME_import_report.json]."),
    voc_origin: str = typer.Option("0", "--voc-origin", help=VOC_ORIGIN_HELP),
    class_map: Optional[Path] = typer.Option(
        None, "--class-map", help="YAML or JSON file mapping old class names to new ones (old: new); names it "
        "mentions are never case-merged."),
    merge_case: bool = typer.Option(
        True, "--merge-case/--keep-case", help="Merge class names equal up to case into the most frequent "
        "spelling (reported), or keep them apart. Surrounding whitespace is always stripped (reported)."),
    include_crowd: bool = typer.Option(
        False, "--include-crowd", help="COCO: import iscrowd 1 boxes as ordinary boxes (default: left out of "
        "the ground truth and counted in the report)."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Import limits YAML: boxes per image, label file lines and bytes, image "
        "pixels, JSON depth [default: configs/import.yaml, else built-in defaults]."),
    wait: float = wait_option(),
) -> None:
    """Import a dataset into a persistent FiftyOne dataset, with a report of every bad file.

    Images are matched to annotations, boxes are checked (and rescaled when the annotation
    declares another image size), and nothing is dropped silently: every rejected image and every
    box left out is in the report. Importing into an existing dataset merges by image path;
    importing the same data twice changes nothing. A failed import, or one that imports no image,
    leaves the store as it was (exit code 2). An image over a limit of --config (more than 10,000
    boxes, a label file over 100,000 lines or 10 MB, over 100M pixels by default) is rejected and
    reported; the rest is imported.

    Examples:

      cvcurate import ../shared/data/neu-det --name neu --voc-origin 1

      cvcurate import data/val --name steel --split val --format yolo

      cvcurate import coco/annotations/instances_train2017.json --name coco --class-map map.yaml
    """
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown --format {format!r}: use one of {', '.join(FORMATS)}")
    if voc_origin not in VOC_ORIGINS:
        raise InputError(f"--voc-origin must be one of {', '.join(VOC_ORIGINS)}, got {voc_origin!r}")
    datasets.validate_dataset_name(name)  # before the name makes a report path, or anything is read
    limits = load_import_limits(config)
    class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    report_path = check_writable_file(report if report is not None else Path(f"{name}_import_report.json"),
                                      "the import report")
    options = importer.ImportOptions(
        format=format, split=split, classes=class_list, keep_unlabeled=keep_unlabeled, voc_origin=voc_origin,
        include_crowd=include_crowd, class_map=class_map, merge_case=merge_case, limits=limits,
    )
    result = importer.import_dataset(path, name, options, overwrite=overwrite, report_path=report_path,
                                     progress=True, wait=wait)
    print_report(result.report)
    w = result.write
    console.print(f"dataset [bold]{escape(name)}[/]: {w.added} added, {w.updated} updated, {w.unchanged} unchanged; "
                  f"report written to {escape(str(result.report_path))}")


@app.command("datasets")
def datasets_cmd() -> None:
    """List the datasets in the store: images, boxes and the last score run of each.

    Example: cvcurate datasets
    """
    lines = datasets.overview()
    if not lines:
        console.print("no datasets yet: create one with 'cvcurate import PATH --name NAME'")
        return
    for d in lines:
        if d.stale:
            last = "scored by an older cvcurate (score again)"
        elif d.scored_at is None:
            last = "not scored"
        else:
            exp = f", {d.expected_label_errors:.1f} expected label errors" if d.expected_label_errors is not None else ""
            last = f"last score {d.scored_at}: {d.flagged_images} image(s) with an issue{exp}"
        console.print(f"[bold]{escape(d.name)}[/]: {d.images} images, {d.boxes} boxes; {escape(last)}")


@app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of tables."),
) -> None:
    """Counts per class and split, boxes per image, and box sizes of a dataset.

    Example: cvcurate info neu --json
    """
    data = datasets.describe(name)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    console.print(f"[bold]{escape(name)}[/]: {data['images']} images, {data['boxes']} boxes, "
                  f"{len(data['classes'])} classes")
    if not data["images"]:
        console.print("the dataset is empty: import images with 'cvcurate import PATH --name NAME'")
    splits = list(data["boxes_per_class_and_split"])
    t = Table(title="boxes per class and split")
    t.add_column("class")
    for s in splits:
        t.add_column(escape(f"{s} ({data['images_per_split'][s]} img)"), justify="right")
    t.add_column("total", justify="right")
    for c in data["classes"]:
        row = [data["boxes_per_class_and_split"][s][c] for s in splits]
        t.add_row(escape(c), *map(str, row), str(sum(row)))
    console.print(t)
    b = data["boxes_per_image"]
    if b.get("mean") is not None:
        console.print(f"boxes per image: mean {b['mean']:.2f}, median {b['median']:g}, max {b['max']:g}; "
                      f"{b['images_without_boxes']} image(s) without boxes")
    t = Table(title="box size (pixels) per class")
    for col in ("class", "boxes", "width median", "height median", "area / image median", "area min..max"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for c, st in data["box_size"].items():
        if not st["count"]:
            t.add_row(escape(c), "0", "-", "-", "-", "-")
            continue
        ra = st["rel_area"]
        t.add_row(escape(c), str(st["count"]), f"{st['width']['median']:.1f}", f"{st['height']['median']:.1f}",
                  f"{ra['median']:.3f}", f"{ra['min']:.4f}..{ra['max']:.3f}")
    console.print(t)


@app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait: float = wait_option(),
) -> None:
    """Delete a dataset from the store (image files on disk are never touched).

    Example: cvcurate delete neu --yes
    """
    datasets.require(name)  # fails clearly if absent
    if not yes and not typer.confirm(f"delete dataset {name!r}?"):
        raise typer.Exit(1)
    n = datasets.delete(name, wait=wait)
    console.print(f"deleted dataset {escape(name)} ({n} samples); image files untouched")
