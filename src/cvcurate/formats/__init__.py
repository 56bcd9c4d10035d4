"""Readers for the annotation formats cvcurate imports, one module per format.

Each module has a pure parser of file text and a ``parse(root)`` that finds the files and returns
a :class:`~cvcurate.formats.base.ParseResult`; :func:`load` then checks every image and box in
one place (:func:`~cvcurate.formats.base.finalize`) and fills the import report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError
from ..report import ImportReport
from ..types import LabelSet
from . import coco, gc10, severstal, voc, yolo
from .base import IMAGE_EXTENSIONS, ParseResult, finalize

FORMATS: dict[str, Callable[[Path], ParseResult]] = {
    "voc": voc.parse,
    "coco": coco.parse,
    "yolo": yolo.parse,
    "severstal": severstal.parse,
    "gc10": gc10.parse,
}


def detect_format(path: Path) -> str:
    """Guess the format of a dataset folder or file; raise :class:`InputError` when unsure."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_file():
        if path.suffix == ".json":
            return "coco"
        if path.suffix == ".csv":
            return "severstal"
        if path.suffix in (".yaml", ".yml"):
            return "yolo"
        raise InputError(f"cannot tell the format of {path}: give --format")
    if not any(path.iterdir()):
        raise InputError(f"{path} is empty")
    if any(path.glob("*.csv")):
        return "severstal"
    if (path / "lable").is_dir() or (path / "label" / "label").is_dir():
        return "gc10"
    if yolo.find_yaml(path) is not None or ((path / "labels").is_dir() and any((path / "labels").rglob("*.txt"))):
        return "yolo"
    if any(coco._looks_like_coco(p) for d in (path, path / "annotations") if d.is_dir() for p in d.glob("*.json")):
        return "coco"
    if any((path / d).is_dir() and any((path / d).glob("*.xml")) for d in voc.ANNOTATION_DIRS) or any(path.glob("*.xml")):
        return "voc"
    has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*"))
    hint = "images but no annotations" if has_images else "no images and no annotations"
    raise InputError(f"cannot tell the format of {path} ({hint} found): "
                     f"give --format, one of {', '.join(FORMATS)}")


def load(
    path: str | Path,
    *,
    format: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    keep_unlabeled: bool = False,
    progress: bool = False,
) -> tuple[LabelSet, ImportReport]:
    """Read a dataset from disk: the labels and a report of every problem found.

    Nothing is written anywhere. Images that cannot be used are in the report, never dropped
    silently: ``report.images_read == imported + imported_with_warnings + rejected``.
    """
    path = Path(path).expanduser()
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise InputError(f"{path} does not exist")
    parsed = FORMATS[format](path)
    report = ImportReport(source=str(path.resolve()), format=format)
    if not parsed.images:
        raise InputError(f"no images found in {path} as {format}"
                         + (f" ({len(parsed.problems)} problem(s), first: {parsed.problems[0][1]})"
                            if parsed.problems else ""))
    labels = finalize(parsed, report, classes=classes, split=split, keep_unlabeled=keep_unlabeled,
                      progress=progress)
    return labels, report
