"""Train / val / test assignment: stratified by class and by class mix, whole groups at a time.

Pure numpy (the split stage, :mod:`cvcurate.stages.split`, reads the store and the pixels and
writes the result). The unit of assignment is a *group*: images that must share a split because
they are near-duplicates, copies of one file, or an augmented image and its source; a lone image
is a group of one.

:func:`stratify` is iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011) over groups
on an image x label presence matrix whose labels are the classes (an image has a class when one of
its boxes has it) and the image-level class mixes (the set of classes of an image, its
*signature*; "no box" is one too). A mix is a label of its own only when it is common enough that
the smallest non-empty split should get at least one of its images; rarer mixes are spread through
their classes. The rarest label with groups still unassigned goes first; each of its groups goes to
the split that still wants most images of that label, ties to the split that wants most images
overall, then to a seeded draw. A local search then moves single groups, or swaps two, between
splits while that brings the counts of classes, mixes and images closer to their targets (on
random multi-label data of up to 50,000 images every class ended within one image of its share;
the greedy deal alone was up to 7 off). Images whose split is fixed (kept from before, or forced) count toward every
target, and a group with a fixed image goes where its fixed images are (the most of them; ties:
the earlier split).

Deterministic for a seed and independent of the order of the records: everything is ordered by a
key per image first (the file path), so keys must be unique.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
_EPS = 1e-9
MAX_MIXES = 64  # class mixes stratified at most (the most common)
MIX_WEIGHT = 0.5  # weight of a class mix's count against a class's in the refinement
MAX_SWAP_TYPES = 1500  # beyond this many kinds of group the refinement only moves, never swaps


def group_labels(n: int, i: Sequence[int] | np.ndarray, j: Sequence[int] | np.ndarray) -> np.ndarray:
    """Connected components of the links ``i[k] -- j[k]`` over ``n`` items: (n,) labels, each the
    smallest member of its component (a lone item is its own label)."""
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            parent[x], x = root, int(parent[x])
        return root

    for a, b in zip(np.asarray(i, dtype=np.int64).tolist(), np.asarray(j, dtype=np.int64).tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.fromiter((find(x) for x in range(n)), dtype=np.int64, count=n)


def _row_ids(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the distinct rows of ``rows``, numbered by first appearance, and the first row of
    each (a dict on the bytes: ``np.unique(axis=0)`` sorts void rows, 100x slower)."""
    rows = np.ascontiguousarray(rows)
    ids: dict[bytes, int] = {}
    got = np.fromiter((ids.setdefault(r.tobytes(), len(ids)) for r in rows), dtype=np.int64, count=len(rows))
    first = np.full(len(ids), len(rows), np.int64)
    np.minimum.at(first, got, np.arange(len(rows)))
    return got, first


def mix_labels(present: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(N, M) bool: one column per image-level class mix (the set of classes of an image, the empty
    one included) common enough to be stratified: its images times the smallest positive fraction
    is at least 1; at most :data:`MAX_MIXES` of them, the most common. Columns in order of count,
    then of first appearance (so in the order of the rows, which :func:`stratify` sorts)."""
    present = np.asarray(present, dtype=bool)
    fractions = np.asarray(fractions, dtype=np.float64)
    n = len(present)
    f_min = float(fractions[fractions > 0].min()) if np.any(fractions > 0) else 1.0
    if n == 0:
        return np.zeros((0, 0), bool)
    mix, _ = _row_ids(np.packbits(present.reshape(n, -1), axis=1))
    counts = np.bincount(mix)
    keep = np.flatnonzero(counts * f_min >= 1 - _EPS)
    keep = keep[np.argsort(-counts[keep], kind="stable")][:MAX_MIXES]
    return mix[:, None] == keep[None, :]


def stratify(present: np.ndarray, keys: Sequence[str], fractions: Sequence[float], *, seed: int = 0,
             groups: Sequence[int] | np.ndarray | None = None, fixed: Sequence[int] | np.ndarray | None = None
             ) -> np.ndarray:
    """The split of every image, as an index into ``fractions``.

    ``present``: (N, K) bool, image x class presence. ``keys``: one unique key per image (its file
    path) that fixes the order. ``fractions``: the share each split should get (summing to 1; a
    split of fraction 0 gets no image but those fixed in it). ``groups``: (N,) any labels, images
    of equal label share a split (default: none). ``fixed``: (N,) the split of an image that keeps
    its split, -1 for one to assign; the other images of its group go where most of the group's
    fixed images are.
    """
    present = np.asarray(present, dtype=bool)
    n = len(present)
    present = present.reshape(n, -1) if n else np.zeros((0, 0), bool)
    frac = np.asarray(fractions, dtype=np.float64)
    if len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} images")
    if frac.ndim != 1 or len(frac) == 0 or np.any(frac < 0) or abs(frac.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(frac)}")
    fixed_in = np.full(n, -1, np.int64) if fixed is None else np.asarray(fixed, dtype=np.int64)
    if len(fixed_in) != n or np.any(fixed_in >= len(frac)) or np.any(fixed_in < -1):
        raise ValueError("fixed must hold -1 or a split index per image")
    out = np.full(n, -1, np.int64)
    if n == 0:
        return out
    n_splits = len(frac)
    # order by key: everything below depends on the data, not on the order it came in
    order = np.array(sorted(range(n), key=lambda k: keys[k]), dtype=np.int64)
    # labels: the classes, the common class mixes, and (last column) the image itself
    y = np.hstack([present[order], mix_labels(present[order], frac), np.ones((n, 1), bool)]).astype(np.int32)
    fix = fixed_in[order]
    if groups is None:
        unit = np.arange(n)
        unit_y = y
    else:
        unit, _ = _row_ids(np.asarray(groups, dtype=np.int64)[order].reshape(n, 1))  # units numbered by their first image
        by = np.argsort(unit, kind="stable")
        starts = np.flatnonzero(np.r_[True, unit[by][1:] != unit[by][:-1]])
        unit_y = np.add.reduceat(y[by], starts, axis=0)
    n_units = len(unit_y)
    target = frac[:, None] * y.sum(axis=0)[None, :]  # (S, L) each split's share of every label
    got = np.full(n, -1, np.int64)
    held = fix >= 0
    where = np.full(n_units, -1, np.int64)
    if held.any():  # a group with fixed images goes where most of them are (ties: the earlier split)
        votes = np.bincount(unit[held] * n_splits + fix[held], minlength=n_units * n_splits)
        votes = votes.reshape(n_units, n_splits)
        pinned = np.flatnonzero(votes.sum(axis=1) > 0)
        where[pinned] = votes[pinned].argmax(axis=1)
        got = np.where(held, fix, where[unit])
    count = np.zeros_like(target)  # what the splits hold so far
    for s in range(n_splits):
        count[s] = y[got == s].sum(axis=0)
    rng = np.random.default_rng(seed)
    rank = np.empty(n_units, np.int64)
    rank[rng.permutation(n_units)] = np.arange(n_units)  # the order units of one label are dealt in
    free = where < 0
    movable = np.flatnonzero(free)
    _deal(unit_y, free, where, target - count, np.flatnonzero(frac > 0), rank, rng)
    # refine: move or swap whole groups while that brings the counts closer to the targets
    for s in range(n_splits):
        count[s] += unit_y[movable[where[movable] == s]].sum(axis=0)
    weight = np.ones(y.shape[1])
    weight[present.shape[1]:-1] = MIX_WEIGHT
    where = _refine(where, movable, unit_y, weight, count - target, np.flatnonzero(frac > 0), rank)
    got = np.where(held, fix, where[unit])
    out[order] = got
    return out


def _deal(unit_y: np.ndarray, free: np.ndarray, where: np.ndarray, want: np.ndarray, open_splits: np.ndarray,
          rank: np.ndarray, rng: np.random.Generator) -> None:
    """The greedy deal of iterative stratification, in place on ``where`` and ``want`` (S, L): the
    rarest label with free units first; each of its units (in ``rank`` order) to the split that
    wants most of that label, then most images (the last label), then a seeded draw."""
    has = unit_y[:, :-1] > 0
    left = has[free].sum(axis=0)  # per label: unassigned units holding it
    while free.any():
        live = np.flatnonzero(left > 0)
        if len(live) == 0:  # units with no label left (no class and a rare mix): by size
            label, todo = None, np.flatnonzero(free)
        else:
            label = int(live[np.argmin(left[live])])
            todo = np.flatnonzero(free & has[:, label])
        for u in todo[np.argsort(rank[todo])]:
            s = _best(open_splits, want, label, rng)
            where[u] = s
            want[s] -= unit_y[u]
            free[u] = False
            left -= has[u]


def _refine(where: np.ndarray, movable: np.ndarray, unit_y: np.ndarray, weight: np.ndarray, dev: np.ndarray,
            open_splits: np.ndarray, rank: np.ndarray, max_steps: int = 5000) -> np.ndarray:
    """Local search after the deal. ``dev`` (S, L): what the splits hold less their targets. The
    sum over splits and labels (classes, mixes, images) of the weighted squared ``dev`` is lowered
    by moving one of the ``movable`` groups to another split (the best move first) or, when no move
    helps, by swapping two groups of different splits (the best swap), until no step helps. Groups
    with equal label counts are interchangeable, so the search runs on their types (distinct rows
    of ``unit_y``) and the groups moved are the last dealt of their type."""
    where = where.copy()
    if len(movable) == 0 or len(open_splits) < 2:
        return where
    dev = dev.astype(np.float64).copy()
    n_splits = len(dev)
    t_of, first = _row_ids(unit_y[movable])
    types = unit_y[movable[first]].astype(np.float64)
    n_types = len(types)
    cnt = np.bincount(t_of * n_splits + where[movable], minlength=n_types * n_splits).reshape(n_types, n_splits)
    start = cnt.copy()
    wt = types * weight
    sq = (wt * types).sum(axis=1)
    gram = wt @ types.T if n_types <= MAX_SWAP_TYPES else None
    pairs = [(int(a), int(b)) for a in open_splits for b in open_splits if a != b]
    for _ in range(max_steps):
        at = wt @ dev.T  # (T, S): y_t . w dev_s
        best, step = -1e-6, None
        for a, b in pairs:  # move one group of type t from a to b: delta = 2 y.w(dev_b - dev_a) + 2 y.w y
            delta = 2 * (at[:, b] - at[:, a]) + 2 * sq
            delta[cnt[:, a] == 0] = np.inf
            t = int(np.argmin(delta))
            if delta[t] < best:
                best, step = float(delta[t]), (t, None, a, b)
        for a, b in pairs if step is None and gram is not None else ():
            if a > b:
                continue
            # swap t (a -> b) and u (b -> a): with d = y_t - y_u, delta = 2 d.w(dev_b - dev_a) + 2 d.w d
            g = at[:, b] - at[:, a]
            delta2 = 2 * (g[:, None] - g[None, :]) + 2 * (sq[:, None] + sq[None, :]) - 4 * gram
            delta2[cnt[:, a] == 0, :] = np.inf
            delta2[:, cnt[:, b] == 0] = np.inf
            np.fill_diagonal(delta2, np.inf)
            k = int(np.argmin(delta2))
            if delta2.flat[k] < best:
                best, step = float(delta2.flat[k]), (k // n_types, k % n_types, a, b)
        if step is None:
            break
        t, u, a, b = step
        cnt[t, a] -= 1
        cnt[t, b] += 1
        dev[a] -= types[t]
        dev[b] += types[t]
        if u is not None:
            cnt[u, b] -= 1
            cnt[u, a] += 1
            dev[b] -= types[u]
            dev[a] += types[u]
    changed = np.flatnonzero(np.any(cnt != start, axis=1))
    if len(changed) == 0:
        return where
    by_type = np.argsort(t_of, kind="stable")
    bounds = np.searchsorted(t_of[by_type], np.arange(n_types + 1))
    for t in changed:
        units = movable[by_type[bounds[t]:bounds[t + 1]]]
        units = units[np.argsort(rank[units])]
        spare: list[int] = []
        for s in range(n_splits):  # a split with too many of the type gives up its last dealt
            extra = start[t, s] - cnt[t, s]
            if extra > 0:
                spare += units[where[units] == s][-extra:].tolist()
        spare.sort(key=lambda v: rank[v])
        for s in range(n_splits):
            for _ in range(max(0, cnt[t, s] - start[t, s])):
                where[spare.pop(0)] = s
    return where


def _best(splits: np.ndarray, want: np.ndarray, label: int | None, rng: np.random.Generator) -> int:
    """The split that wants most of ``label``, then most images (the last column of ``want``);
    remaining ties drawn."""
    cand = splits
    if label is not None:
        d = want[cand, label]
        cand = cand[d >= d.max() - _EPS]
    if len(cand) > 1:
        d = want[cand, -1]
        cand = cand[d >= d.max() - _EPS]
    return int(cand[0] if len(cand) == 1 else cand[rng.integers(len(cand))])


def split_counts(split: np.ndarray, present: np.ndarray, n_splits: int) -> tuple[np.ndarray, np.ndarray]:
    """Images per split (S,) and images per split and class (S, K)."""
    present = np.asarray(present, dtype=np.int64).reshape(len(split), -1)
    per_class = np.zeros((n_splits, present.shape[1]), np.int64)
    np.add.at(per_class, np.asarray(split, dtype=np.int64), present)
    return np.bincount(split, minlength=n_splits), per_class
