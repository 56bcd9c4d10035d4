"""Severstal steel defect CSV: run-length encoded masks, one box per connected component.

``train.csv`` comes in two variants:

* ``ImageId,ClassId,EncodedPixels``: one row per (image, class) with a defect; an image of the
  image folder that has no row has no defect and is kept as a negative;
* ``ImageId_ClassId,EncodedPixels``: four rows per image (``abc.jpg_1`` .. ``_4``), an empty
  EncodedPixels meaning "no defect of this class".

EncodedPixels are pairs "start length": 1-based pixel indices, column-major (top to bottom, then
left to right) in a 1600 x 256 image. Each 8-connected component of a class mask becomes a box.
A row that cannot be decoded rejects its image: keeping the image without that defect would
make a false negative.

The classes are named ``1``..``4`` as in the CSV (the competition never named them): the import
report suggests ``--class-map`` with an example (:func:`cvcurate.formats.classes.numeric_names_hint`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import ImportOptions, ParseResult, RawImage, list_images, over_cap

WIDTH, HEIGHT = 1600, 256
CLASSES = ["1", "2", "3", "4"]
IMAGE_DIRS = ("train_images", "images", "test_images")


class RLEError(ValueError):
    pass


def rle_decode(encoded: str, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Decode Severstal RLE into a (height, width) uint8 mask. Raises :class:`RLEError`."""
    encoded = (encoded or "").strip()
    mask = np.zeros(width * height, dtype=np.uint8)
    if not encoded:
        return mask.reshape(width, height).T
    try:
        values = np.array(encoded.split(), dtype=np.int64)
    except ValueError:
        raise RLEError("EncodedPixels is not a list of integers") from None
    if len(values) % 2:
        raise RLEError(f"EncodedPixels has an odd number of values ({len(values)})")
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any() or (lengths <= 0).any():
        raise RLEError("EncodedPixels has a start below 1 or a length below 1")
    ends = starts + lengths
    if ends.max() > width * height:
        raise RLEError(f"EncodedPixels runs past the end of a {width}x{height} image")
    # difference array: +1 at each start, -1 at each end, then a cumulative sum
    delta = np.zeros(width * height + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    mask = (np.cumsum(delta[:-1]) > 0).astype(np.uint8)
    return mask.reshape(width, height).T  # column-major: index = x * height + y


def rle_encode(mask: np.ndarray) -> str:
    """Encode a (height, width) mask in Severstal RLE (the inverse of :func:`rle_decode`)."""
    flat = np.asarray(mask, dtype=np.uint8).T.reshape(-1)
    padded = np.concatenate([[0], flat, [0]])
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def mask_to_boxes(mask: np.ndarray) -> list[tuple[float, float, float, float]]:
    """One xyxy box (pixel edges) per 8-connected component."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:n]:
        boxes.append((float(x), float(y), float(x + w), float(y + h)))
    return boxes


def find_files(root: Path) -> tuple[Path, Path]:
    if root.is_file() and root.suffix == ".csv":
        csv_path, base = root, root.parent
    else:
        if not root.is_dir():
            raise InputError(f"{root} does not exist")
        base = root
        csv_path = root / "train.csv"
        if not csv_path.is_file():
            found = sorted(root.glob("*.csv"))
            if len(found) != 1:
                raise InputError(f"no train.csv in {root}")
            csv_path = found[0]
    img_dir = next((base / d for d in IMAGE_DIRS if (base / d).is_dir()), base)
    return csv_path, img_dir


def parse(root: Path, opts: ImportOptions | None = None) -> ParseResult:
    opts = opts or ImportOptions()
    cap = opts.caps.max_boxes_per_image
    csv_path, img_dir = find_files(root)
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: cannot be read as CSV: {exc}") from None
    if not rows:
        raise InputError(f"{csv_path} is empty")
    header = [h.strip() for h in rows[0]]
    if header[:3] == ["ImageId", "ClassId", "EncodedPixels"]:
        old = False
    elif header[:2] == ["ImageId_ClassId", "EncodedPixels"]:
        old = True
    else:
        raise InputError(f"{csv_path}: header {','.join(header)!r} is neither "
                         "'ImageId,ClassId,EncodedPixels' nor 'ImageId_ClassId,EncodedPixels'")
    per_image: dict[str, RawImage] = {}
    problems: list[tuple[str, str]] = []
    listed_in_csv: set[str] = set()
    over_cap_ids: set[str] = set()  # images past max_boxes_per_image: rejected, later rows not decoded

    def entry(image_id: str) -> RawImage:
        if image_id not in per_image:
            per_image[image_id] = RawImage(image_path=None, source=f"{csv_path.name}: {image_id}",
                                           frame=(WIDTH, HEIGHT))
        return per_image[image_id]

    for line_no, row in enumerate(rows[1:], start=2):
        where = f"{csv_path}:{line_no}"
        if not row or all(not c.strip() for c in row):
            continue
        if old:
            if len(row) != 2 or "_" not in row[0]:
                problems.append((where, f"malformed row: expected 'ImageId_ClassId,EncodedPixels', got {row!r}"))
                continue
            image_id, class_id = row[0].rsplit("_", 1)
            encoded = row[1]
        else:
            if len(row) != 3:
                problems.append((where, f"malformed row: expected 3 columns, got {len(row)}"))
                continue
            image_id, class_id, encoded = row
        image_id, class_id = image_id.strip(), class_id.strip()
        if not image_id:
            problems.append((where, "malformed row: empty ImageId"))
            continue
        listed_in_csv.add(image_id)
        im = entry(image_id)
        if not encoded.strip() or image_id in over_cap_ids:
            continue
        try:
            mask = rle_decode(encoded)
        except RLEError as exc:
            im.errors.append(f"malformed row: line {line_no} (class {class_id!r}): {exc}")
            continue
        boxes = mask_to_boxes(mask)
        im.boxes.extend(boxes)
        im.labels.extend([class_id] * len(boxes))
        if len(im.boxes) > cap:  # rejected: its later rows are not decoded
            im.errors.append(over_cap(f"too many boxes: {len(im.boxes):,} by line {line_no} for this image",
                                      "max_boxes_per_image", cap))
            im.boxes, im.labels = [], []
            over_cap_ids.add(image_id)

    images = list_images(img_dir)
    by_name = {p.name: p for p in images}
    for image_id, im in per_image.items():
        im.image_path = by_name.get(image_id)
        if im.image_path is None:
            im.source = f"{img_dir / image_id} (listed in {csv_path.name})"
    for name, p in by_name.items():
        if name not in per_image:
            raw = RawImage(image_path=p, source=str(p), frame=(WIDTH, HEIGHT))
            if old:
                raw.warnings.append(f"not in {csv_path.name}: imported as an image without defects")
            per_image[name] = raw
    out = sorted(per_image.values(), key=lambda r: r.source if r.image_path is None else r.image_path.name)
    negatives = sum(1 for r in out if not r.boxes and not r.errors and r.image_path is not None)
    notes = [f"{negatives} image(s) without defects kept as negatives"] if negatives else []
    return ParseResult(images=out, classes=CLASSES, closed=True, notes=notes, problems=problems)
