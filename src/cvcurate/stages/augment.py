"""The augment stage: new samples for under-represented classes, added to the dataset.

Reads the originals from the store (samples tagged ``augmented`` never seed a plan), plans with
:func:`cvcurate.augment.make_plan`, generates with :func:`cvcurate.augment.run_augmentation` (CPU
workers or the batched path on a GPU) into ``<NAME>_augment/<pipeline>-s<seed>/`` (or ``--out``),
then adds the new samples to the dataset: tag ``augmented``, the source's split, and their
provenance in the field ``cvc_augment`` (source sample and file, pipeline and its hash, seed,
sample index, copy-paste donors). Originals are never touched. An interrupted run resumes where it
stopped (what was written is read back, not made again); :func:`undo` removes what a run added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import store
from ..errors import NOTHING_WRITTEN, InputError, interrupt_leaves, pause_point, settle
from ..names import PRED_FIELDS
from . import recovery
from ..progress import Counter
from ..names import AUGMENT_FIELD, AUGMENTED_TAG
from ..types import LabelSet


@dataclass
class AugmentRun:
    plan: Any  # augment.Plan
    pipeline: str
    out_dir: Path
    added: int = 0
    resumed: int = 0
    written: int = 0
    short: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False


def originals(name: str) -> tuple[LabelSet, int]:
    """The dataset without its augmented samples, and how many augmented ones it holds."""
    labels = store.read(name)
    tags = store.sample_values(name, ["tags"])
    aug = {sid for sid, t in zip(tags["id"], tags["tags"]) if AUGMENTED_TAG in (t or [])}
    recs = [r for r in labels.records if r.sample_id not in aug]
    return LabelSet(labels.classes, recs), len(aug)


def default_out(name: str, pipeline: str, seed: int) -> Path:
    return Path(f"{name}_augment") / f"{pipeline}-s{seed}"


def augment(name: str, *, config: str | Path | None = None, target: int | None = None, balance: bool = False,
            classes: Sequence[str] | None = None, device: str = "cpu", workers: int | None = 1, seed: int = 0,
            out: str | Path | None = None, dry_run: bool = False, progress: bool = False,
            log: Callable[[str], None] = lambda _: None, wait: float = 0.0, engine: str = "local") -> AugmentRun:
    """``engine``: ``local`` (``workers`` processes) or ``ray`` (``workers`` Ray workers, default all
    cores: :mod:`cvcurate.engine`); the same samples for a seed either way. The samples are added
    to the store once, here, after all of them are made."""
    from ..augment import check_target, load_pipeline, make_plan, run_augmentation
    from ..device import resolve_device
    from ..engine import get_engine

    if target is not None:
        check_target(target, "--target")  # its range, before any work
    if target is not None and balance:
        raise InputError("give --target N or --balance, not both")
    pipe = load_pipeline(config)  # validated before any work (unknown transform, key, type)
    dev, _ = resolve_device(device)  # --device cuda without CUDA: one clear line before any work
    eng = get_engine(engine, workers if engine == "ray" else None)
    if eng.is_ray and dev != "cpu":
        raise InputError("--engine ray runs the CPU augmentation workers; the batched GPU path (--device cuda) "
                         "runs in this process: use one or the other")
    base, n_aug = originals(name)
    if not base.num_boxes:
        raise InputError(f"dataset {name!r} has no boxes: there is nothing to balance")
    cp = pipe.settings.copy_paste
    plan = make_plan(base, "balance" if balance else target, classes=classes,
                     n_paste=cp.per_sample if cp.enabled else (0, 0), seed=seed)
    out_dir = Path(out) if out is not None else default_out(name, pipe.name, seed)
    res = AugmentRun(plan=plan, pipeline=pipe.name, out_dir=out_dir, dry_run=dry_run, notes=list(plan.notes))
    if n_aug:
        res.notes.append(f"{n_aug} augmented sample(s) already in {name!r} were left out of the plan")
    if dry_run or plan.n_samples == 0:
        return res
    with eng.session(), Counter(f"augmenting ({pipe.name})", enabled=progress) as update:
        run = run_augmentation(base, plan, pipe, out_dir, workers=workers or 1, device=device, progress=update,
                               engine=eng)
    res.written, res.resumed, res.short = run.written, run.resumed, dict(run.short)
    res.notes += list(run.notes)
    recs = run.records
    if recs:
        with store.dataset_lock(name, "augment", user=store.journal.who(), wait_s=wait):
            recovery.recover(name, "augment")
            _add_locked(name, base, recs, run, pipe, seed, out_dir, res)
    return res


def _add_locked(name: str, base: LabelSet, recs: list, run: Any, pipe: Any, seed: int, out_dir: Path,
                res: AugmentRun) -> None:
    """Add the new samples, tag them and write their provenance: journalled first (the file paths
    it adds), so that a kill between the three writes is rolled back by the next writer; an
    interrupt rolls back at once."""
    history = {"action": "augment", "pipeline": pipe.name, "pipeline_sha256": pipe.sha256, "seed": seed,
               "samples": len(recs), "out_dir": str(out_dir.resolve())}
    have = set(store.sample_values(name, ["filepath"])["filepath"])
    new_paths = [r.filepath for r in recs if r.filepath not in have]
    entry = store.journal.begin(name, "augment", {"paths": new_paths, "out_dir": str(out_dir.resolve())})
    try:
        with interrupt_leaves(f"the augmented samples of dataset {name!r} may be partly added: the next cvcurate "
                              f"writer on it removes them (its journal lists them); augment again to resume"):
            w = store.write(LabelSet(base.classes, recs), name, history=history)
            res.added = w.added
            ids = [r.sample_id for r in recs]
            pause_point("augment:written")
            store.tag_samples(name, ids, AUGMENTED_TAG)
            store.set_dict_field(name, AUGMENT_FIELD, {
                r.sample_id: {**s.provenance, "out_dir": str(out_dir.resolve())} for r, s in zip(recs, run.samples)})
            store.journal.finish(name, entry)
    except BaseException:
        with store.shielded():
            store.delete_samples_by_path(name, new_paths)
            store.journal.finish(name, entry, store.journal.ROLLED_BACK)
            settle(f"the augmented samples were removed again: {NOTHING_WRITTEN} (the images stay in {out_dir})")
        raise
    preds = [f for f in PRED_FIELDS if f in store.field_names(name)]
    if preds:
        res.notes.append(f"the new samples have no {preds[0]!r} yet: predict again before scoring "
                         f"(cvcurate predict {name} ... or train --folds K)")


def undo(name: str, *, out: str | Path | None = None, wait: float = 0.0) -> tuple[int, int]:
    """Remove the samples an augmentation run added (all augmented samples, or those of ``out``)
    and the files it wrote; return (samples removed, files removed). Holds the dataset's lock."""
    with store.dataset_lock(name, "augment --undo", user=store.journal.who(), wait_s=wait):
        recovery.recover(name, "augment")
        return _undo_locked(name, out)


def _undo_locked(name: str, out: str | Path | None) -> tuple[int, int]:
    from ..augment import remove_run

    vals = store.sample_values(name, ["tags", AUGMENT_FIELD])
    want = str(Path(out).resolve()) if out is not None else None
    ids, dirs = [], set()
    for sid, tags, prov in zip(vals["id"], vals["tags"], vals[AUGMENT_FIELD]):
        if AUGMENTED_TAG not in (tags or []):
            continue
        d = (prov or {}).get("out_dir")
        if want is None or d == want:
            ids.append(sid)
            if d:
                dirs.add(d)
    if want is not None:
        dirs.add(want)
    if not ids and not any((Path(d) / "run.json").is_file() for d in dirs):
        raise InputError(f"dataset {name!r} has no augmented samples" + (f" from {out}" if out else ""))
    n = store.delete_samples(name, ids)
    files = sum(remove_run(d) for d in sorted(dirs) if (Path(d) / "run.json").is_file())
    return n, files


def source_of(name: str) -> dict[str, str]:
    """Augmented sample id -> its source image path (leakage checks skip that pair)."""
    vals = store.sample_values(name, [AUGMENT_FIELD])
    return {sid: p["source"] for sid, p in zip(vals["id"], vals[AUGMENT_FIELD]) if p and p.get("source")}
