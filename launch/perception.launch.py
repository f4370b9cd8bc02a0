"""Run the perception node on a live camera: ``ros2 launch mtl3d_perception perception.launch.py``.

Arguments: ``params_file`` (default ``config/perception.yaml``); ``image_topic``, ``camera_info_topic``,
``image_transport`` (raw | compressed), ``image_kind`` (auto | image_raw | image_rect), ``model_path``, ``device``,
``tf_timeout_s``, ``single_view`` and ``use_sim_time``, each empty by default: then the ``params_file`` value holds, and given, it
overrides that key; ``rviz`` (default false) also starts RViz with ``config/mtl3d.rviz``. Every package it runs is checked before anything starts, and each process ends the
launch when it exits, so no node outlives a failed launch. ``replay.launch.py`` includes this file (the one place
that starts the node). Tested with stand-ins for launch/launch_ros (test/test_launch_files.py).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from mtl3d_perception.ros import launch_args
from mtl3d_perception.topics import IMAGE_INPUT, NODE_NAME

PACKAGE = "mtl3d_perception"
# node parameters that are also launch arguments; '' (the default) keeps params_file's value. The standard-library
# launch cannot import RuntimeConfig (torch), so each '(params_file: X)' is checked against config/perception.yaml
# by test/test_launch_files.py
NODE_ARGUMENTS = {
    "image_topic": "input sensor_msgs/Image (params_file: camera/color/image_raw)",
    "camera_info_topic": "input sensor_msgs/CameraInfo (params_file: '' = beside image_topic)",
    "image_transport": "raw, or compressed: subscribe to image_topic + '/compressed' (params_file: raw)",
    "image_kind": "image_raw: rectify with camera_info D/R/P; image_rect: already rectified; auto: image_rect when "
                  "image_topic contains 'rect' (params_file: auto)",
    "model_path": "checkpoint (.safetensors) (params_file: '' = the shipped models/default.safetensors)",
    "device": "auto, cpu, cuda, cuda:N (params_file: auto)",
    "tf_timeout_s": "wait this long for a frame's TF, then run it single-view (params_file: 0.3)",
    "single_view": "true: never pair a source view, every frame single-view (params_file: false)",
    "world_frame": "fixed frame the camera poses are looked up in, e.g. map (params_file: odom)",
    "cloud_frame": "camera: ~/points in the image's frame (no pose needed); world: in world_frame (params_file: camera)",
    "history_size": "posed frames kept as source candidates; more for a slow camera (params_file: 16)",
    "min_baseline_m": "a source view at least this far from the frame (params_file: 0.15)",
}
FLOAT_ARGUMENTS = {"tf_timeout_s", "min_baseline_m"}
INT_ARGUMENTS = {"history_size"}
BOOL_ARGUMENTS = {"single_view"}  # the others are string parameters (model_path:=123 stays a string)


def launch_setup(context):
    config = context.launch_configurations
    rviz = launch_args.as_bool("rviz", config["rviz"])
    launch_args.require_packages([PACKAGE, *(["rviz2"] if rviz else [])])
    overrides = {name: launch_args.as_bool(name, value) if name in BOOL_ARGUMENTS else
                 ParameterValue(value, value_type=float if name in FLOAT_ARGUMENTS else
                                int if name in INT_ARGUMENTS else str)
                 for name, value in launch_args.given(config, NODE_ARGUMENTS).items()}
    if config["use_sim_time"]:
        overrides["use_sim_time"] = launch_args.as_bool("use_sim_time", config["use_sim_time"])
    actions = [Node(package=PACKAGE, executable="perception_node", name=NODE_NAME, output="screen",
                    parameters=[config["params_file"], overrides],
                    on_exit=Shutdown(reason="perception_node exited"))]
    if rviz:
        # the config's topics are relative, so a namespace (PushRosNamespace) applies to RViz as to the node; the
        # node's image_topic (the argument, else params_file's) moves the "Input" display with it (viewer trials:
        # it stayed at the default's name)
        namespace = config.get("ros_namespace", "").strip("/")
        image_topic = config.get("image_topic") or launch_args.params_file_value(
            config["params_file"], f"/{namespace}/{NODE_NAME}" if namespace else f"/{NODE_NAME}", "image_topic")
        remappings = [(IMAGE_INPUT, str(image_topic))] if image_topic and image_topic != IMAGE_INPUT else []
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "mtl3d.rviz"])],
                            parameters=[{"use_sim_time": overrides.get("use_sim_time", False)}],
                            remappings=remappings, on_exit=Shutdown(reason="rviz2 exited")))
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value="", description=description)
          for name, description in NODE_ARGUMENTS.items()),
        DeclareLaunchArgument("use_sim_time", default_value="", description="use /clock (params_file: false)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz with config/mtl3d.rviz"),
        OpaqueFunction(function=launch_setup),
    ])
