"""Export writers: a :class:`~cvcurate.types.LabelSet` written as a VOC, COCO or YOLO folder in that
format's usual layout, which the peers' own tools load without edits, and ``cvcurate import`` of
the folder gives the same boxes, classes and splits back.

Coordinates: COCO and YOLO are written with full float precision, never rounded (``repr``). VOC
is written as VOC's tools read it: whole pixels, rounded outward (``xmin = floor(x1)``,
``ymin = floor(y1)``, ``xmax = ceil(x2)``, ``ymax = ceil(y2)``), never collapsing a box (one 0 px
wide or high after rounding gets 1 px), so every edge is within 1 px of the source and integer
boxes are written exactly; :attr:`Exported.boxes` holds the boxes as written.

Layouts (``<split>`` is each record's split):

* ``voc``: ``JPEGImages/<file>``, ``Annotations/<stem>.xml``, ``ImageSets/Main/<split>.txt``
  (records without a split are in no list), and ``cvcurate_voc.json`` saying the origin.
  ``origin`` 0 (default) writes 0-based pixel edges (``xmin = floor(x1)``), what FiftyOne's VOC
  importer, Datumaro, CVAT and Roboflow read; 1 the VOC devkit's 1-based inclusive pixels
  (``xmin = floor(x1) + 1``, ``xmax = ceil(x2)``), what detectron2 reads. ``cvcurate import``
  reads the origin back from ``cvcurate_voc.json`` (:func:`cvcurate.formats.voc.export_origin`).
* ``coco``: ``annotations/instances_<split>.json`` (or ``annotations/instances.json``) with images
  in ``images/<split>/`` (or ``images/``): COCO's standard layout; ``file_name`` is relative to
  that images folder; ``bbox`` float ``[x, y, w, h]``.
* ``yolo``: ``images/<folder>/``, ``labels/<folder>/`` and ``data.yaml`` (Ultralytics layout:
  ``train``, ``val``, ``test`` when present, ``nc`` and ``names`` as a mapping). ``yolo_path``
  ``absolute`` (default) writes ``path:`` as the export folder's final absolute path, which
  Ultralytics uses as is from any working directory (a relative ``path:`` it resolves from the
  working directory or its own datasets folder); ``relative`` writes no ``path:``, so Ultralytics
  resolves ``train``/``val`` from data.yaml's folder (the export can move; give Ultralytics
  data.yaml's absolute path, or one relative to the working directory). Ultralytics knows the
  splits ``train``, ``val`` and ``test`` only, and requires ``train`` and ``val``: records
  without a split go to ``train``; split ``trainval`` (VOC's train + val) goes to
  ``images/trainval/``, listed under ``train``; a missing ``val`` (or ``train``) names the
  folders of the other key, and a note says so; any other split name is refused
  (:func:`yolo_plan`). ``cvcurate import`` of such a folder gives the split of the data.yaml key
  (``train`` for records that had none or ``trainval``).

Image files are named by their source file name; when two images share a name or a stem (two
folders of the source; ``a.jpg`` and ``a.png``, whose label files would be one), the later ones get
``_<8 hex of the source path hash>`` before the suffix, so names and stems are unique across the
export (VOC needs that) and stable from one export to the next.

Pure file writing: no store. The caller writes into a fresh folder (the export stage writes into
a temporary folder and renames it when complete, and gives the final folder as ``final``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np
import yaml

from ..errors import InputError
from ..types import ImageRecord, LabelSet
from .voc import EXPORT_NOTE

EXPORT_FORMATS = ("voc", "coco", "yolo")
MEDIA = ("copy", "symlink")
VOC_EXPORT_ORIGINS = (0, 1)
YOLO_PATHS = ("absolute", "relative")
YOLO_KEYS = ("train", "val", "test")  # the splits a data.yaml names (Ultralytics requires train and val)
YOLO_TRAIN_TOO = ("trainval",)  # VOC's train + val: training data, listed under train
VOC_ROUNDING = "whole pixels rounded outward: xmin = floor(x1) + origin, ymin = floor(y1) + origin, " \
               "xmax = ceil(x2), ymax = ceil(y2); a box 0 px wide or high after rounding gets 1 px"
SPLIT_HINT = "cvcurate split {name} --val 0.2 --seed 0"
WHOLE_TOL = 1e-6  # px: a VOC coordinate this close to a whole number is written as that number


@dataclass
class Exported:
    """Where one record went, relative to the export folder (posix separators), and its boxes as
    written (x1, y1, x2, y2 in pixels; None: the record's own boxes, unrounded)."""

    record: ImageRecord
    image: str
    label: str | None  # None for COCO (one JSON per split)
    boxes: np.ndarray | None = None


def export_names(records: Sequence[ImageRecord]) -> list[str]:
    """A unique, stable file name per record, with a unique stem (see the module docstring)."""
    seen: set[str] = set()
    names = []
    for rec in records:
        p = Path(rec.filepath)
        name = p.name
        if p.stem in seen:
            tag = hashlib.sha256(rec.filepath.encode()).hexdigest()[:8]
            name = f"{p.stem}_{tag}{p.suffix}"
            k = 1
            while Path(name).stem in seen:
                name = f"{p.stem}_{tag}_{k}{p.suffix}"
                k += 1
        seen.add(Path(name).stem)
        names.append(name)
    return names


def _place_media(src: str, dst: Path, media: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if media == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        try:
            shutil.copyfile(src, dst)
        except OSError as exc:
            if exc.filename is not None and os.fspath(exc.filename) == os.fspath(dst):
                raise  # the destination's fault (permission, disk full): the caller names it
            raise InputError(f"cannot copy image {src}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# VOC
# ---------------------------------------------------------------------------------------------
def voc_pixels(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes as whole pixel edges (0-based), rounded outward: ``floor(x1), floor(y1), ceil(x2),
    ceil(y2)``; a coordinate within :data:`WHOLE_TOL` of a whole number is that number (the store
    keeps boxes relative to the image size, so 20 may read back as 19.999999999999996); a box 0 px
    wide (or high) after rounding gets 1 px, towards the right (down) or, at the image's right
    (bottom) edge, towards the left (up)."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    whole = np.round(b)
    b = np.where(np.abs(b - whole) <= WHOLE_TOL, whole, b)
    out = np.concatenate([np.floor(b[:, :2]), np.ceil(b[:, 2:])], axis=1).astype(np.int64)
    for lo, hi, size in ((0, 2, width), (1, 3, height)):
        flat = out[:, hi] == out[:, lo]
        room = out[:, lo] + 1 <= size
        out[flat & room, hi] += 1
        out[flat & ~room, lo] -= 1
    return out


def voc_xml(filename: str, rec: ImageRecord, classes: Sequence[str], boxes: np.ndarray, depth: int = 3,
            origin: int = 0) -> str:
    """One VOC XML document of ``rec`` with ``boxes`` (whole 0-based pixel edges, :func:`voc_pixels`),
    written in ``origin`` (1: ``xmin``/``ymin`` plus 1)."""
    objs = []
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), rec.gt.class_id.tolist()):
        objs.append(
            "\t<object>\n"
            f"\t\t<name>{escape(classes[c])}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            "\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
            f"\t\t\t<xmin>{x1 + origin}</xmin>\n\t\t\t<ymin>{y1 + origin}</ymin>\n"
            f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n"
            "\t\t</bndbox>\n\t</object>\n")
    return (f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{escape(filename)}</filename>\n"
            f"\t<size>\n\t\t<width>{rec.width}</width>\n\t\t<height>{rec.height}</height>\n"
            f"\t\t<depth>{depth}</depth>\n\t</size>\n\t<segmented>0</segmented>\n{''.join(objs)}</annotation>\n")


def voc_note(origin: int) -> str:
    """The text of ``cvcurate_voc.json``: how the boxes were written, for ``cvcurate import``."""
    doc = {"written_by": "cvcurate export", "voc_origin": origin, "coordinates": VOC_ROUNDING,
           "origin_meaning": ("0: 0-based pixel edges (x1 = xmin), as FiftyOne's VOC importer reads them"
                              if origin == 0 else
                              "1: the VOC devkit's 1-based inclusive pixels (x1 = xmin - 1, x2 = xmax)")}
    return json.dumps(doc, indent=1) + "\n"


def _write_voc(labels: LabelSet, out: Path, names: list[str], media: str, origin: int) -> list[Exported]:
    done: list[Exported] = []
    splits: dict[str, list[str]] = {}
    for rec, name in zip(labels.records, names):
        img = f"JPEGImages/{name}"
        lab = f"Annotations/{Path(name).stem}.xml"
        _place_media(rec.filepath, out / img, media)
        boxes = voc_pixels(rec.gt.xyxy, rec.width, rec.height)
        (out / lab).parent.mkdir(parents=True, exist_ok=True)
        (out / lab).write_text(voc_xml(name, rec, labels.classes, boxes, origin=origin))
        if rec.split:
            splits.setdefault(rec.split, []).append(Path(name).stem)
        done.append(Exported(rec, img, lab, boxes.astype(np.float64)))
    for split, stems in sorted(splits.items()):
        p = out / "ImageSets" / "Main" / f"{split}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"{s}\n" for s in stems))
    (out / EXPORT_NOTE).write_text(voc_note(origin))
    return done


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------
def coco_document(items: Sequence[tuple[str, ImageRecord]], classes: Sequence[str]) -> dict:
    images, anns = [], []
    for i, (fname, rec) in enumerate(items, start=1):
        images.append({"id": i, "file_name": fname, "width": rec.width, "height": rec.height})
        for (x1, y1, x2, y2), c in zip(rec.gt.xyxy.tolist(), rec.gt.class_id.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": k + 1, "name": n, "supercategory": "defect"} for k, n in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": cats}


# ---------------------------------------------------------------------------------------------
# YOLO
# ---------------------------------------------------------------------------------------------
def yolo_lines(rec: ImageRecord) -> str:
    lines = []
    for (x1, y1, x2, y2), c in zip(rec.gt.xyxy.tolist(), rec.gt.class_id.tolist()):
        cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
        w, h = (x2 - x1) / rec.width, (y2 - y1) / rec.height
        lines.append(f"{int(c)} {cx!r} {cy!r} {w!r} {h!r}")
    return "\n".join(lines) + ("\n" if lines else "")


def yolo_folder(split: str | None) -> str:
    """The folder (below ``images/`` and ``labels/``) of a record of ``split``."""
    return split or "train"


def yolo_plan(records: Sequence[ImageRecord], dataset: str = "NAME") -> tuple[dict[str, list[str]], list[str]]:
    """The image folders of each data.yaml key (``train``, ``val``, ``test``; relative to the
    export folder) and notes saying what was not plain (see the module docstring).

    A split other than train, val, test and trainval is refused: a data.yaml cannot name it."""
    count: dict[str | None, int] = {}
    for r in records:
        count[r.split] = count.get(r.split, 0) + 1
    odd = sorted(s for s in count if s and s not in YOLO_KEYS + YOLO_TRAIN_TOO)
    if odd:
        listed = ", ".join(f"{s!r} ({count[s]} image(s))" for s in odd)
        raise InputError(f"split(s) {listed} cannot go in a YOLO data.yaml, which names train, val and test only "
                         f"(trainval goes to train): export them as voc or coco, which keep any split name, export "
                         f"one split with --split, or re-split with {SPLIT_HINT.format(name=dataset)}")
    folders = {yolo_folder(s) for s in count}
    keys = {"train": [f"images/{f}" for f in ("train", *YOLO_TRAIN_TOO) if f in folders],
            "val": ["images/val"] if "val" in folders else [],
            "test": ["images/test"] if "test" in folders else []}
    notes = []
    hint = f"split the dataset with {SPLIT_HINT.format(name=dataset)} and export again"
    if None in count and len(count) == 1:
        notes.append(f"data.yaml: no image has a split, so all {count[None]} images are train (images/train/, "
                     "labels/train/), and val: names the train folder too, because Ultralytics requires a val "
                     f"key (its validation scores are then on training images): {hint}")
        return {"train": ["images/train"], "val": ["images/train"]}, notes
    if None in count:
        notes.append(f"data.yaml: {count[None]} image(s) without a split are exported as train (images/train/)")
    for s in YOLO_TRAIN_TOO:
        if s in count:
            notes.append(f"data.yaml: {count[s]} image(s) of split {s} are in images/{s}/, listed under train: "
                         f"(a data.yaml has no {s} key)")
    if not keys["train"] and not keys["val"]:
        keys["train"] = keys["val"] = keys["test"]
        notes.append("data.yaml: only test images; train: and val: name images/test because Ultralytics requires "
                     "both keys (use this export to test, not to train)")
    if not keys["train"]:
        keys["train"] = keys["val"]
        notes.append("data.yaml: no train images; train: names images/val because Ultralytics requires a train "
                     "key (use this export to validate, not to train)")
    if not keys["val"]:
        keys["val"] = keys["train"]
        notes.append(f"data.yaml: no val images; val: names {', '.join(keys['val'])} because Ultralytics requires "
                     f"a val key (its validation scores are then on training images): {hint}")
    return {k: v for k, v in keys.items() if v}, notes


def yolo_data_yaml(keys: dict[str, list[str]], classes: Sequence[str], path: str | None) -> str:
    """data.yaml: ``path`` (absolute; None: no key, splits relative to the yaml's folder), the split
    keys (one folder as text, more as a list), ``nc`` and ``names`` (id -> name)."""
    doc: dict = {} if path is None else {"path": path}
    for k in YOLO_KEYS:
        if k in keys:
            doc[k] = keys[k][0] if len(keys[k]) == 1 else list(keys[k])
    doc["nc"] = len(classes)
    doc["names"] = {i: n for i, n in enumerate(classes)}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _write_yolo(labels: LabelSet, out: Path, names: list[str], media: str, path: str | None, dataset: str,
                notes: list[str]) -> list[Exported]:
    keys, said = yolo_plan(labels.records, dataset)
    done: list[Exported] = []
    for rec, name in zip(labels.records, names):
        folder = yolo_folder(rec.split)
        img = f"images/{folder}/{name}"
        lab = f"labels/{folder}/{Path(name).stem}.txt"
        _place_media(rec.filepath, out / img, media)
        (out / lab).parent.mkdir(parents=True, exist_ok=True)
        (out / lab).write_text(yolo_lines(rec))
        done.append(Exported(rec, img, lab))
    (out / "data.yaml").write_text(yolo_data_yaml(keys, labels.classes, path))
    notes += said
    return done


def write_export(labels: LabelSet, out: str | Path, format: str, *, media: str = "copy", voc_origin: int = 0,
                 yolo_path: str = "absolute", final: str | Path | None = None, dataset: str = "NAME",
                 notes: list[str] | None = None) -> list[Exported]:
    """Write ``labels`` (images and labels) into the folder ``out`` (created; should be empty).

    ``voc_origin`` (VOC): 0 or 1; ``yolo_path`` (YOLO): ``absolute`` writes data.yaml's ``path:``
    as ``final`` (the folder the export ends up in; default ``out``) made absolute, ``relative``
    writes none. ``dataset`` names the dataset in hints; ``notes`` gets the lines saying what
    was not plain (a YOLO export without val images)."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if media not in MEDIA:
        raise InputError(f"unknown --media {media!r}: use one of {', '.join(MEDIA)}")
    if voc_origin not in VOC_EXPORT_ORIGINS or isinstance(voc_origin, bool):
        raise InputError(f"--voc-origin must be 0 or 1, got {voc_origin!r}")
    if yolo_path not in YOLO_PATHS:
        raise InputError(f"--yolo-path must be one of {', '.join(YOLO_PATHS)}, got {yolo_path!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = export_names(labels.records)
    notes = notes if notes is not None else []
    if format == "voc":
        return _write_voc(labels, out, names, media, voc_origin)
    if format == "yolo":
        path = os.path.abspath(final if final is not None else out) if yolo_path == "absolute" else None
        return _write_yolo(labels, out, names, media, path, dataset, notes)
    done: list[Exported] = []
    groups: dict[str | None, list[tuple[str, ImageRecord]]] = {}
    for rec, name in zip(labels.records, names):
        img_dir = f"images/{rec.split}" if rec.split else "images"
        _place_media(rec.filepath, out / img_dir / name, media)
        groups.setdefault(rec.split, []).append((name, rec))
        done.append(Exported(rec, f"{img_dir}/{name}", None))
    for split, items in sorted(groups.items(), key=lambda kv: kv[0] or ""):
        p = out / "annotations" / (f"instances_{split}.json" if split else "instances.json")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(coco_document(items, labels.classes), indent=1))
    return done
