"""Repeat-factor sampling in training (``train.repeat_threshold``): the images of rare classes are
drawn more often, the common ones as before, and a run with it resumes to the same weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cvcurate.detector.data import DetectionDataset, repeat_factors
from cvcurate.errors import ConfigError
from cvcurate.types import Annotations, ImageRecord, LabelSet
from tests.test_detector import assert_resumes_to_the_same_weights, make_images, tiny_cfg


def test_repeat_factors_raise_only_the_rare_classes_images():
    per_image = [np.array([0])] * 4 + [np.array([1]), np.array([0, 1]), np.array([], np.int64)]
    r = repeat_factors(per_image, 3, 0.5)  # class 0 in 5 of 7 images, class 1 in 2 of 7, class 2 in none
    assert np.allclose(r[:4], 1.0) and r[6] == 1.0  # common class, and an image without boxes: as before
    assert np.allclose(r[4:6], np.sqrt(0.5 / (2 / 7)))
    assert np.allclose(repeat_factors(per_image, 3, 0.0), 1.0)  # off
    assert repeat_factors(per_image, 3, 0.9)[4] > r[4]  # a higher threshold repeats them more


_GETITEM = DetectionDataset.__getitem__


def _one_rare(tmp_path) -> LabelSet:
    """10 images, one of them the only one with class 1."""
    base = make_images(tmp_path / "images", 10, seed=4)
    recs = []
    for i, r in enumerate(base.records):
        cls = np.full(len(r.gt), 1 if i == 3 else 0)
        recs.append(ImageRecord(r.filepath, r.width, r.height, Annotations(r.gt.xyxy, cls)))
    return LabelSet(list(base.classes), recs)


def _draws(labels: LabelSet, threshold: float, monkeypatch) -> np.ndarray:
    from cvcurate.detector.train import train

    counts = np.zeros(len(labels.records), np.int64)
    orig = _GETITEM

    def counting(self, i):
        counts[i] += 1
        return orig(self, i)

    monkeypatch.setattr(DetectionDataset, "__getitem__", counting)
    cfg = tiny_cfg(epochs=6)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, repeat_threshold=threshold, batch_size=5))
    lines: list[str] = []
    train(labels, cfg, progress=False, log=lines.append)
    if threshold:
        assert any("repeat-factor sampling" in ln and "1 of 10 images" in ln for ln in lines), lines
    return counts


def test_training_draws_the_rare_class_image_more_often(tmp_path, monkeypatch):
    labels = _one_rare(tmp_path)
    plain = _draws(labels, 0.0, monkeypatch)
    assert (plain == 6).all()  # shuffled: every image once an epoch
    rfs = _draws(labels, 0.5, monkeypatch)
    assert rfs.sum() == plain.sum()  # as many draws an epoch
    # the rare image weighs sqrt(0.5 / 0.1) = 2.24 against 1: expected 60 x 2.24 / 11.24 = 11.9 draws
    assert rfs[3] >= 8 and rfs[3] > rfs[np.arange(10) != 3].max()


def test_repeat_sampling_resumes_to_the_same_weights(tmp_path):
    labels = _one_rare(tmp_path)
    cfg = tiny_cfg(epochs=3)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, repeat_threshold=0.5))
    assert_resumes_to_the_same_weights(labels, cfg, tmp_path / "state.pt")


def test_repeat_threshold_is_checked():
    from cvcurate.detector.config import load_detector_config

    with pytest.raises((ConfigError, ValueError), match="repeat_threshold"):
        load_detector_config(overrides={"train": {"repeat_threshold": 2.0}})
