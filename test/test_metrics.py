"""Metrics against hand-computed values on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3d_perception.evaluation.metrics import (
    BoundaryMeter,
    CrossViewMeter,
    DepthMeter,
    NormalsMeter,
    SemanticMeter,
    delta_m,
)


def test_semantic_miou_and_pixel_accuracy():
    label = torch.tensor([[[0, 1], [1, 255]]])
    pred = torch.tensor([[[0, 1], [0, 2]]])
    m = SemanticMeter(3)
    m.update(pred, label)
    # class 0: tp 1, union 2; class 1: tp 1, union 2; class 2 absent everywhere that counts.
    assert m.compute() == pytest.approx({"semantic/miou": 50.0, "semantic/pixel_acc": 200 / 3})
    logits = torch.nn.functional.one_hot(pred.clamp_max(2), 3).permute(0, 3, 1, 2).float()
    m2 = SemanticMeter(3)
    m2.update(logits, label)
    m2.update(logits, label, valid=torch.tensor([False]))  # an invalid image adds nothing
    assert m2.compute() == m.compute()


def test_semantic_predicted_ids_outside_the_classes_are_refused():
    """An id >= K would land in another cell of the flattened confusion matrix (label * K + id)."""
    m = SemanticMeter(3)
    with pytest.raises(ValueError, match=r"predicted class ids must be in \[0, 3\), got 0..3"):
        m.update(torch.tensor([[[0, 3]]]), torch.tensor([[[0, 0]]]))
    m.update(torch.tensor([[[0, 255]]]), torch.tensor([[[0, 255]]]))  # at an ignored pixel it does not count
    assert m.compute()["semantic/miou"] == 100.0


def test_depth_metrics():
    pred = torch.tensor([[[[1.0, 3.0, 7.0]]]])
    gt = torch.tensor([[[[1.0, 2.0, float("nan")]]]])
    m = DepthMeter()
    m.update(pred, gt)
    r = m.compute()
    assert r["depth/abs_err"] == pytest.approx(0.5)
    assert r["depth/abs_rel"] == pytest.approx(0.25)
    assert r["depth/rmse"] == pytest.approx(math.sqrt(0.5))
    assert r["depth/rmse_log"] == pytest.approx(math.sqrt(math.log(1.5) ** 2 / 2))
    assert (r["depth/delta1"], r["depth/delta2"], r["depth/delta3"]) == pytest.approx((50.0, 100.0, 100.0))


def test_depth_accumulates_over_batches_like_one_batch():
    g = torch.Generator().manual_seed(0)
    pred, gt = 1 + torch.rand(4, 1, 5, 5, generator=g), 1 + torch.rand(4, 1, 5, 5, generator=g)
    whole, parts = DepthMeter(), DepthMeter()
    whole.update(pred, gt)
    parts.update(pred[:1], gt[:1])
    parts.update(pred[1:], gt[1:])
    assert parts.compute() == pytest.approx(whole.compute())


def test_normals_angles():
    gt = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 1, 4).clone()
    ang = np.deg2rad([0.0, 10.0, 45.0, 90.0])
    pred = torch.tensor(np.stack([np.sin(ang), np.zeros(4), -np.cos(ang)]), dtype=torch.float32).view(1, 3, 1, 4)
    gt[0, :, 0, 3] = float("nan")  # the 90-degree pixel is unlabelled
    m = NormalsMeter()
    m.update(pred, gt)
    r = m.compute()
    assert r["normals/mean"] == pytest.approx(55 / 3, abs=1e-3)
    assert r["normals/median"] == pytest.approx(10.0, abs=0.01)
    assert r["normals/within_11.25"] == pytest.approx(200 / 3)
    assert r["normals/within_22.5"] == pytest.approx(200 / 3)
    assert r["normals/within_30"] == pytest.approx(200 / 3)


def _edge(H=40, W=40, col=20):
    b = torch.zeros(1, 1, H, W)
    b[..., col] = 1.0
    return b


def test_boundary_odsf():
    gt = _edge()
    tol_px = 0.011 * math.hypot(40, 40)  # 0.62 px: only exact hits match
    assert tol_px < 1
    for pred, expected in [(_edge(), 100.0), (_edge(col=23), 0.0)]:
        m = BoundaryMeter(logits=False)
        m.update(pred, gt)
        assert m.compute()["boundary/odsF"] == pytest.approx(expected)
    # Half the edge found: P = 1, R = 0.5 -> F = 2/3.
    half = _edge()
    half[..., 20:, :] = 0
    m = BoundaryMeter(logits=False)
    m.update(half, gt)
    assert m.compute()["boundary/odsF"] == pytest.approx(200 / 3)
    # A wider tolerance (0.1 x diagonal = 5.7 px) accepts the shifted edge.
    m = BoundaryMeter(logits=False, max_dist=0.1)
    m.update(_edge(col=23), gt)
    assert m.compute()["boundary/odsF"] == pytest.approx(100.0)


def test_boundary_threshold_sweep_picks_the_best_threshold():
    gt = _edge()
    pred = _edge() * 0.7 + _edge(col=5) * 0.3  # true edge at 0.7, a false one at 0.3
    m = BoundaryMeter(thresholds=np.array([0.2, 0.5, 0.9]), logits=False)
    m.update(pred, gt)
    r = m.compute()
    assert r["boundary/odsF"] == pytest.approx(100.0) and r["boundary/ods_threshold"] == 0.5


def test_delta_m():
    base = {"semantic/miou": 50.0, "depth/rmse": 0.5}
    res = {"semantic/miou": 55.0, "depth/rmse": 0.4}
    # (+10 % + 20 %) / 2
    assert delta_m(res, base) == pytest.approx(15.0)
    assert delta_m(base, base) == 0.0
    with pytest.raises(ValueError, match="no metric"):
        delta_m({"x": 1.0}, base)


def test_cross_view_consistency_of_a_plane():
    H, W = 12, 16
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]]).unsqueeze(0)
    T_a = torch.eye(4).unsqueeze(0)
    T_b = torch.eye(4).unsqueeze(0)
    T_b[0, 0, 3] = 0.2  # camera b 20 cm to the right: a fronto-parallel plane keeps its depth
    plane = torch.full((1, 1, H, W), 2.0)
    m = CrossViewMeter()
    m.update(plane, plane, K, K, T_a, T_b)
    r = m.compute()
    assert r["cross_view/abs_err"] == pytest.approx(0.0, abs=1e-9)
    m = CrossViewMeter()
    m.update(plane, plane * 1.1, K, K, T_a, T_b)
    r = m.compute()
    assert r["cross_view/abs_err"] == pytest.approx(0.2, rel=1e-6)
    assert r["cross_view/abs_rel"] == pytest.approx(0.2 / 2.2, rel=1e-6)


def _plane_views(T_world_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K [1,3,3], T_world_a = I [1,4,4], T_world_b [1,4,4]) for 12 x 16 views of a fronto-parallel plane."""
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]], dtype=torch.float64).unsqueeze(0)
    return K, torch.eye(4, dtype=torch.float64).unsqueeze(0), T_world_b.to(torch.float64).unsqueeze(0)


def test_cross_view_consistency_of_a_plane_seen_moving_forward():
    """Camera b 0.5 m ahead of a, looking the same way: the plane 2 m before a is 1.5 m before b. b's depth 1.5
    agrees everywhere a's pixels land in b (error 0); a depth of 1.6 is off by 0.1 m for every such pixel."""
    T = torch.eye(4)
    T[2, 3] = 0.5
    K, T_a, T_b = _plane_views(T)
    depth_a = torch.full((1, 1, 12, 16), 2.0, dtype=torch.float64)
    m = CrossViewMeter()
    m.update(depth_a, torch.full_like(depth_a, 1.5), K, K, T_a, T_b)
    n_seen = m.sums[0]
    assert m.compute() == {"cross_view/abs_err": pytest.approx(0.0, abs=1e-12),
                           "cross_view/abs_rel": pytest.approx(0.0, abs=1e-12)}
    # b is zoomed in by 2/1.5: pixel u lands at (u - 7.5) * 4/3 + 7.5, inside [0, 15] for u in 2..13 (v: 2..9)
    assert n_seen == 12 * 8
    m = CrossViewMeter()
    m.update(depth_a, torch.full_like(depth_a, 1.6), K, K, T_a, T_b)
    assert m.sums[0] == n_seen
    assert m.compute() == {"cross_view/abs_err": pytest.approx(0.1, rel=1e-9),
                           "cross_view/abs_rel": pytest.approx(0.1 / 1.6, rel=1e-9)}


def test_cross_view_consistency_skips_depth_edges_and_invalid_depth():
    """A 1 m step in b's depth: a's pixels whose bilinear taps straddle it are not compared (no invented surface),
    nor those landing on b's invalid depth; the rest of a plane seen by an identical camera agree exactly."""
    K, T_a, T_b = _plane_views(torch.eye(4))
    depth_a = torch.full((1, 1, 12, 16), 2.0, dtype=torch.float64)
    depth_b = depth_a.clone()
    depth_b[..., 8:] = 3.0  # columns 8.. are a wall 1 m behind: a's pixels there disagree by 1 m
    depth_b[..., 0, :] = float("nan")
    m = CrossViewMeter()
    m.update(depth_a, depth_b, K, K, T_a, T_b)
    assert m.sums[0] == 11 * 16  # identity pose: every tap but the pixel's own has weight 0, no edge is straddled
    assert m.compute()["cross_view/abs_err"] == pytest.approx(1.0 * 8 / 16, rel=1e-9)
    T = torch.eye(4)
    T[0, 3] = 0.05  # b 5 cm to the right: each pixel lands half a pixel left, between two of b's columns
    K, T_a, T_b = _plane_views(T)
    depth_b = torch.full_like(depth_a, 2.0)
    depth_b[..., 8:] = 3.0
    m = CrossViewMeter()
    m.update(depth_a, depth_b, K, K, T_a, T_b)
    # u - 0.5 for u = 1..15 (u = 0 leaves b); the one straddling columns 7|8 (u = 8) is skipped
    assert m.sums[0] == 12 * 14
    assert m.compute()["cross_view/abs_err"] == pytest.approx(1.0 * 7 / 14, rel=1e-9)


def test_cross_view_metric_and_loss_share_one_warp(monkeypatch):
    """The metric goes through geometry.backward_warp, the function the cross-view and photometric losses call."""
    from mtl3d_perception import geometry
    from mtl3d_perception.train import cross_view, photometric

    assert cross_view.backward_warp is geometry.backward_warp is photometric.backward_warp
    calls = []
    warp = geometry.backward_warp
    monkeypatch.setattr(geometry, "backward_warp", lambda *a: calls.append(a) or warp(*a))
    K, T_a, T_b = _plane_views(torch.eye(4))
    CrossViewMeter().update(torch.ones(1, 1, 12, 16), torch.ones(1, 1, 12, 16), K, K, T_a, T_b)
    assert len(calls) == 1


def test_merge_pools_like_one_meter():
    """Per-frame meters merged give the metrics of one meter fed every frame (replay pools this way)."""
    from mtl3d_perception.evaluation.metrics import CrossViewMeter, DepthMeter, NormalsMeter, SemanticMeter

    g = torch.Generator().manual_seed(0)
    preds = [torch.rand(1, 1, 4, 5, generator=g) + 0.5 for _ in range(2)]
    labels = [torch.rand(1, 1, 4, 5, generator=g) + 0.5 for _ in range(2)]
    pooled, parts = DepthMeter(), [DepthMeter(), DepthMeter()]
    for p, gt, part in zip(preds, labels, parts):
        pooled.update(p, gt)
        part.update(p, gt)
    assert parts[0].merge(parts[1]).compute() == pytest.approx(pooled.compute())
    sem, sem_parts = SemanticMeter(3), [SemanticMeter(3), SemanticMeter(3)]
    for i, part in enumerate(sem_parts):
        pred, gt = torch.full((1, 2, 2), i), torch.tensor([[[0, 1], [2, i]]])
        sem.update(pred, gt)
        part.update(pred, gt)
    assert sem_parts[0].merge(sem_parts[1]).compute() == pytest.approx(sem.compute())
    normals = NormalsMeter().merge(NormalsMeter())
    assert normals.compute() == {} and CrossViewMeter().merge(CrossViewMeter()).compute() == {}


def test_one_normal_colouring():
    """(1 - n) / 2: a wall facing the camera is blue, a floor (normal up, -y in the optical frame) green; NaN grey."""
    from mtl3d_perception.evaluation.montage import COLUMNS, colorize_normals, montage_row

    n = np.array([[[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [np.nan, 0.0, 0.0]]], np.float32)
    np.testing.assert_array_equal(colorize_normals(n)[0], [[127, 127, 255], [127, 255, 127], [96, 96, 96]])
    row = montage_row(np.zeros((2, 3, 3), np.uint8), depth_range=(0.5, 10.0), normals=np.tile(n[:, :1], (2, 3, 1)))
    assert row.shape == (2, 3 * len(COLUMNS), 3)
    np.testing.assert_array_equal(row[:, 3 * COLUMNS.index("normals"):][0, 0], [127, 127, 255])
    np.testing.assert_array_equal(row[0, 3 * COLUMNS.index("depth")], [96, 96, 96])  # missing: grey


def test_eval_montages_have_the_title_row_replays_have():
    """`mtl3d eval`'s and training's montages (``montage``) are headed by the title row of replay's montage.png
    (``with_titles``): they used to be rows alone, columns unnamed."""
    from mtl3d_perception.data.batch import MultiViewBatch, ViewSample
    from mtl3d_perception.evaluation.montage import columns_for, montage, montage_row, with_titles

    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    batch = MultiViewBatch.from_views([ViewSample(rgb, np.eye(3), np.eye(4))])
    pic = montage(batch, {})
    # no ground truth in the batch: no GT columns (RGB and the four predictions)
    columns = columns_for({})
    assert columns == ("rgb", "semantic", "depth", "normals", "boundary")
    np.testing.assert_array_equal(pic, with_titles([montage_row(rgb, depth_range=(0.3, 10.0), columns=columns)],
                                                   columns))
    assert pic.shape[0] > rgb.shape[0] and (pic[0] == 255).all()  # the white title row on top
