"""PerceptionPipeline with the real tiny network (random weights): caching, pairing, resolutions, clouds, bad input."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from mtl3d_perception.evaluation.montage import colorize_depth, colorize_normals
from mtl3d_perception.geometry import (
    backproject,
    pose_from_quat_trans,
    relative_pose,
    resize_intrinsics,
    transform_points,
)
from mtl3d_perception.model import build_model, resolve_config
from mtl3d_perception.runtime.config import RuntimeConfig
from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.pipeline import PerceptionPipeline

NET_W, NET_H = 64, 48
CAM_W, CAM_H = 96, 72
K_CAM = np.array([[90.0, 0.0, 47.5], [0.0, 90.0, 35.5], [0.0, 0.0, 1.0]])
S = 1_000_000_000


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = dataclasses.replace(resolve_config("tiny"), input_size=(NET_W, NET_H), pretrained=False, num_depth=8)
    return build_model(cfg).eval()


def _config(**changes) -> RuntimeConfig:
    """The runtime defaults on the CPU, with ``changes`` by parameter name."""
    return RuntimeConfig().replace(**{"device": "cpu", **changes})


def _frame(i: int, x: float | None = None, seed: int = 0) -> Frame:
    rgb = np.random.default_rng(seed + i).integers(0, 256, (CAM_H, CAM_W, 3)).astype(np.uint8)
    pose = None if x is None else pose_from_quat_trans(np.array([0.0, 0.0, 0.0, 1.0]), np.array([x, 0.0, 0.0]))
    return Frame(i * S // 10, "cam", rgb, K_CAM, pose)


class _CountingModel(torch.nn.Module):
    """Wraps the network to count encode calls (the feature cache must make it one per frame)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.encoded = inner, inner.config, 0

    def encode(self, images):
        self.encoded += 1
        return self.inner.encode(images)

    def predict(self, *args):
        return self.inner.predict(*args)


class _AwayNormalsModel(_CountingModel):
    """Predicts normals that point away from the camera: optical +z (reversed) on the left half, 5 degrees past
    perpendicular to +x on the right (a grazing surface)."""

    def predict(self, *args):
        out = dict(self.inner.predict(*args))
        n = torch.zeros_like(out["normals"])
        W = n.shape[-1]
        n[:, 2, :, : W // 2] = 1.0
        n[:, 0, :, W // 2:], n[:, 2, :, W // 2:] = np.cos(np.radians(5.0)), np.sin(np.radians(5.0))
        out["normals"] = n
        return out


@pytest.mark.parametrize("resolution", ["network", "camera"])
def test_published_normals_face_the_camera(model, resolution):
    """An output trial: docs/design.md promises normals pointing towards the camera, and a few predicted ones
    pointed up to 5.5 degrees away at grazing surfaces. Reversed ones are flipped, grazing ones made perpendicular."""
    pipe = PerceptionPipeline(_AwayNormalsModel(model), _config(output_resolution=resolution))
    products = pipe.process(_frame(0, x=0.0))
    W, H = products.size
    rays = backproject(np.ones((H, W)), products.K)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    facing = (products.normals * rays).sum(-1)
    assert np.isfinite(facing).all() and (facing <= 1e-5).all()
    left = products.normals[:, : W // 4]
    np.testing.assert_allclose(left, np.broadcast_to([0.0, 0.0, -1.0], left.shape), atol=1e-6)  # flipped
    # the grazing ones: perpendicular to the ray, turned by no more than they pointed past it (the nearest such)
    predicted = np.array([np.cos(np.radians(5.0)), 0.0, np.sin(np.radians(5.0))])
    past = np.arcsin((rays[:, W // 2 + 2:] @ predicted).clip(-1, 1))
    turned = np.arccos((products.normals[:, W // 2 + 2:] @ predicted).clip(-1, 1))
    grazing = (past > 0) & (past < np.radians(45.0))
    assert grazing.mean() > 0.5 and np.abs(facing[:, W // 2 + 2:][grazing]).max() < 1e-5
    np.testing.assert_allclose(turned[grazing], past[grazing], atol=1e-3)


def test_each_frame_encoded_once_and_paired(model):
    counting = _CountingModel(model)
    pipe = PerceptionPipeline(counting, _config(min_baseline_m=0.1, max_pair_age_s=1.0))
    reasons, baselines = [], []
    for i in range(4):
        products = pipe.process(_frame(i, x=0.06 * i))
        reasons.append((products.pair_reason, products.source_stamp_ns))
        baselines.append(products.baseline_m)
    assert pipe.model.encoded == 4  # the pipeline runs its own (inference) copy of the model
    assert reasons[0] == ("no_history", None)
    assert reasons[1] == ("farthest", 0)  # 6 cm < 10 cm: the widest baseline there is
    assert reasons[2] == ("baseline", 0)  # 12 cm to frame 0
    assert reasons[3] == ("baseline", S // 10)
    assert baselines == pytest.approx([0.0, 0.06, 0.12, 0.12])  # the parallax each frame had
    assert set(pipe._features) == set(pipe.history.keys)


def test_two_view_output_equals_model_streaming(model):
    pipe = PerceptionPipeline(model, _config(min_baseline_m=0.01).with_outputs({"depth"}))
    f0, f1 = _frame(0, x=0.0), _frame(1, x=0.1)
    pipe.process(f0)
    products = pipe.process(f1)
    assert not products.single_view
    K_net = resize_intrinsics(K_CAM, (CAM_W, CAM_H), (NET_W, NET_H))
    rgb0, img0, _ = pipe.preprocess(f0)
    _, img1, _ = pipe.preprocess(f1)
    with torch.no_grad():
        out = model.predict(model.encode(img1), model.encode(img0), torch.as_tensor(K_net, dtype=torch.float32)[None],
                            torch.as_tensor(relative_pose(f0.T_world_cam, f1.T_world_cam), dtype=torch.float32)[None])
    np.testing.assert_allclose(products.depth, out["depth"][0, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert products.semantic is None and products.points is None and products.normals is None


def test_observed_frames_are_sources_without_inference(model):
    """The node's lazy mode: ``observe`` runs no network, checks the frame as ``process`` does (warnings, time jump)
    and keeps it as a source; the next processed frame pairs with it and encodes it then, once."""
    counting = _CountingModel(model)
    pipe = PerceptionPipeline(counting, _config(min_baseline_m=0.1, max_pair_age_s=1.0))
    assert pipe.observe(_frame(0, x=0.0)) == []
    bad = _frame(1, x=0.05)
    bad.T_world_cam[0, 3] = np.nan
    assert [k for k, _ in pipe.observe(bad)] == ["invalid_pose"]
    assert pipe.model.encoded == 0 and pipe.history.stamps == [0] and not pipe._features
    products = pipe.process(_frame(2, x=0.12))
    assert (products.pair_reason, products.source_stamp_ns, products.single_view) == ("baseline", 0, False)
    assert pipe.model.encoded == 2  # the new frame, and the observed source now that it is used
    products = pipe.process(_frame(3, x=0.13))  # the same source again: its features are cached now (a review)
    assert products.source_stamp_ns == 0 and pipe.model.encoded == 3
    assert [k for k, _ in pipe.observe(_frame(30, x=0.0))] == []
    assert [k for k, _ in pipe.observe(_frame(31, x=0.0))] == []
    assert [k for k, _ in pipe.observe(_frame(3, x=0.0))] == ["time_jump"] and pipe.history.stamps == [3 * S // 10]


def test_outputs_per_call_compute_only_those_groups(model):
    """The node passes the groups that have subscribers: the cloud alone needs depth and labels, not normals."""
    pipe = PerceptionPipeline(model, _config())
    products = pipe.process(_frame(0, x=0.0), outputs={"points"})
    assert products.points is not None and products.depth is not None
    assert products.semantic is None and products.normals is None and products.boundary is None
    products = pipe.process(_frame(1, x=0.1))  # None: every enabled output
    assert all(v is not None for v in (products.points, products.semantic, products.normals, products.boundary))
    with pytest.raises(ValueError, match=r"unknown outputs \['depth/image'\]; expected some of depth, semantic"):
        pipe.process(_frame(2, x=0.2), outputs={"depth/image"})  # a topic name is not a group (a review)


@pytest.mark.parametrize("resolution", ["network", "camera"])
def test_output_resolution_and_intrinsics(model, resolution):
    pipe = PerceptionPipeline(model, _config(output_resolution=resolution, point_stride=3))
    products = pipe.process(_frame(0, x=0.0))
    W, H = (NET_W, NET_H) if resolution == "network" else (CAM_W, CAM_H)
    assert products.size == (W, H)
    for name in ("depth", "semantic", "boundary"):
        assert getattr(products, name).shape == (H, W), name
    assert products.normals.shape == products.semantic_color.shape == products.normals_color.shape == (H, W, 3)
    assert products.depth.dtype == np.float32 and products.semantic.dtype == np.uint8
    want_K = K_CAM if resolution == "camera" else resize_intrinsics(K_CAM, (CAM_W, CAM_H), (NET_W, NET_H))
    np.testing.assert_allclose(products.K, want_K)
    valid = np.isfinite(products.depth[::3, ::3])
    assert products.points.points.shape == (valid.sum(), 3)
    np.testing.assert_allclose(products.points.points,
                               backproject(products.depth, products.K)[::3, ::3][valid], rtol=1e-5, atol=1e-6)
    assert products.points_frame_id == "cam"
    # ~/normals/color is the montages' colouring (one convention: the outward direction (1 - n) / 2)
    np.testing.assert_array_equal(products.normals_color, colorize_normals(products.normals))
    # ~/depth/image_color: the 32FC1 depth for viewers that draw float images as [0, 1] (Foxglove: white past 1 m)
    np.testing.assert_array_equal(products.depth_color, colorize_depth(products.depth, model.config.depth_range))
    assert set(products.timings) == {"preprocess", "encode", "predict", "postprocess", "cloud", "total"}


def test_world_cloud_and_camera_fallback(model):
    pipe = PerceptionPipeline(model, _config(cloud_frame="world", world_frame="odom", point_stride=4))
    frame = _frame(0, x=2.0)
    world = pipe.process(frame)
    assert world.points_frame_id == "odom"
    cam = PerceptionPipeline(model, _config(point_stride=4)).process(frame)
    np.testing.assert_allclose(world.points.points, transform_points(frame.T_world_cam, cam.points.points), atol=1e-5)
    unposed = pipe.process(_frame(5))
    assert unposed.points_frame_id == "cam" and unposed.single_view and unposed.pair_reason == "no_pose"


def test_nan_pose_and_time_jump_are_warnings(model):
    pipe = PerceptionPipeline(model, _config().with_outputs(set()))
    bad = _frame(3, x=0.0)
    bad.T_world_cam[0, 3] = np.nan
    products = pipe.process(bad)
    assert products.single_view and [k for k, _ in products.warnings] == ["invalid_pose"]
    pipe.process(_frame(30, x=0.0))
    pipe.process(_frame(31, x=0.0))  # 2.8 s ahead, and time goes on from there (one frame alone would be an outlier)
    products = pipe.process(_frame(2, x=0.1))  # 2.9 s back: more than JUMP_BACK_S
    assert [k for k, _ in products.warnings] == ["time_jump"] and products.single_view
    assert pipe.history.stamps == [2 * S // 10]


def test_a_lone_future_stamp_is_dropped_from_the_history_not_a_jump(model):
    """One posed frame stamped ~2000 s ahead: the next frame says so (``stamp_outlier``), the outlier leaves the
    history, and the frames before it stay usable sources."""
    pipe = PerceptionPipeline(model, _config(min_baseline_m=0.05).with_outputs(set()))
    pipe.process(_frame(1, x=0.0))
    pipe.process(_frame(20_000, x=0.1))  # 2000 s ahead
    products = pipe.process(_frame(2, x=0.1))
    assert [k for k, _ in products.warnings] == ["stamp_outlier"]
    assert (products.pair_reason, products.source_stamp_ns) == ("baseline", S // 10)
    assert pipe.history.stamps == [S // 10, 2 * S // 10] and set(pipe._features) == set(pipe.history.keys)


def test_tf_failure_advice_follows_the_cause(model):
    """A re-check trial: with a transform stamped in the future on the edge, every frame said "raise tf_timeout_s",
    which cannot help; TF holding only newer data (tf2's "extrapolation into the past") now says so."""
    from mtl3d_perception.runtime.driver import FrameDriver
    from mtl3d_perception.runtime.pose_queue import PoseJob
    from mtl3d_perception.runtime.pose_wait import LivePoseWait
    from mtl3d_perception.runtime.stats import RuntimeStats

    driver = FrameDriver(PerceptionPipeline(model, _config().with_outputs(set())),
                         LivePoseWait(lambda frame: (None, "no"), 0.1), policy="newest", stats=RuntimeStats())
    past = ("ExtrapolationException: Lookup would require extrapolation into the past. Requested time 40.0 but the "
            "earliest data is at time 2147483647.0")
    driver.run(PoseJob(_frame(1), None, past, 0))
    assert "raising tf_timeout_s does not help" in driver.stats.last_problem
    assert "stamped in the future" in driver.stats.last_problem
    future = ("ExtrapolationException: Lookup would require extrapolation into the future. Requested time 40.0 but "
              "the latest data is at time 39.9")
    driver.run(PoseJob(_frame(2), None, future, 0))
    assert "Raise tf_timeout_s if odometry publishes later" in driver.stats.last_problem
    # a live trial: world_frame map on a robot with odom only said "Raise tf_timeout_s" (tf2's wording below)
    missing = {
        'LookupException: "odom" passed to lookupTransform argument target_frame does not exist. ':
            "world_frame 'odom' is not in TF: set the world_frame parameter",
        'LookupException: "cam" passed to lookupTransform argument source_frame does not exist. ':
            "the image's frame_id 'cam' is not in TF: publish the camera's transform",
        "ConnectivityException: Could not find a connection between 'odom' and 'cam' because they are not part of the "
        "same tree.Tf has two or more unconnected trees.": "'odom' and 'cam' are in unconnected TF trees",
    }
    for error, advice in missing.items():
        driver.run(PoseJob(_frame(2), None, error, 0))
        assert f"single-view. {advice}" in driver.stats.last_problem
        assert "raising tf_timeout_s does not help" in driver.stats.last_problem
        assert "Raise tf_timeout_s" not in driver.stats.last_problem
    # with nothing in TF at all (the node lists what it holds), no setting is to blame yet
    empty = 'LookupException: "odom" passed to lookupTransform argument target_frame does not exist; frames in TF: none'
    driver.run(PoseJob(_frame(2), None, empty, 0))
    assert "single-view. TF holds no transform at all" in driver.stats.last_problem
    assert "set the world_frame parameter" not in driver.stats.last_problem
    driver.skip(PoseJob(_frame(3), None, past, 0), "no subscriber")  # lazy: nothing ran, so not "single-view"
    assert "kept without a pose (no source view later). TF holds only data newer" in driver.stats.last_problem


def test_header_glitches_are_not_a_second_camera(model):
    """A hostile-input trial: one frame with an empty frame_id logged "input interleaves cameras '' and 'cam'" and
    counted bad_input.cameras (twice: there and back), as did one with a leading slash; neither is another camera.
    An unstamped frame (zero stamp) is not a time jump either."""
    pipe = PerceptionPipeline(model, _config().with_outputs(set()))
    glitches = [replace(_frame(2), frame_id="", header_problem="empty_frame_id"), replace(_frame(3), frame_id="/cam"),
                replace(_frame(4), stamp_ns=0, header_problem="zero_stamp")]
    for frame in [_frame(1), *glitches, _frame(5)]:
        assert [k for k, _ in pipe.process(frame).warnings] == []
    other = pipe.process(replace(_frame(6), frame_id="cam2"))
    assert [k for k, _ in other.warnings] == ["cameras"]  # a real second camera still is one


def test_preprocess_takes_read_only_and_strided_images(model):
    """Frames decoded from bag messages share the message's read-only buffer; torch must not warn about it."""
    rgb = np.random.default_rng(3).integers(0, 256, (NET_H, NET_W + 2, 3)).astype(np.uint8)
    read_only = np.frombuffer(rgb[:, :NET_W].tobytes(), np.uint8).reshape(NET_H, NET_W, 3)
    strided = rgb[:, :NET_W]  # rows padded, as in a message whose step exceeds width * 3
    pipe = PerceptionPipeline(model)
    for image in (read_only, strided):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, tensor, _ = pipe.preprocess(Frame(0, "cam", image, K_CAM))
        np.testing.assert_array_equal(tensor[0].permute(1, 2, 0).mul(255).round().byte().numpy(), rgb[:, :NET_W])
    assert not read_only.flags.writeable


def test_bad_frames_and_options_raise(model):
    pipe = PerceptionPipeline(model)
    zero_k = _frame(0)
    zero_k.K = np.zeros((3, 3))
    with pytest.raises(ValueError, match="focal length"):
        pipe.process(zero_k)
    with pytest.raises(ValueError, match="uint8"):
        pipe.process(Frame(0, "cam", np.zeros((4, 4), np.float32), K_CAM))
    with pytest.raises(ValueError, match="output_resolution"):
        pipe.set_config(_config(output_resolution="huge"))
    with pytest.raises(ValueError, match="point_stride"):
        pipe.set_config(_config(point_stride=0))
    pipe.set_config(_config(precision="fp16"))  # no CUDA here: falls back to fp32 with a warning
    assert pipe.precision == "fp32"
    pipe.close()
    assert pipe.model is None


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_a_cpu_runs_fp32_and_says_why(model, precision):
    """One rule with the node's (runtime.params.CUDA_ONLY_PRECISIONS): bf16 on a CPU used to run CPU autocast."""
    pipe = PerceptionPipeline(model, _config(precision=precision))
    assert pipe.precision == "fp32"
    assert pipe.precision_note == f"precision {precision} needs CUDA; running fp32 on cpu"
    pipe.set_config(_config())
    assert pipe.precision == "fp32" and pipe.precision_note is None


def test_load_model_forms(model, tmp_path):
    from mtl3d_perception.model import save_checkpoint
    from mtl3d_perception.runtime.loading import load_model

    built, description = load_model("preset:tiny")
    assert "RANDOM" in description and tuple(built.config.input_size) == (160, 120)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    loaded, description = load_model(str(path))
    assert description == str(path) and tuple(loaded.config.input_size) == (NET_W, NET_H)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_model(str(tmp_path / "missing.safetensors"))


def test_new_world_frame_forgets_history(model):
    """Poses in the history are in the old world frame; pairing them with poses in the new one would be wrong."""
    config = _config(min_baseline_m=0.1, world_frame="odom").with_outputs({"depth"})
    pipe = PerceptionPipeline(model, config)
    pipe.process(_frame(0, x=0.0))
    pipe.set_config(config.replace(world_frame="odom"))  # unchanged: history kept
    assert len(pipe.history) == 1
    pipe.set_config(config.replace(world_frame="map"))
    assert len(pipe.history) == 0 and not pipe._features
    products = pipe.process(_frame(1, x=0.2))
    assert products.single_view and products.pair_reason == "no_history"



def test_single_view_setting_never_pairs_and_keeps_the_pose(model):
    """``single_view``: a posed stream that would pair runs single-view, reason ``single_view_mode``, as the unposed
    frames would; the pose still places the world-frame cloud. Switched off, pairing starts from an empty history."""
    config = _config(min_baseline_m=0.01, cloud_frame="world", world_frame="odom", point_stride=4)
    frames = [_frame(0, x=0.0), _frame(1, x=0.1)]
    paired = PerceptionPipeline(model, config)
    assert [paired.process(f).pair_reason for f in frames] == ["no_history", "baseline"]  # the stream pairs
    pipe = PerceptionPipeline(model, config.replace(single_view=True))
    got = [pipe.process(f) for f in frames]
    for products in got:
        assert products.single_view and products.pair_reason == "single_view_mode"
        assert products.source_stamp_ns is None and products.baseline_m == 0.0
        assert products.points_frame_id == "odom"
    assert len(pipe.history) == 0 and not pipe._features  # no source will ever be used
    unposed = PerceptionPipeline(model, config).process(frames[1].with_pose(None))
    np.testing.assert_allclose(got[1].depth, unposed.depth, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got[1].points.points, transform_points(frames[1].T_world_cam, unposed.points.points),
                               atol=1e-5)
    pipe.set_config(config)
    assert pipe.process(_frame(2, x=0.2)).pair_reason == "no_history"
    assert pipe.process(_frame(3, x=0.3)).pair_reason == "baseline"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_pipeline_matches_cpu_and_close_frees_memory(model, precision, monkeypatch):
    """On CUDA (the Triton cost volume) the products match the CPU pipeline's; close() gives the memory back."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    frames = [_frame(0, 0.0), _frame(1, 0.2)]
    cpu = PerceptionPipeline(model, _config(min_baseline_m=0.1, device="cpu"))
    expected = [cpu.process(f) for f in frames]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    # a copy: the pipeline moves its model to the device, and only the pipeline may hold the CUDA copy
    gpu = PerceptionPipeline(copy.deepcopy(model), _config(device="cuda", precision=precision, min_baseline_m=0.1))
    got = [gpu.process(f) for f in frames]
    assert not got[1].single_view and got[1].source_stamp_ns == expected[1].source_stamp_ns == frames[0].stamp_ns
    valid = np.isfinite(expected[1].depth) & np.isfinite(got[1].depth)
    assert valid.mean() > 0.9
    rel = np.abs(got[1].depth[valid] - expected[1].depth[valid]) / expected[1].depth[valid]
    if precision == "fp32":
        assert rel.max() < 1e-3
        assert (got[1].semantic == expected[1].semantic).mean() > 0.99
    else:
        assert np.median(rel) < 0.05
    assert torch.cuda.memory_allocated() > before
    gpu.close()
    assert torch.cuda.memory_allocated() <= before


@pytest.mark.parametrize("camera_wh", [(90, 60), (128, 72), (64, 48)])  # 3:2 (HoloLens), 16:9 (most robot cameras), 4:3
def test_eval_feeds_the_network_what_the_runtime_does(model, tmp_path, camera_wh):
    """A user trial: on a 540x360 camera `mtl3d eval` scored 0.1577 and `mtl3d replay` 0.161 for the same frames and
    pairs, because the evaluation data cropped each image to 4:3 before resizing while the node stretches the whole
    image. The data path without augmentation now gives the network exactly the runtime's input and K."""
    from helpers import render_frames

    from mtl3d_perception.data.datasets import SourceConfig, build_dataset
    from mtl3d_perception.data.sequence import write_sequence

    frames = render_frames(3, 3, camera_wh)
    seq = write_sequence(tmp_path / "seq", frames)
    sample = build_dataset([SourceConfig(kind="sequence", path=str(seq), tasks=("depth",))],
                           image_size=(NET_W, NET_H))[1]
    pipe = PerceptionPipeline(model, _config())
    for view, index in enumerate(sample.meta[0]["frames"]):
        rgb_net, image, K_net = pipe.preprocess(Frame(S, "cam", frames[index].rgb, frames[index].K, None))
        assert image.shape[-2:] == (NET_H, NET_W)
        torch.testing.assert_close(sample.images[0, view], image[0], atol=0.5 / 255, rtol=0)
        np.testing.assert_allclose(sample.K[0, view].numpy(), K_net, rtol=1e-6)


def test_depth_colouring_spreads_a_room_over_the_colour_map():
    """Turbo over inverse depth 0.3-10 m painted every indoor frame one blue (1-3 m in 8 % of the map; the montages'
    "depth is a blur"); in log depth 1 m and 3 m lie a third of the map apart, near is red, invalid grey."""
    from mtl3d_perception.evaluation.montage import colorize_depth

    rgb = colorize_depth(np.array([[0.3, 1.0, 3.0, 10.0, np.nan]]), (0.3, 10.0))[0].astype(int)
    assert rgb[0, 0] > 100 and rgb[0, 2] < 50 and rgb[3, 2] > rgb[3, 0]  # near red, far blue
    assert np.abs(rgb[1] - rgb[2]).sum() > 150 and (rgb[4] == 96).all()


def test_depth_colouring_matches_the_log_depth_formula_at_camera_resolution():
    """The node colours depth at the camera's size with output_resolution camera: 15-30 ms at 1280x720 in float64.
    The float32 / OpenCV path gives the formula's colours: turbo index floor(255 (log hi - log d) / (log hi - log lo)),
    invalid (NaN, inf, <= 0) grey, out of range clipped."""
    import cv2

    from mtl3d_perception.evaluation.montage import colorize_depth

    lo, hi = 0.3, 10.0
    depth = np.random.default_rng(0).uniform(0.1, 15.0, (720, 1280)).astype(np.float32)
    depth[0, :4] = [np.nan, np.inf, 0.0, -1.0]
    ok = np.isfinite(depth) & (depth > 0)
    t = (np.log(hi) - np.log(np.clip(np.where(ok, depth, hi).astype(np.float64), lo, hi))) / (np.log(hi) - np.log(lo))
    expected = cv2.applyColorMap(np.uint8(np.clip(t, 0, 1) * 255), cv2.COLORMAP_TURBO)[..., ::-1].astype(int)
    expected[~ok] = 96
    rgb = colorize_depth(depth, (lo, hi)).astype(int)
    assert rgb.shape == (720, 1280, 3) and (rgb[0, :4] == 96).all()
    step = np.abs(rgb - expected).max(-1)
    assert (step > 0).mean() < 2e-3 and step.max() <= 12  # float32 at an index boundary: the next turbo colour


def test_a_k_for_another_image_size_is_warned_once_per_camera_and_k():
    """A Python-API trial: a K for a 1080x720 image with 540x360 frames (or for 270x180) was taken without a word and
    doubled the depth error. A principal point far from the centre is warned, naming the size K is centred for, once
    per camera and K; the frames still run."""
    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.runtime import Frame, PerceptionPipeline

    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48), num_depth=8))
    pipeline = PerceptionPipeline(model)
    rgb = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    K = np.array([[80.0, 0.0, 44.5], [0.0, 80.0, 29.5], [0.0, 0.0, 1.0]])  # centred for 90x60

    def calibration(i, K_):
        products = pipeline.process(Frame(i * 100_000_000, "cam", rgb, K_))
        assert products.depth is not None
        return [m for kind, m in products.warnings if kind == "calibration"]

    assert calibration(0, K) == []
    doubled = np.diag([2.0, 2.0, 1.0]) @ K
    doubled[:2, 2] = [89.5, 59.5]  # K of the same camera at 180x120
    (message,) = calibration(1, doubled)
    assert "(89.5, 59.5) is far from the centre of the 90x60 image of camera 'cam'" in message
    assert "centred for a 180x120 image: is K for another size?" in message
    assert calibration(2, doubled) == []  # said once for this K
    halved = K.copy()
    halved[:2, 2] = [22.0, 14.5]  # K for 45x30
    (message,) = calibration(3, halved)
    assert "centred for a 45x30 image" in message
    other_aspect = K.copy()  # a retrial: K of a 16:9 sensor mode (3840x2160 for 640x480 frames) got no hint
    other_aspect[:2, 2] = [149.5, 67.0]  # K for 300x135
    (message,) = calibration(4, other_aspect)
    assert "centred for a 300x135 image: is K for another size?" in message
    corner = K.copy()  # an ROI in a sensor's corner: far, but not a K for another size
    corner[:2, 2] = [-30.0, -20.0]
    (message,) = calibration(5, corner)
    assert "far from the centre" in message and "another size" not in message


def test_array_likes_run_as_numpy_and_wrong_layouts_are_named(model):
    """A Python-API trial: a PIL image, a torch tensor or a nested-list K failed deep inside (cv2.resize,
    ``K.tobytes``); they now run exactly as the numpy arrays they hold, and layouts that are not [H,W,3] uint8 say
    what to do."""
    from PIL import Image

    frame = _frame(0, x=0.0)
    expected = PerceptionPipeline(model, _config()).process(frame).depth
    for rgb, K in ((Image.fromarray(frame.rgb), K_CAM.tolist()), (torch.from_numpy(frame.rgb.copy()), torch.tensor(K_CAM)),
                   (frame.rgb.tolist(), K_CAM)):
        array_like = Frame(frame.stamp_ns, "cam", rgb, K, frame.T_world_cam.tolist())
        if isinstance(rgb, list):  # a list of ints is int64: named, with the conversion to make
            with pytest.raises(ValueError, match=r"got int64 \(72, 96, 3\) \(0-255 integers\? convert with np.asarray"):
                PerceptionPipeline(model, _config()).process(array_like)
            continue
        np.testing.assert_array_equal(PerceptionPipeline(model, _config()).process(array_like).depth, expected)
    pipe = PerceptionPipeline(model, _config())
    with pytest.raises(ValueError, match=r"\(3, 72, 96\) \(channels first\? rgb.transpose\(1, 2, 0\)\)"):
        pipe.process(Frame(0, "cam", torch.from_numpy(frame.rgb.copy()).permute(2, 0, 1), K_CAM))
    rgba = np.concatenate([frame.rgb, frame.rgb[..., :1]], axis=2)
    with pytest.raises(ValueError, match=r"\(RGBA: drop the alpha channel"):
        pipe.process(Frame(0, "cam", rgba, K_CAM))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]\?"):
        pipe.process(Frame(0, "cam", frame.rgb / 255.0, K_CAM))
    with pytest.raises(ValueError, match=r"\(0-255 values\? pass rgb.astype\(np.uint8\)\)"):  # not "* 255" (a trial)
        pipe.process(Frame(0, "cam", frame.rgb.astype(np.float64), K_CAM))
    for mode in ("P", "L", "RGBA"):  # a palette PNG, a grey one: the PIL conversion to make
        with pytest.raises(ValueError, match=f"frame rgb is a PIL image in mode '{mode}'; pass image.convert"):
            Frame(0, "cam", Image.fromarray(frame.rgb).convert(mode), K_CAM)
    with pytest.raises(ValueError, match="frame K must be 3x3 intrinsics as a numpy array"):
        Frame(0, "cam", frame.rgb, "fx=90")


def test_stamps_in_the_wrong_unit_are_named(model):
    """A Python-API trial: float seconds as ``stamp_ns`` ran every frame as a pose jump hinting at metres. A
    fractional stamp is refused naming seconds; integral floats (``1.7e18``) are taken; integer seconds (frames 1 ns
    apart) make the pose jump's message ask whether ``stamp_ns`` is in nanoseconds."""
    with pytest.raises(ValueError, match=r"stamp_ns must be integer nanoseconds, got float 0.1 \(seconds\? pass "):
        Frame(0.1, "cam", _frame(0).rgb, K_CAM)
    assert Frame(1.7e18, "cam", _frame(0).rgb, K_CAM).stamp_ns == 1_700_000_000_000_000_000
    assert Frame(np.int64(5), "cam", _frame(0).rgb, K_CAM).stamp_ns == 5
    assert Frame(torch.tensor(7), "cam", _frame(0).rgb, K_CAM).stamp_ns == 7  # 0-d integer tensors and arrays
    assert Frame(np.array(8), "cam", _frame(0).rgb, K_CAM).stamp_ns == 8
    with pytest.raises(ValueError, match="got bool True"):
        Frame(True, "cam", _frame(0).rgb, K_CAM)
    pipe = PerceptionPipeline(model, _config().with_outputs(set()))
    rgb = _frame(0).rgb
    pose = pose_from_quat_trans(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0]))
    moved = pose_from_quat_trans(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.05, 0.0, 0.0]))
    pipe.process(Frame(1, "cam", rgb, K_CAM, pose))
    products = pipe.process(Frame(2, "cam", rgb, K_CAM, moved))  # stamps in seconds: 1 ns apart
    assert products.pair_reason == "pose_jump"
    (message,) = [m for kind, m in products.warnings if kind == "pose_jump"]
    assert "the frames are 1 ns apart: is stamp_ns in nanoseconds?" in message and "millimetres" not in message


def test_a_closed_pipeline_says_so(model):
    """A Python-API trial: ``process`` after ``close()`` failed in the network ('NoneType' object has no attribute)."""
    pipe = PerceptionPipeline(model, _config())
    pipe.process(_frame(0, x=0.0))
    pipe.close()
    for call in (lambda: pipe.process(_frame(1, x=0.1)), lambda: pipe.observe(_frame(1, x=0.1)), pipe.warmup):
        with pytest.raises(RuntimeError, match=r"this PerceptionPipeline was closed \(close\(\) released its model\)"):
            call()


def test_set_config_compares_with_what_was_applied_not_the_object(model):
    """A Python-API trial: the pipeline's own config, changed in place and passed to ``set_config``, went unnoticed
    (old and new were one object): a new world frame kept the history. A review: changed in place without
    ``set_config``, half of it took effect at once (the output size did, the history did not). The pipeline keeps a
    copy and ``pipeline.config`` is a copy of it: only ``set_config`` changes settings, compared with those applied."""
    config = _config(world_frame="odom").with_outputs({"depth"})
    pipe = PerceptionPipeline(model, config)
    pipe.process(_frame(0, x=0.0))
    # an API trial: `config.min_baseline_m = 0.5` was accepted and never used (the value lives in config.pairing):
    # RuntimeConfig is frozen, and every setting reads by its parameter name
    for name, value in (("world_frame", "map"), ("min_baseline_m", 0.5)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, name, value)
    assert config.min_baseline_m == config.pairing.min_baseline_m == 0.15
    with pytest.raises(AttributeError, match="no attribute 'min_baseline'"):
        _ = config.min_baseline
    changed = pipe.config.replace(world_frame="map", output_resolution="camera")
    assert pipe.world_frame == "odom" and len(pipe.history) == 1
    assert pipe.process(_frame(1, x=0.0)).size == (NET_W, NET_H)  # nothing took effect
    pipe.set_config(changed)
    assert pipe.world_frame == "map" and len(pipe.history) == 0
    assert pipe.process(_frame(2, x=0.0)).size == (CAM_W, CAM_H)
    with pytest.raises(dataclasses.FrozenInstanceError):  # a retrial: the nested pairing settings were not frozen
        changed.pairing.history_size = 1
    assert hash(changed) == hash(changed.replace())  # frozen all through: hashable
    pipe.set_config(changed.replace(history_size=1))
    assert pipe.history.config.history_size == 1 and pipe.config.pairing.history_size == 1


def test_two_cameras_under_one_frame_id_are_warned_once(model):
    """A node trial: two cameras publishing with one frame_id were each paired with their own frames (by size and K)
    but took one pose from TF, and nothing said so. A size or K switching back and forth is warned once per camera; a
    one-off switch (a camera reconfigured) is not."""
    pipe = PerceptionPipeline(model, _config().with_outputs(set()))
    small = np.zeros((48, 64, 3), np.uint8)
    K_small = resize_intrinsics(K_CAM, (CAM_W, CAM_H), (64, 48))
    kinds = []
    for i in range(6):
        rgb, K = (_frame(i).rgb, K_CAM) if i % 2 == 0 else (small, K_small)
        kinds.append([m for kind, m in pipe.process(Frame(i * S // 10, "cam", rgb, K)).warnings if kind == "cameras"])
    assert [len(k) for k in kinds] == [0, 0, 1, 0, 0, 0]
    assert ("camera 'cam' switches back and forth between two image sizes or intrinsics (64x48, fx 60 fy 60 cx 31.5 "
            "cy 23.5 and 96x72, fx 90 fy 90 cx 47.5 cy 35.5): two cameras publishing under one frame_id?") in kinds[2][0]
    once = PerceptionPipeline(model, _config().with_outputs(set()))
    warned = [kind for i in range(4) for kind, _ in once.process(
        Frame(i * S // 10, "cam", _frame(i).rgb if i < 2 else small, K_CAM if i < 2 else K_small)).warnings]
    assert "cameras" not in warned


def test_per_camera_state_stays_bounded_under_changing_frame_ids(model):
    """A trial: a frame_id with a counter in it grew the per-camera intrinsics record by one entry a frame (the pose
    checks were bounded by MAX_CAMERAS, the K check not)."""
    from mtl3d_perception.runtime.pipeline import MAX_CAMERAS

    pipe = PerceptionPipeline(model, _config())
    rgb = _frame(0).rgb
    for i in range(3 * MAX_CAMERAS):
        pipe.observe(Frame(i + 1, f"cam_{i}", rgb, K_CAM, np.eye(4)))
    assert len(pipe._intrinsics) == MAX_CAMERAS and f"cam_{3 * MAX_CAMERAS - 1}" in pipe._intrinsics


def test_a_world_cloud_far_from_the_origin_is_warned_once(model):
    """A trial: with the world frame at UTM coordinates (4,500 km north) the world-frame cloud's float32 coordinates
    were 0.5 m apart, silently. Warned once (until reset), naming the spacing; near the origin nothing."""
    pipe = PerceptionPipeline(model, _config(cloud_frame="world", world_frame="utm").with_outputs({"points"}))
    far = [pipe.process(Frame(i * S // 10, "cam", _frame(i).rgb, K_CAM, pose_from_quat_trans(
        np.array([0.0, 0.0, 0.0, 1.0]), np.array([500_000.0 + 0.1 * i, 4_500_000.0, 0.0])))) for i in range(3)]
    messages = [[m for kind, m in p.warnings if kind == "cloud_precision"] for p in far]
    assert [len(m) for m in messages] == [1, 0, 0]
    assert "is at (500000, 4.5e+06, 0) m in 'utm', where float32 cloud coordinates" in messages[0][0]
    assert "are 500 mm apart: publish the cloud in the camera frame (cloud_frame camera)" in messages[0][0]
    near = PerceptionPipeline(model, _config(cloud_frame="world").with_outputs({"points"}))
    assert not [k for k, _ in near.process(_frame(0, x=60_000.0)).warnings if k == "cloud_precision"]  # 3.9 mm
    pipe.reset()
    far_frame = _frame(9, x=70_000.0)  # 7.8 mm apart
    assert [k for k, _ in pipe.process(far_frame).warnings if k == "cloud_precision"]
    camera_cloud = PerceptionPipeline(model, _config().with_outputs({"points"}))
    assert not [k for k, _ in camera_cloud.process(far_frame).warnings if k == "cloud_precision"]


@pytest.mark.parametrize("resolution", ["camera", "network"])
def test_pixels_without_image_data_get_no_depth_or_points(model, resolution):
    """A replay trial: a rectified raw image's black border (no sensor data) got finite depth and black cloud points.
    Where ``Frame.image_mask`` is False, depth and normals are NaN, the confidence 0 and the cloud has no point, at
    either output resolution; ``products.image_mask`` says which output pixels those are."""
    mask = np.ones((CAM_H, CAM_W), bool)
    mask[:, :20] = False  # a left border 20 px wide
    frame = replace(_frame(0, x=0.0), image_mask=mask)
    products = PerceptionPipeline(model, _config(output_resolution=resolution, point_stride=1)).process(frame)
    W, H = products.size
    inside = products.image_mask
    assert inside.shape == (H, W) and not inside[:, 0].any() and inside[:, -1].all()
    assert np.isnan(products.depth[~inside]).all() and np.isfinite(products.depth[inside]).mean() > 0.9
    assert np.isnan(products.normals[~inside]).all()
    assert (products.semantic[~inside] == 255).all() and (products.semantic[inside] < 13).all()  # IGNORE_INDEX
    assert (products.boundary[~inside] == 0).all()
    assert (products.semantic_color[~inside] == products.semantic_color[~inside][0]).all()  # one "no class" colour
    left = 20 * W / CAM_W  # the border at the output size
    assert products.points.pixels[:, 0].min() >= np.floor(left)
    assert np.isclose(inside.mean(), 1 - 20 / CAM_W, atol=1 / W)
    if resolution == "network":  # a trial: a writable mask changed in place kept its old border (a stale cache)
        pipe = PerceptionPipeline(model, _config(output_resolution=resolution))
        reused = mask.copy()
        assert not pipe.process(replace(frame, image_mask=reused)).image_mask.all()
        reused[:] = True
        assert pipe.process(replace(_frame(1, x=0.0), image_mask=reused)).image_mask.all()
    unmasked = PerceptionPipeline(model, _config(output_resolution=resolution)).process(_frame(0, x=0.0))
    assert unmasked.image_mask is None and np.isfinite(unmasked.depth).all()
    with pytest.raises(ValueError, match=r"image_mask must be \[H,W\] bool for the 96x72 image, got bool \(72, 95\)"):
        PerceptionPipeline(model, _config()).process(replace(frame, image_mask=mask[:, 1:]))
