"""benchmarks/geometric_read_out.py: its numbers on a synthetic scene and its one-line errors."""

from __future__ import annotations

import re

import pytest
from helpers import SHIPPED_MODEL, run_benchmark

SHIPPED = SHIPPED_MODEL


def _run(*args: str):
    return run_benchmark("geometric_read_out.py", *args)


def test_read_out_per_window_on_a_synthetic_scene():
    res = _run(str(SHIPPED), "--data", "synthetic:test:1", "--windows", "1,5")
    assert res.returncode == 0, res.stderr
    rows = dict(re.findall(r"model, window (\d)x\d\s+mean ([0-9.]+)", res.stdout))
    assert set(rows) == {"1", "5"}
    # a textured room: the read-out is far from perfect but metric (a random guess is ~1), and windows help
    assert 0.0 < float(rows["5"]) < float(rows["1"]) < 0.6


@pytest.mark.parametrize(("args", "message"), [
    (["--windows", "2"], "window sizes must be odd whole numbers >= 1, got [2]"),
    (["--windows", "abc"], "expected comma-separated odd whole numbers >= 1, got 'abc'"),
    (["--batch-size", "0"], "expected a whole number >= 1, got 0"),
])
def test_bad_arguments_are_usage_errors(args, message):
    res = _run(str(SHIPPED), "--data", "synthetic:test:1", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_unusable_inputs_end_with_one_error_line(tmp_path):
    res = _run(str(tmp_path / "none.safetensors"), "--data", "synthetic:test:1")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"ERROR: checkpoint not found: {tmp_path / 'none.safetensors'}"
    res = _run(str(SHIPPED), "--data", "bogus:xyz")
    assert res.returncode == 1 and res.stderr.startswith("ERROR: cannot parse data spec 'bogus:xyz'")
