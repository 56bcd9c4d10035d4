"""Hostile or huge input (issue: import limits): each ends in one line, never a traceback nor
gigabytes of memory. An image over a cap of ``configs/import.yaml`` (:class:`ImportLimits`) is
the import report's rejected entry, naming the cap and how to raise it, and the rest is imported;
a whole-input problem (JSON nested too deep, YAML aliases, a bad dataset name) is one line and exit
code 2.

The caps are lowered through ``--config`` to keep the files small; one large case each where it
stays fast (a real 30000x30000 PNG, 100k COCO boxes on one image, a 1e6-line YOLO label file, JSON
nested 200,000 deep, nine levels of YAML aliases).
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cvcurate import formats, store
from cvcurate.cli import app
from cvcurate.config import CONFIG_DIR, ImportLimits, load_config, load_import_limits
from cvcurate.errors import ConfigError, InputError
from cvcurate.formats import ImportOptions
from cvcurate.formats.base import json_depth_over
from tests import layouts as L
from tests import makedata as md

runner = CliRunner()
RAISE = "raise it with cvcurate import --config FILE (see configs/import.yaml)"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def limits_file(tmp_path: Path, **caps) -> Path:
    p = tmp_path / "limits.yaml"
    p.write_text(yaml.safe_dump(caps))
    return p


def rejected(report) -> dict[str, str]:
    return {Path(e.path).name: " | ".join(e.messages) for e in report.entries if e.status == "rejected"}


def import_ok(tmp_path: Path, src: Path, name: str, *extra):
    """Import through the CLI (exit 0, no traceback); the JSON report's rejected entries."""
    rep = tmp_path / "report.json"
    r = run("import", src, "--name", name, "--report", rep, *extra)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    doc = json.loads(rep.read_text())
    return r.output, {Path(e["path"]).name: " | ".join(e["messages"]) for e in doc["files"]
                      if e["status"] == "rejected"}


def png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A real, valid 1-bit PNG of ``width`` x ``height`` pixels in a few hundred KB (all black)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def voc_folder(root: Path, stems: list[str], ext: str = ".jpg") -> Path:
    for k, stem in enumerate(stems):
        md.make_image(root / "images" / f"{stem}{ext}", seed=k)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{stem}.xml").write_text(
            L.voc_xml(f"{stem}{ext}", 64, 48, [("crack", (2, 2, 20, 20))]))
    return root


# ---------------------------------------------------------------------------------------------
# the config: configs/import.yaml is the defaults; bad values are one line
# ---------------------------------------------------------------------------------------------
def test_shipped_import_yaml_equals_the_defaults(tmp_path):
    assert load_config(ImportLimits, CONFIG_DIR / "import.yaml") == ImportLimits()
    assert load_import_limits() == ImportLimits()
    with pytest.raises(ConfigError, match="max_boxes_per_image must be at least 1"):
        load_import_limits(limits_file(tmp_path, max_boxes_per_image=0))
    with pytest.raises(ConfigError, match="did you mean 'max_image_pixels'"):
        load_import_limits(limits_file(tmp_path, max_image_pixel=5))
    root = voc_folder(tmp_path / "v", ["a"])
    cfg = limits_file(tmp_path, max_json_depth=10**6)
    line = one_error_line(run("import", root, "--name", "t_cfg", "--config", cfg))
    assert "max_json_depth must be at most 500" in line
    assert not store.exists("t_cfg")


# ---------------------------------------------------------------------------------------------
# boxes per image: COCO
# ---------------------------------------------------------------------------------------------
def _coco(root: Path, boxes_per_image: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, n in enumerate(boxes_per_image, start=1):
        md.make_image(root / "images" / f"i{i}.jpg", seed=i)
        images.append({"id": i, "file_name": f"i{i}.jpg", "width": 64, "height": 48})
        anns += [{"id": len(anns) + k + 1, "image_id": i, "category_id": 1, "bbox": [1, 2, 10, 12], "iscrowd": 0}
                 for k in range(n)]
    doc = {"images": images, "categories": [{"id": 1, "name": "crack"}], "annotations": anns}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root / "annotations.json"


def test_coco_image_over_the_box_cap_is_rejected_the_rest_imported(tmp_path, dataset_name):
    src = _coco(tmp_path / "c", [3, 30, 1, 12])
    out, rej = import_ok(tmp_path, src, dataset_name, "--config", limits_file(tmp_path, max_boxes_per_image=10))
    assert set(rej) == {"i2.jpg", "i4.jpg"}
    assert ("too many boxes: 30 for this image, more than max_boxes_per_image 10: " + RAISE) in rej["i2.jpg"]
    assert "too many boxes: 12 for this image" in rej["i4.jpg"]
    assert "max_boxes_per_image" in out
    labels = store.read(dataset_name)
    assert sorted(Path(r.filepath).name for r in labels.records) == ["i1.jpg", "i3.jpg"]
    assert labels.num_boxes == 4


def test_coco_100k_boxes_on_one_image_are_dropped_while_reading(tmp_path):
    from cvcurate.formats import coco

    src = _coco(tmp_path / "c", [2, 100_000, 1])
    doc, totals = coco.read_document(src, ImportLimits())
    assert totals == {1: 2, 2: 100_000, 3: 1}
    kept = [a for a in doc["annotations"] if a is not coco.DROPPED]
    assert len(kept) == 2 + 10_000 + 1  # never more than the cap in memory
    t = time.perf_counter()
    labels, report = formats.load(src)
    assert time.perf_counter() - t < 10
    rej = rejected(report)
    assert list(rej) == ["i2.jpg"] and "too many boxes: 100,000 for this image" in rej["i2.jpg"]
    assert sorted(Path(r.filepath).name for r in labels.records) == ["i1.jpg", "i3.jpg"]
    assert labels.num_boxes == 3


@pytest.mark.parametrize("fmt", ["voc", "severstal"])
def test_other_formats_reject_an_image_over_the_box_cap(tmp_path, fmt):
    if fmt == "voc":
        root = voc_folder(tmp_path, ["a", "b"])
        (root / "annotations" / "b.xml").write_text(
            L.voc_xml("b.jpg", 64, 48, [("crack", (2, 2, 20, 20))] * 4))
        over, n = "b.jpg", 4
    else:
        root = tmp_path
        md.write_severstal(root)  # s0 has 3 boxes, s1 2, s2 none
        over, n = "s0.jpg", 3
    labels, report = formats.load(root, ImportOptions(format=fmt, limits=ImportLimits(max_boxes_per_image=2)))
    rej = rejected(report)
    assert list(rej) == [over], rej
    assert f"too many boxes: {n}" in rej[over] and "more than max_boxes_per_image 2" in rej[over]
    assert len(labels) == (1 if fmt == "voc" else 2)


# ---------------------------------------------------------------------------------------------
# YOLO label files: lines, bytes, boxes
# ---------------------------------------------------------------------------------------------
def _yolo(root: Path, lines: dict[str, str]) -> Path:
    for k, stem in enumerate(lines):
        md.make_image(root / "images" / f"{stem}.jpg", seed=k)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in lines.items():
        (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["crack"]}))
    return root


def test_yolo_label_file_over_the_caps_is_rejected_the_rest_imported(tmp_path, dataset_name):
    line = "0 0.5 0.5 0.1 0.1\n"
    root = _yolo(tmp_path / "y", {"ok": line * 2, "long": line * 6, "big": "0 " + "0.5 " * 40 + "\n",
                                  "many": line * 4 + "\n"})
    cfg = limits_file(tmp_path, max_label_file_lines=5, max_label_file_bytes=150, max_boxes_per_image=3)
    out, rej = import_ok(tmp_path, root, dataset_name, "--config", cfg)
    assert set(rej) == {"long.jpg", "big.jpg", "many.jpg"}, rej
    assert "label file too long: long.txt has 6 lines, more than max_label_file_lines 5: " + RAISE in rej["long.jpg"]
    assert "label file too large: big.txt has 163 bytes, more than max_label_file_bytes 150" in rej["big.jpg"]
    assert "too many boxes: 4 for this image, more than max_boxes_per_image 3" in rej["many.jpg"]
    labels = store.read(dataset_name)
    assert [Path(r.filepath).name for r in labels.records] == ["ok.jpg"] and labels.num_boxes == 2


def test_yolo_million_line_label_file(tmp_path):
    line = "0 0.5 0.5 0.1 0.1\n"
    root = _yolo(tmp_path, {"a": line, "huge": line * 1_000_000, "long": line * 200_000})
    t = time.perf_counter()
    labels, report = formats.load(root)
    assert time.perf_counter() - t < 10
    rej = rejected(report)
    assert "label file too large: huge.txt has 18,000,000 bytes, more than max_label_file_bytes 10,000,000" \
        in rej["huge.jpg"]
    assert "label file too long: long.txt has 200,000 lines, more than max_label_file_lines 100,000" \
        in rej["long.jpg"]
    assert [Path(r.filepath).name for r in labels.records] == ["a.jpg"]


# ---------------------------------------------------------------------------------------------
# JSON nested too deep: the whole file is refused, in one line
# ---------------------------------------------------------------------------------------------
def test_json_nested_200000_deep_is_one_line(tmp_path):
    root = tmp_path / "c"
    md.make_image(root / "images" / "i0.jpg")
    deep = "[" * 200_000 + "]" * 200_000
    (root / "annotations.json").write_text(
        '{"images": [{"id": 1, "file_name": "i0.jpg"}], "categories": [], "annotations": [], "info": ' + deep + "}")
    line = one_error_line(run("import", root, "--name", "t_deep", "--report", tmp_path / "r.json"))
    assert "annotations.json: JSON nested deeper than 100 levels (max_json_depth); not read: " + RAISE in line
    assert not store.exists("t_deep")
    # a class map too
    good = _coco(tmp_path / "g", [1])
    (tmp_path / "map.json").write_text(deep)
    line = one_error_line(run("import", good, "--name", "t_deep", "--class-map", tmp_path / "map.json"))
    assert "JSON nested deeper than 100 levels" in line and "map.json" in line


def test_json_depth_is_configurable_and_ignores_brackets_in_strings(tmp_path, dataset_name):
    src = _coco(tmp_path / "c", [1, 1])
    doc = json.loads(src.read_text())
    doc["info"] = {"note": "[" * 500 + '{ \\" [[[', "a": [[["x"]]]}  # in strings: not nesting
    src.write_text(json.dumps(doc))
    _, rej = import_ok(tmp_path, src, dataset_name)
    assert not rej
    line = one_error_line(run("import", src, "--name", dataset_name + "_2", "--config",
                              limits_file(tmp_path, max_json_depth=3)))
    assert "JSON nested deeper than 3 levels" in line
    assert not json_depth_over(b'{"a": "[[[[", "b": [1, {"c": "\\\\"}]}', 3)
    assert json_depth_over(b'{"a": "\\"", "b": [[[1]]]}', 3)


# ---------------------------------------------------------------------------------------------
# decompression bombs: the one image is rejected, the rest imported; gate FOLDER too
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def png_bomb_folder(tmp_path_factory) -> Path:
    root = voc_folder(tmp_path_factory.mktemp("bomb"), ["a", "b", "c"], ext=".png")
    png_header_bomb(root / "images" / "bomb.png", 30_000, 30_000)
    (root / "annotations" / "bomb.xml").write_text(L.voc_xml("bomb.png", 64, 48, [("crack", (2, 2, 20, 20))]))
    return root


def test_30000x30000_png_is_rejected_the_rest_imported(tmp_path, dataset_name, png_bomb_folder):
    from PIL import Image

    assert (png_bomb_folder / "images" / "bomb.png").stat().st_size < 1_000_000
    before = Image.MAX_IMAGE_PIXELS
    out, rej = import_ok(tmp_path, png_bomb_folder, dataset_name)
    assert list(rej) == ["bomb.png"]
    assert ("image too large: 30000x30000 = 900,000,000 pixels, more than max_image_pixels 100,000,000: "
            + RAISE) in rej["bomb.png"]
    assert sorted(Path(r.filepath).name for r in store.read(dataset_name).records) == ["a.png", "b.png", "c.png"]
    assert Image.MAX_IMAGE_PIXELS == before  # PIL's own guard is back for everyone else
    # the cap is configurable: 64x48 images are over 1000 pixels
    labels, report = formats.load(png_bomb_folder, ImportOptions(limits=ImportLimits(max_image_pixels=1000)))
    assert len(labels) == 0 and len(rejected(report)) == 4


def test_gate_on_a_folder_with_a_png_bomb_counts_it_unreadable(png_bomb_folder, tmp_path):
    r = run("gate", png_bomb_folder, "--json", tmp_path / "gate.json")
    assert r.exit_code == 1, r.output  # the gate fails (an unreadable image), it does not crash
    assert "Traceback" not in r.output
    checks = {c["name"]: c for c in json.loads((tmp_path / "gate.json").read_text())["checks"]}
    assert checks["unreadable_images"]["value"] == 1


# ---------------------------------------------------------------------------------------------
# YAML: aliases (billion laughs), deep nesting and Python tags are refused in one line
# ---------------------------------------------------------------------------------------------
def _billion_laughs(levels: int = 9, key: str = "names") -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}: *a{levels - 1}\n"


def test_yaml_alias_bomb_is_one_line_everywhere(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.1 0.1\n"})
    (root / "data.yaml").write_text(_billion_laughs())
    t = time.perf_counter()
    line = one_error_line(run("import", root, "--name", "t_yaml"))
    assert time.perf_counter() - t < 5
    assert "data.yaml: uses an alias (*a0, line 2), which cvcurate does not accept" in line
    good = voc_folder(tmp_path / "v", ["a"])
    (tmp_path / "bomb.yaml").write_text(_billion_laughs(key="max_boxes_per_image"))
    line = one_error_line(run("import", good, "--name", "t_yaml", "--config", tmp_path / "bomb.yaml"))
    assert "bomb.yaml: uses an alias" in line
    (tmp_path / "map.yaml").write_text("a: &x crack\nb: *x\n")
    line = one_error_line(run("import", good, "--name", "t_yaml", "--class-map", tmp_path / "map.yaml"))
    assert "class map" in line and "uses an alias (*x, line 2)" in line
    # the config loader of every kind (gate.yaml here)
    line = one_error_line(run("gate", good, "--config", tmp_path / "bomb.yaml"))
    assert "uses an alias" in line
    assert not store.exists("t_yaml")


def test_yaml_deep_nesting_and_python_tags_are_refused(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.1 0.1\n"})
    (root / "data.yaml").write_text("names: " + "[" * 5000 + "crack" + "]" * 5000 + "\n")
    line = one_error_line(run("import", root, "--name", "t_yaml"))
    assert "data.yaml: nested deeper than 100 levels" in line
    marker = tmp_path / "pwned"
    (root / "data.yaml").write_text(f"names: !!python/object/apply:os.system ['touch {marker}']\n")
    line = one_error_line(run("import", root, "--name", "t_yaml"))
    assert "malformed YAML: could not determine a constructor for the tag" in line
    assert not marker.exists()
    assert not store.exists("t_yaml")


# ---------------------------------------------------------------------------------------------
# XML: entity bombs, XXE and external DTDs are never expanded (safe already: kept so)
# ---------------------------------------------------------------------------------------------
def test_xml_bombs_and_external_entities_reject_only_their_image(tmp_path):
    root = voc_folder(tmp_path / "v", ["a", "bomb", "xxe", "dtd"])
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    ents = "".join(f'<!ENTITY l{k} "' + f"&l{k - 1};" * 10 + '">' for k in range(1, 10))
    (root / "annotations" / "bomb.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY l0 "lol">{ents}]>'
        "<annotation><filename>bomb.jpg</filename><object><name>&l9;</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    (root / "annotations" / "xxe.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        "<annotation><filename>xxe.jpg</filename><object><name>&xxe;</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY crack "TOP-SECRET">')
    (root / "annotations" / "dtd.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation SYSTEM "file://{dtd}">'
        "<annotation><filename>dtd.jpg</filename><object><name>crack</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    t = time.perf_counter()
    labels, report = formats.load(root)
    assert time.perf_counter() - t < 5
    rej = rejected(report)
    assert set(rej) == {"bomb.jpg", "xxe.jpg"}, rej
    assert "malformed XML" in rej["bomb.jpg"] and "malformed XML: undefined entity" in rej["xxe.jpg"]
    assert sorted(Path(r.filepath).name for r in labels.records) == ["a.jpg", "dtd.jpg"]
    assert labels.classes == ["crack"]  # the external DTD was not read
    assert "TOP-SECRET" not in json.dumps(report.to_dict())


# ---------------------------------------------------------------------------------------------
# dataset names: checked before anything is read or stored
# ---------------------------------------------------------------------------------------------
BAD_NAMES = {".": "it is '.'", "..": "it is '..'", "*": "glob character", "": "it is empty",
             "x" * 300: "it has 300 characters", "a/b": "path separator", "a\\b": "path separator",
             "a?b": "glob character", "a\x07b": "control character"}
RULE = ("a dataset name is 1 to 100 characters, not '.' or '..', without path separators (/ \\), control "
        "characters or the glob characters * and ?")


@pytest.mark.parametrize("name", list(BAD_NAMES), ids=lambda n: repr(n)[:12])
def test_bad_dataset_names_are_refused_before_anything_is_stored(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    root = voc_folder(tmp_path / "v", ["a"])
    before = store.list_datasets()
    line = one_error_line(run("import", root, "--name", name))
    assert "is not a valid dataset name" in line and BAD_NAMES[name] in line and RULE in line
    assert store.list_datasets() == before
    assert not list(tmp_path.glob("*.json"))  # no report either
    with pytest.raises(InputError, match="not a valid dataset name"):
        from cvcurate.stages.imports import import_dataset

        import_dataset(root, name)


def test_corrupt_out_name_is_checked(tmp_path, dataset_name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store.write(md.make_labels(tmp_path / "i", n=2), dataset_name)
    before = store.list_datasets()
    for bad in ("..", "x" * 101, "a/b"):
        line = one_error_line(run("corrupt", dataset_name, "--out", bad))
        assert line.startswith("error: --out '") and "is not a valid dataset name" in line and RULE in line, line
    assert store.list_datasets() == before
    ok = "x" * 100  # the longest name allowed
    try:
        r = run("corrupt", dataset_name, "--out", ok, "--truth", tmp_path / "t.json")
        assert r.exit_code == 0, r.output
    finally:
        if store.exists(ok):
            store.delete(ok)
