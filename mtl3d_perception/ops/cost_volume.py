"""The `mtl3d::cost_volume` custom op: validation, backend dispatch, fake and autograd registration.

`cost_volume()` is the public entry point. It checks shapes, brings single-source inputs to the
multi-source layout, resolves `backend="auto"` (Triton for CUDA tensors; for CPU ones the correlation
matrix on small maps, else the PyTorch reference) and calls the op. The op is opaque to torch.compile
(fake registration gives the output shape), and its backward is a second opaque op, so `torch.compile(fullgraph=True)` works with both
backends and the Triton interpreter is never traced.

References: torch.library docs ("Python custom operators"); the op/launcher/autograd split follows
fla-org/flash-linear-attention `fla/ops/utils/pooling.py`.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from mtl3d_perception.ops.cost_volume_correlation import cost_volume_correlation, use_correlation
from mtl3d_perception.ops.cost_volume_reference import (
    compute_dtype,
    cost_volume_reference,
    cost_volume_reference_backward,
    projection_coefficients,
)

BACKENDS = ("auto", "reference", "correlation", "triton")
# Checked once, without importing triton (its import is slow and reads TRITON_INTERPRET).
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_log = logging.getLogger(__name__)
_FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _triton_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    try:
        from mtl3d_perception.ops import cost_volume_triton
    except ImportError:
        return False
    return cost_volume_triton.INTERPRETED


@torch.library.custom_op("mtl3d::cost_volume", mutates_args=())
def _cost_volume_op(
    ref: torch.Tensor,
    src: torch.Tensor,
    K: torch.Tensor,
    T_src_ref: torch.Tensor,
    depths: torch.Tensor,
    backend: str,
) -> torch.Tensor:
    coef = projection_coefficients(
        K, T_src_ref, torch.float32 if backend == "triton" else compute_dtype(ref.dtype)
    )
    if backend == "triton":
        from mtl3d_perception.ops.cost_volume_triton import cost_volume_fwd

        return cost_volume_fwd(ref, src, coef, depths)
    if backend == "correlation":
        return cost_volume_correlation(ref, src, coef, depths)
    return cost_volume_reference(ref, src, coef, depths)


@_cost_volume_op.register_fake
def _(ref, src, K, T_src_ref, depths, backend):
    B, _, h, w = ref.shape
    return ref.new_empty((B, depths.shape[1], h, w), dtype=compute_dtype(ref.dtype))


@torch.library.custom_op("mtl3d::cost_volume_backward", mutates_args=())
def _cost_volume_backward_op(
    grad: torch.Tensor,
    ref: torch.Tensor,
    src: torch.Tensor,
    K: torch.Tensor,
    T_src_ref: torch.Tensor,
    depths: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    grad = grad.contiguous()
    if backend == "triton":
        from mtl3d_perception.ops.cost_volume_triton import cost_volume_bwd

        coef = projection_coefficients(K, T_src_ref, torch.float32)
        return cost_volume_bwd(grad, ref, src, coef, depths)
    coef = projection_coefficients(K, T_src_ref, compute_dtype(ref.dtype))  # "correlation" too: forward only
    return cost_volume_reference_backward(grad, ref, src, coef, depths)


@_cost_volume_backward_op.register_fake
def _(grad, ref, src, K, T_src_ref, depths, backend):
    return torch.empty_like(ref), torch.empty_like(src)


def _setup_context(ctx, inputs, output):
    ref, src, K, T_src_ref, depths, backend = inputs
    ctx.save_for_backward(ref, src, K, T_src_ref, depths)
    ctx.backend = backend


def _backward(ctx, grad):
    ref, src, K, T_src_ref, depths = ctx.saved_tensors
    d_ref, d_src = _cost_volume_backward_op(grad, ref, src, K, T_src_ref, depths, ctx.backend)
    # No gradient flows to K, the pose or the depth candidates (coordinates are constants, as in
    # UniMatch/MVSplat, which compute them under no_grad).
    return d_ref, d_src, None, None, None, None


_cost_volume_op.register_autograd(_backward, setup_context=_setup_context)


_warned_no_triton = False


def _warn_no_triton() -> None:
    global _warned_no_triton
    _warned_no_triton = True
    _log.warning(
        "triton is not installed: the cost volume uses the PyTorch reference on CUDA (slower, more memory)"
    )


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def cost_volume(
    ref: torch.Tensor,
    src: torch.Tensor,
    K: torch.Tensor,
    T_src_ref: torch.Tensor,
    depths: torch.Tensor,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Plane-sweep correlation volume between a reference view and one or more source views (DESIGN §5).

    `cost[b, d, y, x] = mean_s <ref[b, :, y, x], bilinear(src[b, s], p_s)> / sqrt(C)` where `p_s` is
    pixel (x, y) back-projected at depth `depths[b, d]` (or `depths[b, d, y, x]`), moved by
    `T_src_ref[b, s]` and projected with `K[b]`. Pixel (u, v) is the centre of column u, row v;
    samples outside the image are 0, and points with z <= 1e-6 in the source camera (or non-finite
    coordinates) contribute 0.

    Args:
        ref: [B, C, h, w] reference features; float16, bfloat16, float32 or float64.
        src: [B, C, h, w] or [B, S, C, h, w] source features, same dtype as ref. S sources are averaged.
        K: [B, 3, 3] pinhole intrinsics (last row [0, 0, 1]) at feature resolution, shared by all views.
        T_src_ref: [B, 4, 4] or [B, S, 4, 4] relative poses mapping reference points into each source.
        depths: [B, D] per-image or [B, D, h, w] per-pixel depth candidates in metres.
        backend: "auto" (Triton for CUDA tensors; for CPU tensors "correlation" where
            `cost_volume_correlation.use_correlation` says it is faster, else "reference"), "reference",
            "correlation" (the forward through the all-pairs correlation matrix, any device; its backward is
            the reference's) or "triton".

    Returns:
        [B, D, h, w] cost. Accumulation is float32 and so is the output (float64 for float64
        features, used by gradcheck), whatever the feature dtype.

    Gradients flow to `ref` and `src` only; K, the pose and the depths get none.

    Raises:
        ValueError: on a bad shape, dtype, device or backend name; the message names the value.
    """
    _check(backend in BACKENDS, f"backend must be one of {BACKENDS}, got {backend!r}")
    _check(ref.dim() == 4, f"ref must be [B, C, h, w], got shape {tuple(ref.shape)}")
    B, C, h, w = ref.shape
    _check(ref.dtype in _FEATURE_DTYPES, f"ref dtype must be one of {_FEATURE_DTYPES}, got {ref.dtype}")
    _check(src.dtype == ref.dtype, f"src dtype {src.dtype} differs from ref dtype {ref.dtype}")
    if src.dim() == 4:
        src = src[:, None]
    _check(
        src.dim() == 5 and src.shape[0] == B and tuple(src.shape[2:]) == (C, h, w),
        f"src must be [B, C, h, w] or [B, S, C, h, w] matching ref {tuple(ref.shape)}, got shape {tuple(src.shape)}",
    )
    S = src.shape[1]
    _check(S >= 1, f"src needs at least one source view, got shape {tuple(src.shape)}")
    _check(tuple(K.shape) == (B, 3, 3), f"K must be [B, 3, 3] = [{B}, 3, 3], got shape {tuple(K.shape)}")
    if T_src_ref.dim() == 3:
        T_src_ref = T_src_ref[:, None]
    _check(
        tuple(T_src_ref.shape) == (B, S, 4, 4),
        f"T_src_ref must be [B, 4, 4] or [B, S, 4, 4] = [{B}, {S}, 4, 4], got shape {tuple(T_src_ref.shape)}",
    )
    _check(
        (depths.dim() == 2 and depths.shape[0] == B)
        or (depths.dim() == 4 and depths.shape[0] == B and tuple(depths.shape[2:]) == (h, w)),
        f"depths must be [B, D] or [B, D, h, w] with B={B}, h={h}, w={w}, got shape {tuple(depths.shape)}",
    )
    _check(depths.shape[1] >= 1, f"depths needs at least one candidate, got shape {tuple(depths.shape)}")
    for name, t in (("K", K), ("T_src_ref", T_src_ref), ("depths", depths)):
        _check(t.is_floating_point(), f"{name} must be a floating-point tensor, got {t.dtype}")
    for name, t in (("src", src), ("K", K), ("T_src_ref", T_src_ref), ("depths", depths)):
        _check(t.device == ref.device, f"{name} is on {t.device} but ref is on {ref.device}")
    _check(C >= 1 and h >= 1 and w >= 1, f"ref must have non-empty C, h, w, got shape {tuple(ref.shape)}")
    if backend == "auto":
        if ref.device.type == "cuda":
            backend = "triton" if _HAS_TRITON else "reference"
        else:
            backend = "correlation" if use_correlation(h, w, depths.shape[1]) else "reference"
        if ref.device.type == "cuda" and not _HAS_TRITON and not _warned_no_triton:
            _warn_no_triton()
    if backend == "triton":
        _check(
            ref.dtype != torch.float64,
            "the triton backend takes float16/bfloat16/float32 features, got float64",
        )
        _check(
            _triton_available(ref.device),
            f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 set before import), got device {ref.device}",
        )
    # Contiguity is part of the kernels' contract (they index storage directly).
    return _cost_volume_op(
        ref.contiguous(),
        src.contiguous(),
        K.contiguous(),
        T_src_ref.contiguous(),
        depths.contiguous(),
        backend,
    )
