"""Approximate search for the pairs of near-duplicate thumbnails in large datasets.

:func:`cvcurate.scoring.images._candidate_pairs` compares every pair of thumbnails (through a
projection bound) below ``ANN_MIN_ROWS`` rows; above, it calls :func:`ann_pairs`, which is near
linear. The search runs on the same low-dimensional vectors as the exact bound (the projection of
each unit thumbnail on the data's top principal directions). For unit rows, the bound the exact
path uses, ``a.b <= Pa.Pb + (r_a + r_b) / 2``, is the same as ``|Pa - Pb|^2 <= 2 - 2 a.b``: two
thumbnails correlating at least ``t`` are within ``2 - 2t`` of each other (squared L2) in the
projection. So a pair is found when each row's nearest neighbours in the projection are searched
out to that radius; an inverted-file index (faiss ``IndexIVFFlat``: k-means cells of about
``ANN_CELL_ROWS`` rows, each query scans the ``ANN_PROBES`` cells nearest to it) finds them in
time near linear in the rows: a query scans a fixed number of rows; only its distances to the
centroids (N/100 of them) and the k-means grow with N, as matrix products. Why IVF, not HNSW:
faiss builds an HNSW graph in parallel in an order that depends on the threads' timing, so which
pairs it missed would too; the cells here depend only on the seed. Measured on 2 cores: 1M rows
in 1.5 to 2.3 minutes (the exact search: 15 to 20 minutes, and an 8 GB block), 100k in 4 s
(exact: 10 s).

Every candidate is then checked exactly with the full thumbnails (correlation >= ``t``): no false
pair is ever reported. A pair is lost only when its two thumbnails fall in cells that neither
one's probes reach (measured on generated thumbnails with planted copies: 92 of 162,857 pairs
at 1M rows, none at 100k; none on NEU-DET with planted copies: see docs/scaling.md).

Dense clusters: each row first takes its ``ANN_K`` nearest neighbours. When even the farthest of
them is still within the radius, the row may have more partners than that (a burst of near
identical frames), and it is searched again with 8x more, up to ``ANN_K_MAX`` neighbours: a
cluster of up to ``ANN_K_MAX + 1`` near-identical images gets all its pairs, so every member gets
its best earlier partner. Beyond that (a row with more than ``ANN_K_MAX`` thumbnails within the
radius, which in the projection also counts non-duplicates that merely look alike at low
frequencies) each row keeps its ``ANN_K_MAX`` nearest (the cost stays at most ``ANN_K_MAX``
checks per row); such a row left without an earlier partner is checked against the first image
of its cluster and linked to it when they correlate enough, so in a burst of any size every
image but the first still gets a partner (not always its best one).

Deterministic: the cells are a k-means (fixed seed) on an evenly spaced sample; a query's result
does not depend on the other queries nor on the number of threads (faiss runs the queries in
parallel, each one on its own); 1 and 2 threads gave the same pairs, to the bit, at 100k rows.
"""

from __future__ import annotations

import numpy as np

ANN_K = 32  # neighbours first searched per row
ANN_K_MAX = 1024  # ... at most, for rows whose ANN_K nearest are all within the radius
ANN_PROBES = 8  # cells each query scans
ANN_CELL_ROWS = 100  # rows per cell, about (1M rows: 10,000 cells)
ANN_TRAIN_PER_CELL = 10  # k-means sample: this many rows per cell (and no more cells than rows / this)
ANN_KMEANS_ITER = 6
ANN_SEED = 1234
_QUERY_BLOCK = 1 << 15  # rows searched per call (bounds the memory of the results)
_SLACK = 2e-3  # float32 rounding of the squared distances (the exact bound allows 1e-3 of correlation)


def _index(vecs: np.ndarray):
    """The index over ``vecs`` and the cells each row probes (its ``ANN_PROBES`` nearest centroids,
    (N, probes): indexes and squared distances). The cells are a k-means (L2, fixed seed) on an
    evenly spaced sample; each row is filed in its nearest cell. The lists hold the rows as
    (v, -|v|^2 / 2), scanned by inner product with a query (u, 1): u.v - |v|^2 / 2, which ranks
    as the L2 distance does (|u - v|^2 = |u|^2 - 2 (u.v - |v|^2 / 2)) and which faiss scans 1.7x
    faster than L2."""
    import faiss

    n, d = vecs.shape
    cells = int(max(1, min(n // ANN_TRAIN_PER_CELL, max(2 * ANN_PROBES, n // ANN_CELL_ROWS))))
    # the whole sample is ours (no subsampling inside faiss), small samples without a warning
    kmeans = faiss.Kmeans(d, cells, niter=ANN_KMEANS_ITER, seed=ANN_SEED,
                          max_points_per_centroid=ANN_TRAIN_PER_CELL, min_points_per_centroid=1)
    sample = np.linspace(0, n - 1, min(n, cells * ANN_TRAIN_PER_CELL)).astype(np.int64)
    kmeans.train(np.ascontiguousarray(vecs[sample]))
    probes = min(ANN_PROBES, cells)
    near_d = np.empty((n, probes), np.float32)
    near_i = np.empty((n, probes), np.int64)
    for s in range(0, n, _QUERY_BLOCK):  # the cells are found once, for filing and for the search
        block = slice(s, s + _QUERY_BLOCK)
        near_d[block], near_i[block] = kmeans.index.search(vecs[block], probes)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d + 1), d + 1, cells, faiss.METRIC_INNER_PRODUCT)
    index.quantizer.add(np.hstack([kmeans.centroids, np.zeros((cells, 1), np.float32)]))  # not used:
    index.is_trained = True  # rows are filed and searched by the cells found above
    index.nprobe = probes
    lifted = np.hstack([vecs, -0.5 * np.einsum("ij,ij->i", vecs, vecs)[:, None]])
    home = np.ascontiguousarray(near_i[:, 0])  # both referenced here: faiss only gets their address
    index.add_core(n, faiss.swig_ptr(lifted), None, faiss.swig_ptr(home))
    return index, near_i, near_d


def ann_pairs(thumbs: np.ndarray, vecs: np.ndarray, min_correlation: float, threads: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows of ``thumbs`` correlating at least ``min_correlation``, found by an
    approximate search over ``vecs`` (row i: a projection of thumbnail i that shortens no distance),
    as (i, j, correlation) sorted by i, then j. Every pair returned is exact; a few may be missed.
    """
    import faiss

    n = len(thumbs)
    empty = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if n < 2:
        return empty
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    sq = np.einsum("ij,ij->i", thumbs, thumbs, dtype=np.float64)
    # |Pa - Pb|^2 <= |a - b|^2 = |a|^2 + |b|^2 - 2 a.b <= |a|^2 + |b|^2 - 2t for a pair
    reach = sq - min_correlation + _SLACK / 2  # per row: a pair's radius is reach_a + reach_b
    widest = float(reach.max()) * 2
    if widest <= 0:
        return empty
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, threads))
    try:
        index, near_i, near_d = _index(vecs)
        norm2 = np.einsum("ij,ij->i", vecs, vecs)
        ones = np.ones((min(n, _QUERY_BLOCK), 1), np.float32)
        keys, corr = [], []

        def check(a: np.ndarray, b: np.ndarray) -> None:
            """Keep the candidates (a < b) that correlate enough (at once: candidates of rows in a
            dense part of the projection may be many, true pairs are few)."""
            for s in range(0, len(a), 1 << 15):
                i, j = a[s:s + (1 << 15)], b[s:s + (1 << 15)]
                c = np.einsum("ij,ij->i", thumbs[i], thumbs[j])
                hit = c >= min_correlation
                keys.append(i[hit] * n + j[hit])
                corr.append(c[hit])

        def search(rows: np.ndarray, k: int) -> np.ndarray:
            """Check the candidates of ``rows`` among their k nearest; return the rows whose k-th
            neighbour is still within the radius (they may have more)."""
            full = []
            for s in range(0, len(rows), _QUERY_BLOCK):
                q = rows[s:s + _QUERY_BLOCK]
                score, lab = index.search_preassigned(np.hstack([vecs[q], ones[:len(q)]]), min(k, n),
                                                      near_i[q], near_d[q])
                score[lab < 0] = -np.inf  # nothing found (faiss gives the lowest float)
                dist = norm2[q, None] - 2 * score  # squared L2 (nothing found: inf)
                full.append(q[dist[:, -1] <= widest])
                qq = np.broadcast_to(q[:, None], lab.shape)
                ok = (lab >= 0) & (lab != qq)
                qq, ll, dd = qq[ok], lab[ok], dist[ok]
                ok = dd <= reach[qq] + reach[ll]
                a, b = qq[ok], ll[ok]
                check(np.minimum(a, b), np.maximum(a, b))
            return np.concatenate(full)

        rows = np.arange(n, dtype=np.int64)
        k = ANN_K + 1  # the row itself comes first
        while len(rows) > 0:
            rows = search(rows, k)
            if k >= min(ANN_K_MAX + 1, n):
                break
            k = min(k * 8, ANN_K_MAX + 1)
    finally:
        faiss.omp_set_num_threads(before)
    if not keys:
        return empty
    key, first = np.unique(np.concatenate(keys), return_index=True)  # found from both ends, or twice
    i, j = np.divmod(key, n)
    i, j, c = i.astype(np.int64), j.astype(np.int64), np.concatenate(corr)[first].astype(np.float32)
    return _link_capped(thumbs, rows, i, j, c, min_correlation) if len(rows) else (i, j, c)


def _link_capped(thumbs: np.ndarray, capped: np.ndarray, i: np.ndarray, j: np.ndarray, c: np.ndarray,
                 min_correlation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i, j, c) with, for each row of ``capped`` (rows that kept only their ``ANN_K_MAX``
    nearest: a burst of more near-identical images than that) that got no earlier partner, the
    pair with the first row of its cluster (connected component of the pairs) where the two
    correlate enough: in a burst, every image but the first then has an earlier partner."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(thumbs)
    _, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    head = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(head, comp, np.arange(n))
    has_earlier = np.zeros(n, bool)
    has_earlier[j] = True
    a, b = head[comp[capped]], capped
    keep = (a < b) & ~has_earlier[b]
    a, b = a[keep], b[keep]
    cab = np.einsum("ij,ij->i", thumbs[a], thumbs[b])
    hit = cab >= min_correlation
    i, j, c = np.concatenate([i, a[hit]]), np.concatenate([j, b[hit]]), np.concatenate([c, cab[hit]])
    order = np.lexsort((j, i))
    return i[order], j[order], c[order].astype(np.float32)
