"""Posed RGB-D sequence folders: round trip, the real HoloLens sequence, and every validation message."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import render_frames

from mtl3d_perception.data.sequence import (
    START_TIME_S,
    PosedSequence,
    SequenceError,
    SequenceFrame,
    write_sequence,
)
from mtl3d_perception.geometry import depth_in_other_view, relative_pose


@pytest.fixture(scope="module")
def frames():
    return render_frames(4, 4, (32, 24))


@pytest.fixture
def seq_dir(tmp_path, frames) -> Path:
    return write_sequence(tmp_path / "seq", frames)


def test_round_trip_keeps_every_part(seq_dir, frames):
    seq = PosedSequence(seq_dir)
    assert len(seq) == len(frames) and seq.names == ["00000", "00001", "00002", "00003"]
    assert seq.has_depth and seq.has_semantic and seq.has_normals and seq.has_timestamps
    for f, g in zip(frames, seq):
        np.testing.assert_array_equal(g.rgb, f.rgb)  # png is lossless
        assert np.nanmax(np.abs(g.depth - f.depth)) <= 0.0005 + 1e-6  # millimetre rounding
        np.testing.assert_array_equal(g.semantic, f.semantic)
        np.testing.assert_allclose(g.normals, f.normals, atol=1e-3)  # float16
        np.testing.assert_array_equal(g.T_world_cam, f.T_world_cam)  # full float64 precision
        np.testing.assert_array_equal(g.K, f.K)
        assert g.stamp == f.stamp and g.index == f.index and g.name == f.name
        assert g.rgb.dtype == np.uint8 and g.depth.dtype == np.float32 and g.normals.dtype == np.float32


def test_jpg_images_and_optional_parts(tmp_path, frames):
    lean = [SequenceFrame(f.index, f.stamp, f.rgb, None, f.K, f.T_world_cam) for f in frames]
    root = write_sequence(tmp_path / "seq", lean, image_format="jpg")
    assert sorted(p.name for p in root.iterdir()) == ["K.txt", "images", "poses.txt", "timestamps.txt"]
    seq = PosedSequence(root)
    frame = seq[-1]
    assert frame.depth is None and frame.semantic is None and frame.normals is None
    assert seq.image_paths[0].suffix == ".jpg" and frame.rgb.shape == (24, 32, 3)


def test_lazy_access_and_slices(seq_dir):
    seq = PosedSequence(seq_dir)
    assert [f.index for f in seq[1:3]] == [1, 2]
    assert seq.frame(0, depth=False, normals=False).depth is None
    with pytest.raises(IndexError, match="out of range"):
        seq[4]


def test_stamps_without_timestamps_come_from_the_rate(seq_dir):
    (seq_dir / "timestamps.txt").unlink()
    seq = PosedSequence(seq_dir, rate_hz=5.0)
    np.testing.assert_allclose(seq.stamps, START_TIME_S + np.arange(4) * 0.2)


def test_names_sort_numerically_and_need_not_start_at_zero(seq_dir):
    for i, old in enumerate(["00000", "00001", "00002", "00003"]):
        new = str([9, 10, 11, 100][i])  # unpadded: string order would put 10 before 9
        for kind, suffix in (("images", ".png"), ("depth", ".png"), ("semantic", ".png"), ("normals", ".npy")):
            (seq_dir / kind / f"{old}{suffix}").rename(seq_dir / kind / f"{new}{suffix}")
    assert PosedSequence(seq_dir).names == ["9", "10", "11", "100"]


def test_hololens_sequence_reads_lazily(hololens_dir):
    seq = PosedSequence(hololens_dir)
    assert len(seq) == 373 and seq.names[0] == "00003" and not seq.has_timestamps
    f = seq[0]
    assert f.rgb.shape == (360, 540, 3) and f.depth.shape == (360, 540) and f.name == "00003"
    assert 0.5 < np.nanmedian(f.depth) < 3.0
    np.testing.assert_allclose(f.K[0, 0], 495.5677570093457, rtol=1e-9)


def test_hololens_depth_agrees_across_views(hololens_dir):
    """The real sequence's poses, K and depth are consistent: median |dz| < 2 cm for frames 1-5 apart."""
    seq = PosedSequence(hololens_dir)
    for start in (0, 120, 240, 360):
        for gap in range(1, 6):
            if start + gap >= len(seq):
                continue
            a, b = seq.frame(start, semantic=False), seq.frame(start + gap, semantic=False)
            z_pred, z_b = depth_in_other_view(a.depth, a.K, relative_pose(b.T_world_cam, a.T_world_cam), b.depth, b.K)
            visible = np.isfinite(z_pred)
            assert visible.sum() > 1000, (start, gap)
            assert np.median(np.abs(z_pred - z_b)[visible]) < 0.02, (start, gap)


# --------------------------------------------------------------------------------------------------
# Validation: every problem raises SequenceError naming the file and the problem.
# --------------------------------------------------------------------------------------------------


def _replace_line(path: Path, line_index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_index] = text
    path.write_text("\n".join(lines) + "\n")


def _pose_row(T) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(T).ravel())


NOT_RIGID = np.diag([2.0, 1.0, 1.0, 1.0])

STRUCTURE_ERRORS = {
    "images dir missing": (lambda r: shutil.rmtree(r / "images"), r"images: missing"),
    "no images": (lambda r: [p.unlink() for p in (r / "images").iterdir()], r"images: no images"),
    "unexpected file": (lambda r: (r / "images" / "notes.txt").write_text("x"), r"notes\.txt: unexpected file in images/"),
    "duplicate stem": (lambda r: shutil.copy(r / "images" / "00001.png", r / "images" / "00001.jpg"),
                       r"00001\.(png|jpg): a second image named '00001'"),
    "depth missing": (lambda r: (r / "depth" / "00002.png").unlink(), r"depth/00002\.png: missing \(images/ has '00002'\)"),
    "depth extra": (lambda r: shutil.copy(r / "depth" / "00001.png", r / "depth" / "00099.png"),
                    r"depth/00099\.png: extra file, no image named '00099'"),
    "depth wrong suffix": (lambda r: (r / "depth" / "00001.png").rename(r / "depth" / "00001.jpg"),
                           r"depth/00001\.jpg: unexpected file in depth/"),
    "semantic missing": (lambda r: (r / "semantic" / "00000.png").unlink(), r"semantic/00000\.png: missing"),
    "normals extra": (lambda r: np.save(r / "normals" / "00007.npy", np.zeros((2, 2, 3))), r"normals/00007\.npy: extra file"),
    "poses missing": (lambda r: (r / "poses.txt").unlink(), r"poses\.txt: missing"),
    "poses count": (lambda r: r.joinpath("poses.txt").write_text("\n".join(r.joinpath("poses.txt").read_text().splitlines()[:3]) + "\n"),
                    r"poses\.txt: has 3 poses but images/ has 4 images"),
    "pose row short": (lambda r: _replace_line(r / "poses.txt", 1, "1 0 0 0 0 1 0 0 0 0 1 0"),
                       r"poses\.txt line 2: expected 16 numbers \(a row-major 4x4\), got 12"),
    "pose not a number": (lambda r: _replace_line(r / "poses.txt", 2, _pose_row(np.eye(4)).replace("0.0", "abc", 1)),
                          r"poses\.txt line 3: 'abc' is not a number"),
    "pose NaN": (lambda r: _replace_line(r / "poses.txt", 0, _pose_row(np.eye(4)).replace("0.0", "nan", 1)),
                 r"poses\.txt line 1: NaN or infinite value"),
    "pose not rigid": (lambda r: _replace_line(r / "poses.txt", 3, _pose_row(NOT_RIGID)),
                       r"poses\.txt line 4: pose rotation is not orthonormal"),
    "pose bad last row": (lambda r: _replace_line(r / "poses.txt", 3, _pose_row(np.eye(4)).rsplit(" ", 1)[0] + " 2.0"),
                          r"poses\.txt line 4: pose last row"),
    "K missing": (lambda r: (r / "K.txt").unlink(), r"K\.txt: missing"),
    "K not 3x3": (lambda r: (r / "K.txt").write_text("100 0 16\n0 100 12\n"),
                  r"K\.txt: expected a 3x3 matrix \(3 rows of 3 numbers\), got 2 rows"),
    "K ragged": (lambda r: (r / "K.txt").write_text("100 0 16 1\n0 100 12\n0 0 1\n"), r"K\.txt: expected a 3x3 matrix"),
    "K zero focal": (lambda r: (r / "K.txt").write_text("0 0 16\n0 100 12\n0 0 1\n"),
                     r"K\.txt has non-positive focal length fx=0\.0, fy=100\.0"),
    "K negative focal": (lambda r: (r / "K.txt").write_text("100 0 16\n0 -5 12\n0 0 1\n"), r"K\.txt has non-positive focal length"),
    "K NaN": (lambda r: (r / "K.txt").write_text("nan 0 16\n0 100 12\n0 0 1\n"), r"K\.txt line 1: NaN or infinite value"),
    "timestamps count": (lambda r: (r / "timestamps.txt").write_text("1.0\n2.0\n"),
                         r"timestamps\.txt: has 2 stamps but images/ has 4 images"),
    "timestamps backwards": (lambda r: (r / "timestamps.txt").write_text("1.0\n2.0\n1.5\n3.0\n"),
                             r"timestamps\.txt line 3: time goes backwards \(1\.5 after 2\.0\)"),
    "timestamps NaN": (lambda r: (r / "timestamps.txt").write_text("1.0\nnan\n2.0\n3.0\n"), r"timestamps\.txt line 2: NaN"),
    # a trial: EuRoC-style nanoseconds ended in a struct.error traceback in mtl3d bag
    "timestamps in nanoseconds": (lambda r: (r / "timestamps.txt").write_text(
        "1700000000000000000\n1700000000100000000\n1700000000200000000\n1700000000300000000\n"),
        r"timestamps\.txt line 1: 1\.7e\+18 s is not a ROS time \(0 to 2147483647 s\); stamps are seconds "
        r"\(nanoseconds\? divide them by 1e9\)"),
    "timestamps negative": (lambda r: (r / "timestamps.txt").write_text("-1.0\n2.0\n3.0\n4.0\n"),
                            r"timestamps\.txt line 1: -1 s is not a ROS time"),
    "timestamps two columns": (lambda r: (r / "timestamps.txt").write_text("1.0 2.0\n2.0\n3.0\n4.0\n"),
                               r"timestamps\.txt line 1: expected one number"),
}


@pytest.mark.parametrize("case", list(STRUCTURE_ERRORS))
def test_opening_a_malformed_folder_names_the_file_and_the_problem(seq_dir, case):
    mutate, message = STRUCTURE_ERRORS[case]
    mutate(seq_dir)
    with pytest.raises(SequenceError, match=message):
        PosedSequence(seq_dir)


def test_not_a_directory(tmp_path):
    with pytest.raises(SequenceError, match=r"nowhere does not exist \(expected a posed RGB-D sequence folder"):
        PosedSequence(tmp_path / "nowhere")


FRAME_ERRORS = {
    "corrupt image": (lambda r: (r / "images" / "00001.png").write_bytes(b"not a png"),
                      r"images/00001\.png: cannot be read as an image"),
    "8-bit depth": (lambda r: cv2.imwrite(str(r / "depth" / "00001.png"), np.ones((24, 32), np.uint8)),
                    r"depth/00001\.png: expected a one-channel uint16 PNG \(millimetres\), got uint8"),
    "depth size": (lambda r: cv2.imwrite(str(r / "depth" / "00001.png"), np.ones((12, 16), np.uint16)),
                   r"depth/00001\.png: size 16x12 differs from 00001\.png \(32x24\)"),
    "colour semantic": (lambda r: cv2.imwrite(str(r / "semantic" / "00001.png"), np.ones((24, 32, 3), np.uint8)),
                        r"semantic/00001\.png: expected a one-channel uint8 PNG of class ids, got uint8 with 3 channel"),
    "normals shape": (lambda r: np.save(r / "normals" / "00001.npy", np.zeros((24, 32), np.float16)),
                      r"normals/00001\.npy: expected a float \[H,W,3\] array, got float16 of shape \(24, 32\)"),
    "normals size": (lambda r: np.save(r / "normals" / "00001.npy", np.zeros((24, 31, 3), np.float16)),
                     r"normals/00001\.npy: size 31x24 differs"),
    "normals corrupt": (lambda r: (r / "normals" / "00001.npy").write_bytes(b"junk"),
                        r"normals/00001\.npy: cannot be read as a \.npy array"),
}


@pytest.mark.parametrize("case", list(FRAME_ERRORS))
def test_reading_a_bad_frame_names_the_file_and_the_problem(seq_dir, case):
    mutate, message = FRAME_ERRORS[case]
    mutate(seq_dir)
    seq = PosedSequence(seq_dir)  # structure is fine: the problem shows when the frame is read
    seq[0]
    with pytest.raises(SequenceError, match=message):
        seq[1]
    with pytest.raises(SequenceError, match=message):
        seq.validate()


def test_write_sequence_refuses_bad_input(tmp_path, frames):
    with pytest.raises(SequenceError, match="no frames to write"):
        write_sequence(tmp_path / "empty", [])
    write_sequence(tmp_path / "seq", frames[:1])
    with pytest.raises(SequenceError, match=r"seq: is not empty \(holds 'K.txt'\); write a sequence into a new or "
                                            r"empty folder"):
        write_sequence(tmp_path / "seq", frames[:1])
    mine = tmp_path / "mine"  # a user's folder without images/ (mtl3d synth --out): its poses.txt was replaced
    mine.mkdir()
    (mine / "poses.txt").write_text("my poses")
    with pytest.raises(SequenceError, match="mine: is not empty"):
        write_sequence(mine, frames[:1])
    assert sorted(p.name for p in mine.iterdir()) == ["poses.txt"] and (mine / "poses.txt").read_text() == "my poses"
    (tmp_path / "empty_dir").mkdir()
    write_sequence(tmp_path / "empty_dir", frames[:1])  # an empty folder is fine
    other_K = SequenceFrame(1, 1.0, frames[1].rgb, frames[1].depth, frames[1].K * 2, frames[1].T_world_cam,
                            frames[1].semantic, frames[1].normals)
    with pytest.raises(SequenceError, match="frame 1 has a different K"):
        write_sequence(tmp_path / "k", [frames[0], other_K])
    no_depth = SequenceFrame(1, 1.0, frames[1].rgb, None, frames[1].K, frames[1].T_world_cam,
                             frames[1].semantic, frames[1].normals)
    with pytest.raises(SequenceError, match=r"frame 1 has \['semantic', 'normals'\], frame 0 has"):
        write_sequence(tmp_path / "parts", [frames[0], no_depth])
    with pytest.raises(SequenceError, match="a second frame named '00000'"):
        write_sequence(tmp_path / "dup", [frames[0], frames[0]])
    with pytest.raises(SequenceError, match="image_format"):
        write_sequence(tmp_path / "fmt", frames, image_format="bmp")
