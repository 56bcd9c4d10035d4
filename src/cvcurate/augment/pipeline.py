"""Augmentation pipelines: albumentations 2.0.x ``Compose`` objects stored as YAML.

A pipeline file (``configs/augment/*.yaml``) is what ``A.save(compose, f, data_format="yaml")``
writes, with two additions that plain ``A.load`` ignores, so albumentations itself still reads the
file:

* a header of ``#`` comment lines saying why each transform is there (``A.save`` drops comments,
  so :func:`save_pipeline` writes the header itself and :func:`load_pipeline` keeps it);
* a top-level ``cvcurate:`` section: output format and defect copy-paste settings
  (:class:`AugmentSettings`), validated like every other cvcurate config.

Boxes go in and come out as cvcurate boxes (absolute ``xyxy`` pixels, edges at integers), which is
albumentations' ``pascal_voc`` format; a pipeline must declare ``bbox_params`` with that format.

:func:`load_pipeline` validates every transform before albumentations sees it and turns what
albumentations would raise (a ``KeyError`` for an unknown transform, a warning for an unknown
argument, a pydantic error for a wrong type) into one :class:`~cvcurate.errors.ConfigError` line
that names the file, the transform and the argument.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from ..config import CONFIG_DIR, from_dict, read_text
from ..errors import ConfigError

AUGMENT_CONFIG_DIR = CONFIG_DIR / "augment"

# albumentations asks PyPI for a newer version when it is imported (a 2 s timeout offline, and
# again in every worker process): cvcurate never wants that. Set before albumentations is imported.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# transforms that shift hue or mix colour channels: meaningless on grey steel images (and most
# fail on one channel); ColorJitter is refused only when its hue range is not zero
COLOUR_TRANSFORMS = {
    "HueSaturationValue", "RGBShift", "ChannelShuffle", "ChannelDropout", "FancyPCA",
    "PlanckianJitter", "ToSepia", "ToGray", "ChromaticAberration", "ColorJitter",
}
# keys of a pipeline file's top level
TOP_KEYS = ("__version__", "transform", "cvcurate")
# compositions whose children are validated recursively
COMPOSITIONS = {"Compose", "OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform",
                "RandomOrder"}


# ---------------------------------------------------------------------------------------------
# settings in the file's ``cvcurate:`` section


@dataclass
class CopyPasteConfig:
    """Defect copy-paste (Simple Copy-Paste, Ghiasi et al. 2021), targeted at the rare class.

    Each generated sample may receive ``per_sample`` = [min, max] defects of its target class cut
    out of other images and blended into defect-free regions of the source image, before the
    albumentations pipeline runs (so pasted defects are flipped, warped and re-lit like the rest).
    """

    enabled: bool = True
    per_sample: list[int] = field(default_factory=lambda: [1, 2])  # [min, max] pasted defects
    mask: Literal["contrast", "box"] = "contrast"  # soft mask from local contrast, or the whole box
    blend: Literal["alpha", "seamless", "seamless_mixed"] = "alpha"  # feathered alpha or cv2.seamlessClone
    max_iou: float = 0.0  # largest IoU allowed between a pasted box (grown by min_gap) and any box
    min_gap: int = 2  # pixels kept free around a pasted box (touching boxes look like fragments)
    contrast_k: float = 2.5  # a pixel is defect when it departs from the local steel by k robust sd
    feather: float = 1.0  # sigma (px) of the mask's soft edge
    flip: bool = True  # randomly flip pasted defects (steel defects have no up/down or left/right)
    tries: int = 40  # random placements tried per defect when max_iou > 0 (0: free spots found exactly)

    def check(self) -> None:
        lo_hi = self.per_sample
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 20:
            raise ValueError(f"per_sample must be [min, max] with 0 <= min <= max <= 20, got {lo_hi}")
        if not 0 <= self.max_iou < 1:
            raise ValueError(f"max_iou must be within 0..1 (exclusive of 1), got {self.max_iou}")
        if self.min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")
        if self.contrast_k <= 0:
            raise ValueError(f"contrast_k must be > 0, got {self.contrast_k}")
        if not 0 <= self.feather <= 10:
            raise ValueError(f"feather must be within 0..10, got {self.feather}")
        if self.tries < 1:
            raise ValueError(f"tries must be >= 1, got {self.tries}")


@dataclass
class AugmentSettings:
    """What a pipeline file says besides the transforms (its ``cvcurate:`` section)."""

    image_format: Literal["png", "jpg"] = "png"  # png: lossless, the boxes stay exact
    jpeg_quality: int = 95
    copy_paste: CopyPasteConfig = field(default_factory=lambda: CopyPasteConfig(enabled=False))

    def check(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, got {self.jpeg_quality}")
        self.copy_paste.check()


# ---------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class Pipeline:
    """A loaded pipeline: the albumentations ``Compose``, its settings and where it came from.

    ``sha256`` is the hash of the file's bytes (what provenance records); ``label_fields`` are
    the ``bbox_params`` label fields (cvcurate passes box indices through all of them).
    """

    name: str
    compose: Any  # albumentations.Compose
    settings: AugmentSettings
    header: str = ""
    text: str = ""
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def label_fields(self) -> list[str]:
        return list(self.compose.processors["bboxes"].params.label_fields)

    def to_dict(self) -> dict[str, Any]:
        """``A.to_dict`` of the transforms plus the settings (what a round trip must keep)."""
        A = _A()
        return {"albumentations": A.to_dict(self.compose), "cvcurate": dataclasses.asdict(self.settings)}


def _A():
    import albumentations as A

    return A


_REGISTRY: dict[str, type] | None = None


def _registry_cached() -> dict[str, type]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _registry()
    return _REGISTRY


def _registry() -> dict[str, type]:
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY

    out = {}
    for full, cls in SERIALIZABLE_REGISTRY.items():
        out[full] = cls
        out.setdefault(full.rsplit(".", 1)[-1], cls)
    return out


def _close(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f": did you mean {close[0]!r}?" if close else ""


def _init_params(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _pydantic_message(exc: Exception) -> tuple[str, str]:
    """(argument, short reason) from a pydantic ValidationError (or albumentations' re-raise)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()) if not str(p).startswith(("tuple[", "dict[", "list[")))
            arg = loc.split(".")[0] if loc else "?"
            return arg, f"{first.get('msg', str(exc))} (got {first.get('input')!r})"
        except Exception:  # noqa: BLE001, S110 - an unexpected shape: fall back to the text below
            pass
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    arg, msg = "?", lines[0] if lines else str(exc)
    for i, ln in enumerate(lines[1:], start=1):
        if not ln.startswith("For further") and i + 1 < len(lines):
            arg = ln.split(".")[0].split(" ")[0]
            msg = lines[i + 1].split(" [type=")[0]
            break
    return arg, msg


def _check_node(node: Any, where: str, label: str, reg: dict[str, type]) -> None:
    """Validate one serialized transform (and its children) before albumentations builds it."""
    if not isinstance(node, dict):
        raise ConfigError(f"{label}: {where} must be a mapping with __class_fullname__, got {node!r}")
    name = node.get("__class_fullname__")
    if not isinstance(name, str):
        raise ConfigError(f"{label}: {where} has no __class_fullname__ (the transform's name)")
    short = name.rsplit(".", 1)[-1]
    if name not in reg:
        names = sorted({k.rsplit(".", 1)[-1] for k in reg})
        raise ConfigError(f"{label}: unknown transform {short!r} at {where}{_close(short, names)}")
    cls = reg[name]
    if short in COLOUR_TRANSFORMS and not (short == "ColorJitter" and _zero_range(node.get("hue", 0.2))):
        raise ConfigError(f"{label}: {short} at {where} changes colour (hue or channels); steel images are "
                          "grey: leave it out")
    allowed = _init_params(cls)
    for key in node:
        if key == "__class_fullname__":
            continue
        if key not in allowed:
            raise ConfigError(f"{label}: unknown argument {key!r} of {short} at {where}"
                              f"{_close(key, allowed) or ' (arguments: ' + ', '.join(allowed) + ')'}")
    if short == "Compose" and node.get("bbox_params") is not None:
        _check_bbox_params(node["bbox_params"], f"{where}.bbox_params", label)
    if short in COMPOSITIONS:
        children = node.get("transforms")
        if not isinstance(children, list):
            raise ConfigError(f"{label}: {short} at {where} needs a list of transforms")
        for i, child in enumerate(children):
            _check_node(child, f"{where}.transforms[{i}]", label, reg)
        return
    schema = getattr(cls, "InitSchema", None)
    if schema is not None:
        # albumentations fills the schema from the signature's defaults, and so do we
        sig = inspect.signature(cls.__init__).parameters
        args = {n: q.default for n, q in sig.items() if n != "self" and q.default is not inspect.Parameter.empty}
        args.update({k: v for k, v in node.items() if k != "__class_fullname__"})
        fields = getattr(schema, "model_fields", {})
        if "strict" in fields:
            args.setdefault("strict", False)
        args = {k: v for k, v in args.items() if not fields or k in fields}
        try:
            schema(**args)
        except Exception as exc:  # noqa: BLE001 - pydantic.ValidationError and friends
            arg, msg = _pydantic_message(exc)
            raise ConfigError(f"{label}: wrong value for {short}.{arg} at {where}: {msg}") from None


def _check_bbox_params(bp: Any, where: str, label: str) -> None:
    A = _A()
    if not isinstance(bp, dict):
        raise ConfigError(f"{label}: {where} must be a mapping, got {bp!r}")
    allowed = _init_params(A.BboxParams)
    for key, value in bp.items():
        if key not in allowed:
            raise ConfigError(f"{label}: unknown key {key!r} in {where}"
                              f"{_close(key, allowed) or ' (keys: ' + ', '.join(allowed) + ')'}")
        if key.startswith("min_") or key == "max_accept_ratio":
            ok = (value is None and key == "max_accept_ratio") or (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0)
            if not ok:
                raise ConfigError(f"{label}: {where}.{key} must be a number >= 0, got {value!r}")
        elif key in ("clip", "check_each_transform") and not isinstance(value, bool):
            raise ConfigError(f"{label}: {where}.{key} must be true or false, got {value!r}")
        elif key == "label_fields" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{label}: {where}.label_fields must be a list of names, got {value!r}")
    if isinstance(bp.get("min_visibility"), (int, float)) and bp["min_visibility"] > 1:
        raise ConfigError(f"{label}: {where}.min_visibility must be within 0..1, got {bp['min_visibility']!r}")


def _zero_range(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, (list, tuple)):
        return all(v == 0 for v in value)
    return False


def _leaves(transform: Any, where: str = "transform") -> list[tuple[str, Any]]:
    children = getattr(transform, "transforms", None)
    if children is None:
        return [(where, transform)]
    out = []
    for i, child in enumerate(children):
        out += _leaves(child, f"{where}.transforms[{i}]")
    return out


def _check_compose(compose: Any, label: str) -> None:
    A = _A()
    if not isinstance(compose, A.Compose):
        raise ConfigError(f"{label}: the top transform must be a Compose, got {type(compose).__name__}")
    proc = compose.processors.get("bboxes")
    if proc is None:
        raise ConfigError(f"{label}: the Compose has no bbox_params: boxes would not follow the transforms")
    params = proc.params
    if params.format != "pascal_voc":
        raise ConfigError(f"{label}: bbox_params.format must be 'pascal_voc' (absolute x1 y1 x2 y2 pixels, "
                          f"cvcurate's boxes), got {params.format!r}")
    if not params.label_fields:
        raise ConfigError(f"{label}: bbox_params.label_fields must name at least one field (e.g. [class_labels])")
    if not params.clip:
        raise ConfigError(f"{label}: bbox_params.clip must be true (boxes on the image edge would be refused)")
    if compose.processors.get("keypoints") is not None:
        raise ConfigError(f"{label}: keypoint_params are not used by cvcurate: remove them")


def _smoke_test(compose: Any, label: str) -> None:
    """Run every transform once (p=1) on a small grey image with a box: what cannot move boxes fails here."""
    for where, variant in leaf_variants(compose):
        img = np.full((64, 64), 100, np.uint8)
        img[20:40, 16:44] = 200
        kw = {f: np.arange(1) for f in _label_fields(compose)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                variant(image=img, bboxes=np.array([[16.0, 20.0, 44.0, 40.0]]), **kw)
        except Exception as exc:  # noqa: BLE001
            name = type(_leaves(variant)[0][1]).__name__
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{label}: {name} at {where} fails on a grey image with boxes: {msg}") from None


def _label_fields(compose: Any) -> list[str]:
    return list(compose.processors["bboxes"].params.label_fields)


def leaf_variants(compose: Any) -> list[tuple[str, Any]]:
    """One ``Compose`` per leaf transform of ``compose``, that transform alone with ``p=1``.

    The same ``bbox_params`` as ``compose``; ``where`` says where the transform sits
    (``transform.transforms[2]``). The tests run each to check that boxes follow it.
    """
    A = _A()
    bbox = A.to_dict(compose)["transform"]["bbox_params"]
    out = []
    for where, leaf in _leaves(compose):
        d = A.to_dict(leaf)["transform"]
        d["p"] = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = A.from_dict({"transform": d})
            out.append((where, A.Compose([one], bbox_params=A.BboxParams(**bbox), p=1.0)))
    return out


def _parse(text: str, label: str) -> tuple[dict[str, Any], str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping with a 'transform' key (what A.save writes)")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{label}: unknown top-level key {key!r}{_close(key, TOP_KEYS) or ' (keys: ' + ', '.join(TOP_KEYS) + ')'}")
    if "transform" not in data:
        raise ConfigError(f"{label}: no 'transform' key (a pipeline is what A.save writes)")
    header_lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            header_lines.append(line)
        else:
            break
    return data, "\n".join(header_lines)


def pipeline_from_text(text: str, name: str = "pipeline", path: Path | None = None) -> Pipeline:
    """Build and validate a :class:`Pipeline` from a pipeline file's text."""
    label = path.name if path is not None else f"{name}.yaml"
    data, header = _parse(text, label)
    reg = _registry()
    _check_node(data["transform"], "transform", label, reg)
    A = _A()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no 'p' in serialized data" and similar
            compose = A.from_dict({"transform": data["transform"]})
    except (KeyError, TypeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{label}: albumentations cannot build the pipeline: {msg}") from None
    _check_compose(compose, label)
    section = data.get("cvcurate") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{label}: 'cvcurate' must be a mapping of settings")
    settings = from_dict(AugmentSettings, section, f"{label}: cvcurate")
    _smoke_test(compose, label)
    return Pipeline(name=name, compose=compose, settings=settings, header=header, text=text, path=path)


def resolve_pipeline_path(path_or_name: str | Path | None) -> Path:
    """A file path, or a shipped pipeline's name (``steel`` -> ``configs/augment/steel.yaml``)."""
    if path_or_name is None:
        path_or_name = "steel"
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    shipped = AUGMENT_CONFIG_DIR / f"{path_or_name}.yaml"
    if p.suffix == "" and shipped.is_file():
        return shipped
    names = sorted(q.stem for q in AUGMENT_CONFIG_DIR.glob("*.yaml")) if AUGMENT_CONFIG_DIR.is_dir() else []
    hint = f" (shipped pipelines: {', '.join(names)})" if names else ""
    raise ConfigError(f"pipeline file {p} does not exist{hint}")


def load_pipeline(path_or_name: str | Path | None = None) -> Pipeline:
    """Load and validate a pipeline file (or a shipped pipeline by name; default ``steel``)."""
    path = resolve_pipeline_path(path_or_name)
    text = read_text(path, "pipeline file")
    return pipeline_from_text(text, name=path.stem, path=path.resolve())


def dump_pipeline(compose: Any, settings: AugmentSettings | None = None, header: str = "") -> str:
    """The text of a pipeline file: ``header`` comments, ``A.save``'s YAML, the ``cvcurate:`` section."""
    A = _A()
    buf = io.StringIO()
    A.save(compose, buf, data_format="yaml")
    body = buf.getvalue()
    settings = settings if settings is not None else AugmentSettings()
    section = yaml.safe_dump({"cvcurate": dataclasses.asdict(settings)}, sort_keys=False, default_flow_style=False)
    lines = [ln if ln.startswith("#") else f"# {ln}".rstrip() for ln in header.splitlines()] if header else []
    head = "\n".join(lines) + "\n" if lines else ""
    return head + body.rstrip("\n") + "\n" + section


def save_pipeline(pipeline: Pipeline, path: str | Path) -> Path:
    """Write ``pipeline`` to ``path`` (header kept; ``load_pipeline`` and ``A.load`` both read it)."""
    path = Path(path)
    text = dump_pipeline(pipeline.compose, pipeline.settings, pipeline.header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# applying a pipeline to one image


def apply(pipeline: Pipeline, image: np.ndarray, xyxy: np.ndarray, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the pipeline once on ``image`` with boxes ``xyxy`` (N, 4) and random seed ``seed``.

    Returns (image, boxes (M, 4) float64, kept (M,) indices into the input boxes): boxes the
    transforms pushed out of the image, or left with no area, are gone. The result depends only
    on the inputs and ``seed`` (the Compose is reseeded), never on earlier calls.
    """
    return apply_compose(pipeline.compose, image, xyxy, seed)


def apply_compose(compose: Any, image: np.ndarray, xyxy: np.ndarray, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`apply` for any Compose with pascal_voc ``bbox_params``.

    Boxes cut by the border after a rotation are made exact (the bounding box of the visible part
    of the rotated box, :mod:`.geometry`) instead of albumentations' clipped corner box.
    """
    from .geometry import (
        applied_matrix,
        box_corners,
        quad_bbox_in_image,
        transform_points,
    )

    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    index = np.arange(len(xyxy))
    kw = {f: index for f in _label_fields(compose)}
    compose.set_random_seed(int(seed))
    compose.save_applied_params = True
    out = compose(image=image, bboxes=xyxy, **kw)
    boxes = np.asarray(out["bboxes"], np.float64).reshape(-1, 4)[:, :4]
    kept = np.asarray(out[_label_fields(compose)[0]], np.int64).reshape(-1)
    if len(kept):
        m = applied_matrix(out.get("applied_transforms", []), _registry_cached())
        # flips, scales and shifts keep boxes axis-aligned: albumentations' box is exact then
        if m is not None and (abs(m[0, 1]) > 1e-12 or abs(m[1, 0]) > 1e-12):
            h, w = image.shape[:2]
            oh, ow = out["image"].shape[:2]
            inp = np.clip(xyxy[kept], 0, [w, h, w, h])  # clip=True clips before the transforms
            exact, nonempty = quad_bbox_in_image(transform_points(m, box_corners(inp)), ow, oh)
            # never looser than albumentations' box (float32 there: allow its rounding)
            exact = np.concatenate([np.maximum(exact[:, :2], boxes[:, :2] - 1e-3),
                                    np.minimum(exact[:, 2:], boxes[:, 2:] + 1e-3)], axis=1)
            boxes = np.where(nonempty[:, None], exact, boxes)
    # float32 inside albumentations: 89.99999762 is 90
    boxes = np.round(boxes, 4)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return out["image"], boxes[ok], kept[ok]
