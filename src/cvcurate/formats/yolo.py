"""YOLO txt labels with a ``data.yaml`` (or ``dataset.yaml``), a ``classes.txt``, or Darknet's
``obj.names`` / ``obj.data``.

Layouts, tried in this order:

* the ``train`` / ``val`` / ``test`` entries of data.yaml (folders, image list ``.txt`` files or
  lists of them; ``valid:`` and ``validation:`` are read as ``val``), each imported with its split
  name. A path is tried as written (relative to the ``path:`` key, itself relative to the yaml's
  folder, else to the yaml's folder), then relative to the yaml's folder, then without its leading
  ``../`` next to the yaml (the Roboflow export quirk: ``train: ../train/images`` beside a
  ``train/`` folder; Ultralytics reads it so too), then with ``valid`` / ``val`` / ``validation``
  swapped (``val: ../valid/images`` beside a ``val/`` folder); any of these but the first is
  noted. An entry that resolves nowhere refuses the import (one line: the key and the path) when
  images of the folder are in none of the splits found (they would lose their split); else it is
  noted (Roboflow writes ``test: ../test/images`` also for an export without a test split);
* ``images/<split>/`` + ``labels/<split>/`` (or flat ``images/`` + ``labels/``);
* split folders first: ``train/images`` + ``train/labels``, ``valid/images`` ... (Roboflow);
* Darknet: ``obj.data``'s ``train``/``valid`` image lists, or images with their ``.txt`` beside them
  (``obj/``, CVAT's ``obj_train_data/``).

An image's label file is found as Ultralytics finds it (the last ``images`` folder of its path
replaced by ``labels``, the extension by ``.txt``), else beside the image. Split names from
folders are normalised (``valid`` -> ``val``). Each label line is ``class cx cy w h`` with
coordinates relative to the image (0..1); a class that is not an integer makes a bad line. An
image without a label file is a negative (YOLO's own convention) and is reported as a warning.

Caps (:class:`~cvcurate.config.ImportLimits`): an image whose label file has more than
``max_label_file_bytes`` bytes (checked before reading it), ``max_label_file_lines`` lines or
``max_boxes_per_image`` boxes is rejected, and the rest imported. ``data.yaml`` may not use YAML
aliases (a few lines of them can stand for billions of values).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..config import ImportLimits, UnsafeYAMLError, safe_load_yaml
from ..errors import InputError
from ..types import LabelSet
from .base import (ImportOptions, ParseResult, RawImage, list_images, looks_like_image, over_cap, safe_resolve,
                   split_name, too_many_boxes, yaml_error_line)

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
NAME_FILES = ("classes.txt", "obj.names", "classes.names")
SPLIT_KEYS = ("train", "val", "test")


def find_yaml(root: Path) -> Path | None:
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    if not root.is_dir():
        return None
    return next((root / n for n in YAML_NAMES if (root / n).is_file()), None)


def find_darknet(root: Path) -> Path | None:
    """``obj.data`` or ``obj.names`` (any ``*.data`` / ``*.names``) of a Darknet dataset."""
    if root.is_file() and root.suffix in (".data", ".names"):
        return root
    if not root.is_dir():
        return None
    for pat in ("obj.data", "*.data", "obj.names", "*.names"):
        found = sorted(p for p in root.glob(pat) if p.is_file())
        if found:
            return found[0]
    return None


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None


def resolve(base: Path, value: str, notes: list[str] | None = None, what: str = "") -> Path | None:
    """A path a YOLO file names, resolved as Ultralytics and Darknet users expect.

    ``base / value``; else, for ``../x``, ``base / x`` (the Roboflow quirk: Ultralytics does the
    same); else ``value`` with its leading folders dropped one by one (Darknet lists name images
    as ``data/obj_train_data/x.jpg``, relative to Darknet's own folder)."""
    p = Path(os.path.expanduser(str(value).strip()))
    if p.is_absolute():
        return p if p.exists() else None
    cand = base / p
    if cand.exists():
        return cand
    parts = p.parts
    if parts and parts[0] == "..":
        q = base / Path(*parts[1:]) if len(parts) > 1 else base
        if q.exists():
            if notes is not None:
                notes.append(f"{what or 'path'} {value!r} does not exist relative to {base}; read as "
                             f"{Path(*parts[1:]) if len(parts) > 1 else '.'} inside it (the Roboflow '../' quirk, "
                             "resolved as Ultralytics does)")
            return q
    rest = [x for x in parts if x not in ("..", ".")]
    for k in range(1, len(rest)):
        q = base / Path(*rest[k:])
        if q.exists():
            return q
    return None


VAL_SPELLINGS = ("val", "valid", "validation")


def _as_written(base: Path, yaml_dir: Path, p: Path) -> list[tuple[Path, str]]:
    if p.is_absolute():
        return [(p, "")]
    out = [(base / p, ""), (yaml_dir / p, f"relative to the yaml's folder {yaml_dir}")]
    k = next((i for i, x in enumerate(p.parts) if x != ".."), len(p.parts))
    if k:  # the Roboflow '../' quirk: ../train/images means train/images next to the yaml
        rest = Path(*p.parts[k:]) if k < len(p.parts) else Path(".")
        quirk = f"as {rest} next to it (the Roboflow '../' quirk, resolved as Ultralytics does)"
        out += [(yaml_dir / rest, quirk), (base / rest, quirk)]
    return out


def _split_candidates(base: Path, yaml_dir: Path, value: str) -> list[tuple[Path, str]]:
    """Where a data.yaml split path may be, in the order tried: (path, how it was read; "" as written)."""
    p = Path(os.path.expanduser(str(value).strip()))
    out = _as_written(base, yaml_dir, p)
    i = next((i for i in range(len(p.parts) - 1, -1, -1) if p.parts[i].lower() in VAL_SPELLINGS), None)
    if i is not None:  # valid / val / validation: the folder's spelling swapped
        for other in VAL_SPELLINGS:
            if other != p.parts[i].lower():
                q = Path(*p.parts[:i], other, *p.parts[i + 1:])
                swap = f"with the folder spelled {other!r}, not {p.parts[i]!r}"
                out += [(c, f"{how}; {swap}" if how else swap) for c, how in _as_written(base, yaml_dir, q)]
    unique: dict[Path, str] = {}
    for c, how in out:
        unique.setdefault(c, how)
    return list(unique.items())


def resolve_split(base: Path, yaml_dir: Path, value: str, notes: list[str], key: str) -> Path | None:
    """A data.yaml (or obj.data) split path: the first of :func:`_split_candidates` that exists
    (noted when not as written), else :func:`resolve`'s last resort (leading folders dropped)."""
    for cand, how in _split_candidates(base, yaml_dir, value):
        if cand.exists():
            if how:
                notes.append(f"{key}: {value!r} does not exist relative to {base}; read {how}")
            return cand
    return resolve(base, value)


def read_names(root: Path) -> tuple[list[str], dict, Path]:
    """Class names (in id order), the yaml (or obj.data) document, and the dataset folder."""
    names, doc, base, _, _ = _read_names(root)
    return names, doc, base


def _read_names(root: Path) -> tuple[list[str], dict, Path, Path | None, list[str]]:
    notes: list[str] = []
    yml = find_yaml(root)
    if yml is None:
        folder = root if root.is_dir() else root.parent
        dark = find_darknet(root)
        if dark is not None:
            return _read_darknet(dark, notes)
        txt = next((folder / n for n in NAME_FILES if (folder / n).is_file()), None)
        if txt is not None:
            names = [ln for ln in _read_lines(txt) if ln]
            if not names:
                raise InputError(f"{txt}: no class names (one a line)")
            return names, {}, folder, txt, notes
        raise InputError(f"no YOLO data.yaml (or classes.txt, obj.names, obj.data) in {root}")
    try:
        doc = safe_load_yaml(yml.read_text(encoding="utf-8")) or {}
    except UnsafeYAMLError as exc:
        raise InputError(f"{yml}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{yml}: malformed YAML: {yaml_error_line(exc)}") from None
    except UnicodeDecodeError:
        raise InputError(f"{yml}: not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{yml}: cannot be read: {exc.strerror or exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{yml}: expected a mapping with 'names' (and train/val paths)")
    names = doc.get("names")
    if isinstance(names, dict):
        try:
            names = [str(names[k]) for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise InputError(f"{yml}: 'names' keys must be class ids 0..N-1") from None
    if isinstance(names, str):  # a names file (older YOLOv5 yamls)
        f = resolve(yml.parent, names)
        names = [ln for ln in _read_lines(f) if ln] if f is not None and f.is_file() else None
    if not isinstance(names, list) or not names:
        raise InputError(f"{yml}: needs a 'names' list or mapping of class names")
    base = yml.parent
    if isinstance(doc.get("path"), str) and doc["path"].strip():
        p = Path(os.path.expanduser(doc["path"].strip()))
        q = p if p.is_absolute() else base / p
        if q.is_dir():
            base = q
        else:
            notes.append(f"data.yaml path: {doc['path']!r} is not a folder (relative to {yml.parent}); split "
                         "paths resolved from the yaml's folder")
    return [str(n) for n in names], doc, base, yml, notes


def _read_darknet(dark: Path, notes: list[str]) -> tuple[list[str], dict, Path, Path | None, list[str]]:
    base = dark.parent
    doc: dict = {}
    names_file = dark if dark.suffix == ".names" else None
    if dark.suffix == ".data":
        for ln in _read_lines(dark):
            if "=" in ln and not ln.startswith("#"):
                k, v = (x.strip() for x in ln.split("=", 1))
                doc[k] = v
        if doc.get("names"):
            names_file = resolve(base, doc["names"])
            if names_file is None:
                names_file = next((base / n for n in ("obj.names", "classes.txt") if (base / n).is_file()), None)
        if doc.get("valid") and "val" not in doc:
            doc["val"] = doc["valid"]
        doc = {k: v for k, v in doc.items() if k in SPLIT_KEYS}
    if names_file is None or not names_file.is_file():
        raise InputError(f"{dark}: its class-name file ('names =') was not found")
    names = [ln for ln in _read_lines(names_file) if ln]
    if not names:
        raise InputError(f"{names_file}: no class names (one a line)")
    return names, doc, base, dark, notes


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
            cls_f = float(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except ValueError:
            warnings.append(f"bad box: line {ln} {line.strip()!r} is not numeric; left out")
            continue
        if not cls_f.is_integer():
            warnings.append(f"bad box: line {ln} {line.strip()!r}: class {parts[0]!r} is not an integer; left out")
            continue
        cls = int(cls_f)
        if len(parts) > 5:
            warnings.append(f"segment or extra values: line {ln} has {len(parts)} values; box from the first 5")
        label = names[cls] if 0 <= cls < num_classes else f"<class id {cls}>"
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        labels.append(label)
    return boxes, labels, warnings


def label_path(img: Path) -> Path:
    """Where Ultralytics looks for an image's label: the last ``images`` folder -> ``labels``;
    beside the image when its path has no ``images`` folder (Darknet)."""
    parts = img.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")
    return img.with_suffix(".txt")


def _label_for(img: Path) -> Path | None:
    lp = label_path(img)
    if lp.is_file():
        return lp
    beside = img.with_suffix(".txt")
    return beside if beside.is_file() else None


def _label_root(images_root: Path) -> Path:
    return images_root.parent / "labels" if images_root.name == "images" else images_root


def _from_entry(base: Path, yaml_dir: Path, value: str, key: str, notes: list[str],
                problems: list[tuple[str, str]], list_files: set[Path]) -> tuple[list[Path], list[Path]] | None:
    """(images, image folders) of one data.yaml / obj.data split entry, None when it does not resolve."""
    p = resolve_split(base, yaml_dir, value, notes, key)
    if p is None:
        return None
    if p.is_dir():
        return list_images(p, recursive=True), [p]
    if p.suffix.lower() == ".txt":  # an image list
        list_files.add(safe_resolve(p))
        out: list[Path] = []
        for line in _read_lines(p):
            if not line or line.startswith("#"):
                continue
            img = resolve(p.parent, line) or resolve(base, line)
            if img is None:
                problems.append((str(p), f"missing image: {line!r} listed for {key} does not exist"))
                continue
            out.append(img)
        return out, sorted({i.parent for i in out})
    if looks_like_image(p):
        return [p], [p.parent]
    return None


def _declared_splits(doc: dict) -> dict[str, object]:
    """The split entries of data.yaml by split name (``valid:``, ``validation:`` -> ``val``; a
    split named twice keeps every path)."""
    found: dict[str, list] = {}
    for k, v in doc.items():
        if v and str(k).lower() in SPLIT_KEYS + ("valid", "validation"):
            found.setdefault(split_name(str(k)), []).append(v)
    return {k: vs[0] if len(vs) == 1 else [x for v in vs for x in (v if isinstance(v, (list, tuple)) else [v])]
            for k in SPLIT_KEYS for vs in [found.get(k)] if vs}


def _discover(base: Path) -> list[tuple[Path, str | None]]:
    """(images folder, split or None) of the layouts that need no data.yaml entries."""
    images = base / "images"
    if images.is_dir():
        return [(images, None)]
    found = [(d / "images", split_name(d.name)) for d in sorted(base.iterdir())
             if d.is_dir() and (d / "images").is_dir()]
    if found:
        return found
    # Darknet: images with their .txt beside them, in the folder itself or in sub-folders
    dirs = sorted({p.parent for p in list_images(base, recursive=True)})
    return [(d, None) for d in dirs]


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


class LabelFileTooLarge(Exception):
    """A label file over ``max_label_file_bytes`` or ``max_label_file_lines`` (its message says which)."""


def read_label_file(lp: Path, limits: ImportLimits) -> str:
    """The text of a label file, refused (:class:`LabelFileTooLarge`) before it is read when it is
    larger than ``max_label_file_bytes``, and before it is parsed when it has more than
    ``max_label_file_lines`` lines."""
    size = lp.stat().st_size
    if size > limits.max_label_file_bytes:
        raise LabelFileTooLarge(over_cap(f"label file too large: {lp.name} has {size:,} bytes",
                                         "max_label_file_bytes", limits.max_label_file_bytes))
    with open(lp, "rb") as fh:  # never more than the cap, even if the file grows meanwhile
        data = fh.read(limits.max_label_file_bytes + 1)
    if len(data) > limits.max_label_file_bytes:
        raise LabelFileTooLarge(over_cap(f"label file too large: {lp.name} has more than {len(data) - 1:,} bytes",
                                         "max_label_file_bytes", limits.max_label_file_bytes))
    text = data.decode("utf-8")
    # as str.splitlines counts them (\r\n is one break), without making the list
    breaks = sum(text.count(c) for c in _LINE_BREAKS) - text.count("\r\n")
    lines = breaks + (1 if text and text[-1] not in _LINE_BREAKS else 0)
    if lines > limits.max_label_file_lines:
        raise LabelFileTooLarge(over_cap(f"label file too long: {lp.name} has {lines:,} lines",
                                         "max_label_file_lines", limits.max_label_file_lines))
    return text


def parse(root: Path, opts: ImportOptions | None = None) -> ParseResult:
    caps = (opts or ImportOptions()).caps
    names, doc, base, names_file, notes = _read_names(root)
    problems: list[tuple[str, str]] = []
    list_files: set[Path] = {names_file.resolve()} if names_file is not None else set()
    split_of: dict[Path, str] = {}
    image_dirs: list[tuple[Path, str | None]] = []
    imgs: list[Path] = []
    declared = _declared_splits(doc)
    yaml_dir = names_file.parent if names_file is not None else base
    unresolved: list[tuple[str, str]] = []
    for key, val in declared.items():
        entries = [val] if isinstance(val, str) else list(val) if isinstance(val, (list, tuple)) else []
        for v in entries:
            got = _from_entry(base, yaml_dir, str(v), key, notes, problems, list_files)
            if got is None:
                unresolved.append((key, str(v)))
                continue
            for img in got[0]:
                r = safe_resolve(img)
                if r in split_of and split_of[r] != key:
                    # one folder under two keys (an export with no val images names its train folder
                    # as val too, as Ultralytics needs both): the key its folder is named after wins
                    if split_name(img.parent.name) == key:
                        split_of[r] = key
                    continue
                split_of[r] = key
                imgs.append(img)
            image_dirs += [(d, key) for d in got[1]]
    # images of the dataset folder outside the declared splits: not part of it
    inside = {safe_resolve(i) for i in imgs}
    stray = [p for d, _ in _discover(base) for p in list_images(d, recursive=d.name == "images")
             if safe_resolve(p) not in inside] if declared and base.is_dir() else []
    if unresolved and stray and names_file is not None and names_file.suffix in (".yaml", ".yml"):
        # a split named but not found while images lie outside the splits found: they would lose their split
        key, v = unresolved[0]
        raise InputError(f"{names_file}: {key}: {v!r} could not be resolved (tried relative to {base}"
                         + (f" and {yaml_dir}" if yaml_dir != base else "") + ", without '../' and with "
                         f"valid/val swapped), and {len(stray)} image(s) of the folder are in no split found "
                         f"(first: {stray[0]}): fix the path in data.yaml")
    for key, v in unresolved:
        notes.append(f"{key}: {v!r} not found (relative to {base}); no {key} split imported")
    if not imgs:
        image_dirs = _discover(base) if base.is_dir() else []
        for d, split in image_dirs:
            for img in list_images(d, recursive=d.name == "images"):
                if split is None and d.name == "images" and img.parent != d:
                    sp = split_name(img.relative_to(d).parts[0])
                else:
                    sp = split
                if sp is not None:
                    split_of.setdefault(safe_resolve(img), sp)
                imgs.append(img)
    elif stray:
        notes.append(f"{len(stray)} image file(s) in {base} are in none of the data.yaml splits "
                     f"({', '.join(declared)}) and were not imported (first: {stray[0]})")
    if not imgs:
        raise InputError(
            f"no YOLO images in {base}: expected data.yaml train/val paths, images/ + labels/, "
            "split folders (train/images + train/labels, ...) or Darknet images with their .txt beside them")

    out: list[RawImage] = []
    seen: set[Path] = set()
    used_by: dict[Path, Path] = {}
    for img in imgs:
        key = safe_resolve(img)
        if key in seen:
            continue
        seen.add(key)
        raw = RawImage(image_path=img, source=str(img), coords="relative", split=split_of.get(safe_resolve(img)))
        lp = _label_for(img)
        if lp is not None:
            used_by.setdefault(lp, img)
            try:
                text = read_label_file(lp, caps)
            except (OSError, UnicodeDecodeError) as exc:
                raw.errors.append(f"unreadable annotation: {lp.name}: {exc}")
                out.append(raw)
                continue
            except LabelFileTooLarge as exc:
                raw.errors.append(str(exc))
                out.append(raw)
                continue
            raw.boxes, raw.labels, raw.warnings = parse_label_text(text, len(names), names)
            if len(raw.boxes) > caps.max_boxes_per_image:
                raw.errors.append(too_many_boxes(len(raw.boxes), caps))
                raw.boxes, raw.labels, raw.warnings = [], [], []
            if used_by[lp] != img:
                raw.warnings.insert(0, f"shared label file: {lp.name} is also the label of {used_by[lp].name} "
                                       "(two images of one stem)")
        else:
            raw.warnings.append("no label file: imported as an image without defects")
        out.append(raw)
    if not used_by and not any(_label_root(d).is_dir() and _label_root(d) != d for d, _ in image_dirs):
        raise InputError(f"no YOLO label files for the {len(out)} image(s) in {base}: expected labels/ beside "
                         "images/ (train/labels beside train/images) or a .txt beside each image")
    matched = {safe_resolve(p) for p in used_by}
    label_dirs = sorted({_label_root(d) for d, _ in image_dirs if _label_root(d).is_dir()})
    stray_labels: set[Path] = set()
    for d in label_dirs:
        rec = d.name == "labels"
        for lp in (d.rglob("*.txt") if rec else d.glob("*.txt")):
            r = lp.resolve()
            if r in matched or r in list_files or lp.name in NAME_FILES or r in stray_labels:
                continue
            stray_labels.add(r)
            problems.append((str(lp), "missing image: label file has no image"))
    result = ParseResult(images=out, classes=names, closed=True, problems=problems, notes=notes)
    result.settings["yolo_layout"] = (
        {k: str(v) for k, v in declared.items()} if declared and split_of else "discovered")
    return result


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
