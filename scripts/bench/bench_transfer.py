#!/usr/bin/env python
"""How far the shipped NEU-DET detector transfers to other steel data, class-agnostic.

  python scripts/bench/bench_transfer.py [--severstal ../shared/data/severstal-sample]

The shipped ``neu-det`` weights know NEU-DET's six classes; another steel dataset has its own. Read
class-agnostically (every prediction a "defect", every given box a "defect", whatever the class),
the question is whether the detector finds the other data's defects at all, which is what the
overlooked / spurious / badly-placed evidence needs. Measured here, each as AP@0.5 (and 0.5:0.95)
of "defect" against all given boxes (pycocotools through :mod:`cvcurate.detector.evaluate`) and the
share of given boxes that some prediction with confidence >= 0.3 overlaps at IoU >= 0.3 (0.5):

* the NEU-DET images the shipped model did not train on (the 240 of its held-out split): the
  reference;
* the Severstal sample (1600 x 256 images, boxes from its run-length masks), (a) whole images
  squeezed to the model's square input, (b) square tiles of the image's height, overlapping by a
  quarter, predicted one by one, shifted back and merged by class-agnostic NMS (IoU 0.5);
* synthetic steel drawn in another style (``--synth N``: N images of :func:`cvcurate.synth.generate`,
  NEU-DET's six classes drawn by a procedural generator, not photographed): class-agnostic as
  above, and with the classes (mAP@0.5 by class name), since the names are NEU-DET's.

Nothing here is tuned to the data; the numbers say where the shipped weights help and where not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts" / "bench"))

import common  # noqa: E402


def agnostic(anns):
    from cvcurate.types import Annotations

    return [Annotations(a.xyxy, np.zeros(len(a), np.int64), a.confidence) for a in anns]


def covered(gts, preds, conf=0.3, iou=0.3) -> float:
    from cvcurate.boxes import box_iou

    hit = n = 0
    for g, p in zip(gts, preds):
        n += len(g)
        keep = p.confidence >= conf
        if len(g) and keep.any():
            hit += int((box_iou(g.xyxy, p.xyxy[keep]).max(axis=1) >= iou).sum())
    return hit / max(n, 1)


def measure(name, gts, preds) -> dict:
    from cvcurate.detector.evaluate import evaluate

    g, p = agnostic(gts), agnostic(preds)
    r = evaluate(g, p, ["defect"])
    row = {"data": name, "images": len(gts), "boxes": int(sum(len(x) for x in gts)), "ap50": r.map50,
           "ap50_95": r.map50_95, "covered_iou30_conf30": covered(g, p, 0.3, 0.3),
           "covered_iou50_conf30": covered(g, p, 0.3, 0.5),
           "predictions_conf30_per_image": float(np.mean([(x.confidence >= 0.3).sum() for x in p]))}
    print(json.dumps(row), flush=True)
    return row


def tiled(ck, recs, size: int):
    """Square tiles of each image's height, a quarter overlapping; boxes back in the image's frame,
    merged across tiles by class-agnostic NMS."""
    import cv2
    import torch
    from torchvision.ops import nms

    from cvcurate.detector.predict import predict_decoded
    from cvcurate.types import Annotations, ImageRecord

    out = []
    for r in recs:
        img = cv2.imread(r.filepath, cv2.IMREAD_GRAYSCALE)
        h, w = img.shape
        side = min(h, w)
        step = max(1, int(side * 0.75))
        xs = list(range(0, max(1, w - side + 1), step))
        if xs[-1] + side < w:
            xs.append(w - side)
        tiles = [cv2.resize(img[:, x:x + side], (size, size), interpolation=cv2.INTER_AREA) for x in xs]
        recs_t = [ImageRecord("", side, h, Annotations.empty()) for _ in xs]
        anns = predict_decoded(ck, recs_t, tiles)
        boxes = np.concatenate([a.xyxy + [x, 0, x, 0] for a, x in zip(anns, xs)])
        conf = np.concatenate([a.confidence for a in anns])
        keep = nms(torch.from_numpy(boxes).float(), torch.from_numpy(conf).float(), 0.5).numpy()[:100]
        out.append(Annotations(boxes[keep], np.zeros(len(keep), np.int64), conf[keep]))
    return out


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--severstal", type=Path, default=REPO.parent / "shared" / "data" / "severstal-sample")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--synth", type=int, default=300, help="synthetic images to draw (0: none)")
    ap.add_argument("--synth-seed", type=int, default=7)
    args = ap.parse_args()
    import torch

    from cvcurate import formats
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.data import holdout_split, subset
    from cvcurate.detector.predict import predict

    torch.set_num_threads(2)
    ck = load_checkpoint("neu-det")
    rows = []
    if (args.data / "images").is_dir():
        labels, _ = formats.load(args.data, formats.ImportOptions(voc_origin="1"))
        _, ho = holdout_split(labels, 0.2, 0)
        held = subset(labels, ho)
        rows.append(measure("NEU-DET, the 240 held out", [r.gt for r in held.records], predict(ck, held.records, 16)))
    if args.severstal.is_dir():
        sev, _ = formats.load(args.severstal)
        gts = [r.gt for r in sev.records]
        rows.append(measure("Severstal sample, whole image squeezed", gts, predict(ck, sev.records, 16)))
        rows.append(measure("Severstal sample, square tiles", gts, tiled(ck, sev.records, ck.input_size)))
    if args.synth:
        import tempfile

        from cvcurate.detector.evaluate import evaluate
        from cvcurate.detector.predict import remap_classes
        from cvcurate.synth import generate

        with tempfile.TemporaryDirectory() as tmp:
            syn = generate(Path(tmp) / "s", args.synth, args.synth_seed)
            gts = [r.gt for r in syn.records]
            preds = remap_classes(predict(ck, syn.records, 16), ck.class_map(syn.classes, "the synthetic data"))
            row = measure(f"synthetic, {args.synth} images (seed {args.synth_seed})", gts, preds)
            r = evaluate(gts, preds, syn.classes)
            row.update(classwise_ap50=r.map50, per_class_ap50={c: None if v is None else round(v, 3) for c, v in r.ap50.items()})
            print(json.dumps({"data": row["data"], "classwise_ap50": r.map50, "per_class": row["per_class_ap50"]}))
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
