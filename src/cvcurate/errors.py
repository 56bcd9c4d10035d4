"""One family of errors for everything a user can get wrong.

The CLI turns a :class:`CvcurateError` into one line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path


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


def check_writable_file(path: "str | os.PathLike[str]", what: str) -> Path:
    """Refuse, in one line and before any work, a file path the user gave that cannot be written
    (``what`` names the option: "--report", "the checkpoint"): a folder, a path below a file, a place
    that refuses a file. Missing folders above it are made (as the write would make them); a trial
    file beside it is created and removed."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {what} to {path}: it is a folder (give a file path)")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"cannot write {what} to {path}: {above} is a file, not a folder")
    trial = path.with_name(f".{path.name}.{os.getpid()}.trial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(trial, "ab"):
            pass
        trial.unlink()
    except OSError as exc:
        raise InputError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    return path


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
    _NOTICES.clear()


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


def settle(message: str = NOTHING_WRITTEN) -> None:
    """After a rollback that finished: what an interrupt leaves is ``message`` (the block's "may
    be partly written" note no longer holds)."""
    if _NOTE:
        _NOTE[-1] = message
    else:
        _NOTE.append(message)


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI cancellation, ``timeout``, ``docker stop``): handled exactly like Ctrl-C, so a
    writer rolls back what it can and says what it leaves; exit code 143."""


# ---------------------------------------------------------------------------------------------
# notices: lines a stage says on the way (a recovered journal), printed by the CLI at once
# ---------------------------------------------------------------------------------------------
_NOTICES: list[str] = []
_NOTICE_SINK: list = []


def notice(text: str) -> None:
    """Say one line now (the CLI prints it on stderr); kept for library callers in :func:`notices`."""
    _NOTICES.append(text)
    for sink in _NOTICE_SINK:
        sink(text)


def notices() -> list[str]:
    return list(_NOTICES)


def set_notice_sink(sink) -> None:  # type: ignore[no-untyped-def]
    _NOTICE_SINK[:] = [sink] if sink is not None else []


# ---------------------------------------------------------------------------------------------
# a test-only hook: pause a command at a named write so that a test can kill it there
# ---------------------------------------------------------------------------------------------
_PAUSE_SEEN: dict[str, int] = {}


def pause_point(name: str) -> None:
    """With ``CVCURATE_TEST_PAUSE=<name>`` (or ``<name>#<k>``: its k-th passage) in the
    environment, write this pid to ``CVCURATE_TEST_PAUSE_FILE`` and sleep until killed or until
    that file is removed. A no-op otherwise: one dictionary look-up."""
    import os

    want = os.environ.get("CVCURATE_TEST_PAUSE")
    if not want:
        return
    point, _, nth = want.partition("#")
    if point != name:
        return
    _PAUSE_SEEN[name] = _PAUSE_SEEN.get(name, 0) + 1
    if _PAUSE_SEEN[name] != (int(nth) if nth else 1):
        return
    import time

    path = os.environ.get("CVCURATE_TEST_PAUSE_FILE")
    if path:
        with open(path + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
    while not path or os.path.exists(path):  # the test removes the file to let it go on
        time.sleep(0.05)
