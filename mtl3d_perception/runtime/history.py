"""Bounded history of posed frames and the rule that picks the source view for a new reference frame.

The rule (issue 6): the most recent earlier frame whose baseline to the reference is >= ``min_baseline_m`` or
whose rotation is >= ``min_rotation_deg``, no older than ``max_pair_age_s``, skipping candidates whose relative
motion is implausibly fast (a pose jump: relocalisation, a TF glitch); else the newest such posed frame; else
single-view mode (the reference duplicated with an identity pose, DESIGN §5).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mtl3d_perception.geometry import relative_pose, rotation_angle
from mtl3d_perception.runtime.frames import Frame


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

    Frames are added after they have been processed, so a frame never pairs with itself. Time jumping back is
    the pipeline's to detect (``frames.TimeJumpDetector``); it then calls :meth:`clear`.
    """

    def __init__(self, config: PairingConfig | None = None) -> None:
        self.config = config or PairingConfig()
        self.config.validate()
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

    def add(self, frame: Frame) -> None:
        """Remember a posed frame as a future source view; unposed frames are ignored."""
        if frame.T_world_cam is None:
            return
        stamps = self.stamps
        i = bisect.bisect_left(stamps, frame.stamp_ns)  # kept in stamp order (replay may run a frame a bit late)
        if i < len(stamps) and stamps[i] == frame.stamp_ns:
            del self._frames[i]  # a re-sent frame replaces its first copy
        elif len(self._frames) == self._frames.maxlen:
            if i == 0:
                return  # older than everything kept in a full history: of no use as a source
            self._frames.popleft()
            i -= 1
        self._frames.insert(i, frame)

    def select(self, ref: Frame) -> ViewPair:
        """Pick the source view for ``ref`` (which must not be in the history yet)."""
        if ref.T_world_cam is None:
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
            T_src_ref = relative_pose(src.T_world_cam, ref.T_world_cam)
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
