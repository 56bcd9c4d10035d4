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
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError, interrupt_leaves
from ..types import Annotations, ImageRecord, LabelSet
from .copypaste import Donor, paste_defects
from .pipeline import Pipeline, apply, pipeline_from_text
from .plan import Job, Plan, count_matrix, extend_plan

RUN_FILE = "run.json"
IMAGES = "images"
LABELS = "labels"
Progress = Callable[[int, int], None]


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` of the run of ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(0xA06, int(index))))


def sample_name(index: int) -> str:
    return f"aug_{index:06d}"


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
# what the workers need


@dataclass
class _Rec:
    filepath: str
    width: int
    height: int
    xyxy: np.ndarray
    class_id: np.ndarray
    split: str | None
    sample_id: str | None


@dataclass
class _Context:
    classes: list[str]
    records: dict[int, _Rec]
    donors: dict[int, list[Donor]]
    pipeline_text: str
    pipeline_name: str
    pipeline_sha: str
    out_dir: str
    seed: int
    engine: str = "albumentations"
    device: str = "cpu"


_CTX: _Context | None = None
_PIPE: Pipeline | None = None
_CACHE: dict[str, np.ndarray] = {}
_CUTS: dict = {}
_CACHE_MAX = 512


def _init(ctx: _Context, threads: int = 1) -> None:
    global _CTX, _PIPE
    _CTX = ctx
    _PIPE = pipeline_from_text(ctx.pipeline_text, ctx.pipeline_name)
    _CACHE.clear()
    _CUTS.clear()
    if threads:
        cv2.setNumThreads(threads)  # small images: one thread per process is fastest


def _init_worker(ctx: _Context) -> None:
    """Initializer of a spawned CPU worker.

    albumentations imports torch when it is installed (for ``ToTensorV2``), which costs a worker
    about 2 s of CPU and 300 MB; the CPU path never uses torch, so a worker blocks it first.
    """
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ImportError
    _init(ctx, threads=1)


def _read(path: str, rec: _Rec | None = None) -> np.ndarray:
    img = _CACHE.get(path)
    if img is None:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(f"cannot read image {path}")
        if img.dtype != np.uint8:
            raise InputError(f"{path}: only 8-bit images can be augmented, got {img.dtype}")
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if rec is not None and (img.shape[1], img.shape[0]) != (rec.width, rec.height):
            raise InputError(f"{path}: the image is {img.shape[1]}x{img.shape[0]} but its record says "
                             f"{rec.width}x{rec.height}")
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[path] = img
    return img


def _encode(image: np.ndarray, pipe: Pipeline) -> tuple[bytes, str]:
    st = pipe.settings
    if st.image_format == "jpg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, st.jpeg_quality])
        ext = "jpg"
    else:
        # Huffman-only deflate over the SUB filter: 3x faster than the default, 7 % larger
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
                                               cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB])
        ext = "png"
    if not ok:  # pragma: no cover
        raise RuntimeError("image encoding failed")
    return buf.tobytes(), ext


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _prepare(job: Job, ctx: _Context, pipe: Pipeline) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, int]:
    """Source image with its pasted defects: (image, boxes, class ids, pasted, pipeline seed)."""
    rng = sample_rng(ctx.seed, job.index)
    aug_seed = int(rng.integers(0, 2**31 - 1))
    src = ctx.records[job.source]
    img = _read(src.filepath, src)
    xyxy, cid = src.xyxy, src.class_id
    pasted = []
    cfg = pipe.settings.copy_paste
    if job.n_paste > 0 and cfg.enabled:
        donors = ctx.donors.get(job.target, [])

        def read_donor(r: int) -> tuple[np.ndarray, np.ndarray]:
            rec = ctx.records[r]
            return _read(rec.filepath, rec), rec.xyxy

        img, pasted = paste_defects(img, xyxy, donors, job.n_paste, rng, cfg, read_donor,
                                    exclude_record=job.source, cache=_CUTS)
        if pasted:
            xyxy = np.concatenate([xyxy, np.array([p.box for p in pasted], np.float64)])
            cid = np.concatenate([cid, np.full(len(pasted), job.target, np.int64)])
    return img, xyxy, cid, pasted, aug_seed


def _finish(job: Job, ctx: _Context, pipe: Pipeline, image: np.ndarray, boxes: np.ndarray, kept: np.ndarray,
            cid: np.ndarray, n_source: int, pasted: list, aug_seed: int) -> dict[str, Any]:
    """Write one sample's image and JSON; return what the JSON holds."""
    out = Path(ctx.out_dir)
    data, ext = _encode(image, pipe)
    name = sample_name(job.index)
    img_path = out / IMAGES / f"{name}.{ext}"
    _atomic_write(img_path, data)
    src = ctx.records[job.source]
    kept_pasted = {int(k) - n_source for k in kept if k >= n_source}
    prov = {
        "source": src.filepath, "source_sample_id": src.sample_id,
        "pipeline": ctx.pipeline_name, "pipeline_sha256": ctx.pipeline_sha,
        "seed": ctx.seed, "sample_index": job.index, "sample_seed": aug_seed,
        "target_class": ctx.classes[job.target], "engine": ctx.engine, "device": ctx.device,
        "donors": [{"filepath": ctx.records[p.donor.record].filepath,
                    "sample_id": ctx.records[p.donor.record].sample_id,
                    "box": [float(v) for v in ctx.records[p.donor.record].xyxy[p.donor.box]],
                    "class": ctx.classes[p.donor.class_id], "cut": [int(v) for v in p.source_rect],
                    "pasted_box": [float(v) for v in p.box], "flipped": [bool(v) for v in p.flipped], "kept": i in kept_pasted}
                   for i, p in enumerate(pasted)],
        "boxes_in": n_source + len(pasted), "boxes_out": len(boxes),
    }
    h, w = image.shape[:2]
    entry = {"index": job.index, "file": f"{IMAGES}/{name}.{ext}", "width": int(w), "height": int(h),
             "xyxy": np.asarray(boxes, np.float64).round(4).tolist(),
             "class_id": [int(c) for c in cid[kept]], "split": src.split, "provenance": prov}
    return entry


def _make_one(job: Job) -> dict[str, Any]:
    ctx, pipe = _CTX, _PIPE
    assert ctx is not None and pipe is not None
    img, xyxy, cid, pasted, aug_seed = _prepare(job, ctx, pipe)
    out, boxes, kept = apply(pipe, img, xyxy, aug_seed)
    n_source = len(ctx.records[job.source].xyxy)
    return _finish(job, ctx, pipe, out, boxes, kept, cid, n_source, pasted, aug_seed)


def _write_part(out: Path, entries: list[dict[str, Any]]) -> None:
    if entries:
        idx = [e["index"] for e in entries]
        name = f"part_{min(idx):06d}_{max(idx):06d}.json"
        _atomic_write(out / LABELS / name, json.dumps(entries).encode())


def _make_chunk(jobs: list[Job]) -> list[dict[str, Any]]:
    assert _CTX is not None
    entries = [_make_one(j) for j in jobs]
    _write_part(Path(_CTX.out_dir), entries)
    return entries


def _make_batch(jobs: list[Job], aug: Any) -> list[dict[str, Any]]:
    """The batched path: prepare on the CPU, augment same-size groups on the device, write."""
    ctx, pipe = _CTX, _PIPE
    assert ctx is not None and pipe is not None
    prepared = [(_job, *_prepare(_job, ctx, pipe)) for _job in jobs]
    groups: dict[tuple, list[int]] = {}
    for k, item in enumerate(prepared):
        groups.setdefault(item[1].shape, []).append(k)
    results: dict[int, dict[str, Any]] = {}
    for ks in groups.values():
        imgs = np.stack([prepared[k][1] for k in ks])
        if imgs.ndim == 4:
            imgs = imgs.transpose(0, 3, 1, 2)
        out, boxes, kept = aug(imgs, [prepared[k][2] for k in ks], [prepared[k][5] for k in ks])
        out = out.cpu().numpy()
        for j, k in enumerate(ks):
            job, _img, _xyxy, cid, pasted, aug_seed = prepared[k]
            im = out[j] if out.ndim == 3 else out[j].transpose(1, 2, 0)
            n_source = len(ctx.records[job.source].xyxy)
            results[k] = _finish(job, ctx, pipe, np.ascontiguousarray(im), boxes[j].cpu().numpy().astype(np.float64),
                                 kept[j].cpu().numpy(), cid, n_source, pasted, aug_seed)
    entries = [results[k] for k in range(len(prepared))]
    _write_part(Path(ctx.out_dir), entries)
    return entries


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
) -> RunResult:
    """Generate the samples of ``plan`` with ``pipeline`` into ``out_dir``; see the module doc.

    ``labels`` must be the label set the plan was made from (the originals only: no augmented
    samples). ``workers``: CPU processes (spawned, never forked). ``device``: ``cpu``, or ``cuda``
    for the batched path (``batched`` forces the batched path on any device; the tests run it on
    the CPU). ``done``: indices already written (default: found in ``out_dir``); they are read back,
    not made again. ``progress(done, total)`` is called in this process as samples finish.
    """
    from .gpu import resolve_device  # gpu imports torch only when the batched path runs

    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    dev, _ = resolve_device(device)
    batched = (dev != "cpu") if batched is None else bool(batched)
    engine = "batched" if batched else "albumentations"
    out = Path(out_dir).expanduser().resolve()
    stamp = {"fingerprint": _fingerprint(labels, plan, pipeline), "pipeline": pipeline.name,
             "pipeline_sha256": pipeline.sha256, "seed": plan.seed, "target": plan.target,
             "classes": labels.classes, "jobs": plan.n_samples, "engine": engine}
    _check_out_dir(out, stamp)
    ctx = _context(labels, plan, pipeline, out, engine, dev)
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
                elif workers == 1 or len(todo) < 2 * chunk_size:
                    if _CTX is not ctx:
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
        _CACHE.clear()  # the decoded sources and cuts of this process
        _CUTS.clear()
    samples = [results[i] for i in sorted(results)]
    after = {c: int(n) for c, n in zip(labels.classes, counts + added)}
    res = RunResult(out_dir=out, samples=samples, written=sum(not s.resumed for s in samples),
                    resumed=sum(s.resumed for s in samples), counts_before=before, counts_after=after,
                    target=plan.target, selected=[labels.classes[c] for c in plan.selected],
                    top_up_samples=top_up_n, device=dev)
    if res.short:
        res.notes.append("still under target after top-up: " + ", ".join(f"{c} ({n} short)" for c, n in res.short.items()))
    return res


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
