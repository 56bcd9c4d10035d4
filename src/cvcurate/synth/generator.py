"""Writing a whole synthetic NEU-DET-like dataset: images, VOC XMLs and a COCO JSON.

Layout of ``out_dir``::

    images/synth_000000.png ...   200x200 grayscale steel with defects
    annotations/synth_000000.xml  Pascal VOC (what ``cvcurate import out_dir`` detects)
    ImageSets/Main/train.txt ...  the split of each image (VOC's own split lists)
    coco/labels.json              the same boxes as COCO (``--format coco``)
    README.txt                    seed, count and the config used

Image ``i`` is drawn from its own random generator, seeded from ``(seed, i)``, so a dataset is
byte-identical for a seed whatever the number of workers, and the first N images of a larger
dataset are the N images of a smaller one.
"""

from __future__ import annotations

import dataclasses
import shutil
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import yaml

from ..errors import ConfigError, InputError
from ..formats import coco, voc
from ..progress import track
from ..types import Annotations, ImageRecord, LabelSet
from .config import CLASSES, SynthConfig
from .render import render_image

# what generate() writes; --overwrite removes only these
OUTPUTS = ("images", "annotations", "ImageSets", "coco", "README.txt")


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of image ``index`` of the dataset of ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


def image_name(index: int, n_images: int, ext: str) -> str:
    return f"synth_{index:0{max(6, len(str(n_images - 1)))}d}.{ext}"


def encode(image: np.ndarray, cfg: SynthConfig) -> bytes:
    """PNG by default: lossless, so the pixels on disk are exactly the drawn ones and only the
    defects' masks differ from the defect-free texture (JPEG ringing would spill a few grey
    levels outside every box). JPEG (quality ``jpeg_quality``) is there for realism."""
    if cfg.image_format == "jpg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    else:
        # Huffman-only deflate: on noisy textures both faster and smaller than the default
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise RuntimeError("image encoding failed")
    return buf.tobytes()


_Job = tuple[int, int, int, str, SynthConfig]
_Result = tuple[int, np.ndarray, np.ndarray, str]


def _make_one(job: _Job) -> _Result:
    """Draw image ``index``, write it, return (index, boxes, class ids, split)."""
    index, seed, n_images, images_dir, cfg = job
    rng = image_rng(seed, index)
    split = "val" if rng.random() < cfg.val_fraction else "train"
    rendered = render_image(rng, cfg)
    path = Path(images_dir) / image_name(index, n_images, cfg.image_format)
    path.write_bytes(encode(rendered.image, cfg))
    xyxy = np.array([d.xyxy for d in rendered.defects], dtype=np.float64).reshape(-1, 4)
    cid = np.array([d.class_id for d in rendered.defects], dtype=np.int64)
    return index, xyxy, cid, split


def _make_chunk(jobs: list[_Job]) -> list[_Result]:
    return [_make_one(j) for j in jobs]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the images are small: one thread per process is fastest


def _run(jobs: list[_Job], workers: int) -> Iterator[_Result]:
    if workers <= 1 or len(jobs) < 64:
        yield from map(_make_one, jobs)
        return
    size = 32
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    # "spawn", not the default fork: forking a process that runs threads (FiftyOne's database
    # client, OpenCV's pool) can deadlock the children
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=ctx) as pool:
        for results in pool.map(_make_chunk, chunks):
            yield from results


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Make sure ``out_dir`` is empty (or absent); with ``overwrite`` clear a previous dataset.

    Only what :func:`generate` writes is removed; a folder holding anything else is refused.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise InputError(f"{out_dir} exists and is not empty: choose a new folder or give --overwrite")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUTS)
    if foreign:
        raise InputError(f"{out_dir} holds files that are not a synthetic dataset ({', '.join(foreign[:3])}): "
                         "refusing to overwrite it")
    for name in OUTPUTS:
        p = out_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def generate(
    out_dir: str | Path,
    n_images: int,
    seed: int,
    config: SynthConfig | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> LabelSet:
    """Write ``n_images`` synthetic steel images with VOC and COCO labels into ``out_dir``.

    Returns the labels (absolute image paths, splits ``train``/``val``), exactly as written.
    """
    cfg = config if config is not None else SynthConfig()
    try:
        cfg.check()
    except ValueError as exc:
        raise ConfigError(f"synth config: {exc}") from None
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise InputError(f"number of images must be at least 1, got {n_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir).expanduser().resolve()
    prepare_out_dir(out_dir, overwrite)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    n_images, seed = int(n_images), int(seed)
    jobs: list[_Job] = [(i, seed, n_images, str(images_dir), cfg) for i in range(n_images)]
    results: list[_Result | None] = [None] * n_images
    for res in track(_run(jobs, workers), description="drawing images", total=n_images, enabled=progress):
        results[res[0]] = res

    size = cfg.image_size
    records = []
    for index, xyxy, cid, split in results:  # type: ignore[misc]
        path = images_dir / image_name(index, n_images, cfg.image_format)
        records.append(ImageRecord(filepath=str(path), width=size, height=size,
                                   gt=Annotations(xyxy=xyxy, class_id=cid), split=split,
                                   meta={"synth_seed": seed, "synth_index": index}))
    labels = LabelSet(classes=list(CLASSES), records=records)
    voc.write(labels, out_dir / "annotations", depth=1)
    splits: dict[str, list[str]] = {}
    for rec in labels.records:
        if rec.split:
            splits.setdefault(rec.split, []).append(Path(rec.filepath).stem)
    for split, stems in splits.items():
        lst = out_dir / "ImageSets" / "Main" / f"{split}.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("".join(f"{s}\n" for s in stems))
    coco.write(labels, out_dir / "coco" / "labels.json", root=images_dir)
    (out_dir / "README.txt").write_text(
        f"Synthetic NEU-DET-like steel defects made by 'cvcurate synth': {n_images} images, seed {seed}.\n"
        "images/ PNG or JPEG, annotations/ Pascal VOC XML, coco/labels.json COCO.\n"
        "Import with: cvcurate import <this folder> --name NAME\n\nconfig:\n"
        + yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    )
    return labels
