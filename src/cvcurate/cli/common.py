"""What several commands share: the console and report printing."""

from __future__ import annotations

from rich.console import Console

from ..report import REJECTED, WARN, ImportReport

console = Console(highlight=False, soft_wrap=True)

MAX_LINES = 20


def print_report(report: ImportReport) -> None:
    s = report.summary()
    console.print(
        f"[bold]{report.format}[/] import of {report.source}: {s['images_read']} images read = "
        f"{s['imported']} imported + {s['imported_with_warnings']} with warnings + "
        f"{s['rejected']} rejected; {s['boxes_imported']} boxes"
    )
    for note in report.notes:
        console.print(f"  note: {note}")
    kinds = report.message_counts()
    if kinds:
        console.print("  problems by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    # rejected images and problems one line each; warnings grouped by kind with an example,
    # so that 1,200 identical "rescaled" warnings do not hide one rejected file
    lines = [(e.path, m) for e in report.entries if e.status == REJECTED for m in e.messages]
    lines += [(p["path"], p["message"]) for p in report.other_problems]
    for path, msg in lines[:MAX_LINES]:
        console.print(f"  [red]rejected/problem[/] {path}: {msg}")
    if len(lines) > MAX_LINES:
        console.print(f"  ... and {len(lines) - MAX_LINES} more rejected files and problems in the JSON report")
    examples: dict[str, tuple[str, str]] = {}
    for e in report.entries:
        if e.status == WARN:
            for m in e.messages:
                examples.setdefault(m.split(":", 1)[0], (e.path, m))
    for kind, (path, msg) in examples.items():
        n = kinds.get(kind, 1)
        more = f" (and {n - 1} more like it)" if n > 1 else ""
        console.print(f"  [yellow]warning[/] {path}: {msg}{more}")
