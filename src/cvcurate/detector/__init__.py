"""The fixed detector: train from scratch, predict, evaluate, out-of-fold predictions.

cleanlab's ObjectLab needs out-of-sample predicted boxes with confidences; this package makes
them with a small torchvision FCOS trained from scratch on the CPU (no downloads ever), or reads
predictions made elsewhere (:mod:`cvcurate.formats.predictions`).

Use the submodules: ``from cvcurate.detector.train import train``, ``...predict import predict``,
``...evaluate import evaluate`` (the package does not re-export names equal to its submodules').
Heavy imports (torch) happen when first used, not on ``import cvcurate.detector``.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "DetectorConfig": "config", "ModelConfig": "config", "TrainConfig": "config", "PredictConfig": "config",
    "load_detector_config": "config",
    "build_model": "model", "resolve_device": "model",
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "kfold_predict": "train", "EvalResult": "evaluate",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        mod = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
