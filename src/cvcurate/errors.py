"""One family of errors for everything a user can get wrong.

The CLI turns a :class:`CvcurateError` into one line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import shlex


def shell_arg(value: object) -> str:
    """``value`` as one shell word, for commands suggested in messages (``cvcurate score NAME``).

    Double quotes, so that the suggestion can itself sit inside single quotes of a message.
    """
    text = str(value)
    if text and shlex.quote(text) == text:
        return text
    for ch in '\\"$`':
        text = text.replace(ch, "\\" + ch)
    return f'"{text}"'


class CvcurateError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class InputError(CvcurateError):
    """Bad input data: a missing folder, an unreadable file, an unknown format."""


class ConfigError(CvcurateError):
    """A configuration file or option is wrong (unknown key, bad value)."""


class DatasetNotFoundError(CvcurateError):
    """A named dataset does not exist in the store."""


class DatasetExistsError(CvcurateError):
    """A dataset of that name exists and the command would overwrite it."""


class StoreError(CvcurateError):
    """The FiftyOne database cannot be reached or a write failed."""


class DatasetBusyError(StoreError):
    """Another process holds the dataset's lock (another apply or undo is running)."""


class GateFailed(CvcurateError):
    """The data is not fit to train on (quality gate)."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------
# what an interrupt (Ctrl-C) leaves behind
# ---------------------------------------------------------------------------------------------
# The CLI prints one line when a command is interrupted. Stages say what that line must be:
# :func:`kept` records a finished, durable result (a store write, a file), and
# :func:`interrupt_leaves` names what an interrupt inside a block leaves behind (a partial write).
# Nothing said means nothing was written yet, which holds because every write path says something.
_NOTE: list[str] = []
_KEPT: list[str] = []

NOTHING_WRITTEN = "the store was left as it was before this command"


def reset_interrupt_state() -> None:
    """Forget what earlier commands of this process said (the CLI calls it per command)."""
    _NOTE.clear()
    _KEPT.clear()


def kept(what: str) -> None:
    """Record that ``what`` (e.g. ``dataset 'neu' written``) is finished and stays after an interrupt."""
    if what not in _KEPT:
        _KEPT.append(what)


class interrupt_leaves:  # noqa: N801 - used like a function: ``with interrupt_leaves("..."):``
    """Context manager: an interrupt inside the block leaves ``message`` behind.

    On a normal exit the previous note comes back; when an exception leaves the block the note
    stays, so that the CLI's handler, which runs after the block was left, still sees it.
    """

    def __init__(self, message: str) -> None:
        self.message = message

    def __enter__(self) -> "interrupt_leaves":
        _NOTE.append(self.message)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if exc_type is None and _NOTE and _NOTE[-1] == self.message:
            _NOTE.pop()
        return False


def left_behind() -> str:
    """What a command stopped now leaves: what was kept, rolled back or left partly written (the
    same account for an interrupt and for a lost database)."""
    parts = []
    if _NOTE:
        parts.append(_NOTE[-1])
    if _KEPT:
        parts.append("kept: " + "; ".join(_KEPT) + ("" if _NOTE else "; anything after that was not finished"))
    return "; ".join(parts) if parts else NOTHING_WRITTEN


def interrupt_message() -> str:
    """The line for an interrupted command: what was kept, rolled back or left partly written."""
    return "interrupted: " + left_behind()
