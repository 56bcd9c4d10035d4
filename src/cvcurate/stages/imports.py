"""The import stage: read a dataset from disk, store it, and report every bad file."""

from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import formats, store
from ..errors import InputError
from ..formats import ImportOptions
from ..report import REJECTED, ImportReport
from ..types import LabelSet
from .datasets import check_free, validate_dataset_name


@dataclass
class ImportResult:
    labels: LabelSet
    report: ImportReport
    write: store.WriteResult
    report_path: Path | None


def import_dataset(
    path: str | Path,
    name: str,
    options: ImportOptions | None = None,
    *,
    overwrite: bool = False,
    report_path: str | Path | None = None,
    progress: bool = False,
    wait: float = 0.0,
) -> ImportResult:
    """Import ``path`` into the persistent dataset ``name``.

    All or nothing: the store is written only after every file has been read and checked, and
    a failed write leaves the dataset as it was. Importing the same data again changes nothing.
    An import that would import no image raises :class:`InputError` and writes nothing to the
    store (the report is still written). The report is written to ``report_path`` (JSON) when
    given. The choices the import made (``report.settings``: VOC origin, crowd policy, class map)
    are recorded in the dataset's import history. ``name`` is checked first
    (:func:`~cvcurate.stages.datasets.validate_dataset_name`). ``options``: the choices of
    :class:`~cvcurate.formats.base.ImportOptions` (format, split, classes, VOC origin, ...); its
    ``limits`` (default: ``configs/import.yaml``) are the caps on one file: an image over a cap is
    rejected and reported. Into an existing dataset: merged under its lock (``wait`` seconds
    waited for another writer), or with ``overwrite`` refused while another command writes to it.
    """
    validate_dataset_name(name)
    options = options if options is not None else ImportOptions()
    labels, report = formats.load(path, options, progress=progress)
    report.dataset = name
    if not labels.records:
        written = report.write_json(report_path) if report_path is not None else None
        first = next((f"{e.path}: {e.messages[0]}" for e in report.entries
                      if e.status == REJECTED and e.messages), None)
        raise InputError(
            f"nothing imported from {path}: {report.images_read} image(s) read, all rejected"
            + (f" (first: {first})" if first else "")
            + (f"; report written to {written}" if written else "")
            + "; no dataset was created or changed")
    history = {
        "action": "import",
        "source": report.source,
        "format": report.format,
        "split": options.split,
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": report.summary(),
        "settings": dict(report.settings),
    }
    guard: Any = contextlib.nullcontext()  # a new dataset: nobody else can be writing to it
    existing = store.exists(name)
    if existing and overwrite:  # replaced: refused while another command writes to it
        check_free(name, "import --overwrite", wait)
    elif existing:  # merged under the dataset's lock, as every writer
        guard = store.dataset_lock(name, "import", user=store.journal.who(), wait_s=wait)
    with guard:
        result = store.write(labels, name, overwrite=overwrite, history=history)
    report.stored = result.as_dict()
    written = report.write_json(report_path) if report_path is not None else None
    return ImportResult(labels=labels, report=report, write=result, report_path=written)
