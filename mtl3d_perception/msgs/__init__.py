"""ROS messages in and out, without rclpy: numpy <-> message conversions (``conversions``) and frames from /
products to messages (``messages``), written once for the node, replay and the bag reader and writer.

Messages are read duck-typed (rclpy messages and ``rosbags`` dataclasses alike) and built through a ``types``
mapping, so nothing here needs ROS installed. Nothing is imported here; import the modules.
"""
