"""The pose-convention check (runtime/pose_convention.py): poses given in another convention (OpenGL camera axes,
world-to-camera, a view matrix, a camera_link body frame) are named with their conversion and run single-view,
instead of pairing frames into wrong relative poses (a Python-API trial: abs rel 0.32-0.46 on the held-out HoloLens
frames against 0.196 single-view); right poses are never flagged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl3d_perception.data.sequence import PosedSequence
from mtl3d_perception.data.synthetic import iter_sequence
from mtl3d_perception.runtime import PerceptionPipeline, RuntimeConfig, load_model
from mtl3d_perception.runtime.pose_convention import (
    CONVENTIONS,
    GIVEN,
    MIN_CHECKS,
    MIN_TEXTURE,
    POSE_CONVENTION,
    PRIOR_WINDOW,
    ROTATION_MARGIN,
    PoseConventionCheck,
    best_near_prior,
    prior_support,
    readings,
    rotation_key,
    rotation_lead,
)
from mtl3d_perception.runtime.stats import FALLBACK_MEANING, is_fallback

BY_NAME = {c.name: c for c in CONVENTIONS}


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    T = np.eye(4)
    T[:3, :3] = q if np.linalg.det(q) > 0 else -q
    T[:3, 3] = rng.normal(size=3)
    return T


def test_each_convention_is_what_its_name_says_and_converts_back():
    rng = np.random.default_rng(0)
    P = random_pose(rng)  # T_world_cam of the optical frame: x right, y down, z forward
    right, down, forward = P[:3, 0], P[:3, 1], P[:3, 2]
    gl = BY_NAME["opengl"].from_optical(P)  # x right, y up, z back
    np.testing.assert_allclose(gl[:3, :3], np.stack([right, -down, -forward], 1), atol=1e-12)
    body = BY_NAME["body"].from_optical(P)  # REP 103 body: x forward, y left, z up
    np.testing.assert_allclose(body[:3, :3], np.stack([forward, -right, -down], 1), atol=1e-12)
    np.testing.assert_allclose(BY_NAME["world_to_camera"].from_optical(P) @ P, np.eye(4), atol=1e-12)
    view = BY_NAME["world_to_camera_opengl"].from_optical(P)  # a view matrix maps world points into OpenGL axes
    np.testing.assert_allclose(view @ gl, np.eye(4), atol=1e-12)
    for c in CONVENTIONS:
        np.testing.assert_allclose(c.to_optical(c.from_optical(P)), P, atol=1e-12, err_msg=c.name)


def test_the_reading_of_the_right_convention_is_the_true_relative_pose():
    rng = np.random.default_rng(1)
    P_ref, P_src = random_pose(rng), random_pose(rng)
    truth = np.linalg.inv(P_src) @ P_ref
    np.testing.assert_allclose(readings(P_ref, P_src)[GIVEN], truth, atol=1e-9)
    for c in CONVENTIONS:
        read = readings(c.from_optical(P_ref), c.from_optical(P_src))
        np.testing.assert_allclose(read[c.name], truth, atol=1e-9, err_msg=c.name)
        assert not np.allclose(read[GIVEN], truth, atol=1e-3), c.name


def test_prior_support_is_the_mass_near_the_single_view_depth():
    D, h, w = 32, 6, 8
    inv_c = torch.linspace(1 / 0.3, 1 / 10, D)  # descending, as geometry.depth_candidates' inverse
    prior = torch.full((1, 1, h, w), float(inv_c[10]))
    span = torch.full((1, 1, h, w), 20.0)

    def peaked_at(i: int) -> torch.Tensor:  # logits [1, D, h, w] with all the mass on candidate i
        return torch.nn.functional.one_hot(torch.tensor(i), D).float().view(1, D, 1, 1).expand(1, D, h, w) * 50

    assert prior_support(peaked_at(10), prior, inv_c, span) == pytest.approx(1.0)
    assert prior_support(peaked_at(10 + PRIOR_WINDOW), prior, inv_c, span) == pytest.approx(1.0)
    assert prior_support(peaked_at(10 + PRIOR_WINDOW + 1), prior, inv_c, span) == pytest.approx(0.0, abs=1e-6)
    flat = torch.zeros(1, D, h, w)
    assert prior_support(flat, prior, inv_c, span) == pytest.approx((2 * PRIOR_WINDOW + 1) / D)
    span[..., : w - 1] = 2.0  # parallax at 1/8 of the cells: not judged
    assert prior_support(peaked_at(10), prior, inv_c, span) is None
    span[...] = 2.0
    span[..., : w // 2] = 20.0  # at half of them: only those count
    mixed = peaked_at(30).clone()
    mixed[..., : w // 2] = peaked_at(10)[..., : w // 2]
    assert prior_support(mixed, prior, inv_c, span) == pytest.approx(1.0)


def test_the_verdict_needs_a_clear_lead_in_most_checks():
    check = PoseConventionCheck()
    right = {GIVEN: 0.7, "opengl": 0.3, "world_to_camera": 0.45, "world_to_camera_opengl": 0.4, "body": 0.2}
    for _ in range(20):
        check.add(right)
    assert check.suspect is None and check.message("camera 'cam'") is None
    check.reset()
    wrong = {GIVEN: 0.25, "opengl": 0.75, "world_to_camera": 0.3, "world_to_camera_opengl": 0.35, "body": None}
    for _ in range(MIN_CHECKS - 1):
        check.add(wrong)
    assert check.suspect is None  # too few checks
    check.add(wrong)
    assert check.suspect is BY_NAME["opengl"]
    message = check.message("camera 'cam'")
    assert "OpenGL" in message and "T @ diag(1, -1, -1, 1)" in message and "camera 'cam'" in message
    check.reset()
    for scores in [wrong, right, wrong, right, wrong, right]:  # leads in half of the checks only
        check.add(scores)
    assert check.suspect is None
    check.reset()
    check.add({GIVEN: None, "opengl": 0.9})  # no parallax as given: not a check
    assert len(check.checks) == 0


def test_prior_support_judges_only_textured_cells():
    D, h, w = 32, 6, 8
    inv_c = torch.linspace(1 / 0.3, 1 / 10, D)
    prior = torch.full((1, 1, h, w), float(inv_c[10]))
    span = torch.full((1, 1, h, w), 20.0)
    logits = torch.zeros(1, D, h, w)
    logits[:, 10, :, : w // 2] = 50.0  # textured half: peaked at the prior; flat half: chance
    texture = torch.zeros(1, 1, h, w)
    assert prior_support(logits, prior, inv_c, span, texture) is None  # a blank image: nothing to judge
    texture[..., : w // 2] = 0.9
    assert prior_support(logits, prior, inv_c, span, texture) == pytest.approx(1.0)


def test_rotation_lead_compares_a_reading_without_parallax_with_the_given_best_near_the_prior():
    D, h, w = 32, 4, 4
    inv_c = torch.linspace(1 / 0.3, 1 / 10, D)
    prior = torch.full((1, 1, h, w), float(inv_c[10]))
    given = torch.zeros(1, D, h, w)
    given[:, 10 + PRIOR_WINDOW] = 3.0  # best near the prior: 3
    given[:, 30] = 9.0  # far from the prior: not counted
    assert torch.equal(best_near_prior(given, prior, inv_c), torch.full((1, 1, h, w), 3.0))
    flat = torch.full((1, D, h, w), 5.0)  # no parallax: the same logit at every candidate
    eligible = torch.ones(1, 1, h, w, dtype=torch.bool)
    assert rotation_lead(flat, best_near_prior(given, prior, inv_c), eligible) == pytest.approx(2.0)
    assert rotation_lead(flat - 4.0, best_near_prior(given, prior, inv_c), eligible) == pytest.approx(-2.0)


def test_a_reading_without_parallax_that_fits_better_is_named():
    """World-to-camera poses of a slow camera: only the given (wrong) reading has parallax; the right one is judged
    by its rotation warp (rotation_lead)."""
    check = PoseConventionCheck()
    slow_w2c = {GIVEN: 0.58, "opengl": 0.5, "body": 0.3, rotation_key("world_to_camera"): 5.4,
                rotation_key("world_to_camera_opengl"): -7.0}
    for _ in range(MIN_CHECKS):
        check.add(slow_w2c)
    assert check.suspect is BY_NAME["world_to_camera"] and check.unmoved() == (BY_NAME["world_to_camera"],)
    message = check.message("this recording")
    assert "T_world_cam = inv(T)" in message and "more than the images show" in message
    assert "view matrix" not in message
    check.reset()
    both = dict(slow_w2c, **{rotation_key("world_to_camera_opengl"): 4.0})
    for _ in range(MIN_CHECKS):
        check.add(both)
    assert check.unmoved() == (BY_NAME["world_to_camera"], BY_NAME["world_to_camera_opengl"])
    assert "cannot be told apart" in check.message("x") and "inv(T) @ diag(1, -1, -1, 1)" in check.message("x")
    check.reset()
    weak = dict(slow_w2c, **{rotation_key("world_to_camera"): ROTATION_MARGIN / 2})
    for scores in [slow_w2c, weak, slow_w2c, weak, slow_w2c, weak]:  # above the margin in half the checks only
        check.add(scores)
    assert check.suspect is None and check.message("x") is None


def test_checks_are_often_while_the_window_fills_then_rare():
    check = PoseConventionCheck()
    due = [check.due() for _ in range(12)]
    assert due.count(True) == 4 and due[2] and not due[1] and not due[3]
    for _ in range(8):
        check.add({GIVEN: 0.7})
    assert sum(check.due() for _ in range(60)) == 2


def test_pose_convention_is_a_fallback_with_a_meaning():
    assert is_fallback(True, POSE_CONVENTION) and POSE_CONVENTION in FALLBACK_MEANING


def run(pipeline: PerceptionPipeline, frames, convert=None):
    out = []
    for f in frames:
        out.append(pipeline.process(f if convert is None else f.with_pose(convert(f.T_world_cam))))
    return out


def abs_rel(products, truth) -> float:
    import cv2

    err, n = 0.0, 0
    for p, gt in zip(products, truth):
        gt = cv2.resize(gt, p.size, interpolation=cv2.INTER_NEAREST)
        v = np.isfinite(gt) & (gt > 0) & np.isfinite(p.depth)
        err, n = err + float((np.abs(p.depth[v] - gt[v]) / gt[v]).sum()), n + int(v.sum())
    return err / n


@pytest.fixture(scope="module")
def shipped():
    return load_model("default")[0]


def test_right_poses_of_a_synthetic_room_are_never_flagged_and_opengl_ones_are(shipped):
    frames = [f.runtime_frame() for f in iter_sequence(7, 36, (320, 240))]
    right = run(PerceptionPipeline(shipped), frames)
    assert not any(k == POSE_CONVENTION for p in right for k, _ in p.warnings)
    assert sum(not p.single_view for p in right) == len(frames) - 1
    gl = run(PerceptionPipeline(shipped), frames, BY_NAME["opengl"].from_optical)
    flagged = [i for i, p in enumerate(gl) if p.pair_reason == POSE_CONVENTION]
    assert flagged and flagged == list(range(flagged[0], len(frames))), [p.pair_reason for p in gl]
    assert all(gl[i].single_view and gl[i].source_stamp_ns is None and gl[i].baseline_m == 0.0 for i in flagged)
    messages = [m for p in gl for k, m in p.warnings if k == POSE_CONVENTION]
    assert messages and "OpenGL" in messages[0]
    off = run(PerceptionPipeline(shipped, RuntimeConfig(check_pose_convention=False)), frames,
              BY_NAME["opengl"].from_optical)
    assert not any(p.pair_reason == POSE_CONVENTION for p in off)


@pytest.mark.parametrize("convention", [c.name for c in CONVENTIONS])
def test_real_frames_given_in_another_convention_are_named_and_run_single_view(shipped, hololens_dir, convention):
    """The held-out HoloLens frames 300-339 (measured, session 22: every convention named by the 4th check, 12-20
    frames in; over all 75 held-out frames abs rel 0.22-0.25 with the check against 0.32-0.39 without it)."""
    seq = PosedSequence(hololens_dir)
    data = [seq.frame(i) for i in range(300, 340)]
    frames, truth = [f.runtime_frame() for f in data], [f.depth for f in data]
    c = BY_NAME[convention]
    checked = run(PerceptionPipeline(shipped), frames, c.from_optical)
    messages = [m for p in checked for k, m in p.warnings if k == POSE_CONVENTION]
    assert messages and c.fix in messages[-1] and c.description in messages[-1]
    assert checked[-1].pair_reason == POSE_CONVENTION and checked[-1].single_view
    # the pair-consistency rule (runtime.pose_consistency) alone catches some of these pairs too: off as well here
    unchecked = run(PerceptionPipeline(shipped, RuntimeConfig(check_pose_convention=False, check_pose_consistency=False)),
                    frames, c.from_optical)
    assert abs_rel(checked, truth) < abs_rel(unchecked, truth) - 0.03


def test_right_real_poses_are_not_flagged(shipped, hololens_dir):
    seq = PosedSequence(hololens_dir)
    frames = [seq.frame(i, depth=False).runtime_frame() for i in range(300, 372)]
    products = run(PerceptionPipeline(shipped), frames)
    assert not any(p.pair_reason == POSE_CONVENTION for p in products)
    assert not any(k == POSE_CONVENTION for p in products for k, _ in p.warnings)
    assert sum("pose_check" in p.timings for p in products) >= 8  # it did check


def test_matching_texture_is_near_zero_on_blank_images_and_high_on_real_ones(shipped, hololens_dir):
    matching = shipped.matching
    W, H = shipped.config.input_size
    rng = np.random.default_rng(0)
    real = PosedSequence(hololens_dir).frame(300, depth=False).runtime_frame()
    import cv2

    images = {"grey": np.full((H, W, 3), 128.0), "black": np.zeros((H, W, 3)),
              "noise": np.clip(128 + rng.normal(0, 3, (H, W, 3)), 0, 255),
              "real": cv2.resize(real.rgb, (W, H), interpolation=cv2.INTER_AREA).astype(np.float64)}
    share = {}
    for name, rgb in images.items():
        with torch.inference_mode():
            feats = shipped.encode(torch.from_numpy(rgb / 255.0).float().permute(2, 0, 1)[None])
            texture = matching.texture(feats.matching)
        assert texture.shape[1] == 1 and float(texture.min()) >= 0 and float(texture.max()) <= 1
        share[name] = float((texture >= MIN_TEXTURE).float().mean())
    assert share["grey"] == share["black"] == 0.0 and share["noise"] < 0.05, share
    assert share["real"] > 0.6, share


def test_blank_frames_with_right_poses_are_not_judged(shipped, hololens_dir):
    """A covered lens or a black stream (a helper's trial: blank frames with right poses were named "an OpenGL view
    matrix"): nothing matches, so nothing is judged."""
    import dataclasses

    seq = PosedSequence(hololens_dir)
    frames = [seq.frame(i, depth=False).runtime_frame() for i in range(300, 330)]
    for value in (0, 128):
        pipeline = PerceptionPipeline(shipped)
        products = [pipeline.process(dataclasses.replace(f, rgb=np.full_like(f.rgb, value))) for f in frames]
        assert sum("pose_check" in p.timings for p in products) >= 4  # checks ran ...
        assert not any(p.pair_reason == POSE_CONVENTION for p in products)  # ... and judged nothing
        assert not any(k == POSE_CONVENTION for p in products for k, _ in p.warnings)


@pytest.mark.parametrize("convention", ["world_to_camera", "world_to_camera_opengl", None])
def test_world_to_camera_poses_of_a_slow_camera_are_named(shipped, convention):
    """A helper's trial: a synthetic room at 0.05 m/s and 30 Hz with world-to-camera poses went unflagged (abs rel
    0.86 against 0.087 right, 0.082 single-view): the right reading has no parallax between the pipeline's pairs."""
    frames = [f.runtime_frame() for f in iter_sequence(11, 30, (320, 240), rate_hz=30.0, speed=0.05)]
    convert = BY_NAME[convention].from_optical if convention else None
    products = run(PerceptionPipeline(shipped), frames, convert)
    messages = [m for p in products for k, m in p.warnings if k == POSE_CONVENTION]
    if convention is None:
        assert not messages and not any(p.pair_reason == POSE_CONVENTION for p in products)
        return
    assert messages and BY_NAME[convention].fix in messages[-1], messages
    other = "world_to_camera_opengl" if convention == "world_to_camera" else "world_to_camera"
    assert BY_NAME[other].description not in messages[-1]
    assert products[-1].pair_reason == POSE_CONVENTION and products[-1].single_view


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Sequence folders of one synthetic room (24 frames): poses right (key None) and in OpenGL's axes."""
    import dataclasses

    from mtl3d_perception.data.sequence import write_sequence

    root = tmp_path_factory.mktemp("recordings")
    folders = {}
    for convention in (None, "opengl"):
        convert = BY_NAME[convention].from_optical if convention else (lambda T: T)
        frames = (dataclasses.replace(f, T_world_cam=convert(f.T_world_cam)) for f in iter_sequence(7, 24, (320, 240)))
        folders[convention] = write_sequence(root / str(convention), frames)
    return folders


@pytest.mark.parametrize("convention", ["opengl", None])
def test_mtl3d_eval_says_whether_a_recordings_poses_fit(tmp_path, recordings, convention, capsys):
    """``mtl3d eval`` of a sequence folder whose poses.txt holds OpenGL poses names the conversion in report.md and on
    stderr (its metrics stay those of the poses as given); right poses are reported as checked and fitting."""
    from mtl3d_perception.model.checkpoint import default_model_path
    from mtl3d_perception.train.eval_cli import evaluate_checkpoint

    spec = f"sequence:{recordings[convention]}"
    report = evaluate_checkpoint(str(default_model_path()), [spec], tmp_path / "eval", modes=("two_view",), montages=0)
    poses = report["pose_check"][spec]
    text = (tmp_path / "eval" / "report.md").read_text()
    err = capsys.readouterr().err
    if convention:
        assert poses["verdict"] == "opengl" and "T @ diag(1, -1, -1, 1)" in poses["message"]
        assert poses["message"] in text and poses["message"] in err
    else:
        assert poses == {"pairs": poses["pairs"], "verdict": "fit", "message": None} and poses["pairs"] >= 4
        assert "Poses: they fit the images" in text and "warning" not in err


def test_training_warns_about_a_recording_whose_poses_do_not_fit(recordings, caplog):
    """``mtl3d train`` checks each recorded source before it starts (the shipped model judges), so fine-tuning on a
    user's recording with OpenGL poses is warned about, naming the source and the conversion."""
    import logging

    from mtl3d_perception.data.datasets import SourceConfig, build_dataset
    from mtl3d_perception.train.trainer import check_recorded_poses

    sources = [SourceConfig(kind="synthetic", num_scenes=1, frames_per_scene=4),
               SourceConfig(kind="sequence", path=str(recordings[None])),
               SourceConfig(kind="sequence", path=str(recordings["opengl"]))]
    data = build_dataset(sources, image_size=(160, 120), num_views=2)
    with caplog.at_level(logging.INFO, logger="mtl3d_perception.train.trainer"):
        warnings = [c.message for c in check_recorded_poses(data.sources) if c.message]
    assert len(warnings) == 1 and "data.train.2 (sequence" in warnings[0] and "OpenGL" in warnings[0]
    assert "data.train.1 (sequence" in caplog.text and "poses checked, they fit" in caplog.text


def test_replay_of_a_bag_with_opengl_poses_says_so(tmp_path, recordings, shipped):
    """The runtime's driver carries the warning into replay's report and counts the frames as a fallback."""
    import json

    from mtl3d_perception.data.bag import write_bag
    from mtl3d_perception.replay.options import ReplayOptions
    from mtl3d_perception.replay.runner import replay_bag

    bag = write_bag(list(PosedSequence(recordings["opengl"])), tmp_path / "bag")
    replay_bag(bag, tmp_path / "out", shipped, ReplayOptions(progress=False))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["multi_view"]["pair_reasons"].get(POSE_CONVENTION, 0) >= 1  # from the 4th check (~12 paired frames) on
    report = (tmp_path / "out" / "report.md").read_text()
    assert "OpenGL" in report and "T @ diag(1, -1, -1, 1)" in report


def test_mtl3d_bag_keeps_poses_of_another_convention_as_they_are_and_says_so(tmp_path, shipped, capsys):
    """A user trial: a y-up recording's world-to-camera poses bagged by the default ``mtl3d bag`` were turned z-up (a
    turn computed as if they were camera-to-world), which left poses that no reading of the node's check fits: replay
    ran them two-view with no warning (abs rel 0.58 against 0.25 once named). ``mtl3d bag`` now checks poses.txt
    first: it warns, naming the convention, and writes the poses as they are, so replay names them as well."""
    import dataclasses
    import json

    from mtl3d_perception import cli
    from mtl3d_perception.data.sequence import write_sequence
    from mtl3d_perception.replay.options import ReplayOptions
    from mtl3d_perception.replay.runner import replay_bag

    y_up = np.eye(4)
    y_up[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]  # the world's z (up) becomes y, as a HoloLens world
    to_w2c = BY_NAME["world_to_camera"].from_optical
    frames = (dataclasses.replace(f, T_world_cam=to_w2c(y_up @ f.T_world_cam)) for f in iter_sequence(7, 24, (320, 240)))
    seq = write_sequence(tmp_path / "seq", frames)
    assert cli.main(["bag", str(seq), "--out", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "warning: the poses of" in out and "world-to-camera extrinsics" in out and "not turned z-up" in out
    assert "turned the sequence's world" not in out
    replay_bag(tmp_path / "bag", tmp_path / "out", shipped, ReplayOptions(progress=False))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["multi_view"]["pair_reasons"].get(POSE_CONVENTION, 0) >= 1
    assert "T_world_cam = inv(T)" in (tmp_path / "out" / "report.md").read_text()


def test_mtl3d_bag_of_right_poses_checks_them_quietly(tmp_path, recordings, capsys):
    """Right poses pass the check with no warning (and ``--no-pose-check`` skips it)."""
    from mtl3d_perception import cli

    assert cli.main(["bag", str(recordings[None]), "--out", str(tmp_path / "bag")]) == 0
    assert "warning" not in capsys.readouterr().out
    assert cli.main(["bag", str(recordings["opengl"]), "--out", str(tmp_path / "gl"), "--no-pose-check"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_mtl3d_bag_of_real_world_to_camera_poses_is_named_in_replay(tmp_path, shipped, capsys):
    """The trial's case: HoloLens frames (a y-up world) with world-to-camera poses, bagged by the default ``mtl3d
    bag`` and replayed: no warning and abs rel 0.58 when the bag turned them z-up; now named (0.25 on its 40 frames,
    most of them single-view)."""
    import dataclasses
    import json
    from pathlib import Path

    from mtl3d_perception import cli
    from mtl3d_perception.data.sequence import write_sequence
    from mtl3d_perception.replay.options import ReplayOptions
    from mtl3d_perception.replay.runner import replay_bag

    hololens = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hololens_000"
    if not hololens.is_dir():
        pytest.skip(f"needs the real sequence at {hololens} (../shared/data beside the checkout)")
    to_w2c = BY_NAME["world_to_camera"].from_optical
    frames = (dataclasses.replace(f, T_world_cam=to_w2c(f.T_world_cam)) for f in PosedSequence(hololens)[30:70])
    seq = write_sequence(tmp_path / "seq", frames, image_format="jpg")
    assert cli.main(["bag", str(seq), "--out", str(tmp_path / "bag")]) == 0
    assert "world-to-camera extrinsics" in capsys.readouterr().out
    replay_bag(tmp_path / "bag", tmp_path / "out", shipped, ReplayOptions(progress=False))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["multi_view"]["pair_reasons"].get(POSE_CONVENTION, 0) >= 10
    assert metrics["multi_view"]["metrics"]["depth/abs_rel"] < 0.4
    # each check re-measures the verdict: the report lists it once, the latest, with how many times it came
    named = [w for w in metrics["warnings"] if w.startswith(f"{POSE_CONVENTION}:")]
    assert len(named) == 1 and "times; the latest)" in named[0], metrics["warnings"]
