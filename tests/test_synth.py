"""The synthetic NEU-DET-like generator: exact boxes, determinism, class mix, round trips, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cvcurate import formats
from cvcurate.cli import app
from cvcurate.config import from_dict
from cvcurate.errors import ConfigError, InputError
from cvcurate.formats import ImportOptions
from cvcurate.synth import (
    CLASSES, SynthConfig, TextureConfig, generate, image_rng, load_synth_config, mask_box, render_image,
)


def only(cls: str, **kw) -> SynthConfig:
    return SynthConfig(class_weights={c: float(c == cls) for c in CLASSES}, **kw)


def by_name(labels):
    return {Path(r.filepath).name: r for r in labels.records}


def assert_tight(defect, shape):
    m = defect.mask
    assert m.shape == shape and m.any()
    x1, y1, x2, y2 = (int(v) for v in defect.xyxy)
    assert defect.xyxy == (x1, y1, x2, y2)  # integer pixel edges
    inside = np.zeros_like(m)
    inside[y1:y2, x1:x2] = True
    assert not (m & ~inside).any(), "mask pixels outside the box"
    # every edge of the box touches the mask
    assert m[y1, x1:x2].any() and m[y2 - 1, x1:x2].any()
    assert m[y1:y2, x1].any() and m[y1:y2, x2 - 1].any()


# ------------------------------------------------------------------------------------ config
def test_shipped_config_equals_defaults():
    assert load_synth_config() == SynthConfig()
    assert load_synth_config(Path(__file__).resolve().parents[1] / "configs" / "synth.yaml") == SynthConfig()


@pytest.mark.parametrize("data,words", [
    ({"class_weight": {}}, "did you mean 'class_weights'"),
    ({"class_weights": {"crazing": -1.0}}, ">= 0"),
    ({"class_weights": {"cracks": 1.0}}, "unknown class 'cracks'"),
    ({"class_weights": {c: 0.0 for c in CLASSES}}, "positive weight"),
    ({"defects_per_image": [3, 1]}, "defects_per_image"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"texture": {"direction": "diagonal"}}, "direction"),
    ({"texture": {"noise": -2}}, "noise"),
])
def test_bad_config_is_rejected(data, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(SynthConfig, data, "synth.yaml")


def test_generate_checks_its_inputs(tmp_path):
    with pytest.raises(ConfigError):
        generate(tmp_path / "a", 2, 0, SynthConfig(val_fraction=-0.1))
    with pytest.raises(InputError):
        generate(tmp_path / "a", 0, 0)
    with pytest.raises(InputError):
        generate(tmp_path / "a", 2, -1)


# ------------------------------------------------------------------------------ exact boxes
@pytest.mark.parametrize("direction", ["vertical", "horizontal"])
@pytest.mark.parametrize("cls", CLASSES)
def test_boxes_are_tight_around_the_drawn_defects(cls, direction):
    cfg = only(cls, texture=TextureConfig(direction=direction))
    for i in range(8):
        r = render_image(image_rng(11, i), cfg)
        assert r.image.dtype == np.uint8 and r.image.shape == (200, 200)
        assert 1 <= len(r.defects) <= 4
        union = np.zeros((200, 200), bool)
        for d in r.defects:
            assert CLASSES[d.class_id] == cls
            assert_tight(d, r.image.shape)
            assert d.xyxy == mask_box(d.mask)
            union |= d.mask
        # the defects changed nothing outside their masks ...
        changed = r.image != r.background
        assert not (changed & ~union).any()
        # ... and (saturation and overlaps aside) every pixel of a lone defect's mask
        if len(r.defects) == 1:
            assert changed[r.defects[0].mask].mean() > 0.95


def test_shapes_follow_the_rolling_direction():
    def median_aspect(direction: str, cls: str) -> float:
        cfg = only(cls, texture=TextureConfig(direction=direction))
        hw = [(d.xyxy[3] - d.xyxy[1]) / (d.xyxy[2] - d.xyxy[0])
              for i in range(20) for d in render_image(image_rng(5, i), cfg).defects]
        return float(np.median(hw))

    for cls in ("inclusion", "scratches"):
        assert median_aspect("vertical", cls) > 1.5
        assert median_aspect("horizontal", cls) < 1 / 1.5


def test_other_image_sizes():
    r = render_image(image_rng(0, 0), SynthConfig(image_size=96))
    assert r.image.shape == (96, 96)
    for d in r.defects:
        assert_tight(d, (96, 96))


# -------------------------------------------------------------------------------- class mix
def test_class_frequencies_follow_the_weights():
    cfg = SynthConfig()
    ids = np.concatenate([[d.class_id for d in render_image(image_rng(2, i), cfg).defects] for i in range(300)])
    share = np.bincount(ids, minlength=len(CLASSES)) / len(ids)
    w = np.array(cfg.weights())
    np.testing.assert_allclose(share, w / w.sum(), atol=0.06)
    assert (share > 0).all()  # every class appears
    rare = [CLASSES.index("pitted_surface"), CLASSES.index("scratches")]
    assert share[rare].max() < share[np.setdiff1d(np.arange(6), rare)].min()


def test_zero_weight_and_mixing():
    cfg = SynthConfig(class_weights={"crazing": 1.0, "scratches": 1.0}, mixed_class_prob=0.0,
                      defects_per_image=[2, 3])
    seen = set()
    for i in range(40):
        classes = {d.class_id for d in render_image(image_rng(4, i), cfg).defects}
        assert len(classes) == 1  # no mixing
        seen |= classes
    assert seen == {CLASSES.index("crazing"), CLASSES.index("scratches")}
    cfg = dataclasses.replace(cfg, mixed_class_prob=1.0, defects_per_image=[4, 4])
    mixed = sum(len({d.class_id for d in render_image(image_rng(4, i), cfg).defects}) > 1 for i in range(20))
    assert mixed >= 10


# -------------------------------------------------------------------- written dataset, determinism
def read_all(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def boxes(labels):
    return [(Path(r.filepath).name, r.split, r.gt.xyxy.tolist(), r.gt.class_id.tolist()) for r in labels.records]


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    a = generate(tmp_path / "a", 70, 7)
    b = generate(tmp_path / "b", 70, 7, workers=2)
    assert boxes(a) == boxes(b)
    fa, fb = read_all(tmp_path / "a" / "images"), read_all(tmp_path / "b" / "images")
    assert fa == fb and len(fa) == 70
    assert read_all(tmp_path / "a" / "annotations") == read_all(tmp_path / "b" / "annotations")
    # a smaller dataset is the start of a larger one
    c = generate(tmp_path / "c", 5, 7)
    assert boxes(c) == boxes(a)[:5]
    # another seed gives other images and boxes
    d = generate(tmp_path / "d", 5, 8)
    assert boxes(d) != boxes(c)
    assert all(read_all(tmp_path / "d" / "images")[k] != v for k, v in read_all(tmp_path / "c" / "images").items())


def test_written_dataset_imports_as_voc_and_coco(tmp_path):
    out = tmp_path / "synth"
    labels = generate(out, 40, 3, SynthConfig(val_fraction=0.5))
    assert labels.classes == list(CLASSES)
    assert {r.split for r in labels.records} == {"train", "val"}
    for r in labels.records:
        assert Path(r.filepath).is_absolute() and Path(r.filepath).is_file()
        assert (r.width, r.height) == (200, 200)
    assert formats.detect_format(out) == "voc"
    for path, fmt in ((out, None), (out / "coco" / "labels.json", "coco")):
        got, report = formats.load(path, ImportOptions(format=fmt))
        s = report.summary()
        assert s["rejected"] == 0 and s["imported_with_warnings"] == 0 and s["images_read"] == 40, fmt
        assert s["boxes_imported"] == labels.num_boxes
        exp, out_recs = by_name(labels), by_name(got)
        assert set(exp) == set(out_recs)
        for name, rec in exp.items():
            g = out_recs[name]
            assert g.filepath == rec.filepath
            assert [got.classes[c] for c in g.gt.class_id] == [labels.classes[c] for c in rec.gt.class_id]
            np.testing.assert_array_equal(g.gt.xyxy, rec.gt.xyxy)


def test_overwrite_only_replaces_a_synthetic_dataset(tmp_path):
    out = tmp_path / "synth"
    generate(out, 3, 0)
    with pytest.raises(InputError, match="not empty"):
        generate(out, 3, 1)
    generate(out, 2, 1, overwrite=True)
    assert len(list((out / "images").iterdir())) == 2
    (out / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="refusing"):
        generate(out, 2, 1, overwrite=True)
    assert (out / "mine.txt").is_file()


def test_jpeg_output(tmp_path):
    labels = generate(tmp_path / "j", 3, 0, SynthConfig(image_format="jpg"))
    assert all(r.filepath.endswith(".jpg") for r in labels.records)
    got, report = formats.load(tmp_path / "j")
    assert report.summary()["rejected"] == 0 and got.num_boxes == labels.num_boxes


# ------------------------------------------------------------------------------------------ CLI
def test_cli_synth(tmp_path):
    out = tmp_path / "s"
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(out), "--images", "6", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert len(list((out / "images").glob("*.png"))) == 6
    assert len(list((out / "annotations").glob("*.xml"))) == 6
    assert (out / "coco" / "labels.json").is_file()
    assert "crazing" in res.output and "cvcurate import" in res.output

    for args, words in (
        (["synth", str(out), "--images", "6"], "not empty"),
        (["synth", str(tmp_path / "t"), "--images", "0"], "--images"),
        (["synth", str(tmp_path / "t"), "--config", str(tmp_path / "nope.yaml")], "does not exist"),
        (["synth", str(tmp_path / "t"), "--config", str(tmp_path)], "is not a regular file"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("class_weights: {crazing: -1}\n")
    res = runner.invoke(app, ["synth", str(tmp_path / "t"), "--config", str(bad)])
    assert res.exit_code == 2 and "class_weights" in res.output
