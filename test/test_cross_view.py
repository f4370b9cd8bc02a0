"""Seed 003: cross-view consistency of depth and semantics, on exact synthetic multi-view ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics
from mtl3d_perception.geometry import MIN_Z, relative_pose
from mtl3d_perception.train.cross_view import CrossViewLoss, CrossViewTerm, _weighted_mean, warp_pair
from mtl3d_perception.train.loss_base import build_loss_term

W, H = 64, 48
NUM_CLASSES = 13


@torch.no_grad()
def depth_consistency_error(depth_ref: Tensor, depth_src: Tensor, K_ref: Tensor, K_src: Tensor,
                            T_src_ref: Tensor, *, occlusion_tol: float = float("inf")) -> Tensor:
    """Mean relative disagreement ``|z_src_in_ref - d_ref| / d_ref`` over in-view pixels (a check of warp_pair on ground truth).

    The geometry is the reference prediction itself. By default only the out-of-view and behind-camera
    tests apply (occluded pixels count as disagreement); pass ``occlusion_tol`` to drop them too.
    """
    w = warp_pair(depth_ref, depth_src, K_ref, K_src, T_src_ref, occlusion_tol=occlusion_tol,
                  conf_tau=float("inf"))
    rel = (w["z_src_in_ref"] - depth_ref).abs() / depth_ref.clamp_min(MIN_Z)
    return _weighted_mean(rel, w["visible"])


@pytest.fixture(scope="module")
def pair() -> dict[str, torch.Tensor]:
    """Two views 3 frames apart on a synthetic camera path, with exact depth and semantics."""
    scene = SyntheticScene(3)
    K = default_intrinsics(W, H)
    poses = scene.camera_path(8)[[0, 3]]
    views = [scene.render(T, K, (W, H)) for T in poses]
    depth = torch.from_numpy(np.stack([v["depth"] for v in views])).float()[None, :, None]  # [1,2,1,H,W]
    semantic = torch.from_numpy(np.stack([v["semantic"] for v in views]).astype(np.int64))[None]
    logits = 5.0 * F.one_hot(semantic, NUM_CLASSES).permute(0, 1, 4, 2, 3).float()  # [1,2,K,H,W]
    return {
        "depth": depth, "logits": logits, "semantic": semantic,
        "K": torch.from_numpy(K).float().expand(1, 2, 3, 3),
        "poses": torch.from_numpy(poses).float()[None],
    }


def _rotate_source(poses: torch.Tensor, deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    R = torch.tensor([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])
    out = poses.clone()
    out[:, 1] = poses[:, 1] @ R
    return out


def test_ground_truth_pair_is_consistent_and_a_wrong_pose_is_not(pair):
    loss = CrossViewLoss()
    kw = {"semantic": pair["logits"], "gt_depth": pair["depth"]}
    exact = loss(pair["depth"], pair["K"], pair["poses"], **kw)
    assert exact["visible_fraction"] > 0.6
    assert exact["depth"] < 0.006  # metres: bilinear resampling of ~3 m depths, edges masked
    assert exact["semantic"] < 1e-3
    previous = exact
    for deg in (1.0, 3.0):
        wrong = loss(pair["depth"], pair["K"], _rotate_source(pair["poses"], deg), **kw)
        assert wrong["depth"] > 3 * exact["depth"] and wrong["semantic"] > 3 * exact["semantic"]
        assert wrong["depth"] > previous["depth"] and wrong["semantic"] > previous["semantic"]
        previous = wrong


def test_prediction_geometry_without_labels(pair):
    """Without depth labels the (confident) predictions give the geometry; GT-quality predictions agree."""
    loss = CrossViewLoss()
    exact = loss(pair["depth"], pair["K"], pair["poses"], semantic=pair["logits"])
    wrong = loss(pair["depth"], pair["K"], _rotate_source(pair["poses"], 3.0), semantic=pair["logits"])
    assert exact["depth"] < 0.006 and exact["semantic"] < 1e-3
    assert wrong["depth"] > 5 * exact["depth"]


def test_occlusion_and_out_of_view_are_masked(pair):
    T = relative_pose(pair["poses"][:, 1], pair["poses"][:, 0])
    d = pair["depth"]
    w = warp_pair(d[:, 0], d[:, 1], pair["K"][:, 0], pair["K"][:, 1], T, gt_depth_ref=d[:, 0], gt_depth_src=d[:, 1])
    assert 0.6 < w["visible"].mean() < 1.0
    # move the source 2 m sideways: most reference pixels leave the source image
    T_far = T.clone()
    T_far[:, 0, 3] += 2.0
    w_far = warp_pair(d[:, 0], d[:, 1], pair["K"][:, 0], pair["K"][:, 1], T_far, gt_depth_ref=d[:, 0])
    assert w_far["visible"].mean() < w["visible"].mean() - 0.2


def test_gradients_reach_both_views(pair):
    depth = (pair["depth"] * 1.05).requires_grad_()
    logits = (pair["logits"] + 0.3 * torch.randn_like(pair["logits"])).requires_grad_()
    out = CrossViewLoss()(depth, pair["K"], pair["poses"], semantic=logits, gt_depth=pair["depth"])
    out["total"].backward()
    assert torch.isfinite(depth.grad).all() and torch.isfinite(logits.grad).all()
    for v in range(2):  # symmetric pairs: every view's depth and logits are pushed
        assert depth.grad[:, v].abs().sum() > 0 and logits.grad[:, v].abs().sum() > 0


def test_nan_labels_do_not_leak(pair):
    gt = pair["depth"].clone()
    gt[..., :10] = float("nan")
    depth = pair["depth"].clone().requires_grad_()
    out = CrossViewLoss()(depth, pair["K"], pair["poses"], semantic=pair["logits"], gt_depth=gt)
    out["total"].backward()
    assert torch.isfinite(out["total"]) and torch.isfinite(depth.grad).all()


def test_single_view_gives_zero_and_metric_is_zero_on_ground_truth(pair):
    d = pair["depth"]
    assert CrossViewLoss()(d[:, :1], pair["K"][:, :1], pair["poses"][:, :1])["total"] == 0
    T = relative_pose(pair["poses"][:, 1], pair["poses"][:, 0])
    err = depth_consistency_error(d[:, 0], d[:, 1], pair["K"][:, 0], pair["K"][:, 1], T, occlusion_tol=0.05)
    assert err < 2e-3
    assert depth_consistency_error(d[:, 0], d[:, 1] * 1.1, pair["K"][:, 0], pair["K"][:, 1], T) > 0.05


def test_registered_term_on_a_batch(pair):
    from mtl3d_perception.data.batch import MultiViewBatch

    term = build_loss_term("cross_view")
    assert isinstance(term, CrossViewTerm) and term.needs_all_views
    d = pair["depth"]
    batch = MultiViewBatch(
        images=torch.rand(1, 2, 3, H, W), K=pair["K"], poses=pair["poses"], semantic=pair["semantic"], depth=d,
        normals=torch.full((1, 2, 3, H, W), float("nan")), boundary=torch.full((1, 2, 1, H, W), float("nan")),
        valid={"semantic": torch.ones(1, 2, dtype=torch.bool), "depth": torch.tensor([[True, False]]),
               "normals": torch.zeros(1, 2, dtype=torch.bool), "boundary": torch.zeros(1, 2, dtype=torch.bool)},
    )
    value, logs = term(batch, {"depth": d, "semantic": pair["logits"]})
    assert value < 0.01 and {"cross_view", "cross_view/depth", "cross_view/semantic"} <= set(logs)
    with pytest.raises(ValueError, match="all_views"):
        term(batch, {"depth": d[:, 0], "semantic": pair["logits"][:, 0]})
