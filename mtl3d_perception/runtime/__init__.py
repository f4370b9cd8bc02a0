"""The runtime between sensors and messages, with no ROS imports (DESIGN §2): every runtime setting
(:class:`RuntimeConfig`), frames and the time-jump rule, source-view pairing, a TF buffer, the approximate-time
synchroniser, the perception pipeline, its statistics (``stats``), and the loop the ROS node and offline replay
share (:class:`FrameDriver`: frames wait for their pose in a :class:`PosedFrameQueue`, run through
:meth:`PerceptionPipeline.process`, and come out as :class:`Products`).
"""

from __future__ import annotations

from mtl3d_perception.model.checkpoint import default_model_path
from mtl3d_perception.runtime.config import RuntimeConfig
from mtl3d_perception.runtime.driver import FrameDriver
from mtl3d_perception.runtime.frames import JUMP_BACK_S, Frame, TimeJumpDetector
from mtl3d_perception.runtime.history import FrameHistory, PairingConfig, ViewPair
from mtl3d_perception.runtime.loading import load_model, resolve_device
from mtl3d_perception.runtime.pipeline import PerceptionPipeline
from mtl3d_perception.runtime.pose_queue import PosedFrameQueue, PoseJob
from mtl3d_perception.runtime.pose_wait import LivePoseWait, PoseCheck, RecordedPoseWait
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
    "JUMP_BACK_S",
    "STAGES",
    "ApproximateTimeSync",
    "ConnectivityException",
    "ExtrapolationException",
    "Frame",
    "FrameDriver",
    "FrameHistory",
    "InvalidArgumentException",
    "LivePoseWait",
    "LookupException",
    "PairingConfig",
    "PerceptionPipeline",
    "PoseCheck",
    "PoseJob",
    "PosedFrameQueue",
    "Products",
    "RecordedPoseWait",
    "RuntimeConfig",
    "RuntimeStats",
    "TimeJumpDetector",
    "TransformBuffer",
    "TransformException",
    "ViewPair",
    "default_model_path",
    "load_model",
    "resolve_device",
]
