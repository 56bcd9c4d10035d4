"""Readers for the annotation formats cvcurate imports, one module per format.

Each module has a pure parser of file text and a ``parse(root)`` that finds the files and returns
a :class:`~cvcurate.formats.base.ParseResult`; :func:`load` then checks every image and box in
one place (:func:`~cvcurate.formats.base.finalize`) and fills the import report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping

from ..config import load_import_limits
from ..errors import InputError
from ..report import ImportReport
from ..types import LabelSet
from . import coco, gc10, severstal, voc, yolo
from .base import IMAGE_EXTENSIONS, VOC_ORIGINS, ImportOptions, ParseResult, finalize
from .classes import read_class_map

FORMATS: dict[str, Callable[[Path, ImportOptions], ParseResult]] = {
    "voc": voc.parse,
    "coco": coco.parse,
    "yolo": yolo.parse,
    "severstal": severstal.parse,
    "gc10": gc10.parse,
}


def _subdirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


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
        if path.suffix in (".yaml", ".yml", ".data", ".names"):
            return "yolo"
        raise InputError(f"cannot tell the format of {path}: give --format")
    if not any(path.iterdir()):
        raise InputError(f"{path} is empty")
    if any(path.glob("*.csv")):
        return "severstal"
    if (path / "lable").is_dir() or (path / "label" / "label").is_dir():
        return "gc10"
    subs = _subdirs(path)
    if (yolo.find_yaml(path) is not None or yolo.find_darknet(path) is not None
            or ((path / "labels").is_dir() and any((path / "labels").rglob("*.txt")))
            or any((d / "labels").is_dir() and any((d / "labels").rglob("*.txt")) for d in subs)):
        return "yolo"
    # the folder's own annotations first, then those of split folders (Roboflow: train/, valid/)
    if any(coco._looks_like_coco(p) for d in (path, path / "annotations") if d.is_dir() for p in d.glob("*.json")):
        return "coco"
    if voc._xml_dir(path) is not None:
        return "voc"
    if any(coco._looks_like_coco(p) for d in subs for p in d.glob("*.json")):
        return "coco"
    if voc.sub_roots(path):
        return "voc"
    images = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    if images and any(p.with_suffix(".txt").is_file() for p in images):
        raise InputError(f"cannot tell the format of {path}: YOLO-style .txt labels beside the images, but no "
                         "class names: add obj.names or classes.txt (one class name a line) or a data.yaml "
                         "with 'names', or give --format")
    hint = "images but no annotations" if images else "no images and no annotations"
    raise InputError(f"cannot tell the format of {path} ({hint} found): "
                     f"give --format, one of {', '.join(FORMATS)}")


def load(
    path: str | Path,
    options: ImportOptions | None = None,
    *,
    progress: bool = False,
) -> tuple[LabelSet, ImportReport]:
    """Read a dataset from disk: the labels and a report of every problem found.

    Nothing is written anywhere. Images that cannot be used are in the report, never dropped
    silently: ``report.images_read == imported + imported_with_warnings + rejected``.

    ``options``: the choices of :class:`~cvcurate.formats.base.ImportOptions` (default: all its
    defaults); ``options.limits`` None reads ``configs/import.yaml``, else the built-in defaults.
    """
    path = Path(path).expanduser()
    options = options if options is not None else ImportOptions()
    if options.limits is None:
        options = dataclasses.replace(options, limits=load_import_limits())
    limits = options.caps
    class_map = options.class_map
    if class_map is not None and not isinstance(class_map, Mapping):
        class_map = read_class_map(class_map, limits)
    format = options.format
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise InputError(f"{path} does not exist")
    parsed = FORMATS[format](path, options)
    report = ImportReport(source=str(path.resolve()), format=format)
    if not parsed.images:
        raise InputError(f"no images found in {path} as {format}"
                         + (f" ({len(parsed.problems)} problem(s), first: {parsed.problems[0][1]})"
                            if parsed.problems else ""))
    labels = finalize(parsed, report, classes=options.classes, split=options.split,
                      keep_unlabeled=options.keep_unlabeled, class_map=class_map,
                      merge_case=options.merge_case, progress=progress, limits=limits)
    return labels, report


__all__ = ["FORMATS", "VOC_ORIGINS", "ImportOptions", "detect_format", "load"]
