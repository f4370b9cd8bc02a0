"""Readers of posed frames in the layouts training and evaluation read besides the project's sequence folder.

Each layout has its own small module and one reader class with the interface of
:class:`~mtl3d_perception.data.sequence.PosedSequence` (:class:`PosedFrames`): ``len()``, ``poses``
``[N,4,4]`` T_world_cam of the colour camera's optical frame, ``stamps`` ``[N]`` seconds, and
``frame(i, depth=..., semantic=..., normals=...)`` returning a
:class:`~mtl3d_perception.data.sequence.SequenceFrame` whose depth is registered to the colour image and
whose ``K`` is the colour camera's.

- :mod:`.bag`: a rosbag2 (Image or CompressedImage + CameraInfo + TF, optional depth and semantic topics);
- :mod:`.tum`: the TUM RGB-D layout (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``);
- :mod:`.scannet`: the ScanNet export layout (``color/``, ``depth/``, ``pose/``, ``intrinsic/``);
- :mod:`.seven_scenes`: the 7-Scenes layout (``frame-NNNNNN.color.png``, ``.depth.png``, ``.pose.txt``).

A malformed layout raises :class:`~mtl3d_perception.data.sequence.SequenceError` (a ValueError) whose one-line
message starts with the offending file (and line).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from mtl3d_perception.data.sequence import SequenceFrame


class PosedFrames(Protocol):
    """What a dataset needs from a reader of posed frames (see the module docstring)."""

    poses: np.ndarray
    stamps: np.ndarray

    def __len__(self) -> int: ...

    def frame(self, i: int, *, depth: bool = True, semantic: bool = True, normals: bool = True) -> SequenceFrame: ...
