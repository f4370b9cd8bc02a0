"""How long a frame of a *recording* waits for its pose: replay's in-order readiness rule (DESIGN §2, TF lookup).

Live, a frame waits ``tf_timeout_s`` of wall time for TF and then runs single-view: transforms that come later
are useless to a robot that must answer now. A recording has no such deadline: every transform the bag holds can
still be read. So a frame of a recording waits, in bag time, for as long as the bag can still deliver its pose:

- its pose can be looked up: ready, posed;
- the chain ``world_frame <- frame`` exists but its newest common stamp is still before the frame (odometry is
  recorded after the image, e.g. visual odometry's latency): wait, up to ``horizon_s`` of recording time after the
  frame's stamp (beyond that the odometry stopped; the frames behind it must not pile up in memory);
- the chain's data already reaches past the frame and the lookup still fails (the frame is older than the cached
  transforms): no pose, now;
- there is no chain yet (frames unknown or not connected): wait until the bag's transforms are stamped more than
  ``tf_timeout_s`` past the frame (the TF stream moved on without connecting it), or ``horizon_s``;
- the bag ends: no pose for whatever still waits.

The node's live rule (newest frame with TF, else the newest whose wait ran out) is in ``ros/node.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.tf_buffer import TransformBuffer, TransformException

# Recording time a frame waits at most for a chain whose data lags behind it. Odometry later than this is not
# latency but a stopped source; 5 s covers visual-inertial odometry and mapping corrections (map -> odom at 1 Hz).
RECORDED_TF_HORIZON_S = 5.0


@dataclass
class PoseCheck:
    """The outcome of one readiness test: ``ready`` (stop waiting), with ``pose`` (``T_world_cam``) or ``error``."""

    ready: bool
    pose: np.ndarray | None = None
    error: str | None = None


class RecordedPoseWait:
    """The rule above for one replay: its TF buffer, world frame and ``tf_timeout_s``.

    Args:
        tf: the replay's transform buffer.
        world_frame: the fixed frame poses are looked up in.
        tf_timeout_s: how far past a frame the bag's TF stamps must be before a frame with no TF chain gives up.
        horizon_s: the most recording time a frame waits after its stamp.
    """

    def __init__(self, tf: TransformBuffer, world_frame: str, tf_timeout_s: float, *,
                 horizon_s: float = RECORDED_TF_HORIZON_S) -> None:
        self.tf = tf
        self.world_frame = world_frame
        self.tf_timeout_ns = int(tf_timeout_s * 1e9)
        self.horizon_ns = int(max(horizon_s, tf_timeout_s) * 1e9)
        self.newest_tf_ns: int | None = None  # newest stamp of a dynamic transform read so far

    def tf_read(self, stamp_ns: int) -> None:
        """Note a dynamic transform read from the bag (static ones carry no time)."""
        self.newest_tf_ns = stamp_ns if self.newest_tf_ns is None else max(self.newest_tf_ns, stamp_ns)

    def check(self, frame: Frame, now_ns: int, *, end: bool = False) -> PoseCheck:
        """Whether ``frame`` stops waiting at bag time ``now_ns`` (``end``: the bag has no more messages)."""
        stamp = frame.stamp_ns
        try:
            return PoseCheck(True, pose=self.tf.lookup_matrix(self.world_frame, frame.frame_id, stamp))
        except TransformException as exc:
            error = f"{type(exc).__name__}: {exc}"
        if end or now_ns - stamp > self.horizon_ns:
            return PoseCheck(True, error=error)
        try:
            _, latest = self.tf.lookup_matrix_with_stamp(self.world_frame, frame.frame_id, 0)
        except TransformException:  # no chain yet: give up once the bag's TF has moved well past the frame
            moved_on = self.newest_tf_ns is not None and self.newest_tf_ns - stamp > self.tf_timeout_ns
            return PoseCheck(moved_on, error=error)
        # a chain: its data still behind the frame means more may come; past it, the frame is older than the cache
        return PoseCheck(latest >= stamp, error=error)
