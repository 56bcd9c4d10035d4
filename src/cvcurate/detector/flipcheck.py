"""The flip check: does the detector draw the same box on the mirrored image?

``cvcurate predict --flip-check`` runs the network again on each image mirrored left-right and
top-bottom (the shipped detectors trained with both flips, so a mirrored steel surface is as
likely as the original) and gives every prediction two numbers, stored as its attributes
(:data:`cvcurate.names.PRED_ATTRIBUTES`):

* ``flip_iou``: the IoU of the prediction with the mirrored image's prediction of its class that
  stands for it (the largest confidence x IoU, mirrored back), averaged over the mirrors;
* ``flip_conf``: that prediction's confidence, averaged likewise (0 where a mirror has none).

A prediction the detector is sure of lands in the same place on the mirrored image (``flip_iou``
near 1); where the detector is unsure where an object ends, the mirrored image's box lands
elsewhere. The scorer's error models read them (:mod:`cvcurate.scoring.model`): a given box that
disagrees with a prediction that does not survive the mirror is less likely a real error than one
that disagrees with a prediction that does. The predictions themselves are those of the plain pass,
unchanged.

Pure numpy on the detector's own outputs (boxes in the square input's frame): the torch model and
the torch-free ONNX path (:mod:`.lite`) share it. IoU is unchanged by the resize to the record's
frame (a scale per axis), so the check is made in the input's frame.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..boxes import box_iou

MIRRORS = ("h", "v")  # left-right, top-bottom

Raw = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (input frame), scores, labels of one image
Detect = Callable[[Sequence[np.ndarray]], list[Raw]]


def mirror(images: Sequence[np.ndarray], axis: str) -> list[np.ndarray]:
    """The images mirrored left-right (``h``) or top-bottom (``v``)."""
    return [np.ascontiguousarray(im[:, ::-1] if axis == "h" else im[::-1, :]) for im in images]


def unmirror(boxes: np.ndarray, size: int, axis: str) -> np.ndarray:
    """Boxes found on the mirrored ``size`` x ``size`` input, back in the original's frame."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    lo, hi = (0, 2) if axis == "h" else (1, 3)
    b[:, lo], b[:, hi] = size - b[:, hi], size - b[:, lo]
    return b


def agreement(boxes: np.ndarray, labels: np.ndarray, back: np.ndarray, back_scores: np.ndarray,
              back_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction (``boxes``, ``labels``): the IoU with the prediction of its class among the
    mirrored-back ones (``back``...) that stands for it (the largest confidence x IoU) and that
    prediction's confidence; 0 and 0 where none of its class overlaps it."""
    n = len(boxes)
    if not n or not len(back):
        return np.zeros(n), np.zeros(n)
    iou = box_iou(np.asarray(boxes, np.float64).reshape(-1, 4), back)
    same = np.asarray(labels)[:, None] == np.asarray(back_labels)[None, :]
    rank = np.where(same, iou * np.asarray(back_scores, np.float64)[None, :], -1.0)
    j = rank.argmax(axis=1)
    rows = np.arange(n)
    ok = rank[rows, j] > 0
    return np.where(ok, iou[rows, j], 0.0), np.where(ok, np.asarray(back_scores, np.float64)[j], 0.0)


def flip_checked(detect: Detect, size: int, mirrors: Sequence[str] = MIRRORS
                 ) -> Callable[[Sequence[np.ndarray]], list[tuple[np.ndarray, np.ndarray, np.ndarray, dict]]]:
    """``detect`` (decoded square images -> per image (boxes, scores, labels)) with the flip check:
    per image the plain pass's outputs and a dict of ``flip_iou`` and ``flip_conf`` per box."""
    bad = [m for m in mirrors if m not in MIRRORS]
    if bad or not mirrors:
        raise ValueError(f"mirrors must be some of {MIRRORS}, got {list(mirrors)}")

    def run(images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, dict]]:
        plain = detect(images)
        iou = [np.zeros(len(p[0])) for p in plain]
        conf = [np.zeros(len(p[0])) for p in plain]
        for axis in mirrors:
            for k, (m_boxes, m_scores, m_labels) in enumerate(detect(mirror(images, axis))):
                i, c = agreement(plain[k][0], plain[k][2], unmirror(m_boxes, size, axis), m_scores, m_labels)
                iou[k] += i / len(mirrors)
                conf[k] += c / len(mirrors)
        return [(b, s, lab, {"flip_iou": i, "flip_conf": c}) for (b, s, lab), i, c in zip(plain, iou, conf)]

    return run
