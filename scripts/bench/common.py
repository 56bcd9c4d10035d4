"""What the benchmark scripts share: where the real data is, and running on a private database."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
NEU_DET = REPO.parent / "shared" / "data" / "neu-det"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the script's first doc line and ``--data`` (NEU-DET by default)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", type=Path, default=NEU_DET)
    return ap


def run_on_private_database(main: Callable[[], int]) -> int:
    """Run ``main`` against a throwaway database of our own, never the user's."""
    from cvcurate.store import private_database

    with private_database():
        return main()
