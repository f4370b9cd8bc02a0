"""The ROS 2 side: message conversions (``conversions``, numpy only, usable without ROS), frames from and products
to messages for the node and replay alike (``messages``, no rclpy either), the fallbacks for
message_filters / tf2_ros (``compat``), diagnostics, and the ``perception_node`` (``node``,
which needs rclpy). Nothing is imported here, so ``mtl3d_perception.ros.conversions`` works without rclpy.
"""
