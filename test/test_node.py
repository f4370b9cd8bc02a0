"""perception_node in-process (executor + spin_once) and as a separate process, with the real rclpy.

Synthetic 64x48 frames (Image + CameraInfo) and TF fed through the buffer (tf2_msgs is not installable here;
where it is, the listener also feeds it from /tf). Every output topic is checked for encoding, size, frame_id
and stamp; depth against the model's own output; the cloud's fields and count; /diagnostics; and bad input
(unsupported encoding, zero K, size mismatch, missing TF, time going backwards, NaN pose) keeps the node alive
and shows in diagnostics.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

import torch  # noqa: E402
from rclpy.clock import ClockType  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from rclpy.time import Time  # noqa: E402

from mtl3d_perception import topics  # noqa: E402
from mtl3d_perception.geometry import pose_from_quat_trans, resize_intrinsics  # noqa: E402
from mtl3d_perception.model import build_model, resolve_config, save_checkpoint  # noqa: E402
from mtl3d_perception.msgs import conversions as cv  # noqa: E402
from mtl3d_perception.ros.diagnostics import (  # noqa: E402
    ERROR,
    OK,
    WARN,
    diagnostic_values,
    status_fields,
)
from mtl3d_perception.runtime.config import OUTPUT_NAMES as OUTPUT_GROUPS  # noqa: E402
from mtl3d_perception.runtime.config import RuntimeConfig  # noqa: E402
from mtl3d_perception.runtime.stats import RuntimeStats  # noqa: E402

pytestmark = pytest.mark.ros
PARAMETERS_DEFAULTS = {"precision": "fp32", "world_frame": topics.WORLD_FRAME}

W, H = 64, 48
K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
CAM = topics.CAMERA_FRAME
S = 1_000_000_000


def tiny_model(**overrides):
    torch.manual_seed(0)
    cfg = dataclasses.replace(resolve_config("tiny"), input_size=(W, H), pretrained=False, num_depth=8, **overrides)
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


class Harness:
    """The node under test plus a peer node that publishes inputs and records every output."""

    def __init__(self, context, model, *, static_tf: bool = True, **params):
        from mtl3d_perception.ros.node import PerceptionNode

        overrides = [Parameter(k, value=v) for k, v in {"tf_timeout_s": 0.05, "point_stride": 2, **params}.items()]
        self.node = PerceptionNode(model=model, context=context, parameter_overrides=overrides)
        self.peer = rclpy.create_node("test_peer", context=context)
        self.types = cv.rclpy_types()
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.received: dict[str, list] = {name: [] for name in topics.OUTPUTS}
        self.diagnostics: list = []
        for name, (msg_type, _) in topics.OUTPUTS.items():
            self.peer.create_subscription(self.types[msg_type], topics.output_topic(name), self.received[name].append, 10)
        self.peer.create_subscription(self.types["diagnostic_msgs/msg/DiagnosticArray"], topics.DIAGNOSTICS_TOPIC,
                                      self.diagnostics.append, 10)
        self.compressed = params.get("image_transport") == "compressed"
        if self.compressed:
            self.image_pub = self.peer.create_publisher(self.types["sensor_msgs/msg/CompressedImage"],
                                                        topics.IMAGE_TOPIC + topics.COMPRESSED_SUFFIX, 10)
        else:
            self.image_pub = self.peer.create_publisher(self.types["sensor_msgs/msg/Image"], topics.IMAGE_TOPIC, 10)
        self.info_pub = self.peer.create_publisher(self.types["sensor_msgs/msg/CameraInfo"], topics.CAMERA_INFO_TOPIC, 10)
        # every output matched too: a message published before discovery is lost (volatile QoS)
        self.spin_until(lambda: self.image_pub.get_subscription_count() and self.info_pub.get_subscription_count()
                        and all(pub.get_subscription_count() for pub in self.node.pubs.values()))
        if static_tf:
            static = cv.make_transform_stamped(self.types, cv.make_header(self.types, 0, topics.BASE_FRAME), CAM,
                                               np.eye(4))
            self.node.tf_buffer.set_transform_static(static, "test")

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()

    def spin_until(self, condition, timeout_s: float = 60.0):  # generous: CI machines are small and shared
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting for the node"
            self.executor.spin_once(timeout_sec=0.01)

    def send_tf(self, stamp_ns: int, x: float, nan: bool = False):
        T = pose_from_quat_trans(np.array([0.0, 0.0, 0.0, 1.0]), np.array([x, 0.0, 0.0]))
        if nan:
            T[0, 3] = np.nan
        ts = cv.make_transform_stamped(self.types, cv.make_header(self.types, stamp_ns, topics.WORLD_FRAME),
                                       topics.BASE_FRAME, T)
        self.node.tf_buffer.set_transform(ts, "test")

    def send_frame(self, stamp_ns: int, rgb: np.ndarray, *, encoding: str = "rgb8", K_=K, info_wh=(W, H),
                   with_info: bool = True):
        header = cv.make_header(self.types, stamp_ns, CAM)
        if self.compressed:  # lossless, so outputs equal the raw image's
            self.image_pub.publish(cv.make_compressed_image(self.types, header, rgb, "png"))
        else:
            self.image_pub.publish(cv.make_image(self.types, header, rgb, encoding))
        if with_info:
            self.info_pub.publish(cv.make_camera_info(self.types, header, K_, *info_wh))

    def send_moving(self, stamps: list[int], rgb: np.ndarray):
        """One frame per stamp, the camera 10 cm further each time, waiting for each frame's outputs."""
        for i, stamp in enumerate(stamps):
            self.send_tf(stamp, 0.1 * i)
            self.send_frame(stamp, rgb)
            self.wait_outputs(i + 1)

    def wait_outputs(self, n: int):
        """Wait for ``n`` messages on every output the node advertises (``~/depth/confidence`` only with a model
        that has a confidence)."""
        try:
            self.spin_until(lambda: all(len(self.received[name]) >= n for name in self.node.pubs))
        except AssertionError:
            counts = {name: len(v) for name, v in self.received.items()}
            raise AssertionError(f"waiting for {n} of each output: {counts}; node counts {dict(self.node.stats.counts)}, "
                                 f"problem {self.node.stats.last_problem!r}") from None

    def diag(self) -> dict[str, str]:
        before = len(self.diagnostics)
        self.node.publish_diagnostics()
        self.spin_until(lambda: len(self.diagnostics) > before)
        return diagnostic_values(self.diagnostics[-1])


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3)).astype(np.uint8)


def _single_view_outputs(model, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The network's own single-view outputs for one frame, ``[C, H, W]`` each (depth in metres)."""
    with torch.no_grad():
        f = model.encode(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
        out = model.predict(f, f, torch.as_tensor(K, dtype=torch.float32)[None], torch.eye(4)[None])
    return {name: value[0].numpy() for name, value in out.items()}


def _single_view_depth(model, rgb: np.ndarray) -> np.ndarray:
    """The network's own single-view depth for one frame, [H, W] metres."""
    return _single_view_outputs(model, rgb)["depth"][0]


@pytest.fixture
def harness(ros_context):
    h = Harness(ros_context, tiny_model())
    yield h
    h.close()


def test_outputs_match_inputs_and_model(harness):
    model = tiny_model()
    rgb = _image(0)
    stamps = [10 * S + 123, 10 * S + 100_000_123]
    harness.send_moving(stamps, rgb)

    # the tiny preset has no geometric depth, so no confidence: the topic is not even advertised
    assert set(harness.node.pubs) == set(topics.OUTPUTS) - {"depth/confidence"}
    assert harness.received["depth/confidence"] == []
    expect = {name: enc for name, (_, enc) in topics.OUTPUTS.items() if enc}
    for name in harness.node.pubs:
        msgs = harness.received[name]
        assert [cv.stamp_to_ns(m.header.stamp) for m in msgs] == stamps, name
        if name == "points":
            continue
        assert all(m.header.frame_id == CAM for m in msgs), name
        if name in expect:
            assert all((m.encoding, m.width, m.height) == (expect[name], W, H) for m in msgs), name
    info = harness.received["depth/camera_info"][-1]
    np.testing.assert_allclose(cv.camera_info_to_K(info), resize_intrinsics(K, (W, H), (W, H)))

    # depth of the first (single-view) frame equals the network's own single-view output
    depth = cv.image_to_array(harness.received["depth/image"][0])
    np.testing.assert_allclose(depth, _single_view_depth(model, rgb), rtol=1e-4, atol=1e-5)
    labels = cv.image_to_array(harness.received["semantic/image"][0])
    assert labels.max() < model.config.num_classes
    normals = cv.image_to_array(harness.received["normals/image"][-1])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)

    cloud_msg = harness.received["points"][-1]
    assert cloud_msg.header.frame_id == CAM
    assert [f.name for f in cloud_msg.fields] == ["x", "y", "z", "rgb", "label"]
    cloud = cv.point_cloud2_to_arrays(cloud_msg)
    depth, labels = (cv.image_to_array(harness.received[name][-1]) for name in ("depth/image", "semantic/image"))
    valid = np.isfinite(depth[::2, ::2])
    assert cloud.points.shape[0] == valid.sum() > 0
    np.testing.assert_array_equal(cloud.labels, labels[::2, ::2][valid])
    np.testing.assert_allclose(cloud.points[:, 2], depth[::2, ::2][valid], rtol=1e-6)

    values = harness.diag()
    assert values["processed"] == "2" and values["received"] == "2"
    # the first frame has no source: single-view by design, not a fallback (a user trial read 32 "fallbacks" from a
    # node run with single_view:=true, beside a ratio of 0.00)
    assert values["single_view_frames"] == "1" and values["single_view_fallbacks"] == "0"
    assert values["last_pair_reason"] in ("baseline", "farthest")
    assert values["device"] == "cpu" and "latency_total_p50_ms" in values and "latency_predict_p95_ms" in values
    assert values["tf_failures"] == "0" and values["bad_input"] == "0"
    assert values["depth_confidence"].startswith("none")  # said in diagnostics (and once in the log), not per frame


def test_depth_confidence_has_the_depth_header_and_size(ros_context):
    """A model with the geometric depth publishes ~/depth/confidence: 32FC1 in [0, 1], the depth image's stamp,
    frame_id and size, ~0 for the single-view first frame (a flat cost volume) and 0 where depth is invalid."""
    model = tiny_model(geometric_depth=True)
    h = Harness(ros_context, tiny_model(geometric_depth=True))
    try:
        assert "depth/confidence" in h.node.pubs
        rgb = _image(4)
        stamps = [30 * S + 7, 30 * S + 100_000_007]
        h.send_moving(stamps, rgb)
        for conf, depth in zip(h.received["depth/confidence"], h.received["depth/image"], strict=True):
            assert (conf.header.stamp, conf.header.frame_id) == (depth.header.stamp, depth.header.frame_id) \
                and conf.header.frame_id == CAM
            assert (conf.encoding, conf.width, conf.height) == ("32FC1", depth.width, depth.height) == ("32FC1", W, H)
            c, d = cv.image_to_array(conf), cv.image_to_array(depth)
            assert np.isfinite(c).all() and c.min() >= 0.0 and c.max() <= 1.0
            assert (c[~np.isfinite(d)] == 0.0).all()
        assert [cv.stamp_to_ns(m.header.stamp) for m in h.received["depth/confidence"]] == stamps
        first = cv.image_to_array(h.received["depth/confidence"][0])
        own = _single_view_outputs(model, rgb)
        expected = np.where(np.isfinite(cv.image_to_array(h.received["depth/image"][0])), own["depth_confidence"][0], 0)
        np.testing.assert_allclose(first, expected, atol=1e-5)
        assert first.max() < 1e-3  # single view: nothing to match
        assert h.diag()["depth_confidence"] == "published on ~/depth/confidence"
    finally:
        h.close()


def test_compressed_image_transport(ros_context):
    """image_transport:=compressed subscribes to image_topic + '/compressed' (sensor_msgs/CompressedImage)."""
    h = Harness(ros_context, tiny_model(), image_transport="compressed")
    try:
        assert h.node.image_sub.sub.topic_name == topics.IMAGE_TOPIC + topics.COMPRESSED_SUFFIX
        rgb = _image(7)
        h.send_tf(3 * S, 0.0)
        h.send_frame(3 * S, rgb)
        h.wait_outputs(1)
        msg = h.received["depth/image"][0]
        assert (cv.stamp_to_ns(msg.header.stamp), msg.header.frame_id, msg.width, msg.height) == (3 * S, CAM, W, H)
        np.testing.assert_allclose(cv.image_to_array(msg), _single_view_depth(tiny_model(), rgb), rtol=1e-4, atol=1e-5)
        assert h.diag()["bad_input"] == "0"
        # the camera is its base topic whatever the transport, as in replay (it said .../compressed)
        assert {st.hardware_id for st in h.diagnostics[-1].status} == {topics.IMAGE_TOPIC}
    finally:
        h.close()


# Another process: /tf_static base_link -> camera (transient local, as static_transform_publisher) and /tf
# odom -> base_link from 10 s to 14 s, x = 0.5 m/s * (t - 10 s), republished every 0.2 s.
TF_PUBLISHER = f"""
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

def transform(parent, child, i, x):
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.header.stamp.sec, t.header.stamp.nanosec = 10 + i // 10, (i % 10) * 100_000_000
    t.transform.translation.x, t.transform.rotation.w = x, 1.0
    return t

rclpy.init()
node = rclpy.create_node("test_tf_publisher")
latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
node.create_publisher(TFMessage, "{topics.TF_STATIC_TOPIC}", latched).publish(
    TFMessage(transforms=[transform("{topics.BASE_FRAME}", "{CAM}", 0, 0.0)]))
tf_pub = node.create_publisher(TFMessage, "{topics.TF_TOPIC}", 100)
odom = TFMessage(transforms=[transform("{topics.WORLD_FRAME}", "{topics.BASE_FRAME}", i, 0.05 * i) for i in range(41)])
while rclpy.ok():
    tf_pub.publish(odom)
    rclpy.spin_once(node, timeout_sec=0.2)
"""


@pytest.mark.slow
def test_live_tf_from_another_process_gives_two_view_frames():
    """The make-venv environment (tf2_msgs built locally): /tf and /tf_static from another process pose the frames,
    and the second frame pairs with the first (two-view). On a domain of its own, so no other test's TF mixes in."""
    domain = random.randint(30, 100)
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain)
    publisher = subprocess.Popen([sys.executable, "-c", TF_PUBLISHER], env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    h = Harness(context, tiny_model(), static_tf=False, tf_timeout_s=10.0)
    try:
        assert h.node.tf_listener.subscriptions, "the node did not subscribe to /tf (tf2_msgs missing?)"
        deadline = time.monotonic() + 60
        while not h.node.tf_buffer.can_transform(topics.WORLD_FRAME, CAM, Time(nanoseconds=11 * S + S // 2)):
            assert publisher.poll() is None, publisher.stdout.read()
            assert time.monotonic() < deadline, "no TF from the publisher process"
            h.executor.spin_once(timeout_sec=0.05)
        h.send_frame(11 * S, _image(60))
        h.wait_outputs(1)
        h.send_frame(11 * S + S // 2, _image(61))
        h.wait_outputs(2)
        assert _history_pose_x(h.node, 11 * S) == pytest.approx(0.5)
        assert _history_pose_x(h.node, 11 * S + S // 2) == pytest.approx(0.75)
        values = h.diag()
        assert values["tf_failures"] == "0" and values["single_view_frames"] == "1"  # only the first frame
        assert values["last_pair_reason"] == "baseline"
        assert values["last_baseline_m"] == "0.250"  # the parallax it had: 0.75 - 0.5 m
    finally:
        h.close()
        publisher.terminate()
        publisher.communicate(timeout=30)
        rclpy.try_shutdown(context=context)


def test_tf_not_subscribable_is_warned_and_named_per_frame(ros_context, monkeypatch, capfd):
    """Where tf2_msgs cannot be imported: WARN at start-up, an ERROR input status, and the cause in each TF reason."""
    monkeypatch.setitem(sys.modules, "tf2_msgs.msg", None)  # import fails as if not installed
    h = Harness(ros_context, tiny_model())
    try:
        assert "WARN" in capfd.readouterr().err and h.node.tf_listener.subscriptions == []
        h.send_frame(80 * S, _image(62))  # no TF: single-view after tf_timeout_s
        h.wait_outputs(1)
        values = h.diag()
        assert values["tf_failures"] == "1"
        assert "TF is not subscribed: tf2_msgs is not importable" in values["last_problem"]
        assert "source a ROS 2 install" in values["last_problem"] and "`make venv`" in values["last_problem"]
        assert "Raise tf_timeout_s" not in values["last_problem"]  # it cannot help without /tf
        tf_status = next(st for st in h.diagnostics[-1].status if st.name.endswith("input tf"))
        assert tf_status.level == b"\x02" and tf_status.message.startswith("not subscribed: tf2_msgs is not importable")
    finally:
        h.close()


def test_fallbacks_under_a_sourced_ros_install_warn(ros_context, monkeypatch, capfd):
    """A robot whose rosdep left out tf2_ros_py / message_filters must not run on the fallbacks with only an INFO."""
    from mtl3d_perception.ros.compat import FALLBACKS
    from mtl3d_perception.ros.node import PerceptionNode

    assert FALLBACKS  # this environment has neither message_filters nor tf2_ros
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    node = PerceptionNode(model=tiny_model(), context=ros_context)
    try:
        err = capfd.readouterr().err
        assert "WARN" in err and "although ROS jazzy is sourced" in err
    finally:
        node.destroy_node()


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_remapping_the_image_topic_moves_its_camera_info(ros_context, transport):
    """A user trial: `-r camera/color/image_raw:=/cam/image` moved the image but not the camera_info, which stayed on
    /camera/color/camera_info, so nothing was processed. As image_transport's CameraSubscriber (image_pipeline's
    "Remapping camera_info Topics"), the base topic is resolved first and both inputs derive from it."""
    from mtl3d_perception.ros.node import PerceptionNode

    remap = ["--ros-args", "-r", f"{topics.IMAGE_TOPIC.lstrip('/')}:=/cam/image"]
    node = PerceptionNode(model=tiny_model(), context=ros_context, cli_args=remap,
                          parameter_overrides=[Parameter("image_transport", value=transport)])
    try:
        image = "/cam/image" + ("/compressed" if transport == "compressed" else "")
        assert (node.image_sub.sub.topic_name, node.info_sub.sub.topic_name) == (image, "/cam/camera_info")
    finally:
        node.destroy_node()
    # an explicit camera_info_topic is kept (and remapped on its own)
    node = PerceptionNode(model=tiny_model(), context=ros_context, cli_args=remap,
                          parameter_overrides=[Parameter("camera_info_topic", value="/calib/info")])
    try:
        assert (node.image_sub.sub.topic_name, node.info_sub.sub.topic_name) == ("/cam/image", "/calib/info")
    finally:
        node.destroy_node()


def test_a_world_frame_tf_does_not_hold_names_the_parameter_and_the_frames(ros_context):
    """A live trial: world_frame map on a robot whose TF has odom only said "Raise tf_timeout_s if odometry publishes
    later" on every frame, which cannot help. It names the world_frame parameter and the frames TF holds."""
    h = Harness(ros_context, tiny_model(), world_frame="map")
    try:
        h.send_tf(97 * S, 0.0)
        h.send_frame(97 * S, _image(72))
        h.wait_outputs(1)
        problem = h.diag()["last_problem"]
        assert "world_frame 'map' is not in TF: set the world_frame parameter" in problem, problem
        assert f"frames in TF: {', '.join(sorted({topics.BASE_FRAME, CAM, topics.WORLD_FRAME}))};" in problem
        assert "raising tf_timeout_s does not help" in problem and "Raise tf_timeout_s" not in problem
    finally:
        h.close()


def test_single_view_with_a_camera_frame_cloud_does_not_wait_for_tf(ros_context):
    """A user trial: `single_view:=true cloud_frame:=camera` (a camera without odometry) still waited tf_timeout_s for
    TF on every frame (~300 ms each) and warned `tf` forever, although no pose is used then."""
    h = Harness(ros_context, tiny_model(), static_tf=False, tf_timeout_s=10.0, single_view=True)
    try:
        start = time.monotonic()
        h.send_frame(90 * S, _image(70))
        h.wait_outputs(1)
        assert time.monotonic() - start < 8.0  # not held for tf_timeout_s
        assert h.node.stats.counts["tf_failures"] == 0 and h.received["points"][-1].header.frame_id == CAM
        values = h.diag()
        assert (values["single_view_frames"], values["single_view_fallbacks"]) == ("1", "0")  # by choice: no fallback
        h.node.set_parameters([Parameter("cloud_frame", value="world"), Parameter("tf_timeout_s", value=0.05)])
        h.send_frame(91 * S, _image(71))
        h.wait_outputs(2)  # the world-frame cloud needs the pose: it waited, found none, and says where the cloud is
        assert h.node.stats.counts["tf_failures"] == 1 and h.received["points"][-1].header.frame_id == CAM
        assert f"~/points is in {CAM}, not {topics.WORLD_FRAME}, for this frame" in h.node.stats.last_problem
    finally:
        h.close()


def test_depth_image_color_is_made_only_for_a_subscriber(ros_context):
    """~/depth/image_color costs ~1 ms a frame (benchmarks/RESULTS.md, session 18): as image_proc's lazy outputs, it
    is computed and published only while someone subscribes."""
    h = Harness(ros_context, tiny_model())
    try:
        h.send_tf(95 * S, 0.0)
        h.send_frame(95 * S, _image(80))
        h.wait_outputs(1)
        assert h.node.pipeline.depth_color and len(h.received["depth/image_color"]) == 1
        colour_topic = topics.output_topic("depth/image_color")
        h.peer.destroy_subscription(next(sub for sub in h.peer.subscriptions if sub.topic_name == colour_topic))
        h.spin_until(lambda: h.node.pubs["depth/image_color"].get_subscription_count() == 0)
        h.send_tf(96 * S, 0.1)
        h.send_frame(96 * S, _image(81))
        h.spin_until(lambda: len(h.received["depth/image"]) == 2 and len(h.received["points"]) == 2)
        assert not h.node.pipeline.depth_color and len(h.received["depth/image_color"]) == 1
    finally:
        h.close()


def test_lazy_node_runs_only_for_subscribers_and_keeps_history(ros_context):
    """As image_pipeline's lazy outputs: with no subscriber on any output the network does not run (diagnostics say
    idle, OK, no "no frame processed" warning), yet the frames join the history, so the first frame after a
    subscriber connects is two-view; only the subscribed groups are computed and published."""
    h = Harness(ros_context, tiny_model())
    try:
        for sub in list(h.peer.subscriptions):
            if sub.topic_name != topics.DIAGNOSTICS_TOPIC:
                h.peer.destroy_subscription(sub)
        h.spin_until(lambda: not any(pub.get_subscription_count() for pub in h.node.pubs.values()))
        counts = h.node.stats.counts
        for i in range(2):
            h.send_tf((100 + i) * S, 0.2 * i)
            h.send_frame((100 + i) * S, _image(90 + i))
            h.spin_until(lambda i=i: counts["idle"] > i)
        values = h.diag()
        status = h.diagnostics[-1].status[0]
        assert (values["idle_frames"], values["processed"]) == ("2", "0")
        assert status.level == b"\x00", status.message
        assert status.message.startswith("idle: no subscriber on any enabled output"), status.message
        assert h.node.pipeline.history.stamps == [100 * S, 101 * S] and not h.node.pipeline._features

        points = []
        h.peer.create_subscription(h.types["sensor_msgs/msg/PointCloud2"], topics.output_topic("points"),
                                   points.append, 10)
        h.spin_until(lambda: h.node.pubs["points"].get_subscription_count() == 1)
        h.send_tf(102 * S, 0.4)
        h.send_frame(102 * S, _image(92))
        h.spin_until(lambda: len(points) == 1)
        assert counts["processed"] == 1 and counts["single_view"] == 0  # paired with a frame kept while idle
        assert h.node.stats.last_baseline_m == pytest.approx(0.2, abs=1e-6)
        assert not h.node.pipeline.depth_color
        values = h.diag()
        assert h.diagnostics[-1].status[0].message.endswith("ms")  # running again: rate and latency
        assert values["idle_frames"] == "2"
    finally:
        h.close()


def _status_after_one_idle_frame(h: Harness, stamp_ns: int) -> object:
    """Send one posed frame, wait until the node kept it without running it, and return the pipeline status."""
    h.send_tf(stamp_ns, 0.0)
    h.send_frame(stamp_ns, _image(95))
    h.spin_until(lambda: h.node.stats.counts["idle"] == 1)
    h.diag()
    return h.diagnostics[-1].status[0]


def test_a_subscriber_on_a_disabled_output_is_said(harness):
    """A re-check trial: with publish_depth false, a subscriber on ~/depth/image got nothing while the status said OK
    "no subscriber on any enabled output". Idle with such a subscriber is a WARN naming the parameter."""
    for sub in list(harness.peer.subscriptions):
        if sub.topic_name not in (topics.DIAGNOSTICS_TOPIC, topics.output_topic("depth/image")):
            harness.peer.destroy_subscription(sub)
    harness.node.set_parameters([Parameter("publish_depth", value=False)])
    harness.spin_until(lambda: sum(pub.get_subscription_count() for pub in harness.node.pubs.values()) == 1)
    status = _status_after_one_idle_frame(harness, 120 * S)
    assert status.level == b"\x01" and "(publish_depth false, yet subscribed)" in status.message, status.message


def test_a_subscriber_on_a_disabled_output_is_said_while_others_run(harness):
    """A node trial: with publish_depth false and ~/points subscribed, the frames ran for ~/points and the ~/depth/image
    subscriber got nothing with no word (the warning came only on the idle path). Now a throttled WARN names it."""
    logged = []
    real_log = harness.node._log
    harness.node._log = lambda kind, message, **kw: (logged.append((kind, message)), real_log(kind, message, **kw))
    harness.node.set_parameters([Parameter("publish_depth", value=False)])
    harness.send_tf(130 * S, 0.0)
    harness.send_frame(130 * S, _image(96))
    harness.spin_until(lambda: len(harness.received["points"]) == 1)
    assert harness.received["depth/image"] == []
    assert ("disabled_output", "publish_depth false, yet subscribed: those subscribers get nothing (set it true to "
                               "publish)") in logged


def test_every_output_disabled_is_warned_and_runs_nothing(harness):
    """publish_* all false ran the network for nothing: now the frames are only kept, and /diagnostics warns."""
    harness.node.set_parameters([Parameter(f"publish_{g}", value=False) for g in OUTPUT_GROUPS])
    status = _status_after_one_idle_frame(harness, 110 * S)
    assert status.level == b"\x01" and "every publish_* parameter is false" in status.message, status.message
    assert harness.node.stats.counts["processed"] == 0


def test_frame_waits_for_late_tf(ros_context):
    """A frame whose TF comes after it is held (not processed single-view) until the TF arrives."""
    h = Harness(ros_context, tiny_model(), tf_timeout_s=10.0)
    try:
        h.send_tf(1 * S, 0.0)
        h.send_frame(1 * S, _image(4))
        h.wait_outputs(1)
        h.send_frame(2 * S, _image(5))
        h.spin_until(lambda: h.node.stats.counts["received"] >= 2)
        for _ in range(20):
            h.executor.spin_once(timeout_sec=0.005)
        assert len(h.received["depth/image"]) == 1  # still waiting for TF at 2 s
        h.send_tf(2 * S, 0.2)
        h.wait_outputs(2)
        values = h.diag()
        assert values["tf_failures"] == "0" and values["single_view_frames"] == "1"
        assert values["last_pair_reason"] == "baseline"
    finally:
        h.close()


def test_parameters_validated_and_applied(harness):
    node = harness.node
    bad = node.set_parameters([Parameter("cloud_frame", value="nowhere")])[0]
    assert not bad.successful and "camera, world" in bad.reason
    assert not node.set_parameters([Parameter("point_stride", value=0)])[0].successful
    read_only = node.set_parameters([Parameter("model_path", value="x.safetensors")])[0]
    assert not read_only.successful and "read-only" in read_only.reason
    ok = node.set_parameters([Parameter("cloud_frame", value="world"), Parameter("output_resolution", value="camera"),
                              Parameter("publish_boundary", value=False)])
    assert all(r.successful for r in ok)
    harness.send_tf(20 * S, 1.0)
    harness.send_frame(20 * S, _image(1))
    harness.spin_until(lambda: harness.received["points"])
    assert harness.received["points"][-1].header.frame_id == topics.WORLD_FRAME
    harness.spin_until(lambda: harness.received["depth/image"])
    assert harness.received["boundary/image"] == []


def test_bad_input_keeps_node_alive(harness):
    rgb = _image(2)
    stamp = 30 * S
    bad = [
        dict(rgb=rgb[..., 0].astype(np.uint16), encoding="16UC1"),  # not a colour image
        dict(rgb=rgb, K_=np.zeros((3, 3))),  # zero K
        dict(rgb=rgb, info_wh=(W * 2, H * 2)),  # camera_info of another size
    ]
    for i, kwargs in enumerate(bad):
        harness.send_frame(stamp + i * S, **kwargs)  # decoded off the executor: wait for the verdict
        harness.spin_until(lambda i=i: sum(harness.node.stats.bad_input.values()) > i)
    values = harness.diag()
    assert values["bad_input.encoding"] == "1" and values["bad_input.intrinsics"] == "1"
    assert values["bad_input.size_mismatch"] == "1" and values["processed"] == "0"

    harness.send_tf(stamp + 3 * S, 0.0, nan=True)  # NaN pose: tf rejects it, the frame has no TF
    harness.send_frame(stamp + 3 * S, rgb)  # ... and is processed single-view after tf_timeout_s
    harness.wait_outputs(1)
    harness.send_frame(stamp + 4 * S, rgb)  # missing TF altogether
    harness.wait_outputs(2)
    harness.send_tf(stamp - 5 * S, 0.0)
    harness.send_frame(stamp - 5 * S, rgb)  # time jumps backwards
    harness.wait_outputs(3)
    values = harness.diag()
    assert values["tf_failures"] == "2" and values["time_jumps"] == "1"
    assert values["processed"] == "3" and values["single_view_frames"] == "3" and values["single_view_fallbacks"] == "2"
    assert harness.diagnostics[-1].status[0].level == b"\x01"  # WARN while problems are recent
    assert harness.node.tf_buffer.rejected == 1


def test_rejected_transforms_and_image_bombs_are_counted(ros_context):
    """Issue 15: 100 zero-quaternion TF messages show in /diagnostics (logged once, through the node's logger, then
    throttled); a JPEG whose header declares 32767 x 32767 is refused before decoding, counted, and the node goes on."""
    import cv2

    h = Harness(ros_context, tiny_model(), image_transport="compressed")
    try:
        for i in range(100):
            ts = cv.make_transform_stamped(h.types, cv.make_header(h.types, (70 + i) * S, topics.WORLD_FRAME),
                                           topics.BASE_FRAME, np.eye(4))
            ts.transform.rotation.w = 0.0
            assert not h.node.tf_buffer.set_transform(ts, "test")
        values = h.diag()
        assert values["bad_input.transform"] == "100" and h.node.tf_buffer.rejected == 100
        assert h.diagnostics[-1].status[0].level == b"\x01"
        assert h.node._log.suppressed["transform"] == 99  # one line through the node's logger, the rest held back

        ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
        jpeg = bytearray(jpeg.tobytes())
        sof = jpeg.index(b"\xff\xc0")
        jpeg[sof + 5:sof + 9] = (32767).to_bytes(2, "big") * 2
        header = cv.make_header(h.types, 80 * S, CAM)
        bomb = h.types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=bytes(jpeg))
        t = time.monotonic()
        h.image_pub.publish(bomb)
        h.info_pub.publish(cv.make_camera_info(h.types, header, K, W, H))
        h.spin_until(lambda: h.node.stats.bad_input["image_size"] == 1)
        assert time.monotonic() - t < 5.0
        h.send_tf(81 * S, 0.0)
        h.send_frame(81 * S, _image(8))
        h.wait_outputs(1)
        values = h.diag()
        assert values["bad_input.image_size"] == "1" and values["processed"] == "1"
        assert "32767x32767" in values["last_problem"]
    finally:
        h.close()


def test_start_up_values_are_validated(ros_context):
    """Values from overrides or a params file get the checks of a later set_parameters (they used to bypass them)."""
    from mtl3d_perception.ros.node import PerceptionNode

    with pytest.raises(InvalidParameterValueException, match="world_frame must not be empty"):
        PerceptionNode(model=tiny_model(), context=ros_context,
                       parameter_overrides=[Parameter("world_frame", value="")])


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("precision", "fp16", "precision fp16 needs a CUDA device, but the node runs on cpu"),
    ("precision", "bf16", "precision bf16 needs a CUDA device"),
    ("world_frame", "/odom", "tf2 frame ids cannot start with a '/'; use 'odom'"),
])
def test_parameters_that_cannot_hold_are_refused(ros_context, name, value, reason):
    """At start-up (overrides, params file) and through the parameter services alike, with the reason."""
    from mtl3d_perception.ros.node import PerceptionNode

    cpu = Parameter("device", value="cpu")  # also on a machine with CUDA, where device auto would allow fp16
    with pytest.raises(InvalidParameterValueException, match=re.escape(reason)):
        PerceptionNode(model=tiny_model(), context=ros_context, parameter_overrides=[cpu, Parameter(name, value=value)])
    node = PerceptionNode(model=tiny_model(), context=ros_context, parameter_overrides=[cpu])
    try:
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason
        assert node.get_parameter(name).value == PARAMETERS_DEFAULTS[name]
    finally:
        node.destroy_node()


@pytest.mark.gpu
def test_reduced_precision_is_accepted_on_cuda(ros_context):
    """The other side of the refusal: on a CUDA device fp16 and bf16 start and can be set at runtime."""
    from mtl3d_perception.ros.node import PerceptionNode

    node = PerceptionNode(model=tiny_model(), context=ros_context, parameter_overrides=[
        Parameter("device", value="cuda"), Parameter("precision", value="fp16")])
    try:
        assert node.get_parameter("precision").value == "fp16" and node.pipeline.precision == "fp16"
        assert node.set_parameters([Parameter("precision", value="bf16")])[0].successful
    finally:
        node.destroy_node()


def test_bad_device_parameter_is_named_with_what_is_expected(ros_context, capfd):
    """`perception_node --ros-args -p device:=tpu` used to end with torch's 'Expected one of cpu, cuda, ipu, xpu, ...
    device type at start of device string: tpu'; it is refused like any bad parameter, naming what is expected."""
    from mtl3d_perception.ros.node import PerceptionNode, main

    reason = "device must be one of auto, cpu, cuda, cuda:N (N: a GPU index), got 'tpu'"
    with pytest.raises(InvalidParameterValueException, match=re.escape(reason)):
        PerceptionNode(model=tiny_model(), context=ros_context, parameter_overrides=[Parameter("device", value="tpu")])
    capfd.readouterr()
    assert main(["perception_node", "--ros-args", "-p", "device:=tpu", "-p", "model_path:=preset:tiny"]) == 1
    err = capfd.readouterr().err
    assert reason in err and "Expected one of" not in err and "Traceback" not in err


def test_a_misspelt_parameter_is_named_not_ignored(ros_context, capfd):
    """`-p history_sizee:=3` was dropped by rclpy without a word (the default 16 held): the node warns at start-up,
    suggesting the declared name, and /diagnostics carries it; ROS's own parameters are not flagged."""
    from mtl3d_perception.ros.node import PerceptionNode
    from mtl3d_perception.runtime.params import unknown_parameters

    assert unknown_parameters(["history_sizee", "use_sim_time", "zzz"], ["history_size", "device"]) == [
        "'history_sizee' (did you mean 'history_size'?)", "'zzz'"]
    # a review: the closest whole name was a poor guess for a qos_overrides one; the wrong part is named
    declared = ["qos_overrides./cam/image.subscription.depth", "qos_overrides./cam/image.subscription.reliability",
                "qos_overrides./n/points.publisher.reliability", "qos_overrides./n/points.publisher.durability"]
    assert unknown_parameters(["qos_overrides./cam/image.subscription.durability",
                               "qos_overrides./n/points.subscription.reliability",
                               "qos_overrides./n/point.publisher.reliability"], declared) == [
        "'qos_overrides./cam/image.subscription.durability' (durability is not overridable there; the subscription "
        "takes depth, reliability)",
        "'qos_overrides./n/point.publisher.reliability' (did you mean the topic '/n/points'?)",
        "'qos_overrides./n/points.subscription.reliability' (/n/points is a publisher of this node, not a "
        "subscription)"]
    node = PerceptionNode(model=tiny_model(), context=ros_context, parameter_overrides=[
        Parameter("history_sizee", value=3), Parameter("use_sim_time", value=False)])
    try:
        assert node.get_parameter("history_size").value == RuntimeConfig().pairing.history_size
        assert node.unknown_parameters == ["'history_sizee' (did you mean 'history_size'?)"]
        assert "ignoring unknown parameter(s) 'history_sizee' (did you mean 'history_size'?)" in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_main_reports_bad_parameters_and_exits_1():
    """A parameter of the wrong type ends ``perception_node`` with one fatal line and exit code 1, no traceback."""
    from mtl3d_perception.ros.node import main

    assert main(["perception_node", "--ros-args", "-p", "tf_timeout_s:=soon"]) == 1
    bad_topic = ["-p", "image_topic:=no spaces allowed", "-p", "model_path:=preset:tiny"]
    assert main(["perception_node", "--ros-args", *bad_topic]) == 1


def test_two_instances_have_their_own_diagnostic_statuses(ros_context):
    """An integrator trial: /front/perception and /rear/perception published identical status names and
    hardware_id 'cpu', so an aggregator merged the two cameras. Names carry the namespace (diagnostic_updater's
    fully qualified node name) and hardware_id the camera (the resolved image topic)."""
    from mtl3d_perception.ros.node import PerceptionNode

    peer = rclpy.create_node("diag_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    got: list = []
    peer.create_subscription(cv.rclpy_types()["diagnostic_msgs/msg/DiagnosticArray"], topics.DIAGNOSTICS_TOPIC,
                             got.append, 10)
    nodes = [PerceptionNode("perception", namespace=ns, model=tiny_model(), context=ros_context) for ns in ("front", "rear")]
    try:
        for node in [peer, *nodes]:
            executor.add_node(node)
        deadline = time.monotonic() + 60
        while not all(n.diag_pub.get_subscription_count() for n in nodes):
            assert time.monotonic() < deadline
            executor.spin_once(timeout_sec=0.01)
        for node in nodes:
            node.publish_diagnostics()
        while len(got) < 2:
            assert time.monotonic() < deadline
            executor.spin_once(timeout_sec=0.01)
        seen = {(s.name, s.hardware_id) for array in got for s in array.status}
        for ns in ("front", "rear"):
            camera = f"/{ns}/{topics.IMAGE_INPUT}"
            assert {(f"{ns}/perception: pipeline", camera), (f"{ns}/perception: input image", camera),
                    (f"{ns}/perception: input camera_info", camera)} <= seen, seen
    finally:
        executor.shutdown()
        for node in [*nodes, peer]:
            node.destroy_node()


def _qos_node(ros_context, overrides: dict):
    from mtl3d_perception.ros.node import PerceptionNode

    return PerceptionNode(model=tiny_model(), context=ros_context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def _offered(node, topic: str, kind: str):
    infos = (node.get_publishers_info_by_topic if kind == "publisher" else node.get_subscriptions_info_by_topic)(topic)
    return [i.qos_profile for i in infos if i.node_name == node.get_name()]


def test_qos_overrides_set_each_input_and_output_on_its_own(ros_context, capfd):
    """QoS overrides, as image_pipeline's nodes offer them (rclpy QoSOverridingOptions): before, a
    `qos_overrides./mtl3d_perception/points.publisher.reliability` was accepted without a word and did nothing. Each
    override changes its own topic only (rclpy writes it into the profile it is given: a shared one would leak into
    the next topic), and one for a topic the node does not have is named like a misspelt parameter."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    points, depth = topics.output_topic("points"), topics.output_topic("depth/image")
    node = _qos_node(ros_context, {
        f"qos_overrides.{points}.publisher.reliability": "best_effort",
        f"qos_overrides.{depth}.publisher.durability": "transient_local",
        f"qos_overrides.{depth}.publisher.depth": 7,
        f"qos_overrides.{topics.IMAGE_TOPIC}.subscription.reliability": "reliable",
        "qos_overrides./mtl3d_perception/point.publisher.reliability": "best_effort",
        "qos_overrides./tf.subscription.depth": 50})
    try:
        (points_qos,), (depth_qos,) = _offered(node, points, "publisher"), _offered(node, depth, "publisher")
        assert points_qos.reliability == ReliabilityPolicy.BEST_EFFORT
        assert depth_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and depth_qos.reliability == ReliabilityPolicy.RELIABLE
        assert node.pubs["depth/image"].qos_profile.depth == 7
        for name in ("semantic/image", "normals/image", "depth/camera_info"):
            (other,) = _offered(node, topics.output_topic(name), "publisher")
            assert other.reliability == ReliabilityPolicy.RELIABLE and other.durability == DurabilityPolicy.VOLATILE
            assert node.pubs[name].qos_profile.depth == 2
        (image_qos,) = _offered(node, topics.IMAGE_TOPIC, "subscription")
        (info_qos,) = _offered(node, topics.CAMERA_INFO_TOPIC, "subscription")
        assert image_qos.reliability == ReliabilityPolicy.RELIABLE
        assert info_qos.reliability == ReliabilityPolicy.BEST_EFFORT
        assert node.get_parameter(f"qos_overrides.{points}.publisher.history").value == "keep_last"
        assert node.unknown_parameters == [
            f"'qos_overrides./mtl3d_perception/point.publisher.reliability' (did you mean the topic {points!r}?)",
            "'qos_overrides./tf.subscription.depth' (this node has no such topic: names are fully qualified, after "
            "remapping)"]
        assert "ignoring unknown parameter(s) 'qos_overrides./mtl3d_perception/point." in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_qos_mismatch_message_names_an_override_only_where_one_exists():
    """Reliability and durability have an override that serves every peer; a deadline has none here, and its 0 (not
    set) reads as infinite; peers that match are not counted."""
    from rclpy.duration import Duration
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from mtl3d_perception.ros import qos

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    volatile = QoSProfile(depth=1)
    out = qos.mismatch_message("/ns/x", "publisher", qos.entity_qos(qos.OUTPUT_QOS), [latched, volatile, latched])
    assert out == ("2 subscriber(s) of /ns/x request QoS this node's publisher does not offer (durability: it offers "
                   "volatile); they receive nothing; set the peer's durability to match, or this node's with the "
                   "start-up parameter qos_overrides./ns/x.publisher.durability: transient_local")
    assert qos.mismatch_message("/ns/x", "publisher", qos.OUTPUT_QOS, [volatile]) is None
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    reliable_input = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    assert qos.mismatch_message("/cam", "subscription", reliable_input, [best_effort]).endswith(
        "(reliability: it requests reliable); nothing of theirs is received; set the peer's reliability to match, or "
        "this node's with the start-up parameter qos_overrides./cam.subscription.reliability: best_effort")
    wants_deadline = QoSProfile(depth=1, deadline=Duration(seconds=0.1))
    out = qos.mismatch_message("/ns/x", "publisher", qos.OUTPUT_QOS, [wants_deadline])
    assert out.endswith("(deadline: it offers infinite); they receive nothing; set the peer's deadline to match"), out


def test_a_silent_best_effort_image_input_names_the_reliable_override(harness, monkeypatch):
    """A node trial: 640x480 rgb8 images from a reliable publisher never reached the default best-effort subscription
    (Fast DDS loses a whole large message with one fragment) and the silent-input warning named no cause. The QoS
    check now says so and names the override; a best-effort publisher (no override can help) or a reliable
    subscription gets no such hint."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from mtl3d_perception.ros import qos
    from mtl3d_perception.ros.input_monitor import PublisherInfo, silent_input_message

    topic = harness.node.image_sub.sub.topic_name
    monkeypatch.setattr(harness.node.inputs, "silent", lambda: ["image"])  # camera_info arrives
    hint = harness.node.input_qos_problem(topic)  # the harness publishes images reliably (rclpy's default)
    assert hint is not None and hint.endswith(f"set qos_overrides.{topic}.subscription.reliability: reliable")
    # a live trial: a paused camera (camera_info silent too) was told to change its QoS; large-message loss spares
    # the small camera_info, so with both silent the camera sends nothing
    monkeypatch.setattr(harness.node.inputs, "silent", lambda: ["image", "camera_info"])
    assert harness.node.input_qos_problem(topic) is None
    monkeypatch.setattr(harness.node.inputs, "silent", lambda: ["image"])
    assert harness.node.input_qos_problem(harness.node.info_sub.sub.topic_name) is None
    message = silent_input_message("image", topic, "sensor_msgs/msg/Image", 5.0, [PublisherInfo("sensor_msgs/msg/Image")],
                                   ["camera_info on /camera/color/camera_info (2.5 Hz)"], [], hint)
    assert "may be lost in transit" in message
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    assert qos.fragment_loss_hint("/cam", best_effort, [best_effort]) is None
    assert qos.fragment_loss_hint("/cam", reliable, [reliable]) is None


@pytest.mark.parametrize("entity", ["publisher", "subscription"])
def test_incompatible_qos_names_the_policy_and_the_override(ros_context, entity, capfd):
    """A peer whose QoS cannot match got nothing, and only rclpy's generic log line said so: the node names the
    topic, the policy, its own value and the override that serves every peer, in the log and in /diagnostics for as
    long as the peer is there (a review: rclpy's event counts every peer ever seen, so a departed one stayed)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    types = cv.rclpy_types()
    points = topics.output_topic("points")
    if entity == "publisher":  # a best-effort cloud (for Wi-Fi) and a viewer asking for reliable
        node = _qos_node(ros_context, {f"qos_overrides.{points}.publisher.reliability": "best_effort"})
        topic, fix = points, f"qos_overrides.{points}.publisher.reliability: reliable"
    else:  # a reliable image subscription and a best-effort camera
        node = _qos_node(ros_context, {f"qos_overrides.{topics.IMAGE_TOPIC}.subscription.reliability": "reliable"})
        topic, fix = topics.IMAGE_TOPIC, f"qos_overrides.{topics.IMAGE_TOPIC}.subscription.reliability: best_effort"
    peer = rclpy.create_node("qos_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    got: list = []
    deadline = time.monotonic() + 60

    def spin_until(condition):
        while not condition():
            assert time.monotonic() < deadline, node.qos_mismatches()
            executor.spin_once(timeout_sec=0.01)

    try:
        peer.create_subscription(types["diagnostic_msgs/msg/DiagnosticArray"], topics.DIAGNOSTICS_TOPIC, got.append, 10)
        executor.add_node(node)
        executor.add_node(peer)
        capfd.readouterr()
        for _ in range(2):  # a peer that comes, goes and comes back is one peer, never two
            if entity == "publisher":
                other = peer.create_subscription(types["sensor_msgs/msg/PointCloud2"], points, lambda m: None,
                                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            else:
                other = peer.create_publisher(types["sensor_msgs/msg/Image"], topics.IMAGE_TOPIC,
                                              QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
            spin_until(lambda: topic in node.qos_mismatches() and node.diag_pub.get_subscription_count())
            message = node.qos_mismatches()[topic]
            assert message.startswith("1 ") and "reliability" in message and fix in message, message
            got.clear()
            node.publish_diagnostics()
            spin_until(lambda: got)
            pipeline = got[-1].status[0]
            assert pipeline.level == bytes([WARN]) and fix in pipeline.message
            assert fix in diagnostic_values(got[-1])["qos_incompatible"]
            assert diagnostic_values(got[-1]).get("bad_input") == "0"  # a peer's QoS is not bad input
            (peer.destroy_subscription if entity == "publisher" else peer.destroy_publisher)(other)
            spin_until(lambda: topic not in node.qos_mismatches())
            got.clear()
            node.publish_diagnostics()
            spin_until(lambda: got)
            assert got[-1].status[0].level == bytes([OK]) or fix not in got[-1].status[0].message
            assert diagnostic_values(got[-1])["qos_incompatible"] == "none"
        spin_until(lambda: fix in capfd.readouterr().err)  # the event's log line, throttled
        # a viewer with default QoS matches every output: no mismatch (the graph's durations, infinite, are compared
        # with the node's as the graph reports them, not with rclpy's "not set")
        depth = topics.output_topic("depth/image")
        peer.create_subscription(types["sensor_msgs/msg/Image"], depth, lambda m: None, 10)
        spin_until(lambda: node.get_subscriptions_info_by_topic(depth))
        assert depth not in node.qos_mismatches()
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()


def test_publishers_of_name_a_latched_camera_info_and_a_wrong_type(harness):
    """The input warnings read each publisher's type and durability from the graph (ros.input_monitor): a latched
    driver, and a publisher of another type on the topic, which ROS never connects (a wrong remap)."""
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    harness.peer.create_publisher(harness.types["sensor_msgs/msg/CameraInfo"], topics.CAMERA_INFO_TOPIC, latched)
    other = rclpy.context.Context()  # DDS refuses two types on one topic within one participant (context)
    rclpy.init(context=other)
    wrong = rclpy.create_node("wrong_type_peer", context=other)
    try:
        wrong.create_publisher(harness.types["sensor_msgs/msg/Image"], topics.CAMERA_INFO_TOPIC, 1)
        harness.spin_until(lambda: len(harness.node.get_publishers_info_by_topic(topics.CAMERA_INFO_TOPIC)) == 3)
        publishers = harness.node.publishers_of(topics.CAMERA_INFO_TOPIC)
        assert sorted((p.msg_type, p.durability) for p in publishers) == [
            ("sensor_msgs/msg/CameraInfo", "transient_local"), ("sensor_msgs/msg/CameraInfo", "volatile"),
            ("sensor_msgs/msg/Image", "volatile")]
    finally:
        wrong.destroy_node()
        rclpy.try_shutdown(context=other)


def test_a_start_up_failure_is_logged_under_the_node_s_remapped_name(capfd):
    """An integrator trial: two instances (/front/perception, /rear/perception) logged a start-up failure as
    [mtl3d_perception], so one could not tell which had failed."""
    from mtl3d_perception.ros.node import main

    args = ["perception_node", "--ros-args", "-r", "__ns:=/front", "-r", "__node:=perception", "-p", "point_stride:=0"]
    assert main(args) == 1
    err = capfd.readouterr().err
    assert "[front.perception]: cannot start:" in err and "point_stride" in err, err
    assert "already registered" not in err  # one node, so its /rosout publisher stays (a review: a probe node broke it)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_node_starts_is_a_clean_shutdown(sig):
    """An integrator trial: Ctrl-C in the first seconds (the imports, before rclpy.init) printed a traceback and
    exited 130; SIGTERM exited 143. ``perception_node`` (``ros.node_main``) exits 0 without a traceback wherever the
    signal lands in the start (imports, model, warm-up)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(random.randint(20, 200)), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mtl3d_perception.ros.node_main", "--ros-args", "-p",
                             "model_path:=preset:tiny"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60  # until node_main's SIGTERM handler is in (SigCgt bit 15): torch still importing
    while not int(re.search(r"SigCgt:\s*([0-9a-f]+)", Path(f"/proc/{proc.pid}/status").read_text()).group(1), 16) \
            & (1 << (signal.SIGTERM - 1)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()


def test_main_reports_bad_ros_arguments_and_exits_1(capfd, tmp_path):
    """rcl refuses a missing --params-file inside ``rclpy.init``: one fatal line naming it, exit code 1 (it was a
    traceback out of ``main``)."""
    from mtl3d_perception.ros.node import main

    missing = tmp_path / "no_such_params.yaml"
    assert main(["perception_node", "--ros-args", "--params-file", str(missing)]) == 1
    err = capfd.readouterr().err
    assert "cannot start: bad ROS arguments" in err and str(missing) in err and "Traceback" not in err
    # a review: a params file under .../logs/directory/ was called a log-directory failure
    missing = tmp_path / "logs" / "directory" / "p.yaml"
    assert main(["perception_node", "--ros-args", "--params-file", str(missing)]) == 1
    err = capfd.readouterr().err
    assert "cannot start: bad ROS arguments" in err and "log directory" not in err.split(str(missing))[0]


def test_an_unwritable_log_directory_is_not_called_bad_arguments(tmp_path):
    """An install trial: with a read-only HOME the node said "bad ROS arguments" (rcl raises one RuntimeError for
    both); it names the log directory and ROS_LOG_DIR."""
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path / "file" / "log"), "ROS_DOMAIN_ID": str(random.randint(20, 200))}
    (tmp_path / "file").write_text("")  # a file where the log directory's parent should be
    proc = subprocess.run([sys.executable, "-m", "mtl3d_perception.ros.node_main"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot start: ROS cannot create its log directory" in proc.stderr and "set ROS_LOG_DIR" in proc.stderr
    assert "bad ROS arguments" not in proc.stderr and "Traceback" not in proc.stderr


def test_help_prints_usage_and_parameters_without_starting(tmp_path):
    """``perception_node --help`` started the node (a ROS node ignores arguments it does not know): it prints the
    usage and the parameter file, exits 0 and opens no ROS context (no log directory is written)."""
    from mtl3d_perception.ros.node_main import usage, wants_help
    from mtl3d_perception.runtime.config import yaml_text

    assert wants_help(["perception_node", "--help"]) and wants_help(["perception_node", "-h", "--ros-args"])
    assert not wants_help(["perception_node", "--ros-args", "-r", "--help:=x"])  # a ROS argument, rcl's to judge
    assert not wants_help(["perception_node"])
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path / "log"), "ROS_DOMAIN_ID": str(random.randint(20, 200))}
    proc = subprocess.run([sys.executable, "-m", "mtl3d_perception.ros.node_main", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == usage() + yaml_text() and "model_path" in proc.stdout
    assert "~/depth/confidence (sensor_msgs/Image)" in proc.stdout and "~/points (sensor_msgs/PointCloud2)" in proc.stdout
    assert not (tmp_path / "log").exists() and proc.stderr == ""


def _history_pose_x(node, stamp_ns: int) -> float:
    return next(f.T_world_cam[0, 3] for f in node.pipeline.history if f.stamp_ns == stamp_ns)


def test_time_jump_back_clears_tf_cache(ros_context, capfd):
    """A bag replayed again without /clock: after the jump no pose may interpolate between the two passes. The log
    says the TF cache was cleared and why (a live trial: under wall time nothing said so)."""
    h = Harness(ros_context, tiny_model(), tf_timeout_s=10.0)
    try:
        for i, t in enumerate((40 * S, 41 * S)):  # first pass, at x = 0
            h.send_tf(t, 0.0)
            h.send_frame(t, _image(10 + i))
            h.wait_outputs(i + 1)
        h.send_frame(36 * S, _image(12))  # second pass, at x = 5: time went back 5 s (inside the 10 s TF cache)
        h.spin_until(lambda: h.node.stats.counts["time_jumps"] == 1)
        assert not h.node.tf_buffer.can_transform(topics.WORLD_FRAME, CAM, Time(nanoseconds=40 * S))
        assert ("image stamps jumped back to 36.000 s: the TF cache, the synchroniser and the frame history are "
                "cleared (a bag restarted or played with --loop?") in capfd.readouterr().err
        h.send_tf(36 * S, 5.0)
        h.wait_outputs(3)
        h.send_tf(36 * S + S // 2, 5.0)
        h.send_frame(37 * S, _image(13))  # TF of the second pass reaches only 36.5 s: wait, never mix passes
        h.spin_until(lambda: h.node.stats.counts["received"] >= 4)
        for _ in range(20):
            h.executor.spin_once(timeout_sec=0.005)
        assert len(h.received["depth/image"]) == 3
        h.send_tf(38 * S, 5.0)
        h.wait_outputs(4)
        assert _history_pose_x(h.node, 37 * S) == pytest.approx(5.0)
        values = h.diag()
        assert values["time_jumps"] == "1" and values["tf_failures"] == "0"
    finally:
        h.close()


@pytest.mark.parametrize(("sec", "nanosec", "problem"), [(0, 0, "zero_stamp"), (-1, 0, "invalid_stamp"),
                                                         (40, 1_400_000_000, "invalid_stamp")],
                         ids=["zero", "negative", "nanosec_overflow"])
def test_an_unstamped_image_is_a_header_problem_not_a_time_jump(ros_context, sec, nanosec, problem):
    """Hostile-input trials: one image stamped 0 mid-stream was handled as a jump back in time (history and TF cache
    cleared, the next good frame lost its source view); one stamped -1 s (or 2100, which wraps the int32 negative)
    stopped the inference thread for good (rclpy's Time refuses negative times); nanosec 1.4e9 was read as 41.4 s, and
    the good frames after it were dropped as out of order. Each is an unstamped frame: single-view, nothing cleared."""
    h = Harness(ros_context, tiny_model(), tf_timeout_s=10.0)
    try:
        for i, t in enumerate((40 * S, 40 * S + S // 5)):
            h.send_tf(t, 0.2 * i)
            h.send_frame(t, _image(10 + i))
            h.wait_outputs(i + 1)
        header = cv.make_header(h.types, 0, CAM)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        h.image_pub.publish(cv.make_image(h.types, header, _image(12), "rgb8"))
        h.info_pub.publish(cv.make_camera_info(h.types, header, K, W, H))
        h.wait_outputs(3)
        assert cv.stamp_to_ns(h.received["depth/image"][-1].header.stamp) == 0  # outputs: unstamped
        assert h.diag()["last_pair_reason"] == problem
        t = 40 * S + 2 * S // 5
        h.send_tf(t, 0.4)
        h.send_frame(t, _image(13))
        h.wait_outputs(4)
        values = h.diag()
        bad_info = "0" if problem == "zero_stamp" else "1"  # the camera_info stamped as badly is counted too
        assert values["time_jumps"] == "0" and values["internal_errors"] == "0"
        assert int(values["header_problems"]) == 1 + int(bad_info)
        assert values["dropped_frames"] == "0"
        assert values["last_pair_reason"] == "baseline"  # the good frame after it paired with the history
        assert h.node.tf_buffer.can_transform(topics.WORLD_FRAME, CAM, Time(nanoseconds=40 * S))
    finally:
        h.close()


def test_camera_info_slower_than_images_is_named_from_counts_over_one_window(ros_context):
    """camera_info for one image in four: the advice compares the inputs' messages over one common window (rates over
    each input's own first-to-last span had told equal bursts apart by their jitter: a flaky 641 vs 819 Hz)."""
    harness = Harness(ros_context, tiny_model(), diagnostics_period_s=60.0)  # no timer check mid-test
    try:
        counts = harness.node.stats.counts
        n = harness.node.sync_queue_size + 6
        for i in range(n):
            harness.send_frame(60 * S + i * S // 10, _image(40), with_info=i % 4 == 3)  # the last one has its own
            harness.spin_until(lambda i=i: counts["images"] > i and counts["camera_infos"] == (i + 1) // 4)
        values = harness.diag()
        assert values["sync_warnings"] == "1", values
        seen = f"{n // 4} camera_info for {n} images: each image needs its own camera_info"
        assert seen in values["last_problem"], values["last_problem"]
    finally:
        harness.close()


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired"])
def test_one_image_stamped_far_ahead_does_not_clear_history_or_tf(ros_context, paired):
    """A re-check trial: one frame stamped in 2037 made the next normal frame a time jump back (history and TF cache
    cleared) and every later one out of order. Now it is a header problem, said once whether or not the bad image
    paired with a camera_info (a review: unpaired, it was dropped without a word); the stream goes on two-view."""
    h = Harness(ros_context, tiny_model(), tf_timeout_s=0.05)
    try:
        h.send_moving([40 * S, 40 * S + S // 5], _image(10))
        h.send_frame(2_129_000_000 * S, _image(12), with_info=paired)  # no TF there: single-view after tf_timeout_s
        h.spin_until(lambda: h.node.stats.counts["images"] == 3)
        if paired:
            h.wait_outputs(3)
        t = 40 * S + 2 * S // 5
        h.send_tf(t, 0.4)
        h.send_frame(t, _image(13))
        h.wait_outputs(3 + paired)
        values = h.diag()
        assert values["time_jumps"] == "0" and values["dropped_frames"] == "0" and values["internal_errors"] == "0"
        assert values["header_problems"] == "1" and "a bad stamp, not a time jump" in values["last_problem"]
        assert values["last_pair_reason"] == "baseline"  # paired with the frames before the bad stamp
        assert h.node.tf_buffer.can_transform(topics.WORLD_FRAME, CAM, Time(nanoseconds=40 * S))
        assert h.node.pipeline.history.stamps == [40 * S, 40 * S + S // 5, t]
        assert not any(2_129_000_000 * S in queue for queue in h.node.sync.queues)  # nor left in the synchroniser
    finally:
        h.close()


def test_time_jump_back_unblocks_the_synchroniser(ros_context):
    """Leftover images of the first pass fill message_filters' latest-only queue; the real ApproximateTimeSynchronizer
    would then evict every new (older-stamped) image on arrival. The node clears its queues at the jump."""
    h = Harness(ros_context, tiny_model())
    try:
        h.node.sync._sync.jump = None  # behave like the real message_filters: no clearing of its own
        h.send_frame(20 * S, _image(20))
        h.wait_outputs(1)
        for n, t in enumerate((21 * S, 22 * S)):  # images whose camera_info never comes
            h.send_frame(t, _image(21), with_info=False)
            h.spin_until(lambda n=n: h.node.stats.counts["images"] >= n + 2)  # depth-1 input queue: one at a time
        assert sorted(h.node.sync.queues[0]) == [21 * S, 22 * S]
        h.send_frame(5 * S, _image(22))
        h.spin_until(lambda: len(h.received["depth/image"]) >= 2, timeout_s=10.0)
        assert cv.stamp_to_ns(h.received["depth/image"][-1].header.stamp) == 5 * S
        assert h.diag()["time_jumps"] == "1"
    finally:
        h.close()


def test_clock_jump_back_clears_tf_cache(ros_context):
    """use_sim_time and /clock going back (``ros2 bag play --loop --clock``): the TF buffer follows the node's clock."""
    h = Harness(ros_context, tiny_model(), use_sim_time=True)
    try:
        clock = h.node.get_clock()
        clock.set_ros_time_override(Time(seconds=100, clock_type=ClockType.ROS_TIME))
        h.send_tf(99 * S, 0.0)
        h.send_tf(100 * S, 0.1)
        assert h.node.tf_buffer.can_transform(topics.WORLD_FRAME, CAM, Time(nanoseconds=100 * S))
        clock.set_ros_time_override(Time(seconds=50, clock_type=ClockType.ROS_TIME))
        assert not h.node.tf_buffer.can_transform(topics.WORLD_FRAME, CAM, Time(nanoseconds=100 * S))
        assert h.node.tf_buffer.can_transform(topics.BASE_FRAME, CAM, Time())  # static transforms stay
    finally:
        h.close()


def test_small_step_back_drops_the_frame_only(harness):
    """A frame 0.2 s older than the last one is stale (dropped), not a time jump that forgets the history."""
    harness.send_tf(50 * S, 0.0)
    harness.send_tf(51 * S, 0.5)
    harness.send_frame(50 * S, _image(30))
    harness.wait_outputs(1)
    harness.send_frame(50 * S - S // 5, _image(31))
    harness.spin_until(lambda: harness.node.stats.counts["received"] >= 2)
    harness.send_frame(51 * S, _image(32))
    harness.wait_outputs(2)
    values = harness.diag()
    assert values["time_jumps"] == "0" and values["bad_input.out_of_order"] == "1" and values["dropped_frames"] == "1"
    assert values["last_pair_reason"] == "baseline"  # paired with 50 s: the history survived


def test_camera_inputs_yuyv_binning_and_empty_frame_id(ros_context):
    """A webcam's YUYV image, 2x2-binned camera_info and an empty frame_id: processed at once (no TF wait),
    single-view with reason empty_frame_id; /diagnostics names the image kind (issue 12)."""
    h = Harness(ros_context, tiny_model(), tf_timeout_s=10.0)
    try:
        assert h.node.get_parameter("sync_queue_size").value == 10
        header = cv.make_header(h.types, 70 * S, "")
        yuyv = np.zeros((H // 2, W // 2, 2), np.uint8)
        yuyv[..., 0], yuyv[:, 0::2, 1], yuyv[:, 1::2, 1] = 120, 100, 160
        h.image_pub.publish(cv.make_image(h.types, header, yuyv, "yuv422_yuy2"))
        info = cv.make_camera_info(h.types, header, K, W, H)
        info.binning_x = info.binning_y = 2
        h.info_pub.publish(info)
        h.wait_outputs(1)
        assert (h.received["semantic/image_color"][0].width, h.received["semantic/image_color"][0].height) == (W, H)
        values = h.diag()
        assert values["processed"] == "1" and values["last_pair_reason"] == "empty_frame_id"
        assert values["camera.image_kind"] == "image_raw" and "binning 2x2" in values["camera.camera_info"]
        assert values.get("bad_input.encoding", "0") == "0" and values.get("tf_failures", "0") == "0"
        # a later camera_info without binning: /diagnostics says what is applied now (it kept the first one's)
        header = cv.make_header(h.types, 71 * S, "")
        h.image_pub.publish(cv.make_image(h.types, header, np.full((H, W, 3), 90, np.uint8), "rgb8"))
        h.info_pub.publish(cv.make_camera_info(h.types, header, K, W, H))
        h.wait_outputs(2)
        assert h.diag()["camera.camera_info"] == (f"image_raw: no distortion, intrinsics from K; {W}x{H} fx "
                                                  f"{K[0, 0]:.1f} fy {K[1, 1]:.1f} cx {K[0, 2]:.1f} cy {K[1, 2]:.1f}")
    finally:
        h.close()


def test_images_without_camera_info_warn(harness):
    """The commonest "node publishes nothing" report: camera_info missing or never within sync_slop_s."""
    harness.node.stats.rate_window_s = 0.2
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < 0.5:
        harness.send_frame(60 * S + i * S // 10, _image(40), with_info=False)
        harness.executor.spin_once(timeout_sec=0.02)
        i += 1
    harness.diag()
    status = harness.diagnostics[-1].status[0]
    assert status.level == b"\x01" and "none pairs with a camera_info" in status.message
    values = diagnostic_values(harness.diagnostics[-1])
    assert int(values["images"]) >= 2 and values["camera_infos"] == "0" and values["received"] == "0"


@pytest.mark.parametrize(("info_stamp", "advice"), [
    (lambda t: 0, "camera_info is unstamped (header stamp 0): the camera driver must stamp image and camera_info"),
    (lambda t: 1000 * S, "the newest camera_info is stamped +938.800 s from the newest image: the driver stamps them "
                         "on different clocks"),  # a constant stamp
    (lambda t: t + S // 20, "the newest camera_info is stamped +0.050 s from the newest image: raise sync_slop_s above "
                            "0.050 s"),
], ids=["zero", "constant", "offset"])
def test_unpaired_images_get_advice_that_can_fix_them(harness, info_stamp, advice):
    """A hostile-input trial: camera_info stamped 0 (or always the same stamp) paired with no image, and the warning
    advised raising sync_queue_size or sync_slop_s, neither of which can help; the advice now follows the stamps."""
    counts = harness.node.stats.counts
    for i in range(harness.node.sync_queue_size + 3):
        t = 60 * S + i * S // 10
        info = cv.make_camera_info(harness.types, cv.make_header(harness.types, info_stamp(t), CAM), K, W, H)
        harness.info_pub.publish(info)
        harness.spin_until(lambda i=i: counts["camera_infos"] > i)
        harness.send_frame(t, _image(40), with_info=False)
        harness.spin_until(lambda i=i: counts["images"] > i)
    values = harness.diag()
    assert values["sync_warnings"] == "1" and values["received"] == "0"
    assert advice in values["last_problem"], values["last_problem"]
    if "raise" not in advice:
        assert "no setting can pair" in values["last_problem"]


def test_images_without_camera_info_warn_promptly(harness, capfd):
    """Within about a second of images without camera_info, a WARN log line naming both topics."""
    start = time.monotonic()
    i = 0
    while not harness.node.inputs.info_missing():
        assert time.monotonic() - start < 5.0, "no camera_info warning within 5 s"
        harness.send_frame(65 * S + i * S // 10, _image(41), with_info=False)
        harness.executor.spin_once(timeout_sec=0.05)
        i += 1
    assert time.monotonic() - start < 3.0
    harness.node.check_inputs()
    err = capfd.readouterr().err
    assert "WARN" in err and f"images arrive on {topics.IMAGE_TOPIC} but no camera_info on {topics.CAMERA_INFO_TOPIC}" in err


def test_silent_image_topic_is_logged_and_in_diagnostics(ros_context, capfd):
    """A mistyped image_topic: start-up names the resolved inputs; then a WARN names the silent topic and what
    does arrive, and its /diagnostics status is ERROR ("No events recorded", diagnostic_updater's FrequencyStatus)."""
    from mtl3d_perception.ros.node import PerceptionNode

    node = PerceptionNode(model=tiny_model(), context=ros_context,
                          parameter_overrides=[Parameter("image_topic", value="camera/colour/image_raw")])
    peer = rclpy.create_node("test_silent_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(peer)
    types = cv.rclpy_types()
    diags = []
    peer.create_subscription(types["diagnostic_msgs/msg/DiagnosticArray"], topics.DIAGNOSTICS_TOPIC, diags.append, 10)
    # the camera publishes its image where the user meant it, and its camera_info where the node looks for it
    image_pub = peer.create_publisher(types["sensor_msgs/msg/Image"], topics.IMAGE_TOPIC, 10)
    info_pub = peer.create_publisher(types["sensor_msgs/msg/CameraInfo"], "/camera/colour/camera_info", 10)
    # a re-check: a topic nothing publishes (a viewer's subscription) was offered as the image topic to set
    peer.create_subscription(types["sensor_msgs/msg/Image"], "/viewer/only/image", lambda msg: None, 1)
    try:
        err = capfd.readouterr().err
        assert ("inputs: image /camera/colour/image_raw (sensor_msgs/msg/Image), camera_info /camera/colour/camera_info"
                in err)  # relative names resolved; camera_info defaults to the image's sibling
        node.inputs.silent_after_s = 0.3
        deadline = time.monotonic() + 20
        i = 0
        while not (node.inputs.silent() == ["image"] and node.stats.counts["camera_infos"] >= 2):
            assert time.monotonic() < deadline
            header = cv.make_header(types, 90 * S + i, CAM)
            image_pub.publish(cv.make_image(types, header, _image(70), "rgb8"))
            info_pub.publish(cv.make_camera_info(types, header, K, W, H))
            executor.spin_once(timeout_sec=0.05)
            i += 1
        node.check_inputs()
        err = capfd.readouterr().err
        assert re.search(r"WARN.*no sensor_msgs/msg/Image on /camera/colour/image_raw \(image\) for \d+ s; "
                         r"0 publisher\(s\); arriving: camera_info on /camera/colour/camera_info \([0-9.]+ Hz\); "
                         r"other sensor_msgs/msg/Image topics in the graph: /camera/color/image_raw "
                         r"\(set image_topic / camera_info_topic or remap\)", err), err  # not its own outputs
        node.publish_diagnostics()
        deadline = time.monotonic() + 20
        while not diags:
            assert time.monotonic() < deadline
            executor.spin_once(timeout_sec=0.05)
        by_name = {status.name: status for status in diags[-1].status}
        image = by_name[f"{topics.NODE_NAME}: input image"]
        assert image.level == b"\x02" and image.message == "No events recorded"
        assert diagnostic_values_of(image)["topic"] == "/camera/colour/image_raw"
        assert by_name[f"{topics.NODE_NAME}: input camera_info"].level == b"\x00"
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()


def diagnostic_values_of(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_destroy_joins_the_worker_and_releases_the_model(ros_context):
    h = Harness(ros_context, tiny_model())
    h.send_tf(70 * S, 0.0)
    h.send_frame(70 * S, _image(50))
    h.wait_outputs(1)
    h.close()
    assert not h.node._worker.is_alive() and h.node.pipeline.model is None and not h.node.pipeline._features


def test_shutdown_mid_frame_stops_the_worker_quietly(capfd):
    """A user trial: Ctrl-C while frames were processed printed two tracebacks ("publisher's context is invalid",
    then the error log's own ValueError): rclpy shuts the context down before main() destroys the node, so the
    worker published on a dead context. It now stops when the context does, without an internal error."""
    context = rclpy.context.Context()
    rclpy.init(context=context)
    h = Harness(context, tiny_model())
    publish = h.node.publish_products

    def shut_down_then_publish(products, outputs):
        rclpy.try_shutdown(context=context)  # what SIGINT does while the network runs
        publish(products, outputs)

    h.node.publish_products = shut_down_then_publish
    h.send_tf(80 * S, 0.0)
    h.send_frame(80 * S, _image(60))
    h.spin_until(lambda: not context.ok() or h.node.stats.counts["received"] >= 1)
    h.node._worker.join(timeout=60.0)
    assert not h.node._worker.is_alive()
    assert h.node.stats.counts["internal_errors"] == 0
    h.node.destroy_node()
    h.peer.destroy_node()
    err = capfd.readouterr().err
    assert "Exception in thread" not in err and "Traceback" not in err


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _level(stats: RuntimeStats) -> tuple[int, str]:
    level, message, _ = status_fields(stats.snapshot(), {})
    return level, message


def test_mostly_single_view_says_what_the_reason_means():
    """A Python-API trial: poses in millimetres made every frame pose_jump, and nothing said what that meant."""
    clock = _Clock()
    stats = RuntimeStats(rate_window_s=5.0, warn_window_s=10.0, clock=clock)
    for _ in range(12):
        clock.t += 0.1
        stats.frame_done({"total": 0.01}, single_view=True, pair_reason="pose_jump")
    level, message = _level(stats)
    assert level == WARN and message.endswith(
        "last: pose_jump: the camera moved faster than max_speed_mps / max_angular_speed_dps since every earlier "
        "frame, or its pair's geometry leapt from the camera's recent pairs (check_pose_consistency): odometry or "
        "localisation jumped, or the poses are not in metres (see the pose_jump warning))")


def test_status_levels():
    """OK / WARN / ERROR chosen by what is wrong: the node's own failure is ERROR, bad input or poses WARN."""
    clock = _Clock()
    stats = RuntimeStats(rate_window_s=5.0, warn_window_s=10.0, clock=clock)
    assert _level(stats) == (OK, "waiting for synchronised image + camera_info")
    clock.t += 4.0
    assert _level(stats)[0] == OK  # a camera may take a few seconds to start
    clock.t += 16.0  # no camera at all: an integrator trial read OK after 20 s (only the inputs said ERROR)
    assert _level(stats) == (WARN, "waiting for synchronised image + camera_info; no frame processed in the 20 s "
                                   "since start-up")

    def frames(n, *, single_view=False, reason="baseline"):
        for _ in range(n):
            clock.t += 0.1
            stats.frame_done({"total": 0.01}, single_view=single_view, pair_reason=reason)

    frames(1, single_view=True, reason="no_history")  # the first frame has no source by design
    frames(9)
    frames(1, single_view=True, reason="pose_jump")  # an isolated fallback: counted, not a warning
    assert _level(stats)[0] == OK
    frames(12, single_view=True, reason="no_pose")
    level, message = _level(stats)
    assert level == WARN and "mostly single-view" in message and "no_pose" in message
    clock.t += 4.0
    frames(20)
    assert _level(stats)[0] == OK
    frames(30, single_view=True, reason="no_parallax")  # standing still or turning in place: single view by design
    assert _level(stats)[0] == OK
    clock.t += 11.0
    frames(30, single_view=True, reason="single_view_mode")  # a node run with single_view: never pairs, by choice
    assert _level(stats)[0] == OK
    clock.t += 11.0
    frames(5)

    stats.problem("encoding", "16UC1 is not a colour image")
    assert _level(stats)[0] == WARN
    stats.problem("internal", "RuntimeError: CUDA out of memory", counter="internal_errors", error=True)
    level, message = _level(stats)
    assert level == ERROR and message.index("CUDA out of memory") < message.index("16UC1")
    clock.t += 11.0
    frames(3)
    assert _level(stats)[0] == OK
    clock.t += 6.0
    level, message = _level(stats)
    assert level == WARN and "no frame processed for 6.0 s" in message
    # no frame in the window: the ratio is unknown, not 0 (a user trial read 0.00 beside 4 fallbacks of 4 frames)
    clock.t += 5.0  # 11 s after the last frame: past warn_window_s, the ratio's window
    values = dict(status_fields(stats.snapshot(), {})[2])
    assert values["single_view_ratio"] == "n/a" and values["processed"] == "111"


def test_frames_that_are_all_refused_are_not_waiting():
    """A node trial: an uncalibrated camera (all-zero camera_info) had every synchronised frame refused, and
    /diagnostics began "waiting for synchronised image + camera_info"."""
    clock = _Clock()
    stats = RuntimeStats(rate_window_s=5.0, warn_window_s=10.0, clock=clock)
    for _ in range(3):
        clock.t += 0.1
        stats.count("received")
        stats.count("dropped")
        stats.problem("intrinsics", "camera_info K and P are all zero: the camera is uncalibrated")
    level, message = _level(stats)
    assert level == WARN and message == ("every synchronised frame refused as bad input (3 so far); intrinsics: "
                                         "camera_info K and P are all zero: the camera is uncalibrated")


def test_status_sync_stalled_after_the_rate_window():
    clock = _Clock()
    stats = RuntimeStats(rate_window_s=5.0, clock=clock)
    stats.count("images")
    assert _level(stats)[0] == OK  # just started: camera_info may be a moment behind
    for _ in range(6):
        clock.t += 1.0
        stats.count("images")
    level, message = _level(stats)
    assert level == WARN and "none pairs with a camera_info" in message
    stats.count("received")
    stats.frame_done({"total": 0.01}, single_view=True, pair_reason="no_history")
    assert _level(stats)[0] == OK
    clock.t += 30.0  # the camera stopped: nothing to pair, not a sync problem
    assert "none pairs" not in _level(stats)[1]


@pytest.mark.slow
def test_node_as_separate_process(ros_context, tmp_path):
    """The console script: load a checkpoint file, process frames published from this process."""
    exe = shutil.which("perception_node", path=os.path.dirname(sys.executable))
    assert exe, "perception_node is not installed in the venv (pip install -e .)"
    ckpt = tmp_path / "tiny64.safetensors"
    save_checkpoint(tiny_model(), ckpt)
    proc = subprocess.Popen(
        [exe, "--ros-args", "-p", f"model_path:={ckpt}", "-p", "tf_timeout_s:=0.0", "-p", "num_threads:=1",
         "-p", "diagnostics_period_s:=0.2"],
        env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peer = rclpy.create_node("test_process_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(peer)
    types = cv.rclpy_types()
    got, diags = [], []
    peer.create_subscription(types["sensor_msgs/msg/Image"], topics.output_topic("depth/image"), got.append, 10)
    peer.create_subscription(types["diagnostic_msgs/msg/DiagnosticArray"], topics.DIAGNOSTICS_TOPIC, diags.append, 10)
    image_pub = peer.create_publisher(types["sensor_msgs/msg/Image"], topics.IMAGE_TOPIC, 10)
    info_pub = peer.create_publisher(types["sensor_msgs/msg/CameraInfo"], topics.CAMERA_INFO_TOPIC, 10)
    try:
        deadline = time.monotonic() + 60
        stamp = 5 * S
        while not got:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no depth from the node process"
            if image_pub.get_subscription_count() and info_pub.get_subscription_count():
                header = cv.make_header(types, stamp, CAM)
                image_pub.publish(cv.make_image(types, header, _image(3), "rgb8"))
                info_pub.publish(cv.make_camera_info(types, header, K, W, H))
            executor.spin_once(timeout_sec=0.2)
        assert cv.stamp_to_ns(got[0].header.stamp) == stamp and got[0].encoding == "32FC1"
        while not any(diagnostic_values(d).get("processed", "0") != "0" for d in diags):
            assert time.monotonic() < deadline, "no diagnostics from the node process"
            executor.spin_once(timeout_sec=0.2)
        assert str(ckpt) in diagnostic_values(diags[-1])["model"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        executor.shutdown()
        peer.destroy_node()
    assert proc.returncode in (0, -15), out


def _spin_interrupted_by_signal(context):
    """What rclpy's executor raises when SIGTERM shuts the context down while it builds its wait set."""
    def spin(node):
        context.shutdown()
        raise RuntimeError("failed to initialize wait set: the given context is not valid, either rcl_init() was "
                           "not called or rcl_shutdown() was called., at /project/src/rcl/wait.c:130")
    return spin


def test_spin_until_shutdown_treats_the_wait_set_race_as_a_shutdown(monkeypatch):
    """CI stop 20: SIGTERM between the executor's ok() check and its wait set made the node exit 1 ("cannot start")."""
    from mtl3d_perception.ros import node as node_module

    context = rclpy.context.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("test_spin_race", context=context)
    try:
        monkeypatch.setattr(node_module.rclpy, "spin", _spin_interrupted_by_signal(context))
        node_module.spin_until_shutdown(peer)  # returns: the shutdown was requested
        assert not context.ok()
    finally:
        peer.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_callback_that_raises_does_not_stop_the_node(monkeypatch):
    """A second hostile-input trial: the real message_filters builds an rclpy Time from each header and raises
    ValueError for a negative stamp inside the executor, which ended rclpy.spin and with it the node. A callback's
    error is handed on and spinning goes on; a RuntimeError of the executor still ends it (the next test)."""
    from std_msgs.msg import String

    from mtl3d_perception.ros import node as node_module

    context = rclpy.context.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("test_spin_callback_error", context=context)
    received, errors = [], []

    def callback(msg):
        received.append(msg.data)
        if msg.data == "bad":
            raise ValueError("Seconds value must not be negative")
        if msg.data == "stop":
            context.shutdown()

    peer.create_subscription(String, "/spin_test", callback, 10)
    pub = peer.create_publisher(String, "/spin_test", 10)
    executor = SingleThreadedExecutor(context=context)
    try:
        def spin(node):  # rclpy.spin on this test's own context
            executor.add_node(node)
            while context.ok():
                executor.spin_once(timeout_sec=0.05)
                if not received:
                    pub.publish(String(data="bad"))
                elif received == ["bad"]:
                    pub.publish(String(data="stop"))

        monkeypatch.setattr(node_module.rclpy, "spin", spin)
        node_module.spin_until_shutdown(peer, errors.append)
        assert received == ["bad", "stop"] and [str(e) for e in errors] == ["Seconds value must not be negative"]
    finally:
        executor.shutdown()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_camera_info_stamped_with_no_time_is_counted_not_silent(harness):
    """A re-check: a camera_info stamped sec -1 beside a good image dropped that image with nothing counted (status
    OK, header_problems 0)."""
    header = cv.make_header(harness.types, 5 * S, CAM)
    bad = cv.make_header(harness.types, 0, CAM)
    bad.stamp.sec = -1
    harness.image_pub.publish(cv.make_image(harness.types, header, _image(3), "rgb8"))
    harness.info_pub.publish(cv.make_camera_info(harness.types, bad, K, W, H))
    harness.spin_until(lambda: harness.node.stats.counts["camera_infos"] == 1)
    values = harness.diag()
    assert values["header_problems"] == "1" and "a camera_info header stamp is not a time" in values["last_problem"]


def test_a_negative_stamp_refused_by_message_filters_is_a_header_problem(harness):
    """A review: with the real message_filters a negative image stamp raises ValueError (Time.from_msg) in the
    executor; the node counted that as its own internal error. on_image has seen the stamp, so it is bad input."""
    header = cv.make_header(harness.types, 0, CAM)
    header.stamp.sec = -1
    harness.node.on_image(cv.make_image(harness.types, header, _image(1), "rgb8"))
    harness.node.callback_failed(ValueError("Seconds value must not be negative"))
    values = harness.diag()
    assert values["header_problems"] == "1" and values["internal_errors"] == "0"
    assert "message_filters cannot pair it" in values["last_problem"]
    harness.node.on_image(cv.make_image(harness.types, cv.make_header(harness.types, 5 * S, CAM), _image(1), "rgb8"))
    harness.node.callback_failed(ValueError("something else"))  # a valid image: the node's own failure
    assert harness.diag()["internal_errors"] == "1"


def test_spin_until_shutdown_raises_executor_errors_while_the_context_is_valid(monkeypatch):
    from mtl3d_perception.ros import node as node_module

    context = rclpy.context.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("test_spin_failure", context=context)

    def spin(node):
        raise RuntimeError("wait set failure with a valid context")

    try:
        monkeypatch.setattr(node_module.rclpy, "spin", spin)
        with pytest.raises(RuntimeError, match="valid context"):
            node_module.spin_until_shutdown(peer)
    finally:
        peer.destroy_node()
        rclpy.try_shutdown(context=context)


def test_main_reports_an_executor_failure_as_stopped_not_cannot_start(monkeypatch, capfd):
    """An executor error while the context is valid ends ``main`` with exit 1 and 'stopped: ...', not 'cannot
    start' (the node had started)."""
    from mtl3d_perception.ros import node as node_module

    def spin(node):
        raise RuntimeError("wait set failure with a valid context")

    monkeypatch.setattr(node_module.rclpy, "spin", spin)
    assert node_module.main(["perception_node", "--ros-args", "-p", "model_path:=preset:tiny"]) == 1
    err = capfd.readouterr().err
    assert "stopped: RuntimeError: wait set failure with a valid context" in err and "cannot start" not in err


def test_a_slow_decoder_keeps_the_newest_messages(harness):
    """A node trial: 1080p JPEG at 30 Hz outran the decoder, whose FIFO of 30 dropped the *newest* messages, so the
    frames it did decode were ~1 s old (p50 0.8 s end to end). Now at most DECODE_BACKLOG wait and the oldest go."""
    from mtl3d_perception.ros.node import DECODE_BACKLOG

    node = harness.node
    release, decoded = threading.Event(), []
    real_decode = node._decode

    def slow_decode(image, info, arrived_ns, generation):
        decoded.append(cv.stamp_to_ns(image.header.stamp))
        release.wait(30)
        real_decode(image, info, arrived_ns, generation)

    node._decode = slow_decode
    stamps = [20 * S + i * S // 30 for i in range(6)]
    for stamp in stamps:
        header = cv.make_header(harness.types, stamp, CAM)
        node.on_frame(cv.make_image(harness.types, header, _image(1), "rgb8"),
                      cv.make_camera_info(harness.types, header, K, W, H))
        if stamp == stamps[0]:
            harness.spin_until(lambda: decoded)  # the first is being decoded (blocked) while the rest arrive
    release.set()
    harness.spin_until(lambda: len(decoded) == 1 + DECODE_BACKLOG)
    time.sleep(0.2)
    assert decoded == [stamps[0], *stamps[-DECODE_BACKLOG:]]  # the newest kept, in order
    # the decoder's drops are counted (the driver may drop a decoded frame too: it runs the newest waiting frame)
    assert node.stats.counts["dropped"] >= len(stamps) - 1 - DECODE_BACKLOG


def test_a_frame_id_with_a_leading_slash_is_looked_up_without_it(harness):
    """A node trial: a ROS 1 driver's '/camera_optical' frame_id made every TF lookup fail (tf2 refuses the slash in
    lookups, though it strips it from transforms), so each frame waited tf_timeout_s, ran single-view and was told to
    raise tf_timeout_s. Now the frame is looked up and published under the bare name, with one header warning."""
    stamps = [30 * S, 30 * S + S // 10]
    for i, stamp in enumerate(stamps):
        harness.send_tf(stamp, 0.2 * i)
        header = cv.make_header(harness.types, stamp, "/" + CAM)
        harness.image_pub.publish(cv.make_image(harness.types, header, _image(5 + i), "rgb8"))
        harness.info_pub.publish(cv.make_camera_info(harness.types, header, K, W, H))
        harness.wait_outputs(i + 1)
    values = harness.diag()
    assert values["last_pair_reason"] == "baseline" and values["tf_failures"] == "0"  # posed: two-view
    assert values["header_problems"] == "2" and "set the camera driver's frame_id to" in values["last_problem"]
    assert {m.header.frame_id for m in harness.received["depth/image"]} == {CAM}


def test_use_sim_time_without_clock_is_reported_on_steady_time(ros_context):
    """A node trial: use_sim_time true and nothing publishing /clock left the node silent, no /diagnostics and no
    warning (its timers ran on the stopped ROS clock). They run on steady time now, and the missing /clock is named."""
    from rclpy.clock import ClockType

    h = Harness(ros_context, tiny_model(), use_sim_time=True)
    try:
        node = h.node
        assert node.diag_timer.clock.clock_type == ClockType.STEADY_TIME
        assert node.input_timer.clock.clock_type == ClockType.STEADY_TIME
        assert node.clock_problem() is None  # within the start-up grace
        node.inputs.started_at -= 10.0
        message = node.clock_problem()
        assert message is not None and "no /clock has arrived in 1" in message and "--clock" in message
        # a live trial: it said "TF waits cannot end on time", but they run on steady time and frames go on
        assert "TF waits cannot" not in message and "frames, TF waits and outputs follow the images' stamps" in message
        node.check_inputs()
        assert h.diag()["last_problem"].startswith("clock: use_sim_time is true but no /clock")
        assert "no /clock" in h.diagnostics[-1].status[0].message
        # a node trial: the status kept saying so for 10 s after /clock came; it clears at the next input check
        from rosgraph_msgs.msg import Clock

        clock_pub = h.peer.create_publisher(Clock, "/clock", 10)
        h.spin_until(lambda: (clock_pub.publish(Clock(clock=Time(seconds=5).to_msg())) or
                              node.get_clock().now().nanoseconds > 0))
        node.check_inputs()
        h.diag()
        assert "no /clock" not in h.diagnostics[-1].status[0].message
    finally:
        h.close()


def test_a_second_sigint_while_the_node_shuts_down_is_logged_not_raised():
    """A node trial: Ctrl-C twice (the terminal's, then ros2 launch's own) while frames streamed raised
    KeyboardInterrupt inside destroy_node (the worker's join): a traceback, the model never released, an abort. The
    second signal, landing while destroy_node runs, is logged; the model is released and the exit is 0. In a
    subprocess: the executable keeps its handlers to the end, which in this process would replace rclpy's."""
    script = textwrap.dedent("""
        import os, signal, threading, time
        from mtl3d_perception.ros import node as n, node_main
        destroy, spin = n.PerceptionNode.destroy_node, n.spin_until_shutdown

        def destroy_with_a_second_sigint(self):
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while shutting down
            time.sleep(0.2)  # Python runs the handler between bytecodes: within this sleep
            print("loaded", self.pipeline.model is not None, flush=True)
            destroy(self)
            print("released", self.pipeline.model is None, flush=True)

        def spin_then_ctrl_c(node, on_callback_error=None):  # the first Ctrl-C, once the node spins
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            spin(node, on_callback_error)

        n.PerceptionNode.destroy_node, n.spin_until_shutdown = destroy_with_a_second_sigint, spin_then_ctrl_c
        raise SystemExit(node_main.main(["perception_node", "--ros-args", "-p", "model_path:=preset:tiny"]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(random.randint(20, 200)), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "loaded True" in done.stdout and "released True" in done.stdout, done.stdout
    assert "SIGINT received while shutting down" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_signal_swallowed_by_an_import_still_stops_the_start():
    """A loaded CI run: Ctrl-C while the node's modules were importing, and the node started anyway (its
    KeyboardInterrupt was lost inside an import). ``node_main`` remembers the request and returns 0 before starting.
    In a subprocess: setting signal handlers here would replace rclpy's in this process."""
    script = textwrap.dedent("""
        import signal, sys, types
        from mtl3d_perception.ros import node_main
        try:
            node_main._terminate(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # what an import's bare except does with it
        assert node_main._shutdown_requested
        started = []
        sys.modules["mtl3d_perception.ros.node"] = types.SimpleNamespace(
            main=lambda args=None, on_shutdown=None: started.append(args) or 0)
        before = signal.getsignal(signal.SIGINT)
        assert node_main.run(["perception_node"]) == 0 and started == []  # swallowed, yet not started
        assert signal.getsignal(signal.SIGINT) is before
        node_main._shutdown_requested = False
        assert node_main.run(["perception_node"]) == 0 and started == [["perception_node"]]
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_signals_after_the_first_do_not_kill_the_exiting_node():
    """A node trial: Ctrl-C twice, Ctrl-C then SIGTERM, or three Ctrl-C (ros2 launch adds its own to the
    terminal's) exited -2 / -15 or raised in torch's atexit callback: the handlers were restored while the
    interpreter tore down. ``perception_node`` exits 0 without a traceback however the later signals land."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(random.randint(20, 200)), "OMP_NUM_THREADS": "1"}
    for later in ([signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]):
        proc = subprocess.Popen([sys.executable, "-m", "mtl3d_perception.ros.node_main", "--ros-args", "-p",
                                 "model_path:=preset:tiny"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines: list[bytes] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any(b"ready" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, b"".join(lines).decode()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        for i, sig in enumerate(later):
            time.sleep(0.05 + 0.1 * i)
            if proc.poll() is None:
                proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, (later, b"".join(lines).decode())
        reader.join(timeout=10)
        err = b"".join(lines)
        assert b"Traceback" not in err and b"Exception ignored" not in err, err.decode()
