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
with `coef = [M row-major, v]` per (batch, source). Tile sizes are meta-parameters: GPU launches
are autotuned over small tiles (FWD_CONFIGS, BWD_CONFIGS); the interpreter (TRITON_INTERPRET=1, used
by CPU tests) pays per program, so it gets whole-image tiles.

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
def _bwd_corner(p_src, p_dsrc, o_cc, o_k, m_c, m_k, b_gw, b_r, b_dr):
    """One bilinear corner of the backward: returns b_dr + src[corner] * gw; adds ref * gw into d_src.

    o_cc [BLOCK_C, 1] channel offsets, o_k/m_k [BLOCK_P] corner offsets and mask, b_gw [BLOCK_P] the
    gradient times the corner's weight, b_r/b_dr [BLOCK_C, BLOCK_P].
    """
    o = o_cc + o_k[None, :]
    m = m_c[:, None] & m_k[None, :]
    b_dr += tl.load(p_src + o, mask=m, other=0.0).to(tl.float32) * b_gw[None, :]
    tl.atomic_add(p_dsrc + o, b_r * b_gw[None, :], mask=m, sem="relaxed")
    return b_dr


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
            # [BLOCK_P] incoming gradient, then its share at each corner
            b_g = tl.load(grad + (i_b * D + i_d).to(tl.int64) * HW + o_p, mask=m_p, other=0.0).to(tl.float32)
            b_g = b_g * scale
            # One corner at a time keeps few [BLOCK_C, BLOCK_P] tensors live (registers, not spills).
            # d_ref gathers src at the corner (the bilinear sample, weighted by the gradient); d_src
            # scatters ref there. Programs of neighbouring pixels and depths hit the same texels,
            # hence atomics; only the sum matters, so relaxed order.
            b_dr = _bwd_corner(p_src, p_dsrc, o_cc, o_00, m_c, m_00, w_00 * b_g, b_r, b_dr)
            b_dr = _bwd_corner(p_src, p_dsrc, o_cc, o_01, m_c, m_01, w_01 * b_g, b_r, b_dr)
            b_dr = _bwd_corner(p_src, p_dsrc, o_cc, o_10, m_c, m_10, w_10 * b_g, b_r, b_dr)
            b_dr = _bwd_corner(p_src, p_dsrc, o_cc, o_11, m_c, m_11, w_11 * b_g, b_r, b_dr)
    tl.store(
        d_ref + i_b.to(tl.int64) * C * HW + o_cc + o_p[None, :], b_dr.to(d_ref.dtype.element_ty), mask=m_cp
    )


# The interpreter runs each program as numpy code and pays ~15 ms per program, so CPU tests want
# whole-image tiles; compiled GPU kernels want small tiles for occupancy and registers.
INTERPRETED = type(_cost_volume_fwd_kernel).__name__ == "InterpretedFunction"

# GPU tile sizes are autotuned once per (S, C, h, w, D, layout, dtype). The spaces are small on
# purpose (a node tunes at its first frame) and hold configs of 4-16 tile elements per thread that
# compile for sm_90a without register spills (with [B, D] candidates; per-pixel ones spill 8 bytes
# in two 8-warp forward configs); benchmarks/kernel_resources.py prints registers, spills and
# occupancy. Every config is checked against the reference in the interpreter and compiled for
# sm_90 in CI (test_cost_volume_triton.py).
FWD_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_C": c, "BLOCK_D": d}, num_warps=w)
    for p, c, d, w in (
        (64, 32, 1, 4), (128, 32, 1, 8), (64, 64, 1, 8), (128, 16, 1, 4),
        (64, 16, 1, 4), (256, 16, 1, 8), (64, 32, 2, 4), (128, 32, 2, 8),
    )
]  # fmt: skip
BWD_CONFIGS = [
    triton.Config({"BLOCK_P": p, "BLOCK_C": c}, num_warps=w)
    for p, c, w in ((64, 16, 4), (32, 32, 4), (64, 32, 8), (128, 16, 8), (128, 8, 4), (32, 16, 4), (64, 16, 8))
]


def _prune(configs: list[triton.Config], nargs: dict, **kwargs) -> list[triton.Config]:
    """Drop configs whose channel or depth block exceeds the problem (all-masked lanes)."""
    C, D = nargs["C"], nargs["D"]
    kept = [
        c
        for c in configs
        if c.kwargs["BLOCK_C"] <= max(triton.next_power_of_2(C), 16) and c.kwargs.get("BLOCK_D", 1) <= D
    ]
    return kept or configs[:1]


_TUNING_KEY = ["S", "C", "H", "W", "D", "PER_PIXEL"]
_cost_volume_fwd_tuned = triton.autotune(
    configs=FWD_CONFIGS, key=_TUNING_KEY, prune_configs_by={"early_config_prune": _prune}
)(_cost_volume_fwd_kernel)
# Tuning runs the kernel several times: d_src accumulates, so it is zeroed before each trial and
# once more before the real launch.
_cost_volume_bwd_tuned = triton.autotune(
    configs=BWD_CONFIGS, key=_TUNING_KEY, prune_configs_by={"early_config_prune": _prune}, reset_to_zero=["d_src"]
)(_cost_volume_bwd_kernel)


def tuned_configs() -> dict[str, str]:
    """The configs the autotuner picked for the latest GPU launches (for benchmark reports)."""
    return {
        name: str(tuner.best_config) if getattr(tuner, "best_config", None) is not None else "not tuned"
        for name, tuner in (("forward", _cost_volume_fwd_tuned), ("backward", _cost_volume_bwd_tuned))
    }


def compile_ahead(kernel: str, config: triton.Config, dtype: str = "fp32", *, per_pixel: bool = False,
                  arch: int = 90):
    """Compile one config for a CUDA arch without a GPU (Triton's bundled compiler; never interpreted).

    Args:
        kernel: "fwd" or "bwd". config: one of FWD_CONFIGS / BWD_CONFIGS. dtype: feature dtype in
            Triton's spelling ("fp32", "fp16", "bf16"). per_pixel: [B, D, h, w] candidates.

    Returns:
        Triton's compiled kernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata`). Used by the sm_90 compile
        test and benchmarks/kernel_resources.py; needs TRITON_INTERPRET unset at import.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = {"fwd": _cost_volume_fwd_kernel, "bwd": _cost_volume_bwd_kernel}[kernel]
    if INTERPRETED:
        raise RuntimeError("compile_ahead needs the compiled kernels: import with TRITON_INTERPRET unset")
    types = dict(ref=f"*{dtype}", src=f"*{dtype}", cost="*fp32", grad="*fp32", d_ref=f"*{dtype}", d_src="*fp32",
                 coef="*fp32", depths="*fp32", S="i32", C="i32", H="i32", W="i32", D="i32", scale="fp32")  # fmt: skip
    signature = {name: types.get(name, "constexpr") for name in fn.arg_names}
    constants = dict(PER_PIXEL=per_pixel, MIN_Z=MIN_DEPTH, **config.kwargs)
    return triton.compile(
        ASTSource(fn, signature, constants), target=GPUTarget("cuda", arch, 32), options=dict(num_warps=config.num_warps)
    )


def _fixed_blocks(
    C: int, HW: int, D: int, block_p: int | None, block_c: int | None, block_d: int | None
) -> tuple[int, int, int]:
    """(BLOCK_P, BLOCK_C, BLOCK_D) for a launch without the autotuner: the given sizes, else
    whole-image tiles in the interpreter, else the first GPU config."""
    if INTERPRETED:
        default = (min(triton.next_power_of_2(HW), 4096), min(triton.next_power_of_2(C), 64), D)
    else:
        default = (64, min(triton.next_power_of_2(C), 32), 1)
    return block_p or default[0], block_c or default[1], block_d or default[2]


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
        block_p, block_c, block_d: fixed tile sizes (powers of two for p and c). By default GPU
            launches are autotuned over FWD_CONFIGS and the interpreter uses whole-image tiles.

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
    args = (ref, src, coef, depths, out, S, C, H, W, D, 1.0 / (math.sqrt(C) * S))
    consts = dict(PER_PIXEL=depths.dim() == 4, MIN_Z=MIN_DEPTH)
    if INTERPRETED or block_p or block_c or block_d:
        BP, BC, BD = _fixed_blocks(C, H * W, D, block_p, block_c, block_d)
        grid = (triton.cdiv(H * W, BP), triton.cdiv(D, BD), B)
        _cost_volume_fwd_kernel[grid](*args, **consts, BLOCK_P=BP, BLOCK_C=BC, BLOCK_D=BD)
    else:
        grid = lambda meta: (triton.cdiv(H * W, meta["BLOCK_P"]), triton.cdiv(D, meta["BLOCK_D"]), B)  # noqa: E731
        _cost_volume_fwd_tuned[grid](*args, **consts)
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
        block_p, block_c: fixed tile sizes (powers of two); by default autotuned over BWD_CONFIGS
            on the GPU, whole-image tiles in the interpreter.

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
    args = (ref, src, coef, depths, grad, d_ref, d_src_acc, S, C, H, W, D, 1.0 / (math.sqrt(C) * S))
    consts = dict(PER_PIXEL=depths.dim() == 4, MIN_Z=MIN_DEPTH)
    if INTERPRETED or block_p or block_c:
        BP, BC, _ = _fixed_blocks(C, H * W, D, block_p, block_c, None)
        grid = (triton.cdiv(H * W, BP), triton.cdiv(C, BC), B)
        _cost_volume_bwd_kernel[grid](*args, **consts, BLOCK_P=BP, BLOCK_C=BC)
    else:
        grid = lambda meta: (triton.cdiv(H * W, meta["BLOCK_P"]), triton.cdiv(C, meta["BLOCK_C"]), B)  # noqa: E731
        _cost_volume_bwd_tuned[grid](*args, **consts)
    return d_ref, d_src_acc.to(src.dtype)
