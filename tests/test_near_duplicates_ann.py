"""The approximate near-duplicate search (faiss IVF over the projection) against the exact one.

``_candidate_pairs`` switches to the approximate search from ``ANN_MIN_ROWS`` thumbnails; the
tests lower that threshold so that both run on the same thumbnails: real NEU-DET images and
generated ones, each with planted near-copies (JPEG re-saved, brightened, rescaled, noisy) and a
burst of 50 near-identical frames (more than ``ANN_K``: the re-search of dense rows must find them).
"""

from __future__ import annotations

import cv2
import numpy as np

from cvcurate.scoring import images as im
from cvcurate.scoring import neighbours as nb

T = 0.95


def field(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A random grey image with a natural-image-like 1/f^3 power spectrum."""
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    f[0, 0] = 1
    img = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * f ** -1.5, s=(size, size))
    img = (img - img.mean()) / img.std() * 35 + 128
    return np.clip(img, 0, 255).astype(np.uint8)


def variant(rng: np.random.Generator, img: np.ndarray, kind: int) -> np.ndarray:
    """A near-copy of ``img``: re-saved as JPEG, brightened, rescaled, or with a little noise."""
    if kind == 0:
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0)
    if kind == 1:
        return np.clip(img.astype(int) + rng.integers(-15, 16), 0, 255).astype(np.uint8)
    if kind == 2:
        h, w = img.shape
        return cv2.resize(img, (int(w * 0.8), int(h * 0.8)), interpolation=cv2.INTER_AREA)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def plant(folder, rng, originals: list[str], burst_of) -> list[str]:
    """Write near-copies of some originals and a burst of 50 near-identical frames; their paths."""
    out = []
    for k, src in enumerate(rng.choice(originals, len(originals) // 6, replace=False)):
        img = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        for c in range(1 + k % 3):
            p = folder / f"copy_{k}_{c}.png"
            cv2.imwrite(str(p), variant(rng, img, (k + c) % 4))
            out.append(str(p))
    base = burst_of.astype(float)
    for c in range(50):
        p = folder / f"burst_{c}.png"
        cv2.imwrite(str(p), np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8))
        out.append(str(p))
    return out


def _pairs(thumbs, ann: bool, monkeypatch) -> set[tuple[int, int]]:
    monkeypatch.setattr(im, "ANN_MIN_ROWS", 0 if ann else 1 << 62)
    i, j, c = im._candidate_pairs(thumbs, T, 2048)
    assert np.all(i < j) and np.all(c >= T)
    if ann:  # every pair reported is a true pair, its correlation the exact one
        assert np.allclose(c, np.einsum("ij,ij->i", thumbs[i], thumbs[j]), atol=1e-6)
    return set(zip(i.tolist(), j.tolist()))


def check_against_exact(thumbs: np.ndarray, paths: list[str], monkeypatch) -> None:
    exact = _pairs(thumbs, False, monkeypatch)
    ann = _pairs(thumbs, True, monkeypatch)
    burst = [k for k, p in enumerate(paths) if "burst_" in p]
    assert len(exact) > 50 * 49 // 2 + 100
    assert ann <= exact  # nothing false
    assert len(ann) >= 0.99 * len(exact), (len(ann), len(exact))
    assert {(a, b) for a in burst for b in burst if a < b} <= ann  # the whole burst
    # what the issues are made of: (nearly) every image with an earlier near-duplicate still gets
    # a partner, and every member of the burst is in its whole cluster (50; more where the burst's
    # source image is in the data too, as with NEU-DET, with its copies)
    splits = ["train" if k % 4 else "val" for k in range(len(paths))]
    monkeypatch.setattr(im, "ANN_MIN_ROWS", 1 << 62)
    want = im.near_duplicate_partners(thumbs, splits, T)
    monkeypatch.setattr(im, "ANN_MIN_ROWS", 0)
    got = im.near_duplicate_partners(thumbs, splits, T)
    assert set(got.image.tolist()) <= set(want.image.tolist())
    assert len(got.image) >= 0.99 * len(want.image)
    in_burst = np.isin(got.image, burst)
    assert in_burst.sum() >= 49 and np.all(got.cluster_size[in_burst] >= 50)
    assert np.array_equal(got.cluster_size[in_burst], want.cluster_size[np.isin(want.image, burst)])


def test_ann_finds_the_exact_pairs_on_generated_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    originals = []
    for k in range(1200):
        p = tmp_path / f"img_{k}.png"
        cv2.imwrite(str(p), field(rng))
        originals.append(str(p))
    paths = originals + plant(tmp_path, rng, originals, field(rng))
    order = rng.permutation(len(paths))  # copies and burst spread among the originals
    paths = [paths[k] for k in order]
    feats = im.image_features(paths)
    assert feats.ok.all()
    check_against_exact(feats.thumb, paths, monkeypatch)


def test_ann_finds_the_exact_pairs_on_neu_det(neu_det, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    originals = sorted(str(p) for p in (neu_det / "images").glob("*.jpg"))
    assert len(originals) >= 1000
    burst = cv2.imread(originals[7], cv2.IMREAD_GRAYSCALE)
    paths = originals + plant(tmp_path, rng, originals, burst)
    order = rng.permutation(len(paths))
    paths = [paths[k] for k in order]
    feats = im.image_features(paths)
    assert feats.ok.all()
    check_against_exact(feats.thumb, paths, monkeypatch)


def _burst_thumbs() -> np.ndarray:
    """600 distinct 32x32 thumbnails, then 80 near-identical frames (unit rows)."""
    rng = np.random.default_rng(2)
    x = np.stack([cv2.resize(field(rng), (32, 32), interpolation=cv2.INTER_AREA) for _ in range(600)]
                 + [cv2.resize(field(np.random.default_rng(3)), (32, 32), interpolation=cv2.INTER_AREA)] * 80)
    x = x.reshape(len(x), -1).astype(np.float32)
    x[600:] += rng.normal(0, 3, x[600:].shape).astype(np.float32)
    im._normalise(x)
    return x


def test_dense_rows_are_searched_again_and_threads_change_nothing(monkeypatch):
    """With ANN_K far below the burst, its rows are searched again (k: 5, 40, 320) until their
    neighbourhood is complete; one thread or two give the same pairs, to the bit."""
    x = _burst_thumbs()
    monkeypatch.setattr(nb, "ANN_K", 4)
    monkeypatch.setattr(im, "ANN_MIN_ROWS", 0)
    runs = []
    for cores in (1, 2):
        monkeypatch.setattr(im, "_cores", lambda cores=cores: cores)
        runs.append(im._candidate_pairs(x, T, 2048))
    for a, b in zip(*runs):
        assert np.array_equal(a, b)
    i, j, _ = runs[0]
    assert {(a, b) for a in range(600, 680) for b in range(a + 1, 680)} <= set(zip(i.tolist(), j.tolist()))


def test_a_burst_beyond_the_cap_still_gives_every_frame_a_partner(monkeypatch):
    """Rows of a burst larger than ANN_K_MAX + 1 keep only their ANN_K_MAX nearest; each frame
    left without an earlier partner is linked to the first frame of its cluster: every frame but
    the first still gets an issue, and the cluster is whole."""
    x = _burst_thumbs()
    monkeypatch.setattr(nb, "ANN_K", 4)
    monkeypatch.setattr(nb, "ANN_K_MAX", 10)
    monkeypatch.setattr(im, "ANN_MIN_ROWS", 0)
    i, j, c = im._candidate_pairs(x, T, 2048)
    assert np.all(np.einsum("ij,ij->i", x[i], x[j]) >= T) and np.all(i < j)
    assert len(i) < 80 * 79 // 2  # the cap did bite
    got = im.near_duplicate_partners(x, ["train"] * len(x), T)
    assert got.image.tolist() == list(range(601, 680))
    assert np.all(got.partner >= 600) and np.all(got.cluster_size == 80)
