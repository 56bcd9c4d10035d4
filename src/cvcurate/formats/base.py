"""What every format shares: the parsed-but-unchecked image, image probing, and the one place
where boxes are rescaled, checked and turned into :class:`~cvcurate.types.ImageRecord`.

A format module only parses text into :class:`RawImage` items; :func:`finalize` does the rest,
so that every format reports the same problems in the same words.
"""

from __future__ import annotations

import contextlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..config import ImportLimits
from ..errors import InputError
from ..progress import track
from ..report import ImportReport
from ..types import Annotations, ImageRecord, LabelSet

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class RawImage:
    """One image as a format file describes it, before any check.

    ``boxes`` are xyxy in ``coords`` units: ``"pixel"`` (in the frame ``frame`` = (w, h) the
    file declares, or the real image size when ``frame`` is None) or ``"relative"`` (0..1).
    """

    image_path: Path | None
    source: str
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    frame: tuple[int, int] | None = None
    coords: str = "pixel"
    split: str | None = None
    declared_name: str = ""
    unlabeled: bool = False  # the image has no annotation file at all
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class ParseResult:
    images: list[RawImage]
    classes: list[str] | None = None  # class list the format declares, in id order
    closed: bool = False  # True: a label outside ``classes`` is an unknown class
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    settings: dict[str, Any] = field(default_factory=dict)  # choices made (recorded in the history)


VOC_ORIGINS = ("0", "1", "auto")


@dataclass(frozen=True)
class ImportOptions:
    """The choices of one import besides the path (``cvcurate import``'s options).

    ``format``: a key of :data:`cvcurate.formats.FORMATS`; None: detected. ``split``: the split of
    every image; None: the one the files or folders say. ``classes``: the only accepted class names,
    in id order (a box of another class is left out and reported); None: the format's declared
    classes, then new names, sorted. ``keep_unlabeled``: import images without an annotation file
    as negatives (with a warning). ``voc_origin`` (VOC, GC10): how ``xmin..xmax`` are read: ``"0"``
    as written (``x1=xmin, x2=xmax``, like FiftyOne's and Datumaro's VOC readers, Roboflow and CVAT
    exports), ``"1"`` the VOC devkit's 1-based inclusive pixels (``x1=xmin-1, x2=xmax``, like
    detectron2), ``"auto"`` decided from the data (:func:`cvcurate.formats.voc.resolve_origin`).
    ``include_crowd`` (COCO): import ``iscrowd: 1`` boxes as ordinary boxes (default: left out).
    ``class_map`` (a mapping or a YAML/JSON file) and ``merge_case``: the class-name policy of
    :mod:`cvcurate.formats.classes`. ``limits``: the caps on one file
    (:class:`~cvcurate.config.ImportLimits`; an image over a cap is rejected); None:
    ``configs/import.yaml`` in :func:`cvcurate.formats.load`, else the built-in defaults (:attr:`caps`).
    """

    format: str | None = None
    split: str | None = None
    classes: tuple[str, ...] | None = None
    keep_unlabeled: bool = False
    voc_origin: str = "0"
    include_crowd: bool = False
    class_map: Mapping[str, str] | str | Path | None = None
    merge_case: bool = True
    limits: ImportLimits | None = None

    def __post_init__(self) -> None:
        voc_origin = str(self.voc_origin)
        if voc_origin not in VOC_ORIGINS:
            raise InputError(f"--voc-origin must be one of {', '.join(VOC_ORIGINS)}, got {voc_origin!r}")
        object.__setattr__(self, "voc_origin", voc_origin)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def caps(self) -> ImportLimits:
        """The caps the parsers apply: ``limits``, or the built-in defaults when it is None."""
        return self.limits if self.limits is not None else ImportLimits()


# split names that folders and file names spell in several ways
SPLIT_ALIASES = {"valid": "val", "validation": "val", "training": "train", "testing": "test"}


def split_name(name: str) -> str:
    """The split a folder or file name stands for: ``valid`` -> ``val``, ``train2017`` -> ``train``."""
    import re

    n = name.strip()
    low = n.lower()
    m = re.fullmatch(r"(train|val|valid|validation|test|trainval|training|testing)[_-]?(19|20)\d\d", low)
    if m:
        low = m.group(1)
    elif low not in SPLIT_ALIASES and low not in ("train", "val", "test", "trainval"):
        return n
    return SPLIT_ALIASES.get(low, low)


class BadImage(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# caps on one file (ImportLimits), and reading JSON / YAML that may be hostile
# ---------------------------------------------------------------------------------------------
RAISE_HINT = "raise it with cvcurate import --config FILE (see configs/import.yaml)"


def over_cap(what: str, key: str, cap: int) -> str:
    """The message for a file over a cap of :class:`~cvcurate.config.ImportLimits`: what was
    found, the cap's name and value, and how to raise it."""
    return f"{what}, more than {key} {cap:,}: {RAISE_HINT}"


def too_many_boxes(n: int, limits: ImportLimits) -> str:
    return over_cap(f"too many boxes: {n:,} for this image", "max_boxes_per_image", limits.max_boxes_per_image)


_JSON_KEEP = b'"[]{}'
_JSON_DROP = bytes(b for b in range(256) if b not in _JSON_KEEP)


def json_depth_over(data: bytes | str, max_depth: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than ``max_depth``, found without
    parsing it (Python's JSON reader recurses per level: 200,000 levels end in RecursionError).

    Brackets inside strings do not count; a few vectorised passes, in chunks, over the quotes and
    brackets only, so that a file of hundreds of MB costs well under a second."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    if b"\\" in data:
        data = re.sub(rb"\\.", b"", data, flags=re.S)  # escapes out: every quote left opens or closes a string
    marks = data.translate(None, _JSON_DROP)
    depth, in_string, chunk = 0, 0, 1 << 22
    for start in range(0, len(marks), chunk):
        arr = np.frombuffer(marks, np.uint8, count=min(chunk, len(marks) - start), offset=start)
        quote = arr == ord('"')
        inside = np.bitwise_xor.accumulate(quote.view(np.uint8)) ^ in_string  # 1 inside a string
        in_string = int(inside[-1])
        brackets = arr[(inside == 0) & ~quote]
        if not len(brackets):
            continue
        levels = np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int32)) + depth
        if int(levels.max()) > max_depth:
            return True
        depth = int(levels[-1])
    return False


def load_json_text(data: bytes | str, source: str, max_depth: int, object_hook: Any = None) -> Any:
    """Parse JSON (UTF-8 bytes or text) that may be hostile: :class:`~cvcurate.errors.InputError`
    (one line) when it nests deeper than ``max_depth``, is not UTF-8 or is malformed.

    Pass the bytes without keeping a reference (``load_json_text(path.read_bytes(), ...)``): they
    are freed once decoded, so that a large file is in memory once, not twice."""
    import json

    if json_depth_over(data, max_depth):
        raise InputError(f"{source}: JSON nested deeper than {max_depth} levels (max_json_depth); not read: "
                         f"{RAISE_HINT}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise InputError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None
        del data
    else:
        text = data
    try:
        return json.loads(text, object_hook=object_hook)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:  # not reached with max_json_depth <= 500, but never a traceback
        raise InputError(f"{source}: JSON nested too deep for Python's JSON reader; not read") from None


def yaml_error_line(exc: Exception) -> str:
    """A YAML error in one line: its problem and where (PyYAML's own text spans several lines)."""
    problem = getattr(exc, "problem", None)
    if problem is None:
        return " ".join(str(exc).split())
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = getattr(exc, "context", None)
    return (f"{context}: " if context else "") + f"{problem}{where}"


def safe_resolve(p: Path) -> Path:
    """``p.resolve()``, or its absolute path for a symlink loop (which resolve() raises on)."""
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return p.absolute()


def looks_like_image(p: Path) -> bool:
    """A file (or a symlink, even a broken or looping one) with an image extension."""
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        return p.is_symlink() or p.is_file()
    except OSError:
        return False


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Every file that looks like an image, broken symlinks included (they are rejected later,
    never skipped silently)."""
    it: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if looks_like_image(p))


def probe_image(path: Path, max_pixels: int | None = None) -> tuple[int, int]:
    """Return (width, height) of an image, reading only its header and its end.

    Raises :class:`BadImage` with a readable reason for a missing, empty, unreadable or
    truncated file, and for an image of more than ``max_pixels`` pixels (a decompression bomb:
    a 30000x30000 PNG of a few hundred KB would need GB to decode). Truncation is caught by the
    end marker (JPEG EOI, PNG IEND), which costs one small read instead of decoding the whole image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if path.is_symlink():
            raise BadImage(f"broken symlink: points to {os.readlink(path)}, which does not exist") from None
        raise BadImage("image file not found") from None
    except OSError as exc:
        if path.is_symlink():
            raise BadImage(f"broken symlink: {exc.strerror} ({path.name} -> {os.readlink(path)})") from None
        raise BadImage(f"image file cannot be read: {exc.strerror}") from None
    if not path.is_file():
        raise BadImage("not a regular file")
    if size == 0:
        raise BadImage("image file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format
    except UnidentifiedImageError:
        raise BadImage("not a readable image (unknown or corrupt header)") from None
    except Image.DecompressionBombError as exc:  # PIL's own cap, when _pil_size_check_off is not in force
        raise BadImage(f"image too large: {exc}") from None
    except OSError as exc:
        raise BadImage(f"image file cannot be read: {exc}") from None
    if width <= 0 or height <= 0:
        raise BadImage(f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage(over_cap(f"image too large: {width}x{height} = {width * height:,} pixels",
                                "max_image_pixels", max_pixels))
    tail_len = min(size, 64)
    with open(path, "rb") as fh:
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
    if fmt == "JPEG" and b"\xff\xd9" not in tail.rstrip(b"\x00"):
        raise BadImage("JPEG is truncated (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise BadImage("PNG is truncated (no IEND chunk)")
    return int(width), int(height)


@contextlib.contextmanager
def _pil_size_check_off() -> Iterator[None]:
    """PIL's own decompression-bomb check off while only headers are read: it refuses images
    above 2 x 89M pixels whatever ``max_image_pixels`` says, and warns on stderr above 89M;
    :func:`probe_image` applies ``max_image_pixels`` itself, and decodes nothing."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _probe_all(paths: Sequence[Path | None], workers: int,
               max_pixels: int | None = None) -> Iterator[tuple[int, int] | str]:
    def one(p: Path | None) -> tuple[int, int] | str:
        if p is None:
            return "image file not found"
        try:
            return probe_image(p, max_pixels)
        except BadImage as exc:
            return str(exc)

    with _pil_size_check_off():
        if workers <= 1 or len(paths) < 64:
            yield from (one(p) for p in paths)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(one, paths)


def _fmt_box(b: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


def finalize(
    parsed: ParseResult,
    report: ImportReport,
    *,
    classes: Sequence[str] | None = None,
    split: str | None = None,
    keep_unlabeled: bool = False,
    class_map: Mapping[str, str] | None = None,
    merge_case: bool = True,
    workers: int | None = None,
    progress: bool = False,
    limits: ImportLimits | None = None,
) -> LabelSet:
    """Probe every image, rescale and check boxes, map class names, fill the report.

    ``classes``, ``split``, ``keep_unlabeled``, ``class_map`` (a mapping here) and ``merge_case``: as
    in :class:`ImportOptions` (whitespace is always stripped from class names).

    Boxes are kept exactly as written (rescaled to the real image size where the file declares
    another frame): a 3x1 px or a sub-pixel box stays so. Only a box without area (a side of 0, or
    negative) is reported as degenerate, and kept.

    ``limits``: an image larger than ``max_image_pixels`` or with more than
    ``max_boxes_per_image`` boxes is rejected (default: :class:`~cvcurate.config.ImportLimits`).
    """
    from .classes import class_renames, numeric_names_hint

    limits = limits or ImportLimits()
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    for im in parsed.images:  # the parsers stop early where they can; any format, whatever got here
        if len(im.boxes) > limits.max_boxes_per_image:
            im.errors.append(too_many_boxes(len(im.boxes), limits))
            im.boxes, im.labels = [], []
    for path, msg in parsed.problems:
        report.problem(path, msg)
    report.notes.extend(dict.fromkeys(parsed.notes))  # one note per thing, even from several files
    report.settings.update(parsed.settings)

    rename, class_notes = class_renames(
        parsed.classes, (lb for im in parsed.images for lb in im.labels), class_map=class_map,
        merge_case=merge_case, fixed=classes)
    report.notes.extend(class_notes)
    if class_map:
        # pairs, not a mapping: class names may hold '.' or '$', which MongoDB keys may not
        report.settings["class_map"] = [[str(k), str(v)] for k, v in class_map.items()]
    report.settings["merge_case"] = bool(merge_case)
    if rename:
        for im in parsed.images:
            im.labels = [rename.get(lb, lb) for lb in im.labels]
        if parsed.classes is not None:
            parsed.classes = list(dict.fromkeys(rename.get(c, c) for c in parsed.classes))

    fixed_classes = list(classes) if classes is not None else None
    if fixed_classes is None and parsed.closed:
        names = list(parsed.classes or [])
    elif fixed_classes is None:
        names = list(parsed.classes or [])
        seen = set(names)
        extra = sorted({lb for im in parsed.images for lb in im.labels} - seen)
        names.extend(extra)
    else:
        names = fixed_classes
    class_index = {n: i for i, n in enumerate(names)}
    hint = numeric_names_hint(names)
    if hint:
        report.notes.append(hint)

    # one image file may be described twice (two XMLs with the same stem, a CSV listing an
    # image twice): keep the first description and report the others.
    seen_paths: dict[str, str] = {}
    unique: list[RawImage] = []
    for im in parsed.images:
        if im.image_path is not None:
            key = str(safe_resolve(im.image_path))
            if key in seen_paths:
                report.problem(
                    im.source,
                    f"duplicate description: {im.image_path.name} is already described by "
                    f"{seen_paths[key]}; this one was ignored",
                )
                continue
            seen_paths[key] = im.source
        unique.append(im)

    paths = [im.image_path for im in unique]
    probes = track(
        _probe_all(paths, workers, limits.max_image_pixels), description="checking images", total=len(paths),
        enabled=progress,
    )

    records: list[ImageRecord] = []
    rescaled: dict[tuple[tuple[int, int], tuple[int, int]], int] = {}
    for im, probed in zip(unique, probes):
        shown = str(im.image_path) if im.image_path is not None else im.source
        msgs = list(im.warnings)
        if isinstance(probed, str):
            report.add(shown, [f"bad image: {probed}"] + im.errors + msgs, rejected=True)
            continue
        if im.unlabeled:
            if keep_unlabeled:
                msgs.append("missing annotation: imported as an image without defects")
            else:
                im.errors.append("missing annotation: no annotation file for this image "
                                 "(--keep-unlabeled imports it as an image without defects)")
        if im.errors:
            report.add(shown, im.errors + msgs, rejected=True)
            continue
        width, height = probed
        xyxy = np.asarray(im.boxes, dtype=np.float64).reshape(-1, 4)
        if im.coords == "relative":
            xyxy = xyxy * np.array([width, height, width, height], dtype=np.float64)
        elif im.frame is not None and tuple(im.frame) != (width, height):
            fw, fh = im.frame
            if fw <= 0 or fh <= 0:
                msgs.append(f"bad declared size: {fw}x{fh} ignored, boxes taken as pixels")
            else:
                sx, sy = width / fw, height / fh
                xyxy = xyxy * np.array([sx, sy, sx, sy])
                msgs.append(
                    f"rescaled: boxes declared in a {fw}x{fh} frame, image is {width}x{height}"
                )
                rescaled[((fw, fh), (width, height))] = (
                    rescaled.get(((fw, fh), (width, height)), 0) + 1
                )
        keep = np.ones(len(xyxy), dtype=bool)
        cid = np.full(len(xyxy), -1, dtype=np.int64)
        for i, label in enumerate(im.labels):
            if label in class_index:
                cid[i] = class_index[label]
            else:
                keep[i] = False
                msgs.append(f"unknown class: {label!r} (box {_fmt_box(im.boxes[i])} left out)")
        for i in np.flatnonzero(keep):
            x1, y1, x2, y2 = xyxy[i]
            if not np.all(np.isfinite(xyxy[i])):
                keep[i] = False
                msgs.append(f"bad box: non-finite coordinates {_fmt_box(im.boxes[i])} left out")
            elif x2 <= x1 or y2 <= y1:
                msgs.append(f"degenerate box: zero or negative area {_fmt_box(xyxy[i])} kept")
            elif x1 < -0.5 or y1 < -0.5 or x2 > width + 0.5 or y2 > height + 0.5:
                msgs.append(
                    f"box outside image: {_fmt_box(xyxy[i])} in {width}x{height} kept"
                )
        ann = Annotations(xyxy=xyxy[keep], class_id=cid[keep])
        records.append(
            ImageRecord(
                filepath=str(im.image_path.resolve()),
                width=width,
                height=height,
                gt=ann,
                split=split if split is not None else im.split,
            )
        )
        report.add(shown, msgs, rejected=False)
        report.boxes_imported += len(ann)

    for (frame, real), n in rescaled.items():
        report.notes.append(
            f"{n} image(s): boxes declared in a {frame[0]}x{frame[1]} frame were rescaled to "
            f"the real image size {real[0]}x{real[1]}"
        )
    return LabelSet(classes=names, records=records)
