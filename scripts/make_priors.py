"""Fit the shipped priors (src/cvcurate/weights/priors.json): the calibration curves of every
prediction-based issue type, fitted the same way ``cvcurate score`` fits them on a user's data
(:mod:`cvcurate.scoring.calibrate`), here on fresh synthetic data (``cvcurate synth``) with 30 %
known errors, scored with the shipped ``default`` detector. Used where a dataset is too small to
calibrate on.

    python scripts/make_priors.py [--images 600] [--seed 101]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--seed", type=int, default=101)
    args = ap.parse_args()
    from cvcurate import corrupt
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.predict import predict
    from cvcurate.scoring import score
    from cvcurate.scoring.calibrate import PRIOR_FILE
    from cvcurate.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        labels = generate(Path(tmp) / "synth", args.images, args.seed)
        preds = predict(load_checkpoint("default", classes=labels.classes), labels.records, batch_size=16)
        noisy = corrupt.corrupt(labels, rate=0.3, seed=args.seed).labels
        res = score(noisy, predictions=preds)
    curves = [c.to_dict() for (t, cls), c in res.calibration.curves.items() if cls is None]
    doc = {"made_by": f"scripts/make_priors.py --images {args.images} --seed {args.seed}",
           "data": "cvcurate synth, 30 % injected errors (a high rate on purpose: a prior should not rule a type out), shipped default detector", "curves": curves}
    PRIOR_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {PRIOR_FILE}: " + ", ".join(f"{c['type']} ({c['how']}, natural {c['natural']})" for c in curves))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
