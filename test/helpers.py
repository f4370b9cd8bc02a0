"""Helpers shared by several test modules (not library code: nothing in the package needs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mtl3d_perception.data.sequence import SequenceFrame
from mtl3d_perception.data.synthetic import iter_sequence


def render_frames(seed: int, n_frames: int, size: tuple[int, int], **kwargs) -> list[SequenceFrame]:
    """All frames of ``data.synthetic.iter_sequence`` as a list (kwargs: ``K``, ``rate_hz``, ``speed``)."""
    return list(iter_sequence(seed, n_frames, size, **kwargs))


ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "default.safetensors"


def run_benchmark(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> ARGS`` from this checkout on one torch thread; stdout and stderr as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
