"""Real poses (issue 12, kind 4): near-rotations are projected onto SO(3) in one place (geometry.to_rigid)
and used by the sequence reader, ``mtl3d bag``, runtime frames and the TF buffer alike; quaternions are
refused as tf2 refuses them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mtl3d_perception import cli
from mtl3d_perception import geometry as g
from mtl3d_perception.data.sequence import PosedSequence, SequenceError, read_poses
from mtl3d_perception.data.sources.bag import read_bag_sequence
from mtl3d_perception.model import build_model, resolve_config
from mtl3d_perception.msgs.conversions import transform_to_matrix
from mtl3d_perception.replay import ReplayOptions, replay_bag
from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.tf_buffer import InvalidArgumentException, TransformBuffer

CASE = Path("../shared/cases/poses_near_orthonormal")
STRETCH = np.diag([1.0, 1.00006, 1.0])  # the case's rotations are R @ STRETCH: |R^T R - I| = 1.2e-4


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [rx, ry, rz]).as_matrix()


def near_pose() -> tuple[np.ndarray, np.ndarray]:
    """(a pose whose rotation is R @ STRETCH, the exact pose with R)."""
    T = np.eye(4)
    T[:3, :3] = rotation(0.3, -0.2, 1.1)
    T[:3, 3] = (1.0, 2.0, 3.0)
    near = T.copy()
    near[:3, :3] = T[:3, :3] @ STRETCH
    return near, T


def test_near_rotation_is_projected_onto_the_nearest_rotation():
    near, exact = near_pose()
    T, projected = g.to_rigid(near)
    assert projected
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0, abs=1e-12)
    # R @ diag(1, 1+e, 1) projects back to R (the polar factor): within e^2
    np.testing.assert_allclose(T[:3, :3], exact[:3, :3], atol=1e-8)
    np.testing.assert_array_equal(T[:3, 3], exact[:3, 3])
    same, was = g.to_rigid(exact)
    assert not was and np.array_equal(same, exact)  # exact rotations are kept bit for bit


@pytest.mark.parametrize(("scale", "match"), [(1.02, "not a rotation"), (-1.0, "det = -1")])
def test_what_is_not_a_rotation_is_refused(scale, match):
    T = np.eye(4)
    T[:3, :3] = rotation(0.1, 0.2, 0.3) @ np.diag([1.0, 1.0, scale])
    with pytest.raises(ValueError, match=match):
        g.to_rigid(T, "pose 7")


def test_every_pose_path_accepts_and_projects_near_rotations(tmp_path):
    near, exact = near_pose()
    # sequence folder
    (tmp_path / "poses.txt").write_text(" ".join(f"{v:.6f}" for v in near.ravel()) + "\n")
    np.testing.assert_allclose(read_poses(tmp_path / "poses.txt")[0][:3, :3], exact[:3, :3], atol=2e-6)
    # TF buffer
    buf = TransformBuffer()
    buf.set_transform_matrix("odom", "cam", 10, near)
    assert buf.projected_rotations == 1
    T = buf.lookup_matrix("odom", "cam", 10)
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    bad = near.copy()
    bad[:3, :3] *= 1.05
    with pytest.raises(InvalidArgumentException, match="not a rotation"):
        buf.set_transform_matrix("odom", "cam", 20, bad)
    # runtime frame
    Frame(1, "cam", np.zeros((4, 4, 3), np.uint8), np.diag([10.0, 10.0, 1.0]), near).validate()
    with pytest.raises(ValueError, match="not a rotation"):
        Frame(1, "cam", np.zeros((4, 4, 3), np.uint8), np.diag([10.0, 10.0, 1.0]), bad).validate()


def _transform(q):
    return SimpleNamespace(rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3]),
                           translation=SimpleNamespace(x=0.0, y=0.0, z=0.0))


def test_quaternions_are_refused_as_tf2_refuses_them():
    # tf2 (buffer_core.cpp): |x^2 + y^2 + z^2 + w^2 - 1| < 10e-3 is accepted
    T = transform_to_matrix(_transform([0.0, 0.0, 0.0, 1.004]))  # |q|^2 - 1 = 0.008
    np.testing.assert_allclose(T, np.eye(4), atol=1e-12)
    for q in ([0.0, 0.0, 0.0, 1.006], [0.0, 0.0, 0.0, 0.99], [0.0, 0.0, 0.0, 0.0], [np.nan, 0.0, 0.0, 1.0]):
        with pytest.raises(ValueError, match="not normalised|not 4 finite"):
            transform_to_matrix(_transform(q))


@pytest.fixture(scope="module")
def case_bag(tmp_path_factory):
    if not CASE.is_dir():
        pytest.skip(f"{CASE} absent")
    bag = tmp_path_factory.mktemp("near") / "bag"
    assert cli.main(["bag", str(CASE), "--out", str(bag), "--rate", "30"]) == 0
    return bag


def test_case_bag_is_written_with_projected_rotations(case_bag, capsys):
    seq = PosedSequence(CASE)
    assert seq.projected_rotations == len(seq) == 12
    raw = np.loadtxt(CASE / "poses.txt").reshape(-1, 4, 4)
    assert np.abs(raw[0, :3, :3].T @ raw[0, :3, :3] - np.eye(3)).max() == pytest.approx(1.2e-4, rel=0.01)
    frames = read_bag_sequence(case_bag)
    assert len(frames) == 12
    for f, R_raw in zip(frames, raw[:, :3, :3]):
        R = f.T_world_cam[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-9)
        # the projection of R diag(1, 1.00006, 1) is R: the bag's rotation is the raw one without the stretch
        np.testing.assert_allclose(R, R_raw @ np.diag([1.0, 1 / 1.00006, 1.0]), atol=1e-6)


def test_case_replays_two_view(case_bag, tmp_path):
    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(input_size=(64, 48), pretrained=False)).eval()
    replay_bag(case_bag, tmp_path / "out", model, ReplayOptions(progress=False))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["counts"]["processed"] == 12
    two_view = 12 - metrics["multi_view"]["single_view_frames"]
    assert two_view >= 6  # the case README: 11 of 12 like the unedited sequence, at least half
    assert two_view == 11


def test_bad_pose_line_still_names_the_line(tmp_path):
    T = np.eye(4)
    T[0, 0] = 1.5
    (tmp_path / "poses.txt").write_text(" ".join(map(str, np.eye(4).ravel())) + "\n" + " ".join(map(str, T.ravel())))
    with pytest.raises(SequenceError, match=r"poses.txt line 2: pose rotation is not orthonormal"):
        read_poses(tmp_path / "poses.txt")
