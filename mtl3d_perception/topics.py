"""Default topic names, frame ids and QoS intent shared by the node, the bag writer and replay (DESIGN §5).

Bag topics (inputs and ground truth) are absolute names; the node subscribes to the same names made relative, and
its outputs are relative to its private namespace (``~/depth/image`` -> ``/mtl3d_perception/depth/image`` for the
default node name).
"""

from __future__ import annotations

NODE_NAME = "mtl3d_perception"
# The section of config/perception.yaml: the node in any namespace (rcl's ``/**``), so a params file copied from it
# still applies under -r __ns:=/robot1 (a node trial: a plain ``mtl3d_perception:`` section applied only at the root)
PARAMS_SECTION = f"/**/{NODE_NAME}"

# Inputs. The node subscribes to relative names (resolved in its namespace, so `-r __ns:=/robot1` and remapping
# work as for image_pipeline nodes); in the root namespace they are the bag topics below.
IMAGE_INPUT = "camera/color/image_raw"
IMAGE_TOPIC = "/" + IMAGE_INPUT
COMPRESSED_SUFFIX = "/compressed"  # image_transport's compressed topic: IMAGE_TOPIC + COMPRESSED_SUFFIX
COMPRESSED_DEPTH_SUFFIX = "/compressedDepth"  # image_transport's compressedDepth plugin topic (depth images)
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"

# Ground truth (bags only)
GT_DEPTH_TOPIC = "/camera/depth/image_rect"
GT_SEMANTIC_TOPIC = "/gt/semantic"

# Frames
WORLD_FRAME = "odom"
BASE_FRAME = "base_link"
CAMERA_FRAME = "camera_color_optical_frame"

# Outputs, relative to the node's private namespace: name -> (message type, encoding or None). Each image has its
# camera_info as a sibling (``depth/image`` + ``depth/camera_info``, as RealSense and nvblox publish), so
# image_transport's CameraSubscriber (depth_image_proc, RViz's Camera display) pairs them; ``image_color`` is the
# rgb8 rendering of the same pixels, beside ``image`` as in image_proc (for depth: viewers without a range setting,
# Foxglove's Image panel among them, draw 32FC1 as if it lay in [0, 1], i.e. white beyond 1 m). ``depth/confidence`` (the model's matching
# confidence in [0, 1], same header and size as ``depth/image``, so ``depth/camera_info`` is its sibling too) is
# published only by models that output one (``geometric_depth: true``).
OUTPUTS: dict[str, tuple[str, str | None]] = {
    "depth/image": ("sensor_msgs/msg/Image", "32FC1"),
    "depth/confidence": ("sensor_msgs/msg/Image", "32FC1"),
    "depth/image_color": ("sensor_msgs/msg/Image", "rgb8"),
    "depth/camera_info": ("sensor_msgs/msg/CameraInfo", None),
    "semantic/image": ("sensor_msgs/msg/Image", "mono8"),
    "semantic/image_color": ("sensor_msgs/msg/Image", "rgb8"),
    "semantic/camera_info": ("sensor_msgs/msg/CameraInfo", None),
    "normals/image": ("sensor_msgs/msg/Image", "32FC3"),
    "normals/image_color": ("sensor_msgs/msg/Image", "rgb8"),
    "normals/camera_info": ("sensor_msgs/msg/CameraInfo", None),
    "boundary/image": ("sensor_msgs/msg/Image", "mono8"),
    "boundary/camera_info": ("sensor_msgs/msg/CameraInfo", None),
    "points": ("sensor_msgs/msg/PointCloud2", None),
}
DIAGNOSTICS_TOPIC = "/diagnostics"
# QoS intent (the node's ros/qos.py and replay's output bag): outputs reliable, volatile, keep last OUTPUT_QOS_DEPTH
# (a reliable publisher serves best-effort subscribers too); /diagnostics keep last DIAGNOSTICS_QOS_DEPTH
OUTPUT_QOS_DEPTH = 2
DIAGNOSTICS_QOS_DEPTH = 10
# inputs best-effort (they accept every publisher): the newest image only, camera_info a few (ros/qos.py says why)
IMAGE_QOS_DEPTH = 1
CAMERA_INFO_QOS_DEPTH = 5
# the policies a start-up ``qos_overrides.<topic>.<subscription|publisher>.<policy>`` parameter may set (ros/qos.py):
# rclpy's QoSOverridingOptions.with_default_policies() for inputs; outputs add durability (transient_local viewers).
# Here, not in ros/qos.py, because config/perception.yaml (runtime/config.py) documents them without importing rclpy
INPUT_QOS_OVERRIDES = ("history", "depth", "reliability")
OUTPUT_QOS_OVERRIDES = (*INPUT_QOS_OVERRIDES, "durability")


def override_parameter(topic: str, entity: str, policy: str) -> str:
    """``qos_overrides.<topic>.<entity>.<policy>`` (rclpy ``_declare_qos_parameters``); ``entity`` is
    ``publisher`` or ``subscription``, ``topic`` fully qualified."""
    return f"qos_overrides.{topic}.{entity}.{policy}"


def output_topic(name: str, node_name: str = NODE_NAME) -> str:
    """Absolute topic of output ``name`` for a node called ``node_name`` in the root namespace."""
    if name not in OUTPUTS:
        msg = f"unknown output {name!r}; expected one of {', '.join(OUTPUTS)}"
        raise ValueError(msg)
    return f"/{node_name}/{name}"


def base_image_topic(image_topic: str) -> str:
    """The camera's base image topic, a transport's topic counted as its base (``.../image_raw/compressed``,
    ``.../image_raw/compressedDepth`` -> ``.../image_raw``), as image_transport's CameraSubscriber names the camera: the
    ``hardware_id`` of the node's and replay's /diagnostics statuses, whichever transport carries the images."""
    topic = image_topic.rstrip("/")
    return topic.removesuffix(COMPRESSED_DEPTH_SUFFIX) if topic.endswith(COMPRESSED_DEPTH_SUFFIX) else \
        topic.removesuffix(COMPRESSED_SUFFIX)


def camera_info_topic_for(image_topic: str) -> str:
    """The camera_info topic beside ``image_topic``, by image_transport's rule (``getCameraInfoTopic``):
    ``/camera/color/image_raw`` -> ``/camera/color/camera_info``, ``image`` -> ``camera_info``; a transport's
    topic counts as its base topic (``.../image_raw/compressed`` -> ``.../camera_info``), as image_transport's
    CameraSubscriber resolves it from the base name."""
    head, sep, _ = base_image_topic(image_topic).rpartition("/")
    return f"{head}{sep}camera_info"


def output_group(name: str) -> str:
    """The product an output belongs to (``depth/camera_info`` -> ``depth``): its ``publish_<group>`` switch."""
    return name.split("/")[0]
