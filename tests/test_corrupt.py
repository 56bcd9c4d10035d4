"""The label-error injector: every type appears, is recorded exactly, round-trips through import."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import corrupt, formats, store
from cvcurate.boxes import iou
from cvcurate.cli import app
from cvcurate.errors import InputError
from cvcurate.formats import ImportOptions, voc
from cvcurate.types import Annotations, ImageRecord, LabelSet


def grid_labels(n=70, size=200, seed=0):
    """Images with 2-4 separated integer boxes each (no pixels needed: corrupt works on labels)."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        k = int(rng.integers(2, 5))
        boxes = []
        for j in range(k):
            x = 10 + 45 * j
            boxes.append([x, 20 + rng.integers(0, 30), x + 30, 120 + rng.integers(0, 60)])
        recs.append(ImageRecord(filepath=f"/data/img_{i:03d}.jpg", width=size, height=size,
                                gt=Annotations(np.array(boxes, float), rng.integers(0, 4, size=k))))
    return LabelSet(["a", "b", "c", "d"], recs)


def test_every_type_appears_and_is_recorded_exactly():
    labels = grid_labels()
    res = corrupt.corrupt(labels, rate=0.5, seed=3)
    assert set(res.by_type()) == set(corrupt.ERROR_TYPES)
    assert len(res.errors) == 35 and len({e.filepath for e in res.errors}) == 35
    orig = {r.filepath: r for r in labels.records}
    new = {r.filepath: r for r in res.labels.records}
    touched = {e.filepath for e in res.errors}
    for path in orig:  # untouched images are identical
        if path not in touched:
            assert orig[path].gt.equals(new[path].gt)
    for e in res.errors:
        o, c = orig[e.filepath].gt, new[e.filepath].gt
        np.testing.assert_allclose(c.xyxy[e.boxes], np.array(e.new).reshape(-1, 4))
        assert list(c.class_id[e.boxes]) == e.new_class
        delta = {"swap": 0, "badloc": 0, "overlooked": -1, "spurious": 1, "merge": -1,
                 "degenerate": 0, "split": len(e.boxes) - 1}[e.type]
        assert len(c) == len(o) + delta, e.type
        if e.type == "swap":
            assert e.new_class[0] != e.original_class[0]
        if e.type == "badloc":
            assert 0.2 <= iou(np.array(e.new[0]), np.array(e.original[0])) <= 0.5
        if e.type == "overlooked":  # the dropped box is no longer there
            assert not any(np.allclose(b, e.original[0]) for b in c.xyxy)
        if e.type == "degenerate":
            b = np.array(e.new[0])
            assert b[2] <= b[0] or b[3] <= b[1] or b[2] > orig[e.filepath].width
        if e.type == "merge":  # one box around both, drawn by hand: each side within 8 % of the exact union's
            u, ob = np.array(e.new[0]), np.array(e.original)
            exact = np.r_[ob[:, :2].min(axis=0), ob[:, 2:].max(axis=0)]
            side = np.tile(exact[2:] - exact[:2], 2)
            assert (np.abs(u - exact) <= corrupt.MERGE_JITTER * side + 0.5 + 1e-9).all()  # rounded to pixels
            assert iou(u, exact) >= 0.7
        if e.type == "split":
            assert 2 <= len(e.boxes) <= 3
            frags = np.array(e.new)
            ob = np.array(e.original[0])
            assert (frags[:, :2] >= ob[:2] - 1e-9).all() and (frags[:, 2:] <= ob[2:] + 1e-9).all()
        if e.type == "spurious":  # away from every box, the size and class of a real box
            assert all(iou(np.array(e.new[0]), b) < 0.05 for b in o.xyxy)
            wh = np.array(e.new[0])[2:] - np.array(e.new[0])[:2]
            real = corrupt.box_sizes(labels)
            assert (np.abs(real[:, :2] - wh).max(axis=1) <= 1.0)[real[:, 2] == e.new_class[0]].any()


def test_deterministic_and_source_untouched():
    labels = grid_labels()
    before = [r.gt.xyxy.copy() for r in labels.records]
    a = corrupt.corrupt(labels, rate=0.2, seed=7).to_dict()
    b = corrupt.corrupt(labels, rate=0.2, seed=7).to_dict()
    c = corrupt.corrupt(labels, rate=0.2, seed=8).to_dict()
    assert a == b and a != c
    for r, x in zip(labels.records, before):
        np.testing.assert_array_equal(r.gt.xyxy, x)


def test_bad_arguments():
    labels = grid_labels(5)
    with pytest.raises(InputError, match="rate"):
        corrupt.corrupt(labels, rate=0)
    with pytest.raises(InputError, match="unknown error type"):
        corrupt.corrupt(labels, types=["flip"])


def test_corrupted_dataset_round_trips_through_import(tmp_path):
    from tests import makedata as md

    labels = md.make_labels(tmp_path / "images", n=30, width=96, height=80)
    res = corrupt.corrupt(labels, rate=0.6, seed=1)
    voc.write(res.labels, tmp_path / "annotations")
    back, report = formats.load(tmp_path, ImportOptions(classes=labels.classes))
    assert report.rejected == 0
    got = {r.filepath: r for r in back.records}
    for r in res.labels.records:
        assert r.gt.equals(got[r.filepath].gt), r.filepath
    kinds = report.message_counts()
    n_degenerate = res.by_type().get("degenerate", 0)
    assert kinds.get("degenerate box", 0) + kinds.get("box outside image", 0) == n_degenerate


def test_cli_corrupt(tmp_path, dataset_name):
    from tests import makedata as md

    labels = md.make_labels(tmp_path / "images", n=12)
    store.write(labels, dataset_name)
    truth = tmp_path / "truth.json"
    out = dataset_name + "_c"
    try:
        r = CliRunner().invoke(app, ["corrupt", dataset_name, "--out", out, "--rate", "0.5", "--seed", "2",
                                     "--truth", str(truth)])
        assert r.exit_code == 0, r.output
        data = json.loads(truth.read_text())
        assert data["corrupted_images"] == 6 and len(data["errors"]) == 6
        assert len(store.read(out)) == 12 and len(store.read(dataset_name)) == 12
        r = CliRunner().invoke(app, ["corrupt", dataset_name, "--out", out])
        assert r.exit_code == 2 and "exists" in r.output
        # score the corrupted copy against its truth: how many of the 6 the ranking finds
        r = CliRunner().invoke(app, ["score", out, "--no-pixels", "--out", str(tmp_path / "s"),
                                     "--truth", str(truth)])
        assert r.exit_code == 0, r.output
        line = next(ln for ln in r.output.splitlines() if ln.startswith(f"against {truth}: "))
        found = int(line.split(": ")[1].split(" of ")[0])
        assert 0 <= found <= 6 and "of 6 corrupted images in the top 6; average precision" in line, line
    finally:
        if store.exists(out):
            store.delete(out)
