#!/usr/bin/env python
"""Time `cvcurate report` end to end on a stored dataset of N synthetic images (default 10,000):
the report stage reads labels and the score run from the store, the pixels (brightness slices), and
renders (thumbnails only for the top issues). Model-free score run, no predictions (no evaluation).
A private database; the images go to a temporary folder.

    python scripts/bench/bench_report_stage.py --images 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()
    from cvcurate.store import private_database

    tmp = Path(tempfile.mkdtemp(prefix="cvcurate-report-bench-"))
    with private_database():
        from cvcurate.stages.imports import ImportOptions, import_dataset
        from cvcurate.stages.report import report
        from cvcurate.stages.score import run_score
        from cvcurate.synth import generate

        t0 = time.perf_counter()
        generate(tmp / "data", args.images, 11, workers=2)
        t1 = time.perf_counter()
        import_dataset(tmp / "data", "bench", ImportOptions(format="voc"))
        t2 = time.perf_counter()
        run_score("bench", pixels=True, out_dir=tmp / "scores")
        t3 = time.perf_counter()
        res = report("bench", tmp / "report")
        t4 = time.perf_counter()
    size = res.paths["html"].stat().st_size / 1e6
    print(f"{args.images} images: synth {t1 - t0:.1f} s, import {t2 - t1:.1f} s, score {t3 - t2:.1f} s, "
          f"report {t4 - t3:.1f} s (HTML {size:.1f} MB); left out: {'; '.join(res.left_out) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
