"""Replay a rosbag2 live through the node: ``ros2 launch mtl3d_perception replay.launch.py bag:=PATH``.

``ros2 bag play --clock`` publishes /clock and the recorded camera + TF topics; the node and RViz run on sim
time. Arguments: ``bag``, ``rate``, ``image_transport`` (compressed for bags that recorded
``.../image_raw/compressed``), ``model_path``, ``device``, ``params_file``, ``rviz``; ``image_transport``,
``model_path``, ``device`` and ``tf_timeout_s`` (0.5 s) override the same keys of ``params_file``. (The offline
evaluation without ROS is ``mtl3d replay BAG``.) Declarative only; checked by test/test_launch_files.py.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mtl3d_perception"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder or .mcap/.db3 file"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw, or compressed: the bag recorded image_topic + '/compressed'"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="checkpoint (.safetensors); empty = the shipped models/default.safetensors"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz with config/mtl3d.rviz"),
        ExecuteProcess(
            cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")],
            output="screen",
        ),
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="mtl3d_perception",
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "image_transport": LaunchConfiguration("image_transport"),
                    "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                    "device": LaunchConfiguration("device"),
                    "use_sim_time": True,
                    # replay: wait longer for TF, bags may deliver it after the image
                    "tf_timeout_s": 0.5,
                },
            ],
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([share, "config", "mtl3d.rviz"])],
            parameters=[{"use_sim_time": True}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
