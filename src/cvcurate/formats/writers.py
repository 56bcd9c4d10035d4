"""Export writers: a :class:`~cvcurate.types.LabelSet` written as a VOC, COCO or YOLO folder in that
format's usual layout, so that ``cvcurate import`` of the folder gives the same boxes, classes and
splits back (lossless: coordinates are written with full float precision, never rounded).

Layouts (``<split>`` is each record's split; records without a split go in the top folders):

* ``voc``: ``JPEGImages/<file>``, ``Annotations/<stem>.xml``, ``ImageSets/Main/<split>.txt``.
  Coordinates are written in the 0-based pixel-edge convention that FiftyOne's VOC importer and
  cvcurate's default ``--voc-origin 0`` read (``xmin = x1``, ``xmax = x2``); whole numbers are
  written as integers, others as decimals (FiftyOne's own reader truncates those to integers).
* ``coco``: ``annotations/instances_<split>.json`` (or ``annotations/instances.json``) with images
  in ``images/<split>/`` (or ``images/``): COCO's standard layout; ``file_name`` is relative to
  that images folder.
* ``yolo``: ``images/<split>/``, ``labels/<split>/`` and ``data.yaml`` (Ultralytics layout,
  ``path: .``, ``names`` as a mapping).

Image files are named by their source file name; when two images share a name (two folders of the
source), the later ones get ``_<8 hex of the source path hash>`` before the suffix, so names are
unique across the export (VOC needs that) and stable from one export to the next.

Pure file writing: no store. The caller writes into a fresh folder (the export stage writes into
a temporary folder and renames it when complete).
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

import yaml

from ..errors import InputError
from ..types import ImageRecord, LabelSet

EXPORT_FORMATS = ("voc", "coco", "yolo")
MEDIA = ("copy", "symlink")


@dataclass
class Exported:
    """Where one record went, relative to the export folder (posix separators)."""

    record: ImageRecord
    image: str
    label: str | None  # None for COCO (one JSON per split)


def _num(v: float) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)


def export_names(records: Sequence[ImageRecord]) -> list[str]:
    """A unique, stable file name per record (see the module docstring)."""
    seen: set[str] = set()
    names = []
    for rec in records:
        p = Path(rec.filepath)
        name = p.name
        if name in seen:
            tag = hashlib.sha256(rec.filepath.encode()).hexdigest()[:8]
            name = f"{p.stem}_{tag}{p.suffix}"
            k = 1
            while name in seen:
                name = f"{p.stem}_{tag}_{k}{p.suffix}"
                k += 1
        seen.add(name)
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


def voc_xml(filename: str, rec: ImageRecord, classes: Sequence[str], depth: int = 3) -> str:
    objs = []
    for (x1, y1, x2, y2), c in zip(rec.gt.xyxy.tolist(), rec.gt.class_id.tolist()):
        objs.append(
            "\t<object>\n"
            f"\t\t<name>{escape(classes[c])}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            "\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
            f"\t\t\t<xmin>{_num(x1)}</xmin>\n\t\t\t<ymin>{_num(y1)}</ymin>\n"
            f"\t\t\t<xmax>{_num(x2)}</xmax>\n\t\t\t<ymax>{_num(y2)}</ymax>\n"
            "\t\t</bndbox>\n\t</object>\n")
    return (f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{escape(filename)}</filename>\n"
            f"\t<size>\n\t\t<width>{rec.width}</width>\n\t\t<height>{rec.height}</height>\n"
            f"\t\t<depth>{depth}</depth>\n\t</size>\n\t<segmented>0</segmented>\n{''.join(objs)}</annotation>\n")


def yolo_lines(rec: ImageRecord) -> str:
    lines = []
    for (x1, y1, x2, y2), c in zip(rec.gt.xyxy.tolist(), rec.gt.class_id.tolist()):
        cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
        w, h = (x2 - x1) / rec.width, (y2 - y1) / rec.height
        lines.append(f"{int(c)} {cx!r} {cy!r} {w!r} {h!r}")
    return "\n".join(lines) + ("\n" if lines else "")


def coco_document(items: Sequence[tuple[str, ImageRecord]], classes: Sequence[str]) -> dict:
    images, anns = [], []
    for i, (fname, rec) in enumerate(items, start=1):
        images.append({"id": i, "file_name": fname, "width": rec.width, "height": rec.height})
        for (x1, y1, x2, y2), c in zip(rec.gt.xyxy.tolist(), rec.gt.class_id.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": k + 1, "name": n, "supercategory": "defect"} for k, n in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def write_export(labels: LabelSet, out: str | Path, format: str, *, media: str = "copy") -> list[Exported]:
    """Write ``labels`` (images and labels) into the folder ``out`` (created; should be empty)."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if media not in MEDIA:
        raise InputError(f"unknown --media {media!r}: use one of {', '.join(MEDIA)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recs = labels.records
    names = export_names(recs)
    done: list[Exported] = []
    if format == "voc":
        splits: dict[str, list[str]] = {}
        for rec, name in zip(recs, names):
            img = f"JPEGImages/{name}"
            lab = f"Annotations/{Path(name).stem}.xml"
            _place_media(rec.filepath, out / img, media)
            (out / lab).parent.mkdir(parents=True, exist_ok=True)
            (out / lab).write_text(voc_xml(name, rec, labels.classes))
            if rec.split:
                splits.setdefault(rec.split, []).append(Path(name).stem)
            done.append(Exported(rec, img, lab))
        for split, stems in sorted(splits.items()):
            p = out / "ImageSets" / "Main" / f"{split}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("".join(f"{s}\n" for s in stems))
    elif format == "coco":
        groups: dict[str | None, list[tuple[str, ImageRecord]]] = {}
        for rec, name in zip(recs, names):
            img_dir = f"images/{rec.split}" if rec.split else "images"
            _place_media(rec.filepath, out / img_dir / name, media)
            groups.setdefault(rec.split, []).append((name, rec))
            done.append(Exported(rec, f"{img_dir}/{name}", None))
        for split, items in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            p = out / "annotations" / (f"instances_{split}.json" if split else "instances.json")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(coco_document(items, labels.classes), indent=1))
    else:
        for rec, name in zip(recs, names):
            sub = f"/{rec.split}" if rec.split else ""
            img = f"images{sub}/{name}"
            lab = f"labels{sub}/{Path(name).stem}.txt"
            _place_media(rec.filepath, out / img, media)
            (out / lab).parent.mkdir(parents=True, exist_ok=True)
            (out / lab).write_text(yolo_lines(rec))
            done.append(Exported(rec, img, lab))
        doc: dict = {"path": ".", "names": {i: n for i, n in enumerate(labels.classes)}}
        for s in sorted({r.split for r in recs if r.split}):
            doc[s] = f"images/{s}"
        (out / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return done
