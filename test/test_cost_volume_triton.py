"""Triton cost-volume kernels against the PyTorch reference.

Without CUDA, conftest.py sets TRITON_INTERPRET=1 before this module imports the kernels, so the
same kernel source runs in Triton's numpy interpreter on tiny shapes (the interpreter has no bounds
checks, hence the canary guard regions around every output). Tests marked `gpu` repeat the
comparison at realistic sizes on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cost_volume import make_inputs

from mtl3d_perception.ops import cost_volume
from mtl3d_perception.ops.cost_volume_reference import (
    cost_volume_reference,
    cost_volume_reference_backward,
    projection_coefficients,
)
from mtl3d_perception.ops.cost_volume_triton import (
    BWD_CONFIGS,
    FWD_CONFIGS,
    _prune,
    cost_volume_bwd,
    cost_volume_fwd,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CANARY = 12345.0
GUARD = 257  # elements of canary before and after each output


def guarded(shape, dtype, fill):
    """A view of `shape` inside a larger buffer: `fill` inside, CANARY in GUARD elements each side."""
    n = torch.Size(shape).numel()
    buf = torch.full((n + 2 * GUARD,), CANARY, dtype=dtype, device=DEVICE)
    buf[GUARD : GUARD + n] = fill
    return buf, buf[GUARD : GUARD + n].view(shape)


def assert_guard_intact(buf):
    assert (buf[:GUARD] == CANARY).all(), "kernel wrote before its output"
    assert (buf[-GUARD:] == CANARY).all(), "kernel wrote after its output"


def tiny_inputs(dtype, per_pixel, S=2, B=1, C=3, D=5, h=7, w=13, seed=0):
    """Mild poses (most of the volume is inside the image), one source moved behind the camera when S > 2."""
    ref, src, K, T, depths = make_inputs(
        B=B, S=S, C=C, D=D, h=h, w=w, per_pixel=per_pixel, seed=seed, max_angle=0.2, max_t=0.3
    )
    if S > 2:
        T[:, 2, :3, 3] = torch.tensor([0.0, 0.0, -3.0], dtype=T.dtype)  # mostly behind the camera
    return tuple(t.to(DEVICE) for t in (ref.to(dtype), src.to(dtype), K, T, depths))


SHAPES = [
    dict(B=1, C=3, D=5, h=7, w=13),
    dict(B=2, C=5, D=3, h=6, w=9),
    dict(B=1, C=4, D=2, h=1, w=5),
]


def shape_id(s):
    return "-".join(f"{k}{v}" for k, v in s.items())


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("per_pixel", [False, True], ids=["depths-BD", "depths-BDhw"])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)
def test_kernels_match_reference(shape, per_pixel, dtype):
    ref, src, K, T, depths = tiny_inputs(dtype, per_pixel, S=3, **shape)
    B, S, C, h, w = src.shape
    D = depths.shape[1]
    coef = projection_coefficients(K, T, torch.float32)

    buf, out = guarded((B, D, h, w), torch.float32, float("nan"))
    cost_volume_fwd(ref, src, coef, depths, out=out)
    assert_guard_intact(buf)
    expected = cost_volume_reference(ref, src, coef, depths)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert (expected != 0).any()

    grad = torch.randn(B, D, h, w, device=DEVICE)
    buf_r, d_ref = guarded((B, C, h, w), dtype, float("nan"))
    buf_s, d_src_acc = guarded((B, S, C, h, w), torch.float32, 0.0)
    _, d_src = cost_volume_bwd(grad, ref, src, coef, depths, d_ref=d_ref, d_src_acc=d_src_acc)
    assert_guard_intact(buf_r)
    assert_guard_intact(buf_s)
    e_ref, e_src = cost_volume_reference_backward(grad, ref.float(), src.float(), coef, depths)
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # d_ref is rounded to the feature dtype
    torch.testing.assert_close(d_ref.float(), e_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(d_src_acc, e_src, atol=1e-5, rtol=1e-5)
    assert d_src.dtype == dtype


def test_small_blocks_cover_every_tail():
    """Many programs with partial tiles along pixels, channels and depths."""
    ref, src, K, T, depths = tiny_inputs(torch.float32, False, S=2)
    B, S, C, h, w = src.shape
    coef = projection_coefficients(K, T, torch.float32)
    buf, out = guarded((B, 5, h, w), torch.float32, float("nan"))
    cost_volume_fwd(ref, src, coef, depths, out=out, block_p=32, block_c=2, block_d=2)
    assert_guard_intact(buf)
    torch.testing.assert_close(out, cost_volume_reference(ref, src, coef, depths), atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    buf_r, d_ref = guarded((B, C, h, w), torch.float32, float("nan"))
    d_ref, d_src = cost_volume_bwd(grad, ref, src, coef, depths, d_ref=d_ref, block_p=32, block_c=2)
    assert_guard_intact(buf_r)
    e_ref, e_src = cost_volume_reference_backward(grad, ref, src, coef, depths)
    torch.testing.assert_close(d_ref, e_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d_src, e_src, atol=1e-5, rtol=1e-5)


def config_id(config):
    return "-".join(f"{k[6:].lower()}{v}" for k, v in config.kwargs.items()) + f"-w{config.num_warps}"


@pytest.mark.parametrize("config", FWD_CONFIGS, ids=config_id)
def test_every_forward_autotune_config_matches_reference(config):
    """The autotuner may pick any config on the GPU, so each one must be right (tails in p, c and d)."""
    ref, src, K, T, depths = tiny_inputs(torch.float32, True, S=2, B=2, C=40, D=5)
    B, S, C, h, w = src.shape
    coef = projection_coefficients(K, T, torch.float32)
    buf, out = guarded((B, 5, h, w), torch.float32, float("nan"))
    blocks = config.kwargs
    cost_volume_fwd(ref, src, coef, depths, out=out, block_p=blocks["BLOCK_P"], block_c=blocks["BLOCK_C"],
                    block_d=blocks["BLOCK_D"])  # fmt: skip
    assert_guard_intact(buf)
    torch.testing.assert_close(out, cost_volume_reference(ref, src, coef, depths), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", BWD_CONFIGS, ids=config_id)
def test_every_backward_autotune_config_matches_reference(config):
    ref, src, K, T, depths = tiny_inputs(torch.float32, True, S=2, B=2, C=40, D=5)
    B, S, C, h, w = src.shape
    coef = projection_coefficients(K, T, torch.float32)
    grad = torch.randn(B, 5, h, w, device=DEVICE)
    buf_r, d_ref = guarded((B, C, h, w), torch.float32, float("nan"))
    buf_s, d_src_acc = guarded((B, S, C, h, w), torch.float32, 0.0)
    cost_volume_bwd(grad, ref, src, coef, depths, d_ref=d_ref, d_src_acc=d_src_acc,
                    block_p=config.kwargs["BLOCK_P"], block_c=config.kwargs["BLOCK_C"])  # fmt: skip
    assert_guard_intact(buf_r)
    assert_guard_intact(buf_s)
    e_ref, e_src = cost_volume_reference_backward(grad, ref, src, coef, depths)
    torch.testing.assert_close(d_ref, e_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d_src_acc, e_src, atol=1e-5, rtol=1e-5)


def test_autotune_pruning_drops_oversized_blocks_only():
    kept = _prune(FWD_CONFIGS, {"C": 3, "D": 1})
    assert kept and all(c.kwargs["BLOCK_C"] <= 16 and c.kwargs["BLOCK_D"] == 1 for c in kept)
    assert _prune(FWD_CONFIGS, {"C": 128, "D": 64}) == FWD_CONFIGS
    assert _prune(BWD_CONFIGS, {"C": 128, "D": 64}) == BWD_CONFIGS


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, on NaN depths
def test_adversarial_geometry_matches_reference():
    """Behind the camera, far outside (coordinates ~1e9, would overflow int32), NaN and inf depths."""
    ref, src, K, T, depths = tiny_inputs(torch.float32, True, S=3, B=2)
    T[0, 0, :3, 3] = torch.tensor([1e9, -1e9, 0.5])
    T[1, 1, :3, :3] = torch.eye(3)
    T[1, 1, :3, 3] = torch.tensor([0.0, 0.0, -1.0])  # near plane crosses the volume
    depths[0, 0, :3] = float("nan")
    depths[1, 1, 2:] = float("inf")
    out_t = cost_volume(ref, src, K, T, depths, backend="triton")
    out_r = cost_volume(ref, src, K, T, depths, backend="reference")
    assert torch.isfinite(out_t).all()
    torch.testing.assert_close(out_t, out_r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_op_autograd_triton_matches_reference(dtype):
    ref, src, K, T, depths = tiny_inputs(dtype, False, S=2)
    grads = {}
    for backend in ("triton", "reference"):
        r, s = ref.clone().requires_grad_(True), src.clone().requires_grad_(True)
        out = cost_volume(r, s, K, T, depths, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)).sum().backward()
        grads[backend] = (out, r.grad, s.grad)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    for a, b in zip(grads["triton"], grads["reference"]):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_opcheck_triton():
    ref, src, K, T, depths = tiny_inputs(torch.float32, True, S=2, C=3, D=2, h=4, w=5)
    ref.requires_grad_(True)
    src.requires_grad_(True)
    torch.library.opcheck(torch.ops.mtl3d.cost_volume.default, (ref, src, K, T, depths, "triton"))


_COMPILE_FOR_SM90 = """
from mtl3d_perception.ops import cost_volume_triton as m

for kernel, configs in (("fwd", m.FWD_CONFIGS), ("bwd", m.BWD_CONFIGS)):
    for config in configs:
        ptx = m.compile_ahead(kernel, config, "bf16", per_pixel=True).asm["ptx"]
        assert kernel == "fwd" or ".relaxed" in ptx, "the d_src atomics should be relaxed"
print("ok")
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter accepts code the compiler rejects; compile every autotune config to PTX/cubin for
    an H100 (bundled ptxas)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_SM90],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


# --- CUDA, realistic sizes -----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("per_pixel", [False, True], ids=["depths-BD", "depths-BDhw"])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)
def test_gpu_triton_matches_reference(dtype, per_pixel):
    ref, src, K, T, depths = tiny_inputs(dtype, per_pixel, S=2, B=2, C=64, D=32, h=60, w=80)
    grads = {}
    for backend in ("triton", "reference"):
        r, s = ref.clone().requires_grad_(True), src.clone().requires_grad_(True)
        out = cost_volume(r, s, K, T, depths, backend=backend)
        (out * out.detach().sign()).sum().backward()
        grads[backend] = (out, r.grad, s.grad)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for a, b in zip(grads["triton"], grads["reference"]):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph():
    ref, src, K, T, depths = tiny_inputs(torch.float16, False, S=1, B=2, C=32, D=16, h=30, w=40)
    f = torch.compile(lambda r, s: cost_volume(r, s, K, T, depths).relu(), fullgraph=True)
    r = ref.clone().requires_grad_(True)
    out = f(r, src)
    out.sum().backward()
    torch.testing.assert_close(out, cost_volume(ref, src, K, T, depths).relu(), atol=1e-4, rtol=1e-4)
    assert r.grad is not None and torch.isfinite(r.grad).all()
