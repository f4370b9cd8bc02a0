"""The cost volume op with the PyTorch reference and correlation backends, against an independent float64 oracle.

The oracle back-projects explicitly (K^-1, R, t; no homography folding) and samples with one
`grid_sample(align_corners=True)` call over the whole `[B, C, D, h, w]` volume, i.e. the way
MVSplat/UniMatch build it. The Triton kernels are tested in test_cost_volume_triton.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtl3d_perception.ops import cost_volume
from mtl3d_perception.ops.cost_volume_correlation import use_correlation
from mtl3d_perception.ops.cost_volume_reference import (
    cost_volume_reference,
    projection_coefficients,
)

CPU_BACKENDS = ["reference", "correlation"]


def random_rotation(g: torch.Generator, max_angle: float) -> torch.Tensor:
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm()
    angle = (torch.rand(1, generator=g, dtype=torch.float64) * 2 - 1) * max_angle
    k = torch.tensor(
        [[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64
    )
    return torch.eye(3, dtype=torch.float64) + torch.sin(angle) * k + (1 - torch.cos(angle)) * k @ k


def make_inputs(
    *, B=2, S=1, C=5, D=6, h=7, w=11, per_pixel=False, dtype=torch.float32, seed=0, max_angle=0.6, max_t=1.5
):
    """Random features, intrinsics, poses (large enough that some points fall behind the source
    camera or far outside it) and depth candidates; src is [B, S, C, h, w], T [B, S, 4, 4]."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(B, C, h, w, generator=g, dtype=torch.float64)
    src = torch.randn(B, S, C, h, w, generator=g, dtype=torch.float64)
    K = torch.zeros(B, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = 0.8 * w + torch.rand(B, generator=g, dtype=torch.float64) * w
    K[:, 1, 1] = 0.8 * w + torch.rand(B, generator=g, dtype=torch.float64) * w
    K[:, 0, 2] = (w - 1) / 2 + torch.randn(B, generator=g, dtype=torch.float64)
    K[:, 1, 2] = (h - 1) / 2 + torch.randn(B, generator=g, dtype=torch.float64)
    K[:, 2, 2] = 1
    T = torch.eye(4, dtype=torch.float64).repeat(B, S, 1, 1)
    for b in range(B):
        for s in range(S):
            T[b, s, :3, :3] = random_rotation(g, max_angle)
            T[b, s, :3, 3] = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * max_t
    if per_pixel:
        depths = 0.3 + 4 * torch.rand(B, D, h, w, generator=g, dtype=torch.float64)
    else:
        depths = 1.0 / torch.linspace(1 / 0.3, 1 / 5.0, D, dtype=torch.float64).repeat(B, 1)
    return ref.to(dtype), src.to(dtype), K, T, depths


def oracle(ref, src, K, T, depths):
    """Independent float64 cost volume: explicit back-projection and one grid_sample over all D."""
    ref, src, K, T, depths = (t.to(torch.float64) for t in (ref, src, K, T, depths))
    B, S, C, h, w = src.shape
    D = depths.shape[1]
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    rays = torch.linalg.inv(K)[:, None] @ torch.stack([x, y, torch.ones_like(x)]).reshape(
        1, 3, -1
    )  # [B, 1, 3, hw]
    z_cand = depths.reshape(B, D, -1)[:, :, None]  # [B, D, 1, hw or 1]
    cost = torch.zeros(B, D, h, w, dtype=torch.float64)
    for s in range(S):
        X = T[:, s, None, :3, :3] @ (rays * z_cand) + T[:, s, None, :3, 3:]  # [B, D, 3, hw]
        z = X[:, :, 2]
        uv = (K[:, None] @ X)[:, :, :2] / z[:, :, None].clamp(min=1e-12)  # [B, D, 2, hw]
        ok = (z > 1e-6)[:, None]
        gx = uv[:, :, 0] / (w - 1) * 2 - 1
        gy = uv[:, :, 1] / (h - 1) * 2 - 1
        grid = torch.stack([gx, gy], -1).clamp(-10, 10).reshape(B, D * h, w, 2)
        warped = F.grid_sample(src[:, s], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        warped = warped.reshape(B, C, D, h * w) * ok
        cost += (warped * ref.reshape(B, C, 1, h * w)).sum(1).reshape(B, D, h, w) / math.sqrt(C)
    return cost / S


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("S", [1, 3], ids=["S1", "S3"])
@pytest.mark.parametrize("per_pixel", [False, True], ids=["depths-BD", "depths-BDhw"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_backend_matches_oracle(S, per_pixel, dtype, backend):
    ref, src, K, T, depths = make_inputs(S=S, per_pixel=per_pixel, dtype=dtype, seed=S + 10 * per_pixel)
    src_in = src[:, 0] if S == 1 else src
    T_in = T[:, 0] if S == 1 else T
    out = cost_volume(ref, src_in, K, T_in, depths, backend=backend)
    expected = oracle(ref, src, K, T, depths)
    assert out.shape == expected.shape
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)
    # The poses are adversarial enough that part of the volume is empty (behind / outside).
    assert 0.02 < (expected == 0).double().mean() < 0.9


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_points_behind_camera_and_far_outside_are_zero(backend):
    ref, src, K, T, depths = make_inputs(B=2, S=1, dtype=torch.float64)
    T_behind = T.clone()
    T_behind[0, 0, :3, :3] = torch.eye(3, dtype=torch.float64)
    T_behind[0, 0, :3, 3] = torch.tensor([0.0, 0.0, -100.0])  # every point behind the source
    T_behind[1, 0, :3, 3] = torch.tensor([1e7, -1e7, 0.5])  # every point projects far outside
    out = cost_volume(ref, src[:, 0], K, T_behind[:, 0], depths, backend=backend)
    assert torch.equal(out, torch.zeros_like(out))
    # Non-finite depth candidates contribute 0 as well, rather than NaN.
    depths_bad = depths.clone()
    depths_bad[:, 0] = float("nan")
    depths_bad[:, 1] = float("inf")
    out = cost_volume(ref, src[:, 0], K, T[:, 0], depths_bad, backend=backend)
    assert torch.isfinite(out).all() and (out[:, :2] == 0).all()


@pytest.mark.parametrize("hw", [(5, 6), (1, 7), (6, 1), (1, 1)], ids=lambda s: f"h{s[0]}-w{s[1]}")
def test_single_view_constant_along_depth(hw):
    h, w = hw
    C, D = 8, 5
    f = torch.randn(2, C, h, w)
    K = torch.tensor([[3.0, 0, (w - 1) / 2], [0, 3.0, (h - 1) / 2], [0, 0, 1]]).repeat(2, 1, 1)
    depths = torch.linspace(0.5, 8.0, D).repeat(2, 1)
    out = cost_volume(f, f, K, torch.eye(4).repeat(2, 1, 1), depths)
    expected = (f * f).sum(1, keepdim=True) / math.sqrt(C)
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=1e-5)


def test_multi_source_is_mean_of_single_sources():
    ref, src, K, T, depths = make_inputs(S=3, per_pixel=True)
    out = cost_volume(ref, src, K, T, depths)
    singles = torch.stack([cost_volume(ref, src[:, s], K, T[:, s], depths) for s in range(3)])
    torch.testing.assert_close(out, singles.mean(0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_features_accumulate_in_fp32(dtype):
    ref, src, K, T, depths = make_inputs(dtype=dtype)
    out = cost_volume(ref, src[:, 0], K, T[:, 0], depths)
    assert out.dtype == torch.float32
    expected = cost_volume(ref.float(), src[:, 0].float(), K, T[:, 0], depths)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_chunking_does_not_change_the_result():
    ref, src, K, T, depths = make_inputs(S=2, per_pixel=True, dtype=torch.float64)
    coef = projection_coefficients(K, T, torch.float64)
    one_plane = cost_volume_reference(ref, src, coef, depths, chunk_elements=1)
    one_shot = cost_volume_reference(ref, src, coef, depths, chunk_elements=1 << 30)
    torch.testing.assert_close(one_plane, one_shot, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("per_pixel", [False, True], ids=["depths-BD", "depths-BDhw"])
def test_gradcheck(per_pixel, backend):
    """The correlation forward's gradient is the reference backward's: gradcheck checks the two agree."""
    ref, src, K, T, depths = make_inputs(
        B=2, S=2, C=3, D=3, h=4, w=5, per_pixel=per_pixel, dtype=torch.float64
    )
    ref.requires_grad_(True)
    src.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda r, s: cost_volume(r, s, K, T, depths, backend=backend), (ref, src), eps=1e-6, atol=1e-8
    )


def test_correlation_equals_reference_at_the_default_model_sizes():
    """The default model's two sweeps (C 50 at 30x40, C 48 at 15x20, D 32), a moving camera, fp32 features."""
    g = torch.Generator().manual_seed(3)
    for C, h, w in ((50, 30, 40), (48, 15, 20)):
        ref, src = torch.randn(1, C, h, w, generator=g), torch.randn(1, 1, C, h, w, generator=g)
        K = torch.tensor([[[0.8 * w, 0.0, (w - 1) / 2], [0.0, 0.8 * w, (h - 1) / 2], [0.0, 0.0, 1.0]]])
        T = torch.eye(4)[None, None].clone()
        T[0, 0, :3, :3] = random_rotation(g, 0.1).float()
        T[0, 0, :3, 3] = torch.tensor([-0.1, 0.02, 0.05])
        depths = 1.0 / torch.linspace(1 / 0.3, 1 / 10.0, 32)[None]
        assert use_correlation(h, w, 32)
        a = cost_volume(ref, src, K, T, depths, backend="reference")
        b = cost_volume(ref, src, K, T, depths)  # auto: the correlation path on CPU
        torch.testing.assert_close(b, a, atol=1e-5 * a.abs().max().item(), rtol=1e-5)


def test_auto_picks_correlation_on_small_maps_only():
    assert use_correlation(30, 40, 32) and use_correlation(15, 20, 32)
    assert not use_correlation(60, 80, 32)  # 320x240 at stride 4: the reference is faster there (RESULTS.md)


def test_no_gradient_to_geometry():
    ref, src, K, T, depths = make_inputs(dtype=torch.float64)
    K.requires_grad_(True)
    ref.requires_grad_(True)
    cost_volume(ref, src[:, 0], K, T[:, 0], depths).sum().backward()
    assert ref.grad is not None and K.grad is None


def test_opcheck():
    ref, src, K, T, depths = make_inputs(B=1, S=2, C=3, D=3, h=4, w=5)
    ref.requires_grad_(True)
    src.requires_grad_(True)
    torch.library.opcheck(torch.ops.mtl3d.cost_volume.default, (ref, src, K, T, depths, "reference"))
    torch.library.opcheck(torch.ops.mtl3d.cost_volume.default, (ref, src, K, T, depths, "correlation"))
    g = torch.randn(1, 3, 4, 5)
    torch.library.opcheck(
        torch.ops.mtl3d.cost_volume_backward.default,
        (g, ref.detach(), src.detach(), K, T, depths, "reference"),
    )


@pytest.mark.slow
def test_torch_compile_fullgraph_cpu():
    ref, src, K, T, depths = make_inputs(B=1, S=2, C=4, D=3, h=5, w=6)

    def f(r, s):
        return (cost_volume(r, s, K, T, depths) * 2.0).relu()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    r1, s1 = ref.clone().requires_grad_(True), src.clone().requires_grad_(True)
    r2, s2 = ref.clone().requires_grad_(True), src.clone().requires_grad_(True)
    out_c = compiled(r1, s1)
    out_e = f(r2, s2)
    torch.testing.assert_close(out_c, out_e)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    torch.testing.assert_close(r1.grad, r2.grad)
    torch.testing.assert_close(s1.grad, s2.grad)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.update(ref=a["ref"][0]), r"ref must be \[B, C, h, w\], got shape \(5, 7, 11\)"),
        (lambda a: a.update(src=a["src"][:, :, :3]), r"src must be .* got shape \(2, 1, 3, 7, 11\)"),
        (lambda a: a.update(src=a["src"].double()), "src dtype torch.float64 differs"),
        (lambda a: a.update(K=a["K"][:, :2]), r"K must be \[B, 3, 3\] = \[2, 3, 3\], got shape \(2, 2, 3\)"),
        (lambda a: a.update(T_src_ref=a["T_src_ref"][:1]), r"T_src_ref must be .* got shape \(1, 1, 4, 4\)"),
        (lambda a: a.update(depths=a["depths"][:, :, None]), r"depths must be .* got shape \(2, 6, 1\)"),
        (lambda a: a.update(depths=a["depths"][:, :0]), r"at least one candidate, got shape \(2, 0\)"),
        (lambda a: a.update(backend="cuda"), "backend must be one of .* got 'cuda'"),
        (
            lambda a: a.update(ref=a["ref"].int(), src=a["src"].int()),
            "ref dtype must be one of .* got torch.int32",
        ),
    ],
    ids=[
        "ref-dims",
        "src-shape",
        "src-dtype",
        "K-shape",
        "T-shape",
        "depths-shape",
        "no-depths",
        "backend",
        "int",
    ],
)
def test_validation_messages_name_the_value(change, match):
    ref, src, K, T, depths = make_inputs()
    args = dict(ref=ref, src=src, K=K, T_src_ref=T, depths=depths)
    change(args)
    with pytest.raises(ValueError, match=match):
        cost_volume(**args)
