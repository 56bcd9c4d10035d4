"""The one in-memory annotation model that every stage shares.

Conventions, used everywhere inside cvcurate (conversion happens only at the boundaries:
file formats in :mod:`cvcurate.formats`, FiftyOne in :mod:`cvcurate.store`):

* boxes are absolute pixel coordinates ``xyxy`` as float64, ``x1 <= x2`` and ``y1 <= y2`` for a
  well-formed box, in the frame of the real image (``width`` x ``height`` pixels), with pixel
  edges at integers: a box covering pixel columns 0..9 is ``x1=0, x2=10``;
* class ids index into :attr:`LabelSet.classes`;
* confidences are in ``[0, 1]``, higher means more confident.

Malformed boxes (zero area, outside the image) are representable on purpose: the importer keeps
and reports them, and the scoring stage flags them; nothing is fixed silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

import numpy as np


def _as_array(value: Any, dtype: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be convertible to {np.dtype(dtype).name}: {exc}") from exc


@dataclass
class Annotations:
    """Boxes of one image: ``xyxy`` (N, 4), ``class_id`` (N,), optional ``confidence`` (N,).

    ``data`` holds extra per-box arrays of length N (for example ``"iscrowd"``). Indexing with an
    int array, a slice or a boolean mask returns a new :class:`Annotations`.
    """

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = _as_array(self.xyxy, np.float64, "xyxy")
        if self.xyxy.size == 0:
            self.xyxy = self.xyxy.reshape(0, 4)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (_, 4), got {self.xyxy.shape}")
        n = len(self.xyxy)
        self.class_id = _as_array(self.class_id, np.int64, "class_id").reshape(-1)
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},), got {self.class_id.shape}")
        if self.confidence is not None:
            self.confidence = _as_array(self.confidence, np.float64, "confidence").reshape(-1)
            if self.confidence.shape != (n,):
                raise ValueError(
                    f"confidence must have shape ({n},), got {self.confidence.shape}"
                )
        for key, value in list(self.data.items()):
            arr = np.asarray(value)
            if len(arr) != n:
                raise ValueError(f"data[{key!r}] must have length {n}, got {len(arr)}")
            self.data[key] = arr

    @classmethod
    def empty(cls, with_confidence: bool = False) -> Annotations:
        return cls(
            xyxy=np.zeros((0, 4)),
            class_id=np.zeros(0, dtype=np.int64),
            confidence=np.zeros(0) if with_confidence else None,
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Annotations:
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Annotations(
            xyxy=self.xyxy[index],
            class_id=self.class_id[index],
            confidence=None if self.confidence is None else self.confidence[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    @property
    def area(self) -> np.ndarray:
        """Signed area (negative for inverted boxes)."""
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return wh[:, 0] * wh[:, 1]

    @property
    def wh(self) -> np.ndarray:
        return self.xyxy[:, 2:] - self.xyxy[:, :2]

    def equals(self, other: Annotations, atol: float = 1e-6) -> bool:
        if len(self) != len(other):
            return False
        if (self.confidence is None) != (other.confidence is None):
            return False
        same = np.allclose(self.xyxy, other.xyxy, atol=atol) and np.array_equal(
            self.class_id, other.class_id
        )
        if same and self.confidence is not None:
            same = np.allclose(self.confidence, other.confidence, atol=atol)
        return bool(same)

    @staticmethod
    def concat(parts: Sequence[Annotations]) -> Annotations:
        if not parts:
            return Annotations.empty()
        with_conf = all(p.confidence is not None for p in parts)
        keys = set.intersection(*(set(p.data) for p in parts)) if parts else set()
        return Annotations(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]) if with_conf else None,
            data={k: np.concatenate([p.data[k] for p in parts]) for k in keys},
        )


@dataclass
class ImageRecord:
    """One image and its labels.

    ``key`` identifies the record across stages (the store uses the absolute file path);
    ``sample_id`` is the store's id once the record has been stored.
    """

    filepath: str
    width: int
    height: int
    gt: Annotations = field(default_factory=Annotations.empty)
    pred: Annotations | None = None
    split: str | None = None
    sample_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        self.width = int(self.width)
        self.height = int(self.height)

    @property
    def key(self) -> str:
        return self.filepath


@dataclass
class LabelSet:
    """A whole dataset in memory: the class names and the records.

    This is what importers return, what the store reads and writes, and what the synthetic
    generator, the detector and the scorers take.
    """

    classes: list[str]
    records: list[ImageRecord]

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {self.classes}")

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def validate(self) -> None:
        """Check every record (not only the first): class ids in range."""
        k = len(self.classes)
        for rec in self.records:
            for name, ann in (("gt", rec.gt), ("pred", rec.pred)):
                if ann is None or len(ann) == 0:
                    continue
                bad = (ann.class_id < 0) | (ann.class_id >= k)
                if bad.any():
                    raise ValueError(
                        f"{rec.filepath}: {name} class id {int(ann.class_id[bad][0])} "
                        f"is outside 0..{k - 1}"
                    )

    @property
    def num_boxes(self) -> int:
        return sum(len(r.gt) for r in self.records)

    def class_counts(self) -> dict[str, int]:
        counts = np.zeros(len(self.classes), dtype=np.int64)
        for rec in self.records:
            counts += np.bincount(rec.gt.class_id, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


@dataclass
class Issue:
    """One suspected problem: an image (``box`` None) or one box of its ground truth.

    ``score`` is in [0, 1]; higher means more likely a real problem, the same direction for every
    issue type, so queues sort by descending score. ``reason`` is a sentence a person can read.
    """

    filepath: str
    type: str
    score: float
    reason: str
    box: int | None = None
    sample_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


FIX_ACTIONS = ("add", "relabel", "move", "remove", "clip", "merge", "split")


@dataclass
class Fix:
    """A proposed change to one image's ground truth, for a reviewer to confirm or reject.

    ``action``: ``add`` a box, ``relabel`` / ``move`` / ``remove`` / ``clip`` the given box
    ``target`` (the store's id of a ground-truth detection). ``xyxy`` and ``class_id`` are the
    box as it would be after the fix (for ``remove``: the box that would go).
    ``merge``: the target takes ``xyxy`` (the joint box) and the boxes in ``others`` go.
    ``split``: one fix per piece, all with the same ``target`` and ``group``: the target becomes
    the first confirmed piece of its group, the other confirmed pieces are added.
    """

    action: str
    issue_type: str
    xyxy: np.ndarray
    class_id: int
    score: float
    reason: str
    target: str | None = None
    others: tuple[str, ...] = ()  # merge: the boxes merged into the target
    group: str | None = None  # split: the pieces of one box share a group
    tags: list[str] = field(default_factory=list)  # a reviewer's decision, carried over from the last run
    issue: str | None = None  # the id of the issue that proposes it (``cvcurate decide`` takes it)
    box: int | None = None  # the index of the target among the image's given boxes (None: a new box)

    def __post_init__(self) -> None:
        if self.action not in FIX_ACTIONS:
            raise ValueError(f"action must be one of {FIX_ACTIONS}, got {self.action!r}")
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(4)
        if self.action != "add" and self.target is None:
            raise ValueError(f"a {self.action} fix needs the target box id")


RUN_SCHEMA = 1  # the version of the stored score-run record; an older one asks for a new score run
# the run's one count, as cvcurate.scoring.summary.run_summary makes it: RunRecord.summary holds
# these keys of the registered run, RunRecord.info the rest
RUN_SUMMARY_KEYS = ("counts", "issues", "flagged", "flagged_images", "images", "boxes", "queue_min_p", "expected",
                    "expected_label_errors", "expected_label_errors_sd", "queues", "calibration")


@dataclass
class RunRecord:
    """One score run as every stage reads it: what it was run on, its one count, and its issues
    with their exact ``p`` (``Issue.score``), box and evidence, each with its id in
    ``data["id"]``. Written by the score stage with the dataset (:func:`cvcurate.store.write_record`),
    read back as this type by review, gate, report, export and the demo; no reader parses issue
    text or needs a file.

    ``summary``: the run's counts (issues, flagged, flagged_images, images, boxes, counts per type,
    expected per type, expected_label_errors and its sd, per-queue counts, calibration), as
    :func:`cvcurate.scoring.summary.run_summary` makes them; ``info``: the rest of the run (config,
    pred_field, pixels, in-sample images, the decisions carried)."""

    at: str
    issues: list[Issue]
    summary: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    schema: int = RUN_SCHEMA
    version: str = ""

    @property
    def queue_min_p(self) -> float:
        return float(self.summary.get("queue_min_p", 0.5))

    @property
    def pred_field(self) -> str | None:
        return self.info.get("pred_field")

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.summary.get("calibration")

    @property
    def in_sample_images(self) -> int | None:
        return self.info.get("in_sample_images")

    def flagged(self, min_p: float | None = None) -> list[Issue]:
        """The issues at ``p >= min_p`` (default: the run's queue threshold), exact ``p``."""
        at = self.queue_min_p if min_p is None else min_p
        return [i for i in self.issues if i.score >= at]

    def issues_of(self, labels: LabelSet) -> list[Issue]:
        """The issues of the records of ``labels``, each with its record's file path as read now
        (the run stored the paths it saw; the sample id is what ties an issue to its image)."""
        fp = {r.sample_id: r.filepath for r in labels.records}
        return [replace(i, filepath=fp[i.sample_id]) for i in self.issues if i.sample_id in fp]

    def by_sample(self) -> dict[str | None, list[Issue]]:
        out: dict[str | None, list[Issue]] = {}
        for i in self.issues:
            out.setdefault(i.sample_id, []).append(i)
        return out
