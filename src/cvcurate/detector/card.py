"""What a checkpoint is, without torch: its file (a shipped name or a path), its classes and the
images it was trained on. :class:`~.checkpoint.Checkpoint` (the weights, loaded by torch) and
the torch-free ONNX path's :class:`~.lite.ModelCard` (read from a cache beside the exported
network) share these checks, so a prediction made either way refuses the same class sets and
counts the same in-sample images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..types import Annotations

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
NAMED = {"default": WEIGHTS_DIR / "synth.pt", "synth": WEIGHTS_DIR / "synth.pt", "neu-det": WEIGHTS_DIR / "neu-det.pt"}


class ClassesAndImages:
    """Class-set checks and training-image digests of anything with ``classes``, ``extra`` and
    ``_source`` (the file it came from)."""

    classes: list[str]
    extra: dict[str, Any]
    _source: Path | None

    def train_digests(self) -> set[str] | None:
        """Digests of the images it was trained on (:func:`~cvcurate.detector.images.image_digests`),
        from the checkpoint or a ``<name>.train-images.txt`` beside its file; None when unknown."""
        if self.extra.get("train_image_sha256"):
            return set(self.extra["train_image_sha256"])
        if self._source is not None:
            side = self._source.with_suffix(".train-images.txt")
            if side.is_file():
                return {ln.strip() for ln in side.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
        return None

    def images_seen(self, paths: Sequence[str]) -> int | None:
        """How many of the image files ``paths`` it was trained on (same bytes); None when it does
        not say what it was trained on."""
        from .images import image_digests

        seen = self.train_digests()
        if seen is None:
            return None
        return sum(d in seen for d in image_digests(paths)) if seen else 0

    def check_classes(self, classes: Sequence[str], what: str = "the dataset") -> None:
        """Raise :class:`InputError` unless ``classes`` is the checkpoint's class set (any order)."""
        if set(classes) != set(self.classes) or len(classes) != len(self.classes):
            missing = [c for c in classes if c not in self.classes]
            extra = [c for c in self.classes if c not in classes]
            if not missing and not extra:
                detail = "duplicate names"
            elif len(missing) == len(classes):
                detail = "no class in common"
            else:  # the differences only (the full lists are above)
                detail = "; ".join(([f"{what} alone has {missing}"] if missing else [])
                                   + ([f"the checkpoint alone has {extra}"] if extra else []))
            raise InputError(f"the checkpoint was trained on classes {self.classes} but {what} has "
                             f"{list(classes)}: {detail}")

    def class_map(self, classes: Sequence[str], what: str = "the dataset") -> np.ndarray:
        """``map[checkpoint_id] = dataset_id`` (same class set required, order may differ)."""
        self.check_classes(classes, what)
        return np.array([list(classes).index(c) for c in self.classes], dtype=np.int64)


def resolve_model_path(name_or_path: str | Path) -> Path:
    """``default`` / ``synth`` / ``neu-det`` (shipped weights) or a file path."""
    key = str(name_or_path)
    if key in NAMED:
        p = NAMED[key]
        if not p.is_file():
            raise InputError(f"the shipped weights {key!r} ({p}) are missing: make them with "
                             f"scripts/train_default.py or give a checkpoint path")
        return p
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        raise InputError(f"no checkpoint at {p} (use a file path or one of {', '.join(NAMED)})")
    return p


def remap_classes(anns: Sequence[Annotations | None], mapping: np.ndarray) -> list[Annotations | None]:
    """Change class ids by ``mapping[old_id] = new_id`` (None stays None)."""
    return [None if a is None else Annotations(a.xyxy, mapping[a.class_id] if len(a) else a.class_id, a.confidence,
                                               data=dict(a.data))
            for a in anns]
