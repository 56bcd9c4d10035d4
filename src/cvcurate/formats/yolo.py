"""YOLO txt labels with a ``data.yaml`` (or ``dataset.yaml``, or a ``classes.txt``).

Layouts: ``images/<split>/x.jpg`` + ``labels/<split>/x.txt`` (the split is taken from the folder
name, or from the ``train``/``val``/``test`` keys of data.yaml), or flat ``images/`` + ``labels/``.
Each label line is ``class cx cy w h`` with coordinates relative to the image (0..1). An image
without a label file is a negative (YOLO's own convention) and is reported as a warning.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import InputError
from ..types import LabelSet
from .base import ParseResult, RawImage, list_images

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")


def find_yaml(root: Path) -> Path | None:
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    return next((root / n for n in YAML_NAMES if (root / n).is_file()), None)


def read_names(root: Path) -> tuple[list[str], dict, Path]:
    """Class names (in id order), the yaml document, and the dataset folder."""
    yml = find_yaml(root)
    if yml is None:
        txt = root / "classes.txt"
        if txt.is_file():
            names = [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
            return names, {}, root
        raise InputError(f"no YOLO data.yaml (or classes.txt) in {root}")
    try:
        doc = yaml.safe_load(yml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{yml}: malformed YAML: {exc}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        try:
            names = [str(names[k]) for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise InputError(f"{yml}: 'names' keys must be class ids 0..N-1") from None
    if not isinstance(names, list) or not names:
        raise InputError(f"{yml}: needs a 'names' list or mapping of class names")
    base = yml.parent
    if isinstance(doc.get("path"), str):
        p = Path(doc["path"])
        if not p.is_absolute():
            p = base / p
        if p.is_dir():
            base = p
    return [str(n) for n in names], doc, base


def parse_label_text(text: str, num_classes: int, names: list[str]) -> tuple[list, list, list[str]]:
    """Parse one YOLO label file: (relative xyxy boxes, class names, warnings)."""
    boxes, labels, warnings = [], [], []
    for ln, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            warnings.append(f"bad box: line {ln} {line.strip()!r} needs 'class cx cy w h'; left out")
            continue
        try:
            cls = int(float(parts[0]))
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except ValueError:
            warnings.append(f"bad box: line {ln} {line.strip()!r} is not numeric; left out")
            continue
        if len(parts) > 5:
            warnings.append(f"segment or extra values: line {ln} has {len(parts)} values; box from the first 5")
        label = names[cls] if 0 <= cls < num_classes else f"<class id {cls}>"
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        labels.append(label)
    return boxes, labels, warnings


def _label_path(img: Path, images_root: Path, labels_root: Path) -> Path:
    rel = img.relative_to(images_root)
    return (labels_root / rel).with_suffix(".txt")


def parse(root: Path) -> ParseResult:
    names, doc, base = read_names(root)
    images_root = base / "images"
    labels_root = base / "labels"
    if not images_root.is_dir():
        raise InputError(f"no images/ folder in {base}")
    if not labels_root.is_dir():
        raise InputError(f"no labels/ folder in {base}")
    split_dirs: dict[Path, str] = {}
    for key in ("train", "val", "test"):
        val = doc.get(key)
        for v in ([val] if isinstance(val, str) else val or []):
            p = Path(v)
            p = p if p.is_absolute() else base / p
            split_dirs[p.resolve()] = key
    out: list[RawImage] = []
    problems: list[tuple[str, str]] = []
    imgs = list_images(images_root, recursive=True)
    matched_labels: set[Path] = set()
    for img in imgs:
        split = None
        for parent in img.parents:
            if parent.resolve() in split_dirs:
                split = split_dirs[parent.resolve()]
                break
            if parent == images_root:
                break
        if split is None and img.parent != images_root:
            split = img.parent.name
        raw = RawImage(image_path=img, source=str(img), coords="relative", split=split)
        lp = _label_path(img, images_root, labels_root)
        if lp.is_file():
            matched_labels.add(lp)
            try:
                text = lp.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raw.errors.append(f"unreadable annotation: {lp.name}: {exc}")
                out.append(raw)
                continue
            raw.boxes, raw.labels, raw.warnings = parse_label_text(text, len(names), names)
        else:
            raw.warnings.append("no label file: imported as an image without defects")
        out.append(raw)
    for lp in sorted(labels_root.rglob("*.txt")):
        if lp not in matched_labels and lp.name != "classes.txt":
            problems.append((str(lp), "missing image: label file has no image"))
    return ParseResult(images=out, classes=names, closed=True, problems=problems)


def write(labels: LabelSet, root: Path, images_subdir: str = "images") -> Path:
    """Write YOLO label files beside ``root/images/...`` and a data.yaml; images must lie under it."""
    root = Path(root)
    images_root = root / images_subdir
    for rec in labels.records:
        p = Path(rec.filepath)
        rel = p.relative_to(images_root) if p.is_relative_to(images_root) else Path(p.name)
        lp = (root / "labels" / rel).with_suffix(".txt")
        lp.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for (x1, y1, x2, y2), c in zip(rec.gt.xyxy, rec.gt.class_id):
            cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
            w, h = (x2 - x1) / rec.width, (y2 - y1) / rec.height
            lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        lp.write_text("\n".join(lines) + ("\n" if lines else ""))
    doc = {"path": ".", "names": {i: n for i, n in enumerate(labels.classes)}}
    splits = sorted({r.split for r in labels.records if r.split})
    for s in splits:
        doc[s] = f"{images_subdir}/{s}"
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root / "data.yaml"
