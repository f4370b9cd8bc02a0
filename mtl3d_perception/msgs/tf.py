"""TF messages and the runtime, written once for the node and replay: poses in, transforms in.

- :func:`pose_from_tf`: a frame's ``T_world_cam`` through the tf2_ros ``Buffer`` API (``lookup_transform``), the
  real Buffer on a robot, the compat one (``ros.compat.tf2_ros``) in CI and in replay; :func:`latest_stamp_ns`: the
  newest time a chain can be looked up at; :func:`tf_frames`: the frame ids a Buffer holds (for messages);
- :func:`ingest_tf`: a ``tf2_msgs/TFMessage`` into such a Buffer (``set_transform`` / ``set_transform_static``),
  what ``tf2_ros.TransformListener`` does with each message, so replay feeds its buffer the way the node's
  listener does.

No rclpy import: the node passes ``rclpy.time.Time`` as ``time_type`` (the real Buffer needs it); replay passes
nothing and the compat Buffer takes integer nanoseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mtl3d_perception.msgs.conversions import stamp_to_ns, transform_to_matrix
from mtl3d_perception.runtime.frames import Frame

AUTHORITY = "default_authority"  # what tf2_ros.TransformListener passes as the authority


def pose_from_tf(buffer: Any, world_frame: str, frame: Frame, *,
                 time_type: Callable[..., Any] | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(T_world_cam [4,4] float64, None)`` of ``frame`` at its stamp, or ``(None, why not)``; never waits.

    Args:
        buffer: a tf2_ros ``Buffer`` (``lookup_transform(target, source, time)``).
        world_frame: the fixed frame (``target``); the frame's ``frame_id`` is the source.
        frame: the camera frame; its ``stamp_ns`` is the lookup time.
        time_type: builds the lookup time as ``time_type(nanoseconds=stamp_ns)`` (``rclpy.time.Time``); None
            passes the integer nanoseconds (the compat Buffer).
    """
    try:  # rclpy's Time refuses what is not a time: that too is a failed lookup, never an exception
        time = frame.stamp_ns if time_type is None else time_type(nanoseconds=frame.stamp_ns)
        ts = buffer.lookup_transform(world_frame, frame.frame_id, time)
        return transform_to_matrix(ts.transform), None
    except Exception as exc:  # tf2 exceptions, and anything odd in a transform message
        return None, f"{type(exc).__name__}: {exc}"


def tf_frames(buffer: Any) -> list[str]:
    """The frame ids a tf2_ros ``Buffer`` holds, sorted, read from ``all_frames_as_string()`` (tf2's lines
    ``Frame base_link exists with parent odom.``, or the compat Buffer's ``Frame base_link``); [] where it cannot say.
    For messages only (what a missing-frame lookup could have used instead)."""
    try:
        text = str(buffer.all_frames_as_string())
    except Exception:  # a Buffer without it: nothing to list
        return []
    names = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "Frame":
            names.add(words[1])
            if "parent" in words[:-1]:
                names.add(words[-1].rstrip("."))
    return sorted(names)


def latest_stamp_ns(buffer: Any, world_frame: str, frame_id: str, *,
                    time_type: Callable[..., Any] | None = None) -> int | None:
    """The newest time the chain ``world_frame <- frame_id`` can be looked up at (tf2's lookup at time 0), or
    None when there is no such chain (unknown or unconnected frames)."""
    time = 0 if time_type is None else time_type()
    try:
        ts = buffer.lookup_transform(world_frame, frame_id, time)
    except Exception:  # tf2 exceptions: no chain
        return None
    return stamp_to_ns(ts.header.stamp)


def ingest_tf(buffer: Any, msg: Any, *, static: bool, authority: str = AUTHORITY) -> int:
    """Every transform of a ``tf2_msgs/TFMessage`` into ``buffer``; returns how many it refused.

    A Buffer that refuses a transform (NaN, bad frame ids) logs it itself and returns False (compat) or raises a
    tf2 exception (real); either counts as refused and the others are still inserted.
    """
    insert = buffer.set_transform_static if static else buffer.set_transform
    refused = 0
    for transform in msg.transforms:
        try:
            if insert(transform, authority) is False:
                refused += 1
        except Exception:  # tf2.TransformException and malformed messages: one bad transform, not the message
            refused += 1
    return refused
