"""Plane-sweep cost volume through the all-pairs correlation matrix: the CPU forward for small feature maps.

Bilinear sampling is linear in the source features, so for reference pixel p and a sample at source
position x with corners q_k and weights w_k,

    <ref_p, bilinear(src, x)> = sum_k w_k <ref_p, src_{q_k}> = sum_k w_k corr[p, q_k],   corr = ref^T src.

``corr`` (``[h*w, P]``, every reference pixel against every source pixel) is one GEMM; the volume is then
four gathers per (pixel, depth) and a bilinear blend. The reference path (`cost_volume_reference`) warps C
channels at D*h*w positions with ``grid_sample`` and reduces over C: fewer multiply-adds (D*h*w*C against
h*w*P*C) but gathers and memory-bound elementwise passes, where the GEMM runs near the core's peak. At the
default model's sizes (C 50, 30x40, D 32; and C 48, 15x20) this path is 2-3x faster on one CPU thread
(benchmarks/RESULTS.md, "Cost volume"); its work grows as (h*w)^2, so `use_correlation` limits it to
small maps. The result equals the reference's to float rounding (the sums run in another order).

Layout: the source map is zero-padded (1 pixel left/top, 2 right/bottom), so every corner of a
coordinate clamped to [-1, size] is inside the padded map and a corner outside the image reads a zero
correlation, as ``grid_sample(padding_mode="zeros")``; its row length is rounded up to a multiple of 8
(MKL's sgemm ran 2-3x slower on an odd row length here). Gathers run pixel-major (``[h*w, D]``) so
that each reference pixel's D samples read one row of ``corr``.

Forward only: the op's backward (`cost_volume_reference_backward`) recomputes its own warps.
Why our own code: no library computes a plane sweep this way.
"""

from __future__ import annotations

import math

import torch

from mtl3d_perception.ops.cost_volume_reference import compute_dtype, pixel_rays, source_pixels

# The correlation matrix is computed for blocks of reference pixels of at most this many elements (1 MiB
# fp32, about the L2 cache): in one piece (6.8 MiB at the default size) the same forward ran 2x slower.
BLOCK_ELEMENTS = 1 << 18
# The GEMM wins while the padded source map has at most this many pixels per depth candidate (see
# `use_correlation`).
MAX_PIXELS_PER_DEPTH = 96
_PAD = (1, 2, 1, 2)  # left, right, top, bottom
_ROW_ALIGN = 8


def _padded_size(h: int, w: int) -> tuple[int, int]:
    """(padded row length w_p, padded pixel count P) of an h x w source map."""
    wp = w + _PAD[0] + _PAD[1]
    P = (h + _PAD[2] + _PAD[3]) * wp
    return wp, -(-P // _ROW_ALIGN) * _ROW_ALIGN


def use_correlation(h: int, w: int, num_depth: int) -> bool:
    """Whether the correlation path is the faster one for an ``h x w`` map and ``num_depth`` candidates.

    Its GEMM costs h*w*P*C multiply-adds against the reference's D*h*w*C warped samples (each a gather,
    a multiply and an add); measured on one CPU thread (benchmarks/cost_volume.py), the GEMM wins while
    P <= MAX_PIXELS_PER_DEPTH * D.
    """
    return _padded_size(h, w)[1] <= MAX_PIXELS_PER_DEPTH * num_depth


def cost_volume_correlation(ref: torch.Tensor, src: torch.Tensor, coef: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Forward pass through the correlation matrix: ``[B, D, h, w]`` in `compute_dtype(ref.dtype)`.

    Arguments and result as `cost_volume_reference` (ref [B,C,h,w], src [B,S,C,h,w], coef [B,S,12],
    depths [B,D] or [B,D,h,w] in metres), equal to it up to float rounding.
    """
    B, S, C, h, w = src.shape
    D = depths.shape[1]
    hw = h * w
    dtype = compute_dtype(ref.dtype)
    wp, P = _padded_size(h, w)
    rows = max(1, min(hw, BLOCK_ELEMENTS // P))
    coef = coef.to(dtype)
    rays = pixel_rays(coef, h, w)  # [B, S, 3, hw]
    corners = torch.tensor([0, 1, wp, wp + 1], device=ref.device)  # (x0, y0), (x1, y0), (x0, y1), (x1, y1)
    first = _PAD[2] * wp + _PAD[0]  # padded index of pixel (0, 0)
    out = torch.zeros(B, hw, D, dtype=dtype, device=ref.device)
    padded = torch.zeros(C, P, dtype=dtype, device=ref.device)
    inner = padded[:, : (h + _PAD[2] + _PAD[3]) * wp].view(C, -1, wp)[:, _PAD[2]: _PAD[2] + h, _PAD[0]: _PAD[0] + w]
    corr = torch.empty(rows, P, dtype=dtype, device=ref.device)
    for b in range(B):
        ref_b = ref[b].to(dtype).reshape(C, hw).t()  # [hw, C]
        z = depths[b].to(dtype).reshape(D, -1).t().contiguous()[:, None]  # [1 or hw, 1, D], row-major
        for s in range(S):
            inner.copy_(src[b, s])
            p = rays[b, s].t()[:, :, None] * z + coef[b, s, 9:, None]  # [hw, 3, D]
            u, v = source_pixels(p, h, w)  # [hw, D]
            # [-1, size] keeps both corners inside the padding and changes no sample (see the module docstring)
            u = u.clamp_(-1.0, float(w))
            v = v.clamp_(-1.0, float(h))
            x0, y0 = u.floor(), v.floor()
            wx, wy = u - x0, v - y0
            index = ((y0 * wp + x0).long().add_(first)[..., None] + corners).view(hw, 4 * D)
            for r0 in range(0, hw, rows):
                r1 = min(hw, r0 + rows)
                block = torch.mm(ref_b[r0:r1], padded, out=corr[: r1 - r0])  # [rows, P]
                vals = block.gather(1, index[r0:r1]).view(r1 - r0, D, 4)
                top = torch.lerp(vals[..., 0], vals[..., 1], wx[r0:r1])
                bottom = torch.lerp(vals[..., 2], vals[..., 3], wx[r0:r1])
                out[b, r0:r1] += torch.lerp(top, bottom, wy[r0:r1])
    out = out.transpose(1, 2).contiguous().view(B, D, h, w)  # contiguous, as the op's fake registration says
    return out.mul_(1.0 / (math.sqrt(C) * S))
