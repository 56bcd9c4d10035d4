#!/usr/bin/env python
"""Benchmark the detector on this machine: inference speed, training time per epoch, held-out mAP.

  python scripts/bench/bench_detector.py [--checkpoint src/cvcurate/weights/neu-det.pt] [--measure-epoch]

* inference: images/s at batch 16, (a) the network alone on pre-loaded tensors at the model's input
  size, (b) end to end with ``predict()`` from the JPEG files (decode, resize, network, boxes back);
* training: seconds per epoch as recorded in the checkpoint while it was trained (median), and
  with ``--measure-epoch`` one fresh epoch on the 80% training part timed here;
* accuracy: mAP@0.5 and mAP@0.5:0.95 (pycocotools) per class on the fixed seeded 20% of NEU-DET
  (``holdout_split(labels, 0.2, seed)``). The checkpoint is used only when its metadata proves it
  was trained on exactly the complementary 80% (SHA-256 of the training part equals the
  checkpoint's ``data_sha256``); otherwise the script stops.

Prints a markdown table row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO / "src" / "cvcurate" / "weights" / "neu-det.pt"))
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "neu-det")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10, help="timed batches for the network-only speed")
    ap.add_argument("--measure-epoch", action="store_true", help="also time one fresh training epoch")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here too")
    args = ap.parse_args()

    import torch

    from cvcurate import formats
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.data import data_fingerprint, holdout_split, load_gray, subset
    from cvcurate.detector.evaluate import evaluate
    from cvcurate.detector.model import count_parameters
    from cvcurate.detector.predict import predict

    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    labels, _ = formats.load(args.data_dir, formats.ImportOptions(voc_origin="1"))  # NEU-DET is 1-based (README)
    ckpt.check_classes(labels.classes, "NEU-DET")
    seed = int(ckpt.extra.get("split_seed", 0))
    frac = float(ckpt.extra.get("holdout_fraction", 0.2))
    tr_idx, ho_idx = holdout_split(labels, frac, seed)
    tr, ho = subset(labels, tr_idx), subset(labels, ho_idx)
    if data_fingerprint(tr) != ckpt.data_sha256:
        sys.exit("the checkpoint was not trained on the complementary 80% of this NEU-DET split "
                 "(training-data SHA-256 differs): its held-out mAP would not be honest")
    model = ckpt.model()
    size = ckpt.input_size
    bs = args.batch_size

    # (a) network only, pre-loaded tensors
    imgs = [torch.from_numpy(load_gray(r.filepath, size, (r.width, r.height))).float().div(255)[None]
            for r in ho.records[:bs]]
    with torch.inference_mode():
        model(imgs)
        model(imgs)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            model(imgs)
            times.append(time.perf_counter() - t)
    net_ips = bs / statistics.median(times)

    # (b) end to end on the held-out JPEGs (includes the accuracy predictions)
    predict(ckpt, ho.records[:bs], batch_size=bs)
    t = time.perf_counter()
    preds = predict(ckpt, ho.records, batch_size=bs)
    e2e_ips = len(ho.records) / (time.perf_counter() - t)

    res = evaluate([r.gt for r in ho.records], preds, labels.classes)

    spe = ckpt.extra.get("seconds_per_epoch") or []
    rec_epoch = statistics.median(spe[1:] or spe) if spe else float("nan")
    fresh_epoch = None
    if args.measure_epoch:
        from cvcurate.detector.config import DetectorConfig, ModelConfig, TrainConfig
        from cvcurate.config import from_dict
        from cvcurate.detector.train import train

        tc = from_dict(TrainConfig, {**ckpt.train_config, "epochs": 1, "time_budget_min": 0.0})
        cfg = DetectorConfig(model=from_dict(ModelConfig, ckpt.model_config), train=tc)
        fresh = train(tr, cfg, progress=False)
        fresh_epoch = fresh.extra["train_seconds"]

    print(f"checkpoint {args.checkpoint}: {ckpt.arch}, {count_parameters(model) / 1e6:.2f} M parameters, "
          f"input {size}x{size} gray, trained {ckpt.created} on {len(tr)} images "
          f"({ckpt.extra.get('epochs_done', '?')} epochs, {ckpt.extra.get('train_wall_seconds', float('nan')) / 60:.1f} min)")
    print(f"held-out: {len(ho)} images (seed {seed}); checkpoint training-data SHA-256 matches the other "
          f"{len(tr)} images")
    print()
    print(res.format())
    print()
    print(f"inference, batch {bs}, {args.threads} threads: network only {net_ips:.1f} images/s; "
          f"end to end from JPEG {e2e_ips:.1f} images/s")
    print(f"training: {rec_epoch:.1f} s/epoch while training (median, {len(tr)} images)"
          + (f"; {fresh_epoch:.1f} s for one fresh epoch here (incl. first decode)" if fresh_epoch else ""))
    cpu = platform.processor() or platform.machine()
    machine = f"{os.cpu_count()} cores {cpu}, no GPU" if not torch.cuda.is_available() else f"{cpu} + GPU"
    print()
    print("| machine | model | input | net img/s (b16) | end-to-end img/s | s/epoch (960 img) | train min | "
          "mAP@0.5 held-out 20% | mAP@0.5:0.95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {machine} | {ckpt.arch} {count_parameters(model) / 1e6:.1f}M | {size} gray | {net_ips:.0f} | "
          f"{e2e_ips:.0f} | {rec_epoch:.1f} | {ckpt.extra.get('train_wall_seconds', float('nan')) / 60:.0f} | "
          f"{res.map50:.3f} | {res.map50_95:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"net_images_per_s": net_ips, "e2e_images_per_s": e2e_ips,
                                         "seconds_per_epoch": rec_epoch, "fresh_epoch_seconds": fresh_epoch,
                                         "eval": res.to_dict(), "machine": machine,
                                         "torch": torch.__version__}, indent=2, default=str))


if __name__ == "__main__":
    main()
