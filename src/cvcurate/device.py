"""Which device a GPU-capable stage runs on: one policy for the detector (train, predict) and
augment. ``cpu``, ``cuda`` or ``cuda:N``; another name is a config error. CUDA asked for where
there is none is refused in one line, or with ``fallback`` runs on the CPU and says so (the
detector falls back: a k-fold of hours should not stop for it; augment refuses: its batched GPU
path is what was asked for). torch is imported only to ask about CUDA."""

from __future__ import annotations

from .errors import ConfigError


def cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(device: str | None, *, fallback: bool = False) -> tuple[str, str | None]:
    """(device to use, a note saying why it differs from the one asked for, or None)."""
    device = str(device or "cpu").strip()
    if device == "cpu":
        return "cpu", None
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"unknown device {device!r}: use cpu or cuda (or cuda:N)")
    import torch

    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        msg = f"--device {device}: CUDA is not available on this machine ({why}); use --device cpu"
        if fallback:
            return "cpu", msg + ": running on the CPU instead"
        raise ConfigError(msg)
    if ":" in device and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device, None
