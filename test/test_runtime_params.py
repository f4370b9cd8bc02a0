"""Parameter values that their type and range cannot refuse: reduced precision on a CPU, tf2-invalid frame ids."""

from __future__ import annotations

import pytest

from mtl3d_perception.runtime.params import frame_id_problem, precision_problem


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_needs_cuda(precision):
    reason = precision_problem(precision, "cpu")
    assert reason is not None and f"precision {precision} needs a CUDA device" in reason and "cpu" in reason
    assert precision_problem(precision, "cuda") is None and precision_problem(precision, "cuda:1") is None
    assert precision_problem("fp32", "cpu") is None


@pytest.mark.parametrize(("frame_id", "expected"), [
    ("odom", None),
    ("camera_color_optical_frame", None),
    ("/odom", "world_frame '/odom': tf2 frame ids cannot start with a '/'; use 'odom'"),
    ("", "world_frame must not be empty, got ''"),
    ("  ", "world_frame must not be empty, got '  '"),
    ("odom ", "world_frame 'odom ' has leading or trailing white space"),
])
def test_frame_ids(frame_id, expected):
    assert frame_id_problem("world_frame", frame_id) == expected
