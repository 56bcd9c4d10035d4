"""Benchmark: near-duplicate pair search, exact (projection bound) vs approximate (faiss IVF).

Synthetic high-pass thumbnails of the real size (32x32, unit norm): random fields with a 1/f^3
power spectrum, high-passed like ``image_features`` does (on them the top 64 principal directions
hold 38% of the energy and the median squared distance of two projections is 0.76; NEU-DET:
42% and 0.81). Planted in them: 15% "relatives" (an image mixed with a new field: correlation
about 0.5, alike but not duplicates), 3% near-copies of an image (a few copies each, with white
or 1/f^3-shaped noise of norm 0.1 to 0.32: correlation 0.95 to 0.995) and, per 10,000 images, a
burst of 50 near-identical frames. Different originals correlate below 0.3, so the true pairs are
exactly the pairs inside each planted family that correlate >= 0.95: computed directly, they are
the reference at every size (the exact search is checked equal to them where it runs).

Prints per size: pairs found, recall against the true pairs, seconds, peak memory of the process.

    python scripts/bench/bench_near_duplicates.py                    # 10k, 100k (exact + ANN), 1M (ANN)
    python scripts/bench/bench_near_duplicates.py --sizes 10000 --exact-up-to 10000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from cvcurate.scoring import images as im  # noqa: E402


def fields(rng: np.random.Generator, n: int, out: np.ndarray | None = None, at: np.ndarray | None = None
           ) -> np.ndarray:
    """``n`` unit-norm high-passed 1/f^3 random fields, 32x32, as float32 rows: returned, or
    written into the rows ``at`` of ``out`` (so that 1M of them need no second copy)."""
    fy = np.fft.fftfreq(im.THUMB)[:, None]
    fx = np.fft.rfftfreq(im.THUMB)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1
    highpass = 1 - np.exp(-2 * (np.pi * f * 2.0) ** 2)  # minus a Gaussian blur of sigma 2
    amp = (f ** -1.5 * highpass).astype(np.float32)
    if out is None:
        out, at = np.empty((n, im.THUMB * im.THUMB), np.float32), np.arange(n)
    for s in range(0, n, 1 << 14):
        z = rng.standard_normal((min(n - s, 1 << 14), im.THUMB, im.THUMB), dtype=np.float32)
        out[at[s:s + len(z)]] = unit(np.fft.irfft2(np.fft.rfft2(z) * amp, s=(im.THUMB, im.THUMB))
                                     .reshape(len(z), -1).astype(np.float32))
    return out


def unit(x: np.ndarray) -> np.ndarray:
    im._normalise(x)
    return x


def dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(thumbs, family): rows in random order; family[i] >= 0 for rows planted together."""
    rng = np.random.default_rng(seed)
    n_burst = max(1, n // 10_000)
    n_copy_src = int(n * 0.03) // 3
    copies = rng.integers(1, 5, n_copy_src)  # 1 to 4 copies per source (mean 2.5)
    n_orig = n - n_burst * 50 - int(copies.sum())
    pos = rng.permutation(n)  # where each made row goes: originals, copies, bursts
    x = np.empty((n, im.THUMB * im.THUMB), np.float32)
    family = np.full(n, -1, np.int64)
    orig = pos[:n_orig]
    fields(rng, n_orig, x, orig)
    # relatives: alike (correlation about 0.7 with the image they come from), never duplicates
    rel = orig[rng.choice(n_orig, int(n_orig * 0.15), replace=False)]
    x[rel] = unit(x[orig[rng.integers(0, n_orig, len(rel))]] + fields(rng, len(rel)))
    src = orig[rng.choice(n_orig, n_copy_src, replace=False)]
    family[src] = np.arange(n_copy_src)
    owner = np.repeat(src, copies)
    at = pos[n_orig:n_orig + len(owner)]
    noise = fields(rng, len(owner))
    white = rng.random(len(owner)) < 0.5
    noise[white] = unit(rng.standard_normal((int(white.sum()), noise.shape[1]), dtype=np.float32))
    x[at] = unit(x[owner] + noise * rng.uniform(0.1, 0.32, (len(owner), 1)).astype(np.float32))
    family[at] = family[owner]
    del noise
    for b in range(n_burst):
        at = pos[n_orig + len(owner) + 50 * b:][:50]
        noise = unit(rng.standard_normal((50, x.shape[1]), dtype=np.float32)) * np.float32(0.08)
        x[at] = unit(fields(rng, 1) + noise)
        family[at] = n_copy_src + b
    return x, family


def true_pairs(x: np.ndarray, family: np.ndarray, t: float) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    planted = np.flatnonzero(family >= 0)
    order = planted[np.argsort(family[planted], kind="stable")]
    bounds = np.flatnonzero(np.diff(family[order])) + 1
    for grp in np.split(order, bounds):
        grp = np.sort(grp)
        c = x[grp] @ x[grp].T
        a, b = np.nonzero(np.triu(c >= t, 1))
        out.update(zip(grp[a].tolist(), grp[b].tolist()))
    return out


def run(x: np.ndarray, t: float, ann: bool) -> tuple[set[tuple[int, int]], float]:
    im.ANN_MIN_ROWS = 0 if ann else 1 << 62
    start = time.perf_counter()
    i, j, _ = im._candidate_pairs(x, t, 2048)
    return set(zip(i.tolist(), j.tolist())), time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--exact-up-to", type=int, default=100_000, help="largest size the exact search runs at")
    ap.add_argument("--threshold", type=float, default=0.95)
    args = ap.parse_args()
    print(f"cores: {im._cores()}  threshold: {args.threshold}")
    print(f"{'rows':>9} {'method':>6} {'pairs':>7} {'true':>7} {'recall':>8} {'false':>5} {'seconds':>8} {'peak GB':>7}")
    for n in args.sizes:
        t0 = time.perf_counter()
        x, family = dataset(n)
        truth = true_pairs(x, family, args.threshold)
        made = time.perf_counter() - t0
        for ann in ([False, True] if n <= args.exact_up_to else [True]):
            found, sec = run(x, args.threshold, ann)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{n:>9} {'ANN' if ann else 'exact':>6} {len(found):>7} {len(truth):>7} "
                  f"{len(found & truth) / max(1, len(truth)):>8.4%} {len(found - truth):>5} {sec:>8.1f} {peak:>7.1f}",
                  flush=True)
        print(f"{'':>9} (data made in {made:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
