"""Benchmark: augmented images/s at 200 px (grey), CPU workers and the batched GPU path.

Synthetic NEU-DET-like images (``cvcurate.synth``, 200x200 grey PNG) are the sources. Measured:

* CPU, end to end (``run_augmentation``: read, copy-paste, albumentations, PNG encode, write the
  image and its labels) with 1 and 2 worker processes, for each shipped pipeline; "steady" leaves
  out the start of the spawned workers (importing albumentations), "total" includes it.
  Target: at least 500 images/s on 2 cores.
* CPU, augmentation only (``apply`` on images in memory, one process), for reference.
* The batched path (``BatchAugment``: per-sample parameters, variable box counts) on images
  already on the device: on CUDA when there is a GPU (target at least 10,000 images/s; the GPU
  name and batch size are printed), and on the CPU for reference. Skipped with a line when CUDA
  is absent.

    python scripts/bench/bench_augment.py [--samples 3000] [--repeats 2] [--sources 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")


def cpu_end_to_end(labels, pipe, n_samples: int, workers: int, root: Path, repeats: int) -> tuple[float, float, int, float]:
    from cvcurate.augment import make_plan, run_augmentation

    cp = pipe.settings.copy_paste
    counts = labels.class_counts()
    rare = min(counts, key=counts.get)
    # plan far past what is needed, keep the first n_samples jobs, no top-up: exactly n samples
    plan = make_plan(labels, counts[rare] + 10 * n_samples, classes=[rare],
                     n_paste=tuple(cp.per_sample) if cp.enabled else (0, 0))
    plan.jobs = plan.jobs[:n_samples]
    steady, total, cpu = [], [], []
    for rep in range(repeats):
        out = root / f"{pipe.name}_{workers}_{rep}"
        marks: list[tuple[float, int]] = []
        c0 = _cpu()
        t0 = time.perf_counter()
        res = run_augmentation(labels, plan, pipe, out, workers=workers, top_up=0,
                               progress=lambda d, n, marks=marks: marks.append((time.perf_counter(), d)))
        t1 = time.perf_counter()
        cpu.append((_cpu() - c0) / len(res.samples))
        n = len(res.samples)
        total.append(n / (t1 - t0))
        first_t, first_d = marks[0]
        steady.append((n - first_d) / (t1 - first_t) if t1 > first_t and n > first_d else n / (t1 - t0))
        shutil.rmtree(out, ignore_errors=True)
    return statistics.median(steady), statistics.median(total), n, statistics.median(cpu)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the workers) so far."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def cpu_apply_only(labels, pipe, n: int) -> float:
    import cv2

    from cvcurate.augment import apply

    cv2.setNumThreads(1)
    imgs = [(cv2.imread(r.filepath, cv2.IMREAD_UNCHANGED), r.gt.xyxy) for r in labels.records[:64]]
    t = time.perf_counter()
    for i in range(n):
        img, xyxy = imgs[i % len(imgs)]
        apply(pipe, img, xyxy, i)
    return n / (time.perf_counter() - t)


def batched(labels, pipe, device: str, batch: int, rounds: int) -> float:
    import cv2
    import numpy as np
    import torch

    from cvcurate.augment.gpu import BatchAugment

    aug = BatchAugment.from_pipeline(pipe, device)
    src = [(cv2.imread(r.filepath, cv2.IMREAD_UNCHANGED), r.gt.xyxy) for r in labels.records[:64]]
    imgs = torch.as_tensor(np.stack([src[i % len(src)][0] for i in range(batch)])).to(device)
    boxes = [src[i % len(src)][1] for i in range(batch)]
    aug(imgs, boxes, list(range(batch)))  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for r in range(rounds):
        aug(imgs, boxes, list(range(r * batch, (r + 1) * batch)))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return rounds * batch / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3000, help="samples per CPU run (about)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sources", type=int, default=300, help="synthetic source images")
    ap.add_argument("--pipelines", nargs="+", default=["steel", "steel_light"])
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    args = ap.parse_args()

    import albumentations
    import cv2
    import torch

    from cvcurate.augment import load_pipeline
    from cvcurate.synth import generate

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"albumentations {albumentations.__version__}, opencv {cv2.__version__}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} (other jobs on the machine slow the CPU numbers)")
    root = Path(tempfile.mkdtemp(prefix="cvcurate-bench-augment-"))
    try:
        labels = generate(root / "synth", args.sources, seed=1)
        print(f"sources: {len(labels)} synthetic 200x200 grey PNG, {labels.num_boxes} boxes")
        rows = []
        for name in args.pipelines:
            pipe = load_pipeline(name)
            cp = "copy-paste on" if pipe.settings.copy_paste.enabled else "no copy-paste"
            only = cpu_apply_only(labels, pipe, 2000)
            print(f"{name} ({cp}): augmentation only, 1 process: {only:7.0f} images/s")
            rows.append(f"| {name} ({cp}) | CPU, augmentation only, 1 process | {only:.0f} | {1e3 / only:.2f} |")
            for w in (1, 2):
                steady, total, n, cpu = cpu_end_to_end(labels, pipe, args.samples, w, root, args.repeats)
                ok = "" if w != 2 else (" PASS" if steady >= 500 else " FAIL") + " (target >= 500 on 2 cores)"
                print(f"{name} ({cp}): end to end, {w} worker(s): steady {steady:7.0f} images/s, "
                      f"total {total:7.0f} images/s ({n} samples, median of {args.repeats}){ok}; "
                      f"{cpu * 1e3:.2f} CPU-ms per image (startup included), load average {os.getloadavg()[0]:.1f}")
                rows.append(f"| {name} ({cp}) | CPU, end to end, {w} worker(s) | {steady:.0f} steady, {total:.0f} total "
                            f"| {cpu * 1e3:.2f} |")
            for b in args.batch[:1]:
                r = batched(labels, pipe, "cpu", b, 3)
                print(f"{name}: batched path on the CPU (torch), batch {b}: {r:7.0f} images/s")
                rows.append(f"| {name} ({cp}) | batched path, CPU (torch), batch {b} | {r:.0f} | |")
            if torch.cuda.is_available():
                dev = torch.cuda.get_device_name(0)
                for b in args.batch:
                    r = batched(labels, pipe, "cuda", b, 20)
                    ok = " PASS" if r >= 10000 else " FAIL"
                    print(f"{name}: batched path on {dev}, batch {b}: {r:9.0f} images/s{ok} (target >= 10,000)")
                    rows.append(f"| {name} ({cp}) | batched path, {dev}, batch {b} | {r:.0f} | |")
            else:
                print(f"{name}: GPU: skipped (CUDA is not available here)")
        print("\n| pipeline | path | images/s | CPU-ms per image |\n|---|---|---|---|\n" + "\n".join(rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
