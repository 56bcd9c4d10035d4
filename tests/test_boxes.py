"""Box math has one home (cvcurate.boxes): its forms agree with each other and with a direct
computation on random boxes."""

from __future__ import annotations

import numpy as np

from cvcurate.boxes import box_area, box_iou, iou, iou_one, pair_iou


def _boxes(rng, n):
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(0, 30, (n, 2))
    wh[rng.random(n) < 0.1] = 0.0  # some without area
    return np.concatenate([xy, xy + wh], axis=1)


def test_every_form_of_iou_agrees():
    rng = np.random.default_rng(0)
    a, b = _boxes(rng, 40), _boxes(rng, 30)
    m = box_iou(a, b)
    for i in range(len(a)):
        np.testing.assert_allclose(iou_one(a[i], b), m[i])
        for j in range(len(b)):
            # by hand: intersection over union, 0 where the union has no area
            ix = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            iy = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            union = box_area(a[i:i + 1])[0] + box_area(b[j:j + 1])[0] - ix * iy
            want = ix * iy / union if union > 0 else 0.0
            assert abs(m[i, j] - want) < 1e-12 and abs(iou(a[i], b[j]) - want) < 1e-12
    ia, ib = rng.integers(0, len(a), 50), rng.integers(0, len(b), 50)
    np.testing.assert_allclose(pair_iou(a, ia, b, ib), m[ia, ib])
    assert box_iou(a[:0], b).shape == (0, len(b))
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0 and iou([0, 0, 10, 10], [10, 10, 20, 20]) == 0.0
