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
    lines = [(e.path, e.status, m) for e in report.entries if e.status in (REJECTED, WARN) for m in e.messages]
    lines += [(p["path"], "other", p["message"]) for p in report.other_problems]
    order = {REJECTED: 0, "other": 1, WARN: 2}
    lines.sort(key=lambda x: order[x[1]])
    for path, status, msg in lines[:MAX_LINES]:
        tag = {"rejected": "[red]rejected[/]", "other": "[yellow]problem[/]"}.get(status, "[yellow]warning[/]")
        console.print(f"  {tag} {path}: {msg}", markup=True)
    if len(lines) > MAX_LINES:
        console.print(f"  ... and {len(lines) - MAX_LINES} more lines in the JSON report")
