"""The conventions stage: read the labels and the model's predictions, find how each class is boxed
(:mod:`cvcurate.scoring.conventions`), write the report (:mod:`cvcurate.analysis.conventions_page`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import store
from ..errors import InputError, shell_arg
from ..names import PRED_FIELDS, default_pred_field
from ..scoring.conventions import Conventions, find_conventions
from ..types import Annotations
from .score import load_score_config


@dataclass
class ConventionsRun:
    conventions: Conventions
    pred_field: str
    paths: dict[str, Path]
    lines: list[str]  # one per class, as the report words it


def run_conventions(name: str, *, pred_field: str | None = None, config: str | Path | None = None,
                    out_dir: str | Path | None = None) -> ConventionsRun:
    """How each class of dataset ``name`` is boxed, against its predictions (``pred_field``, or the
    field score would use); the report written to ``out_dir`` (default ``NAME_conventions``)."""
    from ..analysis.conventions_page import summary_line, write
    from ..analysis.thumbs import style_thumbnail

    cfg = load_score_config(config)
    schema = store.field_names(name)
    pred_field = pred_field or default_pred_field(schema)
    if pred_field is None or pred_field not in schema:
        have = [f for f in PRED_FIELDS if f in schema]
        raise InputError(f"dataset {name!r} has no predictions{' field ' + repr(pred_field) if pred_field else ''}: "
                         f"conventions are measured against the model's boxes; run 'cvcurate predict "
                         f"{shell_arg(name)}' first" + (f" (prediction fields: {', '.join(have)})" if have else ""))
    labels = store.read(name, pred_field=pred_field)
    preds = [r.pred if r.pred is not None else Annotations.empty(with_confidence=True) for r in labels.records]
    if not sum(len(p) for p in preds):
        raise InputError(f"field {pred_field!r} of dataset {name!r} holds no predicted boxes")
    conv = find_conventions(labels, preds, cfg.objectlab)
    floor = conv.model_floor

    def thumb(ci: int, i: int) -> bytes:
        p = preds[i]
        keep = (np.asarray(p.class_id) == ci) & (np.asarray(p.confidence) >= floor)
        return style_thumbnail(labels.records[i], ci, p.xyxy[keep], labels.classes)

    paths = write(conv, Path(out_dir) if out_dir is not None else Path(f"{name}_conventions"), name, thumb)
    return ConventionsRun(conventions=conv, pred_field=pred_field, paths=paths,
                          lines=[summary_line(c) for c in conv.classes])
