"""Fallback for ROS 2 ``message_filters`` (Subscriber + ApproximateTimeSynchronizer), same API subset.

message_filters is not installable from PyPI (see ``../shared/notes/ros2_ecosystem.md`` A.0), so CI and laptops
use this; a robot with ROS imports the real package (``mtl3d_perception.ros.compat`` picks). The matching
policy lives in ``runtime/sync.py`` so replay shares it. API per ros2/message_filters
``src/message_filters/__init__.py`` (``SimpleFilter.registerCallback(cb, *args)``, ``signalMessage``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtl3d_perception.msgs.conversions import header_stamp_ns
from mtl3d_perception.runtime.sync import ApproximateTimeSync


class SimpleFilter:
    """A filter with callbacks: ``registerCallback(cb, *args)`` then ``signalMessage(*msgs)`` calls ``cb(*msgs, *args)``."""

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple]] = {}

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:
        conn = len(self.callbacks)
        self.callbacks[conn] = (cb, args)
        return conn

    def signalMessage(self, *msgs: Any) -> None:
        for cb, args in list(self.callbacks.values()):
            cb(*(msgs + args))


class Subscriber(SimpleFilter):
    """``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)``: kwargs go to ``node.create_subscription``."""

    def __init__(self, node: Any, msg_type: type, topic: str, qos_profile: Any = 10, **kwargs: Any) -> None:
        super().__init__()
        self.node = node
        self.topic = topic
        self.sub = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:
        return self.topic

    def __getattr__(self, key: str) -> Any:
        """Like the real Subscriber, behave as the underlying subscription for everything else."""
        sub = self.__dict__.get("sub")
        if sub is None:
            raise AttributeError(key)
        return getattr(sub, key)


class ApproximateTimeSynchronizer(SimpleFilter):
    """``ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)``; ``slop`` in seconds.

    ``queues`` (one ``{stamp_ns: msg}`` per input) and ``lock`` are the real class's attributes, so a caller can
    clear them the same way on both; unlike the real class, this one also clears them itself when time jumps back
    (``runtime/sync.py``).
    """

    def __init__(self, fs: list[SimpleFilter], queue_size: int, slop: float, allow_headerless: bool = False) -> None:
        super().__init__()
        if allow_headerless:
            raise ValueError("allow_headerless is not supported by the compat ApproximateTimeSynchronizer")
        self.queue_size = queue_size
        self._sync = ApproximateTimeSync(len(fs), queue_size, float(slop), self.signalMessage)
        self.queues, self.lock = self._sync.queues, self._sync.lock
        self.input_connections = [f.registerCallback(self.add, i) for i, f in enumerate(fs)]

    @property
    def slop(self) -> float:
        return self._sync.slop_ns * 1e-9

    @slop.setter
    def slop(self, value: float) -> None:
        self._sync.set_slop(float(value))

    def add(self, msg: Any, index: int) -> None:
        self._sync.add(index, header_stamp_ns(msg.header.stamp), msg)


class TimeSynchronizer(ApproximateTimeSynchronizer):
    """Exact stamps only (``slop`` 0)."""

    def __init__(self, fs: list[SimpleFilter], queue_size: int) -> None:
        super().__init__(fs, queue_size, 0.0)
