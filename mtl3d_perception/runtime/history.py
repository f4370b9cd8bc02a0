"""Bounded history of posed frames; the source view of a new reference frame is picked by
:func:`mtl3d_perception.source_selection.select_source` (issue 6's rule, which training uses too) among the
earlier frames of the same camera (same ``frame_id``, image size and K: issue 15, two cameras interleaved on
one topic must never be paired).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mtl3d_perception.geometry import relative_pose, rotation_angle
from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.source_selection import PairingConfig, is_keyframe, select_source

__all__ = ["SINGLE_VIEW_MODE", "FrameHistory", "PairingConfig", "ViewPair", "pose_jump_message", "same_camera"]

# the reason of every frame of a pipeline run with ``single_view`` (RuntimeConfig): no source by choice
SINGLE_VIEW_MODE = "single_view_mode"


@dataclass
class ViewPair:
    """The reference frame and its chosen source (None: single-view mode).

    ``T_src_ref`` is ``inv(T_world_src) @ T_world_ref`` (identity in single-view mode); ``reason`` says why
    this source was chosen (``baseline``, ``farthest``) or why there is none (``no_pose``, ``no_history``,
    ``no_earlier_frame``, ``too_old``, ``pose_jump``, ``no_parallax``, or the frame's header problem:
    ``empty_frame_id``, ``zero_stamp``, ``invalid_stamp``; ``single_view_mode`` when the pipeline runs with
    ``single_view`` and never pairs). The pipeline may still run a paired frame single-view: reason
    ``pose_convention`` (``runtime.pose_convention``) when the poses do not fit the images.
    """

    ref: Frame
    src: Frame | None
    T_src_ref: np.ndarray = field(default_factory=lambda: np.eye(4))
    reason: str = "no_history"

    @property
    def single_view(self) -> bool:
        return self.src is None


def same_camera(a: Frame, b: Frame) -> bool:
    """Whether two frames come from one camera: same ``frame_id``, image size and intrinsics (K to 1e-6 relative).

    A source view from another camera would put the wrong K and pose into the cost volume.
    """
    # array_equal first: one camera repeats its K exactly, and allclose costs ~10x more (it runs on every history
    # frame for every new frame)
    return (a.frame_id == b.frame_id and a.size == b.size
            and (np.array_equal(a.K, b.K) or bool(np.allclose(a.K, b.K, rtol=1e-6, atol=1e-9))))


# Two frames of one camera closer than this (1 kHz) are taken for stamps in the wrong unit in pose_jump's message.
STAMP_UNIT_HINT_NS = 1_000_000


def pose_jump_message(ref: Frame, last: Frame, config: PairingConfig) -> str:
    """What a ``pose_jump`` was, from the reference frame and the newest earlier frame of its camera: the distance and
    turn in how long, against ``max_speed_mps`` / ``max_angular_speed_dps``; when the speed would be plausible in
    millimetres (under the limit after / 1000) and the positions are far from the origin in metres, it says so (a
    Python-API trial: poses in mm made every frame pose_jump with no word), and when the frames are under a
    millisecond apart, that ``stamp_ns`` may hold seconds or milliseconds."""
    T = relative_pose(last.T_world_cam, ref.T_world_cam)
    dt = max((ref.stamp_ns - last.stamp_ns) * 1e-9, 1e-9)
    baseline, turn = float(np.linalg.norm(T[:3, 3])), float(np.degrees(rotation_angle(T[:3, :3])))
    speed, rate = baseline / dt, turn / dt
    text = (f"the camera moved {baseline:.3g} m and turned {turn:.3g} deg in {dt:.3g} s since its previous frame "
            f"({speed:.3g} m/s, {rate:.3g} deg/s; limits max_speed_mps {config.max_speed_mps:g}, max_angular_speed_dps "
            f"{config.max_angular_speed_dps:g}): odometry jumped, or the poses are not in metres")
    far = float(np.linalg.norm(ref.T_world_cam[:3, 3]))
    gap_ns = ref.stamp_ns - last.stamp_ns
    if 0 < gap_ns < STAMP_UNIT_HINT_NS:
        text += (f" (the frames are {gap_ns} ns apart: is stamp_ns in nanoseconds? seconds or milliseconds there "
                 "make every move look fast)")
    elif speed > config.max_speed_mps and speed / 1000 <= config.max_speed_mps and far > 100:
        text += f" (the camera is {far:.3g} m from the origin: millimetres? divide the translation by 1000)"
    return text + "; the frame runs single-view"


def _key(frame: Frame) -> tuple[str, int]:
    return frame.frame_id, frame.stamp_ns


class FrameHistory:
    """The last ``history_size`` posed keyframes and each camera's newest frame (of every camera on the input), oldest
    first, and the source-view rule.

    Frames are added after they have been processed, so a frame never pairs with itself. Time jumping back is
    the pipeline's to detect (``frames.TimeJumpDetector``); it then calls :meth:`clear`.
    """

    def __init__(self, config: PairingConfig | None = None) -> None:
        self.config = config or PairingConfig()
        self.config.validate()
        self._frames: deque[Frame] = deque(maxlen=self.config.history_size)
        self._not_keyframes: set[tuple[str, int]] = set()  # (frame_id, stamp_ns) of kept frames that are not
        # keyframes (each camera's newest)

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self):
        return iter(self._frames)

    @property
    def stamps(self) -> list[int]:
        return [f.stamp_ns for f in self._frames]

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(frame_id, stamp_ns) of each frame, oldest first: unique even when cameras share stamps."""
        return [_key(f) for f in self._frames]

    def clear(self) -> None:
        self._frames.clear()
        self._not_keyframes.clear()

    def drop_after(self, stamp_ns: int) -> int:
        """Forget the frames stamped after ``stamp_ns`` (a lone bad stamp, ``frames.TimeJumpDetector``); returns how
        many."""
        kept = [f for f in self._frames if f.stamp_ns <= stamp_ns]
        n = len(self._frames) - len(kept)
        self._frames = deque(kept, maxlen=self.config.history_size)
        self._not_keyframes &= {_key(f) for f in kept}
        return n

    def drop_camera(self, ref: Frame) -> int:
        """Forget the frames of ``ref``'s camera (its poses jumped: ``pose_jump``); returns how many."""
        gone = {_key(f) for f in self._frames if same_camera(f, ref)}
        self._frames = deque((f for f in self._frames if _key(f) not in gone), maxlen=self.config.history_size)
        self._not_keyframes -= gone
        return len(gone)

    def reconfigure(self, config: PairingConfig) -> None:
        """Apply new rules; keeps the newest frames that fit the new size."""
        config.validate()
        self.config = config
        self._frames = deque(self._frames, maxlen=config.history_size)
        self._not_keyframes &= set(self.keys)

    def add(self, frame: Frame) -> None:
        """Remember a posed frame as a future source view; unposed frames are ignored.

        Frames are kept in stamp order (replay may run a frame a bit late); a re-sent frame (same ``frame_id``
        and stamp) replaces its first copy. A frame within the keyframe spacing of the newest earlier keyframe of
        its camera (``source_selection.is_keyframe``) is kept only until the camera's next frame replaces it, so the
        history holds keyframes plus each camera's newest frame (``source_selection.keyframe_history``, the rule
        training and ``mtl3d eval`` simulate).
        """
        if frame.T_world_cam is None:
            return
        stamps = self.stamps
        for j in range(bisect.bisect_left(stamps, frame.stamp_ns), bisect.bisect_right(stamps, frame.stamp_ns)):
            if self._frames[j].frame_id == frame.frame_id:
                self._frames[j] = frame
                return
        earlier = [f for f in self._frames if same_camera(f, frame) and f.stamp_ns < frame.stamp_ns]
        superseded = {_key(f) for f in earlier} & self._not_keyframes
        keyframes = [f for f in earlier if _key(f) not in superseded]
        if superseded:
            self._frames = deque((f for f in self._frames if _key(f) not in superseded), maxlen=self._frames.maxlen)
            self._not_keyframes -= superseded
        age = (frame.stamp_ns - keyframes[-1].stamp_ns) * 1e-9 if keyframes else None
        if not is_keyframe(frame.T_world_cam, keyframes[-1].T_world_cam if keyframes else None, self.config, age):
            self._not_keyframes.add(_key(frame))
        stamps = self.stamps
        i = bisect.bisect_right(stamps, frame.stamp_ns)
        if len(self._frames) == self._frames.maxlen:
            if i == 0:
                self._not_keyframes.discard(_key(frame))
                return  # older than everything kept in a full history: of no use as a source
            self._not_keyframes.discard(_key(self._frames.popleft()))
            i -= 1
        self._frames.insert(i, frame)

    def newest_earlier(self, ref: Frame) -> Frame | None:
        """The newest frame of ``ref``'s camera stamped before it, or None."""
        earlier = [f for f in self._frames if same_camera(f, ref) and f.stamp_ns < ref.stamp_ns]
        return earlier[-1] if earlier else None

    def select(self, ref: Frame, *, single_view: bool = False) -> ViewPair:
        """Pick the source view for ``ref`` (which must not be in the history yet) with ``select_source``;
        ``single_view``: none, reason ``single_view_mode`` (the pipeline's ``single_view`` setting)."""
        if single_view:
            return ViewPair(ref, None, reason=SINGLE_VIEW_MODE)
        if ref.T_world_cam is None:
            return ViewPair(ref, None, reason=ref.header_problem or "no_pose")
        frames = [f for f in self._frames if same_camera(f, ref)]
        ages = [(ref.stamp_ns - f.stamp_ns) * 1e-9 for f in frames]
        choice = select_source(ref.T_world_cam, [f.T_world_cam for f in frames], ages, self.config)
        if choice.index is None:
            return ViewPair(ref, None, reason=choice.reason)
        return ViewPair(ref, frames[choice.index], choice.T_src_ref, reason=choice.reason)
