"""Topic naming: inputs relative (namespace- and remap-friendly), each output image with its sibling camera_info."""

from __future__ import annotations

import pytest

from mtl3d_perception import topics


@pytest.mark.parametrize(("image", "info"), [
    ("/camera/color/image_raw", "/camera/color/camera_info"),
    ("camera/color/image_raw", "camera/color/camera_info"),
    ("image", "camera_info"),
    ("~/image", "~/camera_info"),
    ("/image_raw", "/camera_info"),
])
def test_camera_info_beside_the_image(image, info):
    """image_transport's getCameraInfoTopic: the image topic's namespace + camera_info."""
    assert topics.camera_info_topic_for(image) == info


def test_inputs_are_relative_and_resolve_to_the_bag_topics():
    assert not topics.IMAGE_INPUT.startswith("/") and topics.IMAGE_TOPIC == "/" + topics.IMAGE_INPUT
    assert topics.camera_info_topic_for(topics.IMAGE_TOPIC) == topics.CAMERA_INFO_TOPIC


def test_every_output_image_has_its_sibling_camera_info():
    """So image_transport's CameraSubscriber (depth_image_proc, RViz Camera) pairs ~/depth/image with
    ~/depth/camera_info (``~/depth`` + ``~/depth/camera_info`` never paired)."""
    images = [name for name, (msg_type, _) in topics.OUTPUTS.items() if msg_type == "sensor_msgs/msg/Image"]
    assert images == ["depth/image", "depth/confidence", "depth/image_color", "semantic/image", "semantic/image_color",
                      "normals/image", "normals/image_color", "boundary/image"]
    for name in images:
        info = topics.camera_info_topic_for(topics.output_topic(name))
        assert info == topics.output_topic(f"{topics.output_group(name)}/camera_info")
        assert topics.OUTPUTS[info.removeprefix(f"/{topics.NODE_NAME}/")][0] == "sensor_msgs/msg/CameraInfo"
