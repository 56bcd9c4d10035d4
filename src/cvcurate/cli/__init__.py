"""The ``cvcurate`` command line: thin commands over the library, one module per group.

Every command parses its options, makes one or two library calls and prints. A
:class:`~cvcurate.errors.CvcurateError` becomes one line on stderr and its exit code
(2 for bad input or usage, 1 for a failed quality gate); users never see a traceback for those.
A lost or unreachable database is one of them: the store raises it as a StoreError at its boundary
(:func:`cvcurate.store.database.boundary`), saying which database, what was written and how to
retry, exit code 2.
Ctrl-C becomes one line saying what was kept or rolled back (see
:func:`cvcurate.errors.interrupt_message`) and exit code 130.

Nothing printed here goes through rich markup: error messages hold paths and names, which may
contain ``[`` and ``]``.
"""

from __future__ import annotations

import os

import typer
from typer.core import TyperGroup

from .. import errors
from ..errors import CvcurateError

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C
TERMINATED_EXIT_CODE = 143  # 128 + SIGTERM


def _on_sigterm():  # type: ignore[no-untyped-def]
    """SIGTERM (CI cancellation, ``timeout``, ``docker stop``) raises :class:`errors.Terminated`, a
    KeyboardInterrupt: every writer rolls back and says what it leaves, as for Ctrl-C. Returns the
    previous handler (None when not in the main thread, where no handler can be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # type: ignore[no-untyped-def]
        raise errors.Terminated()

    return signal.signal(signal.SIGTERM, handler)


class _Group(TyperGroup):
    """Turns domain errors and Ctrl-C into one clean line and an exit code."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        errors.reset_interrupt_state()
        errors.set_notice_sink(lambda text: typer.secho(text, err=True, fg=typer.colors.YELLOW))
        old_term = _on_sigterm()
        import warnings

        try:
            with warnings.catch_warnings():
                # the device fallback prints its warning line itself: not again as a Python warning
                warnings.filterwarnings("ignore", message="--device ", category=RuntimeWarning)
                return super().invoke(ctx)
        except CvcurateError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            # a path the user gave that cannot be made, read or written (--out under /proc, a
            # full disk, no permission): one line naming it; an OSError without a path is a bug
            if exc.filename is None:
                raise
            from pathlib import Path

            where = os.fsdecode(exc.filename) + (f" -> {os.fsdecode(exc.filename2)}" if exc.filename2 else "")
            why = exc.strerror or str(exc)
            if isinstance(exc, (FileExistsError, NotADirectoryError)):  # a file where a folder was needed
                path = Path(os.fsdecode(exc.filename))
                blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
                why = f"{blocker} is a file, not a folder" if blocker is not None else why
            typer.secho(f"error: cannot use {where}: {why}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except errors.Terminated:
            typer.secho(errors.interrupt_message().replace("interrupted:", "terminated (SIGTERM):", 1), err=True,
                        fg=typer.colors.YELLOW)
            raise typer.Exit(TERMINATED_EXIT_CODE) from None
        except KeyboardInterrupt:
            typer.secho(errors.interrupt_message(), err=True, fg=typer.colors.YELLOW)
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
        finally:
            errors.set_notice_sink(None)
            if old_term is not None:
                import signal

                signal.signal(signal.SIGTERM, old_term)

    def list_commands(self, ctx):  # type: ignore[no-untyped-def]
        return list(self.commands)  # in the order they were added, which follows the workflow


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help=(
        "cvcurate: find and fix what is wrong with object-detection datasets before training.\n\n"
        "Workflow: import -> predict/train -> score -> review -> apply -> augment -> export -> gate (diff: two exports).\n\n"
        "Example: cvcurate import ../shared/data/neu-det --name neu && cvcurate info neu"
    ),
)

from . import data  # noqa: E402,F401  (registers commands)
from . import split  # noqa: E402,F401
from . import conventions  # noqa: E402,F401
from . import synth  # noqa: E402,F401
from . import corrupt  # noqa: E402,F401
from . import detector  # noqa: E402,F401
from . import score  # noqa: E402,F401
from . import review  # noqa: E402,F401
from . import augment  # noqa: E402,F401
from . import loop  # noqa: E402,F401


def main() -> None:
    app()
