"""The import stage: read a dataset from disk, store it, and report every bad file."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import formats, store
from .report import ImportReport
from .types import LabelSet


@dataclass
class ImportResult:
    labels: LabelSet
    report: ImportReport
    write: store.WriteResult
    report_path: Path | None


def import_dataset(
    path: str | Path,
    name: str,
    *,
    format: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    keep_unlabeled: bool = False,
    overwrite: bool = False,
    report_path: str | Path | None = None,
    progress: bool = False,
) -> ImportResult:
    """Import ``path`` into the persistent dataset ``name``.

    All or nothing: the store is written only after every file has been read and checked, and
    a failed write leaves the dataset as it was. Importing the same data again changes nothing.
    The report is written to ``report_path`` (JSON) when given.
    """
    labels, report = formats.load(path, format=format, split=split, classes=classes,
                                  keep_unlabeled=keep_unlabeled, progress=progress)
    report.dataset = name
    history = {
        "action": "import",
        "source": report.source,
        "format": report.format,
        "split": split,
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": report.summary(),
    }
    result = store.write(labels, name, overwrite=overwrite, history=history)
    report.stored = result.as_dict()
    written = report.write_json(report_path) if report_path is not None else None
    return ImportResult(labels=labels, report=report, write=result, report_path=written)
