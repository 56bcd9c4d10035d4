"""Pascal VOC XML, including the NEU-DET variant.

Layout: a folder of XMLs (``annotations/``, ``Annotations/``, ``labels/`` or ``xml/``) and a folder
of images (``images/``, ``JPEGImages/`` or ``data/``), or both in one folder. An XML is matched to
its image by file stem, which copes with the NEU-DET XMLs whose ``<filename>`` has no extension.

VOC coordinates are 1-based and inclusive: ``xmin=1, xmax=10`` covers the first ten pixel
columns, which is ``x1=0, x2=10`` in our convention. Boxes are declared in the frame of
``<size>``; when the real image differs (NEU-DET's 200x200 XMLs for 416x416 JPEGs) they are
rescaled to it by :func:`~cvcurate.formats.base.finalize` and the rescale is reported.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import InputError
from ..types import LabelSet
from .base import ParseResult, RawImage, list_images

ANNOTATION_DIRS = ("annotations", "Annotations", "labels", "xml", "lable", "label")
IMAGE_DIRS = ("images", "JPEGImages", "data", "imgs")


def parse_xml_text(text: str, source: str = "<xml>") -> RawImage:
    """Parse one VOC XML document into a :class:`RawImage` (image path not resolved)."""
    im = RawImage(image_path=None, source=source)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        im.errors.append(f"malformed XML: {exc}")
        return im
    if root.tag != "annotation":
        im.errors.append(f"malformed XML: root element is <{root.tag}>, expected <annotation>")
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
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name:
            im.warnings.append(f"bad box: object {k} has no <name>; left out")
            continue
        if bb is None:
            im.warnings.append(f"bad box: object {k} ({name}) has no <bndbox>; left out")
            continue
        try:
            xmin, ymin, xmax, ymax = (float(bb.findtext(t, "nan")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            im.warnings.append(f"bad box: object {k} ({name}) has non-numeric coordinates; left out")
            continue
        if any(v != v for v in (xmin, ymin, xmax, ymax)):
            im.warnings.append(f"bad box: object {k} ({name}) lacks a coordinate; left out")
            continue
        im.boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        im.labels.append(name)
    im.declared_name = (root.findtext("filename") or "").strip()
    return im


def find_dirs(root: Path) -> tuple[Path, Path]:
    """Return (annotation folder, image folder) of a VOC-style dataset."""
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    ann = next((root / d for d in ANNOTATION_DIRS if (root / d).is_dir()), None)
    if ann is None and any(root.glob("*.xml")):
        ann = root
    if ann is None:
        raise InputError(
            f"no VOC annotations in {root}: expected XML files in one of "
            f"{', '.join(ANNOTATION_DIRS)}/ or in the folder itself"
        )
    img = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if img is None:
        img = root
    return ann, img


def parse(root: Path) -> ParseResult:
    ann_dir, img_dir = find_dirs(root)
    xmls = sorted(ann_dir.glob("*.xml"))
    images = list_images(img_dir, recursive=img_dir != root)
    return match_xmls(xmls, images)


def match_xmls(xmls: list[Path], images: list[Path]) -> ParseResult:
    """Parse XMLs and match each to the image with its stem (or its ``<filename>``'s stem)."""
    by_stem: dict[str, Path] = {}
    problems: list[tuple[str, str]] = []
    for p in images:
        if p.stem in by_stem:
            problems.append((str(p), f"duplicate image stem: {p.stem} also at {by_stem[p.stem]}; "
                             "only the first is matched to its XML"))
            continue
        by_stem[p.stem] = p
    out: list[RawImage] = []
    used: set[str] = set()
    for x in xmls:
        try:
            text = x.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems.append((str(x), f"unreadable annotation: {exc.strerror}"))
            continue
        im = parse_xml_text(text, source=str(x))
        path = by_stem.get(x.stem)
        fname = im.declared_name
        if path is None and fname:
            path = by_stem.get(Path(fname).stem)
        if path is None:
            problems.append((str(x), "missing image: no image file with this XML's stem"
                             + (f" or filename {fname!r}" if fname else "")))
            continue
        used.add(path.stem)
        im.image_path = path
        if fname and fname != path.name:
            im.warnings.append(f"filename mismatch: XML names {fname!r}, matched to {path.name} by stem")
        out.append(im)
    for stem, p in by_stem.items():
        if stem not in used:
            out.append(RawImage(image_path=p, source=str(p), unlabeled=True))
    return ParseResult(images=out, problems=problems)


def to_xml_text(filename: str, width: int, height: int, names: list[str],
                xyxy: list[tuple[float, float, float, float]], depth: int = 3) -> str:
    """One VOC XML document; boxes are converted to 1-based inclusive integers."""
    objs = []
    for name, (x1, y1, x2, y2) in zip(names, xyxy):
        objs.append(
            "\t<object>\n"
            f"\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            "\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
            f"\t\t\t<xmin>{int(round(x1)) + 1}</xmin>\n\t\t\t<ymin>{int(round(y1)) + 1}</ymin>\n"
            f"\t\t\t<xmax>{int(round(x2))}</xmax>\n\t\t\t<ymax>{int(round(y2))}</ymax>\n"
            "\t\t</bndbox>\n\t</object>\n"
        )
    return (
        f"<annotation>\n\t<folder>images</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>{depth}</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{''.join(objs)}</annotation>\n"
    )


def write(labels: LabelSet, ann_dir: Path, depth: int = 3) -> int:
    """Write one XML per record into ``ann_dir`` (named by image stem). Returns the count.

    ``depth`` is the channel count the XML declares (1 for grayscale images)."""
    ann_dir = Path(ann_dir)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for rec in labels.records:
        p = Path(rec.filepath)
        text = to_xml_text(p.name, rec.width, rec.height, [labels.classes[c] for c in rec.gt.class_id],
                           [tuple(b) for b in rec.gt.xyxy], depth=depth)
        (ann_dir / f"{p.stem}.xml").write_text(text)
    return len(labels.records)
