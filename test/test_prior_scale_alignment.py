"""The depth prior's per-image scale alignment to the geometric depth (``prior_scale_alignment``, session 13)."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d_perception import geometry
from mtl3d_perception.model import build_model, resolve_config
from mtl3d_perception.model.config import ConfigError, ModelConfig
from mtl3d_perception.model.geometric import epipolar_span
from mtl3d_perception.model.heads import Predictor

H, W = 12, 16
DEPTH_RANGE = (0.3, 10.0)


def _predictor(align: bool) -> Predictor:
    return Predictor("depth", 8, 1, DEPTH_RANGE, geometric=True, align_prior=align)


def _head_output(inv_prior: torch.Tensor, gate_logit: torch.Tensor) -> torch.Tensor:
    """The depth conv output ``y`` [1,3,H,W] whose prior is ``inv_prior``, residual 0 and gate ``sigmoid(gate_logit)``."""
    p = _predictor(False)
    frac = (inv_prior - p.inv_min) / (p.inv_max - p.inv_min)
    return torch.cat([torch.logit(frac), torch.zeros_like(frac), gate_logit], 1)


def test_no_gate_keeps_the_prior_scale():
    inv_prior = torch.full((2, 1, H, W), 0.5)
    inv_geo = torch.full((2, 1, H, W), 1.0)
    assert torch.equal(Predictor.prior_scale(inv_prior, inv_geo, torch.zeros(2, 1, H, W)), torch.ones(2, 1, 1, 1))


def test_scale_is_the_shrunk_gate_weighted_log_ratio():
    """Geometry 2x the prior's inverse depth where the gate is 1 (a quarter of the image), 0.5x where it is 0: only
    the gated pixels count, and the log ratio is shrunk by ALIGN_SHRINK of the image's pixels."""
    inv_prior = torch.full((1, 1, H, W), 0.4)
    inv_geo = torch.full((1, 1, H, W), 0.2)
    gate = torch.zeros(1, 1, H, W)
    gate[..., : H // 2, : W // 2] = 1.0
    inv_geo[..., : H // 2, : W // 2] = 0.8
    s = Predictor.prior_scale(inv_prior, inv_geo, gate)
    gated = 0.25
    expected = math.exp(gated * math.log(2.0) / (gated + Predictor.ALIGN_SHRINK))
    assert s.shape == (1, 1, 1, 1)
    assert s.item() == pytest.approx(expected, rel=1e-5)
    # a full gate with a 2x geometry moves the prior 1 / (1 + ALIGN_SHRINK) of the way in log
    full = Predictor.prior_scale(inv_prior, 2 * inv_prior, torch.ones(1, 1, H, W))
    assert full.item() == pytest.approx(2.0 ** (1 / (1 + Predictor.ALIGN_SHRINK)), rel=1e-5)


def test_unmatched_pixels_take_the_scale_of_the_matched_ones():
    """A prior with the right structure at 1.6x the true depth: where the geometry matched (left half, the true
    inverse depth) the output follows it; on the unmatched right half the aligned prior is the prior times the
    shrunk scale, nearer the truth than the prior alone."""
    true_inv = torch.linspace(0.3, 1.2, W).expand(1, 1, H, W).clone()
    inv_prior = true_inv / 1.6
    gate_logit = torch.full((1, 1, H, W), -30.0)
    gate_logit[..., : W // 2] = 30.0
    y = _head_output(inv_prior, gate_logit)
    wide = torch.full_like(true_inv, 2 * Predictor.ALIGN_SPAN_PX[1])  # the sweep spans 80 px: full parallax
    geometry = torch.cat([true_inv, torch.ones_like(true_inv), wide], 1)
    plain = 1.0 / _predictor(False).output(y, geometry[:, :2])
    aligned = 1.0 / _predictor(True).output(y, geometry)
    right = (..., slice(W // 2, None))
    s = math.exp(0.5 * math.log(1.6) / (0.5 + Predictor.ALIGN_SHRINK))
    assert torch.allclose(aligned[right], inv_prior[right] * s, rtol=1e-4)
    assert torch.allclose(plain[right], inv_prior[right], rtol=1e-4)
    left = (..., slice(None, W // 2))
    assert torch.allclose(aligned[left], true_inv[left], rtol=1e-4) and torch.allclose(plain[left], true_inv[left], rtol=1e-4)
    err = lambda inv: ((inv[right] / true_inv[right]) - 1).abs().mean().item()  # noqa: E731
    assert err(aligned) < 0.6 * err(plain)


def _twin_models():
    """The ``cpu`` network (random weights, seed 0) without and with the alignment, sharing every weight."""
    torch.manual_seed(0)
    cfg = resolve_config("cpu").replace(pretrained=False)
    plain = build_model(cfg.replace(prior_scale_alignment=False)).eval()
    aligned = build_model(cfg.replace(prior_scale_alignment=True)).eval()
    aligned.load_state_dict(plain.state_dict())
    return plain, aligned


def test_single_view_output_is_unchanged_by_the_alignment():
    """One view (duplicated, identity pose): the matching confidence and so the gate are ~0, the scale ~1."""
    plain, aligned = _twin_models()
    images = torch.rand(1, 1, 3, 120, 160)
    K = torch.tensor([[120.0, 0, 79.5], [0, 120.0, 59.5], [0, 0, 1]])[None, None]
    poses = torch.eye(4)[None, None]
    with torch.no_grad():
        a, b = plain(images, K, poses)["depth"], aligned(images, K, poses)["depth"]
    assert torch.allclose(a, b, rtol=1e-3)


def test_alignment_needs_the_geometric_depth_and_is_off_for_older_checkpoints():
    with pytest.raises(ConfigError, match="prior_scale_alignment needs geometric_depth: true"):
        resolve_config("tiny").replace(prior_scale_alignment=True)
    assert resolve_config("cpu").prior_scale_alignment is True  # the CPU default since session 13
    stored = {k: v for k, v in resolve_config("cpu").to_dict().items() if k != "prior_scale_alignment"}
    assert ModelConfig.from_dict(stored).prior_scale_alignment is False  # a checkpoint from before it loads as off
    assert _predictor(True).align_prior and not Predictor("normals", 8, 3, DEPTH_RANGE, align_prior=True).align_prior


def test_pixels_without_parallax_do_not_move_the_scale():
    """A sweep whose span is half-way up the ALIGN_SPAN_PX ramp counts half; one that spans nothing or less than the
    ramp's start (pure rotation, the epipole, a 1 cm pair) not at all, however confident its gate."""
    inv_prior = torch.full((1, 1, H, W), 0.4)
    inv_geo = 2 * inv_prior
    gate = torch.ones(1, 1, H, W)
    for span in (0.0, Predictor.ALIGN_SPAN_PX[0]):
        none = Predictor.align_weight(gate, torch.full((1, 1, H, W), span))
        assert torch.equal(Predictor.prior_scale(inv_prior, inv_geo, none), torch.ones(1, 1, 1, 1))
    half = Predictor.align_weight(gate, torch.full((1, 1, H, W), sum(Predictor.ALIGN_SPAN_PX) / 2))
    assert torch.allclose(half, torch.full_like(half, 0.5))
    assert Predictor.prior_scale(inv_prior, inv_geo, half).item() == pytest.approx(
        2.0 ** (0.5 / (0.5 + Predictor.ALIGN_SHRINK)), rel=1e-5)
    y = _head_output(inv_prior, torch.full((1, 1, H, W), 30.0))
    with pytest.raises(ValueError, match="needs the sweep's epipolar span as a third geometry channel, got 2"):
        _predictor(True).output(y, torch.cat([inv_geo, gate], 1))


FX, CX, CY, SIZE, GRID = 100.0, 71.5, 63.5, (120, 160), (30, 40)  # an off-centre principal point: no symmetry
K1 = torch.tensor([[FX, 0, CX], [0, FX, CY], [0, 0, 1.0]])[None]
Z_RANGE = (0.3, 10.0)
DEPTHS = geometry.depth_candidates(*Z_RANGE, 32, like=torch.zeros(1))


def _T(R: torch.Tensor | None = None, t: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    T = torch.eye(4)
    if R is not None:
        T[:3, :3] = R
    T[:3, 3] = torch.tensor(t)
    return T[None, None]


def _yaw(rad: float) -> torch.Tensor:
    c, s = math.cos(rad), math.sin(rad)
    return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _cell_centres() -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel (u, v) of the sweep cells' centres: stride 4, pixel centres kept (``geometry.scale_intrinsics``)."""
    s = SIZE[1] / GRID[1]
    v, u = torch.meshgrid((torch.arange(GRID[0]) + 0.5) * s - 0.5, (torch.arange(GRID[1]) + 0.5) * s - 0.5, indexing="ij")
    return u, v


def test_epipolar_span_of_a_sideways_baseline_is_f_b_times_the_inverse_depth_range():
    """x translation b: a point at depth z lands f b / z pixels left, so where the whole path stays in the image the
    sweep travels f b (1/z_min - 1/z_max) (a case with one right answer); near the left edge, less."""
    b = 0.1
    full = FX * b * (1 / Z_RANGE[0] - 1 / Z_RANGE[1])
    span = epipolar_span(K1, _T(t=(-b, 0.0, 0.0)), SIZE, GRID, DEPTHS)[0, 0]
    assert span.shape == GRID and span.dtype == torch.float32
    u, _ = _cell_centres()
    clear = u - FX * b / Z_RANGE[0] > 0.0  # the nearest candidate still lands inside the image
    assert torch.allclose(span[clear], torch.full_like(span[clear], full), rtol=1e-3)
    assert (span[~clear] < full - 1.0).all()
    # the widest of two sources
    two = torch.cat([_T(t=(-b, 0.0, 0.0)), _T(t=(0.0, -b / 2, 0.0))], 1)
    assert torch.equal(epipolar_span(K1, two, SIZE, GRID, DEPTHS)[0, 0][clear], span[clear])


def test_epipolar_span_of_a_forward_move_grows_away_from_the_epipole():
    """Moving 10 cm forward a point at radius r from the principal point lands at r z / (z - 0.1): the path is
    r (z_min / (z_min - 0.1) - z_max / (z_max - 0.1)) long, 0 at the epipole, checked at every cell whose path stays in
    the image (the cell centres' half-pixel convention and the (H, W) order both matter here)."""
    span = epipolar_span(K1, _T(t=(0.0, 0.0, -0.1)), SIZE, GRID, DEPTHS)[0, 0]
    u, v = _cell_centres()
    r = torch.hypot(u - CX, v - CY)
    gain = Z_RANGE[0] / (Z_RANGE[0] - 0.1)
    near_u, near_v = CX + (u - CX) * gain, CY + (v - CY) * gain
    clear = (near_u > 0) & (near_u < SIZE[1] - 1) & (near_v > 0) & (near_v < SIZE[0] - 1)
    expected = r * (gain - Z_RANGE[1] / (Z_RANGE[1] - 0.1))
    assert clear.sum() > 100
    assert torch.allclose(span[clear], expected[clear], rtol=1e-3, atol=1e-3)


def test_epipolar_span_is_zero_for_a_rotation_and_finite_for_candidates_behind_the_source():
    assert epipolar_span(K1, _T(_yaw(0.2)), SIZE, GRID, DEPTHS).abs().max().item() < 1e-3
    # 70 degrees of yaw and a source 1 m ahead: many candidates behind the source camera or outside its image
    for T in (_T(_yaw(1.22)), _T(t=(0.0, 0.0, -1.0))):
        span = epipolar_span(K1, T, SIZE, GRID, DEPTHS)
        assert torch.isfinite(span).all() and span.max().item() <= 2 * math.hypot(*SIZE)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_epipolar_span_is_the_same_under_autocast(dtype):
    """The runtime runs the network under fp16/bf16 autocast on a GPU; the span stays float32 (fp16 overflowed)."""
    T = torch.cat([_T(t=(-0.01, 0.0, 0.0)), _T(_yaw(1.22))], 1)
    with torch.autocast("cpu", dtype=dtype):
        low = epipolar_span(K1, T, SIZE, GRID, DEPTHS)
    assert low.dtype == torch.float32
    assert torch.equal(low, epipolar_span(K1, T, SIZE, GRID, DEPTHS))


def _pair_inputs(t_x: float = 0.3, R: torch.Tensor | None = None):
    """Random images and a second view t_x m sideways (and rotated by R) of the first."""
    torch.manual_seed(1)
    images = torch.rand(1, 2, 3, 120, 160)
    K = torch.tensor([[120.0, 0, 79.5], [0, 120.0, 59.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    poses = torch.eye(4).repeat(1, 2, 1, 1)
    poses[0, 1, 0, 3] = t_x
    if R is not None:
        poses[0, 1, :3, :3] = R
    return images, K, poses


def test_the_span_reaches_the_depth_head_in_the_streaming_and_training_paths(monkeypatch):
    """30 cm sideways the alignment acts; each view's depth from the all-views (training) path equals the reference
    path's with that view first; and a span the head is told is ~0 everywhere leaves the prior as it is."""
    plain, aligned = _twin_models()
    images, K, poses = _pair_inputs()
    with torch.no_grad():
        a, b = plain(images, K, poses)["depth"], aligned(images, K, poses)["depth"]
        both = aligned(images, K, poses, all_views=True)["depth"]
        second = aligned(images[:, [1, 0]], K, poses[:, [1, 0]])["depth"]
    assert not torch.allclose(a, b, rtol=1e-3)
    assert torch.allclose(both[:, 0], b, rtol=1e-4) and torch.allclose(both[:, 1], second, rtol=1e-4)
    monkeypatch.setattr(Predictor, "ALIGN_SPAN_PX", (1e12, 2e12))  # every pixel's span counts as no parallax
    with torch.no_grad():
        assert torch.allclose(aligned(images, K, poses)["depth"], a, rtol=1e-4)
        assert torch.allclose(aligned(images, K, poses, all_views=True)["depth"][:, 0], a, rtol=1e-4)


def test_the_confidence_head_sees_the_aligned_depth():
    """With ``confidence_depth_cues`` the head's final-depth cue is the depth the network outputs, alignment included."""
    torch.manual_seed(0)
    cfg = resolve_config("cpu").replace(pretrained=False, confidence_head=True, confidence_depth_cues=True)
    plain = build_model(cfg.replace(prior_scale_alignment=False)).eval()
    aligned = build_model(cfg.replace(prior_scale_alignment=True)).eval()
    aligned.load_state_dict(plain.state_dict())
    images, K, poses = _pair_inputs()
    cues = []
    for model in (plain, aligned):
        model.heads.confidence.register_forward_hook(lambda m, inputs, out: cues.append(inputs[2]))
        with torch.no_grad():
            model(images, K, poses)
    final_depth = 4  # ConfidenceHead.CUES: the first cue after the four matching ones
    assert not torch.allclose(cues[0][:, final_depth], cues[1][:, final_depth], rtol=1e-4)
    assert torch.equal(cues[0][:, :final_depth], cues[1][:, :final_depth])  # the matching cues do not change


def test_a_wide_rotation_under_half_precision_autocast_keeps_the_depth_finite():
    """70 degrees of yaw: near candidates behind the source camera. fp16 autocast (the GPU runtime's precision) once
    overflowed the span to inf and every pixel's depth to NaN."""
    _, aligned = _twin_models()
    images, K, poses = _pair_inputs(0.05, _yaw(1.22))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        depth = aligned(images, K, poses)["depth"]
    assert torch.isfinite(depth).all()
