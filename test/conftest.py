"""Test-wide settings. Environment switches are set here, before any project module is imported.

- Triton kernels run in the interpreter on machines without CUDA (TRITON_INTERPRET is read when
  `@triton.jit` decorates, so it must be set before the kernel module is imported).
- ROS discovery stays on loopback, in a random domain, so parallel runs never see each other.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import settings

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))

# Test tensors are tiny: one intra-op thread avoids waiting on the other core for every small op.
torch.set_num_threads(1)

# CI machines are small and shared: no per-example deadlines, a modest number of examples.
settings.register_profile("ci", deadline=None, max_examples=50)
settings.load_profile("ci")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HOLOLENS = SHARED_DATA / "hololens_000"
SHARED_CASES = SHARED_DATA.parent / "cases"  # failing inputs of the issues, read in place (never copied)


@pytest.fixture
def hololens_dir() -> Path:
    """The real posed RGB-D sequence beside the checkout; skips with the reason when it is absent."""
    if not (HOLOLENS / "poses.txt").is_file():
        pytest.skip(f"real data not found at {HOLOLENS} (the ../shared folder beside the checkout)")
    return HOLOLENS


@pytest.fixture
def shared_case():
    """``shared_case(name)``: the folder ``../shared/cases/<name>`` beside the checkout; skips when it is absent."""

    def get(name: str) -> Path:
        path = SHARED_CASES / name
        if not path.is_dir():
            pytest.skip(f"../shared/cases/{name} absent")
        return path

    return get


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
