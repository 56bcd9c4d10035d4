"""Where the per-image batch functions run: in this process (``local``) or on Ray (``ray``).

Both engines run the same pure batch functions: :func:`cvcurate.detector.predict.predict` over
batches of image records, :func:`cvcurate.scoring.images.image_features` over chunks of paths and
the augmentation workers over chunks of jobs. ``local`` calls them as the stages always did. ``ray``
cuts the input into shards (one shard = one local batch or chunk, so each call sees exactly the
input it sees locally), runs them on Ray workers (Ray Data ``map_batches``: an actor pool for
predict, whose workers hold the model and get the images decoded and resized by tasks of a stage
before them, tasks for the pixel features; augment's rounds go to a
:class:`Pool` of actors that hold the run's context) and brings every shard's result back to the
driver, which puts them back in input order by their index. Nothing here writes to the
store: the stages write once, on the driver, after every result is in, so a shard that Ray retries
after a worker died is never written twice, and an interrupt leaves the store as it was.

Ray is started here (``ray.init(address="local", num_cpus=workers)``: all cores by default) unless
``RAY_ADDRESS`` names a cluster, which ``ray.init()`` then joins; it is shut down at the end only
when this process started it. Checked against Ray 2.60: ``map_batches(compute=ActorPoolStrategy(
size=n) | TaskPoolStrategy(size=n), num_gpus=...)``; ``max_restarts`` / ``max_task_retries`` still
go through its (deprecated) ``**ray_remote_args``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .device import cores as _cores
from .errors import InputError, notice
from .progress import Counter

ENGINES = ("local", "ray")
RETRIES = 3  # restarts of a Ray worker that died, and retries of the shard it held
ROWS_PER_BLOCK = 8  # shards per Ray Data block (a task's or an actor call's input)
RAY_MISSING = "--engine ray needs Ray, which is not installed: install cvcurate[ray] (pip install 'cvcurate[ray]')"

# a worker's setup: called once per Ray worker (actors) or per call (tasks); returns the function
# that turns one shard into its result
Setup = Callable[[], Callable[[Any], Any]]


@dataclass(frozen=True)
class Engine:
    """``kind``: local or ray. ``workers`` (ray): the CPUs of a local Ray instance and the size of
    the worker pool (default: all cores, or the cluster's CPUs with ``RAY_ADDRESS``)."""

    kind: str = "local"
    workers: int | None = None

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def session(self) -> contextlib.AbstractContextManager:
        return session(self)

    def pool_size(self, gpus: bool = False, cpus: int = 1) -> int:
        """Workers of a pool on the running Ray: ``workers``, at most what the cluster holds (its
        GPUs, or its CPUs over ``cpus`` per worker); before Ray runs: ``workers``, else the cores."""
        import ray

        if not ray.is_initialized():
            return self.workers or max(1, _cores() // cpus)
        res = ray.cluster_resources()
        have = int(res.get("GPU", 0) if gpus else res.get("CPU", 1) // max(1, cpus))
        return max(1, min(self.workers or have, have or 1))

    def stream(self, items: Sequence[Any], setup: Setup, *, actors: bool = True, gpus: bool = False,
               cpus: int = 1, prepare: Setup | None = None) -> Iterator[tuple[int, Any]]:
        """(position, result) of each item as its shard comes back (any order; see :func:`_stream`)."""
        return _stream(self, items, setup, actors=actors, gpus=gpus, cpus=cpus, prepare=prepare)

    def pool(self, setup: Setup, *, gpus: bool = False) -> "Pool":
        """Ray actors that each ran ``setup`` once, kept for several rounds of shards (close it)."""
        return Pool(self, setup, gpus=gpus)

    def map(self, items: Sequence[Any], setup: Setup, *, actors: bool = True, gpus: bool = False, cpus: int = 1,
            done: Callable[[int, Any], None] | None = None, prepare: Setup | None = None) -> list[Any]:
        """Every item's result, in the order of ``items``; ``done(position, result)`` as they come;
        ``prepare``: a stage of tasks each shard goes through first (see :func:`_stream`)."""
        out: dict[int, Any] = {}
        with contextlib.closing(self.stream(items, setup, actors=actors, gpus=gpus, cpus=cpus,
                                            prepare=prepare)) as results:
            for k, r in results:
                if k not in out and done is not None:
                    done(k, r)
                out[k] = r
        missing = [k for k in range(len(items)) if k not in out]
        if missing:  # pragma: no cover - Ray returns every row or raises
            raise RuntimeError(f"the Ray engine lost {len(missing)} of {len(items)} shards (first: {missing[0]})")
        return [out[k] for k in range(len(items))]


LOCAL = Engine()


def get_engine(kind: str | Engine | None = "local", workers: int | None = None) -> Engine:
    """The engine of ``--engine`` / ``--workers``; one clear line when Ray is asked for and missing."""
    if isinstance(kind, Engine):
        return kind
    kind = (kind or "local").strip().lower()
    if kind not in ENGINES:
        raise InputError(f"unknown --engine {kind!r}: use local or ray")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if kind == "ray":
        import importlib

        try:
            importlib.import_module("ray.data")
        except ImportError:
            raise InputError(RAY_MISSING) from None
    return Engine(kind, workers)


@contextlib.contextmanager
def session(engine: Engine) -> Iterator[None]:
    """Ray running for the block: joined when it is (a caller's session), else started here, and
    then shut down at the end (its workers stop with it, after an interrupt too)."""
    if not engine.is_ray:
        yield
        return
    import ray

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if os.environ.get("RAY_ADDRESS"):
            ray.init(**kw)  # the cluster RAY_ADDRESS names
        else:
            ray.init(address="local", num_cpus=engine.workers or _cores(), **kw)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# Ray Data: shards in, (index, result) out


def _run(handle: Callable[[Any], Any], batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each row's shard through ``handle``; results pickled (exact arrays, any Python object), in
    the column a next stage reads its input from."""
    out = np.empty(len(batch["i"]), dtype=object)
    for j, payload in enumerate(batch["item"]):
        out[j] = pickle.dumps(handle(pickle.loads(payload)), protocol=pickle.HIGHEST_PROTOCOL)
    return {"i": np.asarray(batch["i"], np.int64), "item": out}


class _Worker:
    """An actor of the pool: the setup runs once per worker (and again after a restart)."""

    def __init__(self, setup: Setup) -> None:
        self._handle = setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _run(self._handle, batch)

    def shard(self, k: int, item: Any) -> tuple[int, Any]:  # a :class:`Pool`'s call
        return k, self._handle(item)


class Pool:
    """A fixed pool of Ray actors (:class:`_Worker`), each set up once, that takes rounds of shards
    and returns them as they finish: for work that comes in rounds (augment's top-ups), where a
    Ray Data pipeline per round would start its workers again. A dead actor is restarted and its
    shard retried (up to :data:`RETRIES` times). :meth:`close` ends the actors (and Ray, when the
    pool started it)."""

    def __init__(self, engine: Engine, setup: Setup, *, gpus: bool = False) -> None:
        import ray
        from ray.util import ActorPool

        self._session = session(engine)
        self._session.__enter__()
        try:
            self.size = engine.pool_size(gpus)
            cls = ray.remote(_Worker).options(num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=RETRIES,
                                              max_task_retries=RETRIES)
            self._setup = ray.put(setup)  # held while the pool lives: a restarted actor reads it again
            self._actors = [cls.remote(self._setup) for _ in range(self.size)]
            self._pool = ActorPool(self._actors)
        except BaseException:
            self._session.__exit__(None, None, None)
            raise

    def stream(self, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """(position, result) of each item, in the order they finish."""
        yield from self._pool.map_unordered(lambda actor, ki: actor.shard.remote(*ki), list(enumerate(items)))

    def close(self) -> None:
        import ray

        for a in self._actors:
            ray.kill(a)
        self._actors = []
        self._session.__exit__(None, None, None)


def _task(batch: dict[str, np.ndarray], setup: Setup) -> dict[str, np.ndarray]:
    return _run(setup(), batch)


def _quiet_ray_data() -> None:
    """Our own progress on the driver replaces Ray Data's bars and start-up lines."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _stream(engine: Engine, items: Sequence[Any], setup: Setup, *, actors: bool, gpus: bool, cpus: int = 1,
            prepare: Setup | None = None) -> Iterator[tuple[int, Any]]:
    """Run ``setup()(item)`` for every item on Ray Data, one row per item (a shard), and yield
    (position, result) as blocks come back. ``actors``: a fixed pool of workers that each run
    ``setup`` once (a dead one is restarted and its shard retried, up to :data:`RETRIES` times);
    else tasks. ``gpus``: one GPU per worker; ``cpus``: CPUs per worker.

    ``prepare``: a stage of its own before it (tasks, retried like them): each shard becomes
    ``prepare()(item)`` there, and ``setup``'s workers get that (predict: the images decoded and
    resized on tasks, the actors only run the network). The tasks take one CPU each out of what
    the workers leave free; where they leave none (a machine of two cores, whose one actor holds
    both), one task at a time shares the workers' cores, as the local engine's reading thread does."""
    if not items:
        return
    import ray.data

    with session(engine):
        _quiet_ray_data()
        n = len(items)
        size = min(engine.pool_size(gpus, cpus), n)
        rows = [{"i": k, "item": pickle.dumps(it, protocol=pickle.HIGHEST_PROTOCOL)} for k, it in enumerate(items)]
        blocks = min(n, max(4 * size, -(-n // ROWS_PER_BLOCK)))  # enough blocks to keep every worker busy
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        common: dict[str, Any] = {"batch_size": 1, "batch_format": "numpy", "num_cpus": cpus,
                                  "num_gpus": 1 if gpus else None}
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts / max_task_retries only through **ray_remote_args
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
            if prepare is not None:
                free = int(ray.cluster_resources().get("CPU", 1)) - (size if gpus else size * cpus)
                ds = ds.map_batches(_task, fn_args=(prepare,), compute=ray.data.TaskPoolStrategy(size=max(1, free)),
                                    max_retries=RETRIES, batch_size=1, batch_format="numpy",
                                    num_cpus=1 if free >= 1 else 0)
            if actors:
                ds = ds.map_batches(_Worker, fn_constructor_args=(setup,),
                                    compute=ray.data.ActorPoolStrategy(size=size),
                                    max_restarts=RETRIES, max_task_retries=RETRIES, **common)
            else:
                ds = ds.map_batches(_task, fn_args=(setup,), compute=ray.data.TaskPoolStrategy(size=size),
                                    max_retries=RETRIES, **common)
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
        try:
            for b in batches:
                for k, payload in zip(b["i"].tolist(), b["item"]):
                    yield int(k), pickle.loads(payload)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops the Ray Data execution (an interrupt, an error)


# ---------------------------------------------------------------------------------------------
# the batch functions of the stages, on either engine


def _predictor(ckpt: Any, device: str, threads: int, runtime: str = "torch", flip_check: bool = False
               ) -> Callable[[Any], Any]:
    """A Ray worker's setup for predict: torch's threads as in the local path, the model built
    once, then whole local batches, decoded by :func:`_decoder`'s tasks."""
    import torch

    from .detector.predict import predict_decoded

    torch.set_num_threads(threads)
    ckpt.model()  # built and cached on the checkpoint, once per worker
    return lambda shard: predict_decoded(ckpt, shard[0], shard[1], device=device, runtime=runtime,
                                         flip_check=flip_check)


def _decoder(size: int, skip_unreadable: bool = False) -> Callable[[Any], Any]:
    """A task's setup for predict's decode stage: a shard of records -> (records, their images)."""
    from .detector.images import decode

    return lambda records: (records, decode(records, size, skip_unreadable))


def predict(engine: Engine, ckpt: Any, records: Sequence[Any], batch_size: int = 16, device: str = "cpu",
            progress: bool = False, runtime: str = "torch", skip_unreadable: bool = False,
            flip_check: bool = False) -> list[Any]:
    """:func:`cvcurate.detector.predict.predict` of every record (boxes in the checkpoint's class
    ids), in record order. On Ray each shard is one batch of the local path (the same images
    together), decoded and resized by a task of a stage of its own, then predicted by an actor
    that loaded the model once: one GPU per actor when
    ``device`` is cuda and the cluster has GPUs; else as many CPUs per actor as torch has threads
    here, and it runs torch with that many threads (a convolution's sums depend on the thread
    count: so each actor's numbers are the local path's, bit for bit, on the same hardware)."""
    if not engine.is_ray:
        from .detector.predict import predict as run

        return run(ckpt, records, batch_size, device, progress=progress, runtime=runtime,
                   skip_unreadable=skip_unreadable, flip_check=flip_check)
    import torch

    from .types import ImageRecord

    records = list(records)
    slim = [ImageRecord(r.filepath, r.width, r.height) for r in records]  # what predict reads
    shards = [slim[i:i + batch_size] for i in range(0, len(slim), batch_size)]
    ship = replace(ckpt, _model=None)  # weights only: each worker builds its model
    with session(engine):
        import ray

        gpus = device.startswith("cuda") and ray.cluster_resources().get("GPU", 0) > 0
        if device.startswith("cuda") and not gpus:  # as the local path falls back: one line, then the CPU
            notice(f"warning: --device {device}: the Ray cluster has no GPU: predicting on the CPU instead")
        dev = "cuda" if gpus else "cpu"  # a worker sees its one GPU as cuda:0
        threads = torch.get_num_threads()
        cpus = 1 if gpus else max(1, min(threads, int(ray.cluster_resources().get("CPU", 1))))
        with Counter("predicting images", enabled=progress) as update:
            done = [0]

            def count(_: int, anns: list) -> None:
                done[0] += len(anns)
                update(done[0], len(records))

            parts = engine.map(shards, partial(_predictor, ship, dev, threads, runtime, flip_check), actors=True,
                               gpus=gpus, cpus=cpus, done=count,
                               prepare=partial(_decoder, ckpt.input_size, skip_unreadable))
    return [a for part in parts for a in part]


def _measurer(cfg: Any) -> Callable[[Any], Any]:
    from .scoring.images import image_features as run

    return partial(run, cfg=cfg)


def image_features(engine: Engine, paths: Sequence[str], cfg: Any = None, progress: bool = False) -> Any:
    """:func:`cvcurate.scoring.images.image_features` of ``paths``. On Ray: one task per chunk of
    ``cfg.chunk_size`` paths (one thread each), the chunks' arrays concatenated in order. Every
    feature is a function of its own image alone (the thumbnails are normalised row by row), so
    the arrays are the local ones, bit for bit."""
    from .scoring.images import ImageConfig, ImageFeatures
    from .scoring.images import image_features as run

    if not engine.is_ray or not paths:
        return run(paths, cfg, progress=progress)
    cfg = cfg or ImageConfig()
    step = max(1, cfg.chunk_size)
    shards = [list(paths[i:i + step]) for i in range(0, len(paths), step)]
    with Counter("reading pixels", enabled=progress) as update:
        done = [0]

        def count(_: int, feats: Any) -> None:
            done[0] += len(feats.ok)
            update(done[0], len(paths))

        parts = engine.map(shards, partial(_measurer, replace(cfg, workers=1)), actors=False, done=count)
    return ImageFeatures(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ImageFeatures)})
