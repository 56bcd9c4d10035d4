"""Test setup: a throwaway FiftyOne database per test session, never the user's."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_DB_DIR = tempfile.mkdtemp(prefix="cvcurate-test-db-")
os.environ["FIFTYONE_DATABASE_DIR"] = _DB_DIR
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["CVCURATE_PROGRESS"] = "0"
# exported networks and their cards (predict's default runtime makes them) in a folder of the
# test session's, never the user's ~/.cache
_CACHE_DIR = tempfile.mkdtemp(prefix="cvcurate-test-cache-")
os.environ["CVCURATE_CACHE"] = _CACHE_DIR

import pytest  # noqa: E402

from cvcurate.store import start_private_database  # noqa: E402

# our own mongod, reached by URI: FiftyOne's own database service is shared machine-wide and
# would attach the tests to a user's running database (see start_private_database)
_MONGOD = start_private_database(_DB_DIR)


def _stop_database() -> None:
    _MONGOD.terminate()
    try:
        _MONGOD.wait(timeout=20)
    except Exception:  # noqa: BLE001
        _MONGOD.kill()
    shutil.rmtree(_DB_DIR, ignore_errors=True)
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
NEU_DET = SHARED / "neu-det"
SEVERSTAL = SHARED / "severstal-sample"


# registered before fiftyone is imported, so it runs after FiftyOne's own exit handlers
# (atexit runs handlers last-in first-out)
atexit.register(_stop_database)


@pytest.fixture
def neu_det() -> Path:
    if not (NEU_DET / "images").is_dir():
        pytest.skip("../shared/data/neu-det is absent")
    return NEU_DET


@pytest.fixture
def severstal() -> Path:
    if not (SEVERSTAL / "train.csv").is_file():
        pytest.skip("../shared/data/severstal-sample is absent")
    return SEVERSTAL


@pytest.fixture
def dataset_name(request) -> str:
    """A unique dataset name, deleted after the test."""
    import re

    name = "t_" + re.sub(r"[^a-zA-Z0-9]+", "_", request.node.name)[:60]
    yield name
    from cvcurate import store

    if store.exists(name):
        store.delete(name)
