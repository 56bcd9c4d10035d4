"""The split stage: give every image of a stored dataset a train / val / test split.

Reads the dataset and its pixels, groups the images that must share a split, calls the pure
stratification (:func:`cvcurate.splits.stratify`) and writes the ``split`` field in bulk, all or
nothing, with a ``split`` entry in the dataset's history, under the dataset's lock.

Groups (kept whole, so that nothing leaks between splits):

* near-duplicates by pixels: the thumbnails (:func:`cvcurate.scoring.images.image_features`) and
  the threshold (``images.duplicate_correlation`` of ``configs/score.yaml``) of the score's
  ``near_duplicate`` and ``leakage`` checks, whole clusters (connected components of every link);
* copies of one file (same bytes);
* an augmented sample and its source image (put in train: augmented samples are training data).

An image that cannot be read goes to train (unless it keeps its split) and is counted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import store
from ..errors import InputError, interrupt_leaves, kept as kept_note
from ..splits import SPLITS, group_labels, split_counts, stratify

SPLIT_FIELD = "split"


@dataclass
class SplitResult:
    """What ``cvcurate split`` did. Per split name (train, val, test, and any other name an image
    kept): ``images``; per split and class: ``boxes`` and ``images_per_class``."""

    name: str
    val: float
    test: float
    seed: int
    reassign: bool
    classes: list[str]
    images: dict[str, int]
    boxes: dict[str, dict[str, int]]
    images_per_class: dict[str, dict[str, int]]
    kept: int  # images that kept the split they had
    assigned: int  # images given a split now
    changed: int  # of those, images whose split is not the one they had
    groups: int  # groups of two or more images kept in one split (near-duplicates, copies, augmented)
    grouped_images: int  # images in those groups
    unreadable: int  # images that could not be read (sent to train unless they kept a split)
    mixed_groups: int  # groups whose kept images were already in different splits (left as they were)
    history: dict[str, Any] = field(default_factory=dict)


def check_fractions(val: float, test: float) -> None:
    """:class:`InputError` unless val and test are in [0, 1) and val + test < 1."""
    for opt, v in (("--val", val), ("--test", test)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and 0 <= v < 1):
            raise InputError(f"{opt} must be a fraction in [0, 1), got {v}")
    if val + test >= 1:
        raise InputError(f"--val {val:g} + --test {test:g} = {val + test:g} leaves nothing for train: "
                         f"their sum must be below 1")


def split_dataset(name: str, *, val: float, test: float = 0.0, seed: int = 0, reassign: bool = False,
                  progress: bool = False, wait: float = 0.0) -> SplitResult:
    """Assign each image of dataset ``name`` to train, val or test, stratified by class and by
    image-level class mix, near-duplicates and copies in one split (see the module's docstring).

    Images that have a split keep it unless ``reassign``; the others are assigned so that the
    totals come as close as they can to the fractions (``val``, ``test``, the rest train).
    Deterministic for ``seed``, whatever the order of the samples. Holds the dataset's lock
    (another writer makes it fail, or wait ``wait`` seconds) and writes the field and the history
    entry together, all or nothing."""
    check_fractions(val, test)
    from ..scoring.images import image_features, near_duplicate_links
    from . import recovery
    from .score import load_score_config

    with store.dataset_lock(name, "split", user=store.journal.who(), wait_s=wait):
        recovery.recover(name, "split")
        labels = store.read(name)
        recs = labels.records
        if not recs:
            raise InputError(f"dataset {name!r} has no images: nothing to split")
        cfg = load_score_config().images
        paths = [r.filepath for r in recs]
        feats = image_features(paths, cfg, progress=progress)
        # every link of the score's near-duplicate relation (unreadable images link to nothing), so
        # that no image the gate would call leaked has its match in another split
        readable = np.where(feats.ok[:, None], feats.thumb, 0)
        links = [near_duplicate_links(readable, cfg.duplicate_correlation),
                 _same_bytes_links(paths), _augmented_links(name, recs)]
        group = group_labels(len(recs), *(np.concatenate(x) for x in zip(*links)))
        old = [r.split or None for r in recs]
        names = list(SPLITS) + sorted({s for s in old if s is not None} - set(SPLITS))
        fixed = np.full(len(recs), -1, np.int64)
        if not reassign:
            fixed = np.array([-1 if s is None else names.index(s) for s in old], np.int64)
        unreadable = ~feats.ok
        fixed[unreadable & (fixed < 0)] = 0  # to train
        # augmented samples are training data: a group holding one (with its source) goes to train,
        # unless one of its images keeps another split
        aug_groups = np.unique(group[links[2][0]]) if len(links[2][0]) else np.zeros(0, np.int64)
        held = np.unique(group[fixed >= 0])
        fixed[np.isin(group, np.setdiff1d(aug_groups, held)) & (fixed < 0)] = 0
        present = np.zeros((len(recs), len(labels.classes)), bool)
        for i, r in enumerate(recs):
            present[i, r.gt.class_id] = True
        fractions = [1 - val - test, val, test] + [0.0] * (len(names) - 3)
        got = stratify(present, paths, fractions, seed=seed, groups=group, fixed=fixed)
        keep = np.array([not reassign and s is not None for s in old])
        new = [names[k] for k in got]
        values = {r.sample_id: s for r, s, k in zip(recs, new, keep) if not k}
        size = np.bincount(group, minlength=len(recs))
        images, boxes, per_class = _counts(labels.classes, recs, new, names, present, got)
        history = {
            "action": "split",
            "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "val": val, "test": test, "seed": seed, "reassign": reassign,
            "counts": dict(images), "groups": int((size > 1).sum()), "kept": int(keep.sum()),
        }
        result = SplitResult(
            name=name, val=val, test=test, seed=seed, reassign=reassign, classes=list(labels.classes),
            images=images, boxes=boxes, images_per_class=per_class, kept=int(keep.sum()),
            assigned=int((~keep).sum()), changed=sum(1 for r, s, k in zip(recs, new, keep) if not k and r.split != s),
            groups=int((size > 1).sum()), grouped_images=int(size[size > 1].sum()),
            unreadable=int(unreadable.sum()), mixed_groups=_mixed(group, [s if k else None for s, k in zip(old, keep)]),
            history=history)
        with interrupt_leaves(f"the splits of dataset {name!r} are as they were (nothing was written)"):
            store.set_field(name, SPLIT_FIELD, values, history=history)
        kept_note(f"the splits of dataset {name!r} written ({result.assigned} assigned, {result.kept} kept)")
    return result


def _same_bytes_links(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Links between files with the same bytes (hashed only where two files have one size)."""
    sizes: dict[int, list[int]] = {}
    for i, p in enumerate(paths):
        try:
            sizes.setdefault(os.path.getsize(p), []).append(i)
        except OSError:
            continue
    first: dict[bytes, int] = {}
    a, b = [], []
    for same in sizes.values():
        for i in same if len(same) > 1 else ():
            try:
                h = hashlib.sha256()
                with open(paths[i], "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                continue
            j = first.setdefault(h.digest(), i)
            if j != i:
                a.append(i)
                b.append(j)
    return np.array(a, np.int64), np.array(b, np.int64)


def _augmented_links(name: str, recs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Links between an augmented sample and its source image (when the source is in the dataset)."""
    from .augment import source_of

    src = source_of(name)
    at = {r.filepath: i for i, r in enumerate(recs)}
    pairs = [(i, at[src[r.sample_id]]) for i, r in enumerate(recs) if src.get(r.sample_id) in at]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def _mixed(group: np.ndarray, kept_split: Sequence[str | None]) -> int:
    """Groups whose kept images are in more than one split."""
    seen: dict[int, set[str]] = {}
    for g, s in zip(group.tolist(), kept_split):
        if s is not None:
            seen.setdefault(g, set()).add(s)
    return sum(1 for v in seen.values() if len(v) > 1)


def _counts(classes: list[str], recs: Sequence[Any], new: list[str], names: list[str], present: np.ndarray,
            got: np.ndarray) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Images per split; boxes and images per split and class (names beyond test only when used)."""
    shown = [s for i, s in enumerate(names) if i < len(SPLITS) or np.any(got == i)]
    n_img, n_cls = split_counts(got, present, len(names))
    boxes = {s: dict.fromkeys(classes, 0) for s in shown}
    for r, s in zip(recs, new):
        for c in r.gt.class_id.tolist():
            boxes[s][classes[c]] += 1
    return ({s: int(n_img[names.index(s)]) for s in shown}, boxes,
            {s: {c: int(n_cls[names.index(s), k]) for k, c in enumerate(classes)} for s in shown})
