"""The annotation model validates every record and indexes like supervision's Detections."""

from __future__ import annotations

import numpy as np
import pytest

from cvcurate.types import Annotations, ImageRecord, LabelSet


def test_shapes_are_validated():
    with pytest.raises(ValueError, match=r"xyxy must have shape \(_, 4\), got \(3, 5\)"):
        Annotations(np.zeros((3, 5)), np.zeros(3))
    with pytest.raises(ValueError, match=r"class_id must have shape \(2,\)"):
        Annotations(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="confidence"):
        Annotations(np.zeros((2, 4)), np.zeros(2), confidence=[0.1])
    with pytest.raises(ValueError, match="image size"):
        ImageRecord("a.jpg", 0, 10)


def test_mask_indexing_returns_new_object():
    a = Annotations([[0, 0, 10, 10], [5, 5, 6, 9]], [1, 2], confidence=[0.9, 0.2], data={"k": np.array([7, 8])})
    b = a[a.confidence > 0.5]
    assert len(b) == 1 and b.class_id.tolist() == [1] and b.data["k"].tolist() == [7]
    np.testing.assert_allclose(a.area, [100, 4])
    assert len(Annotations.empty()) == 0 and Annotations.empty().xyxy.shape == (0, 4)
    c = Annotations.concat([a, a])
    assert len(c) == 4 and c.confidence is not None


def test_labelset_validates_every_record_not_only_the_first():
    recs = [ImageRecord("a.jpg", 10, 10, Annotations([[0, 0, 1, 1]], [0])),
            ImageRecord("b.jpg", 10, 10, Annotations([[0, 0, 1, 1]], [5]))]
    with pytest.raises(ValueError, match="b.jpg: gt class id 5 is outside 0..1"):
        LabelSet(["x", "y"], recs).validate()
    with pytest.raises(ValueError, match="unique"):
        LabelSet(["x", "x"], [])
