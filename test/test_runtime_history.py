"""FrameHistory: the source-view rule (baseline / rotation / age / pose jumps / single-view fallback)."""

from __future__ import annotations

import numpy as np
import pytest

from mtl3d_perception.geometry import pose_from_quat_trans, rotation_to_quat
from mtl3d_perception.runtime.frames import Frame, TimeJumpDetector
from mtl3d_perception.runtime.history import FrameHistory, PairingConfig

K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
RGB = np.zeros((48, 64, 3), np.uint8)
S = 1_000_000_000


def _frame(t_s: float, x: float = 0.0, yaw_deg: float = 0.0, pose: bool = True) -> Frame:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    T = pose_from_quat_trans(rotation_to_quat(R), np.array([x, 0.0, 0.0]))
    return Frame(int(round(t_s * 1e9)), "cam", RGB, K, T if pose else None)


def _history(**kw) -> FrameHistory:
    return FrameHistory(PairingConfig(min_baseline_m=0.1, min_rotation_deg=5.0, max_pair_age_s=1.0, **kw))


def test_empty_history_is_single_view():
    pair = _history().select(_frame(1.0))
    assert pair.single_view and pair.reason == "no_history"
    np.testing.assert_array_equal(pair.T_src_ref, np.eye(4))


def test_unposed_reference_is_single_view():
    h = _history()
    h.add(_frame(0.0))
    assert h.select(_frame(0.1, pose=False)).reason == "no_pose"


def test_single_view_mode_selects_no_source():
    h = _history()
    h.add(_frame(0.0))
    pair = h.select(_frame(0.1, x=0.5), single_view=True)  # would pair on its baseline
    assert pair.single_view and pair.reason == "single_view_mode"
    np.testing.assert_array_equal(pair.T_src_ref, np.eye(4))


def test_most_recent_frame_with_enough_baseline_wins():
    h = _history()
    for t, x in [(0.0, 0.0), (0.1, 0.05), (0.2, 0.12), (0.3, 0.15)]:
        h.add(_frame(t, x))
    ref = _frame(0.4, 0.2)
    pair = h.select(ref)
    # 0.3 (baseline 0.05) and 0.2 (0.08) are too close; 0.1 has baseline 0.15
    assert pair.reason == "baseline" and pair.src.stamp_ns == _frame(0.1).stamp_ns
    np.testing.assert_allclose(pair.T_src_ref[:3, 3], [0.15, 0, 0], atol=1e-9)


def test_a_turn_with_some_translation_is_enough_but_a_turn_in_place_is_not():
    h = _history()
    h.add(_frame(0.0, x=0.01, yaw_deg=0.0))
    h.add(_frame(0.1, x=0.01, yaw_deg=8.0))
    pair = h.select(_frame(0.2, yaw_deg=9.0))  # 9 deg and 1 cm from the first frame: past min_rotation_deg
    assert pair.reason == "baseline" and pair.src.stamp_ns == _frame(0.0).stamp_ns
    h = _history()
    h.add(_frame(0.0, yaw_deg=0.0))
    h.add(_frame(0.1, yaw_deg=8.0))
    pair = h.select(_frame(0.2, yaw_deg=9.0))  # turning in place: no parallax, single view
    assert pair.single_view and pair.reason == "no_parallax"


def test_no_wide_baseline_falls_back_to_the_widest():
    h = _history()
    h.add(_frame(0.0, 0.0))
    h.add(_frame(0.1, 0.01))
    pair = h.select(_frame(0.2, 0.02))  # 2 and 1 cm, both < 10 cm: the 2 cm one, not the newest
    assert pair.reason == "farthest" and pair.src.stamp_ns == _frame(0.0).stamp_ns


def test_too_old_sources_are_not_used():
    h = _history()
    h.add(_frame(0.0, 0.0))
    pair = h.select(_frame(1.5, 0.5))
    assert pair.single_view and pair.reason == "too_old"


def test_pose_jump_is_rejected():
    h = _history(max_speed_mps=2.0)
    h.add(_frame(0.0, 0.0))
    pair = h.select(_frame(0.1, 3.0))  # 30 m/s
    assert pair.single_view and pair.reason == "pose_jump"


def test_no_source_across_an_odometry_reset():
    """A node trial: at 0.5 m/s, frames 0.1 s apart, odometry restarted at frame 8 (a 3.35 m jump in 0.1 s). Frame 8
    ran two-view with frame 1 (3.05 m, 4.4 m/s on average over 0.7 s: under max_speed_mps), and so did the frames
    after it. A jump cuts the history: frame 8 is pose_jump, and later frames pair only with frames after the reset."""
    h = FrameHistory(PairingConfig())
    xs = [0.05 * i for i in range(8)] + [0.05 * i - 3.0 for i in range(8, 14)]
    reasons, sources = [], []
    for i, x in enumerate(xs):
        pair = h.select(_frame(0.1 * i, x))
        reasons.append(pair.reason)
        sources.append(None if pair.src is None else round(pair.src.stamp_ns / 1e8))
        h.add(_frame(0.1 * i, x))
    assert reasons[8] == "pose_jump" and sources[8] is None
    assert all(src is not None and src >= 8 for src in sources[9:])  # 5-25 cm back, after the reset
    assert reasons[7] == "baseline" and sources[7] == 4  # before the reset: the 15 cm rule as usual


def test_time_jump_detector():
    jump = TimeJumpDetector()  # JUMP_BACK_S = 1 s
    assert not jump.check(5 * S) and not jump.check(6 * S)
    assert not jump.check(5 * S + 1)  # 1 s back minus 1 ns: out of order, not a jump
    assert jump.newest_ns == 6 * S
    assert jump.check(5 * S - 1)  # more than 1 s back: a jump, tracked afresh from there
    assert jump.newest_ns == 5 * S - 1 and jump.jumps == 1
    assert not jump.check(5 * S)
    # a hostile-input trial: one image stamped 0 (unstamped) counted as a jump and cleared the history and TF
    assert not jump.check(0) and jump.newest_ns == 5 * S and jump.jumps == 1
    assert not jump.check(5 * S + 1)


def test_a_lone_stamp_far_ahead_is_an_outlier_not_a_time_jump():
    """A re-check trial: one frame stamped in 2037 made the next normal frame a jump back (history and TF cleared).
    A leap ahead followed at once by a return to where the stream was is one bad stamp; a leap the next stamp
    confirms is time moving on; going back before where the stream was is still a jump (a looping bag)."""
    year_2037 = 2_129_000_000 * S
    jump = TimeJumpDetector()
    for t in (10 * S, 10 * S + S // 10, year_2037):
        assert not jump.check(t) and jump.outlier_ns is None
    assert not jump.check(10 * S + S // 5)
    assert (jump.outlier_ns, jump.newest_ns, jump.jumps, jump.outliers) == (year_2037, 10 * S + S // 5, 0, 1)
    assert jump.outlier_message(10 * S + S // 5).startswith("a frame stamped 2129000000.000 s leapt")
    assert not jump.check(10 * S + 3 * S // 10) and jump.outlier_ns is None  # the stream goes on
    moved_on = TimeJumpDetector()
    for t in (10 * S, 30 * S, 30 * S + S // 10):  # a 20 s gap (a paused camera), then time goes on from there
        assert not moved_on.check(t) and moved_on.outlier_ns is None
    assert moved_on.check(10 * S + S // 10) and moved_on.jumps == 1  # now going back is a jump
    looping = TimeJumpDetector()
    for t in (10 * S, 11 * S, 20 * S):  # a leap, then back to before the stream's start: a jump, not an outlier
        assert not looping.check(t)
    assert looping.check(5 * S) and looping.outlier_ns is None
    history = FrameHistory(PairingConfig(history_size=4))
    for t in (0.1, 0.2, 0.3):
        history.add(_frame(t, x=t))
    assert history.drop_after(_frame(0.15).stamp_ns) == 2 and history.stamps == [_frame(0.1).stamp_ns]


def test_bounded_and_unposed_not_kept():
    h = FrameHistory(PairingConfig(history_size=3))
    for i in range(5):
        h.add(_frame(i * 0.1, x=i * 0.1))
    h.add(_frame(0.6, pose=False))
    assert len(h) == 3 and h.stamps[-1] == _frame(0.4).stamp_ns


def test_bad_config_raises():
    with pytest.raises(ValueError, match="min_baseline_m"):
        FrameHistory(PairingConfig(min_baseline_m=-1.0))


def test_a_pose_jump_says_how_far_and_names_millimetres_when_they_fit():
    """A Python-API trial: poses in millimetres made every frame ``pose_jump`` and the products said nothing more."""
    from mtl3d_perception.runtime.history import pose_jump_message

    def at(x_m: float, stamp_s: float) -> Frame:
        T = np.eye(4)
        T[0, 3] = x_m
        return Frame(int(stamp_s * 1e9), "cam", np.zeros((8, 8, 3), np.uint8), np.diag([8.0, 8.0, 1.0]), T)

    config = PairingConfig()
    mm = pose_jump_message(at(2000.0 + 50.0, 0.1), at(2000.0, 0.0), config)  # 5 cm in 0.1 s, in millimetres
    assert "moved 50 m" in mm and "500 m/s" in mm and "max_speed_mps 5" in mm and "millimetres?" in mm
    jump = pose_jump_message(at(12.0, 0.1), at(2.0, 0.0), config)  # odometry teleported 10 m
    assert "moved 10 m" in jump and "millimetres" not in jump and "odometry jumped" in jump


def test_the_pipeline_warns_at_a_pose_jump():
    from mtl3d_perception.model import build_model
    from mtl3d_perception.runtime import PerceptionPipeline

    pipeline = PerceptionPipeline(build_model("tiny"))
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    K = np.array([[120.0, 0, 79.5], [0, 120.0, 59.5], [0, 0, 1]])
    poses = [np.eye(4), np.eye(4)]
    poses[1][:3, 3] = (3000.0, 0.0, 0.0)
    products = [pipeline.process(Frame(i * 100_000_000, "cam", rgb, K, T)) for i, T in enumerate(poses)]
    assert products[1].pair_reason == "pose_jump"
    assert [k for k, _ in products[1].warnings] == ["pose_jump"] and "moved 3e+03 m" in products[1].warnings[0][1]


def test_a_pose_jump_forgets_the_frames_before_it_and_reset_starts_afresh():
    """Two Python-API trials. (1) After a 1 m odometry correction at 30 Hz, frames went on pairing with frames from
    before it once the jump was older than |jump| / max_speed_mps (0.2 s): 43 frames, 1 m baselines, no word. The jump
    now cuts the camera's history. (2) reset() kept the newest stamp, so the next sequence's second frame read as a
    time jump and lost its pair."""
    from mtl3d_perception.model import build_model
    from mtl3d_perception.runtime import PerceptionPipeline

    pipeline = PerceptionPipeline(build_model("tiny"))
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)

    def frame(i, x):
        return Frame(1_000_000_000 + i * 33_333_333, "cam", rgb, K,
                     pose_from_quat_trans(np.array([0, 0, 0, 1.0]), np.array([x, 0.0, 0.0])))

    xs = [0.1 * i / 30 for i in range(60)] + [1.0 + 0.1 * i / 30 for i in range(60, 120)]
    products = [pipeline.process(frame(i, x)) for i, x in enumerate(xs)]
    assert products[60].pair_reason == "pose_jump"
    after = [p for p in products[61:]]
    assert all(p.baseline_m < 0.2 for p in after)  # never 1 m across the jump
    pipeline.reset()
    again = [pipeline.process(frame(i, 0.05 * i)).pair_reason for i in range(3)]
    assert again == ["no_history", "farthest", "farthest"]  # no time_jump: the second frame pairs
