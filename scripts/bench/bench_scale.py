"""Benchmark: how scoring (no pixels) and the store round trip grow with the number of images.

Synthetic NEU-DET-like records (200x200 images, 6 classes, 1 + Poisson(1.3) boxes per image,
mean ~2.3, at most 9), with detector-like predictions: per given box a few jittered copies (the
first of its class at good confidence, some of another class), the rest random low-confidence
boxes, ``--preds`` per image in all. Each measurement runs in a subprocess of its own, so its
peak memory (``ru_maxrss``) is its own:

* score: ``cvcurate.scoring.score(labels, predictions=...)`` with the default config, no pixels;
  the time of each part (geometry checks, ObjectLab, combination) is taken by wrapping the
  functions ``score`` calls (the scoring code is not changed);
* store: ``store.write`` (ground truth) + ``store.read`` + ``store.write_detections`` of the
  predictions + ``store.read(pred_field=...)`` (what the score stage reads), on a private
  database started for the run (never the user's);
* io: ``import`` of that many 200x200 JPEG files with a COCO file (every image checked), then
  ``export`` to COCO and to YOLO with symlinked media (``--only io:100000:0``).

Memory: "base" is the resident size once the records are built, "peak" the high-water mark of
the process, "extra" = peak - base (what the measured step itself needs).

    python scripts/bench/bench_scale.py                      # the default plan (about 12 min on 2 cores)
    python scripts/bench/bench_scale.py --only score:10000:100
    python scripts/bench/bench_scale.py --only score:1000000:10 --gc-freeze
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# (what, images, predictions per image); 1M images with 10 predictions each: 100 would be 100M
# predictions (~5 GB as arrays alone, several times that in pairs) on a 23 GB machine
PLAN = [("score", 10_000, 100), ("score", 100_000, 100), ("score", 10_000, 10), ("score", 100_000, 10),
        ("score", 1_000_000, 10), ("store", 10_000, 100), ("store", 100_000, 100)]
CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synth(n: int, preds_per_image: int, seed: int = 0):
    """``n`` NEU-like records and their predictions, built with flat numpy arrays."""
    import numpy as np

    from cvcurate.types import Annotations, ImageRecord, LabelSet

    rng = np.random.default_rng(seed)
    size, k = 200, len(CLASSES)
    n_gt = np.minimum(1 + rng.poisson(1.3, n), 9)
    total = int(n_gt.sum())
    wh = rng.uniform(15, 120, (total, 2))
    xy = rng.uniform(0, 1, (total, 2)) * (size - wh)
    gt_xyxy = np.hstack([xy, xy + wh])
    gt_cls = rng.integers(0, k, total)
    # predictions: 3 jittered copies per given box (first: its class, good confidence; then
    # lower, 1 in 5 of another class), the rest random boxes at low confidence
    near_src = np.repeat(np.arange(total), 3)
    keep = (np.arange(3 * total) % 3) < np.repeat(np.minimum(3, preds_per_image // np.maximum(n_gt, 1)), n_gt * 3)
    near_src = near_src[keep]
    near = gt_xyxy[near_src] + rng.normal(0, 3, (len(near_src), 4))
    first = (np.arange(3 * total) % 3 == 0)[keep]
    near_cls = np.where(first | (rng.uniform(size=len(near_src)) > 0.2), gt_cls[near_src], rng.integers(0, k, len(near_src)))
    near_conf = np.where(first, rng.uniform(0.5, 0.95, len(near_src)), rng.uniform(0.05, 0.5, len(near_src)))
    near_img = np.repeat(np.arange(n), n_gt)[near_src]
    n_near = np.bincount(near_img, minlength=n)
    n_rand = preds_per_image - n_near
    r_total = int(n_rand.sum())
    rwh = rng.uniform(10, 100, (r_total, 2))
    rxy = rng.uniform(0, 1, (r_total, 2)) * (size - rwh)
    rand = np.hstack([rxy, rxy + rwh])
    rand_cls = rng.integers(0, k, r_total)
    rand_conf = rng.uniform(0.001, 0.3, r_total)
    gt_ends = np.cumsum(n_gt)[:-1]
    near_ends, rand_ends = np.cumsum(n_near)[:-1], np.cumsum(n_rand)[:-1]
    near = np.clip(near, 0, size)
    records, preds = [], []
    parts = zip(np.split(gt_xyxy, gt_ends), np.split(gt_cls, gt_ends), np.split(near, near_ends),
                np.split(near_cls, near_ends), np.split(near_conf, near_ends), np.split(rand, rand_ends),
                np.split(rand_cls, rand_ends), np.split(rand_conf, rand_ends))
    for i, (gx, gc, nx, nc, nf, rx, rc, rf) in enumerate(parts):
        records.append(ImageRecord(filepath=f"/synthetic/img_{i:07d}.jpg", width=size, height=size,
                                   gt=Annotations(gx, gc), split="train"))
        preds.append(Annotations(np.vstack([nx, rx]), np.concatenate([nc, rc]), confidence=np.concatenate([nf, rf])))
    return LabelSet(classes=list(CLASSES), records=records), preds


def run_score(n: int, p: int) -> dict:
    import cvcurate.scoring as sc

    t = time.perf_counter()
    labels, preds = synth(n, p)
    build_s = time.perf_counter() - t
    parts: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    if os.environ.get("BENCH_GC_FREEZE"):  # the records built: out of the garbage collector's sight
        import gc

        gc.collect()
        gc.freeze()
    for name in ("box_issues", "size_outliers", "style_issues", "class_mix_issues", "objectlab_scores",
                 "relative_scores"):  # relative_scores: trees before the calibrated scores (3ce1ea7)
        if hasattr(sc, name):
            setattr(sc, name, timed(name, getattr(sc, name)))
    base = rss_mb()
    t = time.perf_counter()
    result = sc.score(labels, predictions=preds)
    wall = time.perf_counter() - t
    parts["combine"] = wall - sum(parts.values())
    if getattr(result, "calibration", None) is not None:  # inside objectlab_scores: not added to the sum
        parts["of which calibration"] = result.calibration.seconds
    return {"what": "score", "images": n, "preds": p, "boxes": labels.num_boxes,
            "predictions": int(sum(len(x) for x in preds)), "build_s": build_s, "wall_s": wall,
            "parts_s": parts, "issues": len(result.issues), "base_mb": base, "peak_mb": peak_mb()}


def run_store(n: int, p: int) -> dict:
    from cvcurate import store

    t = time.perf_counter()
    labels, preds = synth(n, p)
    build_s = time.perf_counter() - t
    base = rss_mb()
    out = {"what": "store", "images": n, "preds": p, "boxes": labels.num_boxes,
           "predictions": int(sum(len(x) for x in preds)), "build_s": build_s, "base_mb": base}
    with store.private_database():
        name = "bench_scale"
        t = time.perf_counter()
        store.list_datasets()  # import fiftyone and connect before timing
        out["connect_s"] = time.perf_counter() - t
        t = time.perf_counter()
        store.write(labels, name)
        out["write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        back = store.read(name)
        out["read_s"] = time.perf_counter() - t
        by_path = {r.filepath: i for i, r in enumerate(labels.records)}
        t = time.perf_counter()
        store.write_detections(name, "predictions", back.records, [preds[by_path[r.filepath]] for r in back.records],
                               labels.classes)
        out["write_pred_s"] = time.perf_counter() - t
        del back
        t = time.perf_counter()
        both = store.read(name, pred_field="predictions")
        out["read_pred_s"] = time.perf_counter() - t
        assert len(both.records) == n
        out["wall_s"] = out["write_s"] + out["read_s"] + out["write_pred_s"] + out["read_pred_s"]
    out["peak_mb"] = peak_mb()
    return out


def run_io(n: int, p: int) -> dict:
    """Import of ``n`` image files with a COCO file (the importer checks every image), then exports
    to COCO and YOLO with symlinked media (``p`` is unused: ground truth only). The images are
    200 x 200 grayscale JPEGs, each its own bytes, written before timing."""
    import shutil
    import tempfile

    import cv2
    import numpy as np

    from cvcurate import store
    from cvcurate.formats import ImportOptions, coco
    from cvcurate.stages import export as export_stage
    from cvcurate.stages import imports

    labels, _ = synth(n, 1)
    root = Path(tempfile.mkdtemp(prefix="cvcurate-io-"))
    try:
        t = time.perf_counter()
        (root / "images").mkdir()
        base = np.full((200, 200), 128, np.uint8)
        rng = np.random.default_rng(0)
        for i, rec in enumerate(labels.records):
            img = base.copy()
            img[rng.integers(0, 200, 8), rng.integers(0, 200, 8)] = rng.integers(0, 256, 8)
            path = root / "images" / f"img_{i:07d}.jpg"
            cv2.imwrite(str(path), img)
            rec.filepath = str(path)
        coco.write(labels, root / "annotations.json", root=root / "images")
        out = {"what": "io", "images": n, "preds": 0, "boxes": labels.num_boxes,
               "files_s": time.perf_counter() - t, "base_mb": rss_mb()}
        with store.private_database():
            store.list_datasets()
            t = time.perf_counter()
            res = imports.import_dataset(root, "bench_io", ImportOptions(format="coco"))
            out["import_s"] = time.perf_counter() - t
            out["imported"] = res.write.added
            for fmt in ("coco", "yolo"):
                t = time.perf_counter()
                export_stage.export("bench_io", root / f"export_{fmt}", format=fmt, media="symlink", log=lambda s: None)
                out[f"export_{fmt}_s"] = time.perf_counter() - t
        out["wall_s"] = out["import_s"] + out["export_coco_s"] + out["export_yolo_s"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["peak_mb"] = peak_mb()
    return out


def child(what: str, n: int, p: int) -> None:
    result = {"score": run_score, "store": run_store, "io": run_io}[what](n, p)
    print("RESULT " + json.dumps(result), flush=True)
    # without this the process waits ~30 s at exit: FiftyOne's exit handler looks for the private
    # database that private_database() has already stopped
    os._exit(0)


def table(results: list[dict]) -> str:
    lines = ["| step | images | preds/img | boxes | wall s | per 1k images s | base MB | peak MB | extra MB | parts |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['what']} | {r['images']:,} | {r['preds']} | | failed: {r['error']} | | | | | |")
            continue
        if r["what"] == "io":
            parts = (f"import {r['import_s']:.1f}, export coco {r['export_coco_s']:.1f}, export yolo "
                     f"{r['export_yolo_s']:.1f} (making the files {r['files_s']:.1f}, not counted)")
        elif r["what"] == "score":
            parts = ", ".join(f"{k.replace('_issues', '').replace('_scores', '')} {v:.1f}"
                              for k, v in r["parts_s"].items())
        else:
            parts = (f"write {r['write_s']:.1f}, read {r['read_s']:.1f}, write preds {r['write_pred_s']:.1f}, "
                     f"read with preds {r['read_pred_s']:.1f}")
        lines.append(f"| {r['what']} | {r['images']:,} | {r['preds']} | {r['boxes']:,} | {r['wall_s']:.1f} | "
                     f"{1000 * r['wall_s'] / r['images']:.2f} | {r['base_mb']:.0f} | {r['peak_mb']:.0f} | "
                     f"{r['peak_mb'] - r['base_mb']:.0f} | {parts} |")
    return "\n".join(lines)


def main() -> int:
    import argparse
    import platform

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="WHAT:IMAGES:PREDS entries instead of the default plan")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--timeout", type=float, default=900, help="per measurement, seconds")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() once the records are built (score only): what the garbage collector costs")
    args = ap.parse_args()
    plan = [(w, int(n), int(p)) for w, n, p in (e.split(":") for e in args.only)] if args.only else PLAN
    results = []
    for what, n, p in plan:
        t = time.perf_counter()
        try:
            env = {**os.environ, **({"BENCH_GC_FREEZE": "1"} if args.gc_freeze else {})}
            proc = subprocess.run([sys.executable, __file__, "--child", what, str(n), str(p)], capture_output=True,
                                  text=True, timeout=args.timeout, env=env)
        except subprocess.TimeoutExpired:
            results.append({"what": what, "images": n, "preds": p, "error": f"over {args.timeout:.0f} s"})
            continue
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            results.append({"what": what, "images": n, "preds": p, "error": f"exit {proc.returncode}: {tail[:120]}"})
        else:
            results.append(json.loads(line[7:]))
        print(f"{what} {n:,} x {p}: {time.perf_counter() - t:.0f} s total", file=sys.stderr, flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GB; python {platform.python_version()}")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main())
