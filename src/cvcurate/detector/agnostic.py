"""Class-agnostic prediction: a checkpoint's boxes read as "a defect here", whatever the classes.

A dataset whose classes the checkpoint does not know (a team's own steel data) gets overlooked,
spurious and badly-placed evidence from the shipped weights without training first
(``cvcurate predict NAME --model neu-det --class-agnostic``):

* every prediction is read as one class, "a defect", and duplicates of different classes at one
  place are merged by class-agnostic NMS (the checkpoint's ``nms_thresh``);
* a wide image (its long side at least :data:`TILE_ASPECT` times its short side, such as
  Severstal's 1600 x 256 strips) is cut into square tiles of its short side, a quarter
  overlapping, each resized to the network's input (squeezing the whole strip into the square
  input shrinks its defects out of sight), and the tiles' boxes are merged back in the image's
  frame;
* each prediction then takes the class of the given box it overlaps most (IoU), else the most
  common class among the image's given boxes, else the dataset's most common class
  (:func:`assign_classes`), so the scorer compares boxes with predictions as it always does.

Said plainly: the predictions' classes come from the labels, so a wrong class (swap) is no
evidence here, and the class named for an overlooked defect is a guess for the reviewer to set.
How far the shipped weights transfer is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..boxes import box_area, box_iou, row_intersection
from ..errors import InputError
from ..types import Annotations, ImageRecord

TILE_ASPECT = 1.5  # tiles from this ratio of the long side to the short side up
TILE_OVERLAP = 0.25
CUT_EDGE = 1.0  # a box within this many input pixels of a tile's inner edge is cut by it
PIECE_INSIDE = 0.8  # a box cut by a tile's edge with this share of its area inside a whole box is dropped

# decoded square images (uint8, size x size) -> per image (boxes xyxy in the input's frame, scores, labels)
Detect = Callable[[Sequence[np.ndarray]], list]


def tile_windows(width: int, height: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` windows covering a ``width`` x ``height`` image: the whole image when
    it is near square, else square tiles of its short side along its long side, neighbours
    overlapping by at least ``overlap`` of a tile, the first and last flush with the image's ends."""
    w, h = int(width), int(height)
    short, long = min(w, h), max(w, h)
    if short < 1 or long < TILE_ASPECT * short:
        return [(0, 0, w, h)]
    step = short * (1.0 - overlap)
    n = int(math.ceil((long - short) / step)) + 1
    starts = np.round(np.linspace(0, long - short, n)).astype(int)
    if w >= h:
        return [(int(s), 0, int(s) + short, h) for s in starts]
    return [(0, int(s), w, int(s) + short) for s in starts]


def read_tiles(rec: ImageRecord, size: int) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """The record's image read as grey, cut into :func:`tile_windows` (of the file's own size) and
    each resized to ``size`` x ``size``; :class:`InputError` when it cannot be read."""
    import cv2

    from .images import read_gray

    img = read_gray(rec.filepath)
    wins = tile_windows(img.shape[1], img.shape[0])
    tiles = [cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for x0, y0, x1, y1 in wins]
    return tiles, wins


def merge_tiles(outputs: Sequence[tuple], wins: Sequence[tuple[int, int, int, int]], size: int,
                image_wh: tuple[int, int], frame_wh: tuple[int, int], nms_thresh: float, keep: int) -> Annotations:
    """The tiles' boxes (each in its ``size`` x ``size`` input) back in the record's frame
    (``image_wh`` the file's pixels, ``frame_wh`` the record's width and height), read as one
    class, merged by class-agnostic NMS (a box cut by a tile's inner edge yields to the whole one
    of the tile beside it, and is dropped when it lies mostly inside it), the best ``keep`` kept
    (class id 0)."""
    from .lite import nms_classwise

    boxes, scores, cut = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, bool)]
    w_img, h_img = image_wh
    for (b, s, _), (x0, y0, x1, y1) in zip(outputs, wins):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        # a box at a tile's edge inside the image is likely a defect cut by the tile: the tile
        # beside it sees it whole, and its box is preferred where the two overlap
        edge = CUT_EDGE
        cut.append(((x0 > 0) & (b[:, 0] <= edge)) | ((x1 < w_img) & (b[:, 2] >= size - edge))
                   | ((y0 > 0) & (b[:, 1] <= edge)) | ((y1 < h_img) & (b[:, 3] >= size - edge)))
        b = b * np.array([(x1 - x0) / size, (y1 - y0) / size] * 2)
        boxes.append(b + np.array([x0, y0, x0, y0], np.float64))
        scores.append(np.asarray(s, np.float64).reshape(-1))
    b, s, c = np.concatenate(boxes), np.concatenate(scores), np.concatenate(cut)
    order = np.lexsort((-s, c))  # whole boxes first, each group best first
    b, s, c = b[order], s[order], c[order]
    kept = nms_classwise(b, np.zeros(len(b), np.int64), nms_thresh) if len(b) else np.zeros(0, np.int64)
    cut_k, whole_k = kept[c[kept]], kept[~c[kept]]
    if len(cut_k) and len(whole_k):  # a cut box lying mostly inside a whole one is that box's piece
        inter = row_intersection(b[cut_k, None], b[None, whole_k])
        area = np.maximum(box_area(b[cut_k]), 1e-9)
        kept = np.concatenate([whole_k, cut_k[(inter / area[:, None]).max(axis=1) < PIECE_INSIDE]])
    kept = kept[np.argsort(-s[kept], kind="stable")][:keep]
    b, s = b[kept], s[kept]
    sx, sy = frame_wh[0] / image_wh[0], frame_wh[1] / image_wh[1]
    b = b * np.array([sx, sy, sx, sy])
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, frame_wh[0])
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, frame_wh[1])
    return Annotations(b, np.zeros(len(b), np.int64), np.clip(s, 0.0, 1.0))


def predict_tiled(detect: Detect, records: Sequence[ImageRecord], size: int, *, batch_size: int = 16,
                  nms_thresh: float = 0.6, keep: int = 100, progress: bool = False,
                  skip_unreadable: bool = False) -> list[Annotations | None]:
    """Class-agnostic boxes (class id 0) of every record, wide images in tiles (module docstring);
    None for an unreadable image with ``skip_unreadable`` (else it raises)."""
    from ..progress import track

    out: list[Annotations | None] = []
    records = list(records)
    for i0 in track(range(len(records)), description="predicting images (class-agnostic)", total=len(records),
                    enabled=progress):
        if i0 % batch_size:  # a batch is predicted when its first image comes up
            continue
        chunk = records[i0:i0 + batch_size]
        read: list[tuple | None] = []
        for rec in chunk:
            try:
                read.append(read_tiles(rec, size))
            except InputError:
                if not skip_unreadable:
                    raise
                read.append(None)
        flat = [t for r in read if r is not None for t in r[0]]
        got = iter(detect(flat) if flat else [])
        for rec, r in zip(chunk, read):
            if r is None:
                out.append(None)
                continue
            tiles, wins = r
            outs = [next(got) for _ in tiles]
            image_wh = (wins[-1][2], wins[-1][3])
            out.append(merge_tiles(outs, wins, size, image_wh, (rec.width, rec.height), nms_thresh, keep))
    return out


def assign_classes(anns: Sequence[Annotations | None], gts: Sequence[Annotations],
                   n_classes: int) -> list[Annotations | None]:
    """Each class-agnostic prediction given the class of the given box it overlaps most (IoU > 0),
    else the most common class of its image's given boxes, else the dataset's most common class
    (the lowest id on a tie); None stays None."""
    counts = np.zeros(max(n_classes, 1), np.int64)
    for g in gts:
        np.add.at(counts, np.asarray(g.class_id, np.int64), 1)
    common = int(np.argmax(counts))
    out: list[Annotations | None] = []
    for a, g in zip(anns, gts):
        if a is None:
            out.append(None)
            continue
        cls = np.full(len(a), common, np.int64)
        if len(g) and len(a):
            gcls = np.asarray(g.class_id, np.int64)
            cls[:] = int(np.argmax(np.bincount(gcls, minlength=n_classes)))
            iou = box_iou(a.xyxy, g.xyxy)
            best = iou.argmax(axis=1)
            hit = iou[np.arange(len(a)), best] > 0
            cls[hit] = gcls[best[hit]]
        out.append(Annotations(a.xyxy, cls, a.confidence))
    return out
