"""Parameter values that their type and range cannot refuse: reduced precision on a CPU, tf2-invalid frame ids."""

from __future__ import annotations

import pytest

from mtl3d_perception.runtime.config import RuntimeConfig
from mtl3d_perception.runtime.loading import resolve_device
from mtl3d_perception.runtime.params import device_problem, frame_id_problem, precision_problem

BAD_DEVICE = "device must be one of auto, cpu, cuda, cuda:N (N: a GPU index), got {!r}"


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


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices_accepted(device):
    assert device_problem(device) is None


@pytest.mark.parametrize("device", ["tpu", "", "CPU", "cuda:", "cuda:x", "cuda:-1", " cpu", "mps"])
def test_bad_device_is_named_with_what_is_expected(device):
    """Torch's own message ('Expected one of cpu, cuda, ipu, xpu, ...') lists what torch was built for; the node,
    replay and eval name the bad value and the devices this package takes, from the one rule."""
    expected = BAD_DEVICE.format(device)
    assert device_problem(device) == expected
    with pytest.raises(ValueError) as exc:
        resolve_device(device)
    assert str(exc.value) == expected
    with pytest.raises(ValueError) as exc:
        RuntimeConfig(device=device)
    assert str(exc.value) == expected


def test_gpu_index_past_the_last_gpu_is_refused():
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:0' requested but CUDA is not available"):
            resolve_device("cuda:0")
        return
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"there are {n} GPUs"):
        resolve_device(f"cuda:{n}")
    assert resolve_device(f"cuda:{n - 1}") == f"cuda:{n - 1}"
