"""The ROS libraries the node is written against, real where installed, else in-package fallbacks (DESIGN §5).

``from mtl3d_perception.ros.compat import message_filters, tf2_ros`` gives the real ``message_filters`` and
``tf2_ros`` on a robot, and the fallbacks of the same API subset in this package where they cannot be imported
(CI, a laptop with the PyPI ROS wheels); ``FALLBACKS`` names the ones in use. Images are converted by
``msgs/conversions.py``, not cv_bridge. Import the fallback modules by their full name
(``mtl3d_perception.ros.compat.tf2_ros``) only in tests of the fallbacks themselves.
"""

from __future__ import annotations

FALLBACKS: list[str] = []

try:
    import message_filters
except ImportError:
    from mtl3d_perception.ros.compat import message_filters

    FALLBACKS.append("message_filters")

try:
    import tf2_ros
except ImportError:
    from mtl3d_perception.ros.compat import tf2_ros

    FALLBACKS.append("tf2_ros")

__all__ = ["FALLBACKS", "message_filters", "tf2_ros"]
