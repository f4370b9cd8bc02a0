"""Helpers shared by several test modules (not library code: nothing in the package needs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mtl3d_perception.data.bag import typestore
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


def copy_bag(src, dst, *, drop: set[str] = frozenset(), delay_s: dict[str, float] | None = None,
             edit: Callable[[str, int, Any], Any] | None = None, rename: dict[str, str] | None = None,
             retype: dict[str, str] | None = None) -> None:
    """Copy a bag message for message, leaving out the ``drop`` topics, recording some topics later, replacing
    messages by ``edit(topic, index on the topic, msg)`` (return ``msg`` to keep it, None to leave it out; of the
    type ``retype`` gives its topic, if any) and renaming topics."""
    delay_s = delay_s or {}
    rename = rename or {}
    retype = retype or {}
    store = typestore()
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for c in reader.connections:
            if c.topic not in drop:
                conns[c.id] = writer.add_connection(rename.get(c.topic, c.topic), retype.get(c.topic, c.msgtype),
                                                    typestore=store,
                                                    offered_qos_profiles=c.ext.offered_qos_profiles)
        seen: dict[str, int] = {}
        for c, t, raw in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
            if edit is not None:
                index = seen[c.topic] = seen.get(c.topic, -1) + 1
                msg = edit(c.topic, index, store.deserialize_cdr(raw, c.msgtype))
                if msg is None:
                    continue
                raw = store.serialize_cdr(msg, retype.get(c.topic, c.msgtype))
            writer.write(conns[c.id], t + round(delay_s.get(c.topic, 0.0) * 1e9), raw)
