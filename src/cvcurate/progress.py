"""Progress of long work on stderr: a bar on a terminal, plain lines in logs, nothing when not wanted.

On a terminal: a rich progress bar. Anywhere else (a log file, CI, a pipe): one plain line every
``CVCURATE_PROGRESS_INTERVAL`` seconds (default 5) with done/total, the rate and the time left, and a
last line when the work ends, so a log shows what a long ``predict`` or ``train`` is doing.
``CVCURATE_PROGRESS=0`` silences both (the tests do); ``force`` draws the bar anyway.
"""

from __future__ import annotations

import os
import sys
import time
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

    console = Console(file=sys.stderr)
    if not console.is_terminal and os.environ.get("CVCURATE_PROGRESS") != "force":
        yield from _lines(items, description, total)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _interval() -> float:
    try:
        return float(os.environ.get("CVCURATE_PROGRESS_INTERVAL", "5"))
    except ValueError:
        return 5.0


def _line(description: str, done: int, total: int | None, elapsed: float, final: bool) -> None:
    """One plain progress line on stderr: done/total, rate, elapsed, time left (or done)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    of = f"/{total}" if total is not None else ""
    pct = f" ({done / total:.0%})" if total else ""
    left = f", {_fmt_seconds((total - done) / rate)} left" if total and rate > 0 and not final else ""
    end = " done" if final else ""
    print(f"{description}: {done}{of}{pct}, {rate:.1f}/s, {_fmt_seconds(elapsed)} elapsed{left}{end}",
          file=sys.stderr, flush=True)


def _lines(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    """Plain progress lines for logs: one every interval seconds, and one at the end."""
    interval = _interval()
    t0 = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= interval:
            last = now
            _line(description, done, total, now - t0, final=False)
    _line(description, done, total, time.monotonic() - t0, final=True)


class Counter:
    """Progress of work that reports ``(done, total)`` through a callback (a worker pool): a bar on a
    terminal, plain lines elsewhere, nothing when disabled. Use as ``with Counter(...) as update:``."""

    def __init__(self, description: str, *, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled and _ENABLED
        self._bar = self._task = None
        self._t0 = self._last = time.monotonic()

    def __enter__(self) -> "Counter":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=sys.stderr)
            if console.is_terminal or os.environ.get("CVCURATE_PROGRESS") == "force":
                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=console)
                self._bar.__enter__()
        return self

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.description, total=total)
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.monotonic()
        if now - self._last >= _interval() or done == total:
            self._last = now
            _line(self.description, done, total, now - self._t0, final=done == total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
