"""The runtime between sensors and messages, with no ROS imports (DESIGN §2): frames, source-view pairing,
a TF buffer, the approximate-time synchroniser, the perception pipeline and its statistics (``stats``). The
ROS node and offline replay both drive it: build :class:`Frame` objects, give them poses from
:class:`TransformBuffer`, and call :meth:`PerceptionPipeline.process` to get :class:`Products`.
"""

from __future__ import annotations

from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.history import FrameHistory, PairingConfig, ViewPair
from mtl3d_perception.runtime.loading import default_model_path, load_model, resolve_device
from mtl3d_perception.runtime.pipeline import PerceptionPipeline
from mtl3d_perception.runtime.products import STAGES, Products
from mtl3d_perception.runtime.stats import RuntimeStats
from mtl3d_perception.runtime.sync import ApproximateTimeSync
from mtl3d_perception.runtime.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    InvalidArgumentException,
    LookupException,
    TransformBuffer,
    TransformException,
)

__all__ = [
    "STAGES",
    "ApproximateTimeSync",
    "ConnectivityException",
    "ExtrapolationException",
    "Frame",
    "FrameHistory",
    "InvalidArgumentException",
    "LookupException",
    "PairingConfig",
    "PerceptionPipeline",
    "Products",
    "RuntimeStats",
    "TransformBuffer",
    "TransformException",
    "ViewPair",
    "default_model_path",
    "load_model",
    "resolve_device",
]
