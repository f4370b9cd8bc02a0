"""Geometric depth from the plane sweep (issue 18): one right answer on a known pair, confidence, single view."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtl3d_perception import geometry
from mtl3d_perception.model import build_model, resolve_config
from mtl3d_perception.model.cvm import plane_sweep
from mtl3d_perception.model.geometric import patch_features, read_out

W, H = 160, 120
FX = 120.0
DEPTH_RANGE = (0.3, 10.0)
D = 32


def _texture(seed: int = 0) -> torch.Tensor:
    """Smooth random colour texture, wide enough to shift."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, H // 2, (2 * W + 200) // 4, generator=g)
    return F.interpolate(coarse, size=(2 * H, 2 * W + 200), mode="bicubic", align_corners=False).clamp(0, 1)


def _render(tex: torch.Tensor, shift_px: float) -> torch.Tensor:
    """The texture seen by a camera whose pixel u shows texture column u + shift_px (at 2x resolution)."""
    xs = torch.arange(W, dtype=torch.float32) + shift_px + 100.0
    ys = torch.arange(H, dtype=torch.float32)
    gx = (2 * xs + 0.5) / tex.shape[-1] * 2 - 1
    gy = (2 * ys + 0.5) / tex.shape[-2] * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(tex, grid, align_corners=False)


def _pair(depth: float, baseline: float):
    """A fronto-parallel textured plane at ``depth`` seen from two cameras ``baseline`` m apart along x.

    A point at reference pixel u is at source pixel u - fx b / z, so the source image is the reference
    shifted by the disparity; ``T_src_ref`` moves reference points by -b in x.
    """
    tex = _texture()
    ref = _render(tex, 0.0)
    src = _render(tex, FX * baseline / depth)
    K = torch.tensor([[FX, 0, (W - 1) / 2], [0, FX, (H - 1) / 2], [0, 0, 1.0]])[None]
    T = torch.eye(4)[None, None].clone()
    T[0, 0, 0, 3] = -baseline
    return ref, src, K, T


@pytest.mark.parametrize("depth", [1.0, 2.0, 3.5])
def test_patch_sweep_recovers_true_depth_with_high_confidence(depth):
    ref, src, K, T = _pair(depth, 0.2)
    scale = math.sqrt(50.0)  # a softmax temperature: logits = 50 x mean ZNCC
    pr, ps = patch_features(ref) * scale, patch_features(src) * scale
    logits = plane_sweep(pr, ps[:, None], K, T, (W, H), DEPTH_RANGE, D) * math.sqrt(pr.shape[1])
    inv, conf = read_out(logits, geometry.depth_candidates(*DEPTH_RANGE, D, like=logits))
    interior = (slice(None), slice(None), slice(3, -3), slice(6, -6))  # away from the edge the shift uncovers
    est = inv[interior]
    # the candidates are 0.104 /m apart in inverse depth: the read-out lands within half a step of the truth
    step = (1 / DEPTH_RANGE[0] - 1 / DEPTH_RANGE[1]) / (D - 1)
    assert abs(est.median().item() - 1.0 / depth) < 0.5 * step
    assert (est - 1.0 / depth).abs().mean().item() < step
    assert conf[interior].median().item() > 0.5


def test_identical_views_give_a_flat_volume_and_zero_confidence():
    ref, _, K, _ = _pair(2.0, 0.2)
    pr = patch_features(ref) * 10.0
    logits = plane_sweep(pr, pr[:, None], K, torch.eye(4)[None, None], (W, H), DEPTH_RANGE, D)
    inv, conf = read_out(logits, geometry.depth_candidates(*DEPTH_RANGE, D, like=logits))
    assert conf.max().item() == 0.0  # exactly (a node trial: 1.1e-6 from float rounding kept "confidence > 0" pixels)
    flat_inv = (1.0 / geometry.depth_candidates(*DEPTH_RANGE, D)).mean()  # uniform distribution's mean
    assert inv.mean().item() == pytest.approx(float(flat_inv), rel=1e-4)


def test_read_out_of_a_one_hot_distribution():
    depths = geometry.depth_candidates(*DEPTH_RANGE, 8, like=torch.zeros(1))
    logits = torch.full((1, 8, 2, 2), -1e4)
    logits[:, 5] = 0.0
    inv, conf = read_out(logits, depths)
    assert torch.allclose(inv, torch.full_like(inv, 1.0 / float(depths[5])))
    assert torch.allclose(conf, torch.ones_like(conf))


def _model(**overrides):
    torch.manual_seed(0)
    cfg = resolve_config("cpu").replace(pretrained=False, input_size=(W, H), **overrides)
    return build_model(cfg).eval()


@pytest.mark.parametrize("aggregation", [1, 5])
def test_model_geometric_depth_on_a_known_pair_and_single_view(aggregation):
    """The network's own read-out (patch channel only: the learned channel is untrained here) finds the plane."""
    model = _model(sweep_aggregation=aggregation)
    with torch.no_grad():
        model.matching.log_feature_scale.fill_(-30.0)  # switch the untrained learned channel off
        model.matching.log_patch_scale.fill_(0.5 * math.log(50.0))
    ref, src, K, T = _pair(2.0, 0.2)
    images = torch.stack([ref[0], src[0]])[None]
    poses = torch.eye(4).repeat(1, 2, 1, 1)
    poses[0, 1] = torch.linalg.inv(T[0, 0])  # T_world_src = inv(T_src_ref) with the reference at the origin
    Ks = K[:, None].expand(1, 2, 3, 3)
    with torch.no_grad():
        out = model(images, Ks, poses)
        single = model(images[:, :1], Ks[:, :1], poses[:, :1])
    interior = (slice(None), slice(None), slice(12, -12), slice(24, -24))
    assert out["depth_geometric"][interior].median().item() == pytest.approx(2.0, rel=0.06)
    assert out["depth_matching_confidence"][interior].median().item() > 0.5
    assert out["depth_confidence"].shape == out["depth_matching_confidence"].shape == (1, 1, H, W)
    # single view: the reference duplicated with the identity pose -> no information along depth
    assert single["depth_matching_confidence"].max().item() < 1e-4
    assert single["depth_confidence"].max().item() < 1e-4
    assert (out["depth_confidence"] <= out["depth_matching_confidence"] + 1e-6).all()
    # the depth head then equals its learned prior: the gate is confidence x sigmoid(.)
    assert torch.isfinite(single["depth"]).all()


def test_sweep_aggregation_is_the_window_mean_of_the_logits():
    """k x k aggregation = the mean over the window's cells inside the volume (a corner cell: its 3 x 3 of 5 x 5)."""
    model = _model(sweep_aggregation=1)
    ref, src, K, T = _pair(2.0, 0.2)
    with torch.no_grad():
        fr, fs = model.encode(ref), model.encode(src)
        raw = model.sweep_logits(fr.matching, fs.matching[:, None], K, T, (H, W))
        model.config = model.config.replace(sweep_aggregation=5)
        agg = model.sweep_logits(fr.matching, fs.matching[:, None], K, T, (H, W))
    assert agg.shape == raw.shape == (1, D, H // 4, W // 4)
    assert torch.allclose(agg[:, :, 0, 0], raw[:, :, :3, :3].mean((-2, -1)), atol=1e-5)
    assert torch.allclose(agg[:, :, 10, 20], raw[:, :, 8:13, 18:23].mean((-2, -1)), atol=1e-5)
    assert not torch.allclose(agg, raw, atol=1e-3)


def test_every_path_reads_out_the_aggregated_sweep():
    """predict (the runtime), forward, all_views (training) and the inference copy all see the k x k mean."""
    from mtl3d_perception.model.inference import prepare_for_inference

    model = _model(sweep_aggregation=5)
    ref, src, K, T = _pair(2.0, 0.2)
    images = torch.stack([ref[0], src[0]])[None]
    poses = torch.eye(4).repeat(1, 2, 1, 1)
    poses[0, 1] = torch.linalg.inv(T[0, 0])
    Ks = K[:, None].expand(1, 2, 3, 3)
    with torch.no_grad():
        fr, fs = model.encode(ref), model.encode(src)
        aggregated = model.config
        model.config = aggregated.replace(sweep_aggregation=1)
        raw = model.sweep_logits(fr.matching, fs.matching[:, None], K, T, (H, W))
        model.config = aggregated
        want = F.avg_pool2d(raw, 5, 1, 2, count_include_pad=False)
        got = {
            "predict": model.predict(fr, fs, K, T[:, 0])["depth_logits"],
            "forward": model(images, Ks, poses)["depth_logits"],
            "all_views": model(images, Ks, poses, all_views=True)["depth_logits"][:, 0],
            "inference copy": prepare_for_inference(model).predict(fr, fs, K, T[:, 0])["depth_logits"],
        }
    assert not torch.allclose(raw, want, atol=1e-3)
    for path, logits in got.items():
        assert torch.allclose(logits, want, atol=1e-4), path


@pytest.mark.parametrize("k", [0, 2, 4])
def test_sweep_aggregation_must_be_an_odd_window(k):
    from mtl3d_perception.model.config import ConfigError

    with pytest.raises(ConfigError, match=f"sweep_aggregation must be an odd window size >= 1.*got {k}"):
        resolve_config("cpu").replace(sweep_aggregation=k)


def test_sweep_aggregation_needs_the_geometric_depth():
    from mtl3d_perception.model.config import ConfigError

    with pytest.raises(ConfigError, match="sweep_aggregation 5 needs geometric_depth: true"):
        resolve_config("cpu").replace(geometric_depth=False, prior_scale_alignment=False)
    resolve_config("tiny").replace(sweep_aggregation=1)  # the paper-only presets: 1, no error


def test_paper_only_variant_has_no_geometric_outputs():
    cfg = resolve_config("cpu").replace(pretrained=False, geometric_depth=False, sweep_aggregation=1,
                                        prior_scale_alignment=False)
    model = build_model(cfg).eval()
    images = torch.rand(1, 2, 3, H, W)
    K = torch.tensor([[FX, 0, (W - 1) / 2], [0, FX, (H - 1) / 2], [0, 0, 1.0]]).expand(1, 2, 3, 3)
    poses = torch.eye(4).repeat(1, 2, 1, 1)
    poses[0, 1, 0, 3] = 0.1
    with torch.no_grad():
        out = model(images, K, poses)
    assert "depth_confidence" not in out and "depth_logits" not in out
    assert model.matching is None


def test_geometric_depth_needs_the_cvm():
    from mtl3d_perception.model.config import ConfigError

    with pytest.raises(ConfigError, match="geometric_depth needs use_cvm"):
        resolve_config("cpu").replace(use_cvm=False)


def test_pipeline_carries_the_confidence_into_products():
    from mtl3d_perception.geometry import pose_from_quat_trans
    from mtl3d_perception.runtime import Frame, PerceptionPipeline
    from mtl3d_perception.runtime.config import RuntimeConfig

    ref, src, K, T = _pair(2.0, 0.2)
    model = _model()
    depth = model.heads.predictors["depth"]
    with torch.no_grad():  # a learned prior that says 2 m (the plane), so it agrees where the match is right
        depth.conv.weight[0].zero_()
        depth.conv.bias[0] = torch.logit(torch.tensor((0.5 - depth.inv_min) / (depth.inv_max - depth.inv_min)))
    pipe = PerceptionPipeline(model, RuntimeConfig(output_resolution="camera").replace(min_baseline_m=0.05))
    rgb = [(x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8") for x in (src, ref)]
    poses = [pose_from_quat_trans([0, 0, 0, 1.0], [0.2, 0, 0]), pose_from_quat_trans([0, 0, 0, 1.0], [0, 0, 0])]
    K_np = K[0].numpy().astype("float64")
    first = pipe.process(Frame(1_000_000_000, "cam", rgb[0], K_np, poses[0]))
    second = pipe.process(Frame(1_100_000_000, "cam", rgb[1], K_np, poses[1]))
    assert first.single_view and not second.single_view
    for p in (first, second):
        assert p.depth_confidence is not None and p.depth_confidence.shape == p.depth.shape
        assert p.depth_confidence.dtype == "float32"
        assert 0.0 <= float(p.depth_confidence.min()) and float(p.depth_confidence.max()) <= 1.0
    assert float(first.depth_confidence.max()) == 0.0  # single view: nothing matched
    assert float(second.depth_confidence.mean()) > float(first.depth_confidence.mean()) + 0.05
    semantic_only = PerceptionPipeline(_model(), RuntimeConfig().with_outputs({"semantic"})).process(
        Frame(1_000_000_000, "cam", rgb[0], K_np, poses[0]))
    assert semantic_only.depth_confidence is None



def test_published_confidence_is_matching_times_prior_agreement():
    """Equal to the matching confidence where the prior agrees with the geometry, e^-1 of it at a log-ratio of
    AGREEMENT_LOG_SCALE either way, 0 without a match."""
    from mtl3d_perception.model.heads import AGREEMENT_LOG_SCALE, agreement_confidence

    matching = torch.tensor([0.8, 0.8, 0.8, 0.0])
    inv_geo = torch.full((4,), 0.5)
    r = math.exp(AGREEMENT_LOG_SCALE)
    inv_prior = torch.tensor([0.5, 0.5 * r, 0.5 / r, 0.5])
    got = agreement_confidence(matching, inv_prior, inv_geo)
    assert torch.allclose(got, torch.tensor([0.8, 0.8 / math.e, 0.8 / math.e, 0.0]), atol=1e-6)
