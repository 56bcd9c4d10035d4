"""COCO detection JSON (``images``, ``annotations`` with ``bbox`` = [x, y, w, h], ``categories``).

PATH is the JSON file itself, or a folder holding COCO JSONs: directly, in ``annotations/``
(``instances_train2017.json``, ``instances_val2017.json``: each one a split, taken from the file
name; other JSONs there, like ``captions_*``, are ignored when ``instances_*`` exist), or in split
folders (Roboflow's ``train/_annotations.coco.json``: the split from the folder name). Several
JSONs without a split each are refused: give the one to import as PATH.

Images are looked up by ``file_name`` where COCO layouts put them, in order: ``images_dir`` if
given, beside the JSON, and for the JSON's folder and the folder above it (the dataset folder of
``annotations/``): ``images/<split>/``, ``<split>/`` (``train2017/``, mmdetection's ``train/``),
``images/``, ``data/``; then the dataset folder.

``iscrowd: 1`` boxes (a region of many objects) are kept out of the ground truth by default and
reported with a count (``include_crowd`` imports them as ordinary boxes).

Caps (:class:`~cvcurate.config.ImportLimits`): an image with more than ``max_boxes_per_image``
annotations is rejected and the rest imported; the annotations past the cap are dropped while the
JSON is parsed, so that a file of millions of boxes on a few images costs the memory of the
boxes that can be imported. A JSON nested deeper than ``max_json_depth`` is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import ImportLimits
from ..errors import InputError
from ..types import LabelSet
from .base import (ImportOptions, ParseResult, RawImage, list_images, load_json_text, safe_resolve, split_name,
                   too_many_boxes)


def _looks_like_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    if path.name == "manifest.json" and '"cvcurate_version"' in head:
        return False  # the manifest.json of a cvcurate export, beside its COCO files
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def _split_of(json_path: Path) -> tuple[str | None, str | None]:
    """(split as named in the file or folder name, normalised split) of one JSON."""
    stem = json_path.stem
    if stem.startswith("instances_"):
        raw = stem[len("instances_"):]
        return raw, split_name(raw)
    for name in (stem, json_path.parent.name):
        if split_name(name) in ("train", "val", "test", "trainval"):
            return name, split_name(name)
    return None, None


def _coco_in(d: Path) -> list[Path]:
    return [p for p in sorted(d.glob("*.json")) if _looks_like_coco(p)] if d.is_dir() else []


def find_jsons(root: Path) -> tuple[list[Path], list[str]]:
    """The COCO JSONs to import from ``root`` and notes about the choice."""
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise InputError(f"{root} does not exist")
    notes: list[str] = []
    candidates = _coco_in(root) + _coco_in(root / "annotations")
    if not candidates:  # split folders, each with its JSON (Roboflow)
        candidates = [p for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
                      for p in (_coco_in(d) + _coco_in(d / "annotations"))]
    if not candidates:
        raise InputError(f"no COCO JSON (with images/annotations/categories) in {root}")
    instances = [p for p in candidates if p.stem.startswith("instances_")]
    if instances and len(instances) < len(candidates):
        others = [p for p in candidates if p not in instances]
        notes.append(f"COCO: {', '.join(str(p.relative_to(root)) for p in others)} ignored "
                     "(not instances_*.json detection files)")
        candidates = instances
    if len(candidates) > 1:
        splits = [_split_of(p)[1] for p in candidates]
        if None in splits or len(set(splits)) < len(splits):
            names = ", ".join(str(c.relative_to(root)) for c in candidates)
            raise InputError(f"several COCO JSON files in {root} ({names}), not one per split: "
                             "give the one to import as PATH")
        notes.append("COCO: " + ", ".join(f"{p.relative_to(root)} (split {s})" for p, s in zip(candidates, splits)))
    return candidates, notes


def find_json(root: Path) -> Path:
    """The one COCO JSON of ``root`` (an error when there are several)."""
    found, _ = find_jsons(root)
    if len(found) > 1:
        raise InputError(f"several COCO JSON files in {root}: give the one to import as PATH")
    return found[0]


def _image_roots(json_path: Path, root: Path, images_dir: Path | None) -> list[Path]:
    raw, split = _split_of(json_path)
    roots = [images_dir] if images_dir else []
    base = json_path.parent
    tops = [base, base.parent]  # beside the JSON, and one level up (annotations/ -> its dataset folder)
    for d in tops:
        roots.append(d)
        for s in dict.fromkeys(x for x in (raw, split) if x):
            roots += [d / "images" / s, d / s]
        roots += [d / "images", d / "data"]
    roots += [base.parent / "images", base.parent / "data", root]
    seen: list[Path] = []
    for r in roots:
        if r is not None and r.is_dir() and r not in seen:
            seen.append(r)
    return seen


class _Dropped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<annotation past max_boxes_per_image>"


DROPPED = _Dropped()  # one shared placeholder for every annotation dropped while reading


class _Capped:
    """``object_hook`` of the JSON reader: counts the annotations (objects with an ``image_id``) of
    each image and drops those past ``cap`` as they are read (:data:`DROPPED` takes their place),
    so that a file of millions of boxes on a few images never holds them all in memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counts: dict[int, int] = {}

    def __call__(self, obj: dict) -> Any:
        if "image_id" not in obj:
            return obj
        try:
            key = int(obj["image_id"])
        except (TypeError, ValueError):
            return obj
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        return DROPPED if n > self.cap else obj


def _read_bytes(json_path: Path) -> bytes:
    try:
        return json_path.read_bytes()
    except OSError as exc:
        raise InputError(f"{json_path}: cannot be read: {exc.strerror or exc}") from None


def read_document(json_path: Path, limits: ImportLimits | None = None) -> tuple[Any, dict[int, int]]:
    """A COCO JSON, read under the caps: (document, annotations per image id as counted while
    reading, dropped ones included). An image's annotations past ``max_boxes_per_image`` are
    :data:`DROPPED` in the document's ``annotations`` list."""
    limits = limits or ImportLimits()
    capped = _Capped(limits.max_boxes_per_image)
    # no name holds the bytes: the reader frees them once decoded
    doc = load_json_text(_read_bytes(json_path), str(json_path), limits.max_json_depth, object_hook=capped)
    return doc, capped.counts


def parse_document(doc: Any, source: str, totals: dict[int, int] | None = None
                   ) -> tuple[list[dict], dict[int, list[dict]], dict[int, str], list[tuple[str, str]]]:
    """Validate a COCO document: (images, annotations by image id, category names, problems).

    ``totals``: annotations per image id counted while reading (see :func:`read_document`); they
    count in the messages where annotations were dropped."""
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError(f"{source}: not a COCO detection file (no 'images' list)")
    problems: list[tuple[str, str]] = []
    for key in ("categories", "annotations"):
        if not isinstance(doc.get(key) or [], list):
            problems.append((source, f"malformed {key}: not a list ({type(doc[key]).__name__}); ignored"))
            doc[key] = []
    cats: dict[int, str] = {}
    for c in doc.get("categories") or []:
        try:
            cats[int(c["id"])] = str(c["name"])
        except (KeyError, TypeError, ValueError):
            problems.append((source, f"malformed category: {c!r} ignored"))
    by_image: dict[int, list[dict]] = {}
    for k, a in enumerate(doc.get("annotations") or []):
        if a is DROPPED:  # past max_boxes_per_image: counted in totals
            continue
        if not isinstance(a, dict) or "image_id" not in a:
            problems.append((source, f"malformed annotation: annotations[{k}] has no image_id; ignored"))
            continue
        try:
            by_image.setdefault(int(a["image_id"]), []).append(a)
        except (TypeError, ValueError):
            problems.append((source, f"malformed annotation: annotations[{k}] image_id {a['image_id']!r}"))
    images = []
    for k, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            problems.append((source, f"malformed image entry: images[{k}] needs id and file_name; ignored"))
            continue
        images.append(im)
    known = set()
    for im in images:
        try:
            known.add(int(im["id"]))
        except (TypeError, ValueError):
            pass
    for image_id, anns in by_image.items():
        if image_id not in known:
            n = max(len(anns), (totals or {}).get(image_id, 0))
            problems.append((source, f"missing image: {n} annotation(s) name image_id {image_id}, "
                             "which is not in 'images'"))
    return images, by_image, cats, problems


def _is_crowd(a: dict) -> bool:
    v = a.get("iscrowd", 0)
    return v in (1, True, "1", "true", "True")


def parse(root: Path, opts: ImportOptions | None = None, images_dir: Path | None = None) -> ParseResult:
    opts = opts or ImportOptions()
    jsons, notes = find_jsons(root)
    result = ParseResult(images=[], classes=[], closed=True, notes=notes)
    crowd = 0
    for json_path in jsons:
        crowd += _parse_json(json_path, root, images_dir, opts, result, split=_split_of(json_path)[1])
    if crowd and not opts.include_crowd:
        result.notes.append(f"{crowd} crowd box(es) (iscrowd: 1) left out of the ground truth; "
                            "--include-crowd imports them as ordinary boxes")
    elif crowd:
        result.notes.append(f"{crowd} crowd box(es) (iscrowd: 1) imported as ordinary boxes (--include-crowd)")
    result.settings["include_crowd"] = bool(opts.include_crowd)
    result.settings["coco_json"] = [str(p) for p in jsons]
    return result


def _parse_json(json_path: Path, root: Path, images_dir: Path | None, opts: ImportOptions,
                result: ParseResult, split: str | None) -> int:
    caps = opts.caps
    doc, totals = read_document(json_path, caps)
    source = str(json_path)
    images, by_image, cats, problems = parse_document(doc, source, totals)
    result.problems += problems
    roots = _image_roots(json_path, root if root.is_dir() else json_path.parent, images_dir)

    crowd = 0
    found_dirs: set[Path] = set()
    referenced: set[Path] = set()
    hit: Path | None = None  # the root that found the last image: tried first
    for im in images:
        fname = str(im["file_name"])
        order = ([hit] if hit is not None else []) + [r for r in roots if r != hit]
        path = None
        for cand in (fname, Path(fname).name):
            for r in order:
                if (r / cand).is_file():
                    path, hit = r / cand, r
                    break
            if path is not None:
                break
        raw = RawImage(image_path=path, source=f"{source}#image {im['id']} ({fname})", split=split)
        if path is None:
            raw.source = fname
        else:
            found_dirs.add(path.parent)
            referenced.add(safe_resolve(path))
        try:
            w, h = int(im.get("width") or 0), int(im.get("height") or 0)
            if w > 0 and h > 0:
                raw.frame = (w, h)
        except (TypeError, ValueError):
            raw.warnings.append("bad declared size: width/height not numeric; real size used")
        try:
            image_id = int(im["id"])
        except (TypeError, ValueError):
            image_id = None
        n_anns = max(totals.get(image_id, 0), len(by_image.get(image_id, []))) if image_id is not None else 0
        if n_anns > caps.max_boxes_per_image:
            raw.errors.append(too_many_boxes(n_anns, caps))
            result.images.append(raw)
            continue
        for a in by_image.get(image_id, []) if image_id is not None else []:
            bbox = a.get("bbox")
            aid = a.get("id", "?")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raw.warnings.append(f"bad box: annotation {aid} bbox {bbox!r} is not [x, y, w, h]; left out")
                continue
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                raw.warnings.append(f"bad box: annotation {aid} bbox {bbox!r} is not numeric; left out")
                continue
            try:
                cat = int(a.get("category_id"))
            except (TypeError, ValueError):
                cat = None
            name = cats.get(cat) if cat is not None else None
            label = name if name is not None else f"<category_id {a.get('category_id')}>"
            if _is_crowd(a):
                crowd += 1
                if not opts.include_crowd:
                    raw.warnings.append(f"crowd box: annotation {aid} ({label}) [{x:g}, {y:g}, {w:g}, {h:g}] "
                                        "has iscrowd 1; left out of the ground truth")
                    continue
            raw.boxes.append((x, y, x + w, y + h))
            raw.labels.append(label)
        result.images.append(raw)
    used_ids = set()
    for anns in by_image.values():
        for a in anns:
            try:
                used_ids.add(int(a.get("category_id")))
            except (TypeError, ValueError):
                pass
    supers = {str(c.get("supercategory")) for c in doc.get("categories") or []
              if isinstance(c, dict) and c.get("name") != c.get("supercategory")}
    for k in sorted(cats):
        c = cats[k]
        if k not in used_ids and c in supers:
            # Roboflow writes the dataset's name as category 0, the supercategory of all others
            result.notes.append(f"COCO: category {k} {c!r} has no boxes and is the supercategory of the "
                                "others (Roboflow's dataset-name category); not a class")
            continue
        # several ids with one name would make class ids ambiguous
        if c not in result.classes:
            result.classes.append(c)
    if not images:
        return crowd
    # image files beside the ones this JSON lists, but not listed: a COCO JSON is the list of
    # its images, so they are not imported (and not counted as read); say how many there are
    stray = [p for d in sorted(found_dirs) for p in list_images(d) if safe_resolve(p) not in referenced]
    if stray:
        result.notes.append(f"{len(stray)} image file(s) beside the images of {json_path.name} are not in it "
                            f"and were not imported (first: {stray[0]})")
    return crowd


def to_document(labels: LabelSet, root: Path | None = None) -> dict[str, Any]:
    """A COCO detection document; ``file_name`` relative to ``root`` when given."""
    images, anns = [], []
    for i, rec in enumerate(labels.records, start=1):
        p = Path(rec.filepath)
        fname = str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else p.name
        images.append({"id": i, "file_name": fname, "width": rec.width, "height": rec.height})
        for b, c in zip(rec.gt.xyxy, rec.gt.class_id):
            x1, y1, x2, y2 = (float(v) for v in b)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": k + 1, "name": n, "supercategory": "defect"} for k, n in enumerate(labels.classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def write(labels: LabelSet, json_path: Path, root: Path | None = None) -> Path:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(to_document(labels, root)))
    return json_path
