"""GC10-DET: VOC XMLs in a folder named ``lable`` (sic), grayscale images in class folders ``1``..``10``.

Also the Kaggle re-release ("Defects location for metal surface"): ``images/images/<class>/`` and
``label/label/*.xml``. XMLs are matched to images by file stem anywhere under the image folders
(the folder an image sits in is not always its label, so the folder is never used as the label).

Class names in ``<name>`` are pinyin with a number; they are mapped to English names. Known quirks
handled and reported: the misspelling ``10_yaozhed`` (mapped to waist_folding), a stray class
``d`` (unknown: its box is left out), and images that have no XML.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from . import voc
from .base import ImportOptions, ParseResult, looks_like_image

# pinyin name in the XMLs -> English class name, in GC10's own class order 1..10
PINYIN = {
    "1_chongkong": "punching_hole",
    "2_hanfeng": "welding_line",
    "3_yueyawan": "crescent_gap",
    "4_shuiban": "water_spot",
    "5_youban": "oil_spot",
    "6_siban": "silk_spot",
    "7_yiwu": "inclusion",
    "8_yahen": "rolled_pit",
    "9_zhehen": "crease",
    "10_yaozhe": "waist_folding",
}
MISSPELLINGS = {"10_yaozhed": "10_yaozhe"}
CLASSES = list(PINYIN.values())


def find_dirs(root: Path) -> tuple[Path, Path]:
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    for cand in (root / "lable", root / "label" / "label", root / "label"):
        if cand.is_dir() and any(cand.glob("*.xml")):
            ann = cand
            break
    else:
        raise InputError(f"no GC10-DET annotations in {root}: expected XMLs in lable/ or label/label/")
    for cand in (root / "images" / "images", root / "images", root):
        if cand.is_dir() and cand != ann:
            return ann, cand
    raise InputError(f"no image folder in {root}")


def map_name(name: str) -> tuple[str, str | None]:
    """English class name for a GC10 ``<name>``, and a warning when a known misspelling was fixed."""
    key = name.strip()
    warning = None
    if key in MISSPELLINGS:
        warning = f"misspelled class: {key!r} read as {MISSPELLINGS[key]!r}"
        key = MISSPELLINGS[key]
    if key in PINYIN:
        return PINYIN[key], warning
    if key in CLASSES:  # already English (Kaggle re-release)
        return key, warning
    return key, warning


def parse(root: Path, opts: ImportOptions | None = None) -> ParseResult:
    opts = opts or ImportOptions()
    ann_dir, img_dir = find_dirs(root)
    xmls = sorted(ann_dir.glob("*.xml"))
    images = sorted(p for p in img_dir.rglob("*") if looks_like_image(p) and ann_dir not in p.parents)
    result = voc.apply_origin(voc.match_xmls(xmls, images, opts.caps), opts.voc_origin)
    for im in result.images:
        for i, label in enumerate(im.labels):
            im.labels[i], warning = map_name(label)
            if warning:
                im.warnings.append(warning)
    result.classes = CLASSES
    result.closed = True
    return result
