"""Pascal VOC XML, including the NEU-DET variant.

Layouts: a folder of XMLs (``annotations/``, ``Annotations/``, ``labels/`` or ``xml/``) and a folder
of images (``images/``, ``JPEGImages/`` or ``data/``; FiftyOne's own VOC layout is ``data/`` +
``labels/``), or both in one folder; or split folders that are each such a dataset (Roboflow's
``train/``, ``valid/``, ``test/`` with XMLs beside the images; ``VOCdevkit/VOC2007``). An XML is
matched to its image by file stem (its ``<filename>`` decides between two images of one stem),
which copes with the NEU-DET XMLs whose ``<filename>`` has no extension. The split comes from
``ImageSets/Main/<split>.txt`` when present, else from the split folder's name.

Coordinates: ``origin`` 0 reads ``xmin..xmax`` as written (``x1=xmin, x2=xmax``), as FiftyOne's
and Datumaro's VOC readers do and Roboflow and CVAT write; ``origin`` 1 reads them as the VOC
devkit's 1-based inclusive pixels (``xmin=1, xmax=10`` covers the first ten pixel columns:
``x1=0, x2=10``), as detectron2 does; ``auto`` decides from the data (:func:`resolve_origin`).
A folder written by ``cvcurate export --format voc`` says the origin it was written with in
``cvcurate_voc.json`` (:func:`export_origin`), and is read with that origin, whatever ``origin``
asks.
Boxes are declared in the frame of ``<size>``; when the real image differs (NEU-DET's 200x200
XMLs for 416x416 JPEGs) they are rescaled to it by :func:`~cvcurate.formats.base.finalize` and
the rescale is reported.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import InputError
from ..types import LabelSet
from ..config import ImportLimits
from .base import ImportOptions, ParseResult, RawImage, list_images, split_name, too_many_boxes

ANNOTATION_DIRS = ("annotations", "Annotations", "labels", "xml", "lable", "label")
IMAGE_DIRS = ("images", "JPEGImages", "data", "imgs")
DEFAULT_ORIGIN = 0  # agrees with fo.Dataset.from_dir(..., dataset_type=fo.types.VOCDetectionDataset)
EXPORT_NOTE = "cvcurate_voc.json"  # written by cvcurate export --format voc: the origin it used
EXPORT_NOTE_MAX_BYTES = 64 * 1024


def export_origin(root: Path) -> int | None:
    """The origin (0 or 1) a cvcurate VOC export in ``root`` was written with, from its
    ``cvcurate_voc.json``; None when there is none, or it is not one cvcurate wrote."""
    path = Path(root) / EXPORT_NOTE
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > EXPORT_NOTE_MAX_BYTES:
            return None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    origin = doc.get("voc_origin") if isinstance(doc, dict) else None
    return origin if origin in (0, 1) and not isinstance(origin, bool) else None


def parse_xml_text(text: str, source: str = "<xml>", origin: int | str = DEFAULT_ORIGIN,
                   limits: ImportLimits | None = None) -> RawImage:
    """Parse one VOC XML document into a :class:`RawImage` (image path not resolved).

    ``origin`` 0: boxes as written; 1: ``xmin``/``ymin`` minus 1 (1-based inclusive files).
    More ``<object>`` than ``limits.max_boxes_per_image``: an error, no box read. Entities are
    never fetched (no external DTD or entity) and expat refuses entity expansion bombs, so a
    hostile XML is a ``malformed XML`` error of its image."""
    im = RawImage(image_path=None, source=source)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        im.errors.append(f"malformed XML: {exc}")
        return im
    if root.tag != "annotation":
        im.errors.append(f"malformed XML: root element is <{root.tag}>, expected <annotation>")
        return im
    im.declared_name = (root.findtext("filename") or "").strip()
    limits = limits or ImportLimits()
    n_objects = sum(1 for _ in root.iter("object"))
    if n_objects > limits.max_boxes_per_image:
        im.errors.append(too_many_boxes(n_objects, limits))
        return im
    size = root.find("size")
    if size is not None:
        try:
            w = int(float(size.findtext("width", "0")))
            h = int(float(size.findtext("height", "0")))
            if w > 0 and h > 0:
                im.frame = (w, h)
        except ValueError:
            im.warnings.append("bad declared size: <size> is not numeric; real size used")
    for k, obj in enumerate(root.iter("object")):
        name = obj.findtext("name") or ""
        bb = obj.find("bndbox")
        if not name.strip():
            im.warnings.append(f"bad box: object {k} has no <name>; left out")
            continue
        if bb is None:
            im.warnings.append(f"bad box: object {k} ({name.strip()}) has no <bndbox>; left out")
            continue
        try:
            xmin, ymin, xmax, ymax = (float(bb.findtext(t, "nan")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            im.warnings.append(f"bad box: object {k} ({name.strip()}) has non-numeric coordinates; left out")
            continue
        if any(v != v for v in (xmin, ymin, xmax, ymax)):
            im.warnings.append(f"bad box: object {k} ({name.strip()}) lacks a coordinate; left out")
            continue
        im.boxes.append((xmin, ymin, xmax, ymax))
        im.labels.append(name)  # stripped (and reported) by the class-name policy of finalize
    if int(origin) == 1:
        _shift([im])
    return im


def _shift(images: list[RawImage]) -> None:
    for im in images:
        im.boxes = [(x1 - 1.0, y1 - 1.0, x2, y2) for x1, y1, x2, y2 in im.boxes]


def resolve_origin(images: list[RawImage], requested: str | int = DEFAULT_ORIGIN) -> tuple[int, str]:
    """The origin to read boxes written as-is (origin 0) with, and a note saying why.

    ``auto``: 0 when any ``xmin``/``ymin`` is below 1 (a 1-based file cannot hold a 0, so auto
    never calls a coordinate 0 "outside"); 1 when none is and some box starts at 1 (the devkit
    writes 1 for a box at the top or left edge); 0 when no box reaches the top or left edge
    (no evidence either way: the default, FiftyOne's reading)."""
    mins = [min(b[0], b[1]) for im in images for b in im.boxes]
    below1 = sum(1 for m in mins if m < 1)
    at1 = sum(1 for m in mins if m == 1)
    requested = str(requested)
    if requested == "auto":
        if below1:
            return 0, (f"VOC origin auto -> 0: {below1} box(es) have xmin or ymin below 1, which only "
                       "0-based files write; boxes read as written (x1 = xmin, x2 = xmax)")
        if at1:
            return 1, (f"VOC origin auto -> 1: no xmin/ymin is below 1 and {at1} box(es) start at 1 (the "
                       "VOC devkit's 1-based inclusive pixels); x1 = xmin - 1, x2 = xmax")
        return DEFAULT_ORIGIN, ("VOC origin auto -> 0: no box reaches the top or left edge, so the files "
                                "do not tell; boxes read as written (x1 = xmin), like FiftyOne's VOC importer")
    origin = int(requested)
    if origin == 1:
        note = "VOC origin 1: coordinates read as 1-based inclusive pixels (x1 = xmin - 1, x2 = xmax)"
        if below1:
            note += (f"; {below1} box(es) have xmin or ymin below 1, which a 1-based file cannot hold: "
                     "--voc-origin 0 or auto reads them as written")
        return 1, note
    note = ("VOC origin 0: coordinates read as written (x1 = xmin, x2 = xmax), like FiftyOne's VOC "
            "importer")
    if not below1 and at1:
        note += (f"; no xmin/ymin is below 1 and {at1} box(es) start at 1, as in 1-based (VOC devkit) "
                 "files: --voc-origin 1 (or auto) reads them 1 px further up and left")
    return 0, note


def apply_origin(result: ParseResult, requested: str | int = DEFAULT_ORIGIN) -> ParseResult:
    """Resolve the origin over all images of one import, shift the boxes, note and record it."""
    origin, note = resolve_origin(result.images, requested)
    if origin == 1:
        _shift(result.images)
    result.notes.append(note)
    result.settings["voc_origin"] = origin
    result.settings["voc_origin_requested"] = str(requested)
    return result


def _xml_dir(root: Path) -> Path | None:
    ann = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir() and any((root / d).glob("*.xml"))),
               None)
    if ann is None and any(root.glob("*.xml")):
        ann = root
    return ann


def find_dirs(root: Path) -> tuple[Path, Path]:
    """Return (annotation folder, image folder) of a VOC-style dataset."""
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    ann = _xml_dir(root)
    if ann is None:
        ann = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir()), None)
    if ann is None:
        raise InputError(
            f"no VOC annotations in {root}: expected XML files in one of "
            f"{', '.join(ANNOTATION_DIRS)}/, in the folder itself or in split folders (train/, valid/, ...)"
        )
    img = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if img is None:
        img = root
    return ann, img


def sub_roots(root: Path) -> list[Path]:
    """Folders below ``root`` that are VOC datasets themselves (split folders, VOCdevkit/VOC2007),
    used when ``root`` holds no XMLs of its own."""
    if not root.is_dir() or _xml_dir(root) is not None:
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and _xml_dir(d) is not None)


def parse(root: Path, opts: ImportOptions | None = None) -> ParseResult:
    opts = opts or ImportOptions()
    subs = sub_roots(root)
    if not subs:
        written = export_origin(root)
        if written is None:
            return apply_origin(_parse_one(root, split=None, limits=opts.caps), opts.voc_origin)
        result = apply_origin(_parse_one(root, split=None, limits=opts.caps), written)
        result.notes[-1] += (f" (from {EXPORT_NOTE}: a cvcurate export written with origin {written}, read "
                             "with it whatever --voc-origin says)")
        result.settings["voc_origin_requested"] = opts.voc_origin
        result.settings["voc_origin_from"] = EXPORT_NOTE
        return result
    merged = ParseResult(images=[])
    for sub in subs:
        name = split_name(sub.name)
        is_split = name != sub.name or name.lower() in ("train", "val", "test", "trainval")
        part = _parse_one(sub, split=name if is_split else None, limits=opts.caps)
        merged.images += part.images
        merged.problems += part.problems
        merged.notes += part.notes
    merged.notes.insert(0, f"VOC split folders: {', '.join(d.name for d in subs)}")
    loose = [p for p in list_images(root)]
    for p in loose:  # images beside the split folders belong to none of them: say so
        merged.images.append(RawImage(image_path=p, source=str(p), unlabeled=True))
    return apply_origin(merged, opts.voc_origin)


def _parse_one(root: Path, split: str | None, limits: ImportLimits | None = None) -> ParseResult:
    ann_dir, img_dir = find_dirs(root)
    xmls = sorted(ann_dir.glob("*.xml"))
    images = list_images(img_dir, recursive=img_dir != root)
    result = match_xmls(xmls, images, limits)
    for im in result.images:
        im.split = split
    image_sets(root, result)
    return result


def image_sets(root: Path, result: ParseResult) -> None:
    """Splits from ``ImageSets/Main/<split>.txt`` (VOC2007/2012 layout), when present.

    Class lists (``<class>_<split>.txt``) are ignored. An id in train/val/test and in ``trainval``
    takes the specific split; an id in two specific lists is warned about and takes the first of
    train, val, test, then the others alphabetically."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        return
    lists = {}
    for p in sorted(main.glob("*.txt")):
        stem = p.stem
        if "_" in stem and split_name(stem.rsplit("_", 1)[1]) in ("train", "val", "test", "trainval"):
            continue  # <class>_<split>.txt
        try:
            ids = [ln.split()[0] for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()
                   if ln.strip()]
        except OSError as exc:
            result.problems.append((str(p), f"unreadable split list: {exc.strerror}"))
            continue
        lists[stem] = ids
    if not lists:
        return
    rank = {"train": 0, "val": 1, "test": 2}
    order = sorted(lists, key=lambda s: (split_name(s) == "trainval", rank.get(split_name(s), 3), s))
    where: dict[str, list[str]] = {}
    for stem in order:
        for i in lists[stem]:
            where.setdefault(i, []).append(stem)
    known: set[str] = set()
    unlisted = 0
    for im in result.images:
        keys = [Path(im.source).stem] + ([im.image_path.stem] if im.image_path is not None else [])
        key = next((k for k in keys if k in where), None)
        known.update(keys)
        if key is None:
            unlisted += 1
            continue
        found = where[key]
        im.split = split_name(found[0])
        specific = [s for s in found if split_name(s) != "trainval"]
        if len(specific) > 1:
            im.warnings.append(f"split conflict: {key} is in ImageSets/Main {', '.join(f + '.txt' for f in specific)}; "
                               f"split {im.split}")
    result.notes.append("VOC splits from ImageSets/Main: " + ", ".join(
        f"{s}.txt ({len(lists[s])})" for s in order))
    if unlisted:
        result.notes.append(f"{unlisted} image(s) of {root} are in no ImageSets/Main list: no split")
    for stem in order:
        missing = [i for i in lists[stem] if i not in known]
        if missing:
            result.problems.append((str(main / f"{stem}.txt"), f"missing image: {len(missing)} listed id(s) have "
                                    f"no annotation or image (first: {', '.join(missing[:3])})"))


def match_xmls(xmls: list[Path], images: list[Path], limits: ImportLimits | None = None) -> ParseResult:
    """Parse XMLs (boxes as written, origin 0) and match each to the image with its stem (or its
    ``<filename>``'s stem).

    Two images of one stem (``a.jpg`` and ``a.png``): the XML's ``<filename>`` picks one, else the
    first; the other is rejected (``duplicate image stem``), never left out of the counts."""
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        by_stem.setdefault(p.stem, []).append(p)
    problems: list[tuple[str, str]] = []
    out: list[RawImage] = []
    used: dict[Path, str] = {}
    for x in xmls:
        try:
            text = x.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append((str(x), f"unreadable annotation: {exc.strerror}"))
            continue
        im = parse_xml_text(text, source=str(x), origin=0, limits=limits)
        fname = im.declared_name
        cands = by_stem.get(x.stem) or (by_stem.get(Path(fname).stem) if fname else None)
        if not cands:
            problems.append((str(x), "missing image: no image file with this XML's stem"
                             + (f" or filename {fname!r}" if fname else "")))
            continue
        path = next((c for c in cands if fname and c.name == Path(fname).name), cands[0])
        used.setdefault(path, x.name)
        im.image_path = path
        if fname and fname != path.name:
            im.warnings.append(f"filename mismatch: XML names {fname!r}, matched to {path.name} by stem")
        out.append(im)
    for stem, paths in by_stem.items():
        taken = [p for p in paths if p in used]
        for p in paths:
            if p in used:
                continue
            if taken:
                raw = RawImage(image_path=p, source=str(p))
                raw.errors.append(f"duplicate image stem: {p.name} has the stem of {taken[0].name}, which "
                                  f"{used[taken[0]]} describes; not imported (one annotation per stem)")
                out.append(raw)
            else:
                out.append(RawImage(image_path=p, source=str(p), unlabeled=True))
    return ParseResult(images=out, problems=problems)


def to_xml_text(filename: str, width: int, height: int, names: list[str],
                xyxy: list[tuple[float, float, float, float]], depth: int = 3,
                origin: int = DEFAULT_ORIGIN) -> str:
    """One VOC XML document; boxes rounded to integers, written in ``origin`` (0: as they are,
    what the default import reads back exactly; 1: 1-based inclusive, ``xmin = x1 + 1``)."""
    objs = []
    for name, (x1, y1, x2, y2) in zip(names, xyxy):
        objs.append(
            "\t<object>\n"
            f"\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            "\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
            f"\t\t\t<xmin>{int(round(x1)) + origin}</xmin>\n\t\t\t<ymin>{int(round(y1)) + origin}</ymin>\n"
            f"\t\t\t<xmax>{int(round(x2))}</xmax>\n\t\t\t<ymax>{int(round(y2))}</ymax>\n"
            "\t\t</bndbox>\n\t</object>\n"
        )
    return (
        f"<annotation>\n\t<folder>images</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>{depth}</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{''.join(objs)}</annotation>\n"
    )


def write(labels: LabelSet, ann_dir: Path, depth: int = 3, origin: int = DEFAULT_ORIGIN) -> int:
    """Write one XML per record into ``ann_dir`` (named by image stem). Returns the count.

    ``depth`` is the channel count the XML declares (1 for grayscale images); ``origin`` the
    coordinate convention (see :func:`to_xml_text`)."""
    ann_dir = Path(ann_dir)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for rec in labels.records:
        p = Path(rec.filepath)
        text = to_xml_text(p.name, rec.width, rec.height, [labels.classes[c] for c in rec.gt.class_id],
                           [tuple(b) for b in rec.gt.xyxy], depth=depth, origin=origin)
        (ann_dir / f"{p.stem}.xml").write_text(text)
    return len(labels.records)
