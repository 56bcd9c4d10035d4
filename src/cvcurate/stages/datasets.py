"""Datasets in the store: list, describe (counts per class and split, box sizes), delete; what a
lost database becomes.

A small facade, so that the CLI never touches the store itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import store
from ..errors import InputError

NAME_RULE = ("a dataset name is 1 to 100 characters, not '.' or '..', without path separators (/ \\), "
             "control characters or the glob characters * and ?")


def validate_dataset_name(name: str, option: str = "--name") -> str:
    """Check the name of a dataset about to be created before anything is stored; return it.

    A name ends up in file names (``NAME_import_report.json``, ``NAME_truth.json``, export folders)
    and in patterns, so a name that cannot be one (``..``, ``a/b``, 300 characters) is refused
    here, with the rule, instead of failing later with ``File name too long``.
    :class:`~cvcurate.errors.InputError` naming ``option`` otherwise.
    """
    import unicodedata

    bad = ""
    if not name:
        bad = "it is empty"
    elif len(name) > 100:
        bad = f"it has {len(name)} characters"
    elif name in (".", ".."):
        bad = f"it is '{name}'"
    elif any(c in "/\\" for c in name):
        bad = "it holds a path separator"
    elif any(c in "*?" for c in name):
        bad = "it holds a glob character (* or ?)"
    elif any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        bad = "it holds a control character"
    if bad:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InputError(f"{option} {shown!r} is not a valid dataset name ({bad}): {NAME_RULE}")
    return name


def list_datasets() -> list[str]:
    return store.list_datasets()


@dataclass
class DatasetLine:
    """One dataset as ``cvcurate datasets`` lists it."""

    name: str
    images: int
    boxes: int
    scored_at: str | None = None  # the last score run (None: never scored)
    flagged_images: int | None = None  # its images with an issue at p >= the queue threshold
    expected_label_errors: float | None = None
    stale: bool = False  # the last run was written by an older cvcurate: score again


def overview() -> list[DatasetLine]:
    """Every dataset with its images, boxes and last score run."""
    out = []
    for name in store.list_datasets():
        images, boxes = store.counts(name)
        line = DatasetLine(name, images, boxes)
        try:
            rec = store.read_record(name, "score", issues=False)
        except InputError:
            line.stale = True
            rec = None
        if rec is not None:
            line.scored_at = rec.at
            line.flagged_images = rec.summary.get("flagged_images")
            line.expected_label_errors = rec.summary.get("expected_label_errors")
        out.append(line)
    return out


def exists(name: str) -> bool:
    return store.exists(name)


def check_free(name: str, purpose: str, wait: float) -> None:
    """Refuse (or wait ``wait`` seconds) while another command holds the dataset: before long work
    whose result is written under the lock later, and before a delete or an overwrite (which
    cannot hold the lock of the dataset they remove)."""
    with store.dataset_lock(name, purpose, user=store.journal.who(), wait_s=wait):
        pass


def delete(name: str, wait: float = 0.0) -> int:
    """Delete dataset ``name`` (image files on disk are never touched); return its sample count.
    Refused while another command writes to it (a score, an apply: :func:`check_free`)."""
    check_free(name, "delete", wait)
    return store.delete(name)


def describe(name: str) -> dict[str, Any]:
    """Counts per class and split, boxes per image, box size statistics (and a warning line when a
    write to the dataset was left unfinished)."""
    from .recovery import warn_unfinished

    warn_unfinished(name)
    labels = store.read(name)
    k = len(labels.classes)
    splits = sorted({r.split or "-" for r in labels.records})
    per = {s: np.zeros(k, dtype=np.int64) for s in splits}
    images_per_split = {s: 0 for s in splits}
    nbox = np.array([len(r.gt) for r in labels.records], dtype=np.int64)
    for r in labels.records:
        s = r.split or "-"
        images_per_split[s] += 1
        if len(r.gt):
            per[s] += np.bincount(r.gt.class_id, minlength=k)
    wh = np.concatenate([r.gt.wh for r in labels.records]) if labels.records else np.zeros((0, 2))
    cid = np.concatenate([r.gt.class_id for r in labels.records]) if labels.records else np.zeros(0, int)
    rel_area = np.concatenate([r.gt.area / (r.width * r.height) for r in labels.records]) \
        if labels.records else np.zeros(0)

    def stats(x: np.ndarray) -> dict[str, float]:
        if len(x) == 0:
            return {}
        q = np.percentile(x, [0, 25, 50, 75, 100])
        return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
                "max": float(q[4]), "mean": float(np.mean(x))}

    box_stats = {}
    for c in range(k):
        m = cid == c
        box_stats[labels.classes[c]] = {"count": int(m.sum()), "width": stats(wh[m, 0]),
                                        "height": stats(wh[m, 1]), "rel_area": stats(rel_area[m])}
    return {
        "name": name,
        "images": len(labels.records),
        "boxes": int(nbox.sum()),
        "classes": labels.classes,
        "images_per_split": images_per_split,
        "boxes_per_class_and_split": {s: {labels.classes[c]: int(per[s][c]) for c in range(k)} for s in splits},
        "boxes_per_image": {**stats(nbox.astype(float)), "images_without_boxes": int((nbox == 0).sum())},
        "box_size": box_stats,
        "fields": sorted(store.field_names(name)),
        "history": store.get_history(name),
    }


def require(name: str) -> None:
    """Raise :class:`~cvcurate.errors.DatasetNotFoundError` (with the known names) unless ``name`` exists."""
    store.load(name)


def pred_field_of(name: str, pred_field: str | None, *, needed: str | None = None) -> str | None:
    """The predictions field a stage reads: the one named (refused in one line when the dataset has
    no such field, with the prediction fields it has), else the default (out-of-fold, else the
    model's: :func:`cvcurate.names.default_pred_field`). ``needed``: why the stage cannot go on
    without predictions (a dataset with none is then refused in one line, with that reason); else
    None when the dataset has none."""
    from ..errors import shell_arg
    from ..names import PRED_FIELDS, default_pred_field

    schema = store.field_names(name)
    have = [f for f in PRED_FIELDS if f in schema]
    todo = (f"run 'cvcurate predict {shell_arg(name)}' or 'cvcurate train {shell_arg(name)} --folds 5' first"
            + (f" (prediction fields: {', '.join(have)})" if have else ""))
    if pred_field is not None and pred_field not in schema:
        raise InputError(f"dataset {name!r} has no field {pred_field!r}: {todo}")
    if pred_field is None:
        pred_field = default_pred_field(schema)
        if pred_field is None and needed:
            raise InputError(f"dataset {name!r} has no predictions: {needed}; {todo}")
    return pred_field
