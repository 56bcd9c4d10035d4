"""Model-free checks of the pixels: blur, exposure, near-duplicate images and train/val leakage.

:func:`image_features` reads images in chunks (threads: OpenCV releases the GIL) and returns plain
arrays; the checks are pure functions of those arrays, so they run on any engine that maps chunks.

Sharpness is the Laplacian variance relative to the image variance, measured with the longer side
at most 256 px. Images of at most 256 px are measured as they are, exactly as before. Larger ones
are reduced by a box average by the smallest integer factor that brings them there (416 px images:
208 px); earlier versions resized to exactly 256 px with a fractional INTER_AREA, 370 us of the
1,200 us a 416 px image cost, where the integer factor takes OpenCV's fast path (50 us). So the
sharpness of images over 256 px changed scale (blur is judged relative to the dataset: a common
scale is what matters).

Near-duplicates compare high-pass 32x32 thumbnails (the thumbnail minus its Gaussian blur, made
zero-mean and unit-norm) by correlation. Byte-identical thumbnails (one file stored twice) are
grouped first; up to 2,048 distinct ones are compared by one matrix product, beyond that a
projection bound discards almost every pair first and only the rest get the full product (see
:func:`_candidate_pairs`); from ``ANN_MIN_ROWS`` (20,000) distinct ones, where that is still
quadratic, an approximate nearest-neighbour search over the projection finds the candidates
(:mod:`cvcurate.scoring.neighbours`), each one checked exactly. Matches form clusters, and each
image is reported once, against its best earlier partner (:func:`near_duplicate_partners`). Two
things were tried first and rejected, measured on NEU-DET: a 64-bit dHash (on steel textures an
8x8 hash is mostly illumination gradient: 1,800 pairs collided, none a duplicate) and plain 16x16 thumbnails
(664 pairs above 0.95, all different images sharing an illumination gradient). With the high-pass,
the most similar pair of distinct NEU-DET images correlates 0.91, while a copy re-saved at JPEG
quality 60, rescaled and brightened correlates at least 0.98. Limit: a copy cropped by more than
~1% is misaligned at this scale and is not found.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..device import cores as _cores
from ..progress import track
from ..types import Issue, LabelSet
from .boxpixels import GRID, grey_map


THUMB = 32
SHARP_SIDE = 256  # sharpness is measured with the longer side reduced to at most this
PROJ_DIMS = 64  # directions of the cheap near-duplicate bound (see _candidate_pairs)
ANN_MIN_ROWS = 20_000  # from this many distinct thumbnails, the approximate search (see _candidate_pairs)


@dataclass
class ImageConfig:
    blur_z: float = 3.5  # robust z below the dataset's sharpness from which an image is blurred
    dark_mean: float = 25.0  # mean grey level (0-255) below which an image is under-exposed
    bright_mean: float = 230.0  # ... above which it is over-exposed
    clipped_fraction: float = 0.5  # fraction of pixels at 0 or 255 that makes exposure suspect
    duplicate_correlation: float = 0.95  # thumbnail correlation from which two images are near-duplicates
    workers: int = 4
    chunk_size: int = 64  # images per thread task (and per progress step)

    def check(self) -> None:
        if not 0 < self.duplicate_correlation <= 1:
            raise ValueError(f"duplicate_correlation must be in (0, 1], got {self.duplicate_correlation}")
        if not 0 < self.dark_mean < self.bright_mean < 255:
            raise ValueError("need 0 < dark_mean < bright_mean < 255")


@dataclass
class ImageFeatures:
    """Per-image measurements, in record order. ``ok`` is False where an image could not be read."""

    ok: np.ndarray  # (N,) bool
    mean: np.ndarray  # (N,) grey mean 0-255
    clipped: np.ndarray  # (N,) fraction of pixels <= 2 or >= 253
    sharpness: np.ndarray  # (N,) Laplacian variance / image variance at <= 256 px (nan: flat image; 0: unreadable)
    thumb: np.ndarray  # (N, 1024) float32 unit-norm high-pass 32x32 thumbnails (zeros: flat image)
    gray: np.ndarray  # (N, GRID, GRID) uint8 grey maps the box checks read (:mod:`.boxpixels`)


def _read(paths: Sequence[str], lo: int, hi: int, f: ImageFeatures) -> None:
    """Measure images ``lo:hi`` into the arrays of ``f`` (``f.thumb``: high-pass, not yet normalised).

    Nearly every step is one OpenCV call that releases the GIL, so threads run in parallel: the
    mean and the clipped fraction are exact integer sums of the full image (equal to numpy's
    ``mean``). Sharpness of an image of at most 256 px is computed as it always was; a larger one
    is first reduced by a box average by an integer factor (OpenCV's fast INTER_AREA path) and
    its variances come from ``meanStdDev`` (double precision) on an int16 Laplacian, 4x cheaper
    than numpy's variance of a float32 Laplacian.
    """
    import cv2

    size = THUMB * THUMB
    for i in range(lo, hi):
        img = cv2.imread(paths[i], cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        h, w = img.shape
        n = h * w
        f.ok[i] = True
        f.mean[i] = cv2.sumElems(img)[0] / n
        f.clipped[i] = (n - cv2.countNonZero(cv2.inRange(img, 3, 252))) / n
        # Laplacian variance relative to the image's variance: contrast does not count as sharpness
        k = -(-max(h, w) // SHARP_SIDE)  # never upsample: that would blur
        if k == 1:  # as it always was, to the bit (numpy's float32 variance of the Laplacian)
            var = float(img.var())
            f.sharpness[i] = float(cv2.Laplacian(img, cv2.CV_32F).var()) / var if var > 4.0 else np.nan
        else:
            ky, kx = min(k, h), min(k, w)
            small = cv2.resize(img[:h - h % ky, :w - w % kx], (w // kx, h // ky), interpolation=cv2.INTER_AREA)
            var = float(cv2.meanStdDev(small)[1][0, 0]) ** 2
            f.sharpness[i] = (float(cv2.meanStdDev(cv2.Laplacian(small, cv2.CV_16S))[1][0, 0]) ** 2 / var
                              if var > 4.0 else np.nan)
        f.gray[i] = grey_map(img)
        t = np.float32(cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA))
        f.thumb[i] = cv2.subtract(t, cv2.GaussianBlur(t, (0, 0), 2.0)).reshape(size)


def _normalise(thumb: np.ndarray) -> None:
    """In place: each row made zero-mean and unit-norm (rows of norm <= 1e-3, flat images, zeroed).
    Row by row ``dot`` keeps the values bit-identical to normalising each thumbnail on its own."""
    thumb -= thumb.mean(axis=1, keepdims=True)
    norm = np.array([np.sqrt(row.dot(row)) for row in thumb], dtype=np.float32).reshape(-1, 1)
    flat = norm[:, 0] <= 1e-3
    norm[flat] = 1
    thumb /= norm
    thumb[flat] = 0


def image_features(paths: Sequence[str], cfg: ImageConfig | None = None, progress: bool = False) -> ImageFeatures:
    """Measure every image (see :class:`ImageFeatures`); unreadable images get ``ok`` False and zeros.

    Threads (at most ``cfg.workers``, and no more than the cores: extra threads only queue on the
    GIL) each take runs of ``cfg.chunk_size`` images and write into shared arrays. OpenCV's own
    thread pool is left alone: at 416 px (NEU-DET) and at 1600x256 (Severstal) setting it to one
    thread changed nothing.
    """
    cfg = cfg or ImageConfig()
    n = len(paths)
    f = ImageFeatures(np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n), np.zeros(n),
                      np.zeros((n, THUMB * THUMB), np.float32), np.zeros((n, GRID, GRID), np.uint8))
    if n == 0:
        return f
    step = max(1, cfg.chunk_size)
    runs = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
    workers = max(1, min(cfg.workers, _cores(), len(runs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda r: _read(paths, r[0], r[1], f), runs)
        for _ in track(done, description="reading pixels", total=len(runs), enabled=progress):
            pass
    _normalise(f.thumb)
    return f


def _candidate_pairs(thumbs: np.ndarray, min_correlation: float, chunk: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) correlating at least ``min_correlation``, as arrays (i, j, correlation).

    Up to ``chunk`` rows: one matrix product. Beyond, a cheap necessary test first: with P the
    projection on the data's top ``PROJ_DIMS`` principal directions and r = |x|^2 - |Px|^2 what
    it misses, ``a.b <= Pa.Pb + (r_a + r_b) / 2`` (Cauchy-Schwarz on the rest), one product of
    (PROJ_DIMS + 2)-dim vectors; the few pairs whose bound reaches the threshold are then checked
    exactly. No pair is lost. On NEU-DET thumbnails the 64 directions hold 40% of the energy and
    6e-6 of the pairs pass the bound; a block where too many pass (a dataset of near-identical
    frames) is computed in full instead.

    From ``ANN_MIN_ROWS`` rows the products above, which grow as N^2 (10 s at 100k rows, about
    20 minutes at 1M, on 2 cores), give way to an approximate nearest-neighbour search over the
    same projection (:func:`cvcurate.scoring.neighbours.ann_pairs`: near linear; every pair it
    returns checked exactly; 99.94% of the pairs found at 1M, all of them at 100k and on NEU-DET
    with planted copies: docs/scaling.md). Below, results are exactly what they were.
    """
    n, dim = thumbs.shape
    if n >= max(ANN_MIN_ROWS, 2):
        from .neighbours import ann_pairs

        vecs = thumbs if dim <= PROJ_DIMS + 2 else thumbs @ _principal_directions(thumbs, PROJ_DIMS).T
        return ann_pairs(thumbs, vecs, min_correlation, _cores())
    parts_i, parts_j, parts_c = [], [], []

    def hits(block: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
        ii, jj = np.divmod(np.flatnonzero(block >= limit), block.shape[1])  # 1-d: 4x faster than nonzero
        keep = jj > ii
        return ii[keep], jj[keep]

    def exact(start: int, stop: int) -> None:
        block = thumbs[start:stop] @ thumbs[start:].T  # rows: this chunk, cols: it and after
        ii, jj = hits(block, min_correlation)
        parts_i.append(start + ii)
        parts_j.append(start + jj)
        parts_c.append(block[ii, jj])

    if n <= chunk or dim <= PROJ_DIMS + 2:
        for start in range(0, n, chunk):
            exact(start, start + chunk)
    else:
        basis = _principal_directions(thumbs, PROJ_DIMS)
        proj = thumbs @ basis.T
        rest = np.maximum(np.einsum("ij,ij->i", thumbs, thumbs, dtype=np.float64)
                          - np.einsum("ij,ij->i", proj, proj, dtype=np.float64), 0).astype(np.float32)
        ones = np.ones((n, 1), np.float32)
        left = np.hstack([proj, rest[:, None] / 2, ones])
        right = np.hstack([proj, ones, rest[:, None] / 2])
        bound = min_correlation - 1e-3  # float32 rounding of the bound
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            ii, jj = hits(left[start:stop] @ right[start:].T, bound)
            ii, jj = start + ii, start + jj
            if len(ii) > 0.02 * (stop - start) * (n - start):
                exact(start, stop)
                continue
            for s in range(0, len(ii), 1 << 15):
                a, b = ii[s:s + (1 << 15)], jj[s:s + (1 << 15)]
                c = np.einsum("ij,ij->i", thumbs[a], thumbs[b])
                hit = c >= min_correlation
                parts_i.append(a[hit])
                parts_j.append(b[hit])
                parts_c.append(c[hit])
    if not parts_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    i, j, c = (np.concatenate(p) for p in (parts_i, parts_j, parts_c))
    order = np.lexsort((j, i))
    return i[order].astype(np.int64), j[order].astype(np.int64), c[order]


def _principal_directions(x: np.ndarray, k: int) -> np.ndarray:
    """(k, D) float32 orthonormal rows spanning about the top-k principal directions of the rows of
    ``x``: two power steps on a fixed random start over an evenly spaced sample (deterministic),
    orthonormalised through the k x k Gram matrix (so no LAPACK call bigger than k x k)."""
    sample = x[np.linspace(0, len(x) - 1, min(len(x), 2048)).astype(np.int64)]
    z = np.random.default_rng(0).standard_normal((x.shape[1], k)).astype(np.float32)
    for _ in range(2):
        z = sample.T @ (sample @ z)
        z /= np.linalg.norm(z, axis=0, keepdims=True) + 1e-30
    q = z.astype(np.float64)
    for _ in range(2):  # the second pass repairs the rounding of the first
        lam, v = np.linalg.eigh(q.T @ q)
        keep = lam > lam.max() * 1e-10
        q = q @ (v[:, keep] / np.sqrt(lam[keep]))
    return np.ascontiguousarray(q.T, dtype=np.float32)


@dataclass
class DuplicatePartners:
    """For each image that has a near-duplicate earlier in the list: its best such partner."""

    image: np.ndarray  # (M,) positions, ascending
    partner: np.ndarray  # (M,) position of the partner, < image
    correlation: np.ndarray  # (M,) their thumbnail correlation
    leak: np.ndarray  # (M,) bool: the partner is in another split (both splits known)
    cluster_size: np.ndarray  # (M,) images in the image's near-duplicate cluster (itself included)


def _copy_groups(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of byte-identical, non-zero thumbnails, numbered in order of first appearance:
    ``(members, size, start)``, the positions grouped and ascending within a group, each group's
    size and the offset of its first member in ``members``. All-zero rows belong to no group."""
    live = np.flatnonzero(thumbs.any(axis=1))
    rows = np.ascontiguousarray(thumbs[live])
    ids: dict[bytes, int] = {}
    group = np.fromiter((ids.setdefault(r.tobytes(), len(ids)) for r in rows), dtype=np.int64, count=len(rows))
    members = live[np.argsort(group, kind="stable")]
    size = np.bincount(group, minlength=len(ids))
    return members, size, np.cumsum(size) - size


def near_duplicate_links(thumbs: np.ndarray, min_correlation: float, chunk: int = 2048
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Every link ``(a[k], b[k])`` between images whose thumbnails correlate at least
    ``min_correlation``, enough to build the clusters (connected components) the near-duplicate
    and leakage checks see: each byte-identical copy is linked to its group's first image, and the
    groups' first images are searched once (:func:`_candidate_pairs`), so k copies cost k links,
    not k(k-1)/2. All-zero thumbnails (flat or unreadable images) link to nothing.

    :func:`near_duplicate_partners` keeps one partner per image for the checks; a partition
    (``cvcurate split``) needs every link, or a cluster could be cut in two.
    """
    thumbs = np.asarray(thumbs, dtype=np.float32)
    members, size, gstart = _copy_groups(thumbs)
    if len(size) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = members[gstart]
    ga, gb, _ = _candidate_pairs(thumbs[first], min_correlation, chunk)
    own = first[np.repeat(np.arange(len(size)), size)]  # each member's group's first image
    copy = members != own
    return np.concatenate([members[copy], first[ga]]), np.concatenate([own[copy], first[gb]])


def near_duplicate_partners(thumbs: np.ndarray, splits: Sequence[str | None], min_correlation: float,
                            chunk: int = 2048) -> DuplicatePartners:
    """One partner per duplicated image, in time linear in the images and the duplicate groups.

    Two images are linked when their thumbnails correlate at least ``min_correlation``; clusters
    are the connected components of those links. Each image linked to an earlier one (list order)
    gets one partner among its earlier links: the most correlated one in another split if there
    is one (leakage), else the most correlated one (ties: the earliest). An image without earlier
    links (the first of a cluster) gets none: it got no issue before clusters either.

    Byte-identical thumbnails (the same file stored twice) are grouped before any product, so k
    copies cost one row, not k(k-1)/2 pairs, and their correlation is exactly 1.0; all-zero
    thumbnails (flat images) link to nothing. Other correlations are float32 dot products of
    unit rows and may exceed 1 by rounding; callers clamp them where 1 must be the maximum.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    thumbs = np.asarray(thumbs, dtype=np.float32)
    m = len(thumbs)
    empty = DuplicatePartners(*(np.zeros(0, np.int64),) * 2, np.zeros(0, np.float32), np.zeros(0, bool),
                              np.zeros(0, np.int64))
    if m < 2:
        return empty
    members, size, gstart = _copy_groups(thumbs)
    n_groups = len(size)
    if n_groups == 0:
        return empty
    first = members[gstart]
    ga, gb, gc = _candidate_pairs(thumbs[first], min_correlation, chunk)
    # directed group links g -> h (both ways), and g -> g for a group of copies. Members of one
    # group have byte-identical thumbnails, so their correlation is 1 by definition: it is set
    # to exactly 1.0, not computed (a float32 dot product of a unit row with itself comes out
    # 1 - 1e-6 or so, depending on the BLAS and numpy build)
    own = np.flatnonzero(size > 1)
    src = np.concatenate([ga, gb, own])
    dst = np.concatenate([gb, ga, own])
    corr = np.concatenate([gc, gc, np.ones(len(own), np.float32)]).astype(np.float32)
    if len(src) == 0:
        return empty
    # expand each link to the members of its source group
    reps_per_link = size[src]
    link = np.repeat(np.arange(len(src)), reps_per_link)
    within = np.arange(len(link)) - np.repeat(np.cumsum(reps_per_link) - reps_per_link, reps_per_link)
    pos = members[gstart[src][link] + within]
    # candidates (image, earlier partner, correlation, other split): per link, the earliest
    # member of the target group, and the earliest member in each split other than the image's
    names = sorted({s for s in splits if s is not None})
    code = {s: c for c, s in enumerate(names)}
    split = np.fromiter((-1 if s is None else code[s] for s in splits), dtype=np.int64, count=m)
    group_of = np.empty(m, np.int64)
    group_of[members] = np.repeat(np.arange(n_groups), size)
    cands: list[tuple[np.ndarray, ...]] = []

    def add(partner: np.ndarray, ok: np.ndarray, leak: bool) -> None:
        cands.append((pos[ok], partner[ok], corr[link][ok], np.full(int(ok.sum()), leak)))

    partner = first[dst][link]
    add(partner, partner < pos, False)
    if names:
        first_in = np.full((n_groups, len(names)), np.iinfo(np.int64).max, dtype=np.int64)
        known = split[members] >= 0
        np.minimum.at(first_in, (group_of[members][known], split[members][known]), members[known])
        for s in range(len(names)):
            partner = first_in[dst, s][link]
            add(partner, (partner < pos) & (split[pos] >= 0) & (split[pos] != s), True)
    p, q, c, leak = (np.concatenate(x) for x in zip(*cands))
    if len(p) == 0:
        return empty
    order = np.lexsort((q, -c, ~leak, p))  # per image: leakage first, then most correlated, earliest
    p, q, c, leak = p[order], q[order], c[order], leak[order]
    head = np.ones(len(p), bool)
    head[1:] = p[1:] != p[:-1]
    p, q, c, leak = p[head], q[head], c[head], leak[head]
    # cluster sizes: components of the group graph, weighted by group size
    graph = coo_matrix((np.ones(len(ga)), (ga, gb)), shape=(n_groups, n_groups))
    _, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=size).astype(np.int64)
    return DuplicatePartners(p, q, c, leak, comp_size[comp[group_of[p]]])


def image_issues(labels: LabelSet, feats: ImageFeatures, cfg: ImageConfig | None = None) -> list[Issue]:
    """Unreadable, blurred, badly exposed, near-duplicate and leaked images.

    Near-duplicates are reported once per image (see :func:`near_duplicate_partners`): an image
    whose thumbnail matches earlier ones gets one ``leakage`` issue (if a match is in another
    split) or one ``near_duplicate`` issue, naming its best partner in ``data["other"]``. When its
    cluster holds more than two images, the reason says how many and ``data["cluster_size"]``
    holds the number; a pair is reported exactly as before. An augmented sample
    (``meta["augmented_from"]``: its source's path) is never reported against its own source, nor
    against another sample made from the same source. (Before clusters, an image got one
    issue per earlier match: k copies gave k(k-1)/2 issues.)
    """
    cfg = cfg or ImageConfig()
    recs = labels.records
    out: list[Issue] = []
    for i in np.flatnonzero(~feats.ok):
        out.append(Issue(recs[i].filepath, "unreadable", 1.0, "the image cannot be decoded",
                         sample_id=recs[i].sample_id))
    ok = np.flatnonzero(feats.ok)
    textured = ok[np.isfinite(feats.sharpness[ok])]
    if len(textured) >= 5:
        log_sharp = np.log(feats.sharpness[textured] + 1e-6)
        med = np.median(log_sharp)
        mad = max(np.median(np.abs(log_sharp - med)) * 1.4826, 1e-6)
        z = (med - log_sharp) / mad  # positive: blurrier than usual
        for k in np.flatnonzero(z >= cfg.blur_z):
            i = textured[k]
            out.append(Issue(recs[i].filepath, "blur", float(z[k] / (z[k] + cfg.blur_z)),
                             f"much less sharp than the rest of the dataset (relative Laplacian variance "
                             f"{feats.sharpness[i]:.3f}, median {np.exp(med):.3f})", sample_id=recs[i].sample_id))
    mean, clip = feats.mean[ok], feats.clipped[ok]
    exposed = (mean <= cfg.dark_mean) | (mean >= cfg.bright_mean) | (clip >= cfg.clipped_fraction)
    for i in ok[exposed]:
        m, c = feats.mean[i], feats.clipped[i]
        dark = m <= cfg.dark_mean or (m < 128 and not m >= cfg.bright_mean)
        kind = "underexposed" if dark else "overexposed"
        dev = (cfg.dark_mean - m) / cfg.dark_mean if dark else (m - cfg.bright_mean) / (255 - cfg.bright_mean)
        score = float(np.clip(0.5 + 0.5 * max(dev, c), 0, 1))
        out.append(Issue(recs[i].filepath, kind, score,
                         f"mean grey level {m:.0f} of 255, {c:.0%} of pixels clipped", sample_id=recs[i].sample_id))
    if len(ok) < 2:
        return out
    dups = near_duplicate_partners(feats.thumb[ok], [recs[i].split for i in ok], cfg.duplicate_correlation)
    order = np.lexsort((dups.image, dups.partner))  # by partner, then image: the order pairs had
    for a, b, corr, leak, n in zip(dups.image[order].tolist(), dups.partner[order].tolist(),
                                   dups.correlation[order].tolist(), dups.leak[order].tolist(),
                                   dups.cluster_size[order].tolist()):
        rj, ri = recs[ok[a]], recs[ok[b]]
        sj, si = rj.meta.get("augmented_from"), ri.meta.get("augmented_from")
        if sj == ri.filepath or si == rj.filepath or (sj is not None and sj == si):
            continue  # an augmented sample and its own source (or two from one source) are alike by design
        score = 0.5 + 0.5 * (corr - cfg.duplicate_correlation) / max(1e-6, 1 - cfg.duplicate_correlation)
        score = min(score, 1.0)  # float32 rounding can put a copy's correlation a hair above 1
        text = (f"near-duplicate of {ri.filepath} in split {ri.split!r} while this image is in {rj.split!r}"
                if leak else f"near-duplicate of {ri.filepath}")
        text += f" (thumbnail correlation {corr:.3f})"
        data: dict = {"other": ri.filepath}
        if n > 2:
            text += f"; one of {n} near-duplicate images"
            data["cluster_size"] = n
        out.append(Issue(rj.filepath, "leakage" if leak else "near_duplicate", float(score), text,
                         sample_id=rj.sample_id, data=data))
    return out
