"""Checkpoints: weights plus everything needed to trust and reuse them.

A checkpoint file is a plain ``torch.save`` dict of tensors, strings and numbers, loaded with
``weights_only=True`` (no pickled code, no network). Metadata: class names, architecture name and
its full model config, input size, SHA-256 of the training data (see
:func:`~cvcurate.detector.data.data_fingerprint`), metrics, seed, torch version, creation time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import from_dict
from ..errors import InputError, kept
from .card import NAMED, WEIGHTS_DIR, ClassesAndImages, resolve_model_path  # noqa: F401 - re-exported
from .config import ModelConfig

FORMAT_VERSION = 1


@dataclass
class Checkpoint(ClassesAndImages):
    state_dict: dict[str, torch.Tensor]
    classes: list[str]
    arch: str
    model_config: dict[str, Any]
    input_size: int
    data_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    torch_version: str = torch.__version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    train_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _model: Any = field(default=None, repr=False, compare=False)

    _source: Path | None = field(default=None, repr=False, compare=False)  # the file it was loaded from

    @property
    def model_cfg(self) -> ModelConfig:
        return from_dict(ModelConfig, self.model_config, "checkpoint model config")

    def model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with these weights, in eval mode (built once, then cached)."""
        from .model import build_model

        if self._model is None:
            m = build_model(self.model_cfg, len(self.classes))
            try:
                m.load_state_dict(self.state_dict)
            except RuntimeError as exc:
                raise InputError(f"checkpoint weights do not fit architecture {self.arch!r}: "
                                 f"{str(exc).splitlines()[0]}") from None
            self._model = m
        return self._model.to(device).eval()

    def meta(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "state_dict"}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        d["format_version"] = FORMAT_VERSION
        return d

def _plain(v: Any) -> Any:
    """Plain Python types only (``torch.__version__`` is a str subclass, metrics may hold numpy
    scalars), so that ``torch.load(weights_only=True)`` accepts the file."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, type(None))):
        return v
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


def check_checkpoint_path(path: str | Path) -> Path:
    """Refuse, in one line and before any training, a checkpoint path that cannot be written:
    hours of training are not lost to an ``--out`` under a file or a read-only place."""
    from ..errors import check_writable_file

    return check_writable_file(path, "the checkpoint")


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = _plain(ckpt.to_dict())
    d["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(d, tmp)
        tmp.replace(path)
    except BaseException:  # an interrupt or a full disk leaves no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    kept(f"checkpoint {path}")
    return path


def load_checkpoint(path: str | Path, *, arch: str | None = None,
                    classes: Sequence[str] | None = None) -> Checkpoint:
    """Load a checkpoint (never touches the network); check architecture and classes if given.

    Raises :class:`~cvcurate.errors.InputError` for an unreadable file, a checkpoint of another
    architecture than ``arch``, or a class list different from ``classes``.
    """
    path = resolve_model_path(path)
    try:
        from torch.torch_version import TorchVersion

        # TorchVersion (a str) is allowed for files written before metadata was made plain
        with torch.serialization.safe_globals([TorchVersion]):
            d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise InputError(_not_a_checkpoint(path, _describe_file(path, exc))) from None
    required = ("state_dict", "classes", "arch", "model_config", "input_size")
    if not isinstance(d, dict):
        raise InputError(_not_a_checkpoint(path, f"a torch file holding a {type(d).__name__}, not a dict"))
    missing = [k for k in required if k not in d]
    if missing:
        keys = ", ".join(map(str, list(d)[:6])) + (", ..." if len(d) > 6 else "")
        raise InputError(_not_a_checkpoint(
            path, f"a torch dict without {', '.join(missing)} (keys: {keys or 'none'}; a bare state_dict "
            f"or another program's checkpoint has no cvcurate metadata)"))
    names = {f.name for f in dataclasses.fields(Checkpoint) if not f.name.startswith("_")}
    ckpt = Checkpoint(**{k: v for k, v in d.items() if k in names})
    ckpt._source = path
    if arch is not None and ckpt.arch != arch:
        raise InputError(f"{path} is a {ckpt.arch!r} checkpoint, but architecture {arch!r} was asked for")
    try:
        ckpt.model_cfg
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: its model config is not valid for this version of cvcurate: {exc}") from None
    if classes is not None:
        ckpt.check_classes(classes)
    return ckpt


EXPECTED = ("a cvcurate detector checkpoint (a torch file saved by 'cvcurate train', or one of "
            + ", ".join(NAMED) + ")")


def _not_a_checkpoint(path: Path, found: str) -> str:
    return f"{path} is not {EXPECTED}: found {found}"


def _describe_file(path: Path, exc: Exception) -> str:
    """What a file that ``torch.load`` refused looks like, in words (not the unpickler's error)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as err:
        return f"a file that cannot be read ({err.strerror or err})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that is not a torch file" if b"data.pkl" not in head else \
            f"a torch file that cannot be loaded safely ({_first_line(exc)})"
    if head[:1] == b"\x80":
        return f"a pickle file that cannot be loaded safely ({_first_line(exc)})"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if b"\x00" not in head[:1024]:
            text = head.decode("latin-1")
        else:
            return f"binary data starting with {head[:8].hex(' ')}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"a text file starting with {first[:60]!r}" if first else "a text file of blank lines"


def _first_line(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:120]}" if msg else type(exc).__name__
