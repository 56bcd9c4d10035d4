"""Readers for the annotation formats cvcurate imports, one module per format.

Each module has a pure parser of file text and a ``parse(root)`` that finds the files and returns
a :class:`~cvcurate.formats.base.ParseResult`; :func:`load` then checks every image and box in
one place (:func:`~cvcurate.formats.base.finalize`) and fills the import report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..config import ImportLimits, load_import_limits
from ..errors import InputError
from ..report import ImportReport
from ..types import LabelSet
from . import coco, gc10, severstal, voc, yolo
from .base import IMAGE_EXTENSIONS, VOC_ORIGINS, ParseOptions, ParseResult, finalize
from .classes import read_class_map

FORMATS: dict[str, Callable[[Path, ParseOptions], ParseResult]] = {
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
    *,
    format: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    keep_unlabeled: bool = False,
    voc_origin: str | int = "0",
    include_crowd: bool = False,
    class_map: Mapping[str, str] | str | Path | None = None,
    merge_case: bool = True,
    progress: bool = False,
    limits: ImportLimits | None = None,
) -> tuple[LabelSet, ImportReport]:
    """Read a dataset from disk: the labels and a report of every problem found.

    Nothing is written anywhere. Images that cannot be used are in the report, never dropped
    silently: ``report.images_read == imported + imported_with_warnings + rejected``.

    ``voc_origin`` (VOC and GC10): ``"0"`` (default, FiftyOne's reading), ``"1"`` or ``"auto"``;
    ``include_crowd`` (COCO): import ``iscrowd: 1`` boxes; ``class_map`` (a mapping or a YAML/JSON
    file) and ``merge_case``: the class-name policy of :mod:`cvcurate.formats.classes`.
    ``limits``: the caps on one file (:class:`~cvcurate.config.ImportLimits`; default:
    ``configs/import.yaml``, else the built-in defaults): an image over a cap is rejected.
    """
    path = Path(path).expanduser()
    limits = limits if limits is not None else load_import_limits()
    opts = ParseOptions(voc_origin=str(voc_origin), include_crowd=include_crowd, limits=limits)
    if class_map is not None and not isinstance(class_map, Mapping):
        class_map = read_class_map(class_map, limits)
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise InputError(f"{path} does not exist")
    parsed = FORMATS[format](path, opts)
    report = ImportReport(source=str(path.resolve()), format=format)
    if not parsed.images:
        raise InputError(f"no images found in {path} as {format}"
                         + (f" ({len(parsed.problems)} problem(s), first: {parsed.problems[0][1]})"
                            if parsed.problems else ""))
    labels = finalize(parsed, report, classes=classes, split=split, keep_unlabeled=keep_unlabeled,
                      class_map=class_map, merge_case=merge_case, progress=progress, limits=limits)
    return labels, report


__all__ = ["FORMATS", "VOC_ORIGINS", "ParseOptions", "detect_format", "load"]
