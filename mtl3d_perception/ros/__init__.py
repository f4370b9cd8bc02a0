"""The ROS 2 side: the ``perception_node`` (``node``, which needs rclpy), the fallbacks for message_filters /
tf2_ros (``compat``) and the ``/diagnostics`` message (``diagnostics``, no rclpy). The message
conversions the node shares with replay live in :mod:`mtl3d_perception.msgs`. Nothing is imported here, so
``mtl3d_perception.ros.diagnostics`` works without rclpy.
"""
