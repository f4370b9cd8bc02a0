"""runtime/pose_wait.py and pose_queue.py: when a frame stops waiting for its pose (a recording: as long as the bag
can still deliver it; live: tf_timeout_s), and which waiting frame runs next (``newest`` / ``in_order``)."""

from __future__ import annotations

import numpy as np

from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.pose_queue import PosedFrameQueue
from mtl3d_perception.runtime.pose_wait import RECORDED_TF_HORIZON_S, LivePoseWait, RecordedPoseWait
from mtl3d_perception.runtime.tf_buffer import TransformBuffer, TransformException

S = 1_000_000_000
K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])


def _frame(stamp_ns: int, header_problem: str | None = None) -> Frame:
    return Frame(stamp_ns, "cam", np.zeros((48, 64, 3), np.uint8), K, header_problem=header_problem)


class _Tf:
    """A TransformBuffer with the lookups the wait rules take (msgs.tf.pose_from_tf / latest_stamp_ns over the
    tf2_ros API in the node and replay)."""

    def __init__(self, world_frame: str = "odom") -> None:
        self.tf = TransformBuffer()
        self.tf.set_transform_matrix("base", "cam", 0, np.eye(4), is_static=True)
        self.world_frame = world_frame

    def pose(self, frame: Frame):
        try:
            return self.tf.lookup_matrix(self.world_frame, frame.frame_id, frame.stamp_ns), None
        except TransformException as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def latest(self, frame: Frame) -> int | None:
        try:
            return self.tf.lookup_matrix_with_stamp(self.world_frame, frame.frame_id, 0)[1]
        except TransformException:
            return None


def _odom(wait: RecordedPoseWait, stamp_ns: int, x: float = 0.0) -> None:
    T = np.eye(4)
    T[0, 3] = x
    wait.source.tf.set_transform_matrix("odom", "base", stamp_ns, T)
    wait.tf_read(stamp_ns)


def _wait(tf_timeout_s: float = 0.3) -> RecordedPoseWait:
    source = _Tf()
    wait = RecordedPoseWait(source.pose, source.latest, tf_timeout_s)
    wait.source = source
    return wait


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
    assert wait.check(frame, now_ns=11 * S, end=True).ready and frame.T_world_cam is None


def test_no_tf_path_gives_up_once_the_bag_tf_moved_past_the_frame():
    """No chain from the world frame to the camera: wait until the bag's TF is stamped tf_timeout past the frame."""
    wait = _wait(tf_timeout_s=0.3)
    wait.source.tf.set_transform_matrix("map", "other", 0, np.eye(4), is_static=True)
    wait.source.world_frame = "map"
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


def test_live_wait_runs_out_after_tf_timeout():
    source = _Tf()
    wait = LivePoseWait(source.pose, 0.3)
    frame = _frame(10 * S)
    assert not wait.check(frame, 5 * S, arrived_ns=5 * S - 1).ready  # no odometry yet, just arrived
    assert wait.deadline_ns(5 * S) == 5 * S + 3 * S // 10
    check = wait.check(frame, 5 * S + 3 * S // 10, arrived_ns=5 * S)
    assert check.ready and check.pose is None and "odom" in check.error
    source.tf.set_transform_matrix("odom", "base", 10 * S, np.eye(4))
    assert wait.check(frame, 5 * S, arrived_ns=5 * S).pose is not None


def test_newest_policy_takes_the_newest_posed_frame_and_drops_the_older():
    source = _Tf()
    queue = PosedFrameQueue(LivePoseWait(source.pose, 1.0), policy="newest")
    for i in range(3):
        queue.push(_frame(10 * S + i * S // 10), arrived_ns=i)
    assert queue.take(now_ns=3) is None  # no pose yet, nothing timed out
    source.tf.set_transform_matrix("odom", "base", 10 * S, np.eye(4))
    source.tf.set_transform_matrix("odom", "base", 10 * S + S // 10, np.eye(4))
    job = queue.take(now_ns=3)  # frames 0 and 1 have poses now: the newer one runs, frame 0 is dropped
    assert job.frame.stamp_ns == 10 * S + S // 10 and job.dropped == 1 and job.tf_error is None
    assert [f.stamp_ns for f in queue.frames()] == [10 * S + 2 * S // 10]
    job = queue.take(now_ns=2 + S)  # frame 2's wait ran out: single-view
    assert job.T_world_cam is None and "Extrapolation" in job.tf_error and len(queue) == 0


def test_in_order_policy_keeps_order_and_header_problems_do_not_wait():
    source = _Tf()
    queue = PosedFrameQueue(LivePoseWait(source.pose, 1.0), policy="in_order", max_pending=2)
    queue.push(_frame(10 * S), arrived_ns=0)
    queue.push(_frame(0, header_problem="zero_stamp"), arrived_ns=0)
    assert queue.take(now_ns=1) is None  # the head waits; the one behind it may not overtake
    source.tf.set_transform_matrix("odom", "base", 10 * S, np.eye(4))
    assert queue.take(now_ns=1).frame.stamp_ns == 10 * S
    job = queue.take(now_ns=1)  # no lookup for a zero stamp: at once, no pose, no TF error
    assert job.frame.header_problem == "zero_stamp" and job.T_world_cam is None and job.tf_error is None
    assert queue.push(_frame(1), 0) == 0 and queue.push(_frame(2), 0) == 0 and queue.push(_frame(3), 0) == 1


def test_a_recording_without_dynamic_tf_never_waits():
    """Static transforms only (a bag with /tf_static and no /tf): nothing can arrive later, so a frame without a pose
    stops waiting at once instead of after the 5 s horizon; one with a pose from static TF alone is posed."""
    tf = _Tf()
    wait = RecordedPoseWait(tf.pose, tf.latest, 0.3, dynamic_tf=False)
    check = wait.check(_frame(10 * S), 10 * S)
    assert check.ready and check.pose is None and check.error
    assert not RecordedPoseWait(tf.pose, tf.latest, 0.3).check(_frame(10 * S), 10 * S).ready  # a /tf stream: waits
    tf.tf.set_transform_matrix("odom", "base", 0, np.eye(4), is_static=True)
    posed = wait.check(_frame(10 * S), 10 * S)
    assert posed.ready and posed.pose is not None
