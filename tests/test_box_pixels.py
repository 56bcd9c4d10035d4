"""The pixel features of boxes (cvcurate.scoring.boxpixels): a box on a defect against one on plain
steel, copies read their original's pixels, and the error models get them when pixels are read."""

from __future__ import annotations

import numpy as np

from cvcurate.scoring.boxpixels import GRID, PIXEL_FEATURES, BoxPixels


def _maps(n: int = 2, seed: int = 0) -> np.ndarray:
    """Plain steel (grey 120, faint noise) with a dark, textured defect in the top-left quarter."""
    rng = np.random.default_rng(seed)
    maps = np.clip(rng.normal(120, 3, (n, GRID, GRID)), 0, 255)
    q = GRID // 4
    maps[:, q:2 * q, q:2 * q] = np.clip(rng.normal(60, 25, (n, q, q)), 0, 255)
    return maps.astype(np.uint8)


def test_a_box_on_a_defect_stands_out_from_its_ring_and_one_on_plain_steel_does_not():
    px = BoxPixels(_maps(), np.array([True, False]))
    w = h = np.array([400.0, 400.0])  # images of 400 px: the defect is [100, 100, 200, 200]
    boxes = np.array([[100, 100, 200, 200], [250, 250, 350, 350], [150, 150, 250, 250], [100, 100, 200, 200]], float)
    f = px.features(boxes, np.array([0, 0, 0, 1]), w, h)
    assert f.shape == (4, len(PIXEL_FEATURES))
    on, plain, half = f[0], f[1], f[2]
    c, t, d, z = (PIXEL_FEATURES.index(k) for k in ("px_contrast", "px_texture", "px_detail", "px_zimage"))
    assert on[c] < -2 and abs(plain[c]) < 0.5 and on[c] < half[c]  # darker than its ring
    assert on[t] > 1 and abs(plain[t]) < 0.3  # rougher inside than around
    assert on[d] > 1 and abs(plain[d]) < 0.3
    assert on[z] < plain[z]
    assert np.isnan(f[3]).all()  # the second image could not be read: unknown, not zero
    # a box covering the whole image has no ring: its ring-based features are unknown
    whole = px.features(np.array([[0, 0, 400, 400]], float), np.array([0]), w, h)[0]
    assert np.isnan(whole[[c, t, d]]).all() and np.isfinite(whole[z])


def test_copies_read_the_pixels_of_their_original_image():
    maps = _maps(3, seed=1)
    maps[2] = 120  # a plain image
    px = BoxPixels(maps, np.ones(3, bool))
    w = h = np.full(3, 400.0)
    box = np.array([[100, 100, 200, 200]], float)
    copies = px.take(np.array([2, 0, 0]))  # copy 0 of image 2, copies 1 and 2 of image 0
    assert np.allclose(copies.features(box, np.array([1]), w, h), px.features(box, np.array([0]), w, h))
    assert not np.allclose(copies.features(box, np.array([0]), w, h), px.features(box, np.array([0]), w, h))
    # a copy of a copy
    assert np.allclose(copies.take(np.array([1])).features(box, np.array([0]), w, h),
                       px.features(box, np.array([0]), w, h))


def test_the_error_models_read_the_pixels_of_the_images_and_their_injected_copies(monkeypatch):
    from cvcurate.scoring import calibrate as cal_mod
    from cvcurate.scoring import score
    from cvcurate.scoring.images import ImageFeatures
    from cvcurate.scoring.model import FEATURES
    from tests.test_calibration import make_data

    labels, preds = make_data(120)
    n = len(labels.records)
    rng = np.random.default_rng(2)
    gray = np.clip(rng.normal(120, 3, (n, GRID, GRID)), 0, 255).astype(np.uint8)
    for i, r in enumerate(labels.records):  # every given box is a dark defect on the map
        for x1, y1, x2, y2 in (r.gt.xyxy * GRID / 400).round().astype(int):
            gray[i, y1:y2, x1:x2] = 50
    feats = ImageFeatures(np.ones(n, bool), np.full(n, 120.0), np.zeros(n), np.ones(n),
                          np.zeros((n, 1024), np.float32), gray)
    seen = {}
    real_fit = cal_mod.fit_model

    def spy(x_u, img_u, x_e, *args, **kw):
        seen["x_u"], seen["x_e"] = x_u, x_e
        return real_fit(x_u, img_u, x_e, *args, **kw)

    monkeypatch.setattr(cal_mod, "fit_model", spy)
    res = score(labels, predictions=preds, features=feats)
    cols = [FEATURES.index(k) for k in PIXEL_FEATURES]
    assert res.calibration.model is not None
    assert np.isfinite(seen["x_u"][:, cols]).mean() > 0.95 and np.isfinite(seen["x_e"][:, cols]).mean() > 0.9
    # the given boxes sit on their defects; the injected errors include boxes that do not
    c = FEATURES.index("px_contrast")
    assert np.nanmedian(seen["x_u"][:, c]) < -2 < np.nanmedian(seen["x_e"][:, c])
    # without pixels the features are unknown, and scoring still works
    seen.clear()
    score(labels, predictions=preds)
    assert np.isnan(seen["x_u"][:, cols]).all()
