"""Benchmark: ``--engine local`` against ``--engine ray`` with 1 and 2 workers, for predict, score and
augment, in one run on the same synthetic images.

Each configuration gets its own copy of the dataset (imported, not timed) on a private database,
then runs the three stages as the commands do (``stages.predict.predict`` with the shipped
``synth`` model, ``stages.score.run_score`` with pixels, ``stages.augment.augment`` with its
defaults into a folder of its own), each timed as a whole: with Ray that includes starting a local
Ray with ``--workers`` CPUs and its workers' imports, as a user pays them per command. Images per
second are over the dataset's images (augment: over the samples it adds).

    python scripts/bench/bench_engines.py [--images 600] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray workers to try")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--stages", nargs="+", choices=["predict", "score", "augment"],
                    default=["predict", "score", "augment"], help="the stages to time (predict always runs)")
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("skipped: ray is not installed (pip install 'cvcurate[ray]')")
        return 0
    import torch  # noqa: F401  (imported before timing: every configuration finds it loaded)

    import cvcurate.detector.predict  # noqa: F401
    from cvcurate import store
    from cvcurate.stages.augment import augment
    from cvcurate.stages.imports import import_dataset
    from cvcurate.stages.predict import predict
    from cvcurate.stages.score import run_score
    from cvcurate.synth import generate

    work = Path(tempfile.mkdtemp(prefix="cvcurate-engines-"))
    configs = [("local", None)] + [("ray", w) for w in args.workers]
    rows = []
    try:
        generate(work / "data", args.images, 0)
        with store.private_database():
            for k, (engine, workers) in enumerate(configs):
                name = f"bench_engines_{k}"
                import_dataset(work / "data", name)
                row = {"engine": engine, "workers": workers, "images": args.images}
                t = time.perf_counter()
                predict(name, model="synth", engine=engine, workers=workers)
                row["predict_s"] = time.perf_counter() - t
                if "score" in args.stages:
                    t = time.perf_counter()
                    run_score(name, engine=engine, workers=workers, out_dir=work / f"scores_{k}")
                    row["score_s"] = time.perf_counter() - t
                if "augment" in args.stages:
                    t = time.perf_counter()
                    run = augment(name, engine=engine, workers=workers, out=work / f"aug_{k}")
                    row["augment_s"] = time.perf_counter() - t
                    row["augmented"] = run.added
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.images} synthetic images\n")
    print("| engine | predict s (img/s) | score s (img/s) | augment s (samples/s) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        label = "local" if r["engine"] == "local" else f"ray, {r['workers']} worker(s)"
        score = f"{r['score_s']:.1f} ({r['images'] / r['score_s']:.0f})" if "score_s" in r else "-"
        aug = f"{r['augment_s']:.1f} ({r['augmented'] / max(r['augment_s'], 1e-9):.0f})" if "augment_s" in r else "-"
        print(f"| {label} | {r['predict_s']:.1f} ({r['images'] / r['predict_s']:.0f}) | {score} | {aug} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    os._exit(0)  # FiftyOne's exit handler would look for the private database, already stopped


if __name__ == "__main__":
    sys.exit(main())
