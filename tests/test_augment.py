"""Augmentation: plans, pipelines (YAML round trip, validation, boxes through every transform),
copy-paste, the batched path on the CPU, runs (workers, provenance, resume)."""

from __future__ import annotations

import filecmp
import hashlib
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvcurate.augment import (
    BALANCE,
    CopyPasteConfig,
    Donor,
    apply,
    dump_pipeline,
    gpu,
    leaf_variants,
    load_pipeline,
    make_plan,
    paste_defects,
    pipeline_from_text,
    read_samples,
    remove_run,
    run_augmentation,
    save_pipeline,
    written_indices,
)
from cvcurate.boxes import box_iou as iou_matrix
from cvcurate.augment.pipeline import AUGMENT_CONFIG_DIR, apply_compose
from cvcurate.augment.sample_geometry import Geometry, cpu_geometry, geometry_matrix, reference_boxes
from cvcurate.device import resolve_device
from cvcurate.errors import ConfigError, InputError
from cvcurate.synth import SynthConfig, generate
from cvcurate.types import Annotations, ImageRecord, LabelSet

SHIPPED = sorted(AUGMENT_CONFIG_DIR.glob("*.yaml"))
BG, FG = 40, 220
SIZE = 200
# an interior box, one on the right edge, one near the bottom-left corner, a small one
BOXES = np.array([[20, 30, 60, 90], [150, 10, 200, 60], [5, 150, 45, 195], [100, 100, 112, 108]], np.float64)


def A():
    import albumentations

    return albumentations


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> LabelSet:
    cfg = SynthConfig(defects_per_image=[1, 3])
    return generate(tmp_path_factory.mktemp("synth"), 48, seed=5, config=cfg)


def rect_image(boxes: np.ndarray) -> np.ndarray:
    img = np.full((SIZE, SIZE), BG, np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[y1:y2, x1:x2] = FG
    return img


def pixel_box(img: np.ndarray, level: float = 0.5) -> tuple[np.ndarray | None, int]:
    """Tight box (edges at integers) of the rectangle's pixels in ``img``, and their count.

    A pixel is the rectangle's when it is ``level`` of the way from the background to the
    rectangle's grey (both measured after the transform).
    """
    lo, hi = float(np.median(img)), float(np.percentile(img, 99.9))
    on = img > lo + level * (hi - lo) if hi - lo > 40 else np.zeros(img.shape, bool)
    if not on.any():
        return None, 0
    ys, xs = np.nonzero(on)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float), int(on.sum())


def assert_tight(img: np.ndarray, box: np.ndarray, what: object) -> None:
    """The rectangle's pixels lie inside ``box`` and ``box`` is tight around them, within 1 px.

    Inside: the pixels at least half-way to the rectangle's grey. Tight: no edge of the box lies
    more than 1 px beyond the pixels the rectangle reaches at all (15 %; a rotated rectangle's
    corner only grazes its last pixel, and half-way would miss it).
    """
    core, _ = pixel_box(img, 0.5)
    reach, _ = pixel_box(img, 0.15)
    assert core is not None, f"{what}: the box was kept but its rectangle is gone"
    assert (core[:2] >= box[:2] - 1).all() and (core[2:] <= box[2:] + 1).all(), (what, "outside", core, box)
    assert (box[:2] >= reach[:2] - 1).all() and (box[2:] <= reach[2:] + 1).all(), (what, "loose", reach, box)


# ------------------------------------------------------------------------------------ pipelines
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_pipeline_round_trips_exactly(path, tmp_path):
    pipe = load_pipeline(path)
    # plain albumentations reads our file (header comments and the cvcurate section included)
    theirs = A().load(str(path), data_format="yaml")
    assert A().to_dict(theirs) == A().to_dict(pipe.compose)
    # load -> save -> load: equal A.to_dict, equal settings, header kept, same bytes
    out = save_pipeline(pipe, tmp_path / path.name)
    again = load_pipeline(out)
    assert A().to_dict(again.compose) == A().to_dict(pipe.compose)
    assert again.settings == pipe.settings and again.header == pipe.header
    assert out.read_text() == path.read_text()
    assert again.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # the header says why (and says that A.save drops comments)
    assert "A.save drops comments" in pipe.header and "grey" in pipe.header
    names = [t["__class_fullname__"] for t in A().to_dict(pipe.compose)["transform"]["transforms"]]
    assert not {"HueSaturationValue", "ColorJitter", "RGBShift", "ChannelShuffle"} & set(names)
    bp = A().to_dict(pipe.compose)["transform"]["bbox_params"]
    assert bp["format"] == "pascal_voc" and bp["clip"] and bp["label_fields"]


def test_shipped_names_resolve():
    assert load_pipeline("steel").name == "steel"
    assert load_pipeline(None).name == "steel"
    with pytest.raises(ConfigError, match="shipped pipelines: .*steel"):
        load_pipeline("stele")


STEEL = (AUGMENT_CONFIG_DIR / "steel.yaml").read_text()


@pytest.mark.parametrize("old,new,words", [
    ("__class_fullname__: HorizontalFlip", "__class_fullname__: HorizntalFlip", "unknown transform 'HorizntalFlip' .*did you mean 'HorizontalFlip'"),
    ("keep_ratio: true", "keep_ratioo: true", "unknown argument 'keep_ratioo' of Affine .*did you mean 'keep_ratio'"),
    ("keep_ratio: true", "keep_ratio: maybe", "wrong value for Affine.keep_ratio"),
    ("rotate:\n    - -3.0", "rotate:\n    - big", "wrong value for Affine.rotate .*'big'"),
    ("__class_fullname__: GaussNoise", "__class_fullname__: HueSaturationValue", "changes colour .*grey"),
    ("format: pascal_voc", "format: coco", "must be 'pascal_voc'"),
    ("clip: true", "clip: false", "clip must be true"),
    ("min_visibility: 0.0", "min_vis: 0.0", "unknown key 'min_vis' in transform.bbox_params.*did you mean 'min_visibility'"),
    ("min_visibility: 0.0", "min_visibility: high", "bbox_params.min_visibility must be a number"),
    ("  - __class_fullname__: GaussNoise\n", "  - __class_fullname__: GaussNoise\n    foo: 1\n", "unknown argument 'foo' of GaussNoise"),
    ("mask: contrast", "mask: blob", "copy_paste.mask: 'blob' is not one of"),
    ("  image_format: png", "  imageformat: png", "unknown key 'imageformat'.*did you mean 'image_format'"),
    ("__version__: 2.0.8", "__verison__: 2.0.8", "unknown top-level key '__verison__'"),
    ("transform:\n", "transform: [\n", "malformed YAML"),
])
def test_bad_pipeline_gives_one_clear_line(old, new, words):
    assert old in STEEL
    with pytest.raises(ConfigError, match=words) as err:
        pipeline_from_text(STEEL.replace(old, new, 1), "steel")
    assert "\n" not in str(err.value) and "steel.yaml" in str(err.value)


def test_pipeline_without_bbox_params_is_refused():
    text = dump_pipeline(A().Compose([A().HorizontalFlip(p=0.5)]))
    with pytest.raises(ConfigError, match="no bbox_params"):
        pipeline_from_text(text, "flip")


def test_apply_is_deterministic_for_a_seed():
    """The same seed gives the same image and boxes (whatever ran between), another seed another one:
    a pipeline that ignored its seed would give one output for every seed."""
    pipe = load_pipeline("steel")
    img = rect_image(BOXES)
    seeds = range(7, 15)
    out = {s: apply(pipe, img, BOXES, s) for s in seeds}
    for s in reversed(seeds):  # again, in another order: nothing depends on the earlier calls
        again = apply(pipe, img, BOXES, s)
        assert all(np.array_equal(x, y) for x, y in zip(out[s], again)), s
    # every seed its own image (noise alone differs between seeds), and the random flips and affine
    # put the boxes elsewhere for most of them
    images = {out[s][0].tobytes() for s in seeds}
    assert len(images) == len(seeds)
    boxes = {np.round(out[s][1], 3).tobytes() for s in seeds}
    assert len(boxes) >= len(seeds) // 2, len(boxes)
    assert not np.array_equal(out[7][0], img)  # and it did something


def _variants():
    out = []
    for path in SHIPPED:
        pipe = load_pipeline(path)
        for where, comp in leaf_variants(pipe.compose):
            name = type(comp.transforms[0]).__name__
            out.append(pytest.param(path.stem, where, id=f"{path.stem}-{name}"))
    return out


def _affine_extremes(comp):
    """The Affine of ``comp`` at both ends of each of its ranges (deterministic settings)."""
    d = A().to_dict(comp)["transform"]
    t = d["transforms"][0]
    out = []
    for end in (0, 1):
        e = dict(t)
        e["scale"] = {k: [v[end], v[end]] for k, v in t["scale"].items()}
        e["rotate"] = [t["rotate"][end], t["rotate"][end]]
        if t.get("translate_percent"):
            e["translate_percent"] = {k: [v[end], v[end]] for k, v in t["translate_percent"].items()}
        dd = dict(d, transforms=[e])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(A().from_dict({"transform": dd}))
    return out


@pytest.mark.parametrize("stem,where", _variants())
def test_boxes_stay_tight_through_each_transform(stem, where):
    """A filled rectangle in each box: after the transform (p=1) its pixels lie inside the new box,
    and the box is tight around them within 1 px; a dropped box leaves at most a sliver."""
    pipe = load_pipeline(stem)
    comp = dict(leaf_variants(pipe.compose))[where]
    comps = [(comp, s) for s in range(8)]
    if type(comp.transforms[0]).__name__ == "Affine":
        comps += [(c, 0) for c in _affine_extremes(comp)]
    bp = comp.processors["bboxes"].params
    for c, seed in comps:
        both = apply_compose(c, rect_image(BOXES), BOXES, seed)
        assert len(both[1]) == len(both[2])
        for i, box in enumerate(BOXES):
            img, boxes, _ = apply_compose(c, rect_image(box[None]), box[None], seed)
            pix, n = pixel_box(img)
            if len(boxes) == 0:  # dropped: what is left of the rectangle is a sliver
                assert pix is None or n <= bp.min_area + 2 * SIZE or min(pix[2:] - pix[:2]) <= bp.min_width + 1
                assert i not in both[2]
                continue
            b = boxes[0]
            assert_tight(img, b, (where, seed, i))
            # the same box when the image holds every box at once (variable box counts)
            j = list(both[2]).index(i)
            assert np.allclose(both[1][j], b, atol=1e-3)


def test_steel_affine_never_exposes_the_border():
    pipe = load_pipeline("steel")
    comp = next(c for _, c in leaf_variants(pipe.compose) if type(c.transforms[0]).__name__ == "Affine")
    white = np.full((SIZE, SIZE), 255, np.uint8)
    for c in [comp] + _affine_extremes(comp):
        for seed in range(40):
            assert apply_compose(c, white, np.zeros((0, 4)), seed)[0].min() > 0


# ------------------------------------------------------------------------------------ copy-paste
def _donors(labels, cls):
    c = labels.classes.index(cls)
    return [Donor(record=i, box=b, class_id=c) for i, r in enumerate(labels.records)
            for b, k in enumerate(r.gt.class_id) if k == c]


@pytest.mark.parametrize("mask,blend", [("contrast", "alpha"), ("box", "alpha"), ("contrast", "seamless_mixed"),
                                        ("box", "seamless")])
def test_pasted_boxes_hold_the_defect_and_avoid_existing_boxes(synth, mask, blend):
    cfg = CopyPasteConfig(mask=mask, blend=blend, min_gap=2)
    cls = "inclusion"
    donors = _donors(synth, cls)
    assert donors
    images = {i: cv2.imread(r.filepath, cv2.IMREAD_UNCHANGED) for i, r in enumerate(synth.records)}
    pasted_total = 0
    for dst_i in range(12):
        rec = synth.records[dst_i]
        base = images[dst_i]
        rng = np.random.default_rng(dst_i)
        out, pasted = paste_defects(base, rec.gt.xyxy, donors, 3, rng, cfg,
                                    lambda r: (images[r], synth.records[r].gt.xyxy), exclude_record=dst_i)
        pasted_total += len(pasted)
        changed = out != base
        allowed = np.zeros(base.shape, bool)
        for p in pasted:
            x1, y1, x2, y2 = (int(v) for v in p.box)
            assert p.box == (x1, y1, x2, y2) and p.donor.record != dst_i
            allowed[y1:y2, x1:x2] = True
            inside = changed[y1:y2, x1:x2]
            assert inside.any(), "a pasted box with nothing pasted in it"
            ys, xs = np.nonzero(inside)
            # the box is the pasted region: tight around what changed (Poisson blending may leave
            # the faint rim of the region as it was, so only the alpha blend is held to it)
            assert blend != "alpha" or xs.min() <= 3 and ys.min() <= 3 and (x2 - x1) - xs.max() - 1 <= 3 and (y2 - y1) - ys.max() - 1 <= 3
        assert not (changed & ~allowed).any(), "pixels changed outside the pasted boxes"
        if pasted:
            new = np.array([p.box for p in pasted], float)
            grown = new + np.array([-2, -2, 2, 2])
            if len(rec.gt):
                assert iou_matrix(grown, rec.gt.xyxy).max() == 0, "pasted onto an existing box"
                x = rec.gt.xyxy.astype(int)
                for x1, y1, x2, y2 in x:
                    assert not changed[y1:y2, x1:x2].any()
            if len(new) > 1:
                m = iou_matrix(grown, new)
                np.fill_diagonal(m, 0)
                assert m.max() == 0, "two pasted boxes overlap"
    assert pasted_total >= 6


def test_copy_paste_max_iou_allows_some_overlap(synth):
    cfg = CopyPasteConfig(max_iou=0.3, min_gap=0, tries=200)
    donors = _donors(synth, "inclusion")
    imgs = {i: cv2.imread(r.filepath, 0) for i, r in enumerate(synth.records)}
    full = np.array([[0, 0, 120, 200.0]])  # a box over most of the image
    _, pasted = paste_defects(imgs[0], full, donors, 2, np.random.default_rng(1), cfg,
                                lambda r: (imgs[r], synth.records[r].gt.xyxy), exclude_record=0)
    for p in pasted:
        assert iou_matrix(np.array([p.box]), full).max() <= 0.3


# ------------------------------------------------------------------------------------ plans
def _labels(counts_per_image, classes=("a", "b")):
    recs = []
    for i, counts in enumerate(counts_per_image):
        cid = [c for c, n in enumerate(counts) for _ in range(n)]
        xyxy = [[4 * j, 0, 4 * j + 3, 3] for j in range(len(cid))]
        recs.append(ImageRecord(f"/x/{i}.png", 100, 100, Annotations(np.array(xyxy, float).reshape(-1, 4), cid)))
    return LabelSet(classes=list(classes), records=recs)


def test_plan_prefers_images_with_the_rare_class_and_few_common_ones():
    # a is common (10); b rare: image 1 has b alone, image 2 b with one a, image 0 b with three a
    labels = _labels([(3, 1), (0, 1), (1, 1), (6, 0)])
    plan = make_plan(labels, None)
    assert plan.target == 10 and plan.mode == "largest"
    srcs = [j.source for j in plan.jobs]
    assert srcs[:3] == [1, 1, 2]  # the pure image first, then reuse is penalised
    assert srcs.count(1) > srcs.count(2) > srcs.count(0)
    assert all(j.target == 1 for j in plan.jobs)
    row = {r.name: r for r in plan.rows}
    assert row["b"].projected_instances >= 10 and row["b"].samples == len(plan.jobs)
    assert row["a"].new_instances == sum(labels.records[s].gt.class_id.tolist().count(0) for s in srcs)
    assert any("YOLO rule of thumb" in n for n in row["b"].notes)
    assert plan.table()[1]["class"] == "b"


def test_plan_targets_balance_and_copy_paste():
    labels = _labels([(3, 1), (0, 1), (1, 1), (6, 0)])
    p = make_plan(labels, 40, n_paste=(1, 2), seed=3)
    row = {r.name: r for r in p.rows}
    assert row["a"].projected_instances >= 40 and row["b"].projected_instances >= 40
    assert all(1 <= j.n_paste <= 2 for j in p.jobs)
    assert make_plan(labels, 40, n_paste=(1, 2), seed=3).jobs == p.jobs  # deterministic
    only_b = make_plan(labels, 40, classes=["b"])
    assert {j.target for j in only_b.jobs} == {1}
    bal = make_plan(labels, BALANCE, n_paste=(1, 1))
    after = [r.projected_instances for r in bal.rows]
    assert bal.mode == BALANCE and min(after) >= bal.target >= 10


@pytest.mark.parametrize("labels,kw,err,words", [
    (_labels([(0, 0), (0, 0)]), {}, InputError, "no boxes"),
    (_labels([(3, 1)]), {"classes": ["c"]}, InputError, "unknown class 'c'"),
    (_labels([(3, 1)], ("crazing", "inclusion")), {"classes": ["crazzing"]}, InputError, "did you mean 'crazing'"),
    (_labels([(3, 0)]), {}, InputError, "class 'b' has no instance to start from"),
    (_labels([(3, 1)]), {"target": 2}, InputError, "target 2 is below the current count of class 'a' \\(3"),
    (_labels([(3, 1)]), {"target": 0}, ConfigError, "target must be a whole number"),
    (_labels([(3, 1)]), {"target": "more"}, ConfigError, "'balance'"),
])
def test_plan_bad_input(labels, kw, err, words):
    target = kw.pop("target", None)
    with pytest.raises(err, match=words) as e:
        make_plan(labels, target, **kw)
    assert "\n" not in str(e.value)


def test_target_below_count_is_fine_for_classes_left_out():
    plan = make_plan(_labels([(30, 1), (0, 2)]), 10, classes=["b"])
    assert {r.name: r.projected_instances for r in plan.rows}["b"] >= 10


# ------------------------------------------------------------------------------------ the batched path
def _random_geoms(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = float(rng.uniform(0.8, 1.3))
        out.append(Geometry(hflip=bool(rng.random() < 0.5), vflip=bool(rng.random() < 0.5), sx=s, sy=s,
                            angle=float(rng.uniform(-20, 20)), tx=int(rng.integers(-20, 21)),
                            ty=int(rng.integers(-20, 21))))
    return out


def test_batched_geometry_agrees_with_the_cpu_path_and_torchvision():
    aug = gpu.BatchAugment.from_pipeline(load_pipeline("steel"), "cpu")
    aug.spec.min_area = aug.spec.min_width = aug.spec.min_height = 0.0
    img = rect_image(BOXES)
    geoms = _random_geoms(16) + [Geometry(hflip=True), Geometry(vflip=True), Geometry()]
    out, boxes, kept = aug.apply_geometry(np.stack([img] * len(geoms)), [BOXES] * len(geoms), geoms)
    for k, g in enumerate(geoms):
        ci, cb, ck = cpu_geometry(img, BOXES, g)
        assert np.array_equal(ck, kept[k].numpy())
        assert np.allclose(cb, boxes[k].numpy(), atol=1e-3), (g, cb, boxes[k])
        # torchvision clamps the moved corners' box: equal where nothing was cut by the border,
        # looser where a rotated box was (ours is the box of its visible part)
        ref = reference_boxes(BOXES, g, SIZE, SIZE).numpy()[ck]
        m = geometry_matrix(g, SIZE, SIZE)
        corners = gpu_corners(BOXES[ck], m)
        uncut = (corners[:, :2] >= 0).all(1) & (corners[:, 2:] <= SIZE).all(1)
        assert np.allclose(ref[uncut], cb[uncut], atol=1e-3)
        assert (ref[:, :2] <= cb[:, :2] + 1e-3).all() and (ref[:, 2:] >= cb[:, 2:] - 1e-3).all()
        assert np.abs(ci.astype(int) - out[k].numpy().astype(int)).mean() < 0.5


def gpu_corners(xyxy, m):
    from cvcurate.augment.geometry import box_corners, transform_points

    q = transform_points(m, box_corners(xyxy))
    return np.concatenate([q.min(1), q.max(1)], axis=1)


def test_exact_box_of_a_rotated_box_cut_by_the_border():
    from cvcurate.augment.geometry import (
        affine_matrix,
        box_corners,
        quad_bbox_in_image,
        transform_points,
    )

    m = affine_matrix(1.0, 1.0, 10.0, 0, 0, 200, 200)
    box = np.array([[150.0, 80, 260, 130]])  # far beyond the right edge once rotated
    q = transform_points(m, box_corners(box))
    exact, ok = quad_bbox_in_image(q, 200, 200)
    loose = np.clip(np.concatenate([q.min(1), q.max(1)], 1), 0, 200)
    assert ok.all() and (exact[0, :2] >= loose[0, :2]).all() and (exact[0, 2:] <= loose[0, 2:]).all()
    # the hidden corner no longer stretches the box
    assert exact[0, 3] - exact[0, 1] < loose[0, 3] - loose[0, 1] - 5
    # by brute force: the visible part of the quad, sampled densely
    ys, xs = np.mgrid[0:200:0.25, 0:200:0.25]
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    inv = np.linalg.inv(m)
    src = pts @ inv[:2, :2].T + inv[:2, 2]
    inside = (src[:, 0] >= 150) & (src[:, 0] <= 260) & (src[:, 1] >= 80) & (src[:, 1] <= 130)
    vis = pts[inside]
    assert np.allclose(exact[0], [vis[:, 0].min(), vis[:, 1].min(), vis[:, 0].max(), vis[:, 1].max()], atol=0.3)
    # the torch twin agrees
    import torch

    t, tok = gpu._quad_bbox_in_image(torch.as_tensor(q), 200, 200)
    assert np.allclose(t.numpy(), exact) and tok.numpy().all()
    # wholly outside: empty
    _, ok = quad_bbox_in_image(q + 500, 200, 200)
    assert not ok.any()


def test_batched_variable_box_counts_under_flips():
    """kornia's open bugs: boxes lost or mixed up when images of a batch hold different numbers
    of boxes under flips, and boxes edited in place. Here each sample gets its own boxes."""
    aug = gpu.BatchAugment.from_pipeline(load_pipeline("steel_light"), "cpu")
    sets = [BOXES, np.zeros((0, 4)), BOXES[:1], BOXES[1:3], BOXES]
    keep = [s.copy() for s in sets]
    imgs = np.stack([rect_image(s) for s in sets])
    imgs_before = imgs.copy()
    geoms = [Geometry(hflip=True), Geometry(vflip=True), Geometry(hflip=True, vflip=True),
             Geometry(hflip=True), Geometry()]
    out, boxes, _ = aug.apply_geometry(imgs, sets, geoms)
    for k, (s, g) in enumerate(zip(sets, geoms)):
        one = aug.apply_geometry(imgs[k:k + 1], [s], [g])
        assert len(boxes[k]) == len(s) and np.allclose(one[1][0].numpy(), boxes[k].numpy())
        assert tuple(boxes[k].canvas_size) == (SIZE, SIZE)
        for b in boxes[k].numpy():  # the rectangle moved with its box
            assert_tight(np.where(_in(b), out[k].numpy(), BG).astype(np.uint8), b, (k, b))
    assert all(np.array_equal(a, b) for a, b in zip(sets, keep)) and np.array_equal(imgs, imgs_before)
    # compositions are refused rather than nested (kornia's nested sequentials skip boxes)
    nested = A().Compose([A().OneOf([A().HorizontalFlip(), A().VerticalFlip()])],
                         bbox_params=A().BboxParams(format="pascal_voc", label_fields=["l"], clip=True))
    with pytest.raises(ConfigError, match="OneOf .*no batched version"):
        gpu.spec_from_pipeline(nested)


def _in(b):
    """Pixels of box ``b`` and a 1 px ring around it."""
    m = np.zeros((SIZE, SIZE), bool)
    x1, y1, x2, y2 = b
    m[max(0, int(np.floor(y1)) - 1):int(np.ceil(y2)) + 1, max(0, int(np.floor(x1)) - 1):int(np.ceil(x2)) + 1] = True
    return m


def test_batched_pipeline_keeps_boxes_tight_with_per_sample_parameters():
    aug = gpu.BatchAugment.from_pipeline(load_pipeline("steel"), "cpu")
    n = 24
    seeds = list(range(100, 100 + n))
    for i, box in enumerate(BOXES):
        imgs = np.stack([rect_image(box[None])] * n)
        out, boxes, _ = aug(imgs, [box[None]] * n, seeds)
        geoms = gpu.sample_params(aug.spec, seeds, SIZE, SIZE).geoms
        assert len({(g.hflip, g.vflip, round(g.angle, 6)) for g in geoms}) > 4  # per-sample parameters
        for k in range(n):
            pix, cnt = pixel_box(out[k].numpy())
            if len(boxes[k]) == 0:
                assert pix is None or cnt <= aug.spec.min_area + 2 * SIZE
                continue
            assert_tight(out[k].numpy(), boxes[k].numpy()[0], (i, k))
    # a sample's result does not depend on the batch it is in
    imgs = np.stack([rect_image(BOXES)] * 3)
    full = aug(imgs, [BOXES] * 3, [5, 6, 7])
    alone = aug(imgs[1:2], [BOXES], [6])
    assert np.array_equal(full[0][1].numpy(), alone[0][0].numpy())
    assert np.allclose(full[1][1].numpy(), alone[1][0].numpy())


def test_cuda_without_cuda_is_one_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available on this machine.*--device cpu") as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value)
    dev, note = resolve_device("cuda", fallback=True)
    assert dev == "cpu" and "running on the CPU instead" in note
    assert resolve_device("cpu") == ("cpu", None)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


# ------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def run1(synth, tmp_path_factory):
    pipe = load_pipeline("steel")
    plan = make_plan(synth, None, n_paste=pipe.settings.copy_paste.per_sample, seed=11)
    res = run_augmentation(synth, plan, pipe, tmp_path_factory.mktemp("run1"), workers=1, chunk_size=4)
    return pipe, plan, res


def test_run_reaches_the_target_with_provenance(synth, run1):
    pipe, plan, res = run1
    assert plan.n_samples >= 8
    assert not res.short and res.written == len(res.samples) >= plan.n_samples
    counts = synth.class_counts()
    for s in res.samples:
        for c in s.record.gt.class_id:
            counts[synth.classes[c]] += 1
    assert counts == res.counts_after
    assert all(counts[c] >= plan.target for c in synth.classes)
    src = {r.filepath: r for r in synth.records}
    pasted = 0
    for s in res.samples:
        p = s.provenance
        assert Path(s.record.filepath).is_file() and s.record.filepath.startswith(str(res.out_dir))
        img = cv2.imread(s.record.filepath, cv2.IMREAD_UNCHANGED)
        assert img.shape == (s.record.height, s.record.width)
        assert p["source"] in src and s.record.split == src[p["source"]].split
        assert p["pipeline"] == "steel" and p["pipeline_sha256"] == pipe.sha256
        assert p["seed"] == 11 and p["sample_index"] == s.index and p["target_class"] in synth.classes
        assert s.record.meta["provenance"] is p
        box = s.record.gt.xyxy
        assert ((box[:, 2:] > box[:, :2]).all() and (box >= 0).all() and (box[:, [0, 2]] <= s.record.width).all()
                and (box[:, [1, 3]] <= s.record.height).all())
        for d in p["donors"]:
            assert d["filepath"] in src and d["filepath"] != p["source"] and d["class"] == p["target_class"]
            pasted += 1
    assert pasted > 0
    # the originals were not touched
    assert all(Path(r.filepath).stat().st_size > 0 for r in synth.records)


def test_same_output_for_one_and_two_workers(synth, run1, tmp_path):
    pipe, plan, res1 = run1
    res2 = run_augmentation(synth, plan, pipe, tmp_path / "w2", workers=2, chunk_size=4)
    assert [s.index for s in res2.samples] == [s.index for s in res1.samples]
    for a, b in zip(res1.samples, res2.samples):
        assert filecmp.cmp(a.record.filepath, b.record.filepath, shallow=False)
        assert a.record.gt.equals(b.record.gt) and a.provenance == b.provenance


def test_interrupted_run_resumes_without_duplicates(synth, run1, tmp_path):
    pipe, plan, res1 = run1
    out = tmp_path / "resume"
    seen = []

    def stop(done, total):
        seen.append(done)
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_augmentation(synth, plan, pipe, out, workers=1, chunk_size=4, progress=stop)
    first = written_indices(out)
    assert 8 <= len(first) < len(res1.samples)
    # a half-written file, as a kill in the middle of a write leaves it
    (out / "images" / ".aug_000999.png.tmp").write_bytes(b"xx")
    res = run_augmentation(synth, plan, pipe, out, workers=1, chunk_size=4)
    assert res.resumed == len(first) and res.written == len(res1.samples) - len(first)
    assert [s.index for s in res.samples] == [s.index for s in res1.samples]
    for a, b in zip(res1.samples, res.samples):
        assert filecmp.cmp(a.record.filepath, b.record.filepath, shallow=False)
        assert a.record.gt.equals(b.record.gt)
    assert len(list((out / "images").iterdir())) == len(res1.samples)
    assert [s.index for s in read_samples(out)] == [s.index for s in res.samples]
    # a third run makes nothing
    again = run_augmentation(synth, plan, pipe, out, workers=1)
    assert again.written == 0 and again.resumed == len(res1.samples)
    # another seed in the same folder is refused
    other = make_plan(synth, None, n_paste=pipe.settings.copy_paste.per_sample, seed=12)
    with pytest.raises(InputError, match="another augmentation run"):
        run_augmentation(synth, other, pipe, out)
    # undo: what the run wrote goes, nothing else
    (out / "notes.txt").write_text("mine")
    parts = len(list((out / "labels").glob("part_*.json")))
    assert parts >= 2 and remove_run(out) == 1 + len(res1.samples) + parts
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(InputError, match="holds no augmentation run"):
        remove_run(out)


def test_compute_never_imports_the_store():
    import cvcurate.augment as pkg

    for f in Path(pkg.__file__).parent.glob("*.py"):
        text = f.read_text()
        assert "import fiftyone" not in text and "cvcurate.store" not in text and "from .. import store" not in text


def test_batched_run_on_the_cpu(synth, tmp_path):
    pipe = load_pipeline("steel")
    plan = make_plan(synth, None, classes=["scratches"], n_paste=(1, 1), seed=2)
    a = run_augmentation(synth, plan, pipe, tmp_path / "a", batched=True, batch_size=5)
    b = run_augmentation(synth, plan, pipe, tmp_path / "b", batched=True, batch_size=3)
    assert not a.short and a.samples and all(s.provenance["engine"] == "batched" for s in a.samples)
    for x, y in zip(a.samples, b.samples):  # the same whatever the batch size
        assert filecmp.cmp(x.record.filepath, y.record.filepath, shallow=False)
        assert x.record.gt.equals(y.record.gt)
