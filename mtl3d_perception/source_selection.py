"""The source-view rule: which earlier posed frame a reference frame is matched against.

One function, :func:`select_source`, used by the runtime (``runtime.history.FrameHistory``, the node and
replay) and by training (``data.datasets``, ``neighbour: pairing``), so the network trains on the pairs it
will be given (issue 18). It sits beside ``geometry`` so that both ``data/`` and ``runtime/`` import it
downwards.

The rule (issue 6): the most recent earlier frame whose baseline to the reference is >= ``min_baseline_m``
or whose rotation is >= ``min_rotation_deg``, no older than ``max_pair_age_s`` and more recent than the newest
candidate whose relative motion is implausibly fast (a pose jump: an odometry reset, relocalisation, a TF glitch;
the frames before it are across the jump); else, when none is that far,
the usable frame with the widest baseline (``farthest``: the most parallax there is; a slow camera at 30 Hz
keeps frames 1-2 cm apart, where the newest one would give almost none); else none (single-view mode: the
reference duplicated with an identity pose, DESIGN §5). A candidate less than ``MIN_PARALLAX_M`` from the reference
is never used, however far it turned: without translation the plane sweep is flat along depth, and a pure-rotation
pair scored worse than one view (abs rel 0.126 vs 0.114 on a synthetic room turning 2 deg a frame, session 13); such
a reference runs single-view with the reason ``no_parallax``.

The defaults were measured with the shipped model on the real HoloLens frames (``benchmarks/source_rule.py``):
the sweet spot of its cost volume is a 15-25 cm baseline (abs rel 0.110 on the design frames at a median
19 cm vs 0.115 at 7 cm with the earlier 5 cm / 5 deg); a rotation alone gives no parallax, so it only counts
from 15 deg. DeepVideoMVS (Duzceker et al., CVPR 2021) picks keyframes at a similar 15 cm optimum.

The candidates are keyframes (:func:`is_keyframe`, :func:`keyframe_history`, as DeepVideoMVS's keyframe buffer): a
frame joins the history when it lies ``keyframe_spacing_m`` or ``keyframe_spacing_deg`` from the newest keyframe of
its camera; the newest frame is kept too until the next one replaces it (so a camera standing still still reads
``no_parallax``). A 30 Hz camera 1-3 mm a frame (a slow robot) then reaches 15 cm within 16 slots, where 16 plain
frames reached 2.7-5.3 cm: on synthetic 30 Hz streams the shipped model's two-view abs rel went from 0.073 to 0.061
at 0.1 m/s and from 0.119 / 0.074 / 0.075 to 0.108 / 0.063 / 0.075 at 0.05 m/s (three rooms), the HoloLens frames
unchanged (benchmarks/RESULTS.md "Keyframe history"); hence also ``max_pair_age_s`` 3 s (0.05 m/s covers 15 cm in 3 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtl3d_perception.geometry import relative_pose, rotation_angle
from mtl3d_perception.typed_config import SettingError

# A source must be at least this far (metres) from the reference: below it there is no parallax to match (session 13).
MIN_PARALLAX_M = 0.005
PAIRED_REASONS = ("baseline", "farthest")  # the pair reasons of a frame that got a source view (two-view)


@dataclass(frozen=True)
class PairingConfig:
    """Source-view selection rules (names match the node's parameters). Frozen, as ``RuntimeConfig`` that holds it
    (a retrial: ``config.pairing.min_baseline_m = 3.0`` changed a frozen RuntimeConfig); ``dataclasses.replace``."""

    min_baseline_m: float = 0.15  # a source this far from the reference gives a useful cost volume
    min_rotation_deg: float = 15.0
    max_pair_age_s: float = 3.0  # a 5 cm/s camera's 15 cm
    max_speed_mps: float = 5.0  # faster relative motion than this is a pose jump, not camera motion
    max_angular_speed_dps: float = 360.0
    history_size: int = 16  # keyframes and the newest frame: 15 x 2 cm reach 30 cm however slow the camera
    keyframe_spacing_m: float = 0.02  # 0 (with keyframe_spacing_deg 0): every frame is a keyframe
    keyframe_spacing_deg: float = 2.0

    def validate(self) -> None:
        for name in ("min_baseline_m", "min_rotation_deg", "keyframe_spacing_m", "keyframe_spacing_deg"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise SettingError(name, f"{name} must be a finite value >= 0, got {value}")
        # 0 would make every source too old or every motion a pose jump: single view without saying why
        for name in ("max_pair_age_s", "max_speed_mps", "max_angular_speed_dps"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise SettingError(name, f"{name} must be a finite value > 0 (single_view turns pairing off), "
                                         f"got {value}")
        if self.history_size < 1:
            raise SettingError("history_size", f"history_size must be >= 1, got {self.history_size}")


@dataclass
class SourceChoice:
    """The result of :func:`select_source`.

    Attributes:
        index: the chosen candidate's index, or None (single-view mode).
        T_src_ref: ``[4,4]`` ``inv(T_world_src) @ T_world_ref`` (identity when ``index`` is None).
        reason: ``baseline`` or ``farthest`` when a source was chosen; ``no_history``, ``no_earlier_frame`` (every
            candidate is stamped at or after the reference: frames out of order), ``too_old``, ``pose_jump`` or
            ``no_parallax`` (every usable candidate closer than ``MIN_PARALLAX_M``) when none was.
    """

    index: int | None
    T_src_ref: np.ndarray = field(default_factory=lambda: np.eye(4))
    reason: str = "no_history"


def select_source(ref_pose: np.ndarray, candidate_poses, ages_s, config: PairingConfig) -> SourceChoice:
    """Pick the source view of a reference frame among earlier posed frames (the rule in the module docstring).

    Args:
        ref_pose: ``[4,4]`` T_world_cam of the reference frame (metres).
        candidate_poses: N ``[4,4]`` T_world_cam of the candidates, oldest first (a sequence or ``[N,4,4]``).
        ages_s: N seconds from each candidate to the reference (``t_ref - t_candidate``); candidates with
            age <= 0 (not earlier) are skipped.
        config: the limits; not validated here (callers validate once).

    Returns:
        The :class:`SourceChoice`; its ``index`` points into ``candidate_poses``.

    Raises:
        ValueError: when the numbers of poses and ages differ.
    """
    if len(candidate_poses) != len(ages_s):
        msg = f"got {len(candidate_poses)} candidate poses but {len(ages_s)} ages; expected one age per pose"
        raise ValueError(msg)
    farthest: SourceChoice | None = None
    widest = -1.0
    reason = "no_history"
    for i in range(len(candidate_poses) - 1, -1, -1):  # most recent first
        dt = float(ages_s[i])
        if dt <= 0:  # stamped at or after the reference: frames out of order (a Python-API trial: they said no_history)
            reason = "no_earlier_frame" if reason == "no_history" else reason
            continue
        if dt > config.max_pair_age_s:
            # too_old only when no candidate was young enough: a camera standing still keeps no_parallax (by design,
            # not a fallback to warn about) however long its history
            reason = "too_old" if reason == "no_history" else reason
            break  # older ones are older still
        T_src_ref = relative_pose(np.asarray(candidate_poses[i], np.float64), np.asarray(ref_pose, np.float64))
        baseline = float(np.linalg.norm(T_src_ref[:3, 3]))
        angle = float(np.degrees(rotation_angle(T_src_ref[:3, :3])))
        if baseline > config.max_speed_mps * dt or angle > config.max_angular_speed_dps * dt:
            # the jump lies between this candidate and the reference, so every older one is across it too: an
            # odometry reset 0.1 s after frame k moved frame k 3 m away, and frames before k, averaged over longer
            # times, looked slow enough (a node trial found frames paired 3 m across a reset)
            reason = "pose_jump" if farthest is None else reason
            break
        if baseline < MIN_PARALLAX_M:
            reason = "no_parallax" if farthest is None else reason
            continue
        if baseline >= config.min_baseline_m or angle >= config.min_rotation_deg:
            return SourceChoice(i, T_src_ref, "baseline")
        if baseline > widest:  # strictly wider: of equal ones the most recent stays
            farthest, widest = SourceChoice(i, T_src_ref, "farthest"), baseline
    return farthest if farthest is not None else SourceChoice(None, np.eye(4), reason)


def is_keyframe(pose: np.ndarray, last_keyframe_pose: np.ndarray | None, config: PairingConfig,
                age_s: float | None = None) -> bool:
    """Whether a frame joins the source-view history as a keyframe: it lies at least ``keyframe_spacing_m`` (camera
    centres) or turned at least ``keyframe_spacing_deg`` from the newest keyframe of its camera, or that keyframe is
    ``max_pair_age_s / history_size`` old (so the history always spans ``max_pair_age_s``: a handheld camera swaying
    +-9 mm never moved 2 cm from one keyframe and ran single-view in a trial), or there is none.

    Args:
        pose: ``[4,4]`` T_world_cam of the new frame (metres).
        last_keyframe_pose: ``[4,4]`` T_world_cam of the newest earlier keyframe of the same camera, or None.
        config: the spacing; both 0 makes every frame a keyframe.
        age_s: seconds from that keyframe to the new frame (None: not known, space only).
    """
    if last_keyframe_pose is None:
        return True
    if age_s is not None and age_s >= config.max_pair_age_s / config.history_size:
        return True
    T = relative_pose(np.asarray(last_keyframe_pose, np.float64), np.asarray(pose, np.float64))
    return bool(np.linalg.norm(T[:3, 3]) >= config.keyframe_spacing_m
                or np.degrees(rotation_angle(T[:3, :3])) >= config.keyframe_spacing_deg)


def keyframe_history(poses, config: PairingConfig, stamps_s=None) -> list[int]:
    """The history a camera's frames leave, added oldest first (``runtime.history.FrameHistory.add``'s rule, for
    training and ``mtl3d eval``, which simulate it): the indices of the last ``history_size`` keyframes
    (:func:`is_keyframe`), the newest frame among them even when it is not one (it is replaced by the next frame).

    Args:
        poses: N ``[4,4]`` T_world_cam, in stamp order (a sequence or ``[N,4,4]``).
        config: the spacing and ``history_size``.
        stamps_s: N stamps in seconds (None: keyframes by space only).

    Returns:
        Indices into ``poses``, oldest first.
    """
    kept: list[int] = []
    last_keyframe: int | None = None
    for i in range(len(poses)):
        if kept and kept[-1] != last_keyframe:
            kept.pop()  # the newest frame that was not a keyframe: superseded
        age = None if stamps_s is None or last_keyframe is None else float(stamps_s[i] - stamps_s[last_keyframe])
        if is_keyframe(poses[i], None if last_keyframe is None else poses[last_keyframe], config, age):
            last_keyframe = i
        kept.append(i)
        del kept[:-config.history_size]
    return kept
