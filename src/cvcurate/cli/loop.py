"""Closing the loop: export (the corrected data and its manifest), diff (two exports), gate (CI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from . import app
from .common import console, esc, read_pred_field_option, say, serve_app, wait_option


@app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    format: str = typer.Option(..., "--format", "-f", help="voc, coco or yolo."),
    out: Path = typer.Option(..., "--out", "-o", help="Export folder (created; must not exist or be empty, "
                             "unless --overwrite)."),
    split: Optional[str] = typer.Option(None, "--split", "-s", help="Export only this split."),
    exclude_tag: List[str] = typer.Option([], "--exclude-tag", help="Leave out samples with this tag "
                                          "(repeatable), e.g. --exclude-tag error:rejected."),
    include_augmented: bool = typer.Option(True, "--include-augmented/--no-augmented",
                                           help="Include samples the augment stage added."),
    media: str = typer.Option("copy", "--media", help="copy the images, or symlink them (not portable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out (a folder with "
                                   "cvcurate's manifest.json and none of the dataset's files)."),
    voc_origin: Optional[str] = typer.Option(None, "--voc-origin", help="VOC: 0 writes 0-based pixel edges "
                                             "(xmin = x1), as FiftyOne, Datumaro, CVAT and Roboflow read them; 1 "
                                             "the VOC devkit's 1-based pixels (xmin = x1 + 1), as detectron2 reads "
                                             "them. [default: 0]"),
    yolo_path: Optional[str] = typer.Option(None, "--yolo-path", help="YOLO: absolute writes data.yaml's path: as "
                                            "OUT's absolute path (Ultralytics loads it from any working directory); "
                                            "relative writes no path:, so train:/val: are relative to data.yaml "
                                            "(the folder can move; give Ultralytics data.yaml's path). "
                                            "[default: absolute]"),
    wait: float = wait_option(),
) -> None:
    """Export the dataset as it stands after applied fixes, with a versioned manifest.json.

    Labels are written in the format's usual layout (VOC: JPEGImages/, Annotations/,
    ImageSets/Main/; COCO: annotations/instances_<split>.json, images/<split>/; YOLO: data.yaml,
    images/<split>/, labels/<split>/), which the peers' tools load as they are (FiftyOne,
    pycocotools, Ultralytics), and 'cvcurate import OUT' gives the same boxes, classes and splits
    back. COCO and YOLO boxes are floats; VOC boxes whole pixels rounded outward (xmin =
    floor(x1), xmax = ceil(x2); within 1 px). YOLO's data.yaml names train, val and test:
    images without a split go to train, and without val images val: names the train folder
    (Ultralytics requires it) and a line says so. manifest.json lists every image with its
    sha256, its boxes and their hash, class counts per split, how the files were written
    (--voc-origin, --yolo-path), and the lineage (imports, applied change sets). The source files are never
    touched; nothing is written halfway (a hidden temporary folder beside OUT is renamed into
    place, and what a killed export left there is removed by the next export to OUT).
    --overwrite replaces only an earlier export (a folder with cvcurate's manifest.json) that
    holds none of the dataset's images and is not, holds not and lies not inside a folder the
    dataset was imported from. The dataset is read under its lock: an apply, undo, decide,
    augment or split running meanwhile is waited for (--wait) or the export is refused, so no
    export holds half of a change; a running score or predict (which change nothing exported)
    is not waited for.

    Examples:

      cvcurate export neu --format yolo --out exports/neu-v2

      cvcurate export neu --format coco --out exports/neu-val --split val --exclude-tag error:rejected

      cvcurate export neu --format voc --voc-origin 1 --out exports/neu-voc
    """
    from ..stages.export import export

    res = export(name, out, format=format, split=split, exclude_tags=exclude_tag,
                 include_augmented=include_augmented, media=media, overwrite=overwrite, progress=True,
                 voc_origin=voc_origin, yolo_path=yolo_path, log=say, wait=wait)
    left = ", ".join(f"{n} by {k}" for k, n in res.excluded.items())
    console.print(f"exported [bold]{esc(name)}[/] as {res.format}: {res.images} images, {res.boxes} boxes "
                  f"to {esc(res.out)}" + (f" ({esc(left)} left out)" if left else ""))
    say(f"manifest: {res.manifest_path}")


@app.command("diff")
def diff_cmd(
    a: Path = typer.Argument(..., help="First export folder or manifest.json."),
    b: Path = typer.Argument(..., help="Second export folder or manifest.json."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    limit: int = typer.Option(20, "--limit", help="Box changes to list one by one (0: none)."),
) -> None:
    """What changed between two exports: images added, removed, changed; boxes added, removed,
    moved and relabelled per class.

    Images are matched by their file in the export (or by content when renamed); boxes by
    overlap: the same place with another class is a relabel, the same class overlapping its old
    place (IoU >= 0.3) a move, the rest removed and added.

    Example: cvcurate diff exports/neu-v1 exports/neu-v2
    """
    from ..stages.export import diff

    d = diff(a, b)
    if as_json:
        typer.echo(json.dumps(d.to_dict(), indent=2))
        return
    from rich.table import Table

    say(f"{a} -> {b}: {len(d.images_added)} images added, {len(d.images_removed)} removed, "
        f"{len(d.images_changed)} changed ({len(d.pixels_changed)} with other pixels)")
    if d.classes_a != d.classes_b:
        say(f"classes: {', '.join(d.classes_a)} -> {', '.join(d.classes_b)}")
    per = d.per_class()
    if per:
        t = Table(title="boxes per class")
        for col in ("class", "added", "removed", "moved", "relabelled"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for cls, row in per.items():
            t.add_row(esc(cls), *(str(row[k]) for k in ("added", "removed", "moved", "relabelled")))
        console.print(t)
    for c in d.boxes[:limit]:
        say(f"  {c.kind:<10} {c.file}: {c.old} -> {c.new}")
    if len(d.boxes) > limit > 0:
        say(f"  ... and {len(d.boxes) - limit} more (--json lists all)")
    if d.empty:
        say("no differences")


@app.command("gate")
def gate_cmd(
    target: str = typer.Argument(..., help="Dataset name in the store, or a dataset folder in any importable "
                                 "format (read without storing it)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Gate thresholds [default: "
                                          "configs/gate.yaml]."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON here."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write a Markdown report (for a pull "
                                            "request comment) here."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one test case per check) here."),
    wait: float = wait_option(),
) -> None:
    """Pre-training quality gate for CI: exit 0 pass, 1 fail, 2 usage or input error.

    Checks, each pass/warn/fail with the measured value and its threshold: unreadable images,
    invalid boxes, images and instances per class, class imbalance, duplicate images,
    train/val/test leakage, the estimated label-error rate, unreviewed issues and the share of
    images with issues (the last three from the latest 'cvcurate score' run).

    Examples:

      cvcurate gate neu --junit gate.xml --markdown gate.md

      cvcurate gate data/steel-v3 --config configs/gate.yaml --json gate.json
    """
    from .. import gate as g
    from ..stages.gate import run_gate, write_reports

    from ..errors import check_writable_file

    for opt, p in (("--json", json_path), ("--markdown", markdown), ("--junit", junit)):
        if p is not None:
            check_writable_file(p, opt)
    result = run_gate(target, config=config, progress=True, wait=wait)
    style = {g.PASS: "green", g.WARN: "yellow", g.FAIL: "red"}
    for c in result.checks:
        value = "-" if c.value is None else f"{c.value:g}" if isinstance(c.value, float) else str(c.value)
        console.print(f"  [{style[c.status]}]{c.status:<4}[/] {c.name:<20} {esc(value):>10}  "
                      f"({esc(c.threshold)}) {esc(c.message)}")
        for n in c.notes:
            say(f"       note: {n}")
    for p in write_reports(result, json_path=json_path, markdown=markdown, junit=junit):
        say(f"written: {p}")
    console.print(f"gate [{style[result.status]}]{result.status.upper()}[/] for {esc(result.source)}")
    if not result.passed:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html, report.md, report.json and the images."),
    pred_field: Optional[str] = read_pred_field_option("Predictions field for the detector's quality (none: "
                                                       "no evaluation section)"),
    top: int = typer.Option(6, "--top", min=0, help="Thumbnails of the top issues per queue."),
    pixels: bool = typer.Option(True, "--pixels/--no-pixels", help="Read the images for the brightness slices."),
    wait: float = wait_option(),
) -> None:
    """Error analysis for the people who decide what to fix: one self-contained HTML page (and the
    same as Markdown and JSON) with counts per class and split, box size and aspect plots, the
    label-issue rate per slice (class, box size, brightness, split, import source) with Wilson
    intervals, the detector's quality per class, the top issues of each queue as thumbnails with
    the suspect box and its reason, and the class-balance plan.

    Example: cvcurate report neu --out reports/neu
    """
    from ..stages.report import report

    res = report(name, out, pred_field=pred_field, top_n=top, pixels=pixels, progress=True, wait=wait)
    for line in res.left_out:
        say(f"left out: {line}")
    say(f"report of {name} ({res.images} images): {res.paths['html']} (also {res.paths['md'].name}, "
        f"{res.paths['json'].name})")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Folder for the data, exports and reports."),
    images: int = typer.Option(300, "--images", min=20, help="Synthetic images to make."),
    app_: bool = typer.Option(True, "--app/--no-app", help="Open the FiftyOne App on the result at the end."),
    port: int = typer.Option(5151, "--port", help="Port of the App."),
) -> None:
    """The whole loop on embedded synthetic steel data, nothing downloaded (about a minute).

    synth -> import -> corrupt (known errors) -> predict (shipped detector) -> score -> gate
    (noisy) -> confirm the fixes the truth file agrees with (standing in for a reviewer) ->
    apply -> score -> gate (after) -> export v1/v2 -> diff; then the App on the swap queue.

    Example: cvcurate demo --no-app --out out/demo
    """
    from ..stages.demo import run_demo

    res = run_demo(out, images=images, log=say, progress=True)
    say(f"done in {res.seconds:.0f} s: gate {res.gate_before} -> {res.gate_after}; reports in {res.out} "
        f"(gate-before.md, gate-after.md, export-v1/, export-v2/)")
    if not app_:
        say(f"next: cvcurate review {res.dataset} --queue swap")
        return
    from ..stages import review

    session = review.open_app(res.dataset, "all", port=port, address="127.0.0.1", remote=True)
    serve_app(session, f"http://localhost:{port}/", f"queue all of {res.dataset}")
