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


def _writer(folder, recs):
    """A function that writes an image into ``folder`` and appends its record to ``recs``."""
    def add(name, img, split="train"):
        p = folder / name
        cv2.imwrite(str(p), img)
        recs.append(ImageRecord(str(p), img.shape[1], img.shape[0], split=split))
    return add


def test_each_image_check(tmp_path):
    recs: list[ImageRecord] = []
    add = _writer(tmp_path, recs)

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


def near_duplicate_pairs(thumbs, min_correlation, chunk=2048):
    """Every pair (i, j, correlation), i < j, whose thumbnails correlate at least ``min_correlation``."""
    i, j, c = im._candidate_pairs(np.asarray(thumbs, dtype=np.float32), min_correlation, chunk)
    return list(zip(i.tolist(), j.tolist(), c.tolist()))


def test_near_duplicate_pairs_chunked_equals_unchunked():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    x[10] = x[3] + 0.01 * rng.normal(size=64)
    x[40] = x[3]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = near_duplicate_pairs(x, 0.95, chunk=7)
    b = near_duplicate_pairs(x, 0.95, chunk=1000)
    assert [(i, j) for i, j, _ in a] == [(i, j) for i, j, _ in b] == [(3, 10), (3, 40), (10, 40)]


def test_copies_form_one_cluster_reported_once(tmp_path):
    """k copies of an image give k - 1 issues (not k(k-1)/2), each naming the best earlier copy;
    a copy in another split is leakage even when a closer copy shares its split."""
    recs: list[ImageRecord] = []
    add = _writer(tmp_path, recs)

    for k in range(8):
        add(f"t{k}.png", texture(k))
    dup = cv2.imdecode(cv2.imencode(".jpg", texture(3), [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0)
    add("a_copy.jpg", dup)
    add("b_copy.png", texture(3))  # byte-identical thumbnail to t3
    add("c_copy.png", texture(3), split="val")
    add("pair.png", texture(6))
    labels = LabelSet(["a"], recs)
    issues = im.image_issues(labels, im.image_features([r.filepath for r in recs]))
    by_name = {i.filepath.rsplit("/", 1)[1]: i for i in issues}
    assert sorted(by_name) == ["a_copy.jpg", "b_copy.png", "c_copy.png", "pair.png"]
    assert len(issues) == 4  # one issue per image
    for n in ("a_copy.jpg", "b_copy.png"):
        assert by_name[n].type == "near_duplicate" and by_name[n].data["cluster_size"] == 4
        assert "one of 4 near-duplicate images" in by_name[n].reason
    assert by_name["b_copy.png"].data["other"].endswith("t3.png") and by_name["b_copy.png"].score == 1.0
    leak = by_name["c_copy.png"]
    assert leak.type == "leakage" and leak.data["other"].endswith("t3.png") and "'val'" in leak.reason
    # a plain pair is reported as it always was: no cluster size
    assert by_name["pair.png"].data == {"other": recs[6].filepath}
    assert by_name["pair.png"].reason == f"near-duplicate of {recs[6].filepath} (thumbnail correlation 1.000)"


def _reference_partners(x, splits, t):
    """Every pair, the way the checks used to go: per image its best earlier partner."""
    n = len(x)
    c = x.astype(np.float64) @ x.astype(np.float64).T
    cr = np.round(c, 6)  # float32 products differ in the last bits
    parent = list(range(n))

    def root(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for i in range(n):
        for j in range(i + 1, n):
            if c[i, j] >= t:
                parent[root(i)] = root(j)
    roots = [root(a) for a in range(n)]
    out = []
    for j in range(n):
        earlier = [i for i in range(j) if c[i, j] >= t]
        if not earlier:
            continue
        other = [i for i in earlier if None not in (splits[i], splits[j]) and splits[i] != splits[j]]
        best = max(other or earlier, key=lambda i: (cr[i, j], -i))
        out.append((j, best, bool(other), roots.count(roots[j])))
    return out


def _thumbs(rng, n, dim):
    base = rng.normal(size=(max(2, n // 3), dim))
    rows = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3 and rows:
            rows.append(rows[rng.integers(len(rows))].copy())  # exact copy
        elif r < 0.5 and rows:
            rows.append(rows[rng.integers(len(rows))] + rng.normal(0, 0.08, dim))  # near copy
        elif r < 0.55:
            rows.append(np.zeros(dim))  # flat image
        else:
            rows.append(base[rng.integers(len(base))] + rng.normal(0, 1.5, dim))  # distinct
    x = np.array(rows)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0).astype(np.float32)


def test_near_duplicate_partners_match_all_pairs():
    for seed in range(12):
        rng = np.random.default_rng(seed)
        for n, chunk in ((2, 2048), (30, 2048), (120, 2048), (120, 16)):  # chunk 16: the projection bound
            x = _thumbs(rng, n, 96)
            splits = [rng.choice(["train", "val", "test", None]) for _ in range(n)]
            got = im.near_duplicate_partners(x, splits, 0.95, chunk=chunk)
            assert list(zip(got.image.tolist(), got.partner.tolist(), got.leak.tolist(),
                            got.cluster_size.tolist())) == _reference_partners(x, splits, 0.95), (seed, n, chunk)


def test_near_duplicate_links_give_the_clusters_of_all_pairs():
    """The links a split partitions by: every one is a real match (correlation >= the threshold,
    copies exactly), and their connected components are those of all pairs, copies included."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    def components(n, a, b):
        g = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
        return connected_components(g, directed=False)[1]

    for seed in range(8):
        rng = np.random.default_rng(seed)
        for n, chunk in ((30, 2048), (150, 2048), (150, 16)):
            x = _thumbs(rng, n, 96)
            x[rng.integers(n, size=4)] = x[0]  # byte-identical copies of one image
            a, b = im.near_duplicate_links(x, 0.95, chunk=chunk)
            assert len(a) == len(b) and np.all(a != b)
            assert np.all(np.einsum("ij,ij->i", x[a], x[b]) >= 0.95 - 1e-5)
            full = x @ x.T
            live = x.any(axis=1)
            ia, ib = np.nonzero(np.triu(full >= 0.95, 1) & live[:, None] & live[None, :])
            want, got = components(n, ia, ib), components(n, a, b)
            # the same partition (component numbers may differ)
            assert len({(p, q) for p, q in zip(want, got)}) == len(set(want)) == len(set(got)), (seed, n, chunk)


def test_projection_bound_loses_no_pair():
    rng = np.random.default_rng(1)
    x = _thumbs(rng, 600, 1024)
    pruned = near_duplicate_pairs(x, 0.95, chunk=64)  # 600 rows > chunk: bound, then exact check
    exact = near_duplicate_pairs(x, 0.95, chunk=10_000)  # one full product
    assert [(i, j) for i, j, _ in pruned] == [(i, j) for i, j, _ in exact] and len(exact) > 50
    assert np.allclose([c for *_, c in pruned], [c for *_, c in exact], atol=1e-5)


def test_features_equal_plain_numpy(tmp_path):
    """Mean and clipped fraction equal numpy's exactly; sharpness is the Laplacian variance over
    the image variance, as before up to 256 px, after a box average by an integer factor above;
    threads change nothing."""
    imgs = {"small.png": texture(1, 128), "wide.png": cv2.resize(texture(2, 128), (700, 300)),
            "flat.png": np.full((50, 60), 7, np.uint8), "clip.png": np.where(texture(3) > 128, 255, 0).astype(np.uint8)}
    paths = []
    for name, img in imgs.items():
        cv2.imwrite(str(tmp_path / name), img)
        paths.append(str(tmp_path / name))
    one = im.image_features(paths, im.ImageConfig(workers=1))
    many = im.image_features(paths * 3, im.ImageConfig(workers=3))
    for a, b in zip((one.ok, one.mean, one.clipped, one.sharpness, one.thumb),
                    (many.ok, many.mean, many.clipped, many.sharpness, many.thumb)):
        assert np.array_equal(np.concatenate([a] * 3), b, equal_nan=True)
    for k, img in enumerate(imgs.values()):
        assert one.mean[k] == float(img.mean())
        assert one.clipped[k] == float(np.mean((img <= 2) | (img >= 253)))
        f = -(-max(img.shape) // 256)
        if f == 1:  # at most 256 px: the formula it always had, to the bit
            var = float(img.var())
            expected = float(cv2.Laplacian(img, cv2.CV_32F).var()) / var if var > 4 else np.nan
            assert np.array_equal(one.sharpness[k], expected, equal_nan=True)
            continue
        h, w = img.shape[0] // f * f, img.shape[1] // f * f
        # box average (the factor is 3 here: no .5 to round)
        small = img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)).round().astype(np.uint8)
        lap = cv2.Laplacian(small, cv2.CV_64F)
        assert abs(one.sharpness[k] - lap.var() / small.astype(float).var()) < 1e-9 * one.sharpness[k]
