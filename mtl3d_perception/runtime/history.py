"""Bounded history of posed frames and the rule that picks the source view for a new reference frame.

The rule (issue 6): the most recent earlier frame whose baseline to the reference is >= ``min_baseline_m`` or
whose rotation is >= ``min_rotation_deg``, no older than ``max_pair_age_s``, skipping candidates whose relative
motion is implausibly fast (a pose jump: relocalisation, a TF glitch); else the newest such posed frame; else
single-view mode (the reference duplicated with an identity pose, DESIGN §5).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mtl3d_perception.geometry import relative_pose, rotation_angle
from mtl3d_perception.runtime.frames import Frame

_LOG = logging.getLogger(__name__)


@dataclass
class PairingConfig:
    """Source-view selection rules (names match the node's parameters)."""

    min_baseline_m: float = 0.05  # a source this far from the reference gives a useful cost volume
    min_rotation_deg: float = 5.0
    max_pair_age_s: float = 1.0
    max_speed_mps: float = 5.0  # faster relative motion than this is a pose jump, not camera motion
    max_angular_speed_dps: float = 360.0
    history_size: int = 8

    def validate(self) -> None:
        for name in ("min_baseline_m", "min_rotation_deg", "max_pair_age_s", "max_speed_mps", "max_angular_speed_dps"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite value >= 0, got {value}")
        if self.history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {self.history_size}")


@dataclass
class ViewPair:
    """The reference frame and its chosen source (None: single-view mode).

    ``T_src_ref`` is ``inv(T_world_src) @ T_world_ref`` (identity in single-view mode); ``reason`` says why
    this source was chosen (``baseline``, ``newest``) or why there is none (``no_pose``, ``no_history``,
    ``too_old``, ``pose_jump``, or the frame's header problem: ``empty_frame_id``, ``zero_stamp``).
    """

    ref: Frame
    src: Frame | None
    T_src_ref: np.ndarray = field(default_factory=lambda: np.eye(4))
    reason: str = "no_history"

    @property
    def single_view(self) -> bool:
        return self.src is None


class FrameHistory:
    """The last ``history_size`` posed frames, oldest first, and the source-view rule.

    Frames are added after they have been processed, so a frame never pairs with itself. A frame older than
    the newest one by more than ``jump_back_s`` means time jumped backwards (a looping bag, a restarted
    clock): the history is cleared, as tf2 clears its buffer, and :meth:`add` returns True.
    """

    def __init__(self, config: PairingConfig | None = None, *, jump_back_s: float = 0.0) -> None:
        self.config = config or PairingConfig()
        self.config.validate()
        self.jump_back_s = jump_back_s
        self._frames: deque[Frame] = deque(maxlen=self.config.history_size)

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self):
        return iter(self._frames)

    @property
    def stamps(self) -> list[int]:
        return [f.stamp_ns for f in self._frames]

    def clear(self) -> None:
        self._frames.clear()

    def reconfigure(self, config: PairingConfig) -> None:
        """Apply new rules; keeps the newest frames that fit the new size."""
        config.validate()
        self.config = config
        self._frames = deque(self._frames, maxlen=config.history_size)

    def is_jump_back(self, stamp_ns: int) -> bool:
        """Whether ``stamp_ns`` is earlier than the newest frame by more than ``jump_back_s``."""
        return bool(self._frames) and stamp_ns < self._frames[-1].stamp_ns - int(self.jump_back_s * 1e9)

    def add(self, frame: Frame) -> bool:
        """Remember a posed frame as a future source view; unposed frames are ignored.

        Returns:
            True when the frame's stamp jumped back in time and the history was cleared first.
        """
        jumped = self.is_jump_back(frame.stamp_ns)
        if jumped:
            _LOG.warning("Detected jump back in time (%d ns -> %d ns). Clearing frame history.",
                         self._frames[-1].stamp_ns, frame.stamp_ns)
            self._frames.clear()
        if frame.pose is None:
            return jumped
        if self._frames and self._frames[-1].stamp_ns == frame.stamp_ns:
            self._frames.pop()  # a re-sent frame replaces its first copy
        self._frames.append(frame)
        return jumped

    def select(self, ref: Frame) -> ViewPair:
        """Pick the source view for ``ref`` (which must not be in the history yet)."""
        if ref.pose is None:
            return ViewPair(ref, None, reason=ref.header_problem or "no_pose")
        cfg = self.config
        newest: tuple[Frame, np.ndarray] | None = None
        reason = "no_history"
        for src in reversed(self._frames):  # most recent first
            dt = (ref.stamp_ns - src.stamp_ns) * 1e-9
            if dt <= 0:
                continue
            if dt > cfg.max_pair_age_s:
                reason = "too_old" if newest is None else reason
                break  # older ones are older still
            T_src_ref = relative_pose(src.pose, ref.pose)
            baseline = float(np.linalg.norm(T_src_ref[:3, 3]))
            angle = float(np.degrees(rotation_angle(T_src_ref[:3, :3])))
            if baseline > cfg.max_speed_mps * dt or angle > cfg.max_angular_speed_dps * dt:
                reason = "pose_jump" if newest is None else reason
                continue
            if baseline >= cfg.min_baseline_m or angle >= cfg.min_rotation_deg:
                return ViewPair(ref, src, T_src_ref, reason="baseline")
            if newest is None:
                newest = (src, T_src_ref)
        if newest is not None:
            return ViewPair(ref, newest[0], newest[1], reason="newest")
        return ViewPair(ref, None, reason=reason)
