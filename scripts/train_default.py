#!/usr/bin/env python
"""Train a shipped default detector checkpoint, reproducibly (seeded; seed and data hash recorded).

  python scripts/train_default.py --data neu-det --out src/cvcurate/weights/neu-det.pt
  python scripts/train_default.py --data synth --out src/cvcurate/weights/synth.pt

neu-det: trains on NEU-DET minus a fixed seeded, class-stratified 20% (``holdout_split(labels,
0.2, seed=0)``, the same split as ``scripts/bench/bench_detector.py``), then evaluates on that 20%
and stores the held-out metrics and the SHA-256 of both parts in the checkpoint.
synth: trains on ``--n-images`` images made by ``cvcurate.synth.generate(dir, n, seed)`` in a
temporary folder, holding out the generator's ``val`` split.
The model and training settings are ``configs/detector.yaml`` (or --config) with --epochs and
``--set section.key=value`` on top (e.g. ``--set train.ema=0.999``; ``--set train.init=synth`` fine-tunes
the synthetic weights for ``train.finetune_epochs`` unless --epochs).

The training state is saved after every epoch to ``OUT.state.pt`` (``--state``): run the same
command again after a kill and it resumes after the last finished epoch. ``--eval-every N``
evaluates the held-out part every N epochs and appends one JSON line per evaluation (epoch,
training seconds, mAP@0.5, per-class AP) to ``OUT.curve.jsonl``: the curve of mAP against CPU time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

NEU_DIR = REPO.parent / "shared" / "data" / "neu-det"


def load_data(args):
    if args.data == "neu-det":
        from cvcurate import formats

        # NEU-DET is 1-based (README)
        labels, _ = formats.load(args.data_dir or NEU_DIR, formats.ImportOptions(voc_origin="1"))
        return labels, {"source": "neu-det", "path": str(args.data_dir or NEU_DIR)}
    try:
        from cvcurate.synth import generate
    except ImportError as exc:
        sys.exit(f"cvcurate.synth.generate is not available: {exc}")
    out = Path(args.synth_dir or tempfile.mkdtemp(prefix="cvcurate-synth-"))
    # the same seed draws the same images: a re-run after a kill writes them again in place (the
    # training data's hash is unchanged) and resumes from its state file
    labels = generate(out, args.n_images, args.seed, overwrite=args.synth_dir is not None)
    return labels, {"source": "synth", "n_images": args.n_images, "generator_seed": args.seed, "path": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["neu-det", "synth"], required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="training and split seed")
    ap.add_argument("--time-budget-min", type=float, default=None,
                    help="wall-time cap for training (recorded in the checkpoint; see TrainConfig)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=None, help="NEU-DET folder")
    ap.add_argument("--synth-dir", type=Path, default=None,
                    help="where to generate synthetic images (written again on a re-run: the same seed draws "
                         "the same images, so a killed run resumes)")
    ap.add_argument("--n-images", type=int, default=1000, help="synthetic images to generate")
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting of the detector config, e.g. train.ema=0.999 (repeatable)")
    ap.add_argument("--state", type=Path, default=None, help="training state file (default: OUT.state.pt)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate the held-out part every N epochs")
    args = ap.parse_args()

    import torch

    from cvcurate.detector.checkpoint import check_checkpoint_path, save_checkpoint
    from cvcurate.detector.config import load_detector_config
    from cvcurate.detector.data import data_fingerprint, holdout_split, subset
    from cvcurate.detector.evaluate import evaluate
    from cvcurate.detector.predict import predict
    from cvcurate.detector.train import train

    import yaml

    from cvcurate.errors import InputError

    try:
        check_checkpoint_path(args.out)  # before hours of training
    except InputError as exc:
        sys.exit(f"error: {exc}")
    torch.set_num_threads(args.threads)
    overrides: dict = {"train": {"epochs": args.epochs, "seed": args.seed, "time_budget_min": args.time_budget_min}}
    for item in args.set:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not (sep and dot and key):
            sys.exit(f"--set takes SECTION.KEY=VALUE (e.g. train.ema=0.999), got {item!r}")
        overrides.setdefault(section, {})[key] = yaml.safe_load(value)
    cfg = load_detector_config(args.config, overrides=overrides)
    start = None
    if cfg.train.init:  # fine-tune from these weights (--set train.init=synth)
        from cvcurate.detector.checkpoint import load_checkpoint

        start = load_checkpoint(cfg.train.init)
        if args.epochs is None:
            cfg.train.epochs = cfg.train.finetune_epochs
    labels, source = load_data(args)
    splits = {r.split for r in labels.records}
    if args.data == "synth" and {"train", "val"} <= splits:  # the generator's own split
        tr_idx = [i for i, r in enumerate(labels.records) if r.split == "train"]
        ho_idx = [i for i, r in enumerate(labels.records) if r.split == "val"]
        source["heldout"] = "the generator's 'val' split"
    else:
        tr_idx, ho_idx = holdout_split(labels, args.holdout, seed=args.seed)
        source["heldout"] = f"holdout_split(fraction={args.holdout}, seed={args.seed})"
    tr, ho = subset(labels, tr_idx), subset(labels, ho_idx)
    print(f"{source['source']}: {len(labels)} images, classes {labels.classes}; training on {len(tr)}, "
          f"holding out {len(ho)} (seed {args.seed})", flush=True)
    state = args.state or args.out.with_suffix(".state.pt")
    curve = args.out.with_suffix(".curve.jsonl")

    def on_epoch(epoch, snapshot):
        if not args.eval_every or (epoch % args.eval_every and epoch != cfg.train.epochs):
            return
        ck = snapshot()
        r = evaluate([r.gt for r in ho.records], predict(ck, ho.records, batch_size=16), labels.classes)
        row = {"epoch": epoch, "seconds_since_start": round(time.time() - t0, 1),  # this process (resumes restart it)
               "threads": args.threads, "map50": r.map50, "map50_95": r.map50_95, "ap50": r.ap50}
        with curve.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"epoch {epoch}: held-out mAP@0.5 {r.map50:.4f}", flush=True)

    t0 = time.time()
    ckpt = train(tr, cfg, device="cpu", progress=False, log=lambda s: print(s, flush=True), state_path=state,
                 on_epoch=on_epoch, init=start)
    train_s = time.time() - t0
    save_checkpoint(ckpt, args.out)  # kept even if the evaluation below fails
    t1 = time.time()
    preds = predict(ckpt, ho.records, batch_size=16)
    pred_s = time.time() - t1
    res = evaluate([r.gt for r in ho.records], preds, labels.classes)
    print(res.format(), flush=True)
    ckpt.metrics["heldout"] = res.to_dict()
    ckpt.extra.update({
        "data": source, "holdout_fraction": args.holdout, "split_seed": args.seed,
        "heldout_sha256": data_fingerprint(ho), "all_data_sha256": data_fingerprint(labels),
        "heldout_images": len(ho), "train_wall_seconds": train_s, "heldout_predict_seconds": pred_s,
        "threads": args.threads, "made_by": "scripts/train_default.py",
    })
    path = save_checkpoint(ckpt, args.out)
    size_mb = path.stat().st_size / 1e6
    print(f"saved {path} ({size_mb:.1f} MB); training {train_s / 60:.1f} min; held-out mAP@0.5 "
          f"{res.map50:.4f}, mAP@0.5:0.95 {res.map50_95:.4f}", flush=True)
    summary = path.with_suffix(".json")
    meta = ckpt.meta()
    meta["extra"] = {k: v for k, v in meta["extra"].items() if k != "step_losses"}  # in the .pt only
    summary.write_text(json.dumps(meta, indent=2, default=str))
    if size_mb > 20:
        sys.exit(f"checkpoint is {size_mb:.1f} MB, over the 20 MB limit")


if __name__ == "__main__":
    main()
