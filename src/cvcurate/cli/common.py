"""What several commands share: the console and report printing.

Paths, dataset and class names and messages hold any character, ``[`` and ``]`` included, which
rich would read as markup (and drop, or fail on with a MarkupError). So every value put into a
styled line goes through :func:`esc`, and lines without style go through :func:`say`, which
prints without markup.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from ..report import REJECTED, WARN, ImportReport

# no highlighting (it colours numbers and paths at random), no :emoji: codes (file names may hold
# them), no wrapping (long paths stay on one line, copyable)
console = Console(highlight=False, soft_wrap=True, emoji=False)

MAX_LINES = 20


def read_pred_field_option(what: str = "Field holding the predictions", short: bool = False) -> Any:
    """--pred-field for every command that reads predictions: one default rule for all of them
    (:func:`cvcurate.names.default_pred_field`)."""
    import typer

    return typer.Option(None, "--pred-field", *(["-p"] if short else []),
                        help=f"{what} [default: predictions_oof, else predictions].")


def wait_option() -> Any:
    """--wait SECONDS, for every command that writes to a dataset, and for the readers that read it under
    its lock (export, gate, report): one lock per dataset."""
    import typer

    return typer.Option(0.0, "--wait", min=0.0, max=86400.0, metavar="SECONDS",
                        help="When another cvcurate command is writing to the dataset, wait up to this long for "
                        "it instead of exiting at once (exit 2, naming the command that holds the dataset).")


def engine_option(extra: str = "") -> Any:
    """--engine local|ray, for every command that runs its per-image work on an engine (one
    definition; :mod:`cvcurate.engine` checks the value)."""
    import typer

    return typer.Option("local", "--engine", help="local (this machine, as without it) or ray (Ray workers: a local "
                        "Ray on this machine's cores, or the cluster RAY_ADDRESS names; needs cvcurate[ray]). "
                        "Same results either way." + (f" {extra}" if extra else ""))


def ray_workers_option(help: str = "With --engine ray: Ray workers (and CPUs of a local Ray) [default: all cores, "
                       "or the cluster's].") -> Any:
    """--workers N of the engine commands (predict, score; augment also uses it locally)."""
    import typer

    return typer.Option(None, "--workers", "-w", min=1, help=help)


def check_ray_workers(engine: str, workers: int | None) -> None:
    """--workers means Ray workers where the local path has none (predict, score)."""
    from ..errors import InputError

    if workers is not None and engine != "ray":
        raise InputError("--workers applies to --engine ray only")


def esc(value: Any) -> str:
    """``value`` as text that rich prints as is inside markup."""
    return escape(str(value))


def say(text: Any) -> None:
    """Print one line as is (no markup): for lines without style, and as a ``log`` callback."""
    console.print(str(text), markup=False)


def print_report(report: ImportReport) -> None:
    s = report.summary()
    console.print(
        f"[bold]{esc(report.format)}[/] import of {esc(report.source)}: {s['images_read']} images read = "
        f"{s['imported']} imported + {s['imported_with_warnings']} with warnings + "
        f"{s['rejected']} rejected; {s['boxes_imported']} boxes"
    )
    for note in report.notes:
        say(f"  note: {note}")
    kinds = report.message_counts()
    if kinds:
        say("  problems by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    # rejected images and problems one line each; warnings grouped by kind with an example,
    # so that 1,200 identical "rescaled" warnings do not hide one rejected file
    lines = [(e.path, m) for e in report.entries if e.status == REJECTED for m in e.messages]
    lines += [(p["path"], p["message"]) for p in report.other_problems]
    for path, msg in lines[:MAX_LINES]:
        console.print(f"  [red]rejected/problem[/] {esc(path)}: {esc(msg)}")
    if len(lines) > MAX_LINES:
        say(f"  ... and {len(lines) - MAX_LINES} more rejected files and problems in the JSON report")
    examples: dict[str, tuple[str, str]] = {}
    for e in report.entries:
        if e.status == WARN:
            for m in e.messages:
                examples.setdefault(m.split(":", 1)[0], (e.path, m))
    for kind, (path, msg) in examples.items():
        n = kinds.get(kind, 1)
        more = f" (and {n - 1} more like it)" if n > 1 else ""
        console.print(f"  [yellow]warning[/] {esc(path)}: {esc(msg)}{more}")


def serve_app(session: Any, url: str, what: str) -> None:
    """Print where the App is, keep it open until Ctrl-C, then close it."""
    say(f"App on {what}: {url}; Ctrl-C to stop")
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        say("App closed")
