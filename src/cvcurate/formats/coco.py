"""COCO detection JSON (``images``, ``annotations`` with ``bbox`` = [x, y, w, h], ``categories``).

PATH is the JSON file itself, or a folder holding exactly one COCO JSON (directly or in
``annotations/``). Images are looked up by ``file_name`` relative to, in order: ``images_dir`` if
given, the JSON's folder, its ``images/`` or ``data/`` sibling, and the dataset folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..types import LabelSet
from .base import ParseResult, RawImage


def _looks_like_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def find_json(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise InputError(f"{root} does not exist")
    candidates = [p for d in (root, root / "annotations") if d.is_dir()
                  for p in sorted(d.glob("*.json")) if _looks_like_coco(p)]
    if not candidates:
        raise InputError(f"no COCO JSON (with images/annotations/categories) in {root}")
    if len(candidates) > 1:
        names = ", ".join(str(c.relative_to(root)) for c in candidates)
        raise InputError(f"several COCO JSON files in {root} ({names}): give the one to import as PATH")
    return candidates[0]


def _image_roots(json_path: Path, root: Path, images_dir: Path | None) -> list[Path]:
    roots = [images_dir] if images_dir else []
    base = json_path.parent
    roots += [base, base / "images", base / "data", base.parent / "images", base.parent / "data", root]
    seen: list[Path] = []
    for r in roots:
        if r is not None and r.is_dir() and r not in seen:
            seen.append(r)
    return seen


def parse_document(doc: Any, source: str) -> tuple[list[dict], dict[int, list[dict]], dict[int, str], list[tuple[str, str]]]:
    """Validate a COCO document: (images, annotations by image id, category names, problems)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError(f"{source}: not a COCO detection file (no 'images' list)")
    problems: list[tuple[str, str]] = []
    cats: dict[int, str] = {}
    for c in doc.get("categories") or []:
        try:
            cats[int(c["id"])] = str(c["name"])
        except (KeyError, TypeError, ValueError):
            problems.append((source, f"malformed category: {c!r} ignored"))
    by_image: dict[int, list[dict]] = {}
    for k, a in enumerate(doc.get("annotations") or []):
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
            problems.append((source, f"missing image: {len(anns)} annotation(s) name image_id {image_id}, "
                             "which is not in 'images'"))
    return images, by_image, cats, problems


def parse(root: Path, images_dir: Path | None = None) -> ParseResult:
    json_path = find_json(root)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{json_path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except OSError as exc:
        raise InputError(f"{json_path}: cannot be read: {exc.strerror}") from None
    source = str(json_path)
    images, by_image, cats, problems = parse_document(doc, source)
    roots = _image_roots(json_path, root if root.is_dir() else json_path.parent, images_dir)
    split = json_path.stem.replace("instances_", "") if json_path.stem.startswith("instances_") else None

    out: list[RawImage] = []
    for im in images:
        fname = str(im["file_name"])
        path = next((r / fname for r in roots if (r / fname).is_file()), None)
        if path is None:
            path = next((r / Path(fname).name for r in roots if (r / Path(fname).name).is_file()), None)
        raw = RawImage(image_path=path, source=f"{source}#image {im['id']} ({fname})", split=split)
        if path is None:
            raw.image_path = None
            raw.source = fname
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
            raw.boxes.append((x, y, x + w, y + h))
            raw.labels.append(name if name is not None else f"<category_id {a.get('category_id')}>")
        out.append(raw)
    classes = [cats[k] for k in sorted(cats)]
    # several ids with one name would make class ids ambiguous
    dedup: list[str] = []
    for c in classes:
        if c not in dedup:
            dedup.append(c)
    return ParseResult(images=out, classes=dedup, closed=True, problems=problems)


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
