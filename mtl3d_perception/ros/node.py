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
``~/semantic/image`` (mono8) + ``~/semantic/image_color`` (rgb8), ``~/normals/image`` (32FC3) +
``~/normals/image_color`` (rgb8), ``~/boundary/image`` (mono8), each with its sibling ``camera_info``
(``~/depth/camera_info``, ...), ``~/points`` (PointCloud2 x, y, z, rgb, label) and ``/diagnostics``. Parameters:
see ``PARAMETERS`` (also ``config/perception.yaml``); values their type and range cannot refuse are checked by
``runtime/params.py``.

The node only wires ROS to ``runtime.PerceptionPipeline`` (STYLE §2.13). Threads: the executor runs the
subscriptions, TF and the diagnostics timer; a decoder thread turns synchronised messages into frames (a JPEG / PNG
is decoded only after its header passed ``max_image_pixels``, and never on the executor); one worker thread owns
the pipeline: it applies parameter changes between frames, takes the newest synchronised frame whose TF is
available (polling the buffer without blocking, up to ``tf_timeout_s``, then single-view), runs the pipeline and
publishes. Bad input never stops the node: a
throttled log line, a diagnostics entry, the frame is dropped.

Time going back by more than ``JUMP_BACK_S`` (a looping bag, a restarted simulation) clears everything that could
pair frames across the jump: the synchroniser's queues, the frames waiting for TF, the frame history and the TF
cache (tf2_ros clears the latter itself only when the node's clock jumps, i.e. under ``use_sim_time``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mtl3d_perception import topics
from mtl3d_perception.msgs import conversions
from mtl3d_perception.msgs.camera_model import IMAGE_KINDS, CameraModels, resolve_image_kind
from mtl3d_perception.msgs.messages import (
    HEADER_PROBLEMS,
    BadInput,
    frame_from_messages,
    products_to_messages,
)
from mtl3d_perception.ros import diagnostics
from mtl3d_perception.ros.compat import FALLBACKS, message_filters, tf2_ros
from mtl3d_perception.ros.input_monitor import InputMonitor
from mtl3d_perception.runtime import params
from mtl3d_perception.runtime.frames import JUMP_BACK_S, MAX_IMAGE_PIXELS, Frame
from mtl3d_perception.runtime.history import PairingConfig
from mtl3d_perception.runtime.loading import load_model, resolve_device
from mtl3d_perception.runtime.pipeline import CLOUD_FRAMES, OUTPUT_RESOLUTIONS, PRECISIONS, PerceptionPipeline
from mtl3d_perception.runtime.stats import RuntimeStats
from mtl3d_perception.runtime.throttled_log import LOG_THROTTLE_S, ThrottledLog

# name -> (default, description, read_only, range (lo, hi) or choices tuple or None)
PARAMETERS: dict[str, tuple[Any, str, bool, Any]] = {
    "model_path": ("", "checkpoint (.safetensors); '' = shipped models/default.safetensors; 'preset:NAME' = random weights", True, None),
    "device": ("auto", "torch device: auto, cpu, cuda, cuda:N", True, None),
    "num_threads": (1, "torch CPU threads (0: torch default; 1 avoids stalls when other processes hold cores)", True, (0, 256)),
    "image_topic": (topics.IMAGE_INPUT, "input sensor_msgs/Image (a relative name resolves in the node's namespace)",
                    True, None),
    "image_transport": ("raw", "raw: sensor_msgs/Image on image_topic; compressed: sensor_msgs/CompressedImage "
                        "(jpeg/png) on image_topic + '/compressed'", True, ("raw", "compressed")),
    "camera_info_topic": ("", "input sensor_msgs/CameraInfo; '' = camera_info beside image_topic (image_transport's "
                          "rule)", True, None),
    "image_kind": ("auto", "image_raw: rectify with camera_info D/R/P; image_rect: already rectified, use P; "
                   "auto: image_rect when the image topic's name contains 'rect'", True, IMAGE_KINDS),
    "sync_slop_s": (0.02, "largest image / camera_info stamp difference paired", True, (0.0, 1.0)),
    # message_filters' examples use 10; a queue of 2 loses every pair once images lag camera_info by 2 periods
    "sync_queue_size": (10, "image / camera_info messages kept per input for pairing", True, (1, 1000)),
    "precision": ("fp32", "inference precision (fp16 and bf16 need a CUDA device)", False, tuple(PRECISIONS)),
    "world_frame": (topics.WORLD_FRAME, "fixed frame the camera poses are looked up in (a tf2 frame id: no leading '/')",
                    False, None),
    "min_baseline_m": (0.05, "source view: smallest useful baseline", False, (0.0, 100.0)),
    "min_rotation_deg": (5.0, "source view: or smallest useful rotation", False, (0.0, 180.0)),
    "max_pair_age_s": (1.0, "source view: oldest usable source frame", False, (0.0, 60.0)),
    # visual(-inertial) odometry publishes a frame's pose 0.05-0.2 s after the image; rtabmap waits 0.2 s
    # (wait_for_transform), we leave margin above that
    "tf_timeout_s": (0.3, "wait this long for TF of a frame, then process it single-view", False, (0.0, 10.0)),
    "publish_depth": (True, "publish ~/depth/image and ~/depth/camera_info", False, None),
    "publish_semantic": (True, "publish ~/semantic/image, ~/semantic/image_color and ~/semantic/camera_info", False,
                         None),
    "publish_normals": (True, "publish ~/normals/image, ~/normals/image_color and ~/normals/camera_info", False, None),
    "publish_boundary": (True, "publish ~/boundary/image and ~/boundary/camera_info", False, None),
    "publish_points": (True, "publish ~/points", False, None),
    "point_stride": (4, "cloud: every n-th pixel in x and y", False, (1, 64)),
    "cloud_frame": ("camera", "cloud frame: camera (image frame_id) or world (world_frame)", False, CLOUD_FRAMES),
    "output_resolution": ("network", "output image size: network (model input) or camera", False, OUTPUT_RESOLUTIONS),
    "diagnostics_period_s": (1.0, "period of /diagnostics", True, (0.01, 60.0)),
    "max_image_pixels": (MAX_IMAGE_PIXELS, "larger images (width x height; a compressed image's header is read "
                         "before decoding) are bad input; also bounds output_resolution=camera", False, (4, 2**40)),
}
OUTPUT_GROUPS = tuple(dict.fromkeys(topics.output_group(name) for name in topics.OUTPUTS))  # publish_<group>
SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
                        history=HistoryPolicy.KEEP_LAST, depth=1)
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                        history=HistoryPolicy.KEEP_LAST, depth=2)
MAX_PENDING = 30  # frames waiting for TF (and messages waiting to be decoded); older ones are dropped
JUMP_BACK_NS = int(JUMP_BACK_S * 1e9)
NON_EMPTY = ("image_topic",)
FRAME_IDS = ("world_frame",)  # checked as tf2 checks frame ids (runtime.params.frame_id_problem)


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
        # validate before declaring, so start-up values (overrides, params file) get the same checks as later sets
        self.add_on_set_parameters_callback(self._validate_parameters)
        for name, (default, description, read_only, constraint) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name, default, description, read_only, constraint))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.add_post_set_parameters_callback(self._apply_parameters)

        self.types = conversions.rclpy_types()
        self.stats = RuntimeStats()
        self._log = ThrottledLog(self.get_logger(), LOG_THROTTLE_S)
        self._last_log: dict[str, float] = {}
        if FALLBACKS and os.environ.get("ROS_DISTRO"):  # a sourced ROS install should have the real ones
            self.get_logger().warning(
                f"using the in-package fallbacks for: {', '.join(FALLBACKS)}, although ROS "
                f"{os.environ['ROS_DISTRO']} is sourced; install them (rosdep install, package.xml: tf2_ros_py, "
                "message_filters)")
        elif FALLBACKS:
            self.get_logger().info(f"using the in-package fallbacks for: {', '.join(FALLBACKS)}")

        import torch

        if p["num_threads"] > 0:
            torch.set_num_threads(int(p["num_threads"]))
        self.device = resolve_device(p["device"])
        if model is None:
            model, self.model_description = load_model(p["model_path"], device=self.device, log=self.get_logger())
        else:
            self.model_description = f"in-process {type(model).__name__}"
        self.pipeline = PerceptionPipeline(
            model, device=self.device, precision=p["precision"], pairing=self._pairing(p),
            output_resolution=p["output_resolution"], point_stride=p["point_stride"], cloud_frame=p["cloud_frame"],
            world_frame=p["world_frame"], outputs=self._outputs(p), max_image_pixels=p["max_image_pixels"],
            logger=_LogAdapter(self.get_logger()),
        )
        self.max_image_pixels = int(p["max_image_pixels"])
        self.tf_timeout_s = float(p["tf_timeout_s"])
        self.publish_enabled = {group: bool(p[f"publish_{group}"]) for group in OUTPUT_GROUPS}
        image_topic = p["image_topic"] + (topics.COMPRESSED_SUFFIX if p["image_transport"] == "compressed" else "")
        self.image_kind = resolve_image_kind(p["image_kind"], image_topic)
        self.camera_info = {"image_kind": self.image_kind,
                            "image_kind_from": "image topic name" if p["image_kind"] == "auto" else "parameter"}
        self.cameras = CameraModels()
        self._updates: dict[str, Any] = {}  # pipeline options, applied by the worker between frames
        self._updates_lock = threading.Lock()
        self.get_logger().info(f"model: {self.model_description} on {self.device} ({self.pipeline.precision}), "
                               f"input {self.pipeline.net_size[0]}x{self.pipeline.net_size[1]}")

        self.tf_buffer = tf2_ros.Buffer(node=self)  # with the node: cleared when its (sim) clock jumps back
        if hasattr(self.tf_buffer, "core"):  # the compat buffer: its rejects are counted here (tf2_ros logs its own)
            self.tf_buffer.core.on_problem = self._tf_problem
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)

        self.pubs = {name: self.create_publisher(self.types[msg_type], f"~/{name}", OUTPUT_QOS)
                     for name, (msg_type, _) in topics.OUTPUTS.items()}
        self.diag_pub = self.create_publisher(self.types["diagnostic_msgs/msg/DiagnosticArray"],
                                              topics.DIAGNOSTICS_TOPIC, 10)
        self.diag_timer = self.create_timer(float(p["diagnostics_period_s"]), self.publish_diagnostics)

        self._pending: deque[tuple[Frame, float]] = deque()
        # decoding (a JPEG / PNG of up to max_image_pixels) runs here, never on the executor thread
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtl3d_decode")
        self._decoding = 0  # messages submitted to the decoder and not done yet
        self._generation = 0  # bumped by a time jump: frames decoded from before it are discarded
        self._cond = threading.Condition()
        self._stop = False
        self._reset = False
        self._last_stamp_ns: int | None = None  # newest synchronised frame
        self._last_image_ns: int | None = None  # newest image seen by the subscriber

        if p["image_transport"] == "compressed":
            image_type, image_topic = CompressedImage, p["image_topic"] + topics.COMPRESSED_SUFFIX
        else:
            image_type, image_topic = Image, p["image_topic"]
        self.image_sub = message_filters.Subscriber(self, image_type, image_topic, qos_profile=SENSOR_QOS)
        info_topic = p["camera_info_topic"] or topics.camera_info_topic_for(p["image_topic"])
        self.info_sub = message_filters.Subscriber(self, CameraInfo, info_topic, qos_profile=SENSOR_QOS)
        # registered before the synchroniser, so they see each message first (a time jump clears its queues)
        self.image_sub.registerCallback(self.on_image)
        self.info_sub.registerCallback(self.on_camera_info)
        self.sync = message_filters.ApproximateTimeSynchronizer([self.image_sub, self.info_sub],
                                                                int(p["sync_queue_size"]), p["sync_slop_s"])
        self.sync.registerCallback(self.on_frame)
        self.sync_queue_size, self.sync_slop_s = int(p["sync_queue_size"]), float(p["sync_slop_s"])
        self._unpaired_reported = 0
        self._start_input_monitor(image_type)
        # last: a constructor that fails earlier (a bad topic name) leaves no thread running on the model
        self._worker = threading.Thread(target=self._work, name="mtl3d_inference", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------ parameters

    @staticmethod
    def _pairing(p: dict[str, Any]) -> PairingConfig:
        return PairingConfig(min_baseline_m=p["min_baseline_m"], min_rotation_deg=p["min_rotation_deg"],
                             max_pair_age_s=p["max_pair_age_s"])

    @staticmethod
    def _outputs(p: dict[str, Any]) -> set[str]:
        wanted = {g for g in OUTPUT_GROUPS if p[f"publish_{g}"]}
        if wanted & {"normals", "points"}:
            wanted.add("depth")  # normals are masked and clouds back-projected with the depth
        return wanted

    def _validate_parameters(self, parameters: list[Any]) -> SetParametersResult:
        params_by_name = {param.name: param.value for param in parameters}
        for param in parameters:
            spec = PARAMETERS.get(param.name)
            if spec is None:
                continue
            constraint = spec[3]
            if isinstance(constraint, tuple) and isinstance(constraint[0], str) and param.value not in constraint:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} must be one of {', '.join(constraint)}, got {param.value!r}")
            if param.name in NON_EMPTY and not str(param.value).strip("/ "):
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} must not be empty, got {param.value!r}")
            reason = None
            if param.name in FRAME_IDS:
                reason = params.frame_id_problem(param.name, param.value)
            elif param.name == "precision":
                reason = params.precision_problem(param.value, self._device_for(params_by_name))
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

    def _apply_parameters(self, changed: list[Any]) -> None:
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        names = {param.name for param in changed}
        self.tf_timeout_s = float(p["tf_timeout_s"])
        self.max_image_pixels = int(p["max_image_pixels"])
        self.publish_enabled = {group: bool(p[f"publish_{group}"]) for group in OUTPUT_GROUPS}
        update = {"precision": p["precision"], "output_resolution": p["output_resolution"],
                  "point_stride": p["point_stride"], "cloud_frame": p["cloud_frame"],
                  "world_frame": p["world_frame"], "outputs": self._outputs(p),
                  "max_image_pixels": self.max_image_pixels}
        with self._updates_lock:
            self._updates.update(update)
            if names & {"min_baseline_m", "min_rotation_deg", "max_pair_age_s"}:
                self._updates["pairing"] = self._pairing(p)

    # ------------------------------------------------------------------------------------ input

    def _problem(self, kind: str, message: str, *, counter: str | None = None, error: bool = False) -> None:
        """Diagnostics entry + a log line throttled per kind (never once per frame); ``error``: the node's own fault."""
        self.stats.problem(kind, message, counter=counter, error=error)
        self._log(kind, f"{kind}: {message}", error=error)

    def _log_throttled(self, kind: str, log: Any, message: str) -> None:
        """``log(message)`` at most once per ``LOG_THROTTLE_S`` for each ``kind``."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= LOG_THROTTLE_S:
            self._last_log[kind] = now
            log(message)

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
        self.inputs.tick("image")
        stamp_ns = conversions.stamp_to_ns(image.header.stamp)
        last, self._last_image_ns = self._last_image_ns, max(stamp_ns, self._last_image_ns or stamp_ns)
        if last is not None and stamp_ns < last - JUMP_BACK_NS:
            self._last_image_ns = stamp_ns
            self._time_jump(last, stamp_ns, image.header.frame_id)

    def on_camera_info(self, info: Any) -> None:
        self.stats.count("camera_infos")
        self.inputs.tick("camera_info")

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
            f"{topics.TF_TOPIC} + {topics.TF_STATIC_TOPIC}, poses of the image frame in {self.pipeline.world_frame}")
        self.get_logger().info(f"inputs: image {image_topic} ({inputs['image'][1]}), camera_info {info_topic}, "
                               f"TF {tf_input}")
        self.input_timer = self.create_timer(1.0, self.check_inputs)

    def check_inputs(self) -> None:
        """Throttled warnings for inputs that stay silent and for images that come without camera_info."""
        own = {pub.topic_name for pub in self.pubs.values()}

        def topics_of(msg_type: str) -> list[str]:  # candidates for a mistyped input: not the node's own outputs
            return sorted(name for name, types in self.get_topic_names_and_types() if msg_type in types and name not in own)

        for kind, message in self.inputs.warnings(topics_of, self.count_publishers):
            self._log_throttled(kind, self.get_logger().warning, message)

    def _time_jump(self, last_ns: int, stamp_ns: int, frame_id: str) -> None:
        """Forget everything from before the jump, so no frame is paired (or posed) across it."""
        self._problem("time_jump", f"image stamp went back from {last_ns * 1e-9:.3f} s to {stamp_ns * 1e-9:.3f} s; "
                                   "clearing the frame history, the synchroniser and the TF cache",
                      counter="time_jumps")
        # message_filters keeps old stamps in its latest-only queues; newer-looking leftovers would evict every
        # new message on arrival, and the synchroniser would never fire again. ``queues`` and ``lock`` are
        # attributes of message_filters' TimeSynchronizer (Humble to Rolling) and of the compat one.
        with self.sync.lock:
            for queue in self.sync.queues:
                queue.clear()
        if self._tf_holds_data_after(stamp_ns + JUMP_BACK_NS, frame_id):
            self.tf_buffer.clear()
        with self._cond:
            self.stats.count("dropped", len(self._pending))
            self._pending.clear()
            self._last_stamp_ns = None
            self._reset = True
            self._generation += 1

    def _tf_holds_data_after(self, stamp_ns: int, frame_id: str) -> bool:
        """Whether the TF cache still has transforms newer than ``stamp_ns`` (not yet cleared for the jump)."""
        try:
            latest = self.tf_buffer.lookup_transform(self.pipeline.world_frame, frame_id, Time())
        except Exception:  # no chain (or a bad frame id): nothing of it could be paired anyway
            return True
        return conversions.stamp_to_ns(latest.header.stamp) > stamp_ns

    def on_frame(self, image: Any, info: Any) -> None:
        """Synchronised image + camera_info -> the decoder (executor thread: no decoding, no inference here)."""
        self.stats.count("received")
        with self._cond:
            if self._decoding >= MAX_PENDING:  # the decoder cannot keep up: drop the newest, as a full queue does
                self.stats.count("dropped")
                return
            self._decoding += 1
        try:
            self._decoder.submit(self._decode, image, info, time.monotonic(), self._generation)
        except RuntimeError:  # shut down
            with self._cond:
                self._decoding -= 1

    def _decode(self, image: Any, info: Any, arrived: float, generation: int) -> None:
        """Decoder thread: messages -> a pending frame, or a counted bad input."""
        try:
            frame = frame_from_messages(image, info, image_kind=self.image_kind, cameras=self.cameras,
                                        max_pixels=self.max_image_pixels)
        except BadInput as exc:
            self._problem(exc.kind, str(exc))
            return
        except Exception as exc:  # never let a message kill the decoder
            self._problem("internal", f"decoding failed: {type(exc).__name__}: {exc}", counter="internal_errors",
                          error=True)
            return
        finally:
            with self._cond:
                self._decoding -= 1
        if "camera_info" not in self.camera_info:
            self.camera_info["camera_info"] = self.cameras.get(info).describe(self.image_kind)
            self.get_logger().info(f"camera_info: {self.camera_info['camera_info']} "
                                   f"({self.image_kind} from the {self.camera_info['image_kind_from']})")
        if frame.header_problem:
            self._problem("header", HEADER_PROBLEMS[frame.header_problem], counter="header_problems")
        with self._cond:
            if generation != self._generation:  # time jumped back while this frame was being decoded
                self.stats.count("dropped")
                return
            if self._last_stamp_ns is not None and frame.stamp_ns < self._last_stamp_ns:
                # a small step back (jumps are handled in on_image): stale, a newer frame is already queued or done
                self.stats.count("dropped")
                self._problem("out_of_order", f"frame at {frame.stamp:.3f} s arrived after one at "
                                              f"{self._last_stamp_ns * 1e-9:.3f} s; dropped")
                return
            self._last_stamp_ns = frame.stamp_ns
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.stats.count("dropped")
            self._pending.append((frame, arrived))
            self._cond.notify()

    # ------------------------------------------------------------------------------------ worker

    def lookup_pose(self, frame: Frame) -> tuple[Any, str | None]:
        """(T_world_cam, None) or (None, why not) — never waits."""
        if frame.header_problem:
            return None, HEADER_PROBLEMS[frame.header_problem]
        try:
            ts = self.tf_buffer.lookup_transform(self.pipeline.world_frame, frame.frame_id,
                                                 Time(nanoseconds=frame.stamp_ns))
            return conversions.transform_to_matrix(ts.transform), None
        except Exception as exc:  # tf2 exceptions, and anything odd in a transform message
            cause = f"TF is not subscribed: {self.tf_unavailable}; " if self.tf_unavailable else ""
            return None, f"{cause}{type(exc).__name__}: {exc}"

    def _next_job(self) -> tuple[Frame, float, Any, str | None, bool] | None:
        """The newest pending frame with TF; else the newest one whose TF wait timed out; else None.

        The last item says whether time jumped back since the previous job (read where the job is taken, so a
        frame from before a jump never enters the history after the reset).
        """
        with self._cond:
            items = list(self._pending)
        if not items:
            return None
        now = time.monotonic()
        job = None
        last_error = None
        for frame, arrived in reversed(items):
            pose, error = self.lookup_pose(frame)
            if error is None:
                job = (frame, arrived, pose, None)
                break
            last_error = last_error or error
            if job is None and (frame.header_problem or now - arrived >= self.tf_timeout_s):
                job = (frame, arrived, None, error)  # newest timed-out frame, unless a newer one has TF
        if job is None:
            return None
        with self._cond:
            if not any(f is job[0] for f, _ in self._pending):
                return None  # cleared by a time jump meanwhile
            dropped = 0
            while self._pending[0][0] is not job[0]:
                self._pending.popleft()
                dropped += 1
            self._pending.popleft()
            reset, self._reset = self._reset, False
        self.stats.count("dropped", dropped)
        return (*job, reset)

    def _apply_updates(self) -> None:
        """Parameter changes (from the executor) applied to the pipeline between frames, in the worker."""
        with self._updates_lock:
            updates, self._updates = self._updates, {}
        if "pairing" in updates:
            self.pipeline.set_pairing(updates.pop("pairing"))
        if updates:
            self.pipeline.set_options(**updates)

    def _work(self) -> None:
        try:
            seconds = self.pipeline.warmup()
            self.get_logger().info(f"warm-up inference took {seconds:.2f} s; ready")
        except Exception as exc:
            self._problem("internal", f"warm-up failed: {type(exc).__name__}: {exc}", counter="internal_errors",
                          error=True)
        while True:
            with self._cond:
                while not self._stop and not self._pending:
                    self._cond.wait()
                if self._stop:
                    return
            try:
                self._apply_updates()
            except Exception as exc:
                self._problem("internal", f"applying parameters failed: {type(exc).__name__}: {exc}",
                              counter="internal_errors", error=True)
            job = self._next_job()
            if job is None:
                with self._cond:
                    self._cond.wait(timeout=0.005)  # TF arrives through the executor; poll without blocking it
                continue
            try:
                self._process(*job)
            except Exception as exc:  # never let the worker die
                self._problem("internal", f"{type(exc).__name__}: {exc}", counter="internal_errors", error=True)

    def _process(self, frame: Frame, arrived: float, pose: Any, tf_error: str | None, reset: bool) -> None:
        if tf_error is not None:
            if frame.header_problem is None:  # header problems are reported where the frame is made
                self._problem("tf", f"no pose of {frame.frame_id} in {self.pipeline.world_frame} at {frame.stamp:.3f} s "
                                    f"after {self.tf_timeout_s:.2f} s ({tf_error}); single-view. Raise the "
                                    "tf_timeout_s parameter if odometry publishes later", counter="tf_failures")
        if reset:
            self.pipeline.reset()
        try:
            products = self.pipeline.process(frame.with_pose(pose))
        except ValueError as exc:
            self._problem("frame", str(exc))
            return
        for kind, message in products.warnings:
            self._problem(kind, message)
        self.publish_products(products)
        self.stats.frame_done(products.timings, single_view=products.single_view, pair_reason=products.pair_reason,
                              end_to_end_s=time.monotonic() - arrived)

    # ------------------------------------------------------------------------------------ output

    def publish_products(self, products: Any) -> None:
        """Products -> messages on the enabled outputs (``publish_<group>`` parameters)."""
        enabled = [name for name in topics.OUTPUTS if self.publish_enabled[topics.output_group(name)]]
        for name, msg in products_to_messages(self.types, products, outputs=enabled).items():
            self.pubs[name].publish(msg)

    def _check_pairing(self) -> None:
        """Images that never found their camera_info (message_filters drops them without a word): say so, with the
        parameters that change it. Up to a queue's worth per input may still pair, so only more than that counts."""
        unpaired = self.stats.counts["images"] - self.stats.counts["received"] - self.sync_queue_size
        if unpaired > self._unpaired_reported:
            self._unpaired_reported = unpaired
            self._problem("sync", f"{unpaired} image(s) found no camera_info stamped within sync_slop_s "
                                  f"({self.sync_slop_s:g} s) among the last sync_queue_size ({self.sync_queue_size}) "
                                  "messages; raise sync_queue_size if camera_info arrives late, or sync_slop_s if "
                                  "the stamps differ", counter="sync_warnings")

    def publish_diagnostics(self) -> None:
        self._check_pairing()
        header = conversions.make_header(self.types, self.get_clock().now().nanoseconds, "")
        info = {**{f"camera.{k}": v for k, v in self.camera_info.items()},
                "device": self.device, "model": self.model_description, "precision": self.pipeline.precision,
                "input_size": f"{self.pipeline.net_size[0]}x{self.pipeline.net_size[1]}",
                "compat_fallbacks": ",".join(FALLBACKS) or "none"}
        array = diagnostics.make_diagnostic_array(self.types, header, self.stats.snapshot(),
                                                  name=f"{self.get_name()}: pipeline", hardware_id=self.device, info=info)
        for status in self.inputs.statuses():  # one status per input, as diagnostic_updater's TopicDiagnostic
            _, msg_type = self.inputs.inputs[status.role]
            array.status.append(diagnostics.make_status(
                self.types, status.level, name=f"{self.get_name()}: input {status.role}", message=status.message,
                hardware_id=self.device, values=[("topic", status.topic), ("type", msg_type),
                                                 ("messages", str(status.count)), ("rate_hz", f"{status.rate_hz:.2f}")]))
        self.diag_pub.publish(array)

    # ------------------------------------------------------------------------------------ shutdown

    def destroy_node(self) -> None:
        """Stop the worker, free the model (and GPU memory), then destroy the ROS entities."""
        self._decoder.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
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


def main(args: list[str] | None = None) -> int:
    """``ros2 run mtl3d_perception perception_node`` (the Jazzy examples_rclpy_executors listener pattern)."""
    rclpy.init(args=args)
    node = None
    try:
        node = PerceptionNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (FileNotFoundError, ValueError, RuntimeError, ParameterException, NameValidationException) as exc:
        rclpy.logging.get_logger(topics.NODE_NAME).fatal(f"cannot start: {exc}")
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
