"""Node and replay run one runtime: one bag through the in-process node and through `replay_bag` gives equal
products (stamps, depth, labels, cloud) frame for frame (issue 14).

The bag's messages are handed to the node in bag order: TF through ``msgs.tf.ingest_tf`` into the node's tf2_ros
Buffer (what its TransformListener does with /tf), images and camera_info published by a peer node (each frame
waits for its outputs, so the node's ``newest`` policy has nothing to drop). Replay reads the same bag with its
``in_order`` policy. Same network, same pairing rules: the outputs must agree.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402

from mtl3d_perception import topics  # noqa: E402
from mtl3d_perception.data.bag import read_bag, typestore, write_bag  # noqa: E402
from mtl3d_perception.data.sequence import SequenceFrame  # noqa: E402
from mtl3d_perception.model import build_model, resolve_config  # noqa: E402
from mtl3d_perception.msgs import conversions as cv  # noqa: E402
from mtl3d_perception.msgs.tf import ingest_tf  # noqa: E402
from mtl3d_perception.replay import OUTPUT_BAG, ReplayOptions, replay_bag  # noqa: E402

pytestmark = pytest.mark.ros

W, H = 64, 48
K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
COMPARED = ("depth/image", "semantic/image", "points")


def _frames(n: int) -> list[SequenceFrame]:
    """A camera moving 8 cm sideways and turning 2 degrees per frame (every frame after the first pairs)."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(n):
        c, s = np.cos(np.radians(2.0 * i)), np.sin(np.radians(2.0 * i))
        T = np.eye(4)
        T[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
        T[0, 3] = 0.08 * i
        frames.append(SequenceFrame(index=i, stamp=1_700_000_000.0 + 0.1 * i, T_world_cam=T, K=K,
                                    rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8), depth=None, semantic=None))
    return frames


def _model():
    torch.manual_seed(0)
    cfg = dataclasses.replace(resolve_config("tiny"), input_size=(W, H), pretrained=False, num_depth=8)
    return build_model(cfg).eval()


def _node_outputs(bag, model, context) -> dict[str, list]:
    """Every output message of the in-process node fed with ``bag`` in bag order."""
    from mtl3d_perception.ros.node import PerceptionNode

    node = PerceptionNode(model=model, context=context, parameter_overrides=[Parameter("tf_timeout_s", value=5.0)])
    peer = rclpy.create_node("parity_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    types, store = cv.rclpy_types(), typestore()
    received: dict[str, list] = {name: [] for name in COMPARED}
    for name in COMPARED:
        peer.create_subscription(types[topics.OUTPUTS[name][0]], topics.output_topic(name), received[name].append, 10)
    pubs = {topic: peer.create_publisher(types[msgtype], topic, 10)
            for topic, msgtype in ((topics.IMAGE_TOPIC, "sensor_msgs/msg/Image"),
                                   (topics.CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo"))}

    def spin_until(condition, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting for the node"
            executor.spin_once(timeout_sec=0.01)

    try:
        spin_until(lambda: all(p.get_subscription_count() for p in pubs.values()))
        frames_sent: dict[int, int] = {}
        for topic, _, msg in read_bag(bag):
            if topic in (topics.TF_TOPIC, topics.TF_STATIC_TOPIC):
                assert ingest_tf(node.tf_buffer, msg, static=topic == topics.TF_STATIC_TOPIC) == 0
            elif topic in pubs:
                msgtype = "sensor_msgs/msg/Image" if topic == topics.IMAGE_TOPIC else "sensor_msgs/msg/CameraInfo"
                pubs[topic].publish(deserialize_message(bytes(store.serialize_cdr(msg, msgtype)), types[msgtype]))
                stamp = cv.stamp_to_ns(msg.header.stamp)
                frames_sent[stamp] = frames_sent.get(stamp, 0) + 1
                if frames_sent[stamp] == 2:  # image and camera_info out: wait for this frame's products
                    n = sum(count == 2 for count in frames_sent.values())
                    spin_until(lambda n=n: all(len(v) >= n for v in received.values()))
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
    return received


def test_node_and_replay_give_equal_products(tmp_path):
    bag = write_bag(_frames(5), tmp_path / "bag")
    model = _model()
    summary = replay_bag(bag, tmp_path / "replay", copy.deepcopy(model), ReplayOptions(progress=False, device="cpu"))
    assert summary["counts"]["processed"] == 5
    reasons = [r["multi_view"]["pair_reason"] for r in json_records(tmp_path / "replay")]
    # the comparison covers two-view frames (a source far enough, or the farthest there is)
    assert reasons[0] == "no_history" and set(reasons[1:]) <= {"baseline", "farthest"}

    replayed: dict[str, list] = {name: [] for name in COMPARED}
    wanted = {topics.output_topic(name): name for name in COMPARED}
    for topic, _, msg in read_bag(tmp_path / "replay" / OUTPUT_BAG, wanted):
        replayed[wanted[topic]].append(msg)

    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        live = _node_outputs(bag, copy.deepcopy(model), context)
    finally:
        rclpy.try_shutdown(context=context)

    for name in COMPARED:
        assert [cv.stamp_to_ns(m.header.stamp) for m in live[name]] == \
            [cv.stamp_to_ns(m.header.stamp) for m in replayed[name]], name
        assert [m.header.frame_id for m in live[name]] == [m.header.frame_id for m in replayed[name]], name
    for a, b in zip(live["depth/image"], replayed["depth/image"]):
        np.testing.assert_allclose(cv.image_to_array(a), cv.image_to_array(b), rtol=1e-6, atol=1e-6, equal_nan=True)
    for a, b in zip(live["semantic/image"], replayed["semantic/image"]):
        np.testing.assert_array_equal(cv.image_to_array(a), cv.image_to_array(b))
    for a, b in zip(live["points"], replayed["points"]):
        ca, cb = cv.point_cloud2_to_arrays(a), cv.point_cloud2_to_arrays(b)
        assert ca.points.shape == cb.points.shape and ca.points.shape[0] > 0
        np.testing.assert_allclose(ca.points, cb.points, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ca.labels, cb.labels)
        np.testing.assert_array_equal(ca.rgb, cb.rgb)


def json_records(out_dir) -> list[dict]:
    import json

    return json.loads((out_dir / "metrics.json").read_text())["per_frame"]
