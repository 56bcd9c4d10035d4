"""Generating the planned samples: files on disk, records and provenance, resumable.

Layout of ``out_dir``::

    run.json                          what run this folder holds (plan fingerprint, pipeline hash, seed)
    images/aug_000000.png ...         the new images
    labels/part_000000_000015.json    boxes, split and provenance of a chunk of samples, written
                                      after the chunk's images (one file per chunk: creating
                                      files is the slowest part of writing small samples)

Sample ``i`` draws everything (copy-paste donors and places, the pipeline's random parameters)
from its own generator seeded from ``(seed, i)``, so the output is the same for a seed whatever
the number of workers. Images and label parts are written to a temporary name and renamed, so a
sample is complete (its image and its entry in a part) or it is not: an interrupted run (Ctrl-C)
started again with the same inputs reads the complete samples back and makes only the rest (an
image whose part was not written yet is made again, byte for byte the same): no duplicate,
nothing lost.

When the pipeline drops boxes (cut at the border) or a paste finds no room, the counts can fall
short of the target; the run then plans a few more samples (``top_up`` rounds), deterministically.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, interrupt_leaves
from ..types import Annotations, ImageRecord, LabelSet
from . import workers as _workers  # its process state (_CTX, caches)
from .copypaste import Donor
from .pipeline import Pipeline
from .plan import Job, Plan, count_matrix, extend_plan
from .workers import (IMAGES, LABELS, RUN_FILE, _Context, _Rec, _atomic_write, _init, _init_worker,
                      _make_batch, _make_chunk)

Progress = Callable[[int, int], None]


@dataclass
class Sample:
    """One generated sample: its record (the new image, boxes, the source's split) and provenance."""

    index: int
    record: ImageRecord
    provenance: dict[str, Any]
    resumed: bool = False


@dataclass
class RunResult:
    """What a run made (``samples`` in index order, resumed ones included) and the counts."""

    out_dir: Path
    samples: list[Sample]
    written: int
    resumed: int
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    target: int
    selected: list[str]
    top_up_samples: int = 0
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def short(self) -> dict[str, int]:
        """Selected classes still under target and by how much (empty when every target is met)."""
        return {c: self.target - self.counts_after[c] for c in self.selected if self.counts_after[c] < self.target}

    @property
    def records(self) -> list[ImageRecord]:
        return [s.record for s in self.samples]


# ---------------------------------------------------------------------------------------------
# the run


def _entries(out: Path) -> dict[int, dict[str, Any]]:
    """Every complete sample's entry in ``out``, by index (parts that cannot be read are ignored)."""
    found: dict[int, dict[str, Any]] = {}
    labels = out / LABELS
    if not labels.is_dir():
        return found
    for p in sorted(labels.glob("part_*.json")):
        try:
            entries = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        for e in entries:
            if (out / e["file"]).is_file():
                found[int(e["index"])] = e
    return found


def written_indices(out_dir: str | Path) -> set[int]:
    """Indices of the samples complete in ``out_dir`` (their image and label entry exist)."""
    return set(_entries(Path(out_dir).expanduser().resolve()))


def read_samples(out_dir: str | Path) -> list[Sample]:
    """Every complete sample of ``out_dir``, in index order (for the stage, or a resumed run)."""
    out = Path(out_dir).expanduser().resolve()
    return [_sample(out, e, resumed=True) for _, e in sorted(_entries(out).items())]


def _sample(out: Path, entry: dict[str, Any], resumed: bool) -> Sample:
    prov = entry["provenance"]
    rec = ImageRecord(filepath=str(out / entry["file"]), width=entry["width"], height=entry["height"],
                      gt=Annotations(np.asarray(entry["xyxy"], np.float64).reshape(-1, 4), entry["class_id"]),
                      split=entry["split"], meta={"provenance": prov})
    return Sample(index=int(entry["index"]), record=rec, provenance=prov, resumed=resumed)


def _context(labels: LabelSet, plan: Plan, pipeline: Pipeline, out: Path, engine: str, device: str) -> _Context:
    counts = count_matrix(labels)
    wanted = np.flatnonzero(counts[:, plan.selected].sum(axis=1) > 0)
    recs = {}
    for i in wanted:
        r = labels.records[int(i)]
        recs[int(i)] = _Rec(filepath=str(r.filepath), width=r.width, height=r.height, xyxy=r.gt.xyxy.copy(),
                            class_id=r.gt.class_id.copy(), split=r.split, sample_id=r.sample_id)
    donors: dict[int, list[Donor]] = {c: [] for c in plan.selected}
    for i, r in recs.items():
        for b, c in enumerate(r.class_id):
            if int(c) in donors:
                donors[int(c)].append(Donor(record=i, box=b, class_id=int(c)))
    return _Context(classes=list(labels.classes), records=recs, donors=donors, pipeline_text=pipeline.text,
                    pipeline_name=pipeline.name, pipeline_sha=pipeline.sha256, out_dir=str(out), seed=plan.seed,
                    engine=engine, device=device)


def _check_out_dir(out: Path, stamp: dict[str, Any]) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text())
        except ValueError:
            old = {}
        if old.get("fingerprint") != stamp["fingerprint"]:
            raise InputError(f"{out} holds samples of another augmentation run (other data, plan, seed or pipeline): "
                             "choose another output folder or remove it")
    elif out.is_dir() and any((out / sub).is_dir() and any((out / sub).iterdir()) for sub in (IMAGES, LABELS)):
        raise InputError(f"{out} holds images but no {RUN_FILE}: not a folder this run can resume")
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    (out / LABELS).mkdir(parents=True, exist_ok=True)
    for sub in (IMAGES, LABELS):  # what an interrupt left half-written
        for tmp in (out / sub).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    _atomic_write(run_file, json.dumps(stamp, indent=1).encode())


def run_augmentation(
    labels: LabelSet,
    plan: Plan,
    pipeline: Pipeline,
    out_dir: str | Path,
    *,
    workers: int = 1,
    device: str = "cpu",
    batched: bool | None = None,
    batch_size: int = 256,
    done: set[int] | None = None,
    progress: Progress | None = None,
    top_up: int = 10,
    chunk_size: int = 16,
    engine: Any = None,
) -> RunResult:
    """Generate the samples of ``plan`` with ``pipeline`` into ``out_dir``; see the module doc.

    ``labels`` must be the label set the plan was made from (the originals only: no augmented
    samples). ``workers``: CPU processes (spawned, never forked). ``device``: ``cpu``, or ``cuda``
    for the batched path (``batched`` forces the batched path on any device; the tests run it on
    the CPU). ``done``: indices already written (default: found in ``out_dir``); they are read back,
    not made again. ``progress(done, total)`` is called in this process as samples finish.
    ``engine``: a :class:`cvcurate.engine.Engine`; ``ray`` runs the CPU workers' chunks as Ray
    actors (each writes its samples into ``out_dir``: a folder every Ray node sees); samples are
    seeded per index, so they are the same as here.
    """
    from ..device import resolve_device

    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    dev, _ = resolve_device(device)
    batched = (dev != "cpu") if batched is None else bool(batched)
    on_ray = engine is not None and engine.is_ray
    if on_ray and batched:
        raise InputError("--engine ray runs the CPU augmentation workers; the batched GPU path (--device cuda) "
                         "runs in this process: use one or the other")
    made_by = "batched" if batched else "albumentations"
    out = Path(out_dir).expanduser().resolve()
    stamp = {"fingerprint": _fingerprint(labels, plan, pipeline), "pipeline": pipeline.name,
             "pipeline_sha256": pipeline.sha256, "seed": plan.seed, "target": plan.target,
             "classes": labels.classes, "jobs": plan.n_samples, "engine": made_by}
    _check_out_dir(out, stamp)
    ctx = _context(labels, plan, pipeline, out, made_by, dev)
    found = _entries(out)
    have = set(found) if done is None else set(done)
    missing = sorted(have - set(found))
    if missing:
        raise InputError(f"sample {missing[0]} is said to be written but {out} has no complete sample {missing[0]}")
    results: dict[int, Sample] = {}
    counts = np.asarray(count_matrix(labels).sum(axis=0), np.int64)
    before = {c: int(n) for c, n in zip(labels.classes, counts)}
    k = len(labels.classes)
    added = np.zeros(k, np.int64)

    def absorb(sample: Sample) -> None:
        nonlocal added
        results[sample.index] = sample
        cid = sample.record.gt.class_id
        if len(cid):
            added += np.bincount(cid, minlength=k)

    jobs: list[Job] = list(plan.jobs)
    total = len(jobs)
    finished = 0
    pool = None
    ray_pool = None
    aug = None
    if batched:
        from .gpu import BatchAugment

        _init(ctx, threads=0)
        aug = BatchAugment.from_pipeline(pipeline, dev)
    try:
        with interrupt_leaves(f"the augmented samples finished so far are kept in {out}: "
                              "run the same command again to resume"):
            round_jobs = jobs
            top_up_n = 0
            for rnd in range(top_up + 1):
                todo = []
                for job in round_jobs:
                    if job.index in have:
                        absorb(_sample(out, found[job.index], resumed=True))
                        finished += 1
                    else:
                        todo.append(job)
                if progress and finished:
                    progress(finished, total)
                if batched:
                    for i in range(0, len(todo), batch_size):
                        for entry in _make_batch(todo[i:i + batch_size], aug):
                            absorb(_sample(out, entry, resumed=False))
                            finished += 1
                        if progress:
                            progress(finished, total)
                elif on_ray and todo:
                    if ray_pool is None:  # one pool for every round: its workers start once
                        ray_pool = engine.pool(partial(_chunk_worker, ctx))
                    size = max(1, min(chunk_size, len(todo) // (4 * ray_pool.size) or 1))
                    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
                    for _, entries in ray_pool.stream(chunks):
                        for entry in entries:
                            absorb(_sample(out, entry, resumed=False))
                            finished += 1
                        if progress:
                            progress(finished, total)
                elif workers == 1 or len(todo) < 2 * chunk_size:
                    if _workers._CTX is not ctx:
                        _init(ctx, threads=0)
                    for i in range(0, len(todo), chunk_size):
                        for entry in _make_chunk(todo[i:i + chunk_size]):
                            absorb(_sample(out, entry, resumed=False))
                            finished += 1
                        if progress:
                            progress(finished, total)
                else:
                    if pool is None:
                        # "spawn", not fork: forking beside FiftyOne's client threads deadlocks
                        mp = multiprocessing.get_context("spawn")
                        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp, initializer=_init_worker,
                                                   initargs=(ctx,))
                    size = max(1, min(chunk_size, len(todo) // (4 * workers) or 1))
                    pending = {pool.submit(_make_chunk, todo[i:i + size]) for i in range(0, len(todo), size)}
                    while pending:
                        ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in ready:
                            for entry in fut.result():
                                absorb(_sample(out, entry, resumed=False))
                                finished += 1
                        if progress:
                            progress(finished, total)
                achieved = counts + added
                if rnd == top_up or all(achieved[c] >= plan.target for c in plan.selected):
                    break
                round_jobs = extend_plan(plan, labels, achieved, start=len(jobs))
                if not round_jobs:
                    break
                jobs += round_jobs
                top_up_n += len(round_jobs)
                total = len(jobs)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        if ray_pool is not None:
            ray_pool.close()  # its workers stop (after an interrupt too)
        _workers._CACHE.clear()  # the decoded sources and cuts of this process
        _workers._CUTS.clear()
    samples = [results[i] for i in sorted(results)]
    after = {c: int(n) for c, n in zip(labels.classes, counts + added)}
    res = RunResult(out_dir=out, samples=samples, written=sum(not s.resumed for s in samples),
                    resumed=sum(s.resumed for s in samples), counts_before=before, counts_after=after,
                    target=plan.target, selected=[labels.classes[c] for c in plan.selected],
                    top_up_samples=top_up_n, device=dev)
    if res.short:
        res.notes.append("still under target after top-up: " + ", ".join(f"{c} ({n} short)" for c, n in res.short.items()))
    return res


def _chunk_worker(ctx: _Context) -> Callable[[list[Job]], list[dict[str, Any]]]:
    """A Ray worker's setup: the state a spawned CPU worker has, then chunks of jobs."""
    _init_worker(ctx)
    return _make_chunk


def _fingerprint(labels: LabelSet, plan: Plan, pipeline: Pipeline) -> str:
    import hashlib

    return hashlib.sha256((plan.fingerprint(labels) + pipeline.sha256).encode()).hexdigest()


def plan_and_run(labels: LabelSet, pipeline: Pipeline, out_dir: str | Path, *, target: int | str | None = None,
                 classes: Sequence[str] | None = None, seed: int = 0, **kwargs: Any) -> tuple[Plan, RunResult]:
    """Plan (copy-paste counts from the pipeline's settings) and run in one call: (plan, result)."""
    from .plan import make_plan

    cp = pipeline.settings.copy_paste
    plan = make_plan(labels, target, classes=classes, seed=seed,
                     n_paste=tuple(cp.per_sample) if cp.enabled else (0, 0))
    return plan, run_augmentation(labels, plan, pipeline, out_dir, **kwargs)


def remove_run(out_dir: str | Path) -> int:
    """Delete what runs wrote in ``out_dir`` (images, label parts, run.json); returns files removed.

    For ``--undo``: a folder without ``run.json`` is refused, and files the run did not write
    are left where they are (the folder itself goes only when it is empty then).
    """
    out = Path(out_dir).expanduser().resolve()
    if not (out / RUN_FILE).is_file():
        raise InputError(f"{out} holds no augmentation run ({RUN_FILE} is missing): nothing removed")
    n = 0
    for sub, pattern in ((IMAGES, "aug_*"), (IMAGES, ".aug_*.tmp"), (LABELS, "part_*.json"), (LABELS, ".part_*.tmp")):
        for p in (out / sub).glob(pattern):
            p.unlink()
            n += 1
    (out / RUN_FILE).unlink()
    n += 1
    for d in (out / IMAGES, out / LABELS, out):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return n
