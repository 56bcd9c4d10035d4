"""Draw docs/synthetic.png: per class, synthetic samples beside real NEU-DET samples, boxes drawn.

Usage: python scripts/make_contact_sheet.py [--out docs/synthetic.png] [--real ../shared/data/neu-det]

Real images are read from the shared data folder only (never copied into the repository); the
real columns are left out, with a message, when that folder is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from cvcurate.synth import CLASSES, SynthConfig, image_rng, load_synth_config, render_image
from cvcurate.types import LabelSet

REPO = Path(__file__).resolve().parents[1]
TILE = 200
GAP = 12
LABEL_W = 150
HEADER_H = 34
SYNTH_COLOR = (40, 200, 40)  # BGR
REAL_COLOR = (40, 40, 230)


def draw_boxes(gray: np.ndarray, xyxy: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    tile = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    for x1, y1, x2, y2 in np.round(xyxy).astype(int):
        cv2.rectangle(tile, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), color, 1)
    return tile


def synthetic_tiles(cfg: SynthConfig, cls: str, n: int, seed: int) -> list[np.ndarray]:
    one = SynthConfig(**{**cfg.__dict__, "class_weights": {c: float(c == cls) for c in CLASSES},
                         "image_size": TILE})
    tiles = []
    for i in range(n):
        r = render_image(image_rng(seed + CLASSES.index(cls), i), one)
        tiles.append(draw_boxes(r.image, np.array([d.xyxy for d in r.defects]).reshape(-1, 4), SYNTH_COLOR))
    return tiles


def real_tiles(labels: LabelSet, cls: str, n: int) -> list[np.ndarray]:
    recs = sorted((r for r in labels.records if Path(r.filepath).stem.rsplit("_", 1)[0] == cls),
                  key=lambda r: int(Path(r.filepath).stem.rsplit("_", 1)[1]))
    picks = [recs[int(i)] for i in np.linspace(0, len(recs) - 1, n + 2)[1:-1]] if recs else []
    tiles = []
    for r in picks:
        img = cv2.imread(r.filepath, cv2.IMREAD_GRAYSCALE)
        img = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
        scale = np.array([TILE / r.width, TILE / r.height] * 2)
        tiles.append(draw_boxes(img, r.gt.xyxy * scale, REAL_COLOR))
    return tiles


def text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.55) -> None:
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "synthetic.png")
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "neu-det")
    ap.add_argument("--config", type=Path, default=None, help="synth config [default: configs/synth.yaml]")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.per_class
    cfg = load_synth_config(args.config)

    real: LabelSet | None = None
    if (args.real / "images").is_dir():
        from cvcurate import formats

        real, _ = formats.load(args.real, formats.ImportOptions(voc_origin="1"))
    else:
        print(f"{args.real} is absent: the sheet shows synthetic samples only", file=sys.stderr)

    cols = n + (n if real is not None else 0)
    width = LABEL_W + n * TILE + (GAP + n * TILE if real is not None else 0)
    height = HEADER_H + len(CLASSES) * (TILE + GAP)
    sheet = np.full((height, width, 3), 255, np.uint8)
    text(sheet, "synthetic (cvcurate synth), exact boxes", (LABEL_W, 23), 0.6)
    if real is not None:
        text(sheet, "real NEU-DET, annotated boxes", (LABEL_W + n * TILE + GAP, 23), 0.6)
    for row, cls in enumerate(CLASSES):
        y = HEADER_H + row * (TILE + GAP)
        text(sheet, cls, (8, y + TILE // 2))
        tiles = synthetic_tiles(cfg, cls, n, args.seed)
        if real is not None:
            tiles += real_tiles(real, cls, n)
        for k, tile in enumerate(tiles[:cols]):
            x = LABEL_W + k * TILE + (GAP if k >= n else 0)
            sheet[y:y + TILE, x:x + TILE] = tile
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
