"""runtime/pose_wait.py: a frame of a recording waits for its pose as long as the bag can still deliver it."""

from __future__ import annotations

import numpy as np

from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.pose_wait import RECORDED_TF_HORIZON_S, RecordedPoseWait
from mtl3d_perception.runtime.tf_buffer import TransformBuffer

S = 1_000_000_000
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])


def _frame(stamp_ns: int) -> Frame:
    return Frame(stamp_ns, "cam", np.zeros((48, 64, 3), np.uint8), K)


def _odom(wait: RecordedPoseWait, stamp_ns: int, x: float = 0.0) -> None:
    T = np.eye(4)
    T[0, 3] = x
    wait.tf.set_transform_matrix("odom", "base", stamp_ns, T)
    wait.tf_read(stamp_ns)


def _wait(tf_timeout_s: float = 0.3) -> RecordedPoseWait:
    tf = TransformBuffer()
    tf.set_transform_matrix("base", "cam", 0, np.eye(4), is_static=True)
    return RecordedPoseWait(tf, "odom", tf_timeout_s)


def test_lagging_odometry_is_waited_for_in_bag_time():
    """tf_late_150ms: the chain exists but ends before the frame; it waits (well past tf_timeout), then is posed."""
    wait = _wait(tf_timeout_s=0.1)
    _odom(wait, 10 * S)
    frame = _frame(10 * S + S // 10)
    check = wait.check(frame, now_ns=frame.stamp_ns + 2 * S)  # 2 s of recording later: odometry may still come
    assert not check.ready and "Extrapolation" in check.error
    _odom(wait, 10 * S + S // 5, x=0.2)
    check = wait.check(frame, now_ns=frame.stamp_ns + 2 * S)
    assert check.ready and check.error is None and abs(check.pose[0, 3] - 0.1) < 1e-9


def test_the_horizon_and_the_end_of_the_bag_stop_the_wait():
    wait = _wait()
    _odom(wait, 10 * S)
    frame = _frame(11 * S)
    assert not wait.check(frame, now_ns=11 * S + int(RECORDED_TF_HORIZON_S * S)).ready
    assert wait.check(frame, now_ns=11 * S + int(RECORDED_TF_HORIZON_S * S) + 1).ready  # odometry stopped
    assert wait.check(frame, now_ns=11 * S, end=True).ready and frame.pose is None


def test_no_tf_path_gives_up_once_the_bag_tf_moved_past_the_frame():
    """No chain from the world frame to the camera: wait until the bag's TF is stamped tf_timeout past the frame."""
    wait = _wait(tf_timeout_s=0.3)
    wait.tf.set_transform_matrix("map", "other", 0, np.eye(4), is_static=True)
    wait.world_frame = "map"
    frame = _frame(10 * S)
    assert not wait.check(frame, now_ns=10 * S).ready  # no TF read yet: the chain may still appear
    _odom(wait, 10 * S + S // 5)
    assert not wait.check(frame, now_ns=10 * S + S // 5).ready
    _odom(wait, 10 * S + S // 2)
    check = wait.check(frame, now_ns=10 * S + S // 2)
    assert check.ready and check.pose is None and "ConnectivityException" in check.error


def test_a_frame_older_than_the_cached_tf_gives_up_at_once():
    wait = _wait()
    _odom(wait, 10 * S)
    _odom(wait, 11 * S)
    check = wait.check(_frame(9 * S), now_ns=11 * S)
    assert check.ready and check.pose is None and "past" in check.error
