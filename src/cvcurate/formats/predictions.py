"""Predictions made elsewhere (another detector), read into cvcurate's model. Beside the dataset
readers because they share their parsers (YOLO class names come from :func:`.yolo.read_names`).

Two formats:

* ``coco``: a COCO *results* JSON, a list of ``{image_id | file_name, category_id, bbox: [x, y, w,
  h] (absolute pixels), score}`` (a dict with such a list under ``"annotations"`` is accepted
  too). Images are matched to the dataset by **file-name stem**: from ``file_name`` when an entry
  has it; otherwise ``image_id`` is looked up in the ``images`` of a COCO ground-truth file
  (``coco_gt``) to get the file name, and without that file a string ``image_id`` is taken as the
  stem itself. Classes: ``category_name`` (or ``label``) when present, else ``category_id`` via
  the ``categories`` of ``coco_gt``, else cvcurate's own COCO export convention
  ``category_id = class index + 1``.
* ``yolo``: a folder of ``STEM.txt`` files (searched recursively), one line per box
  ``class cx cy w h conf`` with coordinates relative to the image (0..1) and ``class`` the index
  into the dataset's classes (or into ``names`` of a ``data.yaml`` in the folder, matched by
  name). A missing confidence counts as 1. Images without a file have no predictions.

Everything is checked before anything is returned, so a caller that writes the result to the
store writes nothing when something is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..names import PRED_ATTRIBUTES
from ..types import Annotations, LabelSet

FORMATS = ("coco", "yolo")


def _stem_index(labels: LabelSet) -> tuple[dict[str, int], set[str]]:
    index: dict[str, int] = {}
    dup: set[str] = set()
    for i, r in enumerate(labels.records):
        s = Path(r.filepath).stem
        if s in index:
            dup.add(s)
        index[s] = i
    return index, dup


def _fail(kind: str, bad: list[str], total: int, extra: str = "") -> None:
    if bad:
        raise InputError(f"{len(bad)} of {total} predictions refer to {kind} (for example {bad[0]!r}){extra}; "
                         f"nothing was imported")


def _finish(labels: LabelSet, per_image: dict[int, list[tuple]]) -> list[Annotations]:
    """One :class:`Annotations` per record from (box, class, score[, attributes]) items; an
    attribute of :data:`~cvcurate.names.PRED_ATTRIBUTES` any item has goes into every image's
    ``data`` (NaN where a box has none)."""
    keys = [k for k in PRED_ATTRIBUTES
            if any(len(it) > 3 and k in it[3] for items in per_image.values() for it in items)]
    out = []
    for i in range(len(labels.records)):
        items = per_image.get(i, [])
        data = {k: np.array([it[3].get(k, np.nan) if len(it) > 3 else np.nan for it in items], np.float64)
                for k in keys}
        if not items:
            out.append(Annotations(np.zeros((0, 4)), np.zeros(0, np.int64), confidence=np.zeros(0), data=data))
            continue
        out.append(Annotations(xyxy=np.array([it[0] for it in items], dtype=np.float64),
                               class_id=np.array([it[1] for it in items], dtype=np.int64),
                               confidence=np.array([it[2] for it in items], dtype=np.float64), data=data))
    return out


def _read_json(path: str | Path, what: str) -> Any:
    """``json.loads`` of a file, refused in one line when nested deeper than ``max_json_depth``
    (the default of :class:`~cvcurate.config.ImportLimits`; Python's reader recurses per level)."""
    from ..config import ImportLimits
    from .base import json_depth_over

    text = Path(path).read_text()
    depth = ImportLimits().max_json_depth
    if json_depth_over(text, depth):
        raise InputError(f"{what} {path}: JSON nested deeper than {depth} levels; not read")
    return json.loads(text)


def read_coco(path: Path, labels: LabelSet, coco_gt: str | Path | None = None) -> list[Annotations]:
    try:
        doc = _read_json(path, "COCO predictions")
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read COCO predictions {path}: {exc}") from None
    if isinstance(doc, dict):
        doc = doc.get("annotations", doc.get("predictions"))
    if not isinstance(doc, list):
        raise InputError(f"{path}: expected a COCO results list of detections")
    if not doc:
        raise InputError(f"{path} holds no predictions")
    id_to_name: dict[Any, str] = {}
    cat_to_name: dict[Any, str] = {}
    if coco_gt is not None:
        try:
            gt = _read_json(coco_gt, "COCO ground-truth file")
            id_to_name = {im["id"]: im["file_name"] for im in gt.get("images", [])}
            cat_to_name = {c["id"]: c["name"] for c in gt.get("categories", [])}
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"cannot read COCO ground-truth file {coco_gt}: {exc}") from None
    stems, dup = _stem_index(labels)
    cls_index = {c: j for j, c in enumerate(labels.classes)}
    unknown_img: list[str] = []
    unknown_cls: list[str] = []
    malformed: list[str] = []
    per_image: dict[int, list] = {}
    for n, d in enumerate(doc):
        if not isinstance(d, dict) or "bbox" not in d:
            malformed.append(f"entry {n}")
            continue
        if "file_name" in d:
            stem = Path(str(d["file_name"])).stem
        elif "image_id" in d and d["image_id"] in id_to_name:
            stem = Path(id_to_name[d["image_id"]]).stem
        elif "image_id" in d and isinstance(d["image_id"], str):
            stem = Path(d["image_id"]).stem
        elif "image_id" in d:
            unknown_img.append(f"image_id {d['image_id']}" + ("" if coco_gt else " (give the COCO ground-truth "
                                                               "file to resolve numeric image ids)"))
            continue
        else:
            malformed.append(f"entry {n} has neither image_id nor file_name")
            continue
        if stem not in stems or stem in dup:
            unknown_img.append(stem + (" (ambiguous: several images have this name)" if stem in dup else ""))
            continue
        name = d.get("category_name", d.get("label"))
        if name is None:
            cid = d.get("category_id")
            if cat_to_name:
                name = cat_to_name.get(cid, f"category_id {cid}")
            elif isinstance(cid, int) and 1 <= cid <= len(labels.classes):
                name = labels.classes[cid - 1]
            else:
                name = f"category_id {cid}"
        if name not in cls_index:
            unknown_cls.append(str(name))
            continue
        try:
            x, y, w, h = (float(v) for v in d["bbox"])
            score = float(d.get("score", 1.0))
        except (TypeError, ValueError):
            malformed.append(f"entry {n} bbox {d.get('bbox')!r}")
            continue
        if not np.isfinite([x, y, w, h, score]).all() or not 0 <= score <= 1:
            malformed.append(f"entry {n} (non-finite box or score outside 0..1)")
            continue
        extra = {}  # predict --flip-check's numbers, when the file has them (write_coco_results writes them)
        for k in PRED_ATTRIBUTES:
            v = d.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                extra[k] = float(v)
        per_image.setdefault(stems[stem], []).append(([x, y, x + w, y + h], cls_index[name], score, extra))
    total = len(doc)
    _fail("malformed entries", malformed, total)
    _fail("images that are not in the dataset", unknown_img, total)
    _fail("unknown classes", unknown_cls, total, f" (dataset classes: {', '.join(labels.classes)})")
    return _finish(labels, per_image)


def read_yolo(path: Path, labels: LabelSet) -> list[Annotations]:
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"YOLO predictions must be a folder of .txt files, {path} is not a folder")
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise InputError(f"{path} holds no .txt prediction files")
    # class names as the dataset readers find them (data.yaml, classes.txt, obj.names), when present
    from .yolo import read_names

    names: list[str] | None
    try:
        names = read_names(path)[0]
    except InputError:
        names = None
    cls_index = {c: j for j, c in enumerate(labels.classes)}
    stems, dup = _stem_index(labels)
    unknown_img: list[str] = []
    unknown_cls: list[str] = []
    malformed: list[str] = []
    per_image: dict[int, list] = {}
    total = 0
    for f in files:
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        total += len(lines)
        if f.stem not in stems or f.stem in dup:
            if lines:
                unknown_img.append(f.stem)
            continue
        i = stems[f.stem]
        rec = labels.records[i]
        for ln_no, ln in enumerate(lines, start=1):
            parts = ln.split()
            try:
                if len(parts) not in (5, 6):
                    raise ValueError
                c_f = float(parts[0])
                if not c_f.is_integer():  # as in label files: 1.5 is not class 1
                    raise ValueError
                c = int(c_f)
                cx, cy, w, h = (float(v) for v in parts[1:5])
                conf = float(parts[5]) if len(parts) == 6 else 1.0
                if not np.isfinite([cx, cy, w, h, conf]).all() or not 0 <= conf <= 1:
                    raise ValueError
            except ValueError:
                malformed.append(f"{f.name}:{ln_no}: {ln.strip()!r}")
                continue
            if names is not None:
                name = names[c] if 0 <= c < len(names) else f"class {c}"
                if name not in cls_index:
                    unknown_cls.append(str(name))
                    continue
                c = cls_index[name]
            elif not 0 <= c < len(labels.classes):
                unknown_cls.append(f"class {c}")
                continue
            box = [(cx - w / 2) * rec.width, (cy - h / 2) * rec.height,
                   (cx + w / 2) * rec.width, (cy + h / 2) * rec.height]
            per_image.setdefault(i, []).append((box, c, conf))
    if total == 0:
        raise InputError(f"the prediction files in {path} are all empty")
    _fail("malformed lines", malformed, total)
    _fail("images that are not in the dataset", unknown_img, total)
    _fail("unknown classes", unknown_cls, total, f" (dataset classes: {', '.join(labels.classes)})")
    return _finish(labels, per_image)


def write_coco_results(path: str | Path, labels: LabelSet, anns: list[Annotations | None]) -> Path:
    """Write predictions of the records of ``labels`` as a COCO results list (``file_name``,
    ``category_name``, absolute ``bbox`` [x, y, w, h], ``score``): what :func:`read_coco` reads
    back (``cvcurate predict NAME --from-file PATH --format coco``), with ``predict --flip-check``'s
    numbers where a box has them. None: no entries for that image."""
    rows = []
    for r, a in zip(labels.records, anns):
        if a is None:
            continue
        conf = a.confidence if a.confidence is not None else np.ones(len(a))
        extra = [k for k in PRED_ATTRIBUTES if k in a.data]
        for j, (b, c, p) in enumerate(zip(a.xyxy, a.class_id, conf)):
            row = {"file_name": Path(r.filepath).name, "category_name": labels.classes[int(c)],
                   "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(p)}
            row.update({k: float(a.data[k][j]) for k in extra if np.isfinite(a.data[k][j])})
            rows.append(row)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(path)
    return path


def read_predictions(path: str | Path, format: str, labels: LabelSet, *,
                     coco_gt: str | Path | None = None) -> list[Annotations]:
    """Read predictions for the records of ``labels``: one :class:`Annotations` per record, in order.

    Raises :class:`InputError` (with the count and an example) for unknown images or classes,
    malformed entries, or no predictions at all.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if format == "coco":
        out = read_coco(path, labels, coco_gt)
    elif format == "yolo":
        out = read_yolo(path, labels)
    else:
        raise InputError(f"unknown predictions format {format!r}: use one of {', '.join(FORMATS)}")
    if sum(len(a) for a in out) == 0:
        raise InputError(f"{path} holds no predictions for the images of this dataset")
    return out
