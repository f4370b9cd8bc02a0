"""Helpers shared by several test modules (not library code: nothing in the package needs them)."""

from __future__ import annotations

from mtl3d_perception.data.sequence import SequenceFrame
from mtl3d_perception.data.synthetic import iter_sequence


def render_frames(seed: int, n_frames: int, size: tuple[int, int], **kwargs) -> list[SequenceFrame]:
    """All frames of ``data.synthetic.iter_sequence`` as a list (kwargs: ``K``, ``rate_hz``, ``speed``)."""
    return list(iter_sequence(seed, n_frames, size, **kwargs))
