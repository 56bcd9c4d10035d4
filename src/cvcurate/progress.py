"""Progress bars for long work, on stderr, silent when not wanted (tests, pipes, ``--quiet``)."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_ENABLED = os.environ.get("CVCURATE_PROGRESS", "1") not in ("0", "false", "no")


def set_enabled(enabled: bool) -> None:
    global _ENABLED
    _ENABLED = enabled


def track(
    items: Iterable[T], *, description: str, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """Yield from ``items`` with a rich progress bar on stderr when enabled and useful."""
    if not (enabled and _ENABLED) or (total is not None and total < 2):
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("{task.description}", markup=False),  # descriptions may hold paths with "["
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("CVCURATE_PROGRESS") != "force",
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
