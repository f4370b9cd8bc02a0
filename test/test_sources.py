"""Posed-frame layouts (issue 17): bag, TUM RGB-D, ScanNet export and 7-Scenes readers against fixtures written
from synthetic scenes with exact ground truth; bad layouts give one-line errors naming the file (and line);
``mtl3d train`` runs from each kind."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer

from mtl3d_perception import cli, topics
from mtl3d_perception.data.bag import T_BASE_CAM, BagError, typestore, write_bag
from mtl3d_perception.data.datasets import SourceConfig, build_dataset, parse_data_spec
from mtl3d_perception.data.sequence import PosedSequence, SequenceError, write_sequence
from mtl3d_perception.data.sources.bag import BagFrames
from mtl3d_perception.data.sources.scannet import ScanNetSequence
from mtl3d_perception.data.sources.seven_scenes import SevenScenesSequence, centred_K, register_depth
from mtl3d_perception.data.sources.tum import TumSequence
from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics
from mtl3d_perception.geometry import (
    depth_to_mm,
    interpolate_pose,
    invert_se3,
    is_registered,
    rotation_to_quat,
)
from mtl3d_perception.msgs.conversions import (
    depth_image_to_metres,
    make_camera_info,
    make_header,
    make_image,
    make_transform_stamped,
)

SIZE = (64, 48)
N = 6
SMOKE = Path(__file__).resolve().parents[1] / "config" / "train" / "smoke.yaml"


@pytest.fixture(scope="module")
def scene():
    """(scene, poses [N,4,4], K, renders) of a synthetic room at 64x48."""
    sc = SyntheticScene(4)
    path = sc.camera_path(N, rate_hz=5.0)
    K = default_intrinsics(*SIZE)
    return sc, path, K, [sc.render(T, K, SIZE) for T in path]


# ---------------------------------------------------------------------------------------------------- TUM


def write_tum(root: Path, scene, *, gt_rows=None) -> Path:
    _, path, _, renders = scene
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    t0 = 1305031102.0
    rgb_lines, depth_lines = ["# color images"], ["# depth maps"]
    for i, r in enumerate(renders):
        t = t0 + i / 5
        cv2.imwrite(str(root / "rgb" / f"{t:.6f}.png"), r["rgb"][:, :, ::-1])
        cv2.imwrite(str(root / "depth" / f"{t + 0.004:.6f}.png"), np.rint(r["depth"] * 5000).astype(np.uint16))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.004:.6f} depth/{t + 0.004:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    if gt_rows is None:
        gt_rows = ["# timestamp tx ty tz qx qy qz qw"]
        for i, T in enumerate(path):
            q = rotation_to_quat(T[:3, :3])
            gt_rows.append(f"{t0 + i / 5:.6f} " + " ".join(f"{v:.9f}" for v in (*T[:3, 3], *q)))
    (root / "groundtruth.txt").write_text("\n".join(gt_rows) + "\n")
    return root


def test_eval_of_a_tum_folder_names_its_camera_and_what_it_left_out(tmp_path, scene, capsys):
    """A user trial: a TUM-layout folder of another camera could not be evaluated (no way to give its camera or K on
    the command line), one named `freiburg1` was scored with fr1's K without a word, and images left out for want of
    depth were not reported."""
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    _, _, K, _ = scene
    root = write_tum(tmp_path / "my_camera", scene)
    lines = (root / "depth.txt").read_text().splitlines()
    (root / "depth.txt").write_text("\n".join(lines[:-2]) + "\n")  # the last 2 images have no depth
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)),
                           tmp_path / "tiny.safetensors")
    base = ["eval", str(ckpt), "--data", f"tum:{root}", "--modes", "single_view", "--montages", "0", "--no-progress"]
    assert cli.main([*base, "--out", str(tmp_path / "e0")]) == 1
    assert "pass --tum-camera fr1|fr2|fr3|default or --intrinsics FX,FY,CX,CY" in capsys.readouterr().err
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    assert cli.main([*base, "--intrinsics", f"{fx},{fy},{cx},{cy}", "--out", str(tmp_path / "e1")]) == 0
    inputs = json.loads((tmp_path / "e1" / "metrics.json").read_text())["inputs"][f"tum:{root}"]
    assert inputs == {"camera": "given K", "K_fx_fy_cx_cy": pytest.approx([fx, fy, cx, cy]), "K_for": "the images' size",
                      "frames": N - 2, "frames_left_out": 2}
    assert f"Read: {N - 2} frames with TUM camera given K" in (tmp_path / "e1" / "report.md").read_text()
    assert cli.main([*base, "--tum-camera", "fr3", "--out", str(tmp_path / "e2")]) == 0
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["inputs"][f"tum:{root}"]["camera"] == "fr3"
    with pytest.raises(SystemExit):
        cli.main([*base, "--intrinsics", "525,525,319.5"])
    assert "is not FX,FY,CX,CY" in capsys.readouterr().err


def test_tum_frames_equal_what_was_written(tmp_path, scene):
    _, path, K, renders = scene
    root = write_tum(tmp_path / "rgbd_dataset_freiburg3_synthetic", scene)
    seq = TumSequence(root)
    assert len(seq) == N and seq.dropped == 0
    fr = seq.frame(2)
    np.testing.assert_array_equal(fr.rgb, renders[2]["rgb"])
    np.testing.assert_allclose(fr.depth, renders[2]["depth"], atol=1.0 / 5000)  # the 5000-per-metre quantum
    np.testing.assert_allclose(fr.T_world_cam, path[2], atol=1e-8)
    # fr3's published K (535.4, 539.2, 320.1, 247.6 at 640x480) scaled to 64x48
    np.testing.assert_allclose(fr.K, [[53.54, 0, (320.1 + 0.5) / 10 - 0.5], [0, 53.92, (247.6 + 0.5) / 10 - 0.5], [0, 0, 1]])
    given = TumSequence(root, K=K)
    np.testing.assert_array_equal(given.frame(0).K, K)


def test_tum_published_K_is_refused_for_images_that_are_not_4_3(tmp_path, scene, capsys):
    """A user trial: a TUM folder of cropped images (64x40 of the 64x48 frames) was scored with the published
    640x480 K stretched to 64x40 (fy x0.83) without a word. It is refused, naming the size; the images' own K works."""
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    _, _, K, renders = scene
    root = write_tum(tmp_path / "rgbd_dataset_freiburg1_cropped", scene)
    for line in (root / "rgb.txt").read_text().splitlines()[1:]:
        name = line.split()[1]
        cv2.imwrite(str(root / name), cv2.imread(str(root / name))[4:44])
    for line in (root / "depth.txt").read_text().splitlines()[1:]:
        name = line.split()[1]
        cv2.imwrite(str(root / name), cv2.imread(str(root / name), cv2.IMREAD_UNCHANGED)[4:44])
    with pytest.raises(SequenceError, match=r"64x40 is not a resized copy of the 640x480 images the published fr1 K "
                                            r"\(fx 517\.306, fy 516\.469, cx 318\.643, cy 255\.314 at 640x480\) "
                                            r"belongs to \(aspect 1\.600, expected 1\.333: it fits 4:3 images such as "
                                            r"53x40 or 64x48\); give these images' own K"):
        TumSequence(root)  # up front, not at the first frame read
    K_crop = K.copy()
    K_crop[1, 2] -= 4
    np.testing.assert_array_equal(TumSequence(root, K=K_crop).frame(0).K, K_crop)
    resized = TumSequence(write_tum(tmp_path / "rgbd_dataset_freiburg1_whole", scene))
    assert resized.published_K((320, 240), root).shape == (3, 3)  # a resized copy is fine
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)),
                           tmp_path / "tiny.safetensors")
    assert cli.main(["eval", str(ckpt), "--data", f"tum:{root}", "--modes", "single_view", "--montages", "0",
                     "--no-progress", "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "is not a resized copy" in err and "--intrinsics FX,FY,CX,CY" in err


def test_tum_published_K_that_cannot_fit_fails_once_up_front(tmp_path, scene, capsys, caplog):
    """A trial: `--tum-camera default` on 3:2 images warned "samples replaced" for 7-8 frames, one by one, then
    failed. It fails once, before any frame is read, with one error naming the K, the image size and what fits."""
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    root = write_tum(tmp_path / "rgbd_dataset_holo", scene)
    for png in [*(root / "rgb").iterdir(), *(root / "depth").iterdir()]:  # 64x40: not 4:3 (as a HoloLens' 3:2 540x360)
        cv2.imwrite(str(png), cv2.imread(str(png), cv2.IMREAD_UNCHANGED)[4:44])
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)),
                           tmp_path / "tiny.safetensors")
    assert cli.main(["eval", str(ckpt), "--data", f"tum:{root}", "--tum-camera", "default", "--modes", "single_view",
                     "--montages", "0", "--no-progress", "--out", str(tmp_path / "e")]) == 1
    out = capsys.readouterr().err + caplog.text
    assert out.count("is not a resized copy") == 1, out
    assert "replaced by the next" not in out
    assert ("64x40 is not a resized copy of the 640x480 images the published default K (fx 525, fy 525, cx 319.5, "
            "cy 239.5 at 640x480)") in out and "it fits 4:3 images such as 53x40 or 64x48" in out


def test_tum_pose_is_interpolated_between_groundtruth_rows(tmp_path, scene):
    t0 = 1305031102.0
    rows = [f"{t0 - 0.05:.6f} 0 0 0 0 0 0 1", f"{t0 + 0.05:.6f} 0.2 0 0 0 0 0 1"]  # only frame 0 lies inside
    seq = TumSequence(write_tum(tmp_path / "x", scene, gt_rows=rows), camera="fr1")
    assert len(seq) == 1 and seq.dropped == N - 1
    np.testing.assert_allclose(seq.poses[0][:3, 3], [0.1, 0, 0], atol=1e-9)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r: (r / "groundtruth.txt").write_text("1305031102.0 1 2 3 0 0 0\n"),
     r"groundtruth\.txt line 1: expected 'timestamp tx ty tz qx qy qz qw' \(8 numbers\), got 7"),
    (lambda r: (r / "groundtruth.txt").write_text("# h\n1305031102.0 1 2 3 0 0 0 2\n"),
     r"groundtruth\.txt line 2: quaternion .* is not normalised"),
    (lambda r: (r / "rgb.txt").write_text("# h\n1305031102.0\n"), r"rgb\.txt line 2: expected 'timestamp filename'"),
    (lambda r: (r / "depth.txt").unlink(), r"depth\.txt: missing"),
])
def test_tum_bad_layouts(tmp_path, scene, edit, match):
    root = write_tum(tmp_path / "freiburg2_x", scene)
    edit(root)
    with pytest.raises(SequenceError, match=match) as info:
        TumSequence(root)
    assert "\n" not in str(info.value)


def test_tum_needs_a_camera(tmp_path, scene):
    with pytest.raises(SequenceError, match="cannot tell the TUM camera"):
        TumSequence(write_tum(tmp_path / "mine", scene))


# ---------------------------------------------------------------------------------------------------- ScanNet


def write_scannet(root: Path, scene) -> Path:
    _, path, K, renders = scene
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True)
    K_depth = K.copy()
    K_depth[:2] /= 2  # depth at half size (ScanNet: 640x480 depth for 1296x968 colour)
    for name, M in (("intrinsic_color.txt", K), ("intrinsic_depth.txt", K_depth)):
        M4 = np.eye(4)
        M4[:3, :3] = M
        np.savetxt(root / "intrinsic" / name, M4)
    for i, (T, r) in enumerate(zip(path, renders)):
        cv2.imwrite(str(root / "color" / f"{i}.png"), r["rgb"][:, :, ::-1])
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth_to_mm(r["depth"][::2, ::2]))
        np.savetxt(root / "pose" / f"{i}.txt", np.full((4, 4), -np.inf) if i == 3 else T)
    return root


def test_scannet_frames_equal_what_was_written(tmp_path, scene):
    _, path, K, renders = scene
    seq = ScanNetSequence(write_scannet(tmp_path / "scene0000_00", scene))
    assert len(seq) == N - 1 and seq.invalid_poses == 1  # the -inf pose is left out
    fr = seq.frame(3)  # file 4
    np.testing.assert_array_equal(fr.rgb, renders[4]["rgb"])
    np.testing.assert_allclose(fr.T_world_cam, path[4], atol=1e-12)
    np.testing.assert_allclose(fr.K, K)
    # depth resized to the colour size by nearest neighbour: colour pixel (u, v) takes depth pixel (u//2, v//2)
    np.testing.assert_allclose(fr.depth, np.repeat(np.repeat(renders[4]["depth"][::2, ::2], 2, 0), 2, 1), atol=5e-4)


def test_scannet_depth_with_its_own_K_is_reprojected_into_the_colour_camera(tmp_path, scene):
    """A trial: intrinsic_depth.txt was read but not used, so a depth camera with another K (here the centre half of
    the colour view at half size, fx as the colour's) was stretched over the colour image without a word. It is
    reprojected with its own K (geometry.reproject_depth, as a bag's depth with a camera_info of another K)."""
    sc, path, K, renders = scene
    root = write_scannet(tmp_path / "scene0001_00", scene)
    K_depth = K.copy()
    K_depth[0, 2], K_depth[1, 2] = (SIZE[0] // 2 - 1) / 2, (SIZE[1] // 2 - 1) / 2  # the centre 32x24 of the view
    M4 = np.eye(4)
    M4[:3, :3] = K_depth
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", M4)
    cv2.imwrite(str(root / "depth" / "0.png"), depth_to_mm(sc.render(path[0], K_depth, (SIZE[0] // 2, SIZE[1] // 2))["depth"]))
    seq = ScanNetSequence(root)
    assert seq.depth_registration == "reprojected"
    fr = seq.frame(0)
    H, W = SIZE[1], SIZE[0]
    centre = np.zeros((H, W), bool)
    centre[H // 4 + 1:3 * H // 4 - 1, W // 4 + 1:3 * W // 4 - 1] = True
    outside = np.ones((H, W), bool)
    outside[H // 4 - 1:3 * H // 4 + 1, W // 4 - 1:3 * W // 4 + 1] = False
    assert np.isnan(fr.depth[outside]).all()  # the depth camera does not see there
    truth = renders[0]["depth"][centre]
    got = fr.depth[centre]
    ok = np.isfinite(got)
    assert ok.mean() > 0.95  # a half-size depth image covers the colour pixels it sees (a review: 0.24 splatted)
    assert np.median(np.abs(got[ok] - truth[ok]) / truth[ok]) < 0.01


def test_eval_of_a_scannet_export_says_what_it_left_out(tmp_path, scene):
    """A user trial: frames of a ScanNet export whose pose is -inf were left out correctly but never reported."""
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    root = write_scannet(tmp_path / "scene0000_00", scene)
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)),
                           tmp_path / "tiny.safetensors")
    assert cli.main(["eval", str(ckpt), "--data", f"scannet:{root}", "--modes", "single_view", "--montages", "0",
                     "--no-progress", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["inputs"][f"scannet:{root}"] == {
        "frames": N - 1, "frames_left_out": 1, "depth_registration": "resized"}
    assert (f"Read: {N - 1} frames; 1 left out (ScanNet's -inf pose: its tracking failed); depth resized to the colour "
            "images (intrinsic_depth.txt is the colour K at its size)") in (tmp_path / "e" / "report.md").read_text()


def test_a_scannet_export_of_resized_colour_scales_the_sensors_K(tmp_path, scene):
    """A loader trial: ScanNet's SensReader resizes the colour images it exports (image_size=...) but writes the
    sensor's 1296x968 intrinsic_color.txt unchanged; 640x480 exports were read with that K (principal point outside
    the image): abs rel 0.42 against 0.14, no word. The K is scaled to the images, and the report says so; a K that
    fits neither the images nor a 1296x968 frame is refused."""
    from mtl3d_perception.data.sources.scannet import SENSOR_COLOR_SIZE
    from mtl3d_perception.geometry import resize_intrinsics
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    _, path, K, renders = scene
    root = write_scannet(tmp_path / "scene0002_00", scene)
    M4 = np.eye(4)
    M4[:3, :3] = resize_intrinsics(K, SIZE, SENSOR_COLOR_SIZE)  # the sensor's K, the images stay 64x48
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", M4)
    seq = ScanNetSequence(root)
    fr = seq.frame(0)
    np.testing.assert_allclose(fr.K, K, atol=1e-9)
    assert seq.color_K_from == SENSOR_COLOR_SIZE
    np.testing.assert_allclose(fr.depth, np.repeat(np.repeat(renders[0]["depth"][::2, ::2], 2, 0), 2, 1), atol=5e-4)
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)),
                           tmp_path / "tiny.safetensors")
    assert cli.main(["eval", str(ckpt), "--data", f"scannet:{root}", "--modes", "single_view", "--montages", "0",
                     "--no-progress", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["inputs"][f"scannet:{root}"][
        "color_K_scaled_from"] == "1296x968"
    assert "intrinsic_color.txt scaled from the 1296x968 sensor frame" in (tmp_path / "e" / "report.md").read_text()
    M4[:3, :3] = [[60.0, 0, 200.0], [0, 60.0, 150.0], [0, 0, 1]]  # outside the images, and off a 1296x968 frame's centre
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", M4)
    with pytest.raises(SequenceError, match=r"\(fx 60, fy 60, cx 200, cy 150\) does not fit 64x48 colour images .* nor "
                                            r"a 1296x968 ScanNet frame"):
        ScanNetSequence(root)
    (root / "pose" / "2.txt").write_text("nan nan nan nan\n" * 4)  # NaN as lost tracking too, beside file 3's -inf
    M4[:3, :3] = K
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", M4)
    seq = ScanNetSequence(root)
    assert seq.invalid_poses == 2 and len(seq) == N - 2 and seq.color_K_from is None


def test_scannet_bad_layouts(tmp_path, scene):
    root = write_scannet(tmp_path / "s", scene)
    (root / "pose" / "2.txt").unlink()
    with pytest.raises(SequenceError, match=r"pose/2\.txt: missing \(color/ has 2\.png\)"):
        ScanNetSequence(root)
    root = write_scannet(tmp_path / "t", scene)
    (root / "pose" / "1.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1\n0 0 0 1\n")
    with pytest.raises(SequenceError, match=r"pose/1\.txt line 3: expected 4 numbers"):
        ScanNetSequence(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SequenceError, match=r"empty/color: missing \(a ScanNet export has color/, depth/"):
        ScanNetSequence(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------- 7-Scenes


def write_seven_scenes(root: Path, scene) -> tuple[Path, list[np.ndarray]]:
    """Colour rendered through the colour K (fx 525 at 640), depth through the depth K (fx 585 at 640)."""
    sc, path, _, _ = scene
    root.mkdir(parents=True)
    K_c, K_d = centred_K(525.0, *SIZE), centred_K(585.0, *SIZE)
    depth_views = []
    for i, T in enumerate(path):
        color = sc.render(T, K_c, SIZE)
        depth = sc.render(T, K_d, SIZE)["depth"]
        depth_views.append(depth)
        cv2.imwrite(str(root / f"frame-{i:06d}.color.png"), color["rgb"][:, :, ::-1])
        mm = depth_to_mm(depth)
        mm[0, 0] = 65535  # the dataset's invalid marker
        cv2.imwrite(str(root / f"frame-{i:06d}.depth.png"), mm)
        np.savetxt(root / f"frame-{i:06d}.pose.txt", T, fmt="%.6f")  # 6 decimals: orthonormal to ~1e-6 only
    return root, depth_views


def test_seven_scenes_registration_against_a_hand_computed_pixel():
    depth = np.full((48, 64), 2.0, np.float32)
    depth[30, 40] = 1.0  # one near point
    reg = register_depth(depth, (48, 64))
    # same centre (31.5, 23.5), focal 58.5 -> 52.5 px: u_c = 52.5 / 58.5 * (40 - 31.5) + 31.5 = 39.128 -> 39,
    # v_c = 52.5 / 58.5 * (30 - 23.5) + 23.5 = 29.333 -> 29; the z-buffer keeps the nearer surface there
    assert reg[29, 39] == pytest.approx(1.0)
    assert reg[29, 40] == pytest.approx(2.0) and reg[28, 39] == pytest.approx(2.0)
    # the depth camera sees less than the colour camera: the colour image's border gets no depth
    assert np.isnan(reg[:, :3]).all() and np.isnan(reg[:2]).all() and np.isfinite(reg[3:45, 4:60]).all()


def test_seven_scenes_frames_equal_what_was_written(tmp_path, scene):
    sc, path, _, _ = scene
    root, _ = write_seven_scenes(tmp_path / "chess" / "seq-01", scene)
    seq = SevenScenesSequence(root)
    assert len(seq) == N
    fr = seq.frame(1)
    K_c = centred_K(525.0, *SIZE)
    np.testing.assert_allclose(fr.K, K_c)
    np.testing.assert_allclose(fr.T_world_cam, path[1], atol=2e-6)
    truth = sc.render(path[1], K_c, SIZE)
    np.testing.assert_array_equal(fr.rgb, truth["rgb"])
    # registered depth vs the colour camera's true depth (splat to the nearest pixel: off on slanted surfaces)
    ok = np.isfinite(fr.depth)
    assert ok.mean() > 0.8
    rel = np.abs(fr.depth[ok] - truth["depth"][ok]) / truth["depth"][ok]
    assert np.median(rel) < 0.01
    with pytest.raises(SequenceError, match=r"chess: a 7-Scenes scene; give one of its sequences \(seq-01"):
        SevenScenesSequence(tmp_path / "chess")


def test_seven_scenes_bad_layouts(tmp_path, scene):
    root, _ = write_seven_scenes(tmp_path / "seq-01", scene)
    (root / "frame-000002.pose.txt").unlink()
    with pytest.raises(SequenceError, match=r"frame-000002\.pose\.txt: missing \(frame 000002 has color, depth\)"):
        SevenScenesSequence(root)
    (root / "frame-000002.pose.txt").write_text("1 0 0\n")
    with pytest.raises(SequenceError, match=r"frame-000002\.pose\.txt: expected 4 rows of 4 numbers"):
        SevenScenesSequence(root)
    (root / "frame-000002.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    (root / "notes.md").write_text("x")
    with pytest.raises(SequenceError, match=r"notes\.md: unexpected file"):
        SevenScenesSequence(root)


def test_seven_scenes_frames_whose_tracking_was_lost_are_left_out_and_reported(tmp_path, scene):
    """A loader trial: one pose file of NaN (or inf) values refused the whole sequence; ScanNet's -inf poses were
    already left out and counted. The same here, and eval's report says how many."""
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    _, path, _, _ = scene
    root, _ = write_seven_scenes(tmp_path / "seq-02", scene)
    (root / "frame-000002.pose.txt").write_text("nan\tnan\tnan\tnan\n" * 4)
    (root / "frame-000004.pose.txt").write_text("inf inf inf inf\n" * 4)
    seq = SevenScenesSequence(root)
    assert len(seq) == N - 2 and seq.invalid_poses == 2
    np.testing.assert_allclose(seq.stamps, np.array([0, 1, 3, 5]) / 30.0)  # the kept frames' own stamps
    np.testing.assert_allclose(seq.frame(2).T_world_cam, path[3], atol=2e-6)
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)),
                           tmp_path / "tiny.safetensors")
    assert cli.main(["eval", str(ckpt), "--data", f"seven_scenes:{root}", "--modes", "single_view", "--montages",
                     "0", "--no-progress", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["inputs"][f"seven_scenes:{root}"] == {
        "frames": N - 2, "frames_left_out": 2}
    assert f"Read: {N - 2} frames; 2 left out (a pose of NaN" in (tmp_path / "e" / "report.md").read_text()
    for n in range(N):
        (root / f"frame-{n:06d}.pose.txt").write_text("nan nan nan nan\n" * 4)
    with pytest.raises(SequenceError, match="every pose is NaN or infinite"):
        SevenScenesSequence(root)


# ---------------------------------------------------------------------------------------------------- bags


def write_rgbd_bag(out: Path, scene, T_cam_depth: np.ndarray, K_depth: np.ndarray, info_first: bool = True,
                   depth_dt_ns: int = 10_000_000, depth_frame: str = "depth_optical") -> Path:
    """A bag with a colour camera and a separate depth camera (16UC1 mm, its own frame and camera_info), the depth
    stamped ``depth_dt_ns`` after the colour image. ``info_first=False``: the depth image and then its camera_info
    are logged just after the colour image, as a driver publishes them."""
    sc, path, K, renders = scene
    store = typestore()
    types = store.types
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}

        def put(topic, msgtype, t, msg):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=store)
            w.write(conns[topic], t, store.serialize_cdr(msg, msgtype))

        t0 = 1_700_000_000_000_000_000
        tfm = "tf2_msgs/msg/TFMessage"
        statics = [make_transform_stamped(types, make_header(types, t0, "base_link"), topics.CAMERA_FRAME, T_BASE_CAM)]
        if depth_frame != topics.CAMERA_FRAME:
            statics.append(make_transform_stamped(types, make_header(types, t0, topics.CAMERA_FRAME), depth_frame,
                                                  T_cam_depth))
        put(topics.TF_STATIC_TOPIC, tfm, t0, types[tfm](transforms=statics))
        if depth_dt_ns < 0:  # the robot stood at the first pose a moment before: the first depth has a pose too
            t_before = t0 + 2 * depth_dt_ns
            put(topics.TF_TOPIC, tfm, t_before, types[tfm](transforms=[make_transform_stamped(
                types, make_header(types, t_before, "odom"), "base_link", path[0] @ invert_se3(T_BASE_CAM))]))
        for i, (T, r) in enumerate(zip(path, renders)):
            t = t0 + i * 200_000_000
            td = t + depth_dt_ns  # the depth camera's exposure, 10 ms after the colour one by default
            put(topics.TF_TOPIC, tfm, t, types[tfm](transforms=[make_transform_stamped(
                types, make_header(types, t, "odom"), "base_link", T @ invert_se3(T_BASE_CAM))]))
            h = make_header(types, t, topics.CAMERA_FRAME)
            put(topics.CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", t, make_camera_info(types, h, K, *SIZE))
            put(topics.IMAGE_TOPIC, "sensor_msgs/msg/Image", t, make_image(types, h, r["rgb"], "rgb8"))
            # the depth camera's pose at its own stamp, 10 ms into the 200 ms to the next frame (as TF interpolates)
            a = depth_dt_ns / 200_000_000
            T_pose = (interpolate_pose(T, path[min(i + 1, N - 1)], a) if a >= 0
                      else interpolate_pose(path[max(i - 1, 0)], T, 1.0 + a))
            T_world_depth = T_pose @ T_cam_depth
            hd = make_header(types, td, depth_frame)
            depth = sc.render(T_world_depth, K_depth, SIZE)["depth"]
            info = make_camera_info(types, hd, K_depth, *SIZE)
            log_d = td if info_first else t + 1
            if info_first:
                put("/camera/depth/camera_info", "sensor_msgs/msg/CameraInfo", log_d, info)
            put("/camera/depth/image_raw", "sensor_msgs/msg/Image", log_d, make_image(types, hd, depth_to_mm(depth), "16UC1"))
            if not info_first:
                put("/camera/depth/camera_info", "sensor_msgs/msg/CameraInfo", log_d + 1, info)
    return out


def test_bag_frames_with_registered_depth_equal_what_was_written(tmp_path, scene):
    _, path, K, renders = scene
    from mtl3d_perception.data.sequence import SequenceFrame

    frames = [SequenceFrame(index=i, stamp=1.7e9 + i / 5, rgb=r["rgb"], depth=r["depth"], K=K, T_world_cam=T,
                            semantic=r["semantic"]) for i, (T, r) in enumerate(zip(path, renders))]
    bag = write_bag(frames, tmp_path / "bag", compressed="png")
    src = BagFrames(bag)
    assert len(src) == N and src.unposed == 0
    for i in (0, 4, 2):  # random access, any order
        fr = src.frame(i)
        np.testing.assert_array_equal(fr.rgb, renders[i]["rgb"])
        np.testing.assert_array_equal(fr.depth, renders[i]["depth"])
        np.testing.assert_array_equal(fr.semantic, renders[i]["semantic"])
        np.testing.assert_allclose(fr.K, K)
        np.testing.assert_allclose(fr.T_world_cam, path[i], atol=1e-9)
    assert len(BagFrames(bag, depth_topic="", semantic_topic="").frame(1).rgb) == SIZE[1]
    assert BagFrames(bag, depth_topic="").frame(1).depth is None


def test_a_damaged_frame_or_a_missing_first_camera_info_is_left_out_not_fatal(tmp_path, scene, caplog):
    """A trial: a recording that starts between the first image and its camera_info, or one truncated JPEG, made
    `mtl3d eval` and training on the bag exit with an error, where replay drops the frame. Now the image without a
    camera_info is left out at indexing (counted, warned) and a sample with an unreadable frame is replaced by the
    next one, with a warning naming the frame."""
    from rosbags.rosbag2 import Reader

    from mtl3d_perception.data.sequence import SequenceFrame

    _, path, K, renders = scene
    frames = [SequenceFrame(index=i, stamp=1.7e9 + i / 5, rgb=r["rgb"], depth=r["depth"], K=K, T_world_cam=T)
              for i, (T, r) in enumerate(zip(path, renders))]
    bag = write_bag(frames, tmp_path / "bag", compressed="jpeg")
    store = typestore()
    damaged = tmp_path / "damaged"
    with Reader(bag) as reader, Writer(damaged, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
        seen: dict[str, int] = {}
        for c, t, raw in reader.messages():
            index = seen[c.topic] = seen.get(c.topic, -1) + 1
            if c.topic == topics.CAMERA_INFO_TOPIC and index == 0:
                continue  # the recording started just after the first camera_info
            if c.msgtype == "sensor_msgs/msg/CompressedImage" and index == 3:
                msg = store.deserialize_cdr(raw, c.msgtype)
                msg.data = msg.data[: len(msg.data) // 2]  # truncated JPEG
                raw = store.serialize_cdr(msg, c.msgtype)
            writer.write(conns[c.id], t, raw)
    src = BagFrames(damaged)
    assert (len(src), src.no_camera_info) == (N - 1, 1)
    with pytest.raises(BagError, match="JPEG"):
        src.frame(2)  # bag frame 3: the truncated one
    ds = build_dataset([SourceConfig(kind="bag", path=str(damaged))], image_size=SIZE, num_views=2)
    with caplog.at_level("WARNING"):
        samples = [ds[i] for i in range(len(ds))]
    assert len(samples) == N - 1
    assert sum("its samples are replaced by the next one" in r.getMessage() for r in caplog.records) == 1


def test_bag_unregistered_depth_is_reprojected_through_tf(tmp_path, scene):
    sc, path, K, renders = scene
    T_cam_depth = np.eye(4)
    T_cam_depth[0, 3] = 0.05  # the depth camera 5 cm to the right
    K_depth = default_intrinsics(*SIZE, hfov_deg=50.0)
    bag = write_rgbd_bag(tmp_path / "rgbd", scene, T_cam_depth, K_depth)
    src = BagFrames(bag, depth_topic="/camera/depth/image_raw")
    assert len(src) == N
    for i in (1, 3):
        d = src.frame(i).depth
        ok = np.isfinite(d)
        assert ok.mean() > 0.5
        rel = np.abs(d[ok] - renders[i]["depth"][ok]) / renders[i]["depth"][ok]
        assert np.median(rel) < 0.01
        # the depth image as recorded (another camera, 5 cm away, other K) is far from the colour camera's depth
        raw = src._read("/camera/depth/image_raw", *src.depth_refs[i][:2])
        as_recorded = depth_image_to_metres(raw)
        assert raw.encoding == "16UC1" and np.isfinite(as_recorded).all()
        rel_raw = np.abs(as_recorded - renders[i]["depth"]) / renders[i]["depth"]
        assert np.median(rel_raw) > 3 * np.median(rel)


def _scored_depths(monkeypatch) -> list[np.ndarray | None]:
    """The ground-truth depth replay scores each frame against (None: not scored), as a list filled while it runs."""
    from mtl3d_perception.replay import evaluation

    scored: list[np.ndarray | None] = []
    gt_from_messages = evaluation.gt_from_messages

    def spy(K, image_wh, depth, semantic):
        scored.append(depth)
        return gt_from_messages(K, image_wh, depth, semantic)

    monkeypatch.setattr(evaluation, "gt_from_messages", spy)
    return scored


def test_depth_in_the_image_frame_with_its_own_camera_info_is_registered(tmp_path, scene, monkeypatch):
    """A trial: depth stamped with the colour image's frame_id but its own camera_info with another K (a narrower
    view, as a centre crop) was taken as registered and stretched over the colour image (replay 0.119 against the
    right 0.092; training labels 5 % off). Its own K now makes it a view to reproject (the identity transform), in
    training (``BagFrames``) and in replay alike (``geometry.is_registered``)."""
    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.replay.options import ReplayOptions
    from mtl3d_perception.replay.runner import replay_bag

    _, _, K, renders = scene
    K_depth = default_intrinsics(*SIZE, hfov_deg=50.0)
    assert not np.allclose(K_depth, K)
    bag = write_rgbd_bag(tmp_path / "same", scene, np.eye(4), K_depth, depth_dt_ns=0, depth_frame=topics.CAMERA_FRAME)
    src = BagFrames(bag, depth_topic="/camera/depth/image_raw")

    def check(d, r):
        ok = np.isfinite(d)
        assert 0.4 < ok.mean() < 0.95  # the narrower view covers the middle of the colour image only
        assert np.median(np.abs(d[ok] - r["depth"][ok]) / r["depth"][ok]) < 0.01

    for i in (1, 3):
        check(src.frame(i).depth, renders[i])
    scored = _scored_depths(monkeypatch)
    model = build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)).eval()
    replay_bag(bag, tmp_path / "out", model,
               ReplayOptions(depth_gt_topic="/camera/depth/image_raw", progress=False, montage_frames=0))
    assert len(scored) == N
    for d, r in zip(scored, renders):
        check(d, r)
    # the same depth with the colour K (scaled: a registered half-size depth) stays as it is
    assert is_registered(topics.CAMERA_FRAME, topics.CAMERA_FRAME, K / 2 * [[1], [1], [2]], (32, 24), K, SIZE)


def test_replay_scores_unregistered_depth_as_training_reads_it(tmp_path, scene, monkeypatch):
    """Replay's ground truth follows the training reader's rule (``geometry.is_registered``): depth recorded by
    another camera (its own frame_id, camera_info and TF, as a RealSense ``image_rect_raw``) is reprojected into the
    colour camera before it is scored; without that camera's CameraInfo it is not scored, and replay says so."""
    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.replay.options import ReplayOptions
    from mtl3d_perception.replay.runner import replay_bag

    _, _, _, renders = scene
    T_cam_depth = np.eye(4)
    T_cam_depth[0, 3] = 0.05  # the depth camera 5 cm to the right, another K
    bag = write_rgbd_bag(tmp_path / "rgbd", scene, T_cam_depth, default_intrinsics(*SIZE, hfov_deg=50.0))
    scored = _scored_depths(monkeypatch)
    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)).eval()
    options = ReplayOptions(depth_gt_topic="/camera/depth/image_raw", progress=False, montage_frames=0)
    summary = replay_bag(bag, tmp_path / "out", model, options)
    assert summary["ground_truth"]["depth"] and len(scored) == N
    # the last depth is 10 ms after the last TF: its camera's pose is unknown, so it is not scored (nor trained on)
    assert scored[-1] is None and any("no transform to the image's" in w for w in summary["warnings"])
    for d, r in zip(scored[:-1], renders):  # frames in stamp order
        ok = np.isfinite(d)
        assert ok.mean() > 0.5
        assert np.median(np.abs(d[ok] - r["depth"][ok]) / r["depth"][ok]) < 0.01
    # depth exposed 10 ms before the colour image but logged after it, its camera_info just after that; and --limit:
    # frames wait for that camera_info and for TF at the depth's stamp, and are scored
    late_info = write_rgbd_bag(tmp_path / "late_info", scene, T_cam_depth, default_intrinsics(*SIZE, hfov_deg=50.0),
                               info_first=False, depth_dt_ns=-10_000_000)
    for bag_, limit, expected in ((late_info, None, N), (bag, 3, 3)):
        scored.clear()
        replay_bag(bag_, tmp_path / f"out_{limit}", model, replace(options, limit=limit))
        assert sum(d is not None for d in scored) == expected, [d is None for d in scored]
    scored.clear()
    summary = replay_bag(bag, tmp_path / "out2", model,
                         ReplayOptions(depth_gt_topic="/camera/depth/image_raw", depth_gt_camera_info_topic="/nope/info",
                                       progress=False, montage_frames=0))
    assert len(scored) == N and all(d is None for d in scored)
    assert any("in frame 'depth_optical'" in w and "no CameraInfo on /nope/info" in w for w in summary["warnings"])


def test_a_depth_topic_the_bag_lacks_is_named_not_silent(tmp_path, scene, caplog):
    """A misspelt or driver-specific depth topic (``image_rect_raw`` for ``image_rect``) would leave depth unsupervised
    in fine-tuning and unscored in replay without a word: both name the topic and the bag's Image topics."""
    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.replay.options import ReplayOptions
    from mtl3d_perception.replay.runner import replay_bag

    _, path, K, renders = scene
    from mtl3d_perception.data.sequence import SequenceFrame

    frames = [SequenceFrame(index=i, stamp=1.7e9 + i / 5, rgb=r["rgb"], depth=r["depth"], K=K, T_world_cam=T)
              for i, (T, r) in enumerate(zip(path, renders))]
    bag = write_bag(frames, tmp_path / "bag")
    with caplog.at_level("WARNING"):
        src = BagFrames(bag, depth_topic="/camera/depth/image_rect_raw")
    assert src.frame(0).depth is None
    expected = (f"{bag}: depth topic '/camera/depth/image_rect_raw' is not in the bag (its Image topics: "
                f"{topics.IMAGE_TOPIC}, {topics.GT_DEPTH_TOPIC})")
    assert expected in caplog.text and 'depth_topic: ""' in caplog.text
    caplog.clear()
    BagFrames(bag, depth_topic="")  # asked for no depth: nothing to say
    assert "not in the bag" not in caplog.text
    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(input_size=SIZE, pretrained=False)).eval()
    summary = replay_bag(bag, tmp_path / "out", model, ReplayOptions(depth_gt_topic="/camera/depth/image_rect_raw",
                                                                    progress=False, montage_frames=0, limit=2))
    assert any("ground-truth depth topic '/camera/depth/image_rect_raw' is not in the bag (its Image topics: "
               f"{topics.IMAGE_TOPIC}, {topics.GT_DEPTH_TOPIC})" in n for n in summary["notes"])


def test_bag_without_the_pose_says_which_frames_it_has(tmp_path, scene):
    from mtl3d_perception.data.bag import BagError

    _, path, K, renders = scene
    from mtl3d_perception.data.sequence import SequenceFrame

    frames = [SequenceFrame(index=i, stamp=1.7e9 + i / 5, rgb=r["rgb"], depth=None, K=K, T_world_cam=T)
              for i, (T, r) in enumerate(zip(path, renders))]
    bag = write_bag(frames, tmp_path / "bag")
    with pytest.raises(BagError, match=r"none of 6 images has a pose in world_frame 'map' from TF .* TF frames in the bag: "
                                       r"base_link, camera_color_optical_frame, odom"):
        BagFrames(bag, world_frame="map")


# ---------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, scene):
    """One small fixture per kind."""
    root = tmp_path_factory.mktemp("layouts")
    _, path, K, renders = scene
    from mtl3d_perception.data.sequence import SequenceFrame

    frames = [SequenceFrame(index=i, stamp=1.7e9 + i / 5, rgb=r["rgb"], depth=r["depth"], K=K, T_world_cam=T)
              for i, (T, r) in enumerate(zip(path, renders))]
    seq = write_sequence(root / "seq", frames)
    return {
        "sequence": seq,
        "bag": write_bag(seq, root / "bag"),
        "tum": write_tum(root / "rgbd_dataset_freiburg1_synth", scene),
        "scannet": write_scannet(root / "scannet", scene),
        "seven_scenes": write_seven_scenes(root / "seq-01", scene)[0],
    }


@pytest.mark.parametrize("kind", ["sequence", "bag", "tum", "scannet", "seven_scenes"])
def test_train_runs_from_each_kind(layouts, kind, tmp_path, capsys):
    spec = parse_data_spec(f"{kind}:{layouts[kind]}:0:4")
    assert (spec.kind, spec.start, spec.end) == (kind, 0, 4)
    ds = build_dataset([SourceConfig(kind=kind, path=str(layouts[kind]), stride=2)], image_size=SIZE)
    assert [ds[i].meta[0]["frames"][0] for i in range(len(ds))] == [0, 2, 4][: len(ds)]
    sample = ds[1]
    assert sample.valid["depth"].all() and np.isfinite(sample.depth.numpy()).mean() > 0.5
    rc = cli.main(["train", "--config", str(SMOKE), f"out_dir={tmp_path}", "steps=1", "eval_every=0",
                   f"data.train=[{{kind: {kind}, path: '{layouts[kind]}', tasks: [depth]}}]",
                   "loss.extra={photometric: {weight: 1.0}}"])
    assert rc == 0 and (tmp_path / "checkpoints" / "last.safetensors").is_file()


def test_finetune_validation_pairs_as_eval_and_the_node_do(layouts):
    """A user trial: the fine-tuning run's validation gave 0.1255 with 2 single-view frames where `mtl3d eval` of the
    same checkpoint and frames gave 0.1210 with 1: the config's validation paired over every 2nd frame at 5 cm."""
    from mtl3d_perception.data.datasets import two_view_source
    from mtl3d_perception.train.config import load_config

    bag = layouts["bag"]
    val = load_config(SMOKE.parent / "finetune.yaml", [f"data.val.0.path={bag}"]).data.val[0]
    rule = two_view_source(parse_data_spec(f"bag:{bag}:0.8:1.0"), None)
    assert (val.neighbour, val.eval_gap, val.min_baseline) == (rule.neighbour, rule.eval_gap, rule.min_baseline)
    validation = build_dataset([val], image_size=SIZE)
    evaluation = build_dataset([rule], image_size=SIZE)
    assert [validation[i].meta[0]["frames"] for i in range(len(validation))] == \
        [evaluation[i].meta[0]["frames"] for i in range(len(evaluation))]


def test_finetune_config_trains_the_shipped_model_on_a_bag_as_it_was_trained(layouts, tmp_path):
    """README's fine-tuning step on a recorded bag: one step of ``config/train/finetune.yaml`` from the shipped
    model keeps the frozen pretrained stages (weights and BatchNorm statistics) and changes the rest. With the
    shipped config's earlier recipe (nothing frozen, L1 depth, baseline pairs) 100 steps on the HoloLens bag
    made the stage-2 default's held-out two-view abs rel worse, 0.184 -> 0.200; with this one 0.189
    (docs/training.md)."""
    from mtl3d_perception.model import load_checkpoint

    config = SMOKE.parent / "finetune.yaml"
    bag = layouts["bag"]
    rc = cli.main(["train", "--config", str(config), f"out_dir={tmp_path}", f"data.train.0.path={bag}",
                   f"data.val.0.path={bag}", "steps=1", "data.batch_size=2", "data.num_workers=0",
                   "progress=false", "tensorboard=false", "eval_every=0"])
    assert rc == 0
    shipped = load_checkpoint(SMOKE.parents[2] / "models" / "default.safetensors").state_dict()
    tuned = load_checkpoint(tmp_path / "checkpoints" / "last.safetensors").state_dict()
    frozen = [k for k in shipped if k.startswith(("encoder.net._conv_stem", "encoder.net._bn0",
                                                  "encoder.net._blocks.4."))]
    assert any("running_mean" in k for k in frozen)
    assert all(torch.equal(shipped[k], tuned[k]) for k in frozen)
    trained = [k for k in shipped if k.startswith("heads.") and shipped[k].is_floating_point()]
    assert any(not torch.equal(shipped[k], tuned[k]) for k in trained)


def test_bag_frames_read_camera_info_as_the_node_does():
    """The one image conversion (msgs.messages.frame_from_messages): a 2x2-binned camera's K is scaled."""
    case = Path("../shared/cases/camera_info_binning")
    if not case.is_dir():
        pytest.skip(f"{case} absent")
    src = BagFrames(case)
    fr = src.frame(5)
    assert fr.rgb.shape == (24, 32, 3)
    assert fr.K[0, 0] == pytest.approx(25.11, abs=0.01) and fr.K[1, 1] == pytest.approx(25.11, abs=0.01)
    assert 15.5 <= fr.K[0, 2] <= 15.75 and 11.5 <= fr.K[1, 2] <= 11.75


@pytest.mark.parametrize(("cls", "expected"), [
    (PosedSequence, "a posed RGB-D sequence folder, docs/sequence_format.md"),
    (TumSequence, "a TUM RGB-D sequence folder with rgb.txt, depth.txt, groundtruth.txt"),
    (SevenScenesSequence, "a 7-Scenes sequence folder (seq-NN)"),
    (ScanNetSequence, "a ScanNet export folder with color/, depth/, pose/, intrinsic/"),
])
def test_a_missing_or_file_path_names_what_was_expected(tmp_path, cls, expected):
    """'x: not a directory' said neither that x is missing nor what kind of folder should be there."""
    missing = tmp_path / "hololens_00"
    with pytest.raises(SequenceError, match=rf"^{re.escape(f'{missing} does not exist (expected {expected}')}"):
        cls(missing)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SequenceError, match=rf"^{re.escape(f'{afile} is not a directory (expected {expected}')}"):
        cls(afile)
