"""Reading images for the detector, without torch: the network's input (grey, square-resized) and
the files' digests a checkpoint remembers. Training, prediction on torch and the torch-free
ONNX path (:mod:`.lite`) all read pixels here, so they all see the same ones."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from ..types import Annotations, ImageRecord


def load_gray(path: str | Path, size: int, image_wh: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as grayscale uint8 and resize it to ``size`` x ``size`` (INTER_AREA).

    When ``image_wh`` says a JPEG is at least 2x (4x, 8x) the target size, libjpeg decodes it at
    reduced resolution directly, which is several times faster. Training and prediction both use
    this function, so both see the same pixels.
    """
    import cv2

    flag = cv2.IMREAD_GRAYSCALE
    if image_wh is not None and str(path).lower().endswith((".jpg", ".jpeg")):
        short = min(image_wh)
        for factor, f in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                          (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
            if short >= factor * size:
                flag = f
                break
    img = read_gray(path, flag)
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def read_gray(path: str | Path, flag: int | None = None) -> np.ndarray:
    """The image file read as grey uint8 (``flag``: an OpenCV grey read mode, full size by
    default); :class:`InputError` in one line when it is gone or cannot be decoded."""
    import cv2

    if not os.path.isfile(path):  # said here, not by OpenCV's own warning on stderr
        raise InputError(f"cannot read image {path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if flag is None else flag)
    if img is None:
        raise InputError(f"cannot read image {path}")
    return img


def decode(records: Sequence[ImageRecord], size: int, skip_unreadable: bool = False) -> list[np.ndarray | None]:
    """The network's input of each record: the image read as grey and resized to ``size`` x ``size``.
    An image that cannot be read raises :class:`InputError`, or is None with ``skip_unreadable``."""
    if not skip_unreadable:
        return [load_gray(r.filepath, size, (r.width, r.height)) for r in records]
    out: list[np.ndarray | None] = []
    for r in records:
        try:
            out.append(load_gray(r.filepath, size, (r.width, r.height)))
        except InputError:
            out.append(None)
    return out


def image_digests(paths: Sequence[str]) -> list[str]:
    """Per image file, the first 16 hex digits of the SHA-256 of its bytes ("" when unreadable):
    what a checkpoint remembers of its training images, so that predicting on them can be told."""
    out = []
    for p in paths:
        try:
            out.append(hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16])
        except OSError:
            out.append("")
    return out


def to_record_frame(rec: ImageRecord, size: int, xyxy: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, data: dict[str, np.ndarray] | None = None) -> Annotations:
    """Boxes found on the ``size`` x ``size`` input, back in the record's own pixel frame (clipped);
    ``data``: per-box arrays kept as they are (the flip check's, :mod:`.flipcheck`)."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    sx, sy = rec.width / size, rec.height / size
    b = b * np.array([sx, sy, sx, sy])
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, rec.width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, rec.height)
    conf = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return Annotations(xyxy=b, class_id=np.asarray(labels).astype(np.int64), confidence=conf, data=dict(data or {}))


Batch = Callable[[Sequence[ImageRecord], Sequence[np.ndarray]], list[Annotations]]


def run_batches(records: Sequence[ImageRecord], size: int, batch_size: int, on_batch: Batch, *,
                progress: bool = False, skip_unreadable: bool = False) -> list[Annotations | None]:
    """``on_batch(records, images)`` over ``records`` in batches, the next batch's images decoded in
    a background thread while the current one runs; an image that cannot be read raises, or with
    ``skip_unreadable`` is left out of its batch and gets None. Progress counts images."""
    from concurrent.futures import ThreadPoolExecutor

    from ..progress import track

    records = list(records)
    out: list[Annotations | None] = []
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(decode, batches[0], size, skip_unreadable) if batches else None
        # a batch is predicted when its first image comes up
        for i in track(range(len(records)), description="predicting images", total=len(records), enabled=progress):
            if i % batch_size:
                continue
            bi = i // batch_size
            imgs = nxt.result()
            nxt = pool.submit(decode, batches[bi + 1], size, skip_unreadable) if bi + 1 < len(batches) else None
            out += with_gaps(on_batch, batches[bi], imgs)
    return out


def with_gaps(on_batch: Batch, records: Sequence[ImageRecord],
               imgs: Sequence[np.ndarray | None]) -> list[Annotations | None]:
    """``on_batch`` of the readable images, None in the place of each unreadable one."""
    ok = [i for i, im in enumerate(imgs) if im is not None]
    if not ok:
        return [None] * len(imgs)
    if len(ok) == len(imgs):
        return list(on_batch(records, imgs))
    got = iter(on_batch([records[i] for i in ok], [imgs[i] for i in ok]))
    keep = set(ok)
    return [next(got) if i in keep else None for i in range(len(imgs))]
