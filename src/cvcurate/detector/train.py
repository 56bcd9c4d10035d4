"""Training from scratch and k-fold out-of-fold predictions.

Seeded (torch, numpy, data order, augmentation), AdamW (or SGD) with a linear warm-up and a
cosine decay to 0, gradient clipping, an optional exponential moving average of the weights (EMA),
progress on stderr through :func:`cvcurate.progress.track`. With a ``state_path`` the whole training
state (weights, EMA, optimizer, schedule, every random generator) is saved after each epoch and a
later call with the same path, settings and data resumes after the last finished epoch, giving the
same weights as an uninterrupted run (without a time budget).

``init``: start from another checkpoint's weights instead of from scratch (fine-tuning): every
tensor of the same architecture is copied; the class layer's rows are matched by class name, and a
class the checkpoint does not know starts fresh (a new head for the user's classes). The result
counts the images the starting weights were trained on as its own (the in-sample guard sees them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..progress import track
from ..types import Annotations, LabelSet
from . import data as D
from .checkpoint import Checkpoint
from .config import DetectorConfig, ModelConfig
from .model import build_model, resolve_device


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: float, warmup: int, total: int) -> float:
    if warmup > 0 and step < warmup:
        return 0.001 + (1 - 0.001) * step / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class _Ema:
    """Exponential moving average of a model's weights and buffers. The decay ramps up as
    ``decay * (1 - exp(-updates / 2000))`` (as YOLOv5 does), so early, poor weights fade fast."""

    RAMP = 2000.0

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.RAMP))
        for k, v in model.state_dict().items():
            e = self.state[k]
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)


ARCH_FIELDS = ("arch", "input_size", "stem_channels", "widths", "blocks", "fpn_channels", "head_convs", "extra_levels")
CLS_LAYER = "head.classification_head.cls_logits."


def weights_fingerprint(ckpt: Checkpoint) -> str:
    """SHA-256 of a checkpoint's weights (names, shapes and bytes), to tell starting points apart."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(ckpt.state_dict):
        v = ckpt.state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype}".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def init_weights(model: torch.nn.Module, init: Checkpoint, classes: Sequence[str], mc: ModelConfig) -> dict:
    """Copy ``init``'s weights into ``model`` (built for ``classes``): every tensor of the same name
    and shape; the class layer row by row for the classes both know. Returns what was done."""
    theirs = init.model_cfg
    differ = [f for f in ARCH_FIELDS if getattr(theirs, f) != getattr(mc, f)]
    if differ:
        raise InputError("the starting weights have another architecture than the detector config ("
                         + ", ".join(f"{f} {getattr(theirs, f)} vs {getattr(mc, f)}" for f in differ)
                         + "): use the checkpoint's model settings in the config, or train from scratch")
    own = model.state_dict()
    shared = [c for c in classes if c in init.classes]
    rows_to = torch.tensor([list(classes).index(c) for c in shared], dtype=torch.long)
    rows_from = torch.tensor([init.classes.index(c) for c in shared], dtype=torch.long)
    copied = 0
    with torch.no_grad():
        for k, v in init.state_dict.items():
            if k not in own:
                continue
            if k.startswith(CLS_LAYER):
                if len(shared):
                    own[k][rows_to] = v[rows_from].to(own[k].dtype)
                copied += 1
            elif own[k].shape == v.shape:
                own[k].copy_(v)
                copied += 1
    model.load_state_dict(own)
    return {"from": str(init._source or "weights"), "weights_sha256": weights_fingerprint(init),
            "tensors_copied": copied, "tensors": len(own), "classes_kept": shared,
            "classes_new": [c for c in classes if c not in init.classes]}


# train settings added after states were first saved: left out of the key while off, so those states resume
_NEWER_OFF = ("repeat_threshold", "mosaic")


def _state_key(cfg: DetectorConfig, labels: LabelSet, init_sha256: str | None = None) -> dict:
    """What a saved training state must match to be resumed: the settings that shape the run
    (not the thread count or a time budget), the training data and the starting weights."""
    # init and finetune_epochs are covered by the weights' hash and the epochs (states saved before they existed
    # still resume)
    tc = {k: v for k, v in dataclasses.asdict(cfg.train).items()
          if k not in ("num_threads", "time_budget_min", "folds", "init", "finetune_epochs")
          and not (k in _NEWER_OFF and not v)}
    key = {"model": dataclasses.asdict(cfg.model), "train": tc, "data_sha256": D.data_fingerprint(labels),
           "classes": list(labels.classes)}
    if init_sha256 is not None:
        key["init_sha256"] = init_sha256
    return key


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # a kill mid-save leaves the previous epoch's state intact
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_state(path: Path, key: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written above
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise InputError(f"cannot resume from {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         f" (delete it to start over)") from None
    if not isinstance(state, dict) or state.get("key") != key:
        raise InputError(f"the training state in {path} was saved with other settings or data: "
                         f"delete it to start over, or give another path")
    return state


def train(labels: LabelSet, cfg: DetectorConfig | None = None, device: str = "cpu", progress: bool = True,
          *, log: Callable[[str], None] | None = None, description: str = "training",
          state_path: str | Path | None = None,
          on_epoch: Callable[[int, Callable[[], Checkpoint]], None] | None = None,
          init: Checkpoint | None = None) -> Checkpoint:
    """Train the detector on every record of ``labels``, from scratch or from ``init``'s weights
    (see the module's docstring); return a :class:`Checkpoint`.

    ``metrics`` of the checkpoint hold the mean loss per epoch (``train_loss_per_epoch``),
    ``extra`` the loss of every step and the wall time. ``log`` receives one line per epoch.
    ``state_path``: save the training state there after every epoch and resume from it (see the
    module's docstring). ``on_epoch(epoch, snapshot)`` runs after each epoch (1-based) and its
    state save; ``snapshot()`` builds a Checkpoint of the weights so far (the EMA's when on).
    With ``train.ema`` > 0 the returned weights are the moving average.
    """
    cfg = cfg or DetectorConfig()
    tc, mc = cfg.train, cfg.model
    dev = resolve_device(device)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    labels.validate()
    if not labels.records:
        raise InputError("no images to train on")
    ds = D.DetectionDataset(labels.records, mc.input_size, augment=True, hflip=tc.hflip, vflip=tc.vflip,
                            brightness=tc.brightness, contrast=tc.contrast,
                            scale_jitter=tc.scale_jitter, rot90=tc.rot90, noise=tc.noise, blur=tc.blur,
                            mosaic=tc.mosaic, seed=tc.seed)
    if sum(len(t[1]) for t in ds.targets) == 0:
        raise InputError(f"none of the {len(labels.records)} training images has a usable box")
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    model = build_model(mc, len(labels.classes))
    init_info = init_weights(model, init, labels.classes, mc) if init is not None else None
    if init_info is not None and log:
        log(f"starting from {init_info['from']}: {init_info['tensors_copied']} of {init_info['tensors']} weight "
            f"tensors copied" + (f"; new classes {init_info['classes_new']} start fresh"
                                 if init_info["classes_new"] else ""))
    model = model.to(dev)
    gen = torch.Generator().manual_seed(tc.seed)
    bs = min(tc.batch_size, len(ds))
    sampler = None
    if tc.repeat_threshold > 0:  # rare classes' images drawn more often, as many draws an epoch as images
        rf = D.repeat_factors([t[1] for t in ds.targets], len(labels.classes), tc.repeat_threshold)
        sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(rf, dtype=torch.double), len(ds),
                                                         replacement=True, generator=gen)
        if log:
            log(f"repeat-factor sampling (t {tc.repeat_threshold:g}): {int((rf > 1).sum())} of {len(rf)} images "
                f"drawn up to {rf.max():.2f}x as often")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=bs, shuffle=sampler is None, sampler=sampler, collate_fn=D.collate, num_workers=0,
        drop_last=len(ds) >= 2 * bs, generator=gen if sampler is None else None)
    steps_per_epoch = len(loader)
    total = tc.epochs * steps_per_epoch
    if tc.max_steps:
        total = min(total, tc.max_steps)
    groups = _param_groups(model, tc.weight_decay)
    if tc.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=tc.lr)
    else:
        opt = torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=True)
    ema = _Ema(model, tc.ema) if tc.ema > 0 else None
    warmup = int(round(tc.warmup_epochs * steps_per_epoch))
    budget = tc.time_budget_min * 60.0
    t_start = time.time()
    timed_out = False
    time_driven = [0]  # steps whose learning rate followed the clock rather than the step count

    def progress_step(s: int) -> float:
        # with a time budget the schedule runs on whichever is further: steps or wall time
        if budget > 0 and s >= warmup:
            by_time = warmup + (time.time() - t_start) / budget * (total - warmup)
            if by_time > s:
                time_driven[0] += 1
                return by_time
        return float(s)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(progress_step(s), warmup, total))
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    epoch_times: list[float] = []
    start_epoch, start_step, skipped = 0, 0, 0
    spath = Path(state_path) if state_path is not None else None
    key = _state_key(cfg, labels, init_info and init_info["weights_sha256"]) if spath is not None else None
    saved = _load_state(spath, key) if spath is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        if ema is not None:
            ema.state, ema.updates = saved["ema"], saved["ema_updates"]
        gen.set_state(saved["loader_rng"])
        ds.rng.bit_generator.state = saved["data_rng"]
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        start_epoch, start_step, skipped = saved["epochs_done"], saved["steps"], saved["skipped"]
        step_losses, epoch_losses, epoch_times = saved["step_losses"], saved["epoch_losses"], saved["epoch_times"]
        t_start -= saved["elapsed"]
        time_driven[0] = saved["time_driven"]
        if log:
            log(f"resuming from {spath}: {start_epoch} of {tc.epochs} epochs done")

    def batches():
        # an epoch is closed (and its state saved) here, after its last step and before the next
        # epoch's shuffle and augmentation draw from the random generators
        nonlocal timed_out
        step = start_step
        for epoch in range(start_epoch, tc.epochs):
            for batch in loader:
                if step >= total or (budget > 0 and time.time() - t_start >= budget):
                    timed_out = step < total
                    close_epoch(epoch)
                    return
                yield batch
                step += 1
            close_epoch(epoch)

    def weights() -> dict[str, torch.Tensor]:
        src = ema.state if ema is not None else model.state_dict()
        return {k: v.detach().cpu().clone() for k, v in src.items()}

    def snapshot() -> Checkpoint:
        ckpt = Checkpoint(state_dict=weights(), classes=list(labels.classes), arch=mc.arch,
                          model_config=dataclasses.asdict(mc), input_size=mc.input_size,
                          data_sha256=D.data_fingerprint(labels), seed=tc.seed,
                          metrics={"train_loss_per_epoch": list(epoch_losses)},
                          train_config=dataclasses.asdict(tc))
        if init_info is not None:
            ckpt.extra["init"] = init_info
        return ckpt

    model.train()
    acc, n_acc = 0.0, 0
    epoch_t0 = time.time()

    def close_epoch(e: int) -> None:
        nonlocal acc, n_acc, epoch_t0
        if n_acc:
            epoch_losses.append(acc / n_acc)
            epoch_times.append(time.time() - epoch_t0)
            if log:
                log(f"epoch {e + 1}/{tc.epochs} loss {acc / n_acc:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                    f"{epoch_times[-1]:.1f}s")
            if spath is not None:
                _save_state(spath, {
                    "key": key, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "ema": ema.state if ema is not None else None, "ema_updates": ema.updates if ema else 0,
                    "loader_rng": gen.get_state(), "data_rng": ds.rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                    "epochs_done": e + 1, "steps": len(step_losses) + skipped, "skipped": skipped,
                    "step_losses": step_losses, "epoch_losses": epoch_losses, "epoch_times": epoch_times,
                    "elapsed": time.time() - t_start, "time_driven": time_driven[0]})
            if on_epoch is not None:
                model.eval()
                on_epoch(e + 1, snapshot)
                model.train()
        acc, n_acc, epoch_t0 = 0.0, 0, time.time()

    for images, targets in track(batches(), description=description, total=total - start_step, enabled=progress):
        images = [im.to(dev) for im in images]
        targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            skipped += 1
            opt.zero_grad(set_to_none=True)
            sched.step()
            if skipped > 10:
                raise ConfigError("training diverged (non-finite loss in more than 10 steps): lower train.lr")
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        v = float(loss.detach())
        step_losses.append(v)
        acc += v
        n_acc += 1
    model.eval()
    ckpt = snapshot()
    seen = set(D.image_digests([r.filepath for r in labels.records])) - {""}
    if init is not None:
        seen |= init.train_digests() or set()  # what the starting weights saw, this model saw too
    ckpt.extra = {**ckpt.extra, "step_losses": step_losses, "train_seconds": time.time() - t_start,
                  "seconds_per_epoch": epoch_times, "train_images": len(labels.records), "steps": len(step_losses), "skipped_steps": skipped,
                  "planned_steps": total, "stopped_by_time_budget": timed_out, "epochs_done": len(epoch_losses),
                  "time_driven_lr_steps": time_driven[0],  # > 0: the run is not bit-reproducible
                  "device": str(dev), "resumed_at_epoch": start_epoch,
                  "train_image_sha256": sorted(seen)}
    model = model.cpu()
    if ema is not None:
        model.load_state_dict(ckpt.state_dict)
    ckpt._model = model
    return ckpt


def kfold_predict(labels: LabelSet, k: int, cfg: DetectorConfig | None = None, device: str = "cpu",
                  progress: bool = True, *, return_folds: bool = False,
                  log: Callable[[str], None] | None = None, state_dir: str | Path | None = None,
                  init: Checkpoint | None = None, flip_check: bool = False):
    """Out-of-fold predictions: every image is predicted by a model that never trained on it.

    Images are dealt to ``k`` folds by :func:`~cvcurate.detector.data.kfold_assign` (seeded with
    ``cfg.train.seed``); for each fold a fresh model is trained on the other ``k - 1`` folds and
    predicts this one. Returns one :class:`Annotations` (with confidences) per record, in order,
    and the fold of each image too when ``return_folds``.

    ``state_dir``: a finished fold's predictions are saved there, and a fold in training saves its
    state after every epoch (:func:`train`'s ``state_path``); a later call with the same labels,
    settings and ``k`` keeps the finished folds and resumes the one that was training, with the
    same result as an uninterrupted run (without a time budget).

    ``init``: every fold starts from these weights (fine-tuning, see :func:`train`); refused when
    they were trained on any image of ``labels``, since the folds' predictions would then be
    in-sample. ``flip_check``: each fold's predictions carry the flip check (:mod:`.flipcheck`).
    """
    from ..errors import kept
    from .predict import predict

    cfg = cfg or DetectorConfig()
    if init is not None:
        check_init_unseen(init, labels)
    folds = D.kfold_assign(len(labels.records), k, cfg.train.seed)
    out: list[Annotations | None] = [None] * len(labels.records)
    sdir = Path(state_dir) if state_dir is not None else None
    key = ({**_state_key(cfg, labels, weights_fingerprint(init) if init is not None else None), "folds": k,
            **({"flip_check": True} if flip_check else {})} if sdir is not None else None)
    trained_seconds: list[float] = []  # folds trained in this call, for the time left
    for f in range(k):
        train_idx = np.flatnonzero(folds != f)
        test_idx = np.flatnonzero(folds == f)
        done = sdir / f"fold{f + 1}of{k}.pt" if sdir is not None else None
        saved = _load_state(done, key) if done is not None else None
        if saved is not None:
            preds = [Annotations(x, c, p, data=dict(d[0] if d else {})) for x, c, p, *d in saved["preds"]]
            if log:
                log(f"fold {f + 1}/{k}: kept from an earlier run ({done})")
        else:
            if log:
                log(f"fold {f + 1}/{k}: training on {len(train_idx)} images, predicting {len(test_idx)}")
            fold_state = sdir / f"fold{f + 1}of{k}.state.pt" if sdir is not None else None
            t0 = time.time()
            ckpt = train(D.subset(labels, train_idx), cfg, device=device, progress=progress, log=log,
                         description=f"fold {f + 1}/{k}", state_path=fold_state, init=init)
            preds = predict(ckpt, [labels.records[i] for i in test_idx], batch_size=cfg.predict.batch_size,
                            device=device, flip_check=flip_check)
            trained_seconds.append(time.time() - t0)
            if log:
                left = (k - f - 1) * float(np.mean(trained_seconds))
                log(f"fold {f + 1}/{k} done in {trained_seconds[-1] / 60:.1f} min"
                    + (f"; about {left / 60:.0f} min left for the other {k - f - 1}" if f + 1 < k else ""))
            if done is not None:
                _save_state(done, {"key": key, "preds": [(p.xyxy, p.class_id, p.confidence, p.data) for p in preds]})
                fold_state.unlink(missing_ok=True)
                kept(f"the finished folds in {sdir} (the same command resumes after them)")
        for i, p in zip(test_idx, preds):
            out[i] = p
    result = [p if p is not None else Annotations.empty(with_confidence=True) for p in out]
    return (result, folds) if return_folds else result


def check_init_unseen(init: Checkpoint, labels: LabelSet) -> None:
    """Raise :class:`InputError` when ``init`` was trained on images of ``labels`` (same bytes)."""
    inside = init.images_seen([r.filepath for r in labels.records])
    if inside:
        raise InputError(f"the starting weights {init._source or ''} were trained on {inside} of these "
                         f"{len(labels.records)} images, so out-of-fold predictions from them would be in-sample: "
                         f"start from weights that never saw this dataset (--init synth) or from scratch")


def split_records(labels: LabelSet, split: str | None) -> LabelSet:
    """Records of one split (all records when the dataset has no splits or ``split`` is None)."""
    if split is None or not any(r.split for r in labels.records):
        return labels
    recs = [r for r in labels.records if r.split == split]
    if not recs:
        found = sorted({r.split for r in labels.records if r.split})
        raise InputError(f"no images in split {split!r} (splits: {', '.join(found)})")
    return LabelSet(classes=list(labels.classes), records=recs)


__all__: Sequence[str] = ["train", "kfold_predict", "split_records", "init_weights", "check_init_unseen",
                          "weights_fingerprint"]
