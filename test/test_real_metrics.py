"""Real-frame depth report (issue 18): structure vs scale, baseline bins, confidence sparsification; the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl3d_perception import geometry
from mtl3d_perception.evaluation.metrics import (
    SPARSIFICATION_FRACTIONS,
    RealDepthMeter,
    baseline_bin,
    confidence_thresholds,
    smoothed_depth_normals,
    sparsification,
)
from mtl3d_perception.train.depth_distribution import cell_inverse_depth, soft_target
from mtl3d_perception.train.losses import depth_scale_aware_loss


def test_median_scaling_separates_structure_from_scale():
    gt = torch.rand(2, 1, 6, 8) * 3 + 1
    meter = RealDepthMeter()
    meter.update(gt * 1.25, gt, torch.tensor([True, True]))  # right structure, 25 % too far
    r = meter.compute()
    assert r["depth/abs_rel_median_scaled"] == pytest.approx(0.0, abs=1e-6)  # float32 input
    assert r["depth/scale_ratio_median"] == pytest.approx(1.25)


def test_abs_rel_by_baseline_bin():
    gt = torch.full((3, 1, 2, 2), 2.0)
    pred = torch.stack([torch.full((1, 2, 2), v) for v in (2.2, 2.4, 2.0)])
    meter = RealDepthMeter()
    meter.update(pred, gt, None, torch.tensor([0.0, 0.07, 0.5]))
    r = meter.compute()
    assert r["depth/abs_rel_baseline_single"] == pytest.approx(0.1)
    assert r["depth/abs_rel_baseline_0.05-0.10m"] == pytest.approx(0.2)
    assert r["depth/abs_rel_baseline_>=0.40m"] == pytest.approx(0.0)
    assert [baseline_bin(b) for b in (0.0, 0.02, 0.15, 0.3)] == ["single", "<0.05m", "0.10-0.20m", "0.20-0.40m"]


def test_sparsification_of_a_confidence_that_predicts_the_error():
    err = np.array([0.4, 0.1, 0.3, 0.2])
    conf = np.array([0.1, 0.9, 0.2, 0.8])
    curve = sparsification(err, conf, (0.25, 0.5, 1.0))
    assert curve == pytest.approx({0.25: 0.1, 0.5: 0.15, 1.0: 0.25})
    meter = RealDepthMeter()
    gt = torch.ones(1, 1, 1, 4)
    meter.update(torch.tensor(1.0 + err, dtype=torch.float32).view(1, 1, 1, 4), gt, None, None,
                 torch.tensor(conf, dtype=torch.float32).view(1, 1, 1, 4))
    r = meter.compute()
    assert r["depth/abs_rel_conf_top50"] == pytest.approx(0.15, rel=1e-5)
    assert r["depth/conf_top50_ratio"] == pytest.approx(0.6, rel=1e-5)
    # the threshold that keeps each fraction: the 2 most confident of 4 are those >= 0.8
    assert confidence_thresholds(conf, (0.25, 0.5, 1.0)) == pytest.approx({0.25: 0.9, 0.5: 0.8, 1.0: 0.1})
    assert r["depth/conf_threshold_top50"] == pytest.approx(0.8) and r["depth/conf_threshold_top100"] == pytest.approx(0.1)
    assert (conf.astype(np.float32) >= r["depth/conf_threshold_top50"]).mean() == 0.5  # as a 32FC1 image holds it


def test_sparsification_memory_is_bounded_by_a_systematic_sample():
    """Long sequences (replay at GT resolution): past max_pixels every other pixel is dropped; the curve stays
    that of the whole sequence (here the error is a function of the confidence, so it is exact at the bound)."""
    rng = np.random.default_rng(0)
    full, bounded = RealDepthMeter(), RealDepthMeter(max_pixels=1000)
    for _ in range(5):
        conf = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
        gt = torch.full_like(conf, 2.0)
        pred = gt * (1.0 + 0.5 * (1.0 - conf))  # abs rel 0.5 (1 - confidence)
        full.update(pred, gt, None, None, conf)
        bounded.update(pred, gt, None, None, conf)
    assert sum(len(e) for e in full.errors) == 3000
    assert 500 <= sum(len(e) for e in bounded.errors) <= 1000
    a, b = full.compute(), bounded.compute()
    for f in SPARSIFICATION_FRACTIONS:
        x = int(round(f * 100))
        assert b[f"depth/abs_rel_conf_top{x}"] == pytest.approx(a[f"depth/abs_rel_conf_top{x}"], abs=0.01), x
        assert b[f"depth/conf_threshold_top{x}"] == pytest.approx(a[f"depth/conf_threshold_top{x}"], abs=0.03), x
    assert b["depth/abs_rel_median_scaled"] == a["depth/abs_rel_median_scaled"]  # only the curve is sampled


def test_smoothed_depth_normals_of_a_plane():
    H, W = 24, 32
    K = torch.tensor([[30.0, 0, (W - 1) / 2], [0, 30.0, (H - 1) / 2], [0, 0, 1]])[None]
    depth = torch.full((1, 1, H, W), 2.0)
    depth[..., :2, :] = float("nan")
    n = smoothed_depth_normals(depth, K)
    inner = n[0, :, 6:-4, 4:-4].reshape(3, -1)
    assert torch.allclose(inner, torch.tensor([0.0, 0.0, -1.0])[:, None].expand_as(inner), atol=1e-4)
    assert torch.isnan(n[0, :, 0]).all()


def test_soft_target_expectation_is_the_inverse_depth():
    depths = geometry.depth_candidates(0.3, 10.0, 16, like=torch.zeros(1))
    inv_c = 1.0 / depths
    inv = torch.tensor([0.5, 1.0, 2.7, 1 / 0.3]).view(4, 1, 1, 1)
    t = soft_target(inv, inv_c)
    assert torch.allclose(t.sum(1), torch.ones(4, 1, 1))
    assert torch.allclose((t * inv_c.view(1, -1, 1, 1)).sum(1, keepdim=True), inv, atol=1e-6)
    assert ((t > 0).sum(1) <= 2).all()


def test_cell_inverse_depth_ignores_invalid_pixels():
    depth = torch.tensor([[2.0, 2.0, 4.0, float("nan")], [2.0, 2.0, 4.0, float("nan")]]).view(1, 1, 2, 4)
    inv, mask = cell_inverse_depth(depth, (1, 2))
    assert inv[0, 0, 0].tolist() == pytest.approx([0.5, 0.25])
    assert mask[0, 0, 0].tolist() == [True, True]  # half the pixels valid is enough


def test_scale_aware_loss_is_zero_only_at_the_truth():
    gt = torch.rand(2, 1, 5, 5) + 1.0
    valid = torch.tensor([True, True])
    assert depth_scale_aware_loss(gt, gt, valid).item() < 1e-2  # sqrt(eps) floor
    far = depth_scale_aware_loss(gt * 1.3, gt, valid).item()
    bent = depth_scale_aware_loss(gt * torch.linspace(0.7, 1.3, 5), gt, valid).item()
    assert far > 0.05 and bent > 0.05  # both scale and structure errors cost
