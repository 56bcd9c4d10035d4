"""Benchmark: are the scores probabilities? Calibration, expected counts, flood and AP (#22).

Data the tool was not tuned on: the 240 NEU-DET dev images the shipped ``neu-det`` detector did
not train on (``--data``), and fresh synthetic data (``cvcurate synth``, seeds ``--synth-seeds``)
scored with the shipped ``default`` detector. For each: the labels as given (published NEU-DET
labels / clean synthetic labels), then copies with 10 % injected errors (``--seeds``), each scored
from scratch as a user would (its own calibration). Printed per run: issues listed and flagged
(p >= 0.5), share of images flagged, expected real label errors (sum of p), the held-out
calibration error of the run, AP of the injected errors (image ranking), the expected count of
the copy minus that of the original against the number injected, and (synthetic data, whose
labels are exact) the calibration error of p against the truth.

    python scripts/bench/bench_calibration.py [--seeds 0 1 2] [--synth-seeds 11 12] [--synth-images 400]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["CVCURATE_PROGRESS"] = "0"

import common  # noqa: E402  (scripts/bench/common.py)
import numpy as np  # noqa: E402


def truth_ece(res, errors):
    """ECE (10 bins) of the label-error issues' p against whether they point at an injected error."""
    from cvcurate.boxes import iou
    from cvcurate.scoring import LABEL_ERROR_TYPES

    by: dict[str, list] = {}
    for e in errors:
        by.setdefault(e.filepath, []).append(e)
    ps, ys = [], []
    for i in res.issues:
        if i.type not in LABEL_ERROR_TYPES:
            continue
        real = False
        for e in by.get(i.filepath, []):
            real |= i.box is not None and i.box in e.boxes
            if i.type == "overlooked" and e.type == "overlooked":
                real |= iou(np.array(i.data["pred_box"]), np.array(e.original[0])) >= 0.3
        ps.append(i.score)
        ys.append(real)
    ps, ys = np.array(ps), np.array(ys, float)
    if not len(ps):
        return float("nan")
    b = np.minimum((ps * 10).astype(int), 9)
    return float(sum((b == k).mean() * abs(ps[b == k].mean() - ys[b == k].mean()) for k in range(10) if (b == k).any()))


def run(name, labels, preds, feats, seeds, rate, exact):
    from cvcurate import corrupt
    from cvcurate.scoring import score
    from cvcurate.scoring.truth import truth_metrics
    from cvcurate.scoring.summary import run_summary

    t = time.perf_counter()
    r0 = score(labels, predictions=preds, features=feats)
    s0 = run_summary(r0)
    print(f"\n{name}: {len(labels)} images, {labels.num_boxes} boxes; scored in {time.perf_counter() - t:.1f} s "
          f"(calibration {r0.calibration.seconds:.1f} s)")
    print("| run | listed | flagged | images flagged | expected label errors | held-out ECE | AP | "
          "expected - original vs injected | truth ECE |")
    print("|---|---|---|---|---|---|---|---|---|")
    e0 = s0["expected_label_errors"]
    orig_ece = truth_ece(r0, []) if exact else float("nan")
    print(f"| labels as given | {s0['issues']} | {s0['flagged']} | {s0['flagged_images'] / len(labels):.1%} | {e0:.1f} | "
          f"{r0.calibration.ece.get('all', float('nan')):.3f} | - | - | {orig_ece:.3f} |")
    for seed in seeds:
        cr = corrupt.corrupt(labels, rate=rate, seed=seed)
        r = score(cr.labels, predictions=preds, features=feats)
        s = run_summary(r)
        m = truth_metrics(r, cr.to_dict())
        te = truth_ece(r, cr.errors) if exact else float("nan")
        print(f"| +{len(cr.errors)} injected (seed {seed}) | {s['issues']} | {s['flagged']} | "
              f"{s['flagged_images'] / len(labels):.1%} | {s['expected_label_errors']:.1f} | "
              f"{r.calibration.ece.get('all', float('nan')):.3f} | {m.average_precision:.3f} | "
              f"{s['expected_label_errors'] - e0:+.1f} vs {len(cr.errors)} | {te:.3f} |")


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--synth-seeds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--synth-images", type=int, default=400)
    ap.add_argument("--rate", type=float, default=0.1)
    args = ap.parse_args()
    import platform

    from cvcurate import formats
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.data import holdout_split, subset
    from cvcurate.detector.predict import predict
    from cvcurate.scoring.images import image_features
    from cvcurate.synth import generate

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if (args.data / "images").is_dir():
        labels, _ = formats.load(args.data, formats.ImportOptions(voc_origin="1"))
        _, held_idx = holdout_split(labels, 0.2, 0)
        held = subset(labels, held_idx)
        preds = predict(load_checkpoint("neu-det", classes=labels.classes), held.records, batch_size=16)
        run("NEU-DET, 240 dev images the shipped detector did not train on", held, preds,
            image_features([r.filepath for r in held.records]), args.seeds, args.rate, exact=False)
    else:
        print(f"NEU-DET skipped: {args.data} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.synth_seeds:
            lab = generate(Path(tmp) / f"s{seed}", args.synth_images, seed)
            pr = predict(load_checkpoint("default", classes=lab.classes), lab.records, batch_size=16)
            run(f"synthetic, seed {seed}", lab, pr, image_features([r.filepath for r in lab.records]), args.seeds,
                args.rate, exact=True)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_on_private_database(main))
