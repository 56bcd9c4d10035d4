"""Detections fields encoded to BSON for all their labels at once.

Writing a million predicted boxes as Python dicts (one per label, a list per box, an ObjectId
each) costs about 12 us a label before pymongo encodes them again: most of a 100k x 100 write.
:func:`detections_bson` lays the same bytes out in numpy (every label of a chunk is a row of
fixed columns; the parts whose length varies, the label's index in its list and its class name,
are padded and masked out) and hands pymongo one ``RawBSONDocument`` per sample, which it copies
as it is. The bytes are those ``bson.encode`` makes of the dicts the store built before (one per label:
``_id``, ``_cls``, ``attributes``, ``tags``, ``label``, ``bounding_box``, ``confidence``, as FiftyOne
lays out a Detection), field for field (tests/test_store_encode.py), so FiftyOne reads them as
it reads its own.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

from ..types import Annotations
from .convert import new_object_id_bytes, xyxy_to_rel_xywh

_I32 = struct.Struct("<i")
_HEAD = b"\x02_cls\x00" + _I32.pack(11) + b"Detections\x00" + b"\x04detections\x00"
_EMPTY = b"\x05\x00\x00\x00\x00"


def _table(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings as rows of a zero-padded uint8 table, and their lengths."""
    width = max([len(b) for b in items] + [1])
    tab = np.zeros((len(items), width), np.uint8)
    for i, b in enumerate(items):
        tab[i, :len(b)] = np.frombuffer(b, np.uint8)
    return tab, np.array([len(b) for b in items], np.int64)


def detections_bson(anns: Sequence[Annotations | None], sizes: Sequence[tuple[int, int]],
                    classes: Sequence[str], id_bytes: np.ndarray | None = None,
                    attributes: Sequence[str] = ()) -> list[Any]:
    """One ``Detections`` document per annotation as a ``RawBSONDocument`` (None stays None):
    labels with a fresh ObjectId, ``_cls``, empty attributes and tags, the class name, the box in
    FiftyOne's relative xywh, the confidence when the annotation has confidences, and after it
    the per-box numbers ``attributes`` names that an annotation's ``data`` holds (NaN: left out;
    ``predict --flip-check``'s).
    ``id_bytes`` (labels x 12) replaces the fresh ids (tests)."""
    from bson.raw_bson import RawBSONDocument

    live = [i for i, a in enumerate(anns) if a is not None]
    counts = np.array([len(anns[i]) for i in live], np.int64)
    total = int(counts.sum())
    out: list[Any] = [None] * len(anns)
    if total == 0:
        body = _HEAD + _EMPTY + b"\x00"
        for i in live:
            out[i] = RawBSONDocument(_I32.pack(4 + len(body)) + body)
        return out
    xyxy = np.concatenate([np.asarray(anns[i].xyxy, np.float64).reshape(-1, 4) for i in live])
    wh = np.repeat(np.array([sizes[i] for i in live], np.float64).reshape(-1, 2), counts, axis=0)
    rel = np.ascontiguousarray(xyxy_to_rel_xywh(xyxy, wh[:, 0], wh[:, 1]), dtype="<f8")
    cls = np.concatenate([np.asarray(anns[i].class_id, np.int64) for i in live])
    has_conf = np.repeat([anns[i].confidence is not None for i in live], counts)
    conf = np.ascontiguousarray(np.concatenate(
        [np.asarray(anns[i].confidence, np.float64) if anns[i].confidence is not None else np.zeros(len(anns[i]))
         for i in live]), dtype="<f8")
    extra = []  # (attribute, value per label, whether the label has it)
    for key in attributes:
        if any(key in anns[i].data for i in live):
            v = np.ascontiguousarray(np.concatenate(
                [np.asarray(anns[i].data[key], np.float64) if key in anns[i].data else np.full(len(anns[i]), np.nan)
                 for i in live]), dtype="<f8")
            extra.append((key, v, ~np.isnan(v)))
    oid = new_object_id_bytes(total) if id_bytes is None else np.asarray(id_bytes, np.uint8).reshape(total, 12)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    index = np.arange(total) - start  # each label's place in its list: the array's key
    keys, key_len = _table([str(k).encode() for k in range(int(counts.max()))])
    names, name_len = _table([c.encode("utf-8") for c in classes])

    cols: list[tuple[np.ndarray, np.ndarray | None]] = []  # (bytes per row, valid length per row or None)

    def const(b: bytes) -> None:
        cols.append((np.broadcast_to(np.frombuffer(b, np.uint8), (total, len(b))), None))

    def var(tab: np.ndarray, n: np.ndarray) -> None:
        cols.append((tab, n))

    def i32(v: np.ndarray) -> np.ndarray:
        return v.astype("<i4").view(np.uint8).reshape(total, 4)

    const(b"\x03")
    var(keys[index], key_len[index])
    const(b"\x00")
    doc_len_col = len(cols)
    const(b"\x00\x00\x00\x00")  # the document's length, filled in below
    const(b"\x07_id\x00")
    cols.append((oid, None))
    const(b"\x02_cls\x00" + _I32.pack(10) + b"Detection\x00")
    const(b"\x03attributes\x00" + _EMPTY + b"\x04tags\x00" + _EMPTY + b"\x02label\x00")
    cols.append((i32(name_len[cls] + 1), None))
    var(names[cls], name_len[cls])
    const(b"\x00\x04bounding_box\x00" + _I32.pack(49))
    box = rel.view(np.uint8).reshape(total, 4, 8)
    for k in range(4):
        const(b"\x01" + str(k).encode() + b"\x00")
        cols.append((box[:, k], None))
    const(b"\x00")
    for key, v, has in [("confidence", conf, has_conf)] + extra:  # a double, where the label has it
        name = b"\x01" + key.encode() + b"\x00"
        var(np.concatenate([np.broadcast_to(np.frombuffer(name, np.uint8), (total, len(name))),
                            v.view(np.uint8).reshape(total, 8)], axis=1), np.where(has, len(name) + 8, 0))
    const(b"\x00")

    lengths = np.stack([np.full(total, t.shape[1]) if n is None else n for t, n in cols], axis=1)
    entry_len = lengths.sum(axis=1)
    # the document starts at its length field: all that follows the key's terminating NUL
    doc_len = entry_len - lengths[:, :doc_len_col].sum(axis=1)
    cols[doc_len_col] = (i32(doc_len), None)
    rows = np.concatenate([t for t, _ in cols], axis=1)
    keep = np.concatenate([np.ones(t.shape, bool) if n is None else np.arange(t.shape[1]) < n[:, None]
                           for t, n in cols], axis=1)
    flat = rows[keep]  # row after row: every label's entry, in order
    per_ann = np.bincount(np.repeat(np.arange(len(live)), counts), weights=entry_len, minlength=len(live))
    bounds = np.concatenate([[0], np.cumsum(per_ann.astype(np.int64))])
    data = flat.tobytes()
    for k, i in enumerate(live):
        entries = data[bounds[k]:bounds[k + 1]]
        array = _I32.pack(4 + len(entries) + 1) + entries + b"\x00"
        body = _HEAD + array + b"\x00"
        out[i] = RawBSONDocument(_I32.pack(4 + len(body)) + body)
    return out
