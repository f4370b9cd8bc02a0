"""Fallback for ROS 2 ``tf2_ros`` (Buffer + TransformListener + the exception tree), same API subset.

tf2_ros is not installable from PyPI (see ``../shared/notes/ros2_ecosystem.md`` A.0); the transform tree itself
is ``runtime/tf_buffer.py`` (shared with replay). API per ros2/geometry2 ``tf2_ros_py/tf2_ros/buffer.py`` and
``transform_listener.py``: ``Buffer(cache_time=None, node=None)``, ``set_transform(transform, authority)``,
``set_transform_static``, ``lookup_transform(target, source, time, timeout)``, ``can_transform``,
``wait_for_transform_async`` (a future completed by the new-data callbacks, as in the real Buffer);
``TransformListener(buffer, node, *, qos=None, static_qos=None)``.

Like the real Buffer, one given a ``node`` follows that node's clock: when ROS time jumps back by more than 1 s
(``use_sim_time`` with a looping bag or a restarted simulation) the dynamic transforms are cleared.

Differences, on purpose: lookups never wait (``timeout`` is accepted and ignored; callers poll from their own
thread, which is what the node does, woken by ``wait_for_transform_async`` — a waiting lookup would block the
executor, geometry2 #327),
``set_transform`` takes an optional ``is_static`` so tests can feed the buffer directly, and a rejected (NaN, zero
quaternion) transform is counted and reported through ``TransformBuffer.reject``: the node hooks that into its
/diagnostics and logger (``core.on_problem``); unhooked, it is logged at most once per ``throttled_log.LOG_THROTTLE_S``
with a count, not once per message. The listener subscribes to ``/tf`` and ``/tf_static`` when ``tf2_msgs`` is
importable (`make venv` builds it, the ROS wheels on PyPI lack it); otherwise it warns and says why in
``unavailable``, and only ``set_transform`` feeds the buffer.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from mtl3d_perception.msgs import conversions
from mtl3d_perception.resources import checkout_root
from mtl3d_perception.runtime.frames import JUMP_BACK_S
from mtl3d_perception.runtime.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    InvalidArgumentException,
    LookupException,
    TransformBuffer,
    TransformException,
)

__all__ = [
    "Buffer",
    "ConnectivityException",
    "ExtrapolationException",
    "InvalidArgumentException",
    "LookupException",
    "TransformException",
    "TransformListener",
]

DEFAULT_TF_TOPIC = "/tf"
DEFAULT_STATIC_TF_TOPIC = "/tf_static"


def _to_ns(time: Any) -> int:
    """rclpy Time, builtin_interfaces/Time or integer nanoseconds -> ns."""
    if time is None:
        return 0
    if hasattr(time, "nanoseconds"):
        return int(time.nanoseconds)
    if hasattr(time, "nanosec"):
        return conversions.stamp_to_ns(time)
    return int(time)


class Buffer:
    """tf2_ros.Buffer over :class:`TransformBuffer`.

    Args:
        cache_time: rclpy Duration (or seconds) of dynamic data kept; tf2's default is 10 s.
        node: an rclpy node whose clock's backward jumps clear the buffer (as the real Buffer does).
        types: message classes for the TransformStamped results (default: the installed rclpy ones).
    """

    def __init__(self, cache_time: Any = None, node: Any = None, *, types: Any = None) -> None:
        seconds = 10.0 if cache_time is None else (
            cache_time.nanoseconds * 1e-9 if hasattr(cache_time, "nanoseconds") else float(cache_time))
        self.core = TransformBuffer(cache_time_s=seconds)
        self._types = types
        self.node = node
        self.jump_handle = None
        self._new_data_callbacks: list[Any] = []  # called after each inserted transform (the real Buffer's list)
        self._callbacks_lock = threading.RLock()
        if node is not None:
            from rclpy.clock import JumpThreshold
            from rclpy.duration import Duration

            threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-JUMP_BACK_S),
                                      on_clock_change=True)
            self.jump_handle = node.get_clock().create_jump_callback(threshold, post_callback=self.time_jump_callback)

    @property
    def rejected(self) -> int:
        """Transforms ignored because they could not be used (NaN, zero quaternion, bad frame names)."""
        return self.core.rejected

    def time_jump_callback(self, time_jump: Any = None) -> None:
        """The node's clock jumped back (or switched between system and ROS time): forget the dynamic transforms."""
        self.core.report("time_jump", "Detected jump back in time. Clearing tf buffer.")
        self.clear()

    @property
    def types(self) -> Any:
        if self._types is None:
            self._types = conversions.rclpy_types()
        return self._types

    def set_transform(self, transform: Any, authority: str, is_static: bool = False) -> bool:
        """Insert a ``geometry_msgs/TransformStamped``. Like tf2, an invalid transform is logged with tf2's code
        (``TransformBuffer.set_transform_matrix``; a quaternion: ``TF_NAN_INPUT`` / ``TF_DENORMALIZED_QUATERNION``)
        and ignored."""
        parent, child = transform.header.frame_id, transform.child_frame_id
        stamp = transform.header.stamp
        if int(stamp.sec) < 0 or int(stamp.nanosec) < 0:  # rclpy's Time refuses these; nanosec >= 1e9 it carries over
            self.core.reject(f"TF_OLD_DATA: ignoring transform {parent} -> {child} from authority {authority}: its stamp "
                             f"(sec {stamp.sec}, nanosec {stamp.nanosec}) is not a time")
            return False
        try:
            T = conversions.transform_to_matrix(transform.transform)
        except ValueError as exc:  # the quaternion (geometry.check_unit_quaternion): NaN / inf, or not of norm 1
            q = transform.transform.rotation
            code = "TF_NAN_INPUT" if not np.isfinite([q.x, q.y, q.z, q.w]).all() else "TF_DENORMALIZED_QUATERNION"
            self.core.reject(f"{code}: ignoring transform {parent} -> {child} from authority {authority}: {exc}")
            return False
        try:
            self.core.set_transform_matrix(parent, child, conversions.stamp_to_ns(stamp), T,
                                           is_static=is_static, authority=authority)
        except InvalidArgumentException as exc:  # its message starts with tf2's code
            self.core.reject(f"ignoring transform {parent} -> {child} from authority {authority}: {exc}")
            return False
        self._call_new_data_callbacks()
        return True

    def _call_new_data_callbacks(self) -> None:
        with self._callbacks_lock:
            callbacks = list(self._new_data_callbacks)
        for callback in callbacks:
            callback()

    def wait_for_transform_async(self, target_frame: str, source_frame: str, time: Any) -> Any:
        """An ``rclpy.task.Future`` that completes with the transform once it can be looked up.

        Cancelling the future removes its new-data callback, as in the real Buffer.
        """
        from rclpy.task import Future

        fut = Future()
        stamp_ns = _to_ns(time)

        def on_new_data() -> None:
            if fut.done():
                return
            try:
                if self.can_transform(target_frame, source_frame, stamp_ns):
                    fut.set_result(self.lookup_transform(target_frame, source_frame, stamp_ns))
            except Exception as exc:  # a malformed request: end the wait with it
                fut.set_exception(exc)

        on_new_data()
        if not fut.done():
            with self._callbacks_lock:
                self._new_data_callbacks.append(on_new_data)

            def remove(_: Any) -> None:
                with self._callbacks_lock:
                    if on_new_data in self._new_data_callbacks:
                        self._new_data_callbacks.remove(on_new_data)

            fut.add_done_callback(remove)
        return fut

    def set_transform_static(self, transform: Any, authority: str) -> bool:
        return self.set_transform(transform, authority, is_static=True)

    def lookup_transform(self, target_frame: str, source_frame: str, time: Any, timeout: Any = None) -> Any:
        """``TransformStamped`` taking points from ``source_frame`` to ``target_frame`` at ``time`` (0: latest).

        Raises:
            LookupException, ConnectivityException, ExtrapolationException (never waits).
        """
        T, stamp_ns = self.core.lookup_matrix_with_stamp(target_frame, source_frame, _to_ns(time))
        header = conversions.make_header(self.types, stamp_ns, target_frame)
        return conversions.make_transform_stamped(self.types, header, source_frame, T)

    def can_transform(self, target_frame: str, source_frame: str, time: Any, timeout: Any = None,
                      return_debug_tuple: bool = False) -> Any:
        try:
            self.core.lookup_matrix(target_frame, source_frame, _to_ns(time))
        except TransformException as exc:
            return (False, str(exc)) if return_debug_tuple else False
        return (True, "") if return_debug_tuple else True

    def all_frames_as_string(self) -> str:
        return "".join(f"Frame {name}\n" for name in sorted(self.core.all_frames()))

    def clear(self) -> None:
        self.core.clear()


class TransformListener:
    """Feeds a :class:`Buffer` from ``/tf`` and ``/tf_static`` (when ``tf2_msgs`` is importable)."""

    def __init__(self, buffer: Buffer, node: Any, *, spin_thread: bool = False, qos: Any = None,
                 static_qos: Any = None, tf_topic: str = DEFAULT_TF_TOPIC,
                 tf_static_topic: str = DEFAULT_STATIC_TF_TOPIC) -> None:
        if spin_thread:
            raise ValueError("spin_thread=True is not supported by the compat TransformListener; spin the node")
        self.buffer = buffer
        self.node = node
        self.subscriptions: list[Any] = []
        self.unavailable: str | None = None  # why /tf and /tf_static are not subscribed (None: they are)
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as exc:
            build = " or, in the source checkout, `make venv` (builds it into .venv)" if checkout_root() else ""
            self.unavailable = (f"tf2_msgs is not importable ({exc}); source a ROS 2 install (the ROS wheels on PyPI "
                                f"lack tf2_msgs){build}")
            node.get_logger().warning(f"/tf and /tf_static are not subscribed: {self.unavailable}")
            return
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=100)
        static_qos = static_qos or QoSProfile(
            depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE)
        # Own callback group: TF keeps flowing while other callbacks of the node run (as tf2_ros does).
        group = MutuallyExclusiveCallbackGroup()
        self.subscriptions = [
            node.create_subscription(TFMessage, tf_topic, self.callback, qos, callback_group=group),
            node.create_subscription(TFMessage, tf_static_topic, self.static_callback, static_qos, callback_group=group),
        ]

    def callback(self, data: Any) -> None:
        who = "default_authority"
        for transform in data.transforms:
            self.buffer.set_transform(transform, who)

    def static_callback(self, data: Any) -> None:
        who = "default_authority"
        for transform in data.transforms:
            self.buffer.set_transform_static(transform, who)

    def unregister(self) -> None:
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.subscriptions = []
