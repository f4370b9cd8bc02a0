"""Frames waiting for their pose: which one runs next, posed or single-view.

One queue, two policies (issue 14):

- ``newest`` (the node, live): the newest waiting frame whose pose is there runs, and every older one is dropped
  (a robot wants the latest answer); when none has its pose, the newest frame that stopped waiting runs
  single-view;
- ``in_order`` (replay, a recording): frames run in arrival order, each once it stops waiting, so every
  synchronised frame is processed and runs are deterministic.

When a frame stops waiting is the wait rule's (``runtime.pose_wait``: :class:`LivePoseWait` in the node,
:class:`RecordedPoseWait` in replay); a frame whose header allows no lookup (``Frame.header_problem``) stops at
once, without a pose and without a TF error (its problem is reported where the frame is made). Time is the
driver's: monotonic nanoseconds in the node, bag time in replay. The queue has no lock: its owner
(``runtime.driver.FrameDriver``) holds one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.pose_wait import PoseCheck

POLICIES = ("newest", "in_order")


class PoseWait(Protocol):
    """A rule for when a frame stops waiting (``runtime.pose_wait``)."""

    def check(self, frame: Frame, now_ns: int, *, arrived_ns: int, end: bool = False) -> PoseCheck: ...

    def deadline_ns(self, arrived_ns: int) -> int | None: ...


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
        wait: when a frame stops waiting (never blocks).
        policy: ``newest`` or ``in_order``.
        max_pending: frames kept at most; pushing more drops the oldest (counted in :attr:`overflow`).
    """

    def __init__(self, wait: PoseWait, *, policy: str, max_pending: int = 30) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.wait = wait
        self.policy = policy
        self.max_pending = max_pending
        self._items: deque[tuple[Frame, int]] = deque()
        self.overflow = 0

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

    def drop_after(self, stamp_ns: int) -> int:
        """Forget the frames stamped after ``stamp_ns`` (a lone bad stamp); returns how many."""
        kept = deque(item for item in self._items if item[0].stamp_ns <= stamp_ns)
        n = len(self._items) - len(kept)
        self._items = kept
        return n

    def clear(self) -> int:
        """Forget every waiting frame; returns how many there were."""
        n = len(self._items)
        self._items.clear()
        return n

    def deadline_ns(self) -> int | None:
        """When the oldest waiting frame's wait runs out (the next moment :meth:`take` may change its answer
        without new data), or None when nothing waits or the rule has no deadline."""
        return self.wait.deadline_ns(self._items[0][1]) if self._items else None

    def _check(self, frame: Frame, arrived_ns: int, now_ns: int, end: bool) -> PoseCheck:
        if frame.header_problem is not None:
            return PoseCheck(True)
        return self.wait.check(frame, now_ns, arrived_ns=arrived_ns, end=end)

    def take(self, now_ns: int, *, end: bool = False) -> PoseJob | None:
        """The next frame to run at ``now_ns`` under the policy, removed from the queue; None: keep waiting.

        ``end``: no more data will come (the bag is over): a frame without its pose runs single-view now.
        """
        if not self._items:
            return None
        if self.policy == "in_order":
            frame, arrived = self._items[0]
            check = self._check(frame, arrived, now_ns, end)
            if not check.ready:
                return None
            self._items.popleft()
            return PoseJob(frame, check.pose, check.error, arrived)
        chosen, timed_out = None, None
        for i in range(len(self._items) - 1, -1, -1):  # newest first
            frame, arrived = self._items[i]
            check = self._check(frame, arrived, now_ns, end)
            if check.ready and check.error is None and check.pose is not None:
                chosen = (i, PoseJob(frame, check.pose, None, arrived))
                break
            if timed_out is None and check.ready:
                timed_out = (i, PoseJob(frame, check.pose, check.error, arrived))  # unless an older one has its pose
        chosen = chosen or timed_out
        if chosen is None:
            return None
        index, job = chosen
        for _ in range(index + 1):
            self._items.popleft()
        job.dropped = index
        return job
