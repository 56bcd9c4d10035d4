"""``cvcurate split``: stratified train/val/test, near-duplicates and copies in one split, existing
splits kept, the history entry; the pure stratification (:mod:`cvcurate.splits`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from cvcurate.errors import InputError
from cvcurate.scoring.images import image_features, near_duplicate_partners
from cvcurate.splits import group_labels, split_counts, stratify
from cvcurate.stages.split import split_dataset
from cvcurate.types import Annotations, ImageRecord, LabelSet
from tests import makedata as md

runner = CliRunner()
CLASSES = ["crack", "pit", "scratch", "rare"]
# class mixes of the synthetic images: (classes, how many)
MIXES = [((0,), 30), ((1,), 15), ((0, 2), 10), ((3,), 5), ((), 6)]


def _record(path: Path, classes: tuple[int, ...], split: str | None = None) -> ImageRecord:
    xyxy = [(4 + 8 * k, 4 + 6 * k, 20 + 8 * k, 24 + 6 * k) for k in range(len(classes))]
    return ImageRecord(filepath=str(path.resolve()), width=64, height=48, split=split,
                       gt=Annotations(np.array(xyxy, float).reshape(-1, 4), list(classes)))


def make_dataset(folder: Path, name: str, *, near_dups: int = 0, flat_copies: int = 0, unreadable: int = 0,
                 split_of=lambda i: None) -> LabelSet:
    """66 noise images (distinct pixels) in the class mixes of MIXES; then ``near_dups`` images
    that are a brighter copy of image 3k (so near-duplicates of it), ``flat_copies`` pairs of
    byte-identical flat grey images (no pixel detail: only their bytes match) and ``unreadable``
    files that are no image."""
    recs = []
    for classes, count in MIXES:
        for _ in range(count):
            i = len(recs)
            recs.append(_record(md.make_image(folder / f"img_{i:03d}.png", seed=i), classes, split_of(i)))
    for k in range(near_dups):
        src = cv2.imread(recs[3 * k].filepath, cv2.IMREAD_GRAYSCALE)
        path = folder / f"dup_{k:03d}.png"
        cv2.imwrite(str(path), np.clip(src.astype(int) + 6, 0, 255).astype(np.uint8))
        recs.append(_record(path, (0,)))
    for k in range(flat_copies):
        for copy in "ab":
            path = folder / f"flat_{k}_{copy}.png"
            cv2.imwrite(str(path), np.full((48, 64), 40 + 20 * k, np.uint8))
            recs.append(_record(path, (1,)))
    for k in range(unreadable):
        path = folder / f"broken_{k}.png"
        path.write_bytes(b"not an image at all" * (k + 1))
        recs.append(_record(path, (0,)))
    labels = LabelSet(classes=list(CLASSES), records=recs)
    store.write(labels, name)
    return labels


def splits_by_path(name: str) -> dict[str, str | None]:
    return {r.filepath: r.split for r in store.read(name).records}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- the stage on a stored dataset ------------------------------------------------------------------
def test_each_class_within_one_image_of_its_share(tmp_path, dataset_name):
    labels = make_dataset(tmp_path, dataset_name)
    res = split_dataset(dataset_name, val=0.2, test=0.1, seed=0)
    got = splits_by_path(dataset_name)
    assert res.assigned == len(labels.records) and res.kept == 0
    frac = {"train": 0.7, "val": 0.2, "test": 0.1}
    for c, cls in enumerate(CLASSES):
        with_c = [r for r in labels.records if c in r.gt.class_id.tolist()]
        for s, f in frac.items():
            n = sum(got[r.filepath] == s for r in with_c)
            assert abs(n - f * len(with_c)) <= 1, (cls, s, n, len(with_c))
            assert res.images_per_class[s][cls] == n
    for s, f in frac.items():
        assert abs(sum(v == s for v in got.values()) - f * len(got)) <= 1, s
        assert res.images[s] == sum(v == s for v in got.values())
    assert sum(sum(b.values()) for b in res.boxes.values()) == labels.num_boxes


def test_same_seed_same_split_other_seed_other_split(tmp_path, dataset_name):
    make_dataset(tmp_path, dataset_name)
    split_dataset(dataset_name, val=0.2, seed=1)
    first = splits_by_path(dataset_name)
    split_dataset(dataset_name, val=0.2, seed=1, reassign=True)
    assert splits_by_path(dataset_name) == first
    res = split_dataset(dataset_name, val=0.2, seed=2, reassign=True)
    assert splits_by_path(dataset_name) != first and res.changed > 0
    assert set(first.values()) == {"train", "val"}  # no test split asked for


def test_a_rare_class_gets_val_images(tmp_path, dataset_name):
    labels = make_dataset(tmp_path, dataset_name)
    rare = [r.filepath for r in labels.records if 3 in r.gt.class_id.tolist()]
    assert len(rare) == 5
    for seed in range(4):
        split_dataset(dataset_name, val=0.2, seed=seed, reassign=True)
        got = splits_by_path(dataset_name)
        assert [got[p] for p in rare].count("val") == 1, seed


def test_near_duplicates_and_copies_share_a_split(tmp_path, dataset_name):
    labels = make_dataset(tmp_path, dataset_name, near_dups=8, flat_copies=4, unreadable=2)
    dup_of = {r.filepath: labels.records[3 * k].filepath
              for k, r in enumerate(r for r in labels.records if "dup_" in r.filepath)}
    flat = sorted(r.filepath for r in labels.records if "flat_" in r.filepath)
    for seed in range(3):
        res = split_dataset(dataset_name, val=0.3, test=0.2, seed=seed, reassign=True)
        got = splits_by_path(dataset_name)
        assert all(got[a] == got[b] for a, b in dup_of.items()), seed
        assert all(got[a] == got[b] for a, b in zip(flat[::2], flat[1::2])), seed
        assert res.groups == 8 + 4 and res.grouped_images == 24
        assert res.unreadable == 2 and all(got[p] == "train" for p in got if "broken_" in p)
    # what the gate's leakage check sees: no near-duplicate in another split
    recs = store.read(dataset_name).records
    feats = image_features([r.filepath for r in recs])
    ok = np.flatnonzero(feats.ok)
    leak = near_duplicate_partners(feats.thumb[ok], [recs[i].split for i in ok], 0.95).leak
    assert not leak.any()


def test_existing_splits_kept_unless_reassign(tmp_path, dataset_name):
    labels = make_dataset(tmp_path, dataset_name, split_of=lambda i: "train" if i % 3 == 0 else None)
    before = splits_by_path(dataset_name)
    n_kept = sum(v is not None for v in before.values())
    res = split_dataset(dataset_name, val=0.25, seed=0)
    got = splits_by_path(dataset_name)
    assert (res.kept, res.assigned) == (n_kept, len(labels.records) - n_kept)
    assert all(got[p] == "train" for p, s in before.items() if s == "train")
    assert all(v in ("train", "val") for v in got.values())
    # the fractions aim at the totals: a quarter of all the images in val
    assert abs(sum(v == "val" for v in got.values()) - 0.25 * len(got)) <= 1
    res = split_dataset(dataset_name, val=0.25, seed=0, reassign=True)
    again = splits_by_path(dataset_name)
    assert res.kept == 0 and res.assigned == len(labels.records)
    assert any(again[p] == "val" for p, s in before.items() if s == "train")


def test_the_split_is_recorded_in_the_history(tmp_path, dataset_name):
    make_dataset(tmp_path, dataset_name, near_dups=2, split_of=lambda i: "val" if i == 0 else None)
    res = split_dataset(dataset_name, val=0.2, test=0.1, seed=7)
    entry = store.get_history(dataset_name)[-1]
    assert set(entry) == {"action", "at", "val", "test", "seed", "reassign", "counts", "groups", "kept"}
    assert entry["action"] == "split" and (entry["val"], entry["test"], entry["seed"]) == (0.2, 0.1, 7)
    assert entry["reassign"] is False and entry["kept"] == 1 and entry["groups"] == 2
    assert entry["counts"] == res.images and set(entry["counts"]) == {"train", "val", "test"}
    assert sum(entry["counts"].values()) == 68


def test_bad_fractions_are_refused_before_anything(dataset_name):
    for val, test in ((1.0, 0.0), (-0.1, 0.0), (0.5, 0.5), (0.2, 1.2)):
        with pytest.raises(InputError):
            split_dataset(dataset_name, val=val, test=test)
    assert not store.exists(dataset_name)


# -- the command ----------------------------------------------------------------------------------
def test_cli_prints_counts_and_rejects_bad_input_in_one_line(tmp_path, dataset_name):
    make_dataset(tmp_path, dataset_name, near_dups=1)
    r = run("split", dataset_name, "--val", 0.2, "--test", 0.1, "--seed", 3)
    assert r.exit_code == 0, r.output
    assert "train (" in r.output and "val (" in r.output and "rare" in r.output
    assert "67 image(s) assigned" in r.output and "1 group(s)" in r.output
    for args, expected in ((["--val", 0.6, "--test", 0.4], "sum must be below 1"),
                           (["--val", 1.5], "--val must be a fraction in [0, 1)")):
        r = run("split", dataset_name, *args)
        assert r.exit_code == 2 and expected in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    r = run("split", "no_such_dataset", "--val", 0.2)
    assert r.exit_code == 2 and "no dataset named 'no_such_dataset'" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_help_shows_an_example():
    r = runner.invoke(app, ["split", "--help"], terminal_width=200)
    assert r.exit_code == 0 and "cvcurate split neu --val 0.2 --seed 0" in r.output and "--reassign" in r.output


# -- the pure stratification ----------------------------------------------------------------------
def test_stratify_does_not_depend_on_the_record_order():
    rng = np.random.default_rng(0)
    present = rng.random((200, 4)) < [0.5, 0.3, 0.1, 0.03]
    keys = [f"/data/img_{i:04d}.png" for i in range(200)]
    groups = np.arange(200)
    groups[[5, 17, 80]] = 5
    a = stratify(present, keys, [0.7, 0.2, 0.1], seed=3, groups=groups)
    perm = rng.permutation(200)
    b = stratify(present[perm], [keys[i] for i in perm], [0.7, 0.2, 0.1], seed=3, groups=groups[perm])
    assert (a[perm] == b).all() and len(set(a[[5, 17, 80]])) == 1
    n, per_class = split_counts(a, present, 3)
    assert np.abs(per_class - np.array([0.7, 0.2, 0.1])[:, None] * present.sum(axis=0)).max() <= 1
    assert np.abs(n - np.array([140, 40, 20])).max() <= 1


def test_stratify_pins_groups_and_keeps_fixed_images():
    present = np.ones((10, 1), bool)
    keys = [str(i) for i in range(10)]
    fixed = np.full(10, -1)
    fixed[[0, 1]] = 1  # two images kept in val
    groups = np.arange(10)
    groups[2] = 0  # image 2 goes with image 0
    got = stratify(present, keys, [0.5, 0.5], groups=groups, fixed=fixed)
    assert got[0] == got[1] == got[2] == 1 and (got == 1).sum() == 5


def test_group_labels_joins_chains():
    # c links a and b, which do not link each other: one group
    assert group_labels(5, [2, 2, 4], [0, 1, 3]).tolist() == [0, 0, 0, 3, 3]


def test_a_failed_write_leaves_the_splits_as_they_were(tmp_path, dataset_name, monkeypatch):
    from cvcurate.store import io

    make_dataset(tmp_path, dataset_name, split_of=lambda i: "val" if i < 3 else None)
    before, history = splits_by_path(dataset_name), store.get_history(dataset_name)

    def fail(*args, **kw):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(io.meta, "append_history", fail)
    with pytest.raises(RuntimeError):
        split_dataset(dataset_name, val=0.2, seed=0, reassign=True)
    assert splits_by_path(dataset_name) == before and store.get_history(dataset_name) == history


def test_augmented_samples_and_their_sources_go_to_train(tmp_path, dataset_name):
    """An augmented sample is training data: it and its source image (one group) are put in train,
    never in val or test, whatever the seed."""
    from cvcurate.names import AUGMENT_FIELD

    labels = make_dataset(tmp_path, dataset_name, near_dups=6)
    ids = {r.filepath: r.sample_id for r in store.read(dataset_name).records}
    source = {r.filepath: labels.records[3 * k].filepath
              for k, r in enumerate(r for r in labels.records if "dup_" in r.filepath)}
    store.set_dict_field(dataset_name, AUGMENT_FIELD, {ids[a]: {"source": s} for a, s in source.items()})
    for seed in range(3):
        split_dataset(dataset_name, val=0.4, test=0.2, seed=seed, reassign=True)
        got = splits_by_path(dataset_name)
        assert all(got[a] == got[s] == "train" for a, s in source.items()), seed
        assert {"val", "test"} <= set(got.values())


def test_the_export_manifest_says_how_the_splits_were_made(tmp_path, dataset_name):
    """The last split's settings and counts travel with the data: the export manifest's lineage."""
    import json

    from cvcurate.stages.export import export

    make_dataset(tmp_path, dataset_name)
    res = split_dataset(dataset_name, val=0.2, test=0.1, seed=7)
    export(dataset_name, tmp_path / "out", format="coco")
    got = json.loads((tmp_path / "out" / "manifest.json").read_text())["lineage"]["split"]
    assert (got["val"], got["test"], got["seed"], got["reassign"]) == (0.2, 0.1, 7, False)
    assert got["counts"] == res.images and sum(got["counts"].values()) == 66
