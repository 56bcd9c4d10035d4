"""Dev harness: the committed ranking over many seeds, on NEU-DET and on fresh synthetic data.

bench_score.py is the benchmark of record (3 seeds, three methods, throughput). This script is for
judging a change to the scoring before running it: the same injected errors (``cvcurate corrupt``,
rate 0.1) over more seeds, on two datasets, cvcurate only, no database. With 240 held-out images
there are 3-4 errors per type per seed, so one seed says little; and a change that helps NEU-DET
but not synthetic data (or the reverse) is probably fitted to one of them.

* ``neu``: the 240 NEU-DET images held out from the shipped ``neu-det`` detector, its predictions;
* ``synth``: ``--synth-images`` new synthetic images (seed 11, not the detector's training seed)
  and the shipped ``synth`` detector's predictions.

    python scripts/bench/score_seeds.py --dataset neu --seeds 8
    python scripts/bench/score_seeds.py --dataset synth --seeds 5
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ["CVCURATE_PROGRESS"] = "0"

import common  # noqa: E402  (scripts/bench/common.py)
import numpy as np  # noqa: E402
from bench_score import metrics  # noqa: E402


def load(dataset: str, data: Path, n_synth: int, tmp: Path):
    from cvcurate import formats
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.data import holdout_split, subset
    from cvcurate.detector.predict import predict

    if dataset == "neu":
        labels, _ = formats.load(data, formats.ImportOptions(voc_origin="1"))  # NEU-DET is 1-based (README)
        _, held = holdout_split(labels, 0.2, 0)
        labels, model = subset(labels, held), "neu-det"
    else:
        from cvcurate.synth.generator import generate

        labels, model = generate(tmp / "synth", n_synth, seed=11, workers=2), "synth"
    preds = predict(load_checkpoint(model, classes=labels.classes), labels.records, batch_size=16)
    return labels, preds


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--dataset", choices=["neu", "synth"], default="neu")
    ap.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    ap.add_argument("--synth-images", type=int, default=1000)
    args = ap.parse_args()
    if args.dataset == "neu" and not (args.data / "images").is_dir():
        print(f"skipped: {args.data} is absent")
        return 0
    from cvcurate import corrupt
    from cvcurate.scoring import score
    from cvcurate.scoring.images import image_features

    with tempfile.TemporaryDirectory(prefix="cvcurate-seeds-") as tmp:
        labels, preds = load(args.dataset, args.data, args.synth_images, Path(tmp))
        feats = image_features([r.filepath for r in labels.records])
    results: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        res = corrupt.corrupt(labels, rate=0.1, seed=seed)
        index = {r.filepath: i for i, r in enumerate(res.labels.records)}
        by_type: dict[str, set[int]] = {}
        for e in res.errors:
            by_type.setdefault(e.type, set()).add(index[e.filepath])
        corrupted = {i for s in by_type.values() for i in s}
        s = score(res.labels, predictions=preds, features=feats).image_score
        for key, (ap_, _) in metrics(s, corrupted, by_type, len(labels)).items():
            results.setdefault(key, []).append(ap_)
    print(f"{args.dataset}: {len(labels)} images, seeds 0-{args.seeds - 1}, rate 0.1; mean AP (sd over seeds)")
    for key, v in results.items():
        print(f"  {key:<11} {np.mean(v):.3f} ({np.std(v):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
