"""Run the perception node on a live camera (and RViz): ``ros2 launch mtl3d_perception perception.launch.py``.

Arguments: ``image_topic``, ``image_transport`` (raw | compressed), ``camera_info_topic``, ``model_path``
('' = shipped default checkpoint), ``device``, ``params_file`` (default ``config/perception.yaml``), ``use_sim_time``, ``rviz``. The topic, transport,
model and device arguments always override the same keys of ``params_file`` (launch passes their defaults too).
Declarative only (checked statically by test/test_launch_files.py; launch is not installable in CI).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mtl3d_perception"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    return LaunchDescription([
        DeclareLaunchArgument("image_topic", default_value="/camera/color/image_raw",
                              description="input sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw, or compressed: subscribe to image_topic + '/compressed' (jpeg/png)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info",
                              description="input sensor_msgs/CameraInfo"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="checkpoint (.safetensors); empty = the shipped models/default.safetensors"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz with config/mtl3d.rviz"),
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="mtl3d_perception",
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "image_topic": LaunchConfiguration("image_topic"),
                    "image_transport": LaunchConfiguration("image_transport"),
                    "camera_info_topic": LaunchConfiguration("camera_info_topic"),
                    "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                    "device": LaunchConfiguration("device"),
                    "use_sim_time": use_sim_time,
                },
            ],
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([share, "config", "mtl3d.rviz"])],
            parameters=[{"use_sim_time": use_sim_time}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
