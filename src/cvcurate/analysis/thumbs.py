"""Thumbnails of issues: the image with the suspect box drawn thick, as JPEG bytes (OpenCV).

JPEG (quality 85), not PNG: steel texture barely compresses losslessly (a 320 px PNG thumbnail is
~130 kB, the JPEG ~25 kB), and the HTML page embeds every thumbnail.

Colours are chosen to stand out on grey steel: the suspect box is magenta (with a thin black
edge so it reads on bright images too) and carries a tag ``#<box> <class>``; the model's box, when
the issue names one, is lime (an overlooked defect, which has no given box, is drawn as the
suspect box, tagged ``no box: <class>``); the image's other given boxes are thin white. An issue without a
box (blur, a near-duplicate) gets a magenta frame round the whole image. An image that cannot be
read gives a grey tile that says so. Very wide images (Severstal's 1600x256) are cropped to a 3:1
window centred on the suspect box before scaling, so the box stays visible.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..names import quoted
from ..types import ImageRecord, Issue

SUSPECT = (255, 0, 255)  # BGR magenta
MODEL = (0, 255, 128)  # BGR lime
OTHER = (255, 255, 255)
MAX_W, MAX_H = 320, 240
MAX_ASPECT = 3.0
JPEG_QUALITY = 85


def _placeholder(text: str) -> np.ndarray:
    img = np.full((MAX_H // 2, MAX_W, 3), 90, np.uint8)
    cv2.putText(img, text, (10, MAX_H // 4 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _tag(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    font, scale, th = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (tw, tht), base = cv2.getTextSize(text, font, scale, th)
    h, w = img.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y0 = y - tht - base - 4
    if y0 < 0:  # no room above the box: put the tag inside, at its top
        y0 = max(0, y)
    y0 = int(min(y0, max(0, h - tht - base - 4)))
    cv2.rectangle(img, (x, y0), (x + tw + 4, y0 + tht + base + 4), colour, -1)
    cv2.putText(img, text, (x + 2, y0 + tht + 2), font, scale, (0, 0, 0), th, cv2.LINE_AA)


def _box(img: np.ndarray, b: Sequence[float], s: float, ox: float, oy: float, colour, thick: int,
         edge: bool = False) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(round((b[0] - ox) * s)), int(round((b[1] - oy) * s)),
                      int(round((b[2] - ox) * s)), int(round((b[3] - oy) * s)))
    if x2 - x1 < 3:  # degenerate boxes still show
        x1, x2 = x1 - 2, x1 + 2
    if y2 - y1 < 3:
        y1, y2 = y1 - 2, y1 + 2
    if edge:
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
    return x1, y1, x2, y2


def _fit(img: np.ndarray, centre: tuple[float, float] | None) -> tuple[np.ndarray, float, float, float]:
    """Crop a very wide (tall) image to a ``MAX_ASPECT`` window round ``centre`` (x, y; None: the
    middle), then scale it into ``MAX_W`` x ``MAX_H``: the image, the scale and the crop's offset."""
    h, w = img.shape[:2]
    ox = oy = 0.0
    if w / h > MAX_ASPECT:
        cw = int(h * MAX_ASPECT)
        cx = centre[0] if centre is not None else w / 2
        ox = float(int(np.clip(cx - cw / 2, 0, w - cw)))
        img = img[:, int(ox):int(ox) + cw]
    elif h / w > MAX_ASPECT:
        ch = int(w * MAX_ASPECT)
        cy = centre[1] if centre is not None else h / 2
        oy = float(int(np.clip(cy - ch / 2, 0, h - ch)))
        img = img[int(oy):int(oy) + ch]
    h2, w2 = img.shape[:2]
    s = min(MAX_W / w2, MAX_H / h2)
    img = cv2.resize(img, (max(1, round(w2 * s)), max(1, round(h2 * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return img, s, ox, oy


def thumbnail(rec: ImageRecord, issue: Issue, classes: Sequence[str]) -> tuple[bytes, str]:
    """JPEG bytes of the issue drawn on its image, and a short caption of what is drawn."""
    img = cv2.imread(rec.filepath, cv2.IMREAD_COLOR)
    if img is None:
        ok, png = cv2.imencode(".jpg", _placeholder("image not readable"), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return png.tobytes(), "image not readable"
    h, w = img.shape[:2]
    # the records' boxes are in the frame of width x height; rescale if the file differs
    fx, fy = w / rec.width, h / rec.height
    scale_box = np.array([fx, fy, fx, fy])
    gt = rec.gt.xyxy * scale_box if len(rec.gt) else rec.gt.xyxy
    j = issue.box if issue.box is not None and 0 <= issue.box < len(rec.gt) else None
    pred_box = issue.data.get("pred_box") if issue.data else None
    pred = np.asarray(pred_box, dtype=np.float64) * scale_box if pred_box is not None and len(pred_box) == 4 else None
    focus = gt[j] if j is not None else pred
    img, s, ox, oy = _fit(img, None if focus is None else ((focus[0] + focus[2]) / 2, (focus[1] + focus[3]) / 2))
    for k in range(len(gt)):
        if k != j:
            _box(img, gt[k], s, ox, oy, OTHER, 1)
    drawn = []
    pc = issue.data.get("pred_class") if issue.data else None
    pname = quoted(classes[int(pc)]) if pc is not None and 0 <= int(pc) < len(classes) else None
    if pred is not None and j is None:  # no given box: the model's box is the suspect region
        x1, y1, _, _ = _box(img, pred, s, ox, oy, SUSPECT, 3, edge=True)
        _tag(img, f"no box: {pname or 'defect'}", x1, y1, SUSPECT)
        drawn.append(f"magenta: where the model sees a defect{' of class ' + pname if pname else ''} "
                     "that no given box covers")
    elif pred is not None:
        _box(img, pred, s, ox, oy, MODEL, 2)
        drawn.append("lime: the model's box" + (f" ({pname})" if pname else ""))
    if j is not None:
        c = int(rec.gt.class_id[j])
        name = quoted(classes[c]) if 0 <= c < len(classes) else str(c)
        x1, y1, _, _ = _box(img, gt[j], s, ox, oy, SUSPECT, 3, edge=True)
        _tag(img, f"#{j} {name}", x1, y1, SUSPECT)
        drawn.insert(0, f"magenta: box #{j} ({name})")
    elif pred is None:
        cv2.rectangle(img, (1, 1), (img.shape[1] - 2, img.shape[0] - 2), SUSPECT, 3)
        drawn.insert(0, "the whole image")
    ok, png = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return png.tobytes(), "; ".join(drawn)


def style_thumbnail(rec: ImageRecord, cls: int, model: np.ndarray, classes: Sequence[str]) -> bytes:
    """JPEG bytes of one image as a labeling-conventions example: the boxes of class ``cls``
    magenta and numbered, the model's boxes of that class (``model``, xyxy in the record's frame)
    lime, the other given boxes thin white."""
    img = cv2.imread(rec.filepath, cv2.IMREAD_COLOR)
    if img is None:
        ok, jpg = cv2.imencode(".jpg", _placeholder("image not readable"), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return jpg.tobytes()
    h, w = img.shape[:2]
    fx, fy = w / rec.width, h / rec.height
    k = np.array([fx, fy, fx, fy])
    gt = rec.gt.xyxy * k if len(rec.gt) else rec.gt.xyxy
    mine = np.asarray(rec.gt.class_id) == cls
    img, s, ox, oy = _fit(img, (float(gt[mine][:, [0, 2]].mean()), float(gt[mine][:, [1, 3]].mean()))
                          if mine.any() else None)
    for j in np.flatnonzero(~mine).tolist():
        _box(img, gt[j], s, ox, oy, OTHER, 1)
    for b in np.asarray(model, np.float64).reshape(-1, 4) * k:
        _box(img, b, s, ox, oy, MODEL, 2)
    for n, j in enumerate(np.flatnonzero(mine).tolist()):
        x1, y1, _, _ = _box(img, gt[j], s, ox, oy, SUSPECT, 2, edge=True)
        _tag(img, f"#{j}", x1, y1, SUSPECT)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return jpg.tobytes()
