"""The export manifest and the diff between two exports: pure functions, no store.

A manifest (``manifest.json`` in every export folder) says exactly what an export holds, so that a
training run can name its data and two versions can be compared without the store:

* ``schema_version``, ``cvcurate_version``, ``format``, ``classes``;
* ``images``: one entry per image, sorted by ``file`` (the image's path inside the export, with
  ``/`` separators), holding its ``sha256``, its ``split``, its size, its boxes
  (``[class, x1, y1, x2, y2]`` in absolute pixels, 0-based pixel edges, the order of the export's
  label file, as the export holds them: a VOC export's are whole pixels, rounded outward) and
  ``label_sha256``: the SHA-256 of those boxes written canonically, so the same labels hash the
  same in every format that holds them alike (COCO and YOLO always; VOC when the boxes are whole
  pixels) (a COCO export has one JSON for all images, a per-file hash would not say which image
  changed);
* ``settings``: how the files were written: VOC's ``voc_origin`` (0 or 1, also at the top level,
  where earlier versions wrote it) and ``voc_coordinates``, YOLO's ``yolo_path`` (``absolute``
  or ``relative``: the mode, never the path), and ``notes`` saying what was not plain (a YOLO
  export without val images);
* ``counts``: images and boxes per split and per class;
* ``lineage``: the import sources (folder names, never absolute paths), every change set applied
  by ``cvcurate apply`` (id, when, who, what), the last score run (when, on which predictions, its
  count of flagged images and expected label errors; None when never scored), and augmentation
  provenance where present.

Deterministic: the same data gives the same bytes (sorted keys and lists, no export time, floats
written by ``repr``), so ``dvc add`` of an export folder and a byte comparison of two manifests
both work. :func:`diff` compares two manifests image by image and box by box.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError
from .boxes import box_iou

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _num(v: float) -> float | int:
    """A coordinate as written: integers as ints, others rounded to 1e-6 px (float noise off)."""
    r = round(float(v), 6)
    return int(r) if r == int(r) else r


def box_rows(xyxy: np.ndarray, class_id: np.ndarray, classes: Sequence[str]) -> list[list[Any]]:
    return [[classes[int(c)], *(_num(v) for v in b)] for b, c in zip(np.asarray(xyxy).reshape(-1, 4), class_id)]


def label_hash(rows: Sequence[Sequence[Any]]) -> str:
    text = json.dumps(list(map(list, rows)), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ImageEntry:
    file: str  # path inside the export, posix separators
    sha256: str
    split: str | None
    width: int
    height: int
    boxes: list[list[Any]]
    label_file: str | None = None
    augmented: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "file": self.file, "sha256": self.sha256, "split": self.split, "width": self.width,
            "height": self.height, "boxes": self.boxes, "label_sha256": label_hash(self.boxes),
        }
        if self.label_file is not None:
            d["label_file"] = self.label_file
        if self.augmented:
            d["augmented"] = self.augmented
        return d


def _relative(path: str) -> str:
    """Refuse absolute paths inside a manifest (it must stay valid wherever the folder moves)."""
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"manifest paths must be relative to the export folder, got {path!r}")
    return str(p)


def build(entries: Iterable[ImageEntry], *, classes: Sequence[str], format: str,
          lineage: dict[str, Any], version: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of an export (a plain dict; :func:`dumps` gives its canonical bytes);
    ``settings``: how the files were written (see the module docstring)."""
    images = sorted((e.to_dict() for e in entries), key=lambda d: d["file"])
    for d in images:
        d["file"] = _relative(d["file"])
        if "label_file" in d:
            d["label_file"] = _relative(d["label_file"])
    files = [d["file"] for d in images]
    if len(set(files)) != len(files):
        raise ValueError("two images would be exported to the same file")
    per_split: dict[str, dict[str, Any]] = {}
    for d in images:
        s = per_split.setdefault(d["split"] or "-", {"images": 0, "boxes": 0,
                                                     "boxes_per_class": {c: 0 for c in classes},
                                                     "images_per_class": {c: 0 for c in classes}})
        s["images"] += 1
        s["boxes"] += len(d["boxes"])
        for row in d["boxes"]:
            s["boxes_per_class"][row[0]] += 1
        for c in {row[0] for row in d["boxes"]}:
            s["images_per_class"][c] += 1
    doc = {
        "schema_version": SCHEMA_VERSION,
        "cvcurate_version": version,
        "format": format,
        "classes": list(classes),
        "counts": {"images": len(images), "boxes": sum(len(d["boxes"]) for d in images),
                   "per_split": dict(sorted(per_split.items()))},
        "lineage": lineage,
        "images": images,
    }
    if settings:
        doc["settings"] = dict(settings)
        if "voc_origin" in settings:
            doc["voc_origin"] = settings["voc_origin"]
    return doc


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def read(path: str | Path) -> dict[str, Any]:
    """A manifest from a file or an export folder; :class:`InputError` for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path} does not exist: give a manifest.json or an export folder that has one")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a cvcurate manifest (not JSON: {exc})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc or not isinstance(doc.get("images"), list):
        raise InputError(f"{path} is not a cvcurate manifest (no schema_version / images)")
    version = doc["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"{path}: schema_version is {version!r}, not a whole number")
    if version > SCHEMA_VERSION:
        raise InputError(f"{path} has manifest schema {version}; this cvcurate reads up to "
                         f"{SCHEMA_VERSION}: upgrade cvcurate")
    check(doc, str(path))
    return doc


BOX_FORMAT = "[class, x1, y1, x2, y2] in pixels"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check(doc: dict[str, Any], where: str) -> None:
    """Raise :class:`InputError` naming the entry and field of manifest ``doc`` (read from
    ``where``) that :func:`diff` cannot use: an image entry without its ``file``, ``sha256`` or
    ``boxes``, a box that is not ``[class, x1, y1, x2, y2]`` with four finite numbers, a class
    list that is not a list of names."""
    classes = doc.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{where}: classes must be a list of class names, got {_short(classes)}")
    for i, d in enumerate(doc["images"]):
        if not isinstance(d, dict):
            raise InputError(f"{where}: images[{i}] is {_short(d)}, not an image entry (an object with file, "
                             "sha256 and boxes)")
        file = d.get("file")
        if not isinstance(file, str) or not file:
            what = "has no 'file'" if "file" not in d else f"has file {_short(file)}, not a path"
            raise InputError(f"{where}: images[{i}] {what} (each image entry needs file, sha256 and boxes)")
        entry = f"{where}: images[{i}] (file {file!r})"
        for key in ("sha256", "boxes"):
            if key not in d:
                raise InputError(f"{entry} has no {key!r} (each image entry needs file, sha256 and boxes)")
        if not isinstance(d["sha256"], str) or not d["sha256"]:
            raise InputError(f"{entry}: sha256 is {_short(d['sha256'])}, not a hash (hex text)")
        if not isinstance(d["boxes"], list):
            raise InputError(f"{entry}: boxes is {_short(d['boxes'])}, not a list of {BOX_FORMAT}")
        for j, row in enumerate(d["boxes"]):
            if not isinstance(row, list) or len(row) != 5:
                raise InputError(f"{entry}: boxes[{j}] is {_short(row)}, not {BOX_FORMAT}")
            if not isinstance(row[0], str):
                raise InputError(f"{entry}: boxes[{j}][0] is {_short(row[0])}, not a class name ({BOX_FORMAT})")
            for k, v in enumerate(row[1:], start=1):
                if not _number(v):
                    raise InputError(f"{entry}: boxes[{j}][{k}] ({('x1', 'y1', 'x2', 'y2')[k - 1]}) is {_short(v)}, "
                                     f"not a number ({BOX_FORMAT})")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------------------------
MOVE_IOU = 0.3  # a box of the same class overlapping its old place at least this much has moved
SAME_IOU = 0.99  # ... at least this much (and another class): the same box relabelled


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`~cvcurate.boxes.box_iou`, where two equal boxes (zero-area ones too) are the same box."""
    iou = box_iou(a, b)
    if not iou.size:
        return iou
    same = np.all(np.isclose(a[:, None, :], b[None, :, :], atol=1e-6), axis=-1)
    return np.where(same, 1.0, iou)


@dataclass
class BoxChange:
    file: str
    kind: str  # added | removed | moved | relabelled
    old: list[Any] | None
    new: list[Any] | None


@dataclass
class Diff:
    images_added: list[str] = field(default_factory=list)
    images_removed: list[str] = field(default_factory=list)
    images_changed: list[str] = field(default_factory=list)  # pixels or labels differ
    pixels_changed: list[str] = field(default_factory=list)
    boxes: list[BoxChange] = field(default_factory=list)
    classes_a: list[str] = field(default_factory=list)
    classes_b: list[str] = field(default_factory=list)

    def per_class(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.boxes:
            cls = (c.new if c.kind == "added" else c.old)[0]
            row = out.setdefault(cls, {"added": 0, "removed": 0, "moved": 0, "relabelled": 0})
            row[c.kind] += 1
        return dict(sorted(out.items()))

    @property
    def empty(self) -> bool:
        return not (self.images_added or self.images_removed or self.images_changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "images": {"added": self.images_added, "removed": self.images_removed,
                       "changed": self.images_changed, "pixels_changed": self.pixels_changed},
            "boxes_per_class": self.per_class(),
            "boxes": [{"file": c.file, "change": c.kind, "old": c.old, "new": c.new} for c in self.boxes],
            "classes": {"a": self.classes_a, "b": self.classes_b},
        }


def _box_changes(file: str, old: list[list[Any]], new: list[list[Any]]) -> list[BoxChange]:
    """Match old boxes to new ones: unchanged, relabelled (same place), moved (same class), the
    rest removed / added. Greedy by overlap, unchanged pairs first."""
    a = np.array([r[1:] for r in old], dtype=np.float64).reshape(-1, 4)
    b = np.array([r[1:] for r in new], dtype=np.float64).reshape(-1, 4)
    ca = [r[0] for r in old]
    cb = [r[0] for r in new]
    iou = _iou(a, b)
    free_a, free_b = set(range(len(a))), set(range(len(b)))
    out: list[BoxChange] = []

    def match(ok: Any, kind: str | None) -> None:
        pairs = sorted(((-iou[i, j], i, j) for i in free_a for j in free_b if ok(i, j)))
        for _, i, j in pairs:
            if i in free_a and j in free_b:
                free_a.discard(i)
                free_b.discard(j)
                if kind is not None:
                    out.append(BoxChange(file, kind, old[i], new[j]))

    match(lambda i, j: iou[i, j] >= SAME_IOU and ca[i] == cb[j], None)
    match(lambda i, j: iou[i, j] >= SAME_IOU, "relabelled")
    match(lambda i, j: iou[i, j] >= MOVE_IOU and ca[i] == cb[j], "moved")
    out += [BoxChange(file, "removed", old[i], None) for i in sorted(free_a)]
    out += [BoxChange(file, "added", None, new[j]) for j in sorted(free_b)]
    return out


def diff(a: dict[str, Any], b: dict[str, Any]) -> Diff:
    """What changed from manifest ``a`` to manifest ``b``. Images are matched by their file in
    the export; an image whose file name changed but whose pixels did not (same sha256) is
    matched by content, so a renamed export is not "everything removed and added"."""
    ia = {d["file"]: d for d in a["images"]}
    ib = {d["file"]: d for d in b["images"]}
    only_a = [f for f in ia if f not in ib]
    only_b = [f for f in ib if f not in ia]
    by_hash_b: dict[str, list[str]] = {}
    for f in only_b:
        by_hash_b.setdefault(ib[f]["sha256"], []).append(f)
    pairs = [(f, f) for f in sorted(set(ia) & set(ib))]
    removed = []
    for f in only_a:
        cands = by_hash_b.get(ia[f]["sha256"])
        if cands:
            pairs.append((f, cands.pop(0)))
        else:
            removed.append(f)
    matched_b = {fb for _, fb in pairs}
    out = Diff(classes_a=list(a.get("classes", [])), classes_b=list(b.get("classes", [])))
    out.images_removed = sorted(removed)
    out.images_added = sorted(f for f in only_b if f not in matched_b)
    for fa, fb in sorted(pairs):
        da, db = ia[fa], ib[fb]
        pix = da["sha256"] != db["sha256"]
        lab = label_hash(da["boxes"]) != label_hash(db["boxes"])
        if pix:
            out.pixels_changed.append(fb)
        if pix or lab:
            out.images_changed.append(fb)
        if lab:
            out.boxes += _box_changes(fb, da["boxes"], db["boxes"])
    for f in out.images_removed:
        out.boxes += [BoxChange(f, "removed", r, None) for r in ia[f]["boxes"]]
    for f in out.images_added:
        out.boxes += [BoxChange(f, "added", None, r) for r in ib[f]["boxes"]]
    return out
