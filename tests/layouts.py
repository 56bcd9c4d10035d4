"""Dataset layouts of the ecosystem, written by the tests: one small dataset exported the way
Roboflow, COCO, Ultralytics, Darknet, the VOC devkit and FiftyOne lay it out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.makedata import make_image

CLASSES = ["crack", "pit", "scratch"]


@dataclass
class Item:
    split: str  # train / val / test
    stem: str
    width: int
    height: int
    boxes: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)  # (class, xyxy)


def small_dataset(n: int = 7) -> list[Item]:
    """``n`` images over train/val/test with integer boxes, one at the top-left edge (x1 = y1 = 0)
    and one at the bottom-right edge, so that a 1-px convention error shows."""
    splits = ["train", "train", "train", "val", "val", "test", "test"]
    items = []
    for i in range(n):
        w, h = (64, 48) if i % 2 == 0 else (80, 60)
        boxes = [(CLASSES[i % 3], (0, 0, 10 + i, 12))]
        if i % 3 != 2:
            boxes.append((CLASSES[(i + 1) % 3], (20 + i, 10, w, h)))
        if i == 4:
            boxes.append(("crack", (30, 5, 41, 20)))
        items.append(Item(splits[i % len(splits)], f"img_{i:02d}", w, h, boxes))
    return items


ROBOFLOW_FOLDER = {"train": "train", "val": "valid", "test": "test"}


def _folders(val_folder: str) -> dict[str, str]:
    """Roboflow's split folders, the validation one spelled ``val_folder`` (valid, val, validation)."""
    return {**ROBOFLOW_FOLDER, "val": val_folder}


def voc_xml(filename: str, w: int, h: int, boxes, origin: int = 0) -> str:
    objs = "".join(
        f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x1 + origin}</xmin><ymin>{y1 + origin}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
        "</bndbox></object>" for c, (x1, y1, x2, y2) in boxes)
    return (f"<annotation><folder></folder><filename>{filename}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>")


def coco_document(items: list[Item], file_name=lambda it: f"{it.stem}.jpg", roboflow: bool = False,
                  crowd: dict[str, list] | None = None) -> dict:
    cats = [{"id": k + 1, "name": c, "supercategory": "defects" if roboflow else "none"}
            for k, c in enumerate(CLASSES)]
    if roboflow:
        cats.insert(0, {"id": 0, "name": "defects", "supercategory": "none"})
    images, anns = [], []
    for i, it in enumerate(items, start=1):
        images.append({"id": i, "file_name": file_name(it), "width": it.width, "height": it.height})
        for c, (x1, y1, x2, y2) in it.boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CLASSES.index(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                         "segmentation": []})
        for c, (x1, y1, x2, y2) in (crowd or {}).get(it.stem, []):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CLASSES.index(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 1,
                         "segmentation": {"counts": [0, 1], "size": [it.height, it.width]}})
    return {"info": {}, "licenses": [], "categories": cats, "images": images, "annotations": anns}


def yolo_lines(it: Item) -> str:
    out = []
    for c, (x1, y1, x2, y2) in it.boxes:
        cx, cy = (x1 + x2) / 2 / it.width, (y1 + y2) / 2 / it.height
        w, h = (x2 - x1) / it.width, (y2 - y1) / it.height
        out.append(f"{CLASSES.index(c)} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}")
    return "\n".join(out) + "\n"


def _img(path: Path, it: Item, seed: int = 0) -> None:
    make_image(path, it.width, it.height, seed=seed)


# ------------------------------------------------------------------------------ Roboflow exports
def roboflow_voc(root: Path, items: list[Item], val_folder: str = "valid") -> Path:
    for k, it in enumerate(items):
        d = root / _folders(val_folder)[it.split]
        _img(d / f"{it.stem}.jpg", it, k)
        (d / f"{it.stem}.xml").write_text(voc_xml(f"{it.stem}.jpg", it.width, it.height, it.boxes))
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")
    return root


def roboflow_coco(root: Path, items: list[Item], val_folder: str = "valid") -> Path:
    for split, folder in _folders(val_folder).items():
        part = [it for it in items if it.split == split]
        if not part:  # no folder for an empty split
            continue
        for it in part:
            _img(root / folder / f"{it.stem}.jpg", it, items.index(it))
        (root / folder / "_annotations.coco.json").write_text(json.dumps(coco_document(part, roboflow=True)))
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")
    return root


def roboflow_yolo(root: Path, items: list[Item], quirk: bool = True, val_folder: str = "valid",
                  val_key: str = "val", val_path: str = "valid") -> Path:
    """Roboflow's YOLO export: data.yaml beside train/ valid/ test/, each with images/ + labels/.
    ``val_folder``: the folder's spelling; ``val_key`` and ``val_path``: how data.yaml names it
    (``val: ../valid/images`` by default, whatever the folder is called)."""
    for k, it in enumerate(items):
        d = root / _folders(val_folder)[it.split]
        _img(d / "images" / f"{it.stem}.jpg", it, k)
        (d / "labels").mkdir(parents=True, exist_ok=True)
        (d / "labels" / f"{it.stem}.txt").write_text(yolo_lines(it))
    pre = "../" if quirk else ""
    doc = {"train": f"{pre}train/images", val_key: f"{pre}{val_path}/images", "test": f"{pre}test/images",
           "nc": len(CLASSES), "names": CLASSES,
           "roboflow": {"workspace": "w", "project": "p", "version": 1}}
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


# ------------------------------------------------------------------------------ COCO standard
def coco_standard(root: Path, items: list[Item], variant: str) -> Path:
    """``annotations/instances_<split>.json`` with images where COCO layouts put them:
    ``images``: images/<split>/; ``coco2017``: <split>2017/ (json instances_<split>2017);
    ``mmdet``: <split>/; ``flat``: images/ (file_name without folder)."""
    for split in ("train", "val"):
        part = [it for it in items if it.split == split]
        year = "2017" if variant == "coco2017" else ""
        folder = {"images": root / "images" / split, "coco2017": root / f"{split}{year}",
                  "mmdet": root / split, "flat": root / "images"}[variant]
        for it in part:
            _img(folder / f"{it.stem}.jpg", it, items.index(it))
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}{year}.json").write_text(json.dumps(coco_document(part)))
    (root / "annotations" / "captions_train.json").write_text(json.dumps(
        {"images": [], "annotations": [{"id": 1, "image_id": 1, "caption": "steel"}]}))
    return root


# ------------------------------------------------------------------------------ VOC devkit
def voc_devkit(root: Path, items: list[Item], origin: int = 1) -> Path:
    """VOC2007 layout: Annotations/, JPEGImages/, ImageSets/Main/{train,val,trainval,test}.txt and a
    class list (crack_train.txt) that must be ignored."""
    for k, it in enumerate(items):
        _img(root / "JPEGImages" / f"{it.stem}.jpg", it, k)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{it.stem}.xml").write_text(
            voc_xml(f"{it.stem}.jpg", it.width, it.height, it.boxes, origin=origin))
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (main / f"{split}.txt").write_text("".join(f"{it.stem}\n" for it in items if it.split == split))
    (main / "trainval.txt").write_text("".join(f"{it.stem}\n" for it in items if it.split in ("train", "val")))
    (main / "crack_train.txt").write_text("".join(f"{it.stem} -1\n" for it in items))
    return root


# ------------------------------------------------------------------------------ Darknet / CVAT
def darknet(root: Path, items: list[Item]) -> Path:
    """CVAT's "YOLO 1.1" export: obj.data, obj.names, train.txt, obj_train_data/ (.txt beside)."""
    d = root / "obj_train_data"
    for k, it in enumerate(items):
        _img(d / f"{it.stem}.jpg", it, k)
        (d / f"{it.stem}.txt").write_text(yolo_lines(it))
    (root / "obj.names").write_text("\n".join(CLASSES) + "\n")
    (root / "obj.data").write_text(f"classes = {len(CLASSES)}\ntrain = data/train.txt\nnames = data/obj.names\n"
                                   "backup = backup/\n")
    (root / "train.txt").write_text("".join(f"data/obj_train_data/{it.stem}.jpg\n" for it in items))
    return root


# ------------------------------------------------------------------------------ FiftyOne layouts
def fiftyone_voc(root: Path, items: list[Item], frames: dict[str, tuple[int, int]] | None = None) -> Path:
    """FiftyOne's VOCDetectionDataset layout: data/ + labels/. ``frames``: declare another
    <size> for some images (their boxes scaled into it), as NEU-DET does."""
    for k, it in enumerate(items):
        _img(root / "data" / f"{it.stem}.jpg", it, k)
        fw, fh = (frames or {}).get(it.stem, (it.width, it.height))
        boxes = [(c, (round(x1 * fw / it.width), round(y1 * fh / it.height), round(x2 * fw / it.width),
                      round(y2 * fh / it.height))) for c, (x1, y1, x2, y2) in it.boxes]
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{it.stem}.xml").write_text(voc_xml(f"{it.stem}.jpg", fw, fh, boxes))
    return root


def fiftyone_coco(root: Path, items: list[Item]) -> Path:
    """FiftyOne's COCODetectionDataset layout: data/ + labels.json."""
    for k, it in enumerate(items):
        _img(root / "data" / f"{it.stem}.jpg", it, k)
    (root / "labels.json").write_text(json.dumps(coco_document(items)))
    return root
