"""Plane-sweep cost volume in plain PyTorch: the CPU path and the oracle for the Triton kernels.

The volume is built one chunk of depth planes at a time, so the warped source features
(`[B, C, Dc, h, w]`) only ever exist for one chunk: peak memory is the output plus one chunk,
never the `[B, C, D, h, w]` tensor that MVSplat/UniMatch-style code materialises with a single
`grid_sample`. On a CPU the small chunks also stay in cache, which makes this faster than the
one-shot version (see benchmarks/RESULTS.md).

Geometry (DESIGN §4/§5): the reference pixel (x, y) at depth z back-projects to
`X_ref = z K^-1 [x, y, 1]`, moves to the source camera as `X_src = R X_ref + t` and projects to
`K X_src`. Folding the constants gives the homography form the kernels also use,

    p = z * (M @ [x, y, 1]) + v,   M = K R K^-1,   v = K t,   (u, v_px) = p[:2] / p[2],

so `coef` below packs `M` (row-major, 9 values) and `v` (3 values) per batch item and source.
`p[2]` is the source z because K is a pinhole matrix with last row [0, 0, 1].

Sampling follows `grid_sample(mode="bilinear", padding_mode="zeros")` with pixel (u, v) at the
centre of column u, row v. We normalise with align_corners=False and the matching formula
`(2u + 1) / w - 1`, which reproduces the same pixel coordinate for every size including w == 1,
where align_corners=True would collapse every coordinate onto column 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# A point must be in front of the source camera by more than this (metres) to contribute.
MIN_DEPTH = 1e-6
# Warped elements per chunk (B * C * Dc * h * w). 2**21 fp32 elements = 8 MiB: small enough to stay
# in a CPU's L2/L3, large enough that per-chunk Python overhead is negligible.
CHUNK_ELEMENTS = 1 << 21


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation (and output) dtype for features of `dtype`: float32, or float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def projection_coefficients(K: torch.Tensor, T_src_ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-source homography coefficients `[M (9), v (3)]`, computed in float64.

    Args:
        K: [B, 3, 3] intrinsics at feature resolution.
        T_src_ref: [B, S, 4, 4] maps reference-camera points into source camera s.
        dtype: dtype of the result.

    Returns:
        [B, S, 12] tensor: `M = K R K^-1` row-major, then `v = K t`.
    """
    K64 = K.detach().to(torch.float64)[:, None]  # [B, 1, 3, 3]
    T64 = T_src_ref.detach().to(torch.float64)  # [B, S, 4, 4]
    # inv_ex does not check for singular K (a check would synchronise a GPU stream); a singular K
    # gives non-finite coefficients, and non-finite coordinates contribute 0 (see sample_grid).
    K_inv = torch.linalg.inv_ex(K64)[0]
    M = K64 @ T64[..., :3, :3] @ K_inv  # [B, S, 3, 3]
    v = (K64 @ T64[..., :3, 3:]).squeeze(-1)  # [B, S, 3]
    return torch.cat([M.flatten(-2), v], dim=-1).to(dtype)


def pixel_rays(coef: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`M @ [x, y, 1]` for every reference pixel: [B, S, 3, h*w] (depth-independent, computed once)."""
    y, x = torch.meshgrid(
        torch.arange(h, device=coef.device, dtype=coef.dtype),
        torch.arange(w, device=coef.device, dtype=coef.dtype),
        indexing="ij",
    )
    M = coef[..., :9].unflatten(-1, (3, 3))  # [B, S, 3, 3]
    # Column-wise multiply-adds rather than a [3, 3] @ [3, hw] matmul, which is all overhead on a CPU.
    return M[..., :, 0, None] * x.reshape(-1) + M[..., :, 1, None] * y.reshape(-1) + M[..., :, 2, None]


def source_pixels(p: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source pixel coordinates (u, v) of homogeneous points ``p`` ``[..., 3, N]`` -> two ``[..., N]`` tensors.

    Invalid points (behind the camera, non-finite) are parked at -2 and far-away ones clamped to
    [-2, size + 1]: both bilinear corners are then outside the image, so the sample is exactly 0. Huge
    or NaN grids made grid_sample read out of bounds or return NaN (pytorch/pytorch#35202, #24823); the
    Triton kernel clamps the same way.
    """
    z = p[..., 2, :]
    valid = z > MIN_DEPTH  # False for NaN too
    z = torch.where(valid, z, torch.ones_like(z))
    u = p[..., 0, :] / z
    v = p[..., 1, :] / z
    valid = valid & torch.isfinite(u) & torch.isfinite(v)
    u = torch.where(valid, u, torch.full_like(u, -2.0)).clamp(-2.0, w + 1.0)
    v = torch.where(valid, v, torch.full_like(v, -2.0)).clamp(-2.0, h + 1.0)
    return u, v


def sample_grid(
    rays: torch.Tensor, offset: torch.Tensor, depths: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """`grid_sample` grid for one source and a chunk of depth planes.

    Args:
        rays: [B, 3, h*w] `M @ [x, y, 1]` of one source (see `pixel_rays`).
        offset: [B, 3] `v = K t` of that source.
        depths: [B, Dc] or [B, Dc, h, w] depth candidates (metres).

    Returns:
        [B, Dc * h, w, 2] normalised coordinates (align_corners=False convention); invalid points
        are moved outside the image so that they sample 0 (`source_pixels`).
    """
    B = rays.shape[0]
    z_cand = depths.to(rays.dtype).reshape(B, depths.shape[1], 1, -1)  # [B, Dc, 1, 1 or hw]
    p = z_cand * rays[:, None] + offset[:, None, :, None]  # [B, Dc, 3, hw]
    u, v = source_pixels(p, h, w)
    grid = torch.stack([(2.0 * u + 1.0) / w - 1.0, (2.0 * v + 1.0) / h - 1.0], dim=-1)  # [B, Dc, hw, 2]
    return grid.reshape(B, -1, w, 2)


def _warp(src: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _chunks(depths: torch.Tensor, per_plane: int, chunk_elements: int):
    D = depths.shape[1]
    step = max(1, chunk_elements // max(per_plane, 1))
    for d0 in range(0, D, step):
        yield d0, min(D, d0 + step)


def cost_volume_reference(
    ref: torch.Tensor,
    src: torch.Tensor,
    coef: torch.Tensor,
    depths: torch.Tensor,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Forward pass, chunked over depth.

    Args:
        ref: [B, C, h, w] reference features.
        src: [B, S, C, h, w] source features (same dtype as ref).
        coef: [B, S, 12] from `projection_coefficients`.
        depths: [B, D] or [B, D, h, w] candidates (metres).

    Returns:
        [B, D, h, w] cost, mean over the S sources of <ref, bilinear(src)> / sqrt(C), in
        `compute_dtype(ref.dtype)`.
    """
    B, S, C, h, w = src.shape
    D = depths.shape[1]
    dtype = compute_dtype(ref.dtype)
    ref_c = ref.to(dtype)[:, :, None]  # [B, C, 1, h, w]
    src_c = src.to(dtype)
    coef = coef.to(dtype)
    scale = 1.0 / (math.sqrt(C) * S)
    rays = pixel_rays(coef, h, w)  # [B, S, 3, hw]
    cost = torch.zeros(B, D, h, w, dtype=dtype, device=ref.device)
    for d0, d1 in _chunks(depths, B * C * h * w, chunk_elements):
        for s in range(S):
            grid = sample_grid(rays[:, s], coef[:, s, 9:], depths[:, d0:d1], h, w)  # [B, Dc*h, w, 2]
            warped = _warp(src_c[:, s], grid).view(B, C, d1 - d0, h, w)
            cost[:, d0:d1] += (warped * ref_c).sum(1)
    return cost.mul_(scale)


def cost_volume_reference_backward(
    grad: torch.Tensor,
    ref: torch.Tensor,
    src: torch.Tensor,
    coef: torch.Tensor,
    depths: torch.Tensor,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. ref and src, recomputing each chunk's warp (nothing is saved from forward).

    Args:
        grad: [B, D, h, w] gradient of the cost.
        ref, src, coef, depths: as in `cost_volume_reference`.

    Returns:
        (d_ref [B, C, h, w] in ref.dtype, d_src [B, S, C, h, w] in src.dtype).
    """
    B, S, C, h, w = src.shape
    dtype = compute_dtype(ref.dtype)
    ref_c = ref.to(dtype)[:, :, None]  # [B, C, 1, h, w]
    src_c = src.to(dtype)
    coef = coef.to(dtype)
    g = grad.to(dtype) * (1.0 / (math.sqrt(C) * S))  # [B, D, h, w]
    d_ref = torch.zeros(B, C, h, w, dtype=dtype, device=ref.device)
    d_src = torch.zeros(B, S, C, h, w, dtype=dtype, device=ref.device)
    rays = pixel_rays(coef, h, w)  # [B, S, 3, hw]
    for d0, d1 in _chunks(depths, B * C * h * w, chunk_elements):
        g_chunk = g[:, None, d0:d1]  # [B, 1, Dc, h, w]
        for s in range(S):
            grid = sample_grid(rays[:, s], coef[:, s, 9:], depths[:, d0:d1], h, w)
            warped = _warp(src_c[:, s], grid).view(B, C, d1 - d0, h, w)
            d_ref += (warped * g_chunk).sum(2)
            # d cost / d src is the transpose of the bilinear gather: grid_sample's own backward.
            g_warped = (ref_c * g_chunk).view(B, C, -1, w)
            d_src[:, s] += torch.ops.aten.grid_sampler_2d_backward(
                g_warped, src_c[:, s], grid, 0, 0, False, [True, False]
            )[0]
    return d_ref.to(ref.dtype), d_src.to(src.dtype)
