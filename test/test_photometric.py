"""The photometric reprojection loss (issue 17): ~0 at the true depth, larger for a wrong one, auto-masking,
and a short self-supervised run without depth labels that lowers the depth error (measured)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.data.datasets import SourceConfig, build_dataset
from mtl3d_perception.data.sequence import SequenceFrame, write_sequence
from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics
from mtl3d_perception.geometry import backproject, resize_intrinsics, transform_points
from mtl3d_perception.train.config import load_config
from mtl3d_perception.train.evaluate import evaluate
from mtl3d_perception.train.losses import MultiTaskLoss
from mtl3d_perception.train.photometric import photometric_loss
from mtl3d_perception.train.trainer import Trainer

W, H = 64, 48
WALL_Z = 2.0


def wall_texture(p: np.ndarray) -> np.ndarray:
    """A smooth colour pattern of world points (periods of many pixels, so bilinear sampling is exact enough)."""
    x, y = p[..., 0], p[..., 1]
    return np.stack([0.5 + 0.3 * np.sin(2 * math.pi * x / 0.6), 0.5 + 0.3 * np.cos(2 * math.pi * y / 0.5),
                     0.5 + 0.2 * np.sin(2 * math.pi * (x + y) / 0.8)], -1)


def wall_views(offsets: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cameras translated sideways by ``offsets`` (m) in front of a textured wall at z = 2 m (world = camera 0).

    Returns images ``[1,V,3,H,W]``, K ``[1,V,3,3]``, poses ``[1,V,4,4]``, reference depth ``[1,1,H,W]``.
    """
    K = default_intrinsics(W, H)
    imgs, poses = [], []
    for dx in offsets:
        T = np.eye(4)
        T[0, 3] = dx
        rays = backproject(np.ones((H, W)), K)  # z = 1
        p = transform_points(T, rays * WALL_Z)  # every camera looks straight at the wall
        imgs.append(wall_texture(p).transpose(2, 0, 1))
        poses.append(T)
    V = len(offsets)
    return (torch.tensor(np.stack(imgs), dtype=torch.float32)[None], torch.tensor(np.stack([K] * V), dtype=torch.float32)[None],
            torch.tensor(np.stack(poses), dtype=torch.float32)[None], torch.full((1, 1, H, W), WALL_Z))


def test_loss_is_about_zero_at_the_true_depth_and_grows_with_a_wrong_one():
    images, K, poses, depth = wall_views([0.0, 0.2, -0.2])
    true = photometric_loss(depth, images, K, poses, smoothness=0.0)
    assert float(true["total"]) < 2e-4 and float(true["kept_fraction"]) > 0.6  # measured 2.5e-5
    losses = [float(photometric_loss(depth * s, images, K, poses, smoothness=0.0)["total"]) for s in (1.1, 1.3, 2.0)]
    assert losses[0] > 5 * float(true["total"])
    assert losses == sorted(losses)  # the further from the truth, the larger
    d = depth.clone().requires_grad_()
    photometric_loss(d * 1.3, images, K, poses)["total"].backward()
    assert torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0


def test_static_camera_pixels_are_auto_masked():
    images, K, poses, depth = wall_views([0.0, 0.0])  # the source is the reference: nothing to learn
    out = photometric_loss(depth * 1.5, images, K, poses, smoothness=0.0)
    assert float(out["kept_fraction"]) == 0.0 and float(out["total"]) == 0.0
    unmasked = photometric_loss(depth * 1.5, *wall_views([0.0, 0.2])[:3], automask=False, smoothness=0.0)
    assert float(unmasked["kept_fraction"]) > 0.5


def test_term_is_registered_and_usable_alone():
    images, K, poses, depth = wall_views([0.0, 0.2])
    batch = MultiViewBatch(images=images, K=K, poses=poses, semantic=torch.zeros(1, 2, H, W, dtype=torch.long),
                           depth=torch.full((1, 2, 1, H, W), float("nan")), normals=torch.full((1, 2, 3, H, W), float("nan")),
                           boundary=torch.full((1, 2, 1, H, W), float("nan")),
                           valid={t: torch.zeros(1, 2, dtype=torch.bool) for t in ("semantic", "depth", "normals", "boundary")})
    crit = MultiTaskLoss({}, extra={"photometric": {"weight": 2.0}})
    total, logs = crit(batch, {"depth": depth * 1.3})
    assert float(total) == pytest.approx(2 * logs["loss/photometric"]) and logs["loss/photometric"] > 0.005
    assert "loss/photometric/reprojection" in logs


@pytest.fixture(scope="module")
def antialiased_sequence(tmp_path_factory):
    """A synthetic room rendered at 4x and area-downsampled (no aliasing), with depth labels for measuring."""
    sc = SyntheticScene(5)
    path = sc.camera_path(24, rate_hz=5.0)
    S = 4
    K_hi = default_intrinsics(W * S, H * S)
    K = resize_intrinsics(K_hi, (W * S, H * S), (W, H))

    def frames():
        for i, T in enumerate(path):
            rgb = cv2.resize(sc.render(T, K_hi, (W * S, H * S))["rgb"], (W, H), interpolation=cv2.INTER_AREA)
            yield SequenceFrame(index=i, stamp=1.7e9 + i / 5, rgb=rgb, depth=sc.render(T, K, (W, H))["depth"], K=K,
                                T_world_cam=T)

    return write_sequence(tmp_path_factory.mktemp("selfsup") / "seq", frames())


def test_self_supervised_run_without_depth_labels_lowers_the_depth_error(antialiased_sequence, tmp_path):
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[1] / "config" / "train" / "smoke.yaml"
    cfg = load_config(smoke, [
        f"out_dir={tmp_path}", "steps=40", "optim.lr=2e-3", "data.augment.enabled=false",
        f"data.train=[{{kind: sequence, path: '{antialiased_sequence}', tasks: [], max_gap: 2}}]",
        "loss.weights={semantic: 0, depth: 0, normals: 0, boundary: 0}", "loss.extra={photometric: {weight: 1.0}}"])
    trainer = Trainer(cfg)
    assert not any(trainer.train_set[(i, 0)].valid["depth"].any() for i in range(3))  # no depth label is used
    val = build_dataset([SourceConfig(kind="sequence", path=str(antialiased_sequence), tasks=("depth",), eval_gap=2)],
                        image_size=(W, H))

    def abs_rel() -> float:
        return evaluate(trainer.model, val, batch_size=4, modes=("two_view",))["two_view"]["metrics"]["depth/abs_rel"]

    before = abs_rel()
    trainer.fit()
    after = abs_rel()
    # measured when written: 0.81 -> 0.70 in 40 steps from random weights
    assert after < 0.92 * before
