"""How many new samples each class needs, and which images they start from.

A *job* is one sample to generate: a source image that carries the job's target class, run
through the pipeline, plus ``n_paste`` defects of the target class pasted from other images.
Every box of the source image comes along, so a job adds the source's instances of every class:
the planner counts those side effects and, for each job, picks the source that adds most of the
target class for the fewest instances of classes that need nothing more (the common ones), with a
penalty for reusing the same image, so that no handful of images is copied over and over.

Rule of thumb (Ultralytics, "tips for best training results"): at least 1,500 images and 10,000
instances per class. Classes below it after augmentation get a note: augmented copies of a few
images are not the same as that many real ones.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, InputError
from ..types import LabelSet

YOLO_MIN_IMAGES = 1500
YOLO_MIN_INSTANCES = 10000
BALANCE = "balance"
MAX_BALANCE_ROUNDS = 6
# the most instances a class can be raised to: far above any real dataset (a plan stops at a
# million samples anyway), and well inside the int64 counts the planner computes with
MAX_TARGET = 10_000_000


@dataclass
class Job:
    """One sample to generate: ``source`` indexes ``labels.records``; ``target`` a class id."""

    index: int
    source: int
    target: int
    n_paste: int = 0


@dataclass
class ClassRow:
    """One line of the plan's table."""

    name: str
    images: int  # images carrying the class now
    instances: int  # instances now
    target: int | None  # None: the class is not being raised
    new_instances: int  # projected instances added by the jobs (side effects included)
    new_images: int  # projected samples carrying the class
    samples: int  # jobs whose target is this class
    notes: list[str] = field(default_factory=list)

    @property
    def projected_instances(self) -> int:
        return self.instances + self.new_instances

    @property
    def projected_images(self) -> int:
        return self.images + self.new_images


@dataclass
class Plan:
    """What :func:`make_plan` decided: the table, the jobs and how it got there."""

    classes: list[str]
    rows: list[ClassRow]
    jobs: list[Job]
    target: int  # the instance count each selected class is raised to
    mode: str  # "target", "largest" or "balance"
    selected: list[int]  # class ids being raised
    n_paste_range: tuple[int, int] = (0, 0)
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return len(self.jobs)

    def table(self) -> list[dict[str, object]]:
        """The plan as rows of plain values (what the CLI prints)."""
        return [{"class": r.name, "images": r.images, "instances": r.instances,
                 "target": r.target if r.target is not None else "-", "samples": r.samples,
                 "new instances": r.new_instances, "after": r.projected_instances,
                 "images after": r.projected_images, "notes": "; ".join(r.notes)} for r in self.rows]

    def fingerprint(self, labels: LabelSet) -> str:
        """sha256 of the jobs and their source files: two runs with equal fingerprints make the same samples."""
        items = [(j.index, labels.records[j.source].filepath, j.target, j.n_paste) for j in self.jobs]
        blob = json.dumps({"classes": self.classes, "target": self.target, "seed": self.seed, "jobs": items})
        return hashlib.sha256(blob.encode()).hexdigest()


def count_matrix(labels: LabelSet) -> np.ndarray:
    """(n_records, n_classes) instance counts of the ground truth."""
    k = len(labels.classes)
    out = np.zeros((len(labels.records), k), np.int64)
    for i, rec in enumerate(labels.records):
        cid = rec.gt.class_id
        cid = cid[(cid >= 0) & (cid < k)]
        if len(cid):
            out[i] = np.bincount(cid, minlength=k)
    return out


def _class_ids(labels: LabelSet, classes: Sequence[str] | None) -> list[int]:
    if classes is None or len(classes) == 0:
        return list(range(len(labels.classes)))
    out = []
    for name in classes:
        if name not in labels.classes:
            close = difflib.get_close_matches(str(name), labels.classes, n=1)
            hint = f": did you mean {close[0]!r}?" if close else f" (classes: {', '.join(labels.classes)})"
            raise InputError(f"unknown class {name!r}{hint}")
        cid = labels.classes.index(name)
        if cid not in out:
            out.append(cid)
    return out


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_target(value: object, what: str = "target") -> int:
    """``value`` as a target instance count: a whole number from 1 to :data:`MAX_TARGET`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_TARGET:
        raise ConfigError(f"{what} must be a whole number from 1 to {MAX_TARGET:,} (instances per class), "
                          f"got {value!r}")
    return int(value)


def make_plan(
    labels: LabelSet,
    target: int | str | None = None,
    *,
    classes: Sequence[str] | None = None,
    n_paste: tuple[int, int] | Sequence[int] = (0, 0),
    seed: int = 0,
    max_samples: int = 1_000_000,
) -> Plan:
    """Plan the samples that bring each selected class to ``target`` instances.

    ``target``: an int; ``None`` for the largest class's current instance count; ``"balance"``
    to aim at equal counts after augmentation (the target rises with the side effects on the
    largest class, until the counts settle). ``classes``: the class names to raise (default all).
    ``n_paste``: [min, max] defects pasted per sample (copy-paste; (0, 0) without it), drawn per
    job from ``seed``, so that the projection is exact unless a paste finds no room.

    Raises :class:`InputError` for a dataset without boxes, an unknown class, a class with no
    instance to start from, and a target below a selected class's current count.
    """
    if not isinstance(labels, LabelSet):
        raise InputError("make_plan needs a LabelSet")
    labels.validate()
    seed = _check_int(seed, "seed", 0)
    lo, hi = (int(n_paste[0]), int(n_paste[1])) if n_paste else (0, 0)
    if not 0 <= lo <= hi:
        raise ConfigError(f"n_paste must be [min, max] with 0 <= min <= max, got {list(n_paste)}")
    counts = count_matrix(labels)
    if counts.sum() == 0:
        raise InputError("the dataset has no boxes: there is nothing to augment")
    selected = _class_ids(labels, classes)
    current = counts.sum(axis=0)
    names = labels.classes
    for c in selected:
        if current[c] == 0:
            raise InputError(f"class {names[c]!r} has no instance to start from: augmentation only varies "
                             "labelled defects; label some first or leave it out with --classes")
    if target is None:
        mode, tgt = "largest", int(current.max())
    elif isinstance(target, str):
        if target != BALANCE:
            raise ConfigError(f"target must be a whole number, None or {BALANCE!r}, got {target!r}")
        mode, tgt = BALANCE, int(current.max())
    else:
        mode, tgt = "target", check_target(target)
        below = [c for c in selected if current[c] > tgt]
        if below:
            c = max(below, key=lambda i: current[i])
            raise InputError(f"target {tgt} is below the current count of class {names[c]!r} ({int(current[c])} "
                             f"instances): give a target of at least {int(current[c])}, or pick the classes to "
                             "raise with --classes")
    pastes = _Pastes(seed, lo, hi)
    jobs, added = _greedy(counts, current, selected, tgt, pastes, max_samples)
    notes: list[str] = []
    if mode == BALANCE:
        for _ in range(MAX_BALANCE_ROUNDS):
            top = int((current + added).max())
            if top <= tgt:
                break
            tgt = top
            jobs, added = _greedy(counts, current, selected, tgt, pastes, max_samples)
        else:
            notes.append(f"balance did not settle in {MAX_BALANCE_ROUNDS} rounds: the images that carry the "
                         "rare classes also carry common ones; copy-paste or --classes can help")
    if len(jobs) >= max_samples:
        notes.append(f"stopped at {max_samples} samples (max_samples)")
    rows = _rows(labels, counts, selected, tgt, jobs)
    return Plan(classes=list(names), rows=rows, jobs=jobs, target=tgt, mode=mode, selected=selected,
                n_paste_range=(lo, hi), seed=seed, notes=notes)


class _Pastes:
    """How many defects job ``i`` pastes: drawn from (seed, i // 1024), the same for any plan length."""

    def __init__(self, seed: int, lo: int, hi: int) -> None:
        self.seed, self.lo, self.hi = seed, lo, hi
        self._blocks: dict[int, np.ndarray] = {}

    def __getitem__(self, i: int) -> int:
        if self.hi == 0:
            return 0
        b = i // 1024
        if b not in self._blocks:
            rng = np.random.default_rng(np.random.SeedSequence(entropy=self.seed, spawn_key=(0x9A11, b)))
            self._blocks[b] = rng.integers(self.lo, self.hi + 1, size=1024)
        return int(self._blocks[b][i % 1024])


def _greedy(counts: np.ndarray, totals: np.ndarray, selected: list[int], target: int,
            pastes: _Pastes, max_samples: int, start: int = 0) -> tuple[list[Job], np.ndarray]:
    """Jobs until every selected class reaches ``target`` from ``totals``; (jobs, projected additions)."""
    k = counts.shape[1]
    need = np.zeros(k, np.int64)
    need[selected] = np.maximum(target - totals[selected], 0)
    others = np.array([i for i in range(k) if i not in selected], np.int64)
    added = np.zeros(k, np.int64)
    uses = np.zeros(len(counts), np.int64)
    cands = {c: np.flatnonzero(counts[:, c] > 0) for c in selected}
    jobs: list[Job] = []
    while need.max() > 0 and len(jobs) < max_samples:
        # the class furthest from its target
        c = int(np.argmax(need))
        idx = cands[c]
        sub = counts[idx]
        # instances of classes that need nothing more are waste; reusing an image is penalised
        waste = sub[:, need <= 0].sum(axis=1)
        score = (waste + 1.0) * (uses[idx] + 1.0) / sub[:, c]
        j = int(idx[int(np.argmin(score))])  # ties: the first image (stable)
        n_p = pastes[start + len(jobs)]
        jobs.append(Job(index=start + len(jobs), source=j, target=c, n_paste=n_p))
        uses[j] += 1
        gained = counts[j].copy()
        gained[c] += n_p
        added += gained
        need = np.maximum(need - gained, 0)
        need[others] = 0
    return jobs, added


def _rows(labels: LabelSet, counts: np.ndarray, selected: list[int], target: int, jobs: list[Job]) -> list[ClassRow]:
    k = len(labels.classes)
    images = (counts > 0).sum(axis=0)
    current = counts.sum(axis=0)
    new_inst = np.zeros(k, np.int64)
    new_img = np.zeros(k, np.int64)
    samples = np.zeros(k, np.int64)
    for job in jobs:
        got = counts[job.source].copy()
        got[job.target] += job.n_paste
        new_inst += got
        new_img += got > 0
        samples[job.target] += 1
    rows = []
    for c, name in enumerate(labels.classes):
        row = ClassRow(name=name, images=int(images[c]), instances=int(current[c]),
                       target=target if c in selected else None, new_instances=int(new_inst[c]),
                       new_images=int(new_img[c]), samples=int(samples[c]))
        if row.projected_images < YOLO_MIN_IMAGES or row.projected_instances < YOLO_MIN_INSTANCES:
            row.notes.append(f"under the YOLO rule of thumb ({YOLO_MIN_IMAGES:,} images / "
                             f"{YOLO_MIN_INSTANCES:,} instances per class)")
        if c in selected and row.instances and row.samples > 3 * row.images:
            row.notes.append(f"each of its {row.images} images is used {row.samples / row.images:.0f} times on average")
        rows.append(row)
    return rows


def extend_plan(plan: Plan, labels: LabelSet, achieved: dict[str, int] | Sequence[int], start: int | None = None
                ) -> list[Job]:
    """More jobs (indices from ``start``, default after the plan's last) for the classes that
    ``achieved`` (instance counts, originals included) leaves under the plan's target.

    For a run whose augmentation lost boxes (cut at the border) or whose pastes found no room;
    deterministic in ``achieved``, so a resumed run extends the same way.
    """
    counts = count_matrix(labels)
    totals = np.array([achieved[c] for c in plan.classes] if isinstance(achieved, dict) else achieved, np.int64)
    start = len(plan.jobs) if start is None else int(start)
    lo, hi = plan.n_paste_range
    need = int(np.maximum(plan.target - totals[plan.selected], 0).sum())
    jobs, _ = _greedy(counts, totals, plan.selected, plan.target, _Pastes(plan.seed, lo, hi), need + 1, start)
    return jobs
