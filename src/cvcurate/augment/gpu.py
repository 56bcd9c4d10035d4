"""The batched (GPU) path: the same kinds of operations as a pipeline file, on tensors.

Why not kornia, and why this shape:

* no new dependency: torch and torchvision are already pinned; kornia is not installed;
* kornia's ``AugmentationSequential`` with boxes has open bugs exactly where this work lives:
  a batch with a different number of boxes per image under flips, nested sequentials that skip
  the boxes, and boxes edited in place. The tests here check all three on this path: a batch with
  0, 1 and many boxes per image, compositions refused rather than nested, inputs left untouched;
* torchvision's ``transforms.v2`` draws one parameter set per call, so per-sample randomness
  would mean a Python loop of B calls per batch. So each sample's parameters are drawn on the CPU
  from its own seed, every sample's flips and affine become one 3x3 matrix, and the whole batch is
  warped by one ``grid_sample`` and re-lit by broadcasting; boxes are a padded (B, N, 4) tensor
  with a validity mask, transformed through their corners like albumentations' ``largest_box``.
  Boxes come back as ``torchvision.tv_tensors.BoundingBoxes`` (XYXY, the image's canvas size),
  and :func:`.sample_geometry.reference_boxes` computes the same geometry with ``transforms.v2.functional``
  one sample at a time, which the tests compare against (and against albumentations).

Coordinates: boxes use pixel edges at integers (cvcurate's convention, albumentations'
``pascal_voc``); ``grid_sample(align_corners=False)`` normalises the same edge coordinates, so
the image and its boxes move together exactly.

Everything runs on ``device="cpu"`` too (the tests); :func:`cvcurate.device.resolve_device` gives
one clear error for ``cuda`` without CUDA (or falls back to the CPU when asked to). One sample's
geometry and the references the tests compare against: :mod:`.sample_geometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .pipeline import _A, Pipeline
from .sample_geometry import Geometry, geometry_matrix

GEOMETRIC = ("HorizontalFlip", "VerticalFlip", "Affine")
PHOTOMETRIC = ("RandomBrightnessContrast", "GaussNoise", "GaussianBlur")


# ---------------------------------------------------------------------------------------------
# a pipeline as batched operations


@dataclass
class Op:
    """One operation of the batched path, read from a pipeline transform."""

    kind: str
    p: float
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchSpec:
    """A pipeline as batched operations; built by :func:`spec_from_pipeline`."""

    ops: list[Op]
    min_area: float = 0.0
    min_visibility: float = 0.0
    min_width: float = 0.0
    min_height: float = 0.0
    border_mode: int = 0
    fill: float = 0.0


def _pair(v: Any) -> tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    return float(v[0]), float(v[1])


def spec_from_pipeline(pipeline: Pipeline | Any) -> BatchSpec:
    """Read a pipeline's transforms as batched operations; refuse what the batched path lacks."""
    A = _A()
    compose = pipeline.compose if isinstance(pipeline, Pipeline) else pipeline
    label = pipeline.name if isinstance(pipeline, Pipeline) else "pipeline"
    d = A.to_dict(compose)["transform"]
    bp = d.get("bbox_params") or {}
    spec = BatchSpec(ops=[], min_area=float(bp.get("min_area", 0.0)), min_visibility=float(bp.get("min_visibility", 0.0)),
                     min_width=float(bp.get("min_width", 0.0)), min_height=float(bp.get("min_height", 0.0)))
    if float(d.get("p", 1.0)) != 1.0:
        raise ConfigError(f"{label}: the batched path needs the Compose's p to be 1")
    border_seen = None
    for i, t in enumerate(d["transforms"]):
        name = t["__class_fullname__"].rsplit(".", 1)[-1]
        where = f"{label}: {name} at transform.transforms[{i}]"
        p = float(t.get("p", 0.5))
        if name in ("HorizontalFlip", "VerticalFlip"):
            spec.ops.append(Op("hflip" if name == "HorizontalFlip" else "vflip", p))
        elif name == "Affine":
            shear = t.get("shear") or {}
            if any(_pair(v) != (0.0, 0.0) for v in (shear.values() if isinstance(shear, dict) else [shear])):
                raise ConfigError(f"{where}: shear has no batched version")
            if t.get("fit_output"):
                raise ConfigError(f"{where}: fit_output changes the image size: no batched version")
            if t.get("rotate_method", "largest_box") != "largest_box":
                raise ConfigError(f"{where}: only rotate_method largest_box has a batched version")
            bm = int(t.get("border_mode", 0))
            if bm not in (0, 1):
                raise ConfigError(f"{where}: border_mode {bm} has no batched version (use 0, constant, or 1, replicate)")
            if border_seen is not None and border_seen != bm:
                raise ConfigError(f"{where}: all Affine transforms need the same border_mode")
            border_seen = bm
            spec.border_mode = bm
            fill = t.get("fill", 0.0)
            spec.fill = float(fill if isinstance(fill, (int, float)) else fill[0])
            scale = t.get("scale")
            sx, sy = (_pair(scale["x"]), _pair(scale["y"])) if isinstance(scale, dict) else (_pair(scale),) * 2
            tp, tpx = t.get("translate_percent"), t.get("translate_px")
            args = {"sx": sx, "sy": sy, "keep_ratio": bool(t.get("keep_ratio", False)), "rotate": _pair(t.get("rotate", 0.0)),
                    "balanced": bool(t.get("balanced_scale", False)),
                    "interpolation": int(t.get("interpolation", 1))}
            if tpx is not None:
                args["translate_px"] = (_pair(tpx["x"]), _pair(tpx["y"])) if isinstance(tpx, dict) else (_pair(tpx),) * 2
            elif tp is not None:
                args["translate_percent"] = (_pair(tp["x"]), _pair(tp["y"])) if isinstance(tp, dict) else (_pair(tp),) * 2
            if args["interpolation"] not in (0, 1):
                raise ConfigError(f"{where}: interpolation {args['interpolation']} has no batched version (0 nearest, 1 linear)")
            spec.ops.append(Op("affine", p, args))
        elif name == "RandomBrightnessContrast":
            spec.ops.append(Op("brightness_contrast", p, {"brightness": _pair(t["brightness_limit"]),
                                                          "contrast": _pair(t["contrast_limit"]),
                                                          "by_max": bool(t.get("brightness_by_max", True))}))
        elif name == "GaussNoise":
            spec.ops.append(Op("noise", p, {"std": _pair(t["std_range"]), "mean": _pair(t.get("mean_range", (0, 0)))}))
        elif name == "GaussianBlur":
            spec.ops.append(Op("blur", p, {"sigma": _pair(t["sigma_limit"]), "ksize": _pair(t.get("blur_limit", (0, 0)))}))
        else:
            raise ConfigError(f"{where}: no batched version (the batched path has "
                              f"{', '.join(GEOMETRIC + PHOTOMETRIC)}); use --device cpu")
    return spec


@dataclass
class BatchParams:
    """Per-sample random parameters for one batch (numpy, drawn on the CPU from each sample's seed)."""

    geoms: list[Geometry]
    photo: list[list[tuple[str, dict[str, float]]]]  # per sample: applied photometric ops in order
    noise_seeds: list[int]


def sample_params(spec: BatchSpec, seeds: Sequence[int], width: int, height: int) -> BatchParams:
    """Draw each sample's parameters from its own seed (the same whatever the batch it sits in)."""
    geoms, photo, nseeds = [], [], []
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        g = Geometry()
        ph: list[tuple[str, dict[str, float]]] = []
        for op in spec.ops:
            on = rng.random() < op.p
            if op.kind == "hflip" and on:
                g.hflip = not g.hflip
            elif op.kind == "vflip" and on:
                g.vflip = not g.vflip
            elif op.kind == "affine":
                a = op.args
                if "translate_px" in a:
                    tx = int(rng.integers(int(a["translate_px"][0][0]), int(a["translate_px"][0][1]) + 1))
                    ty = int(rng.integers(int(a["translate_px"][1][0]), int(a["translate_px"][1][1]) + 1))
                elif "translate_percent" in a:
                    tx = int(rng.uniform(*a["translate_percent"][0]) * width)
                    ty = int(rng.uniform(*a["translate_percent"][1]) * height)
                else:
                    tx = ty = 0
                sx = float(rng.uniform(*a["sx"]))
                sy = sx if a["keep_ratio"] else float(rng.uniform(*a["sy"]))
                ang = float(rng.uniform(*a["rotate"]))
                if on:
                    if g.has_affine:
                        raise ConfigError("the batched path takes one Affine per pipeline")
                    g.sx, g.sy, g.angle, g.tx, g.ty = sx, sy, ang, tx, ty
            elif op.kind == "brightness_contrast":
                alpha = 1.0 + float(rng.uniform(*op.args["contrast"]))
                beta = float(rng.uniform(*op.args["brightness"]))
                if on:
                    ph.append(("bc", {"alpha": alpha, "beta": beta, "by_max": op.args["by_max"]}))
            elif op.kind == "noise":
                std = float(rng.uniform(*op.args["std"]))
                mean = float(rng.uniform(*op.args["mean"]))
                if on:
                    ph.append(("noise", {"std": std, "mean": mean}))
            elif op.kind == "blur":
                sigma = float(rng.uniform(*op.args["sigma"]))
                if on:
                    ph.append(("blur", {"sigma": sigma, "ksize": op.args["ksize"][1]}))
        geoms.append(g)
        photo.append(ph)
        nseeds.append(int(rng.integers(0, 2**62)))
    return BatchParams(geoms=geoms, photo=photo, noise_seeds=nseeds)


class BatchAugment:
    """Run a :class:`BatchSpec` on a batch of same-size images with any number of boxes each.

    ``images``: uint8 tensor (B, H, W) or (B, C, H, W) (or numpy); ``boxes``: B arrays (Ni, 4)
    xyxy; ``seeds``: one per sample. Returns (uint8 images on ``device``, B ``BoundingBoxes``,
    B int64 tensors of kept input-box indices). Inputs are never modified.
    """

    def __init__(self, spec: BatchSpec, device: str = "cpu") -> None:
        import torch

        self.spec = spec
        self.device = torch.device(device)
        self._gen = torch.Generator(device=self.device)

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline, device: str = "cpu") -> BatchAugment:
        return cls(spec_from_pipeline(pipeline), device)

    # -- images ---------------------------------------------------------------------------

    def _to_float(self, images: Any):
        import torch

        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        squeeze = x.ndim == 3
        if squeeze:
            x = x[:, None]
        return x.to(self.device, non_blocking=True).float(), squeeze

    def _warp(self, x, mats: np.ndarray, interpolation: int = 1):
        """Warp (B, C, H, W) float by per-sample 3x3 matrices (edge coordinates, output <- input)."""
        import torch
        import torch.nn.functional as F

        H, W = x.shape[-2:]
        ident = np.all(np.abs(mats - np.eye(3)[None]) < 1e-12, axis=(1, 2))
        if ident.all():
            return x
        idx = np.flatnonzero(~ident)
        # normalised coords (align_corners=False): n = N @ edge, N = [[2/W,0,-1],[0,2/H,-1]]
        N = np.array([[2.0 / W, 0, -1], [0, 2.0 / H, -1], [0, 0, 1]])
        theta = N @ np.linalg.inv(mats[idx]) @ np.linalg.inv(N)
        theta_t = torch.as_tensor(theta[:, :2], dtype=torch.float32, device=self.device)
        sub = x[torch.as_tensor(idx, device=self.device)]
        fill = self.spec.fill
        if self.spec.border_mode == 0 and fill != 0:
            sub = torch.cat([sub, torch.ones_like(sub[:, :1])], dim=1)
        grid = F.affine_grid(theta_t, list(sub.shape), align_corners=False)
        mode = "nearest" if interpolation == 0 else "bilinear"
        pad = "border" if self.spec.border_mode == 1 else "zeros"
        out = F.grid_sample(sub, grid, mode=mode, padding_mode=pad, align_corners=False)
        if self.spec.border_mode == 0 and fill != 0:
            cover = out[:, -1:]
            out = out[:, :-1] + fill * (1.0 - cover)
        x = x.clone()
        x[torch.as_tensor(idx, device=self.device)] = out
        return x

    def _photometric(self, x, params: BatchParams):
        import torch
        import torch.nn.functional as F

        B, C, H, W = x.shape
        steps = max((len(p) for p in params.photo), default=0)
        if steps == 0:
            return x
        for k in range(steps):
            kinds = [p[k][0] if k < len(p) else None for p in params.photo]
            # brightness / contrast: x * alpha + beta (albumentations' multiply_add), per sample
            alpha = np.ones(B, np.float32)
            beta = np.zeros(B, np.float32)
            noise_idx, blur_idx, sigmas, ksizes = [], [], [], []
            for b, p in enumerate(params.photo):
                if kinds[b] == "bc":
                    a = p[k][1]
                    alpha[b] = a["alpha"]
                    beta[b] = a["beta"] * 255.0 if a["by_max"] else a["beta"] * float(x[b].mean())
                elif kinds[b] == "noise":
                    noise_idx.append(b)
                elif kinds[b] == "blur":
                    blur_idx.append(b)
                    sigmas.append(p[k][1]["sigma"])
                    ksizes.append(p[k][1]["ksize"])
            if (alpha != 1).any() or (beta != 0).any():
                at = torch.as_tensor(alpha, device=self.device).view(B, 1, 1, 1)
                bt = torch.as_tensor(beta, device=self.device).view(B, 1, 1, 1)
                x = (x * at + bt).clamp_(0, 255)
            if noise_idx:
                noise = torch.empty((len(noise_idx), C, H, W), device=self.device)
                for j, b in enumerate(noise_idx):
                    a = params.photo[b][k][1]
                    self._gen.manual_seed(params.noise_seeds[b] + k)
                    noise[j].normal_(mean=a["mean"] * 255.0, std=a["std"] * 255.0, generator=self._gen)
                it = torch.as_tensor(noise_idx, device=self.device)
                x = x.clone()
                x[it] = (x[it] + noise).clamp_(0, 255)
            if blur_idx:
                ks = [int(k_) if k_ >= 3 else int(s * 3.5) * 2 + 1 for k_, s in zip(ksizes, sigmas)]
                K = max(3, max(ks) | 1)
                r = K // 2
                t = torch.arange(-r, r + 1, device=self.device, dtype=torch.float32)
                sig = torch.as_tensor(sigmas, device=self.device, dtype=torch.float32).clamp_min(1e-3)
                ker = torch.exp(-(t[None] ** 2) / (2 * sig[:, None] ** 2))
                ker = ker / ker.sum(dim=1, keepdim=True)  # (n, K)
                n = len(blur_idx)
                it = torch.as_tensor(blur_idx, device=self.device)
                sub = x[it].reshape(1, n * C, H, W)
                kx = ker.repeat_interleave(C, dim=0)
                sub = F.pad(sub, (r, r, 0, 0), mode="reflect")  # cv2's default border, reflect-101
                sub = F.conv2d(sub, kx.view(n * C, 1, 1, K), groups=n * C)
                sub = F.pad(sub, (0, 0, r, r), mode="reflect")
                sub = F.conv2d(sub, kx.view(n * C, 1, K, 1), groups=n * C)
                x = x.clone()
                x[it] = sub.view(n, C, H, W)
        return x

    # -- boxes ----------------------------------------------------------------------------

    def _boxes(self, boxes: Sequence[Any], mats: np.ndarray, H: int, W: int):
        """Transform padded boxes through their corners, clip and filter like albumentations."""
        import torch
        from torchvision import tv_tensors

        B = len(boxes)
        arrs = [np.asarray(b.cpu() if hasattr(b, "cpu") else b, np.float64).reshape(-1, 4) for b in boxes]
        nmax = max((len(a) for a in arrs), default=0)
        if nmax == 0:
            empty = [tv_tensors.BoundingBoxes(torch.zeros((0, 4), device=self.device), format="XYXY", canvas_size=(H, W))
                     for _ in range(B)]
            return empty, [torch.zeros(0, dtype=torch.int64, device=self.device) for _ in range(B)]
        pad = np.zeros((B, nmax, 4), np.float64)
        valid = np.zeros((B, nmax), bool)
        for b, a in enumerate(arrs):
            pad[b, :len(a)] = a
            valid[b, :len(a)] = True
        t = torch.as_tensor(pad, dtype=torch.float64, device=self.device)
        v = torch.as_tensor(valid, device=self.device)
        lim = torch.tensor([W, H, W, H], dtype=torch.float64, device=self.device)
        t = torch.minimum(t.clamp(min=0), lim)  # clip=True: clipped before the transforms
        m = torch.as_tensor(mats, dtype=torch.float64, device=self.device)  # (B, 3, 3)
        x1, y1, x2, y2 = t.unbind(-1)
        cx = torch.stack([x1, x2, x2, x1], dim=-1)  # (B, N, 4)
        cy = torch.stack([y1, y1, y2, y2], dim=-1)
        px = m[:, 0, 0, None, None] * cx + m[:, 0, 1, None, None] * cy + m[:, 0, 2, None, None]
        py = m[:, 1, 0, None, None] * cx + m[:, 1, 1, None, None] * cy + m[:, 1, 2, None, None]
        out = torch.stack([px.amin(-1), py.amin(-1), px.amax(-1), py.amax(-1)], dim=-1)
        area = (out[..., 2] - out[..., 0]) * (out[..., 3] - out[..., 1])
        clipped = torch.minimum(out.clamp(min=0), lim)
        cw = clipped[..., 2] - clipped[..., 0]
        ch = clipped[..., 3] - clipped[..., 1]
        carea = cw * ch
        s = self.spec
        eps = 1e-7
        keep = (v & (area >= eps) & (carea >= s.min_area - eps) & (carea / (area + eps) >= s.min_visibility)
                & (cw >= s.min_width - eps) & (ch >= s.min_height - eps) & (cw > 1e-6) & (ch > 1e-6))
        # the exact box of the visible part of each moved box (not the clipped corner box)
        quads = torch.stack([px, py], dim=-1)  # (B, N, 4, 2)
        exact, nonempty = _quad_bbox_in_image(quads.reshape(-1, 4, 2), W, H)
        exact = exact.reshape(B, -1, 4)
        clipped = torch.where(nonempty.reshape(B, -1, 1), exact, clipped)
        clipped = torch.round(clipped * 1e4) / 1e4
        res, kept = [], []
        for b in range(B):
            kb = keep[b]
            res.append(tv_tensors.BoundingBoxes(clipped[b][kb], format="XYXY", canvas_size=(H, W)))
            kept.append(torch.nonzero(kb).flatten())
        return res, kept

    # -- public ---------------------------------------------------------------------------

    def apply_geometry(self, images: Any, boxes: Sequence[Any], geoms: Sequence[Geometry]):
        """Only the geometry, with given parameters: the counterpart of :func:`.sample_geometry.cpu_geometry`."""
        import torch

        x, squeeze = self._to_float(images)
        B, _, H, W = x.shape
        mats = np.stack([geometry_matrix(g, W, H) for g in geoms]) if B else np.zeros((0, 3, 3))
        interp = next((op.args["interpolation"] for op in self.spec.ops if op.kind == "affine"), 1)
        x = self._warp(x, mats, interp)
        out = x.round_().clamp_(0, 255).to(torch.uint8)
        bxs, kept = self._boxes(boxes, mats, H, W)
        return (out[:, 0] if squeeze else out), bxs, kept

    def __call__(self, images: Any, boxes: Sequence[Any], seeds: Sequence[int]):
        import torch

        x, squeeze = self._to_float(images)
        B, _, H, W = x.shape
        if len(boxes) != B or len(seeds) != B:
            raise ValueError(f"{B} images need {B} box arrays and {B} seeds, got {len(boxes)} and {len(seeds)}")
        params = sample_params(self.spec, seeds, W, H)
        mats = np.stack([geometry_matrix(g, W, H) for g in params.geoms]) if B else np.zeros((0, 3, 3))
        interp = next((op.args["interpolation"] for op in self.spec.ops if op.kind == "affine"), 1)
        x = self._warp(x, mats, interp)
        x = self._photometric(x, params)
        out = x.round_().clamp_(0, 255).to(torch.uint8)
        bxs, kept = self._boxes(boxes, mats, H, W)
        return (out[:, 0] if squeeze else out), bxs, kept


def _quad_bbox_in_image(quads, width: float, height: float):
    """Torch twin of :func:`cvcurate.augment.geometry.quad_bbox_in_image` ((M, 4, 2) quads)."""
    import torch

    eps = 1e-9
    W, H = float(width), float(height)
    n = quads.shape[0]
    cands, valid = [quads], []
    valid.append((quads[..., 0] >= -eps) & (quads[..., 0] <= W + eps) & (quads[..., 1] >= -eps) & (quads[..., 1] <= H + eps))
    img = quads.new_tensor([[0, 0], [W, 0], [W, H], [0, H]])
    a = quads
    b = torch.roll(quads, -1, dims=1)
    e = b - a
    rel = img[None, :, None, :] - a[:, None, :, :]
    cross = e[:, None, :, 0] * rel[..., 1] - e[:, None, :, 1] * rel[..., 0]
    tol = 1e-9 * (e.abs().sum(-1).amax(-1)[:, None, None] + 1.0)
    in_quad = (cross >= -tol).all(-1) | (cross <= tol).all(-1)
    cands.append(img.expand(n, 4, 2))
    valid.append(in_quad)
    for axis, value in ((0, 0.0), (0, W), (1, 0.0), (1, H)):
        d = e[..., axis]
        safe = torch.where(d.abs() < eps, torch.ones_like(d), d)
        t = (value - a[..., axis]) / safe
        p = a + t[..., None] * e
        other = 1 - axis
        lim = H if other == 1 else W
        ok = (d.abs() >= eps) & (t >= -eps) & (t <= 1 + eps) & (p[..., other] >= -eps) & (p[..., other] <= lim + eps)
        p = p.clone()
        p[..., axis] = value
        cands.append(p)
        valid.append(ok)
    pts = torch.cat(cands, dim=1)
    ok = torch.cat(valid, dim=1)
    inf = torch.tensor(float("inf"), dtype=pts.dtype, device=pts.device)
    x1 = torch.where(ok, pts[..., 0], inf).amin(1)
    y1 = torch.where(ok, pts[..., 1], inf).amin(1)
    x2 = torch.where(ok, pts[..., 0], -inf).amax(1)
    y2 = torch.where(ok, pts[..., 1], -inf).amax(1)
    nonempty = ok.any(1)
    out = torch.stack([x1, y1, x2, y2], dim=1)
    lim = quads.new_tensor([W, H, W, H])
    out = torch.minimum(torch.where(nonempty[:, None], out, torch.zeros_like(out)).clamp(min=0), lim)
    return out, nonempty
