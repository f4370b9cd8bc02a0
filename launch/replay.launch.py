"""Replay a rosbag2 live through the node: ``ros2 launch mtl3d_perception replay.launch.py bag:=PATH``.

``ros2 bag play --clock`` publishes /clock and the recorded camera + TF topics; the node (and RViz) run on sim time.
Arguments: ``bag``, ``rate``, ``params_file``; ``image_transport`` (compressed for bags that recorded
``.../image_raw/compressed``), ``model_path``, ``device`` and ``tf_timeout_s``, each empty by default: then the
``params_file`` value holds (for ``tf_timeout_s``, replay's 0.5 s unless ``params_file`` sets it: bags may deliver TF
after the image), and given, it overrides that key; ``rviz`` (default false). The bag and every package are checked
before anything starts, and the launch ends when any of its processes exits (the bag is done, or the node failed).
(The offline evaluation without ROS is ``mtl3d replay BAG``.) Tested with stand-ins in test/test_launch_files.py.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from mtl3d_perception.ros import launch_args

PACKAGE = "mtl3d_perception"
NODE_ARGUMENTS = {
    "image_transport": "raw, or compressed: the bag recorded image_topic + '/compressed' (params_file: raw)",
    "model_path": "checkpoint (.safetensors) (params_file: '' = the shipped models/default.safetensors)",
    "device": "auto, cpu, cuda, cuda:N (params_file: auto)",
    "tf_timeout_s": "wait this long for a frame's TF (replay: 0.5 s unless params_file sets it)",
}
REPLAY_DEFAULTS = {"tf_timeout_s": 0.5}  # before params_file in the list: params_file and given arguments win


def launch_setup(context):
    config = context.launch_configurations
    bag = config["bag"]
    if not Path(bag).exists():
        msg = f"not starting anything: bag:={bag} does not exist (a rosbag2 folder or .mcap/.db3 file)"
        raise RuntimeError(msg)
    rviz = launch_args.as_bool("rviz", config["rviz"])
    launch_args.require_packages([PACKAGE, "ros2bag", *(["rviz2"] if rviz else [])])
    given = launch_args.given(config, NODE_ARGUMENTS)
    overrides = {name: ParameterValue(value, value_type=float if name == "tf_timeout_s" else str)
                 for name, value in given.items()}
    actions = [
        ExecuteProcess(cmd=["ros2", "bag", "play", bag, "--clock", "--rate", config["rate"]], output="screen",
                       on_exit=Shutdown(reason="ros2 bag play exited")),
        Node(package=PACKAGE, executable="perception_node", name="mtl3d_perception", output="screen",
             parameters=[REPLAY_DEFAULTS, config["params_file"], {**overrides, "use_sim_time": True}],
             on_exit=Shutdown(reason="perception_node exited")),
    ]
    if rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "mtl3d.rviz"])],
                            parameters=[{"use_sim_time": True}], on_exit=Shutdown(reason="rviz2 exited")))
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder or .mcap/.db3 file"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        *(DeclareLaunchArgument(name, default_value="", description=description)
          for name, description in NODE_ARGUMENTS.items()),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz with config/mtl3d.rviz"),
        OpaqueFunction(function=launch_setup),
    ])
