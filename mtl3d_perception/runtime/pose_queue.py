"""Frames waiting for their pose: which one runs next, posed or (after ``tf_timeout_s``) single-view.

One queue, two policies (issue 14):

- ``newest`` (the node, live): the newest waiting frame whose pose is there runs, and every older one is dropped
  (a robot wants the latest answer); when none has its pose, the newest frame whose wait ran out runs
  single-view;
- ``in_order`` (replay, a recording): frames run in arrival order, each once its pose is there or its wait ran
  out, so every synchronised frame is processed and runs are deterministic.

Time is the driver's: monotonic nanoseconds in the node, bag time in replay. A frame's wait runs from its
``arrived_ns``; it has run out when ``now_ns - arrived_ns >= timeout_ns``. The pose itself comes from a
``lookup(frame) -> (T_world_cam, None) | (None, why not)`` callable (``msgs.tf.pose_from_tf`` over a tf2_ros
Buffer), so the queue needs no ROS. It has no lock: its owner (``runtime.driver.FrameDriver``) holds one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mtl3d_perception.runtime.frames import Frame

POLICIES = ("newest", "in_order")
PoseLookup = Callable[[Frame], "tuple[np.ndarray | None, str | None]"]


@dataclass
class PoseJob:
    """A frame ready to run: its pose ``T_world_cam`` or why there is none (``tf_error``), when it arrived, and
    how many older frames the ``newest`` policy dropped to take it."""

    frame: Frame
    T_world_cam: np.ndarray | None
    tf_error: str | None
    arrived_ns: int
    dropped: int = 0


class PosedFrameQueue:
    """Frames waiting for TF, under one of ``POLICIES``.

    Args:
        lookup: the pose of a frame, or why there is none (never waits).
        policy: ``newest`` or ``in_order``.
        timeout_s: how long a frame waits for its pose before it runs single-view.
        max_pending: frames kept at most; pushing more drops the oldest (counted in :attr:`overflow`).
    """

    def __init__(self, lookup: PoseLookup, *, policy: str, timeout_s: float, max_pending: int = 30) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.lookup = lookup
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._items: deque[tuple[Frame, int]] = deque()
        self.overflow = 0

    @property
    def timeout_s(self) -> float:
        return self.timeout_ns * 1e-9

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"tf_timeout_s must be >= 0, got {value}")
        self.timeout_ns = int(value * 1e9)

    def __len__(self) -> int:
        return len(self._items)

    def frames(self) -> list[Frame]:
        return [frame for frame, _ in self._items]

    def push(self, frame: Frame, arrived_ns: int) -> int:
        """Queue ``frame``; returns how many old frames were dropped to stay within ``max_pending``."""
        self._items.append((frame, int(arrived_ns)))
        dropped = 0
        while len(self._items) > self.max_pending:
            self._items.popleft()
            dropped += 1
        self.overflow += dropped
        return dropped

    def clear(self) -> int:
        """Forget every waiting frame; returns how many there were."""
        n = len(self._items)
        self._items.clear()
        return n

    def deadline_ns(self) -> int | None:
        """When the oldest waiting frame's wait runs out (the next moment :meth:`take` may change its answer
        without new data), or None when nothing waits."""
        return self._items[0][1] + self.timeout_ns if self._items else None

    def take(self, now_ns: int, *, end: bool = False) -> PoseJob | None:
        """The next frame to run at ``now_ns`` under the policy, removed from the queue; None: keep waiting.

        ``end``: no more data will come (the bag is over): a frame without its pose runs single-view now.
        """
        if not self._items:
            return None
        if self.policy == "in_order":
            frame, arrived = self._items[0]
            pose, error = self.lookup(frame)
            if error is not None and not (end or now_ns - arrived >= self.timeout_ns):
                return None
            self._items.popleft()
            return PoseJob(frame, pose, error, arrived)
        chosen, timed_out = None, None
        for i in range(len(self._items) - 1, -1, -1):  # newest first
            frame, arrived = self._items[i]
            pose, error = self.lookup(frame)
            if error is None:
                chosen = (i, PoseJob(frame, pose, None, arrived))
                break
            if timed_out is None and (end or now_ns - arrived >= self.timeout_ns):
                timed_out = (i, PoseJob(frame, None, error, arrived))  # newest timed-out, unless a newer has TF
        chosen = chosen or timed_out
        if chosen is None:
            return None
        index, job = chosen
        for _ in range(index + 1):
            self._items.popleft()
        job.dropped = index
        return job
