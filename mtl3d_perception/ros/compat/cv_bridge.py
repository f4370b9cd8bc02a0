"""Fallback for ROS 2 ``cv_bridge`` (CvBridge.imgmsg_to_cv2 / cv2_to_imgmsg), on top of ``msgs/conversions.py``.

The real cv_bridge is not installable from PyPI and the PyPI ``cv-bridge`` is a broken ROS 1 port (see
``../shared/notes/ros2_ecosystem.md`` A.0). Supported: the encodings of ``conversions.ENCODINGS``;
``desired_encoding`` ``passthrough``, the message's own encoding, or a colour conversion among
rgb8/bgr8/rgba8/bgra8/mono8 -> rgb8/bgr8.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl3d_perception.msgs import conversions


class CvBridgeError(TypeError):
    """Conversion failure (the real class also derives from TypeError)."""


_PASSTHROUGH = {("uint8", 1): "mono8", ("uint16", 1): "16UC1", ("float32", 1): "32FC1", ("float32", 3): "32FC3"}


class CvBridge:
    """numpy <-> ``sensor_msgs/Image`` with the real cv_bridge's method names."""

    def __init__(self, types: Any = None) -> None:
        self._types = types

    @property
    def types(self) -> Any:
        if self._types is None:
            self._types = conversions.rclpy_types()
        return self._types

    def imgmsg_to_cv2(self, img_msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
        try:
            if desired_encoding in ("passthrough", img_msg.encoding):
                return conversions.image_to_array(img_msg)
            if desired_encoding in ("rgb8", "bgr8"):
                rgb = conversions.image_to_rgb8(img_msg)
                return rgb if desired_encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
        except ValueError as exc:
            raise CvBridgeError(str(exc)) from None
        raise CvBridgeError(f"cannot convert encoding {img_msg.encoding!r} to {desired_encoding!r}")

    def cv2_to_imgmsg(self, cvim: np.ndarray, encoding: str = "passthrough", header: Any = None) -> Any:
        cvim = np.asarray(cvim)
        if encoding == "passthrough":
            key = (cvim.dtype.name, 1 if cvim.ndim == 2 else cvim.shape[-1])
            if key not in _PASSTHROUGH:
                raise CvBridgeError(f"give an encoding for a {cvim.dtype} array of shape {cvim.shape}")
            encoding = _PASSTHROUGH[key]
        if header is None:
            header = self.types["std_msgs/msg/Header"]()
        try:
            return conversions.make_image(self.types, header, cvim, encoding)
        except ValueError as exc:
            raise CvBridgeError(str(exc)) from None
