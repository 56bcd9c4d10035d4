"""One sample's geometry (flips, then an albumentations-style affine) and its references: the
3x3 matrix the batched path warps with (:mod:`.gpu`), the same geometry done by albumentations on
the CPU, and the boxes torchvision's ``transforms.v2`` computes, which the tests compare."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import affine_matrix, flip_matrix
from .pipeline import _A


@dataclass
class Geometry:
    """The geometric parameters of one sample: flips, then an albumentations-style affine.

    ``angle`` in degrees as albumentations' ``Affine(rotate=...)`` takes it; ``tx``, ``ty`` in
    whole pixels (albumentations truncates ``translate_percent * size`` to an int too).
    """

    hflip: bool = False
    vflip: bool = False
    sx: float = 1.0
    sy: float = 1.0
    angle: float = 0.0
    tx: int = 0
    ty: int = 0

    @property
    def has_affine(self) -> bool:
        return (self.sx, self.sy, self.angle, self.tx, self.ty) != (1.0, 1.0, 0.0, 0, 0)


def geometry_matrix(geom: Geometry, width: int, height: int) -> np.ndarray:
    """3x3 matrix (edge coordinates) of ``geom``: horizontal flip, vertical flip, then affine."""
    m = np.eye(3)
    if geom.hflip:
        m = flip_matrix(True, width, height) @ m
    if geom.vflip:
        m = flip_matrix(False, width, height) @ m
    if geom.has_affine:
        m = affine_matrix(geom.sx, geom.sy, geom.angle, geom.tx, geom.ty, width, height) @ m
    return m


def cpu_geometry(image: np.ndarray, xyxy: np.ndarray, geom: Geometry, *, bbox_params: dict[str, Any] | None = None,
                 border_mode: int = 0, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CPU path (albumentations) with fixed parameters: what :meth:`BatchAugment.apply_geometry` must match.

    Returns (image, boxes, kept indices) like :func:`cvcurate.augment.pipeline.apply_compose`.
    """
    from .pipeline import apply_compose

    A = _A()
    ts = []
    if geom.hflip:
        ts.append(A.HorizontalFlip(p=1.0))
    if geom.vflip:
        ts.append(A.VerticalFlip(p=1.0))
    if geom.has_affine:
        ts.append(A.Affine(scale={"x": (geom.sx, geom.sx), "y": (geom.sy, geom.sy)},
                           rotate=(geom.angle, geom.angle),
                           translate_px={"x": (geom.tx, geom.tx), "y": (geom.ty, geom.ty)},
                           border_mode=border_mode, fill=fill, p=1.0))
    bp = dict(bbox_params or {"format": "pascal_voc", "label_fields": ["class_labels"], "clip": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compose = A.Compose(ts, bbox_params=A.BboxParams(**bp), p=1.0)
    return apply_compose(compose, image, xyxy, seed=0)


def reference_boxes(xyxy: np.ndarray, geom: Geometry, width: int, height: int):
    """The boxes of ``geom`` computed by ``torchvision.transforms.v2.functional``, one sample.

    torchvision's angle turns the other way than albumentations' (``angle=-geom.angle``); its
    affine centre for boxes is the canvas centre in edge coordinates, like albumentations'.
    """
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    b = tv_tensors.BoundingBoxes(torch.as_tensor(np.asarray(xyxy, np.float64).reshape(-1, 4), dtype=torch.float64),
                                 format="XYXY", canvas_size=(height, width), clamping_mode="hard")
    if geom.hflip:
        b = F.horizontal_flip(b)
    if geom.vflip:
        b = F.vertical_flip(b)
    if geom.has_affine:
        if geom.sx != geom.sy:
            raise ValueError("torchvision's affine has one scale for both axes")
        b = F.affine(b, angle=-geom.angle, translate=[geom.tx, geom.ty], scale=geom.sx, shear=[0.0, 0.0])
    return b


