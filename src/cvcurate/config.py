"""Everything a user tunes: YAML files in ``configs/``, loaded and validated in one place.

Each config kind is a dataclass (nested dataclasses for sections). :func:`load_config` reads a
YAML file over the dataclass defaults and rejects unknown keys with a close-match suggestion
("unknown key 'lr_rate' in detector.yaml: did you mean 'lr'?") and wrong types with the key's
path, so a typo never silently falls back to a default.

The defaults shipped in ``configs/*.yaml`` are copies of the dataclass defaults (a test keeps them
equal), so a user can copy one and change what they need.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

# the repository's configs/ folder (for a source checkout); an installed package falls back to
# its dataclass defaults
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce int->float) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f": did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return obj


# ---------------------------------------------------------------------------------------------
# YAML without aliases: every YAML file cvcurate reads goes through safe_load_yaml
# ---------------------------------------------------------------------------------------------
# An alias (``*name``) repeats an anchored node; nine lines of aliases of aliases stand for 9**9
# values (the "billion laughs"), which blow up whoever walks them. No file cvcurate reads needs one,
# so they are refused, as is nesting deeper than PyYAML can compose (it recurses per level).
YAML_MAX_DEPTH = 100


class UnsafeYAMLError(yaml.YAMLError):
    """A YAML document that uses an alias or is nested too deep (one line, with its position)."""


class _GuardedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags) that refuses aliases and deep nesting."""

    _depth = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise UnsafeYAMLError(
                f"uses an alias (*{event.anchor}, line {event.start_mark.line + 1}), which cvcurate does not "
                "accept (aliases can expand to billions of values): write the values out")
        if self._depth >= YAML_MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise UnsafeYAMLError(f"nested deeper than {YAML_MAX_DEPTH} levels (line {mark.line + 1})")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also refuses aliases and nesting deeper than :data:`YAML_MAX_DEPTH`
    (:class:`UnsafeYAMLError`, a ``yaml.YAMLError``)."""
    loader = _GuardedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------------
# import limits (configs/import.yaml)
# ---------------------------------------------------------------------------------------------
@dataclass
class ImportLimits:
    """Caps on what ``cvcurate import`` (and ``cvcurate gate FOLDER``) reads from one file.

    An image over a cap is rejected (the import report says which cap and its value) and the
    rest is imported; a JSON file nested deeper than ``max_json_depth`` is refused as a whole.
    They keep a hostile or broken file (a label file of a million lines, a decompression bomb)
    from ending in gigabytes of memory or a database error.
    """

    # boxes one image may have (COCO annotations, YOLO lines, VOC objects, Severstal components)
    max_boxes_per_image: int = 10_000
    # lines and bytes of one YOLO label file
    max_label_file_lines: int = 100_000
    max_label_file_bytes: int = 10_000_000
    # width x height of one image (read from its header; the image is not decoded)
    max_image_pixels: int = 100_000_000
    # nesting of a JSON file (COCO, class maps, predictions): COCO needs 5
    max_json_depth: int = 100

    def check(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be at least 1, got {getattr(self, f.name)}")
        if self.max_json_depth > 500:
            raise ValueError(f"max_json_depth must be at most 500 (Python's JSON reader recurses per level), "
                             f"got {self.max_json_depth}")


def load_import_limits(path: str | Path | None = None) -> ImportLimits:
    return load_config(ImportLimits, path, default_name="import.yaml")


def from_dict(cls: type[T], data: dict[str, Any] | None, name: str = "config") -> T:
    """Build config ``cls`` from a mapping over its defaults, validating every key."""
    return _build(cls, dict(data or {}), name)


def read_text(path: Path, what: str = "config file") -> str:
    """The text of a config file, read as UTF-8 (whatever the locale says); :class:`ConfigError`
    naming the file when it is not UTF-8 text or cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}): "
                          "save it as UTF-8") from None


def load_config(cls: type[T], path: str | Path | None = None, *, default_name: str | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from ``path`` (or ``configs/<default_name>`` when it exists, else defaults).

    ``overrides`` (for example from command-line options) are applied on top of the file.
    """
    data: dict[str, Any] = {}
    label = "defaults"
    if path is None and default_name is not None and (CONFIG_DIR / default_name).is_file():
        path = CONFIG_DIR / default_name
    if path is not None:
        path = Path(path)
        label = path.name
        if not path.is_file():
            raise ConfigError(f"config file {path} " + ("is not a regular file" if path.exists() else "does not exist"))
        text = read_text(path)
        try:
            loaded = safe_load_yaml(text)
        except UnsafeYAMLError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: malformed YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        data = loaded
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v
    return _build(cls, data, label)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
