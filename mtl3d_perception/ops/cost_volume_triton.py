"""Fused plane-sweep cost volume in Triton: forward kernel, backward kernel, launchers.

Neither pass materialises the `[B, C, D, h, w]` warped tensor. Per program:

- forward, grid (pixel tiles, depth blocks, B): project a tile of BLOCK_P reference pixels at each of
  BLOCK_D depths into every source, gather the four bilinear corners channel block by channel block,
  dot with the reference features and accumulate in fp32; one store per (d, pixel).
- backward, grid (pixel tiles, channel blocks, B): the program keeps its `[BLOCK_C, BLOCK_P]` slice
  of `ref` and loops over all S sources and D depths, so `d_ref` is accumulated in registers and
  written once, without atomics. `d_src` is the transpose of the gather: four relaxed atomic adds
  per (channel, pixel, depth) into an fp32 buffer, cast to the feature dtype afterwards (Triton has
  no bf16 atomic add, and fp16 atomics lose precision).

Coordinates use the homography form of cost_volume_reference.py: `p = z * (M @ [x, y, 1]) + v`
with `coef = [M row-major, v]` per (batch, source). Block sizes are launch parameters: GPU launches
use small tiles for occupancy; the interpreter (TRITON_INTERPRET=1, used by CPU tests) pays per
program, so it gets whole-image tiles.

References: fla-org/flash-linear-attention `fla/ops/utils/pooling.py` (layout, naming);
princeton-vl/RAFT `alt_cuda_corr` (on-demand correlation with an atomic backward);
../shared/notes/cost_volume_performance.md (floor, interpreter gotchas).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from mtl3d_perception.ops.cost_volume_reference import MIN_DEPTH


@triton.jit
def _project_corners(p_coef, z_cand, x, y, m_p, H, W, MIN_Z: tl.constexpr):
    """Bilinear corners of pixels (x, y) [BLOCK_P] at depth z_cand in one source view.

    Returns the four in-image flat offsets (0 where outside), their masks and their weights.
    """
    m00 = tl.load(p_coef + 0)
    m01 = tl.load(p_coef + 1)
    m02 = tl.load(p_coef + 2)
    m10 = tl.load(p_coef + 3)
    m11 = tl.load(p_coef + 4)
    m12 = tl.load(p_coef + 5)
    m20 = tl.load(p_coef + 6)
    m21 = tl.load(p_coef + 7)
    m22 = tl.load(p_coef + 8)
    px = z_cand * (m00 * x + m01 * y + m02) + tl.load(p_coef + 9)
    py = z_cand * (m10 * x + m11 * y + m12) + tl.load(p_coef + 10)
    pz = z_cand * (m20 * x + m21 * y + m22) + tl.load(p_coef + 11)
    # pz > MIN_Z is False for NaN, so behind-camera and non-finite points both drop out here.
    m_z = m_p & (pz > MIN_Z)
    pz = tl.where(m_z, pz, 1.0)
    u = px / pz
    v = py / pz
    m_z = m_z & (u == u) & (v == v)
    # Clamp before the float->int cast: huge/NaN values cast to INT_MIN in the interpreter but
    # saturate on GPUs (and made grid_sample read out of bounds, pytorch/pytorch#35202). At -2 or
    # size+1 both corners are outside the image, so the sample is exactly 0 on every backend.
    u = tl.minimum(tl.maximum(tl.where(m_z, u, -2.0), -2.0), W + 1.0)
    v = tl.minimum(tl.maximum(tl.where(m_z, v, -2.0), -2.0), H + 1.0)
    u0 = tl.floor(u)
    v0 = tl.floor(v)
    wx1 = u - u0
    wy1 = v - v0
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    x0 = u0.to(tl.int32)
    y0 = v0.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    m_x0 = (x0 >= 0) & (x0 < W)
    m_x1 = (x1 >= 0) & (x1 < W)
    m_y0 = m_z & (y0 >= 0) & (y0 < H)
    m_y1 = m_z & (y1 >= 0) & (y1 < H)
    m_00 = m_y0 & m_x0
    m_01 = m_y0 & m_x1
    m_10 = m_y1 & m_x0
    m_11 = m_y1 & m_x1
    o_00 = tl.where(m_00, y0 * W + x0, 0)
    o_01 = tl.where(m_01, y0 * W + x1, 0)
    o_10 = tl.where(m_10, y1 * W + x0, 0)
    o_11 = tl.where(m_11, y1 * W + x1, 0)
    w_00 = tl.where(m_00, wy0 * wx0, 0.0)
    w_01 = tl.where(m_01, wy0 * wx1, 0.0)
    w_10 = tl.where(m_10, wy1 * wx0, 0.0)
    w_11 = tl.where(m_11, wy1 * wx1, 0.0)
    return o_00, o_01, o_10, o_11, m_00, m_01, m_10, m_11, w_00, w_01, w_10, w_11


@triton.jit
def _load_candidate(depths, i_b, i_d, o_p, m_p, m_d, D, HW, PER_PIXEL: tl.constexpr):
    if PER_PIXEL:
        # [BLOCK_P]
        z_cand = tl.load(depths + (i_b * D + i_d).to(tl.int64) * HW + o_p, mask=m_p & m_d, other=0.0)
    else:
        # scalar
        z_cand = tl.load(depths + i_b * D + i_d, mask=m_d, other=0.0)
    return z_cand.to(tl.float32)


@triton.jit
def _cost_volume_fwd_kernel(
    ref,  # [B, C, H, W]
    src,  # [B, S, C, H, W]
    coef,  # [B, S, 12] fp32
    depths,  # [B, D] or [B, D, H, W] fp32
    cost,  # [B, D, H, W] fp32
    S,
    C,
    H,
    W,
    D,
    scale,
    PER_PIXEL: tl.constexpr,
    MIN_Z: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i_p, i_dblk, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    HW = H * W
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    m_p = o_p < HW
    x = (o_p % W).to(tl.float32)
    y = (o_p // W).to(tl.float32)
    o_c = tl.arange(0, BLOCK_C)
    p_ref = ref + i_b.to(tl.int64) * C * HW
    for i_dd in range(BLOCK_D):
        i_d = i_dblk * BLOCK_D + i_dd
        m_d = i_d < D
        z_cand = _load_candidate(depths, i_b, i_d, o_p, m_p, m_d, D, HW, PER_PIXEL)
        # [BLOCK_P]
        b_cost = tl.zeros([BLOCK_P], dtype=tl.float32)
        for i_s in range(S):
            p_src = src + (i_b * S + i_s).to(tl.int64) * C * HW
            o_00, o_01, o_10, o_11, m_00, m_01, m_10, m_11, w_00, w_01, w_10, w_11 = _project_corners(
                coef + (i_b * S + i_s) * 12, z_cand, x, y, m_p & m_d, H, W, MIN_Z
            )
            for i_c in range(0, C, BLOCK_C):
                m_c = (i_c + o_c) < C
                # [BLOCK_C, 1] channel offsets
                o_cc = ((i_c + o_c) * HW)[:, None]
                # [BLOCK_C, BLOCK_P]
                b_r = tl.load(p_ref + o_cc + o_p[None, :], mask=m_c[:, None] & m_p[None, :], other=0.0)
                b_s = w_00[None, :] * tl.load(
                    p_src + o_cc + o_00[None, :], mask=m_c[:, None] & m_00[None, :], other=0.0
                ).to(tl.float32)
                b_s += w_01[None, :] * tl.load(
                    p_src + o_cc + o_01[None, :], mask=m_c[:, None] & m_01[None, :], other=0.0
                ).to(tl.float32)
                b_s += w_10[None, :] * tl.load(
                    p_src + o_cc + o_10[None, :], mask=m_c[:, None] & m_10[None, :], other=0.0
                ).to(tl.float32)
                b_s += w_11[None, :] * tl.load(
                    p_src + o_cc + o_11[None, :], mask=m_c[:, None] & m_11[None, :], other=0.0
                ).to(tl.float32)
                b_cost += tl.sum(b_r.to(tl.float32) * b_s, axis=0)
        tl.store(cost + (i_b * D + i_d).to(tl.int64) * HW + o_p, b_cost * scale, mask=m_p & m_d)


@triton.jit
def _cost_volume_bwd_kernel(
    ref,  # [B, C, H, W]
    src,  # [B, S, C, H, W]
    coef,  # [B, S, 12] fp32
    depths,  # [B, D] or [B, D, H, W] fp32
    grad,  # [B, D, H, W]
    d_ref,  # [B, C, H, W], ref dtype; written once per element
    d_src,  # [B, S, C, H, W] fp32, zero-initialised; atomic accumulation
    S,
    C,
    H,
    W,
    D,
    scale,
    PER_PIXEL: tl.constexpr,
    MIN_Z: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    i_p, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    HW = H * W
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    m_p = o_p < HW
    x = (o_p % W).to(tl.float32)
    y = (o_p // W).to(tl.float32)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    # [BLOCK_C, 1]
    o_cc = (o_c * HW)[:, None]
    m_cp = m_c[:, None] & m_p[None, :]
    p_ref = ref + i_b.to(tl.int64) * C * HW
    # [BLOCK_C, BLOCK_P]
    b_r = tl.load(p_ref + o_cc + o_p[None, :], mask=m_cp, other=0.0).to(tl.float32)
    b_dr = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for i_s in range(S):
        p_src = src + (i_b * S + i_s).to(tl.int64) * C * HW
        p_dsrc = d_src + (i_b * S + i_s).to(tl.int64) * C * HW
        for i_d in range(D):
            z_cand = _load_candidate(depths, i_b, i_d, o_p, m_p, i_d < D, D, HW, PER_PIXEL)
            o_00, o_01, o_10, o_11, m_00, m_01, m_10, m_11, w_00, w_01, w_10, w_11 = _project_corners(
                coef + (i_b * S + i_s) * 12, z_cand, x, y, m_p, H, W, MIN_Z
            )
            # [BLOCK_P]
            b_g = tl.load(grad + (i_b * D + i_d).to(tl.int64) * HW + o_p, mask=m_p, other=0.0).to(tl.float32)
            b_g = b_g * scale
            m_c00 = m_c[:, None] & m_00[None, :]
            m_c01 = m_c[:, None] & m_01[None, :]
            m_c10 = m_c[:, None] & m_10[None, :]
            m_c11 = m_c[:, None] & m_11[None, :]
            # d_ref: the bilinear sample of src, weighted by the incoming gradient.
            b_s = w_00[None, :] * tl.load(p_src + o_cc + o_00[None, :], mask=m_c00, other=0.0).to(tl.float32)
            b_s += w_01[None, :] * tl.load(p_src + o_cc + o_01[None, :], mask=m_c01, other=0.0).to(tl.float32)
            b_s += w_10[None, :] * tl.load(p_src + o_cc + o_10[None, :], mask=m_c10, other=0.0).to(tl.float32)
            b_s += w_11[None, :] * tl.load(p_src + o_cc + o_11[None, :], mask=m_c11, other=0.0).to(tl.float32)
            b_dr += b_s * b_g[None, :]
            # d_src: scatter ref * grad to the four corners. Programs of neighbouring pixels and
            # depths hit the same texels, hence atomics; only the sum matters, so relaxed order.
            # [BLOCK_C, BLOCK_P]
            b_v = b_r * b_g[None, :]
            tl.atomic_add(p_dsrc + o_cc + o_00[None, :], b_v * w_00[None, :], mask=m_c00, sem="relaxed")
            tl.atomic_add(p_dsrc + o_cc + o_01[None, :], b_v * w_01[None, :], mask=m_c01, sem="relaxed")
            tl.atomic_add(p_dsrc + o_cc + o_10[None, :], b_v * w_10[None, :], mask=m_c10, sem="relaxed")
            tl.atomic_add(p_dsrc + o_cc + o_11[None, :], b_v * w_11[None, :], mask=m_c11, sem="relaxed")
    tl.store(
        d_ref + i_b.to(tl.int64) * C * HW + o_cc + o_p[None, :], b_dr.to(d_ref.dtype.element_ty), mask=m_cp
    )


# The interpreter runs each program as numpy code and pays ~15 ms per program, so CPU tests want
# whole-image tiles; compiled GPU kernels want small tiles for occupancy and registers.
INTERPRETED = type(_cost_volume_fwd_kernel).__name__ == "InterpretedFunction"


def _blocks(C: int, HW: int, D: int) -> tuple[int, int, int]:
    """Default (BLOCK_P, BLOCK_C, BLOCK_D)."""
    if INTERPRETED:
        return min(triton.next_power_of_2(HW), 4096), min(triton.next_power_of_2(C), 64), D
    return 64, min(triton.next_power_of_2(C), 32), 1


def _check_contiguous(**tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not t.is_contiguous():
            raise ValueError(
                f"{name} must be contiguous, got strides {t.stride()} for shape {tuple(t.shape)}"
            )


def cost_volume_fwd(
    ref: torch.Tensor,
    src: torch.Tensor,
    coef: torch.Tensor,
    depths: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    block_p: int | None = None,
    block_c: int | None = None,
    block_d: int | None = None,
) -> torch.Tensor:
    """Launch the forward kernel.

    Args:
        ref: [B, C, h, w] contiguous features (fp16, bf16 or fp32).
        src: [B, S, C, h, w] contiguous, same dtype.
        coef: [B, S, 12] projection coefficients (cost_volume_reference.projection_coefficients).
        depths: [B, D] or [B, D, h, w] candidates.
        out: optional contiguous fp32 [B, D, h, w] to write into (tests pass views of guarded buffers).
        block_p, block_c, block_d: tile sizes (powers of two for p and c); defaults depend on
            whether the kernel runs compiled or interpreted.

    Returns:
        [B, D, h, w] float32 cost, averaged over sources and scaled by 1/sqrt(C).
    """
    B, S, C, H, W = src.shape
    D = depths.shape[1]
    coef = coef.to(torch.float32).contiguous()
    depths = depths.to(torch.float32).contiguous()
    if out is None:
        out = torch.empty(B, D, H, W, dtype=torch.float32, device=ref.device)
    _check_contiguous(ref=ref, src=src, out=out)
    BP, BC, BD = _blocks(C, H * W, D)
    BP, BC, BD = block_p or BP, block_c or BC, block_d or BD
    grid = (triton.cdiv(H * W, BP), triton.cdiv(D, BD), B)
    _cost_volume_fwd_kernel[grid](
        ref, src, coef, depths, out, S, C, H, W, D, 1.0 / (math.sqrt(C) * S),
        PER_PIXEL=depths.dim() == 4, MIN_Z=MIN_DEPTH, BLOCK_P=BP, BLOCK_C=BC, BLOCK_D=BD,
    )  # fmt: skip
    return out


def cost_volume_bwd(
    grad: torch.Tensor,
    ref: torch.Tensor,
    src: torch.Tensor,
    coef: torch.Tensor,
    depths: torch.Tensor,
    *,
    d_ref: torch.Tensor | None = None,
    d_src_acc: torch.Tensor | None = None,
    block_p: int | None = None,
    block_c: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel.

    Args:
        grad: [B, D, h, w] gradient of the cost.
        ref, src, coef, depths: as in `cost_volume_fwd`.
        d_ref: optional contiguous [B, C, h, w] output in ref.dtype.
        d_src_acc: optional contiguous fp32 [B, S, C, h, w] accumulator, zero-filled by the caller.
        block_p, block_c: tile sizes (powers of two).

    Returns:
        (d_ref [B, C, h, w] in ref.dtype, d_src [B, S, C, h, w] in src.dtype).
    """
    B, S, C, H, W = src.shape
    D = depths.shape[1]
    coef = coef.to(torch.float32).contiguous()
    depths = depths.to(torch.float32).contiguous()
    grad = grad.contiguous()
    if d_ref is None:
        d_ref = torch.empty_like(ref)
    if d_src_acc is None:
        d_src_acc = torch.zeros(src.shape, dtype=torch.float32, device=src.device)
    _check_contiguous(ref=ref, src=src, d_ref=d_ref, d_src_acc=d_src_acc)
    BP, BC, _ = _blocks(C, H * W, D)
    BP, BC = block_p or BP, block_c or BC
    grid = (triton.cdiv(H * W, BP), triton.cdiv(C, BC), B)
    _cost_volume_bwd_kernel[grid](
        ref, src, coef, depths, grad, d_ref, d_src_acc, S, C, H, W, D, 1.0 / (math.sqrt(C) * S),
        PER_PIXEL=depths.dim() == 4, MIN_Z=MIN_DEPTH, BLOCK_P=BP, BLOCK_C=BC,
    )  # fmt: skip
    return d_ref, d_src_acc.to(src.dtype)
