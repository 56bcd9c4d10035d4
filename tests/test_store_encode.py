"""The numpy BSON encoder of Detections fields against bson.encode of the dicts it replaces:
byte for byte, for every shape a field takes (no labels, one, more than 10 and 100 in a list,
with and without confidences, NaN, class names of any length, non-ASCII, images of any size)."""

from __future__ import annotations

import bson
import numpy as np
import pytest

from cvcurate.names import PRED_ATTRIBUTES
from cvcurate.store.convert import xyxy_to_rel_xywh
from cvcurate.store.encode import detections_bson
from cvcurate.types import Annotations

CLASSES = ["a", "scratch", "rolled-in_scale", "défaut", "x" * 40]


def _dict_doc(ann, width, height, classes, ids):
    """The oracle: the Detections field as the dicts the store wrote before the encoder (and as
    FiftyOne writes a Detections field: label documents in this field order)."""
    rel = xyxy_to_rel_xywh(ann.xyxy, width, height).tolist()
    conf = None if ann.confidence is None else np.asarray(ann.confidence, np.float64).tolist()
    dets = []
    for i in range(len(ann)):
        d = {"_id": ids[i], "_cls": "Detection", "attributes": {}, "tags": [], "label": classes[int(ann.class_id[i])],
             "bounding_box": rel[i]}
        if conf is not None:
            d["confidence"] = conf[i]
        for key in PRED_ATTRIBUTES:  # the flip check's numbers, where a box has them
            if key in ann.data and not np.isnan(ann.data[key][i]):
                d[key] = float(ann.data[key][i])
        dets.append(d)
    return {"_cls": "Detections", "detections": dets}


def _anns(rng, n_labels, conf, flip=False):
    xy = rng.uniform(0, 500, (n_labels, 2))
    wh = rng.uniform(0.001, 300, (n_labels, 2))
    c = None
    if conf:
        c = rng.random(n_labels)
        if n_labels:
            c[0] = np.nan
    data = {}
    if flip:  # predict --flip-check's numbers; NaN (a box without them) is left out
        data = {k: np.where(rng.random(n_labels) < 0.2, np.nan, rng.random(n_labels)) for k in PRED_ATTRIBUTES}
    return Annotations(np.concatenate([xy, xy + wh], axis=1), rng.integers(len(CLASSES), size=n_labels), c, data)


@pytest.mark.parametrize("seed", range(4))
def test_bytes_equal_bson_encode_of_the_dicts(seed):
    rng = np.random.default_rng(seed)
    anns, sizes = [], []
    for n in (0, 1, 3, 11, 0, 101, 7, 250):
        anns.append(_anns(rng, n, conf=bool(rng.integers(2)), flip=bool(seed % 2) and bool(rng.integers(2))))
        sizes.append((int(rng.integers(1, 5000)), int(rng.integers(1, 5000))))
    anns.insert(2, None)
    sizes.insert(2, (10, 10))
    total = sum(len(a) for a in anns if a is not None)
    ids = rng.integers(0, 256, (total, 12), dtype=np.uint8)
    raw = detections_bson(anns, sizes, CLASSES, id_bytes=ids, attributes=PRED_ATTRIBUTES)
    oids = iter([bson.ObjectId(ids[k].tobytes()) for k in range(total)])
    for a, (w, h), r in zip(anns, sizes, raw):
        if a is None:
            assert r is None
            continue
        want = bson.encode(_dict_doc(a, w, h, CLASSES, [next(oids) for _ in range(len(a))]))
        assert r.raw == want
        got = bson.decode(r.raw)["detections"]
        assert len(got) == len(a) and all(d["label"] == CLASSES[c] for d, c in zip(got, a.class_id))


def test_no_labels_at_all_and_fresh_ids():
    empty = Annotations.empty(with_confidence=True)
    raw = detections_bson([empty, None], [(4, 4), (4, 4)], CLASSES)
    assert bson.decode(raw[0].raw) == {"_cls": "Detections", "detections": []} and raw[1] is None
    rng = np.random.default_rng(0)
    two = detections_bson([_anns(rng, 50, True), _anns(rng, 50, False)], [(9, 9), (9, 9)], CLASSES)
    ids = [d["_id"] for r in two for d in bson.decode(r.raw)["detections"]]
    assert len(set(ids)) == 100 and all(isinstance(i, bson.ObjectId) for i in ids)
