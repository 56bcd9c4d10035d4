"""Small datasets made by the tests, in every format, broken ones included."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from cvcurate.formats import coco, severstal, voc, yolo
from cvcurate.types import Annotations, ImageRecord, LabelSet

CLASSES = ["crack", "pit", "scratch"]


def make_image(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, size=(height, width), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), img)
    assert ok, path
    return path


def make_labels(folder: Path, n: int = 6, width: int = 64, height: int = 48, ext: str = ".jpg",
                split: str | None = None) -> LabelSet:
    """``n`` images with 0..2 integer boxes each; image i has i % 3 boxes."""
    records = []
    for i in range(n):
        p = make_image(folder / f"img_{i:03d}{ext}", width, height, seed=i)
        k = i % 3
        xyxy = [(4 + 10 * j, 5 + 8 * j, 20 + 10 * j, 30 + 5 * j) for j in range(k)]
        records.append(ImageRecord(filepath=str(p.resolve()), width=width, height=height,
                                   gt=Annotations(np.array(xyxy, float).reshape(-1, 4), [(i + j) % 3 for j in range(k)]),
                                   split=split))
    return LabelSet(classes=list(CLASSES), records=records)


def write_voc(root: Path, n: int = 6, **kw) -> LabelSet:
    labels = make_labels(root / "images", n, **kw)
    voc.write(labels, root / "annotations")
    return labels


def write_coco(root: Path, n: int = 6, **kw) -> LabelSet:
    labels = make_labels(root / "images", n, **kw)
    coco.write(labels, root / "annotations.json", root=root / "images")
    return labels


def write_yolo(root: Path, n: int = 6, splits: bool = True, **kw) -> LabelSet:
    if splits:
        a = make_labels(root / "images" / "train", n - n // 3, split="train", **kw)
        b = make_labels(root / "images" / "val", n // 3, split="val", **kw)
        labels = LabelSet(CLASSES, a.records + b.records)
    else:
        labels = make_labels(root / "images", n, **kw)
    yolo.write(labels, root)
    return labels


def write_severstal(root: Path, old_header: bool = False) -> dict[str, list[tuple[int, tuple]]]:
    """Three 1600x256 images: two with defects, one without. Returns the expected boxes."""
    w, h = severstal.WIDTH, severstal.HEIGHT
    expected: dict[str, list[tuple[int, tuple]]] = {}
    rows = []
    for k in range(3):
        name = f"s{k}.jpg"
        make_image(root / "train_images" / name, w, h, seed=k)
        expected[name] = []
        if k == 2:
            if old_header:
                rows += [(f"{name}_{c}", "") for c in range(1, 5)]
            continue
        per_class: dict[int, np.ndarray] = {}
        # two separate components of class 3, one of class 1 (image 0 only)
        m = np.zeros((h, w), np.uint8)
        m[10:40, 100:180] = 1
        m[200:250, 1500:1600] = 1
        per_class[3] = m
        expected[name] += [(3, (100, 10, 180, 40)), (3, (1500, 200, 1600, 250))]
        if k == 0:
            m1 = np.zeros((h, w), np.uint8)
            m1[0:256, 0:5] = 1
            per_class[1] = m1
            expected[name].append((1, (0, 0, 5, 256)))
        for c in range(1, 5):
            enc = severstal.rle_encode(per_class[c]) if c in per_class else ""
            if old_header:
                rows.append((f"{name}_{c}", enc))
            elif enc:
                rows.append((name, str(c), enc))
    header = "ImageId_ClassId,EncodedPixels" if old_header else "ImageId,ClassId,EncodedPixels"
    (root / "train.csv").write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return expected


GC10_XML = """<annotation><folder>{folder}</folder><filename>{stem}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>1</depth></size>
{objects}</annotation>"""
GC10_OBJ = "<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


def write_gc10(root: Path) -> None:
    """GC10-DET layout with its quirks: misspelled class, stray class 'd', an image without XML,
    and an image sitting in a folder other than its label."""
    w, h = 128, 64
    items = [
        ("img_01_1", "1", [("1_chongkong", (2, 3, 30, 40))]),
        ("img_02_2", "2", [("2_hanfeng", (10, 1, 20, 64)), ("d", (1, 1, 5, 5))]),
        ("img_03_3", "5", [("10_yaozhed", (50, 10, 100, 60))]),  # in folder 5, labelled 10
        ("img_04_4", "7", [("7_yiwu", (5, 5, 15, 15))]),
    ]
    for stem, folder, objs in items:
        make_image(root / folder / f"{stem}.jpg", w, h)
        xml = GC10_XML.format(folder=folder, stem=stem, w=w, h=h, objects="".join(
            GC10_OBJ.format(name=n, x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for n, b in objs))
        (root / "lable").mkdir(parents=True, exist_ok=True)
        (root / "lable" / f"{stem}.xml").write_text(xml)
    make_image(root / "3" / "img_05_nolabel.jpg", w, h)


def break_file(path: Path, how: str) -> None:
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"this is not an image at all" * 10)
    else:
        raise ValueError(how)


def coco_doc(root: Path) -> dict:
    return json.loads((root / "annotations.json").read_text())
