"""The corrupt stage: copy a dataset with known label errors injected, and write the truth file.

Reads the store, calls the pure injector (:mod:`cvcurate.corrupt`), writes the copy to the store
(the source dataset is not changed) and the truth file beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import corrupt as corrupt_lib
from .. import store
from ..errors import DatasetExistsError, interrupt_leaves


@dataclass
class CorruptRun:
    result: corrupt_lib.CorruptionResult
    images: int
    truth_path: Path


def corrupt(name: str, out: str, *, rate: float = 0.1, seed: int = 0, types: Sequence[str] | None = None,
            truth: str | Path | None = None, overwrite: bool = False, wait: float = 0.0) -> CorruptRun:
    if store.exists(out) and not overwrite:
        raise DatasetExistsError(f"dataset {out!r} exists: give --overwrite or another --out")
    labels = store.read(name)
    result = corrupt_lib.corrupt(labels, rate=rate, seed=seed, types=list(types or corrupt_lib.ERROR_TYPES))
    history = {"action": "corrupt", "source_dataset": name, "rate": rate, "seed": seed, "by_type": result.by_type()}
    if store.exists(out):  # replaced: not while another command writes to it
        from .datasets import check_free

        check_free(out, "corrupt --overwrite", wait)
    store.write(result.labels, out, overwrite=overwrite, history=history)
    with interrupt_leaves("its truth file may be missing or partly written: run the command again with --overwrite"):
        truth_path = result.write_truth(truth or Path(f"{out}_truth.json"), source=name)
    return CorruptRun(result, len(labels), truth_path)
