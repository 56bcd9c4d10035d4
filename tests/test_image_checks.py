"""Pixel checks: blur, exposure, near-duplicates and train/val leakage on generated images."""

from __future__ import annotations

import cv2
import numpy as np

from cvcurate.scoring import images as im
from cvcurate.types import ImageRecord, LabelSet


def texture(seed, size=128):
    rng = np.random.default_rng(seed)
    base = rng.normal(128, 30, size=(size, size)).astype(np.float32)
    base = cv2.GaussianBlur(base, (0, 0), 1.0) + np.linspace(-20, 20, size)[None, :]
    return np.clip(base, 0, 255).astype(np.uint8)


def test_each_image_check(tmp_path):
    recs = []

    def add(name, img, split="train"):
        p = tmp_path / name
        cv2.imwrite(str(p), img)
        recs.append(ImageRecord(str(p), img.shape[1], img.shape[0], split=split))

    for k in range(20):
        add(f"t{k}.png", texture(k))
    add("blurred.png", cv2.GaussianBlur(texture(100), (0, 0), 4))
    add("dark.png", (texture(101) * 0.05).astype(np.uint8))
    add("bright.png", np.full((128, 128), 252, np.uint8))
    dup = cv2.imdecode(cv2.imencode(".jpg", texture(3), [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0)
    add("copy_of_t3.jpg", np.clip(cv2.resize(dup, (100, 100)).astype(int) + 10, 0, 255).astype(np.uint8))
    add("leak_of_t5.png", texture(5), split="val")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    recs.append(ImageRecord(str(tmp_path / "broken.png"), 10, 10))
    labels = LabelSet(["a"], recs)
    feats = im.image_features([r.filepath for r in recs])
    issues = im.image_issues(labels, feats)
    found = {(i.type, i.filepath.rsplit("/", 1)[1]) for i in issues}
    assert found == {
        ("blur", "blurred.png"),
        ("underexposed", "dark.png"),
        ("overexposed", "bright.png"),
        ("near_duplicate", "copy_of_t3.jpg"),
        ("leakage", "leak_of_t5.png"),
        ("unreadable", "broken.png"),
    }
    leak = next(i for i in issues if i.type == "leakage")
    assert "'train'" in leak.reason and "'val'" in leak.reason and leak.data["other"].endswith("t5.png")
    assert all(0 <= i.score <= 1 for i in issues)


def test_near_duplicate_pairs_chunked_equals_unchunked():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    x[10] = x[3] + 0.01 * rng.normal(size=64)
    x[40] = x[3]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = im.near_duplicate_pairs(x, 0.95, chunk=7)
    b = im.near_duplicate_pairs(x, 0.95, chunk=1000)
    assert [(i, j) for i, j, _ in a] == [(i, j) for i, j, _ in b] == [(3, 10), (3, 40), (10, 40)]
