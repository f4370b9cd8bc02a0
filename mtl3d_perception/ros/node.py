"""The ``perception_node``: camera + TF in, depth / semantics / normals / boundaries / labelled cloud out.

Subscribed: ``image_topic`` (sensor_msgs/Image in any colour or mono encoding cv_bridge converts to rgb8, see
``conversions.COLOUR_ENCODINGS``; or with ``image_transport`` ``compressed`` a sensor_msgs/CompressedImage, jpeg/png,
on ``image_topic + '/compressed'``) and ``camera_info_topic`` (default: beside the image topic; binning, ROI,
distortion and P applied as ``camera_model`` says; raw images rectified per ``image_kind``), relative names resolved
in the node's namespace, approximately synchronised (``sync_queue_size`` per input, so driver latency between image
and camera_info does not lose pairs), sensor-data QoS; TF ``world_frame`` <- image frame. The resolved inputs are
logged at start-up; inputs that stay silent, and images without camera_info, get a throttled WARN and an input
status in ``/diagnostics`` (``ros/input_monitor.py``).
Published (reliable, the input image's stamp and frame_id, see ``topics.OUTPUTS``): ``~/depth/image`` (32FC1 m),
``~/depth/confidence`` (32FC1 in [0, 1], same header and size as the depth; only for a model that outputs one, see
``PerceptionPipeline.has_depth_confidence``: otherwise the topic is not advertised, and the start-up log and
``/diagnostics`` (``depth_confidence``) say so), ``~/semantic/image`` (mono8) + ``~/semantic/image_color`` (rgb8), ``~/normals/image`` (32FC3) +
``~/normals/image_color`` (rgb8), ``~/boundary/image`` (mono8), each with its sibling ``camera_info``
(``~/depth/camera_info``, ...), ``~/points`` (PointCloud2 x, y, z, rgb, label) and ``/diagnostics``. Parameters:
``PARAMETERS``, generated from ``runtime.config.RuntimeConfig`` (also ``config/perception.yaml``); values their
type and range cannot refuse are checked by ``RuntimeConfig.validate`` and ``runtime/params.py``.

The node only wires ROS to the runtime's ``FrameDriver`` (STYLE §2.13): it keeps the threads, QoS, parameters and
publishing. Threads: the executor runs the subscriptions, TF and the diagnostics timer; a decoder thread turns
synchronised messages into frames (a JPEG / PNG is decoded only after its header passed ``max_image_pixels``, and
never on the executor) and hands them to the driver (``FrameDriver.add_frame``); one worker thread owns the
pipeline: it applies parameter changes between frames, takes the newest synchronised frame whose TF is available
(``FrameDriver.wait_job`` with the ``newest`` policy, woken by new frames, by the TF buffer's
``wait_for_transform_async`` futures and by the ``tf_timeout_s`` deadline: no polling), runs the pipeline and
publishes. Bad input never stops the node: a throttled log line, a diagnostics entry, the frame is dropped.

Time going back by more than ``JUMP_BACK_S`` (a looping bag, a restarted simulation; ``frames.TimeJumpDetector``)
makes each layer clear its own state: the node the synchroniser's queues and the TF cache (tf2_ros clears the
latter itself only when the node's clock jumps, i.e. under ``use_sim_time``), the driver its waiting frames,
the pipeline its frame history.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mtl3d_perception import topics
from mtl3d_perception.msgs import conversions
from mtl3d_perception.msgs.camera_model import CameraModels, resolve_image_kind
from mtl3d_perception.msgs.messages import (
    CAMERA_INFO_STAMP_PROBLEM,
    HEADER_PROBLEMS,
    BadInput,
    frame_from_messages,
    header_message,
    products_to_messages,
)
from mtl3d_perception.msgs.tf import latest_stamp_ns, pose_from_tf, tf_frames
from mtl3d_perception.ros import diagnostics, qos
from mtl3d_perception.ros.compat import FALLBACKS, message_filters, tf2_ros
from mtl3d_perception.ros.input_monitor import InputMonitor, PublisherInfo, warning_period_s
from mtl3d_perception.runtime import params
from mtl3d_perception.runtime.config import RuntimeConfig, config_from_parameters, parameter_specs
from mtl3d_perception.runtime.driver import TF_FRAMES, TF_NOT_SUBSCRIBED, FrameDriver, is_missing_tf_path
from mtl3d_perception.runtime.frames import JUMP_BACK_S, Frame, TimeJumpDetector
from mtl3d_perception.runtime.loading import load_model, resolve_device
from mtl3d_perception.runtime.pipeline import PerceptionPipeline
from mtl3d_perception.runtime.pose_queue import PoseJob
from mtl3d_perception.runtime.pose_wait import LivePoseWait
from mtl3d_perception.runtime.stats import RuntimeStats
from mtl3d_perception.runtime.sync import pairing_advice
from mtl3d_perception.runtime.throttled_log import LOG_THROTTLE_S, ThrottledLog

# name -> (default, description, read_only, range (lo, hi) or choices tuple or None), from RuntimeConfig
PARAMETERS: dict[str, tuple[Any, str, bool, Any]] = {
    name: (spec.default, spec.description, spec.read_only, spec.constraint)
    for name, spec in parameter_specs("node").items()
}
OUTPUT_GROUPS = tuple(dict.fromkeys(topics.output_group(name) for name in topics.OUTPUTS))  # publish_<group>
# messages waiting to be decoded: when the decoder falls further behind (a large JPEG stream), the oldest is dropped,
# as the subscriptions' keep-last queues do (a node trial: a FIFO of 30 that dropped the newest decoded frames ~1 s old)
DECODE_BACKLOG = 2
JUMP_BACK_NS = int(JUMP_BACK_S * 1e9)
MAX_FRAMES_SHOWN = 12  # TF frame ids named in a missing-frame message


def _descriptor(name: str, default: Any, description: str, read_only: bool, constraint: Any) -> ParameterDescriptor:
    d = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if isinstance(constraint, tuple) and len(constraint) == 2 and not isinstance(constraint[0], str):
        if isinstance(default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(constraint[0]), to_value=float(constraint[1]))]
        else:
            d.integer_range = [IntegerRange(from_value=int(constraint[0]), to_value=int(constraint[1]), step=1)]
    elif isinstance(constraint, tuple):
        d.additional_constraints = f"one of: {', '.join(constraint)}"
    return d


class PerceptionNode(Node):
    """CvM-MTL perception node. A Node subclass so other scripts (tests, benchmarks) can import and use it.

    Args:
        node_name: ROS node name (outputs live under ``~/``).
        model: an already built network to use instead of loading ``model_path`` (tests, benchmarks).
        **kwargs: passed to ``rclpy.node.Node`` (``parameter_overrides``, ``context``, ...).
    """

    def __init__(self, node_name: str = topics.NODE_NAME, *, model: Any = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        try:
            self._start(model)
        except Exception as exc:  # main logs it under this node's own (remapped) logger, which reaches /rosout
            exc.logger_name = self.get_logger().name
            raise

    def _start(self, model: Any) -> None:
        """Parameters, model, inputs, outputs and the worker: everything after the rclpy node exists."""
        # validate before declaring, so start-up values (overrides, params file) get the same checks as later sets
        self.add_on_set_parameters_callback(self._validate_parameters)
        for name, (default, description, read_only, constraint) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name, default, description, read_only, constraint))
        config = self._config()
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.types = conversions.rclpy_types()
        self.stats = RuntimeStats()
        self._log = ThrottledLog(self.get_logger(), LOG_THROTTLE_S)
        if FALLBACKS and os.environ.get("ROS_DISTRO"):  # a sourced ROS install should have the real ones
            self.get_logger().warning(
                f"using the in-package fallbacks for: {', '.join(FALLBACKS)}, although ROS "
                f"{os.environ['ROS_DISTRO']} is sourced; install them (rosdep install, package.xml: tf2_ros_py, "
                "message_filters)")
        elif FALLBACKS:
            self.get_logger().info(f"using the in-package fallbacks for: {', '.join(FALLBACKS)}")

        import torch

        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        if model is None:
            model, self.model_description = load_model(config.model_path, device=self.device, log=self.get_logger())
        else:
            self.model_description = f"in-process {type(model).__name__}"
        self.pipeline = PerceptionPipeline(model, config.replace(device=self.device),
                                           logger=_LogAdapter(self.get_logger()))
        self.driver = FrameDriver(self.pipeline, LivePoseWait(self.lookup_pose, config.tf_timeout_s), policy="newest",
                                  stats=self.stats, on_problem=self._log_problem,
                                  report_stamp_outliers=False)  # on_image reports each, paired or not
        self._update: RuntimeConfig | None = None  # new settings, applied by the worker between frames
        self._update_lock = threading.Lock()
        self.get_logger().info(f"model: {self.model_description} on {self.device} ({self.pipeline.precision}), "
                               f"input {self.pipeline.net_size[0]}x{self.pipeline.net_size[1]}")
        if not self.pipeline.has_depth_confidence:  # said once here and in /diagnostics, never per frame
            self.get_logger().info("the model outputs no depth confidence (geometric_depth: false): "
                                   "~/depth/confidence is not published")

        self.tf_buffer = tf2_ros.Buffer(node=self)  # with the node: cleared when its (sim) clock jumps back
        if hasattr(self.tf_buffer, "core"):  # the compat buffer: its rejects are counted here (tf2_ros logs its own)
            self.tf_buffer.core.on_problem = self._tf_problem
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
        self._tf_waits: deque[tuple[int, Any]] = deque()  # (frame stamp, wait_for_transform_async future)
        self._tf_waits_lock = threading.Lock()

        self.pubs = {name: self._publisher(self.types[msg_type], f"~/{name}")
                     for name, (msg_type, _) in topics.OUTPUTS.items()
                     if name != "depth/confidence" or self.pipeline.has_depth_confidence}
        self.diag_pub = self.create_publisher(self.types["diagnostic_msgs/msg/DiagnosticArray"],
                                              topics.DIAGNOSTICS_TOPIC, topics.DIAGNOSTICS_QOS_DEPTH)
        # on steady time, not the node's clock: under use_sim_time with no /clock that clock stands still, and the node
        # went silent, diagnostics and all (a node trial)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.diag_timer = self.create_timer(config.diagnostics_period_s, self.publish_diagnostics, clock=self._steady)

        # decoding (a JPEG / PNG of up to max_image_pixels) runs here, never on the executor thread
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtl3d_decode")
        self._inbox: deque[tuple[Any, Any, int, int]] = deque()  # (image, info, arrived_ns, generation) to decode
        self._generation = 0  # bumped by a time jump: frames decoded from before it are discarded
        self._cond = threading.Condition()
        self._stop = False
        # Ctrl-C shuts the context down before main() destroys the node: stop the worker then, not after its next
        # publish has failed on the invalid context
        self.context.on_shutdown(self._on_context_shutdown)
        self._image_jump = TimeJumpDetector()  # images, before the synchroniser: its queues and the TF cache
        # image_transport's CameraSubscriber: the base topic is resolved with its remapping first, then the transport's
        # topic and the camera_info beside it are derived from it, so remapping the base topic
        # (`-r camera/color/image_raw:=/cam/image`) moves all three
        base_topic = self.resolve_topic_name(config.image_topic)
        compressed = config.image_transport == "compressed"
        image_topic = base_topic + (topics.COMPRESSED_SUFFIX if compressed else "")
        self.image_kind = resolve_image_kind(config.image_kind, image_topic)
        self.camera_info = {"image_kind": self.image_kind,
                            "image_kind_from": "image topic name" if config.image_kind == "auto" else "parameter"}
        self.cameras = CameraModels()

        image_type = CompressedImage if compressed else Image
        self.image_sub = self._input(image_type, image_topic, qos.SENSOR_QOS)
        info_topic = config.camera_info_input(base_topic)
        self.info_sub = self._input(CameraInfo, info_topic, qos.CAMERA_INFO_QOS)
        # registered before the synchroniser, so they see each message first (a time jump clears its queues)
        self.image_sub.registerCallback(self.on_image)
        self.info_sub.registerCallback(self.on_camera_info)
        self.sync = message_filters.ApproximateTimeSynchronizer([self.image_sub, self.info_sub],
                                                                config.sync_queue_size, config.sync_slop_s)
        self.sync.registerCallback(self.on_frame)
        self.sync_queue_size, self.sync_slop_s = config.sync_queue_size, config.sync_slop_s
        self._unpaired_reported = 0
        self._last_stamp_ns: dict[str, int] = {}  # "image" / "camera_info" -> the newest header stamp (sync advice)
        self._invalid_stamp = False  # the image being handled has a stamp that is not a time (on_image)
        self._start_input_monitor(image_type)
        # rclpy drops overrides of undeclared names silently: a misspelt -p history_sizee:=3 kept the default. Checked
        # once every input and output has declared its qos_overrides, so a mistyped topic in one is named too
        self.unknown_parameters = params.unknown_parameters(list(self._parameter_overrides), list(self._parameters))
        if self.unknown_parameters:
            self.get_logger().warning(f"ignoring unknown parameter(s) {', '.join(self.unknown_parameters)}; "
                                      "config/perception.yaml lists every parameter (and the QoS overrides)")
        # last: a constructor that fails earlier (a bad topic name) leaves no thread running on the model
        self._worker = threading.Thread(target=self._work, name="mtl3d_inference", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------ parameters

    def _config(self, changed: list[Any] = ()) -> RuntimeConfig:
        """The RuntimeConfig of the current parameter values, with ``changed`` ones (not yet set) applied."""
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        values.update({param.name: param.value for param in changed if param.name in PARAMETERS})
        return config_from_parameters(values)

    def _validate_parameters(self, parameters: list[Any]) -> SetParametersResult:
        try:
            self._config(parameters)
        except ValueError as exc:  # ConfigError (wrong type) is a ValueError too
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception:  # parameters not declared yet (start-up): check the new values on their own
            try:
                config_from_parameters({p.name: p.value for p in parameters if p.name in PARAMETERS})
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        pending = {param.name: param.value for param in parameters}
        if "precision" in pending or "device" in pending:  # needs the resolved device, so not in RuntimeConfig
            precision = pending.get("precision", self.get_parameter("precision").value
                                    if self.has_parameter("precision") else PARAMETERS["precision"][0])
            reason = params.precision_problem(precision, self._device_for(pending))
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _device_for(self, pending: dict[str, Any]) -> str:
        """The torch device the node runs on (or will: ``device`` set in the same call, or still being declared)."""
        if "device" in pending:
            requested = pending["device"]
        elif self.has_parameter("device"):
            requested = self.get_parameter("device").value
        else:
            requested = PARAMETERS["device"][0]
        try:
            return resolve_device(requested)
        except (ValueError, RuntimeError):
            return "cpu"  # start-up reports the bad device itself

    def _apply_parameters(self, parameters: list[Any]) -> None:
        if not any(param.name in PARAMETERS for param in parameters):  # qos_overrides, declared by rclpy at start-up
            return
        with self._update_lock:
            self._update = self._config().replace(device=self.device)
        self.driver.notify()

    # ------------------------------------------------------------------------------------ input

    def _problem(self, kind: str, message: str, *, counter: str | None = None, error: bool = False) -> None:
        """Diagnostics entry + a throttled log line, through the driver's problem path."""
        self.driver.problem(kind, message, counter=counter, error=error)

    def _log_problem(self, kind: str, message: str, counter: str | None, error: bool) -> None:
        """The driver's problems as a log line throttled per kind (never once per frame); ``error``: the node's own
        fault. The stats entry is the driver's."""
        self._log(kind, f"{kind}: {message}", error=error)

    def _tf_problem(self, kind: str, message: str) -> None:
        """The TF buffer's problems: a rejected transform is bad input; its time jumps are only logged (the images'
        jump is the one counted, in ``on_image``)."""
        if kind == "time_jump":
            self._log("tf_time_jump", message)
        else:
            self._problem(kind, message)

    def on_image(self, image: Any) -> None:
        """Every image, before the synchroniser sees it: counts it and detects time jumping back."""
        self.stats.count("images")
        stamp_ns = self._last_stamp_ns["image"] = conversions.header_stamp_ns(image.header.stamp, invalid=-1)
        self.inputs.tick("image", stamp_ns)
        # the real message_filters raises on a stamp rclpy cannot hold (callback_failed then knows why)
        self._invalid_stamp = stamp_ns < 0
        stamp_ns = max(stamp_ns, 0)  # an invalid stamp is no stamp, not a jump
        if self._image_jump.check(stamp_ns):
            self._time_jump(stamp_ns, image.header.frame_id)
        elif self._image_jump.outlier_ns is not None:  # one image stamped far ahead: not a jump
            self._drop_synchroniser_after(stamp_ns + self._image_jump.jump_back_ns)
            self._problem("header", self._image_jump.outlier_message(stamp_ns), counter="header_problems")

    def on_camera_info(self, info: Any) -> None:
        self.stats.count("camera_infos")
        self.inputs.tick("camera_info")
        self._last_stamp_ns["camera_info"] = conversions.header_stamp_ns(info.header.stamp, invalid=-1)
        if self._last_stamp_ns["camera_info"] < 0:  # its own image can never pair: said, not silent
            self._problem("header", CAMERA_INFO_STAMP_PROBLEM, counter="header_problems")

    def _publisher(self, msg_type: type, topic: str) -> Any:
        """An output publisher: ``qos.OUTPUT_QOS`` unless ``qos_overrides`` say otherwise; incompatible subscribers
        are reported (:meth:`_incompatible_qos`)."""
        name = self.resolve_topic_name(topic)
        return self.create_publisher(
            msg_type, topic, qos.entity_qos(qos.OUTPUT_QOS), qos_overriding_options=qos.OUTPUT_OVERRIDES,
            event_callbacks=qos.PublisherEventCallbacks(
                incompatible_qos=lambda event: self._incompatible_qos(name, "publisher", event)))

    def _input(self, msg_type: type, topic: str, profile: Any) -> Any:
        """An input subscription (message_filters): ``profile`` unless ``qos_overrides`` say otherwise; publishers of
        incompatible QoS are reported (:meth:`_incompatible_qos`)."""
        name = self.resolve_topic_name(topic)
        return message_filters.Subscriber(
            self, msg_type, topic, qos_profile=qos.entity_qos(profile), qos_overriding_options=qos.INPUT_OVERRIDES,
            event_callbacks=qos.SubscriptionEventCallbacks(
                incompatible_qos=lambda event: self._incompatible_qos(name, "subscription", event)))

    def _incompatible_qos(self, topic: str, entity: str, event: Any) -> None:
        """rclpy's ``incompatible_qos`` event: a peer whose QoS cannot match appeared on ``topic``. Logged (throttled)
        as the graph now says it (:meth:`qos_mismatches`); /diagnostics warns for as long as it lasts."""
        message = self.qos_mismatches().get(topic) or (
            f"a peer on {topic} cannot match this node's {entity} QoS ({qos.policy_name(event.last_policy_kind)})")
        self._log(f"qos {topic}", message)

    def qos_mismatches(self) -> dict[str, str]:
        """Topic -> what cannot match there (:func:`ros.qos.mismatch_message`), for each of the node's inputs and
        outputs with a peer whose QoS cannot match this node's, from the graph as it is now."""
        own = (self.get_name(), self.get_namespace())
        entities = [(pub, "publisher", self.get_publishers_info_by_topic, self.get_subscriptions_info_by_topic)
                    for pub in self.pubs.values()]
        entities += [(sub.sub, "subscription", self.get_subscriptions_info_by_topic, self.get_publishers_info_by_topic)
                     for sub in (self.image_sub, self.info_sub)]
        found = {}
        for entity, kind, ours_of, peers_of in entities:
            topic = entity.topic_name
            peers = [i.qos_profile for i in peers_of(topic) if (i.node_name, i.node_namespace) != own]
            if not peers:
                continue
            # this side as the graph reports it (its durations as the peers' are), else as rclpy holds it
            profile = next((i.qos_profile for i in ours_of(topic) if (i.node_name, i.node_namespace) == own),
                           entity.qos_profile)
            if message := qos.mismatch_message(topic, kind, profile, peers):
                found[topic] = message
        return found

    def _start_input_monitor(self, image_type: type) -> None:
        """Log the resolved inputs; then, once a second, warn about silent ones (``ros/input_monitor.py``)."""
        image_topic, info_topic = self.image_sub.sub.topic_name, self.info_sub.sub.topic_name
        inputs = {"image": (image_topic, _type_name(image_type)),
                  "camera_info": (info_topic, "sensor_msgs/msg/CameraInfo")}
        # the compat listener says why it could not subscribe; the real tf2_ros one always subscribes
        self.tf_unavailable = getattr(self.tf_listener, "unavailable", None)
        if self.tf_unavailable:
            inputs["tf"] = (topics.TF_TOPIC, "tf2_msgs/msg/TFMessage")
        self.inputs = InputMonitor(inputs, window_s=self.stats.rate_window_s)
        if self.tf_unavailable:
            self.inputs.set_unavailable("tf", self.tf_unavailable)
        tf_input = f"NOT subscribed ({self.tf_unavailable})" if self.tf_unavailable else (
            f"{topics.TF_TOPIC} + {topics.TF_STATIC_TOPIC}, poses of the image frame in {self.pipeline.world_frame}"
            if self.pipeline.config.uses_pose else "not used (single_view with the cloud in the camera frame)")
        self.get_logger().info(f"inputs: image {image_topic} ({inputs['image'][1]}), camera_info {info_topic}, "
                               f"TF {tf_input}")
        self.input_timer = self.create_timer(1.0, self.check_inputs, clock=self._steady)

    def check_inputs(self) -> None:
        """Throttled warnings for inputs that stay silent and for images that come without camera_info."""
        own = {pub.topic_name for pub in self.pubs.values()}

        def topics_of(msg_type: str) -> list[str]:  # candidates for a mistyped input: published, not the node's own
            return sorted(name for name, types in self.get_topic_names_and_types()
                          if msg_type in types and name not in own and self.count_publishers(name) > 0)

        # the QoS check reads the graph (two queries per topic): only when there is a warning to explain
        for kind, message in self.inputs.warnings(topics_of, self.publishers_of, self.input_qos_problem):
            silent_s = self.inputs.silent_for(kind.removeprefix("silent_")) if kind.startswith("silent_") else 0.0
            self._log(kind, message, period_s=warning_period_s(silent_s, LOG_THROTTLE_S))
        if (message := self.clock_problem()) is not None:
            self._problem("clock", message)
        else:
            self.stats.resolve("clock")

    def clock_problem(self) -> str | None:
        """Under ``use_sim_time``, why the node's time stands still: no /clock message since start-up (a bag played
        without ``--clock``, a simulator not running), after the inputs' grace period; else None."""
        waited_s = time.monotonic() - self.inputs.started_at
        if (not self.get_parameter("use_sim_time").value or self.get_clock().now().nanoseconds > 0
                or waited_s < self.inputs.silent_after_s):
            return None
        # what a stopped clock does here (a live trial: "TF waits cannot end on time" was wrong, they run on steady
        # time): frames, outputs and TF waits follow the images' stamps; the node's own time does not move
        return (f"use_sim_time is true but no /clock has arrived in {waited_s:.0f} s ({self.count_publishers('/clock')} "
                "publisher(s) of /clock), so the node's time stands at 0 (/diagnostics is stamped 0), while frames, TF "
                "waits and outputs follow the images' stamps; play bags "
                "with `ros2 bag play --clock`, start the simulator's clock, or set use_sim_time false")

    def input_qos_problem(self, topic: str) -> str | None:
        """Why an input's publishers may send this node nothing, from their QoS: one that cannot match
        (:meth:`qos_mismatches`), or for the image subscription, best-effort against a reliable publisher, large images
        lost in fragments (``qos.fragment_loss_hint``); None when the QoS explains nothing."""
        if (mismatch := self.qos_mismatches().get(topic)) is not None:
            return mismatch
        sub = self.image_sub.sub
        if topic != sub.topic_name or "camera_info" in self.inputs.silent():
            return None  # large-message loss spares camera_info: with it silent too, the camera sends nothing
        own = (self.get_name(), self.get_namespace())
        peers = [i.qos_profile for i in self.get_publishers_info_by_topic(topic) if (i.node_name, i.node_namespace) != own]
        return qos.fragment_loss_hint(topic, sub.qos_profile, peers)

    def publishers_of(self, topic: str) -> list[PublisherInfo]:
        """Each publisher of ``topic`` in the graph: its message type and the durability it offers."""
        return [PublisherInfo(info.topic_type, info.qos_profile.durability.name.lower())
                for info in self.get_publishers_info_by_topic(topic)]

    def _time_jump(self, stamp_ns: int, frame_id: str) -> None:
        """Forget the node's state from before the jump: the synchroniser's queues and the TF cache (the driver
        and the pipeline clear theirs when the jumped frame reaches them)."""
        # message_filters keeps old stamps in its latest-only queues; newer-looking leftovers would evict every
        # new message on arrival, and the synchroniser would never fire again. ``queues`` and ``lock`` are
        # attributes of message_filters' TimeSynchronizer (Humble to Rolling) and of the compat one.
        with self.sync.lock:
            for queue in self.sync.queues:
                queue.clear()
        if self._tf_holds_data_after(stamp_ns + JUMP_BACK_NS, frame_id):
            self.tf_buffer.clear()
            # a live trial: under wall time nothing said so (tf2 logs its own clearing only on a /clock jump)
            self._log("tf_time_jump", f"image stamps jumped back to {stamp_ns * 1e-9:.3f} s: the TF cache, the "
                                      "synchroniser and the frame history are cleared (a bag restarted or played with "
                                      "--loop? play it with --clock and use_sim_time:=true so the node's clock follows)")
        with self._cond:
            self._generation += 1

    def _drop_synchroniser_after(self, stamp_ns: int) -> None:
        """Forget the synchroniser's messages stamped after ``stamp_ns`` (a lone image stamped far ahead, unpaired:
        ``frames.TimeJumpDetector``). Its queues are keyed by stamp: rclpy ``Time`` in message_filters, ns in compat."""
        with self.sync.lock:
            for queue in self.sync.queues:
                for key in [k for k in queue if getattr(k, "nanoseconds", k) > stamp_ns]:
                    del queue[key]

    def _tf_holds_data_after(self, stamp_ns: int, frame_id: str) -> bool:
        """Whether the TF cache still has transforms newer than ``stamp_ns`` (not yet cleared for the jump)."""
        latest = latest_stamp_ns(self.tf_buffer, self.pipeline.world_frame, frame_id, time_type=Time)
        return latest is None or latest > stamp_ns  # no chain (or a bad frame id): clearing costs nothing

    def on_frame(self, image: Any, info: Any) -> None:
        """Synchronised image + camera_info -> the decoder (executor thread: no decoding, no inference here)."""
        self.stats.count("received")
        with self._cond:
            if len(self._inbox) >= DECODE_BACKLOG:  # the decoder cannot keep up: drop the oldest, keep the newest
                self._inbox.popleft()
                self.stats.count("dropped")
            self._inbox.append((image, info, time.monotonic_ns(), self._generation))
        try:
            self._decoder.submit(self._decode_next)
        except RuntimeError:  # shut down
            pass

    def _decode_next(self) -> None:
        """Decoder thread: the oldest message waiting (none: a dropped one's task, nothing to do)."""
        with self._cond:
            if not self._inbox:
                return
            image, info, arrived_ns, generation = self._inbox.popleft()
        self._decode(image, info, arrived_ns, generation)

    def _decode(self, image: Any, info: Any, arrived_ns: int, generation: int) -> None:
        """Decoder thread: messages -> a pending frame, or a counted bad input."""
        try:
            frame = frame_from_messages(image, info, image_kind=self.image_kind, cameras=self.cameras,
                                        max_pixels=self.pipeline.config.max_image_pixels)
        except BadInput as exc:
            self.driver.problem(exc.kind, str(exc))
            return
        except Exception as exc:  # never let a message kill the decoder
            self._problem("internal", f"decoding failed: {type(exc).__name__}: {exc}", counter="internal_errors",
                          error=True)
            return
        described, new, problem = self.cameras.describe(info, self.image_kind)
        self.camera_info["camera_info"] = described  # /diagnostics: the latest
        if new:  # each distinct calibration once, as replay notes it
            self.get_logger().info(f"camera_info: {described} ({self.image_kind} from the "
                                   f"{self.camera_info['image_kind_from']})")
        if problem:  # legal values, wrong calibration: the frames are kept
            self.driver.problem("calibration", problem)
        if (message := header_message(frame)) is not None:
            self.driver.problem("header", message, counter="header_problems")
        with self._cond:
            if generation != self._generation:  # time jumped back while this frame was being decoded
                self.stats.count("dropped")
                return
        if self.driver.add_frame(frame, arrived_ns) and not frame.header_problem:
            self._wait_for_tf(frame)

    def _wait_for_tf(self, frame: Frame) -> None:
        """Wake the worker when TF for ``frame`` arrives (the Buffer's new-data callback completes the future)."""
        try:
            future = self.tf_buffer.wait_for_transform_async(self.pipeline.world_frame, frame.frame_id,
                                                             Time(nanoseconds=frame.stamp_ns))
        except Exception:  # a bad frame id: the frame runs single-view after tf_timeout_s, reported then
            return
        future.add_done_callback(self.driver.notify)
        with self._tf_waits_lock:
            self._tf_waits.append((frame.stamp_ns, future))

    def _forget_tf_waits(self) -> None:
        """Cancel the TF waits of frames no longer queued (outside the driver's lock: the real Buffer takes its
        callback lock when a future is cancelled)."""
        waiting = {f.stamp_ns for f in self.driver.pending_frames()}
        with self._tf_waits_lock:
            keep, done = deque(), []
            for stamp, future in self._tf_waits:
                (keep if stamp in waiting and not future.done() else done).append((stamp, future))
            self._tf_waits = keep
        for _, future in done:
            if not future.done():
                future.cancel()

    # ------------------------------------------------------------------------------------ worker

    def lookup_pose(self, frame: Frame) -> tuple[Any, str | None]:
        """(T_world_cam, None) or (None, why not) — never waits; (None, None) when the settings use no pose
        (``RuntimeConfig.uses_pose``), so the frame runs at once."""
        if not self.pipeline.config.uses_pose:
            return None, None
        pose, error = pose_from_tf(self.tf_buffer, self.pipeline.world_frame, frame, time_type=Time)
        if error is not None and self.tf_unavailable:  # the lookup's own error and advice are beside the point
            error = f"{TF_NOT_SUBSCRIBED}: {self.tf_unavailable}"
        elif error is not None and is_missing_tf_path(error):  # what the lookup could have used instead
            frames = tf_frames(self.tf_buffer)
            shown = ", ".join(frames[:MAX_FRAMES_SHOWN]) + (f", ... ({len(frames)} in all)"
                                                            if len(frames) > MAX_FRAMES_SHOWN else "")
            error = f"{error.rstrip('. ')}; {TF_FRAMES}: {shown or 'none'}"
        return pose, error

    def _apply_updates(self) -> None:
        """Parameter changes (from the executor) applied to the pipeline between frames, in the worker."""
        with self._update_lock:
            update, self._update = self._update, None
        if update is not None:
            self.driver.apply(update)

    def _work(self) -> None:
        try:
            seconds = self.pipeline.warmup()
            if self.context.ok():  # not after a Ctrl-C during the warm-up: /rosout is gone ("context is invalid")
                self.get_logger().info(f"warm-up inference took {seconds:.2f} s; ready")
        except Exception as exc:
            self.driver.problem("internal", f"warm-up failed: {type(exc).__name__}: {exc}", counter="internal_errors",
                                error=True)
        while not self._stop:
            try:
                self._apply_updates()
            except Exception as exc:
                self.driver.problem("internal", f"applying parameters failed: {type(exc).__name__}: {exc}",
                                    counter="internal_errors", error=True)
            try:
                job = self.driver.wait_job(lambda: self._stop or self._update is not None)
            except Exception as exc:  # a frame the pose wait cannot handle: dropped with the rest, never retried
                dropped = self.driver.clear()
                self.driver.problem("internal", f"waiting for a pose failed: {type(exc).__name__}: {exc}; {dropped} "
                                                "waiting frame(s) dropped", counter="internal_errors", error=True)
                continue
            if job is None:
                continue
            self._forget_tf_waits()
            try:
                self._process(job)
            except Exception as exc:  # never let the worker die
                if not self.context.ok():  # the context shut down mid-frame (Ctrl-C): its publishers are gone
                    break
                self.driver.problem("internal", f"{type(exc).__name__}: {exc}", counter="internal_errors", error=True)

    def _on_context_shutdown(self) -> None:
        self._stop = True
        self.driver.notify()

    def _process(self, job: PoseJob) -> None:
        """Run a frame for the outputs that are enabled and, with ``lazy``, subscribed to (image_pipeline's lazy
        outputs); a frame nobody wants is kept as a source view only (``FrameDriver.skip``)."""
        config = self.pipeline.config
        subscribed = {name for name, pub in self.pubs.items() if pub.get_subscription_count() > 0}
        enabled = [name for name in self.pubs if config.get(f"publish_{topics.output_group(name)}")]
        # a subscriber waiting on an output switched off gets nothing: said, not silent (a re-check trial)
        waiting = sorted({f"publish_{topics.output_group(name)}" for name in subscribed - set(enabled)})
        unheard = f" ({', '.join(waiting)} false, yet subscribed)" if waiting else ""
        if not enabled:
            self.driver.skip(job, f"every publish_* parameter is false: nothing to publish{unheard}", warn=True)
            return
        if config.lazy:
            enabled = [name for name in enabled if name in subscribed]
            if not enabled:
                self.driver.skip(job, "no subscriber on any enabled output (lazy: true); frames are kept as source "
                                      f"views{unheard}", warn=bool(waiting))
                return
        if waiting:  # the frame runs for other outputs: still said (a node trial: the depth subscriber heard nothing)
            self._log("disabled_output", f"{', '.join(waiting)} false, yet subscribed: those subscribers get nothing "
                                         "(set it true to publish)")
        self.pipeline.depth_color = "depth/image_color" in enabled or not config.lazy
        products = self.driver.run(job, outputs={topics.output_group(name) for name in enabled})
        if products is not None:
            self.publish_products(products, enabled)

    # ------------------------------------------------------------------------------------ output

    def publish_products(self, products: Any, outputs: list[str]) -> None:
        """Products -> messages on ``outputs`` (output topic names, ``topics.OUTPUTS``)."""
        for name, msg in products_to_messages(self.types, products, outputs=outputs).items():
            self.pubs[name].publish(msg)

    def _check_pairing(self) -> None:
        """Images that never found their camera_info (message_filters drops them without a word): say so, with the
        parameters that change it. Up to a queue's worth per input may still pair, so only more than that counts."""
        unpaired = self.stats.counts["images"] - self.stats.counts["received"] - self.sync_queue_size
        if unpaired > self._unpaired_reported:
            self._unpaired_reported = unpaired
            message = (f"at least {unpaired} image(s) found no camera_info stamped within sync_slop_s "
                       f"({self.sync_slop_s:g} s) among the last sync_queue_size ({self.sync_queue_size}) messages")
            # messages over one common window: a burst's own-span rates differ by their jitter, and a window not
            # yet full is no rate
            recent = {s.role: s.recent for s in self.inputs.statuses()}
            advice = pairing_advice(self._last_stamp_ns.get("image"), self._last_stamp_ns.get("camera_info"),
                                    self.sync_slop_s,
                                    arrivals=(recent.get("image", 0), recent.get("camera_info", 0)),
                                    slop="sync_slop_s", queue="sync_queue_size",
                                    how=" (read-only: set it at start-up, -p NAME:=VALUE)")
            self.driver.problem("sync", f"{message}; {advice}", counter="sync_warnings")

    def callback_failed(self, exc: Exception) -> None:
        """A subscription callback raised (``spin_until_shutdown``): counted and logged, throttled; the node goes on.
        An image whose stamp is not a time, refused by the real message_filters (``Time.from_msg`` raises), is a
        header problem (bad input), not the node's fault."""
        if isinstance(exc, ValueError) and self._invalid_stamp:
            self._problem("header", f"{HEADER_PROBLEMS['invalid_stamp']}; message_filters cannot pair it ({exc}): "
                                    "dropped", counter="header_problems")
            return
        self._problem("callback", f"a message callback failed: {type(exc).__name__}: {exc}; the message is dropped",
                      counter="internal_errors", error=True)

    def publish_diagnostics(self) -> None:
        self._check_pairing()
        mismatches = self.qos_mismatches()
        header = conversions.make_header(self.types, self.get_clock().now().nanoseconds, "")
        info = self.driver.info(**{f"camera.{k}": v for k, v in self.camera_info.items()},
                                model=self.model_description,
                                compat_fallbacks=",".join(FALLBACKS) or "none",
                                unknown_parameters=", ".join(self.unknown_parameters) or "none",
                                qos_incompatible="; ".join(mismatches.values()) or "none")
        # hardware_id: the camera this instance serves (its image topic); the compute device is the `device` value
        node_name, camera = self.get_fully_qualified_name(), topics.base_image_topic(self.image_sub.sub.topic_name)
        array = diagnostics.make_diagnostic_array(self.types, header, self.stats.snapshot(),
                                                  name=diagnostics.status_name(node_name, "pipeline"),
                                                  hardware_id=camera, info=info, warnings=list(mismatches.values()))
        for status in self.inputs.statuses():  # one status per input, as diagnostic_updater's TopicDiagnostic
            array.status.append(diagnostics.make_input_status(self.types, status, self.inputs.inputs[status.role][1],
                                                              node_name=node_name, hardware_id=camera))
        self.diag_pub.publish(array)

    # ------------------------------------------------------------------------------------ shutdown

    def destroy_node(self) -> None:
        """Stop the worker, free the model (and GPU memory), then destroy the ROS entities."""
        self._decoder.shutdown(wait=True, cancel_futures=True)
        self._stop = True
        self.driver.notify()
        self._worker.join(timeout=30.0)
        if self._worker.is_alive():  # mid-inference on a stalled device: the model goes anyway, the thread is a daemon
            self.get_logger().error("the inference thread did not stop within 30 s; releasing the model anyway")
        self.pipeline.close()
        super().destroy_node()


def _type_name(msg_type: type) -> str:
    """``sensor_msgs.msg.Image`` -> ``'sensor_msgs/msg/Image'``."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


class _LogAdapter:
    """``logging``-style calls (``warning(fmt, *args)``) onto an rclpy logger."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def warning(self, msg: str, *args: Any) -> None:
        self._logger.warning(msg % args if args else msg)

    def info(self, msg: str, *args: Any) -> None:
        self._logger.info(msg % args if args else msg)


def spin_until_shutdown(node: Node, on_callback_error: Callable[[Exception], None] | None = None) -> None:
    """``rclpy.spin(node)`` until Ctrl-C, SIGTERM or ``rclpy.shutdown()``; returns quietly on each.

    A callback that raises anything but a ``RuntimeError`` (a library's own check on a message: the real
    message_filters builds an rclpy ``Time`` from each header, which raises ``ValueError`` for a negative stamp) is
    handed to ``on_callback_error`` and spinning goes on: bad input never stops the node. Without
    ``on_callback_error`` it propagates.

    A signal that lands between the executor's ``context.ok()`` check and the creation of its wait set surfaces
    as ``RCLError`` ("failed to initialize wait set: the given context is not valid") instead of
    ``ExternalShutdownException`` (rclpy Jazzy ``Executor._wait_for_ready_callbacks``); with the context shut down
    that is the same requested shutdown, not a failure.

    Raises:
        RuntimeError: from the executor while the context is still valid (a real failure).
    """
    while True:
        try:
            rclpy.spin(node)
            return
        except (KeyboardInterrupt, ExternalShutdownException):
            return
        except RuntimeError:
            if node.context.ok():
                raise
            return
        except Exception as exc:
            if on_callback_error is None or not node.context.ok():
                raise
            on_callback_error(exc)


def init_failure_message(exc: Exception) -> str:
    """The fatal line for ``rclpy.init`` refusing to start: rcl raises the same RuntimeError for bad ROS arguments (a
    missing ``--params-file``, a bad remapping) and for a log directory it cannot create (a read-only HOME)."""
    text = str(exc)
    if "failed to initialize logging" in text or "Failed to create log directory" in text:  # rcl's own wording
        return (f"cannot start: ROS cannot create its log directory ({text}); set ROS_LOG_DIR (or ROS_HOME) to a "
                "writable folder")
    return f"cannot start: bad ROS arguments: {text}"


def main(args: list[str] | None = None, *, on_shutdown: Callable[[Any], None] | None = None) -> int:
    """``ros2 run mtl3d_perception perception_node`` (the Jazzy examples_rclpy_executors listener pattern).

    Returns 0 on a requested shutdown (also one that interrupts the start), 1 when the node cannot start (bad ROS
    arguments, parameters or model) or its executor fails, with one fatal log line naming the problem and no
    traceback. ``on_shutdown(logger)`` runs as the shutdown begins, before the node is destroyed (the executable,
    ``ros.node_main``, takes further signals there; in-process callers keep their handlers).
    """
    try:  # a missing or malformed --params-file, a bad remapping: rcl refuses the arguments
        rclpy.init(args=args)
    except RuntimeError as exc:
        rclpy.logging.get_logger(topics.NODE_NAME).fatal(init_failure_message(exc))  # no node name yet
        return 1
    node = None
    try:
        try:
            node = PerceptionNode()
        except (FileNotFoundError, ValueError, RuntimeError, ParameterException, NameValidationException) as exc:
            if not rclpy.ok():  # a signal shut the context down while the node was being built
                return 0
            rclpy.logging.get_logger(getattr(exc, "logger_name", topics.NODE_NAME)).fatal(f"cannot start: {exc}")
            return 1
        for path in params.params_file_paths(list(sys.argv if args is None else args)):
            if problem := params.params_file_problem(path, node.get_fully_qualified_name()):  # rcl says nothing
                node.get_logger().warning(problem)
                node.unknown_parameters.append(f"params file {path}: no section for this node")
        try:
            spin_until_shutdown(node, node.callback_failed)
        except RuntimeError as exc:  # the executor failed while the context was valid: not a start-up problem
            node.get_logger().fatal(f"stopped: {type(exc).__name__}: {exc}")
            return 1
    except KeyboardInterrupt:
        pass
    finally:
        if on_shutdown is not None:
            on_shutdown(node.get_logger() if node is not None else rclpy.logging.get_logger(topics.NODE_NAME))
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
