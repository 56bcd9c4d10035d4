#!/usr/bin/env python
"""Does augmentation help a starved class? The proof of issue 14, on NEU-DET.

The dev split is the shipped detector's training part of NEU-DET (``holdout_split(labels, 0.2,
seed=0)``); its 240 held-out images are the untouched evaluation split. One class is starved: only
``--keep`` (15 %) of the training images that carry it stay. Then the shipped detector configuration
(configs/detector.yaml) is trained with the same wall-time budget

  (a) on the starved set, and
  (b) on the starved set plus what ``cvcurate augment --classes C`` (the starved class raised to the
      largest class's instance count, pipeline ``steel``: flips, small affine, photometric, copy-paste)
      makes of it,

and both are evaluated on the evaluation split: the starved class's AP@0.5 and the mAP@0.5.

    python scripts/bench/bench_augment_value.py --class scratches --budget-min 10 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "neu-det")
    ap.add_argument("--class", dest="cls", default="scratches")
    ap.add_argument("--keep", type=float, default=0.15)
    ap.add_argument("--budget-min", type=float, default=10.0, help="training wall time of each model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    args = ap.parse_args()

    import numpy as np
    import torch

    from cvcurate import formats
    from cvcurate.augment import load_pipeline, plan_and_run
    from cvcurate.detector.config import load_detector_config
    from cvcurate.detector.data import holdout_split, subset
    from cvcurate.detector.evaluate import evaluate
    from cvcurate.detector.predict import predict
    from cvcurate.detector.train import train
    from cvcurate.types import LabelSet

    torch.set_num_threads(args.threads)
    labels, _ = formats.load(args.data, formats.ImportOptions(voc_origin="1"))  # NEU-DET's XMLs are 1-based
    c = labels.classes.index(args.cls)
    tr, ho = holdout_split(labels, 0.2, seed=0)
    dev, held = subset(labels, tr), subset(labels, ho)
    results = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        with_c = [i for i, r in enumerate(dev.records) if (r.gt.class_id == c).any()]
        keep_c = set(rng.choice(with_c, max(1, int(round(args.keep * len(with_c)))), replace=False).tolist())
        starved = LabelSet(dev.classes, [r for i, r in enumerate(dev.records) if i not in with_c or i in keep_c])
        n_c = int(sum((r.gt.class_id == c).sum() for r in starved.records))
        tmp = Path(tempfile.mkdtemp(prefix="cvcurate-augvalue-"))
        t0 = time.time()
        plan, run = plan_and_run(starved, load_pipeline("steel"), tmp / "aug", classes=[args.cls], seed=seed,
                                 workers=args.threads)
        aug_s = time.time() - t0
        augmented = LabelSet(dev.classes, starved.records + run.records)
        row = {"seed": seed, "class": args.cls, "train_images_with_class": len(keep_c), "of": len(with_c),
               "class_instances_starved": n_c, "augmented_samples": len(run.records),
               "class_instances_after": run.counts_after[args.cls], "augment_seconds": round(aug_s, 1)}
        for what, data in (("starved", starved), ("starved+augment", augmented)):
            cfg = load_detector_config(overrides={"train": {"seed": seed, "time_budget_min": args.budget_min}})
            t0 = time.time()
            ckpt = train(data, cfg, progress=False, log=lambda s: None)
            train_s = time.time() - t0
            res = evaluate([r.gt for r in held.records], predict(ckpt, held.records, 16), labels.classes)
            row[what] = {"train_images": len(data.records), "train_seconds": round(train_s), "epochs":
                         ckpt.extra.get("epochs_done"), "ap50_class": res.ap50[args.cls], "map50": res.map50,
                         "ap50": res.ap50}
            print(f"seed {seed} {what:<16} {len(data.records):>5} images, {ckpt.extra.get('epochs_done')} epochs: "
                  f"AP@0.5 {args.cls} {res.ap50[args.cls]:.3f}, mAP@0.5 {res.map50:.3f}", flush=True)
        row["gain_ap50_class"] = row["starved+augment"]["ap50_class"] - row["starved"]["ap50_class"]
        row["gain_map50"] = row["starved+augment"]["map50"] - row["starved"]["map50"]
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("starved", "starved+augment")}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
