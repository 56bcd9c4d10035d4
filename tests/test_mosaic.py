"""Mosaic augmentation in training (``train.mosaic``): a window cut from four images tiled 2 x 2,
whose boxes still lie on their defects with their classes, and a run with it resumes to the same
weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cvcurate.detector.data import DetectionDataset
from cvcurate.errors import ConfigError
from tests.test_detector import assert_resumes_to_the_same_weights, make_images, tiny_cfg

SIZE = 64


def _plain(labels, mosaic: float, seed: int = 0) -> DetectionDataset:
    """Geometry and photometry off: what comes out is the mosaic alone."""
    return DetectionDataset(labels.records, SIZE, augment=True, hflip=0.0, vflip=0.0, mosaic=mosaic, seed=seed)


def test_mosaic_boxes_lie_on_their_defects_with_their_classes(tmp_path):
    # make_images: noise 0-50, class 0 boxes filled with 235, class 1 boxes with 125
    labels = make_images(tmp_path / "images", 8, seed=3)
    ds = _plain(labels, 1.0)
    plain = DetectionDataset(labels.records, SIZE)
    seen, other = 0, 0
    for k in range(40):
        x, t = ds[k % len(ds)]
        img = x[0].numpy() * 255
        assert img.shape == (SIZE, SIZE)
        b, c = t["boxes"].numpy(), t["labels"].numpy()
        assert (b >= 0).all() and (b <= SIZE).all()
        assert ((b[:, 2] - b[:, 0]) >= 2).all() and ((b[:, 3] - b[:, 1]) >= 2).all()
        for (x1, y1, x2, y2), cls in zip(b, c):
            # the inside, a pixel in from each edge (resampling blurs the rim), is the defect's fill
            inner = img[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
            if inner.size == 0:
                continue
            seen += 1
            med = float(np.median(inner))
            assert (med > 180) if cls == 0 else (90 < med < 160), (k, (x1, y1, x2, y2), cls, med)
        other += int(not torch.equal(x, plain[k % len(ds)][0]))
    assert seen >= 40  # the check above ran on many boxes
    assert other >= 35  # a window of four images, not the drawn image as it is


def test_mosaic_off_gives_the_image_itself(tmp_path):
    labels = make_images(tmp_path / "images", 4, seed=3)
    x, t = _plain(labels, 0.0)[1]
    ref = DetectionDataset(labels.records, SIZE)[1]
    assert torch.equal(x, ref[0]) and torch.equal(t["boxes"], ref[1]["boxes"])


def test_mosaic_resumes_to_the_same_weights(tmp_path):
    labels = make_images(tmp_path / "images", 10, seed=5)
    cfg = tiny_cfg(epochs=3)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mosaic=0.5))
    resumed = assert_resumes_to_the_same_weights(labels, cfg, tmp_path / "state.pt")
    assert resumed.train_config["mosaic"] == 0.5  # recorded in the checkpoint


def test_mosaic_is_checked():
    from cvcurate.detector.config import load_detector_config

    with pytest.raises((ConfigError, ValueError), match="mosaic"):
        load_detector_config(overrides={"train": {"mosaic": 1.5}})
