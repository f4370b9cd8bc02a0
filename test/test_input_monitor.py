"""InputMonitor: silent inputs, images without camera_info, per-input levels as diagnostic_updater's FrequencyStatus."""

from __future__ import annotations

import numpy as np
import pytest

from mtl3d_perception.ros.input_monitor import (
    ERROR,
    OK,
    SILENT_LOG_MAX_S,
    InputMonitor,
    PublisherInfo,
    silent_input_message,
    warning_period_s,
)

INPUTS = {"image": ("/camera/color/image_raw", "sensor_msgs/msg/Image"),
          "camera_info": ("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo")}


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _feed(monitor, clock, roles, seconds, hz=10.0):
    for _ in range(int(seconds * hz)):
        clock.t += 1.0 / hz
        for role in roles:
            monitor.tick(role)


def test_silent_inputs_after_the_grace_period():
    clock = _Clock()
    monitor = InputMonitor(INPUTS, window_s=5.0, silent_after_s=3.0, clock=clock)
    clock.t += 2.0
    assert monitor.silent() == [] and all(s.level == OK for s in monitor.statuses())  # just started
    clock.t += 1.5
    assert monitor.silent() == ["image", "camera_info"]
    assert [(s.level, s.message) for s in monitor.statuses()] == [(ERROR, "No events recorded")] * 2
    _feed(monitor, clock, ["camera_info"], 2.0)  # a mistyped image_topic: only camera_info arrives
    assert monitor.silent() == ["image"] and monitor.silent_for("image") == pytest.approx(5.5)
    assert monitor.silent_for("camera_info") == pytest.approx(0.0, abs=1e-9)
    assert monitor.arriving() == ["camera_info on /camera/color/camera_info (10.0 Hz)"]
    image, info = monitor.statuses()
    assert (image.level, image.count) == (ERROR, 0) and (info.level, info.message, info.count) == (OK, "10.0 Hz", 20)
    clock.t += 4.0  # the camera stopped: silent, so no longer "arriving", though within the rate window
    assert monitor.silent() == ["image", "camera_info"] and monitor.arriving() == []
    clock.t += 2.0
    assert monitor.statuses()[1].level == ERROR and "No events recorded for 6.0 s" in monitor.statuses()[1].message


def test_images_without_camera_info_are_reported_within_a_second():
    clock = _Clock()
    monitor = InputMonitor(INPUTS, clock=clock)
    _feed(monitor, clock, ["image"], 0.5)
    assert not monitor.info_missing()
    _feed(monitor, clock, ["image"], 0.7)
    assert monitor.info_missing()  # 1.2 s of images, no camera_info: well before the silent grace period
    _feed(monitor, clock, ["image", "camera_info"], 0.5)
    assert not monitor.info_missing()


@pytest.mark.parametrize("hz", [3000.0, 30.0])
def test_images_without_camera_info_are_reported_at_any_rate(hz):
    """At 3 kHz (a bag played as fast as it reads) the 1000 arrivals kept span a third of a second: the report still
    comes after 1 s of images, counted from when they began to arrive, and again after a pause in them."""
    clock = _Clock()
    monitor = InputMonitor(INPUTS, clock=clock)
    _feed(monitor, clock, ["image"], 0.9, hz=hz)
    assert not monitor.info_missing()
    _feed(monitor, clock, ["image"], 0.3, hz=hz)
    assert monitor.info_missing()
    clock.t += 6.0  # the images stopped for longer than the window: a new run of them starts the count again
    _feed(monitor, clock, ["image"], 0.5, hz=hz)
    assert not monitor.info_missing()
    _feed(monitor, clock, ["image"], 0.7, hz=hz)
    assert monitor.info_missing()


def test_unavailable_input_is_error_with_its_cause():
    clock = _Clock()
    monitor = InputMonitor({**INPUTS, "tf": ("/tf", "tf2_msgs/msg/TFMessage")}, clock=clock)
    monitor.set_unavailable("tf", "tf2_msgs is not installed")
    tf = monitor.statuses()[2]
    assert (tf.level, tf.message) == (ERROR, "not subscribed: tf2_msgs is not installed")
    clock.t += 10.0
    assert "tf" not in monitor.silent()  # said once as unavailable, not again as silent


def test_silent_input_message_names_topic_publishers_and_alternatives():
    message = silent_input_message("image", "/camera/image_raw", "sensor_msgs/msg/Image", 3.0, [],
                                   ["camera_info on /camera/color/camera_info (30.0 Hz)"],
                                   ["/camera/color/image_raw", "/camera/image_raw"])
    assert message == ("no sensor_msgs/msg/Image on /camera/image_raw (image) for 3 s; 0 publisher(s); "
                       "arriving: camera_info on /camera/color/camera_info (30.0 Hz); "
                       "other sensor_msgs/msg/Image topics in the graph: /camera/color/image_raw "
                       "(set image_topic / camera_info_topic or remap)")


def test_a_camera_that_sends_nothing_is_not_told_to_change_its_qos():
    """A live trial: a paused camera (image and camera_info silent, 1 publisher whose QoS matches) was told large
    messages may be lost and to set a reliable override, and "topics in the graph: none" beside "1 publisher(s)" on
    that very topic. The node leaves large-message loss out while camera_info is silent too (``qos_problem`` None)."""
    clock = _Clock()
    monitor = InputMonitor(INPUTS, clock=clock)
    _feed(monitor, clock, ["image", "camera_info"], 1.0)
    clock.t += 30.0
    graph = {"sensor_msgs/msg/Image": ["/camera/color/image_raw"],
             "sensor_msgs/msg/CameraInfo": ["/camera/color/camera_info"]}
    warnings = dict(monitor.warnings(graph.get, lambda topic: [PublisherInfo(
        "sensor_msgs/msg/Image" if "image" in topic else "sensor_msgs/msg/CameraInfo")]))
    assert set(warnings) == {"silent_image", "silent_camera_info"}
    assert warnings["silent_image"].endswith(
        "1 publisher(s) (their QoS matches, and camera_info is silent too: the camera sends nothing; not started, "
        "paused or stopped); arriving: no input at all; other sensor_msgs/msg/Image topics in the graph: none")


def test_warnings_say_what_is_wrong_once_each():
    clock = _Clock()
    monitor = InputMonitor(INPUTS, clock=clock)
    graph = {"sensor_msgs/msg/Image": ["/camera/color/image_raw", "/other/image"],
             "sensor_msgs/msg/CameraInfo": ["/camera/color/camera_info"]}
    one = [PublisherInfo("sensor_msgs/msg/CameraInfo")]
    assert monitor.warnings(graph.get, lambda topic: one) == []
    _feed(monitor, clock, ["image"], 3.5)  # images, never a camera_info: one warning, not also "silent camera_info"
    (kind, message), = monitor.warnings(graph.get, lambda topic: one)
    assert kind == "camera_info_missing" and message == (
        "images arrive on /camera/color/image_raw but no camera_info on /camera/color/camera_info (1 publisher(s): "
        "volatile): "
        "no frame can be processed without intrinsics; its publisher(s) sent nothing since this node subscribed; "
        "other sensor_msgs/msg/CameraInfo topics in the graph: none")
    # an integrator trial: a driver that latches camera_info once (transient_local) was told the graph had none
    latched = [PublisherInfo("sensor_msgs/msg/CameraInfo", "transient_local")]
    (_, message), = monitor.warnings(graph.get, lambda topic: latched)
    assert "(1 publisher(s): transient_local)" in message
    assert "a latched camera_info (transient_local, sent once) is not enough" in message
    (_, message), = monitor.warnings(graph.get, lambda topic: [])
    assert "(0 publisher(s))" in message and "nothing publishes it" in message
    # a QoS that cannot match (ros.qos) is the reason, not "sent nothing"
    (_, message), = monitor.warnings(graph.get, lambda topic: one, lambda topic: "RELIABILITY cannot match")
    assert "; RELIABILITY cannot match; other sensor_msgs/msg/CameraInfo" in message
    clock.t += 6.0  # now nothing arrives
    assert [kind for kind, _ in monitor.warnings(graph.get, lambda topic: [])] == ["silent_image", "silent_camera_info"]


def test_a_publisher_of_another_type_is_named_as_the_reason_for_silence():
    """A silent input whose topic has publishers of another type (a remap onto a depth cloud, compressed images on
    the raw topic) said only "1 publisher(s)": ROS connects only the same type, so the warning names the type."""
    message = silent_input_message("image", "/cam/image_raw", "sensor_msgs/msg/Image", 5.0,
                                   [PublisherInfo("sensor_msgs/msg/CompressedImage")], [], [])
    assert message.startswith(
        "no sensor_msgs/msg/Image on /cam/image_raw (image) for 5 s; 1 publisher(s): of sensor_msgs/msg/CompressedImage "
        "(all publish sensor_msgs/msg/CompressedImage, not sensor_msgs/msg/Image, and ROS connects only the same type; "
        "for compressed images set image_transport: compressed with image_topic the base topic); "), message
    mixed = [PublisherInfo("sensor_msgs/msg/Image"), PublisherInfo("sensor_msgs/msg/PointCloud2")]
    message = silent_input_message("image", "/cam/image_raw", "sensor_msgs/msg/Image", 5.0, mixed, [], [])
    assert "(some publish sensor_msgs/msg/PointCloud2, not sensor_msgs/msg/Image, and ROS connects only" in message
    assert "image_transport" not in message


def test_a_long_silence_is_logged_less_and_less_often():
    """A user trial: with no camera the node logged two warnings every 5 s for as long as it ran (74 lines in 250 s).
    The period grows with the silence, up to a minute; the first lines come as before."""
    from mtl3d_perception.runtime.throttled_log import ThrottledLog

    assert warning_period_s(3.0, 5.0) == 5.0 and warning_period_s(40.0, 5.0) == 20.0
    assert warning_period_s(3600.0, 5.0) == SILENT_LOG_MAX_S
    now = [0.0]
    lines: list[str] = []

    class Lines:
        def warning(self, message: str) -> None:
            lines.append(message)

    log = ThrottledLog(Lines(), period_s=5.0, clock=lambda: now[0])
    logged_at = []
    for second in range(3, 3601):  # the node checks its inputs once a second; silent from start-up
        now[0] = float(second)
        if log("silent_image", "no Image", period_s=warning_period_s(now[0], 5.0)):
            logged_at.append(second)
    assert logged_at[:3] == [3, 8, 16] and len(logged_at) < 80  # 720 at a fixed 5 s
    assert logged_at[-1] - logged_at[-2] == SILENT_LOG_MAX_S


def _feed_lossy(monitor, clock, seconds, hz, every, *, regular=False, seed=0):
    """A camera publishing image + camera_info at ``hz`` (stamped alike) of which one image in ``every`` arrives: at
    random (lost in transit), or every ``every``-th (``regular``: a throttled image stream)."""
    rng = np.random.default_rng(seed)
    for i in range(int(seconds * hz)):
        clock.t += 1.0 / hz
        stamp = round(clock.t * 1e9)
        monitor.tick("camera_info", stamp)
        if (i % every == 0) if regular else rng.uniform() < 1.0 / every:
            monitor.tick("image", stamp)


def test_images_lost_on_the_way_make_the_image_input_warn():
    """A node trial: a 640x480 camera at 5 Hz, best-effort: 4 of 40 images arrived while all 40 camera_info did, and
    every status said OK. Far fewer images than camera_info over the window is WARN on the image input and a warning
    naming the reliable override (or the QoS hint the graph gives)."""
    from mtl3d_perception.ros.input_monitor import WARN

    clock = _Clock()
    monitor = InputMonitor(INPUTS, window_s=5.0, clock=clock)
    _feed_lossy(monitor, clock, 4.0, 5.0, every=10)
    assert monitor.images_lost() is None  # not a whole window since start-up yet
    _feed_lossy(monitor, clock, 4.0, 5.0, every=10)
    assert monitor.images_lost() == (4, 25)
    image, info = monitor.statuses()
    assert image.level == WARN and "4 images for 25 camera_info in 5 s: images lost on the way" in image.message
    assert info.level == OK
    [(kind, message)] = monitor.warnings(lambda t: [], lambda t: [PublisherInfo("sensor_msgs/msg/Image")])
    assert kind == "images_lost"
    assert "4 images but 25 camera_info arrived on /camera/color/image_raw" in message and "21 images were lost" in message
    assert "qos_overrides./camera/color/image_raw.subscription.reliability: reliable" in message
    [(_, message)] = monitor.warnings(lambda t: [], lambda t: [], qos_problem=lambda t: "the publisher is reliable, X")
    assert message.endswith("the publisher is reliable, X")


@pytest.mark.parametrize(("every", "regular", "lost"), [(1, True, False), (2, False, False), (3, False, True),
                                                      (3, True, False), (5, True, False)])
def test_images_lost_only_below_0_4_per_camera_info_and_at_random(every, regular, lost):
    """Every image, or about every second one: no warning; one in three lost at random (below 0.4 per camera_info):
    one. Images at a steady rate of their own (a retrial: camera_info published three times as often as the images,
    every image arriving, was called "images lost"; or a throttled image stream): none."""
    clock = _Clock()
    monitor = InputMonitor(INPUTS, window_s=5.0, clock=clock)
    _feed_lossy(monitor, clock, 10.0, 10.0, every=every, regular=regular)
    assert (monitor.images_lost() is not None) == lost
    assert (monitor.statuses()[0].level != OK) == lost


def test_no_images_at_all_is_a_silent_input_not_a_loss():
    clock = _Clock()
    monitor = InputMonitor(INPUTS, window_s=5.0, clock=clock)
    _feed(monitor, clock, ["camera_info"], 10.0)
    assert monitor.images_lost() is None
    assert [k for k, _ in monitor.warnings(lambda t: [], lambda t: [])] == ["silent_image"]
