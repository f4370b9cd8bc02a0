"""Approximate-time synchroniser core (no ROS): the policy of message_filters' Python ApproximateTimeSynchronizer.

Used by the compat ``message_filters`` (the node, where the real package is missing) and by replay. Written
here because message_filters is not installable from PyPI (``../shared/notes/ros2_ecosystem.md`` A.0); the
matching rule follows ros2/message_filters ``src/message_filters/__init__.py``: each input keeps its last
``queue_size`` items keyed by stamp; a new item fires the callback with the set of stamps (one per input,
each within ``slop`` of the new one) whose spread is below ``slop``, preferring the closest stamps; used
items are removed.

One difference, on purpose: an item older than the newest one added by more than ``jump_back_s``
(``frames.TimeJumpDetector``) means time jumped back (a looping bag, a restarted simulation) and clears every
queue first. message_filters keeps the old items, and since a full latest-only queue evicts its oldest stamp, every new item would be evicted on
arrival and the synchroniser would never fire again.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from mtl3d_perception.runtime.config import parameter_specs
from mtl3d_perception.runtime.frames import JUMP_BACK_S, TimeJumpDetector

MAX_SLOP_S = parameter_specs()["sync_slop_s"].constraint[1]  # the most sync_slop_s may be: offsets beyond are not a slop
SYNC_SLOP_S = parameter_specs()["sync_slop_s"].default  # the default slop: images with camera_info, and ground truth
MIN_INFO_PER_IMAGE = 0.8  # camera_info per image below which its rate, not the stamps, is what leaves images unpaired


class ApproximateTimeSync:
    """Group items from ``num_inputs`` streams whose stamps lie within ``slop_s`` of each other.

    Args:
        num_inputs: number of input streams (>= 1).
        queue_size: items kept per input; 1 gives latest-only behaviour; None: no count limit (replay, which
            pairs by stamp over the whole recording; ``max_age_s`` then bounds memory).
        slop_s: largest allowed stamp spread in a group, seconds.
        callback: called as ``callback(*items)`` in input order, from the thread that added the last item.
        jump_back_s: an item this much older than the newest one clears all queues (time jumped back);
            None keeps message_filters' behaviour.
        max_age_s: items stamped this much before the newest item seen are dropped unpaired; None: no age limit.

    ``queues`` (one ``{stamp_ns: item}`` per input) and ``lock`` carry message_filters' attribute names.
    """

    def __init__(self, num_inputs: int, queue_size: int | None, slop_s: float,
                 callback: Callable[..., Any] | None = None, *, jump_back_s: float | None = JUMP_BACK_S,
                 max_age_s: float | None = None) -> None:
        if num_inputs < 1 or (queue_size is not None and queue_size < 1) or not slop_s >= 0:
            raise ValueError(f"need num_inputs >= 1, queue_size >= 1 or None, slop_s >= 0; "
                             f"got {num_inputs}, {queue_size}, {slop_s}")
        self.queue_size = queue_size
        self.max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)
        self.slop_ns = int(slop_s * 1e9)
        self.jump = None if jump_back_s is None else TimeJumpDetector(jump_back_s)
        self.queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self._callbacks: list[Callable[..., Any]] = [callback] if callback else []
        self.lock = threading.Lock()

    @property
    def jumps_back(self) -> int:
        return 0 if self.jump is None else self.jump.jumps

    def register_callback(self, callback: Callable[..., Any]) -> None:
        self._callbacks.append(callback)

    def set_slop(self, slop_s: float) -> None:
        if not slop_s >= 0:
            raise ValueError(f"slop must be >= 0, got {slop_s}")
        self.slop_ns = int(slop_s * 1e9)

    def clear(self) -> None:
        with self.lock:
            for q in self.queues:
                q.clear()

    def add(self, index: int, stamp_ns: int, item: Any) -> bool:
        """Offer ``item`` of input ``index`` stamped ``stamp_ns``; returns True when it completed a group."""
        stamp_ns = int(stamp_ns)
        with self.lock:
            if self.jump is not None and self.jump.check(stamp_ns):
                for q in self.queues:
                    q.clear()
            queue = self.queues[index]
            queue[stamp_ns] = item
            while self.queue_size is not None and len(queue) > self.queue_size:
                del queue[min(queue)]
            if self.max_age_ns is not None:
                oldest = max(s for q in self.queues for s in q) - self.max_age_ns
                for q in self.queues:
                    for s in [s for s in q if s < oldest]:
                        del q[s]
            candidates = []
            for i, other in enumerate(self.queues):
                if i == index:
                    continue
                near = sorted((abs(s - stamp_ns), s) for s in other if abs(s - stamp_ns) <= self.slop_ns)
                if not near:
                    return False
                candidates.append([s for _, s in near])
            for combo in itertools.product(*candidates):
                stamps = list(combo)
                stamps.insert(index, stamp_ns)
                if max(stamps) - min(stamps) <= self.slop_ns:
                    group = [q.pop(s) for q, s in zip(self.queues, stamps)]
                    break
            else:
                return False
        for cb in self._callbacks:
            cb(*group)
        return True


def pairing_advice(image_ns: int | None, info_ns: int | None, slop_s: float, *, slop: str,
                   queue: str | None = None, how: str = "",
                   arrivals: tuple[int, int] | None = None) -> str:
    """What would pair images that found no camera_info, from the newest image and camera_info header stamps (ns;
    negative: not a time, ``conversions.header_stamp_ns(stamp, invalid=-1)``; None: none arrived).

    A zero-stamped (or negative-stamped) camera_info or image, far fewer camera_info than images (``arrivals``, below),
    or a camera_info as far away as ``sync_slop_s`` can be set (:data:`MAX_SLOP_S`) or more (another clock, a constant
    stamp) is the driver's to fix and no setting helps; an offset above ``slop_s`` needs ``slop`` above it; otherwise camera_info arrives late (``queue``, the node's sync_queue_size), or,
    in a recording (no ``queue``: replay pairs over the whole recording), those images' camera_info is missing from it. ``slop`` / ``queue`` name the settings as the caller's user sets them; ``how`` (e.g.
    " (read-only: ...)") follows advice to change one. ``arrivals``: (images, camera_infos) counted over one span (the
    node's last input window, replay's recording; not rates over each input's own span, which jitter apart): camera_info
    published less often than the images (fewer than :data:`MIN_INFO_PER_IMAGE` per image) pairs with only some of
    them, whatever the settings.
    """
    if info_ns is None:
        return "no camera_info has arrived: check camera_info_topic (the input warnings name what the graph has)"
    if image_ns is None:
        return (f"raise {queue} if camera_info arrives late, or {slop} if the stamps differ{how}" if queue
                else f"raise {slop} if the camera stamps them apart{how}")
    for what, stamp_ns in (("camera_info", info_ns), ("the image", image_ns)):
        if stamp_ns <= 0:
            stamp = "0" if stamp_ns == 0 else "not a time: sec < 0 or nanosec >= 1e9"
            return (f"{what} is unstamped (header stamp {stamp}): the camera driver must stamp image and camera_info "
                    "alike; no setting can pair them")
    # too few camera_info first: one recorded once is also far from the newest image, which is not a clock problem
    # (a trial: a camera_info logged once was blamed on the driver's clocks)
    if arrivals is not None and arrivals[1] < MIN_INFO_PER_IMAGE * arrivals[0]:
        images, infos = arrivals
        return (f"{infos} camera_info for {images} images: each image needs its own camera_info stamped alike (pairing is one to one, as "
                "message_filters'); the driver must publish one per image")
    offset_s = (info_ns - image_ns) * 1e-9
    where = f"the newest camera_info is stamped {offset_s:+.3f} s from the newest image"
    if abs(offset_s) >= MAX_SLOP_S:  # whatever the rates: no pair can form
        return (f"{where}: the driver stamps them on different clocks or does not copy the image's stamp; no setting "
                "can pair them")
    if abs(offset_s) > slop_s:
        return f"{where}: raise {slop} above {abs(offset_s):.3f} s{how}"
    if queue:
        return f"{where}: camera_info may arrive late; raise {queue}{how}"
    # a recording is paired over its whole length: lateness cannot be the cause there
    return (f"{where}, within {slop}: the camera_info of these images is not in the recording (pairing spans the "
            "whole recording, so none arrived late); the driver or the recorder dropped them")
