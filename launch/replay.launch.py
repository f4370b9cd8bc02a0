"""Replay a rosbag2 live through the node: ``ros2 launch mtl3d_perception replay.launch.py bag:=PATH``.

``ros2 bag play --clock`` publishes /clock and the recorded camera + TF topics; the node (and RViz) run on sim time.
The node comes from ``perception.launch.py``, included here with ``use_sim_time:=true``: every argument of that file
(``params_file``, ``image_topic``, ``camera_info_topic``, ``image_transport`` (compressed for bags that recorded
``.../image_raw/compressed``), ``model_path``, ``device``, ``tf_timeout_s``, ``rviz``) passes through with the same
meaning, so for the same arguments the node gets the same parameters as from ``perception.launch.py``. Own arguments:
``bag`` and ``rate``. The bag and every package are checked before anything starts (the included file checks its
own before it starts the node, and the bag plays after that), and the launch ends when any of its processes exits
(the bag is done, or the node failed). (The offline evaluation without ROS is ``mtl3d replay BAG``.) Tested with
stand-ins in test/test_launch_files.py.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    Shutdown,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from mtl3d_perception.ros import launch_args

PACKAGE = "mtl3d_perception"


def check_bag(context):
    bag = context.launch_configurations["bag"]
    if not Path(bag).exists():
        msg = f"not starting anything: bag:={bag} does not exist (a rosbag2 folder or .mcap/.db3 file)"
        raise RuntimeError(msg)
    launch_args.require_packages(["ros2bag"])


def generate_launch_description():
    perception = PathJoinSubstitution([FindPackageShare(PACKAGE), "launch", "perception.launch.py"])
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder or .mcap/.db3 file"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        OpaqueFunction(function=check_bag),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(perception),
                                 launch_arguments={"use_sim_time": "true"}.items()),
        ExecuteProcess(cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock",
                            "--rate", LaunchConfiguration("rate")],
                       output="screen", on_exit=Shutdown(reason="ros2 bag play exited")),
    ])
