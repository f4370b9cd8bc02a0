"""When a frame stops waiting for its pose: live (the node) or in a recording (replay) (DESIGN §2, TF lookup).

Both rules answer :class:`PoseCheck` for a frame at a moment of the driver's clock; ``runtime.pose_queue`` asks
them and picks which frame runs next. Poses come from a ``lookup(frame) -> (T_world_cam, None) | (None, why
not)`` callable (``msgs.tf.pose_from_tf`` over a tf2_ros Buffer), so nothing here needs ROS.

:class:`LivePoseWait` (the node): a frame waits ``tf_timeout_s`` of wall time from its arrival, then runs
single-view: transforms that come later are useless to a robot that must answer now.

:class:`RecordedPoseWait` (replay): a recording has no such deadline, every transform the bag holds can still be
read. So a frame of a recording waits, in bag time, for as long as the bag can still deliver its pose:

- its pose can be looked up: ready, posed;
- the chain ``world_frame <- frame`` exists but its newest common stamp is still before the frame (odometry is
  recorded after the image, e.g. visual odometry's latency): wait, up to ``horizon_s`` of recording time after the
  frame's stamp (beyond that the odometry stopped; the frames behind it must not pile up in memory);
- the chain's data already reaches past the frame and the lookup still fails (the frame is older than the cached
  transforms): no pose, now;
- there is no chain yet (frames unknown or not connected): wait until the bag's transforms are stamped more than
  ``tf_timeout_s`` past the frame (the TF stream moved on without connecting it), or ``horizon_s``;
- the bag ends: no pose for whatever still waits;
- the recording has no dynamic TF stream at all (``dynamic_tf`` False: static transforms only): nothing can come
  later, so a failed lookup is final at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mtl3d_perception.runtime.frames import Frame

# Recording time a frame waits at most for a chain whose data lags behind it. Odometry later than this is not
# latency but a stopped source; 5 s covers visual-inertial odometry and mapping corrections (map -> odom at 1 Hz).
RECORDED_TF_HORIZON_S = 5.0

PoseLookup = Callable[[Frame], "tuple[np.ndarray | None, str | None]"]
LatestStamp = Callable[[Frame], "int | None"]


@dataclass
class PoseCheck:
    """The outcome of one readiness test: ``ready`` (stop waiting), with ``pose`` (``T_world_cam``) or ``error``."""

    ready: bool
    pose: np.ndarray | None = None
    error: str | None = None


class LivePoseWait:
    """The node's rule: the pose, or single-view once the frame has waited ``timeout_s`` since it arrived."""

    def __init__(self, lookup: PoseLookup, timeout_s: float) -> None:
        self.lookup = lookup
        self.timeout_s = timeout_s

    @property
    def timeout_s(self) -> float:
        return self.timeout_ns * 1e-9

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"tf_timeout_s must be >= 0, got {value}")
        self.timeout_ns = int(value * 1e9)

    def check(self, frame: Frame, now_ns: int, *, arrived_ns: int, end: bool = False) -> PoseCheck:
        pose, error = self.lookup(frame)
        if error is None:
            return PoseCheck(True, pose=pose)
        return PoseCheck(end or now_ns - arrived_ns >= self.timeout_ns, error=error)

    def deadline_ns(self, arrived_ns: int) -> int | None:
        """When a frame that arrived at ``arrived_ns`` stops waiting without new data."""
        return arrived_ns + self.timeout_ns


class RecordedPoseWait:
    """The recorded-data rule above, for one replay.

    Args:
        lookup: a frame's pose, or why there is none.
        latest: the newest common stamp of the chain ``world_frame <- frame`` (tf2's lookup at time 0), or None
            when there is no chain.
        tf_timeout_s: how far past a frame the bag's TF stamps must be before a frame with no TF chain gives up.
        horizon_s: the most recording time a frame waits after its stamp.
        dynamic_tf: whether the recording has a dynamic TF stream (``/tf``); without one (``/tf_static`` only) no
            transform can come later than the frame and nothing waits.
    """

    def __init__(self, lookup: PoseLookup, latest: LatestStamp, tf_timeout_s: float, *,
                 horizon_s: float = RECORDED_TF_HORIZON_S, dynamic_tf: bool = True) -> None:
        self.lookup = lookup
        self.dynamic_tf = dynamic_tf
        self.latest = latest
        self.tf_timeout_ns = int(tf_timeout_s * 1e9)
        self.horizon_ns = int(max(horizon_s, tf_timeout_s) * 1e9)
        self.newest_tf_ns: int | None = None  # newest stamp of a dynamic transform read so far

    def tf_read(self, stamp_ns: int) -> None:
        """Note a dynamic transform read from the bag (static ones carry no time)."""
        self.newest_tf_ns = stamp_ns if self.newest_tf_ns is None else max(self.newest_tf_ns, stamp_ns)

    def check(self, frame: Frame, now_ns: int, *, arrived_ns: int | None = None, end: bool = False) -> PoseCheck:
        """Whether ``frame`` stops waiting at bag time ``now_ns`` (``end``: the bag has no more messages)."""
        stamp = frame.stamp_ns
        pose, error = self.lookup(frame)
        if error is None:
            return PoseCheck(True, pose=pose)
        if end or not self.dynamic_tf or now_ns - stamp > self.horizon_ns:
            return PoseCheck(True, error=error)
        latest = self.latest(frame)
        if latest is None:  # no chain yet: give up once the bag's TF has moved well past the frame
            moved_on = self.newest_tf_ns is not None and self.newest_tf_ns - stamp > self.tf_timeout_ns
            return PoseCheck(moved_on, error=error)
        # a chain: its data still behind the frame means more may come; past it, the frame is older than the cache
        return PoseCheck(latest >= stamp, error=error)

    def deadline_ns(self, arrived_ns: int) -> int | None:
        """None: a recording's frames stop waiting on new bag data only, never on a wall-clock deadline."""
        return None
