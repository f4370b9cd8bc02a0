"""The benchmarks' options: a bad value is one argparse error naming it (a benchmark trial met tracebacks, empty
tables with exit 0 and mislabelled rows), and ``node_latency.py``'s node runs on the threads it is given."""

from __future__ import annotations

import pytest
import torch
from helpers import run_benchmark

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize(("script", "args", "message"), [
    ("node_latency.py", ["--frames", "0"], "argument --frames: expected a whole number >= 1, got 0"),
    ("node_latency.py", ["--size", "0x0"], "argument --size: size must be at least 1x1, got '0x0'"),
    ("node_latency.py", ["--preset", "nosuch"], "unknown model preset 'nosuch'"),
    ("node_latency.py", ["--checkpoint", "/no/such.safetensors"], "checkpoint not found: /no/such.safetensors"),
    ("node_latency.py", ["--device", "cpu", "--precision", "bf16"], "no device of --device cpu can run bf16 here"),
    ("model.py", ["--iters", "1"], "argument --iters: expected a whole number in [2, 100000], got 1"),
    ("model.py", ["--device", "cpu", "--variants", "bf16"], "--variants bf16: CUDA only"),
    ("model.py", ["--variants", "fp16"], "argument --variants: invalid choice: 'fp16'"),
    ("cost_volume.py", ["--device", "cpu", "--variants", "triton"], "--variants triton: not a variant on cpu"),
    ("cost_volume.py", ["--repeats", "0"], "argument --repeats: expected a whole number in [2, 100000], got 0"),
    ("synthetic.py", ["--sizes", "160x120,0x0"], "argument --sizes: size must be at least 1x1, got '0x0'"),
    ("synthetic.py", ["--scenes", "0"], "argument --scenes: expected a whole number >= 1, got 0"),
    ("fuzz_inputs.py", ["--cases", "-5"], "argument --cases: expected a whole number >= 1, got -5"),
], ids=lambda v: v if isinstance(v, str) and v.endswith(".py") else None)
def test_a_bad_option_is_one_error_line(script, args, message):
    res = run_benchmark(script, *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused_not_an_empty_table():
    res = run_benchmark("node_latency.py", "--device", "cuda", "--no-node")
    assert res.returncode == 2 and "skipped cuda: device 'cuda' requested but CUDA is not available" in res.stdout
    assert "no device of --device cuda can run fp32 here" in res.stderr
    res = run_benchmark("cost_volume.py", "--device", "cuda")
    assert res.returncode == 2 and "CUDA is not available" in res.stderr and "Traceback" not in res.stderr


def test_node_rows_run_on_the_threads_asked_for():
    """The rclpy row of ``--threads 2`` had run on one thread: the node sets torch's threads from its num_threads."""
    pytest.importorskip("rclpy")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from node_latency import bench_node

    from mtl3d_perception.model import build_model, resolve_config

    before = torch.get_num_threads()
    try:
        model = build_model(resolve_config("tiny").replace(input_size=(64, 48), pretrained=False)).eval()
        latencies = bench_node(model, "cpu", "fp32", 64, 48, 1, threads=2)
        assert len(latencies) == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
