"""Which inputs of the node arrive, at what rate, and which stay silent (no rclpy import).

The commonest "the node publishes nothing" reports are a mistyped topic and a camera_info that never comes. The
node feeds every input message into an :class:`InputMonitor` and asks it once a second what to say; each input
also gets its own ``/diagnostics`` status. Levels follow diagnostic_updater's ``FrequencyStatus``
(ros/diagnostics ``diagnostic_updater/_update_functions.py``): no message within the window is ERROR
("No events recorded"), messages arriving are OK; since the node has no expected rate, there is no "too low" /
"too high" WARN, except one: the image input is WARN when far fewer images than camera_info arrive over the window,
at irregular intervals (:meth:`InputMonitor.images_lost`: a camera publishes one of each per frame, so the images
are lost on the way; a trial: 4 of 40 640x480 images arrived best-effort while all 40 camera_info did, and every
status said OK). Not-subscribed inputs (e.g. TF without ``tf2_msgs``) are ERROR with the cause. Until
``silent_after_s`` has passed since start-up nothing is reported silent (publishers may start later).

diagnostic_updater itself is not installable here (``../shared/notes/ros2_ecosystem.md`` C.3), hence this.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mtl3d_perception.topics import override_parameter

OK, WARN, ERROR = 0, 1, 2
SILENT_AFTER_S = 3.0  # "a few seconds" without a message on an input: say so
INFO_MISSING_AFTER_S = 1.0  # images without any camera_info for this long: say so (cameras send both at once)
SILENT_LOG_MAX_S = 60.0  # a camera off for long: its warning at most this often in the log (always in /diagnostics)
IMAGES_LOST_BELOW = 0.4  # fewer images than this per camera_info over the window: images are lost on the way
IMAGES_LOST_MIN_INFOS = 5  # ... counted once the window holds at least this many camera_info
REGULAR_GAPS = 1.5  # image stamps whose gaps (at least 3) differ by less than this factor come at a rate of their own


def warning_period_s(silent_s: float, base_s: float) -> float:
    """How often to log an input's silence that has lasted ``silent_s``: every ``base_s`` at first, then every half of
    the silence so far, at most every :data:`SILENT_LOG_MAX_S` (a robot parked with its camera off for an hour logs
    ~70 lines, not 720)."""
    return min(max(base_s, silent_s / 2), SILENT_LOG_MAX_S)


@dataclass(frozen=True)
class InputStatus:
    """One input's state: ``level`` (OK / ERROR), ``message``, messages since start-up, the rate over the window,
    ``quiet_s``, the seconds since its last message (since start-up if none came), and ``recent``, the messages
    within the window (two inputs compare by it over the same span, where rates over each one's own first-to-last
    span differ by their jitter)."""

    role: str
    topic: str
    level: int
    message: str
    count: int
    rate_hz: float
    quiet_s: float
    recent: int = 0


@dataclass(frozen=True)
class PublisherInfo:
    """What the ROS graph says of one publisher of an input topic (rclpy ``get_publishers_info_by_topic``):
    ``msg_type`` (``sensor_msgs/msg/Image``) and the ``durability`` it offers (``volatile``, ``transient_local``)."""

    msg_type: str
    durability: str = "volatile"


class InputMonitor:
    """Arrival counts and rates of the node's inputs.

    Args:
        inputs: role -> (resolved topic, message type), e.g. ``{"image": ("/camera/color/image_raw",
            "sensor_msgs/msg/Image")}``.
        window_s: span the rate is measured over, and silence that makes an input ERROR.
        silent_after_s: grace after start-up and silence before an input is reported silent.
        clock: monotonic seconds (injected so tests need no sleeps).
    """

    def __init__(self, inputs: dict[str, tuple[str, str]], *, window_s: float = 5.0,
                 silent_after_s: float = SILENT_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.inputs = dict(inputs)
        self.window_s = window_s
        self.silent_after_s = silent_after_s
        self.clock = clock
        self.started_at = clock()
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[float]] = {role: deque(maxlen=1000) for role in inputs}
        self._stamps: dict[str, deque[tuple[float, int]]] = {role: deque(maxlen=1000) for role in inputs}
        # when each input's current run of messages began (no gap over window_s since): the bounded deque forgets
        # it at over 1000 messages per run (a 2 kHz stream does in half a second)
        self._run_start: dict[str, float] = {}
        self._counts: dict[str, int] = dict.fromkeys(inputs, 0)
        self.unavailable: dict[str, str] = {}  # role -> why it is not subscribed

    def set_unavailable(self, role: str, reason: str) -> None:
        """Mark an input as not subscribed at all (its status is ERROR with ``reason``)."""
        self.unavailable[role] = reason

    def tick(self, role: str, stamp_ns: int = 0) -> None:
        """One message arrived on ``role``; ``stamp_ns`` its header stamp (0: none or invalid)."""
        with self._lock:
            now = self.clock()
            arrivals = self._arrivals[role]
            if not arrivals or now - arrivals[-1] > self.window_s:
                self._run_start[role] = now
            arrivals.append(now)
            if stamp_ns > 0:
                self._stamps[role].append((now, int(stamp_ns)))
            self._counts[role] += 1

    def _status(self, role: str, topic: str, now: float) -> InputStatus:
        """The one place an input's state is derived (statuses, silence and what arrives all read it)."""
        arrivals = self._arrivals[role]
        recent = [t for t in arrivals if now - t <= self.window_s]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
        quiet_s = now - (arrivals[-1] if arrivals else self.started_at)
        if role in self.unavailable:
            level, message = ERROR, f"not subscribed: {self.unavailable[role]}"
        elif not arrivals or quiet_s > self.window_s:
            level = ERROR if quiet_s > self.silent_after_s else OK
            message = f"No events recorded for {quiet_s:.1f} s" if arrivals else "No events recorded"
        else:
            level, message = OK, f"{rate:.1f} Hz"
        return InputStatus(role, topic, level, message, self._counts[role], rate, quiet_s, len(recent))

    def statuses(self) -> list[InputStatus]:
        """Each input's status, in the order given; the image input WARN when images are lost (:meth:`images_lost`)."""
        with self._lock:
            now = self.clock()
            out = [self._status(role, topic, now) for role, (topic, _) in self.inputs.items()]
            lost = self._images_lost(now)
        if lost is not None:
            out = [dataclasses.replace(s, level=WARN, message=f"{s.message}; {lost[0]} images for {lost[1]} camera_info "
                                                              f"in {self.window_s:g} s: images lost on the way")
                   if s.role == "image" and s.level == OK else s for s in out]
        return out

    def _images_lost(self, now: float) -> tuple[int, int] | None:
        if "image" not in self.inputs or "camera_info" not in self.inputs or now - self.started_at < self.window_s:
            return None
        images, infos = (sum(now - t <= self.window_s for t in self._arrivals[r]) for r in ("image", "camera_info"))
        if images == 0 or infos < IMAGES_LOST_MIN_INFOS or images >= IMAGES_LOST_BELOW * infos:
            return None  # no image at all is the silent-input case
        stamps = sorted(s for t, s in self._stamps["image"] if now - t <= self.window_s)
        gaps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
        if len(gaps) >= 3 and max(gaps) < REGULAR_GAPS * min(gaps):
            return None  # images at a steady rate of their own (camera_info sent more often, images throttled)
        return images, infos

    def images_lost(self) -> tuple[int, int] | None:
        """``(images, camera_infos)`` received over the last window when fewer than :data:`IMAGES_LOST_BELOW` images
        arrived per camera_info (at least :data:`IMAGES_LOST_MIN_INFOS` of those, and some images: none at all is a
        silent input) and the images' stamps have irregular gaps, counted once a whole window has passed since
        start-up; None otherwise. A camera driver publishes one camera_info with each image (image_transport's
        CameraPublisher), so missing images were lost in transit, at random: large best-effort messages are lost whole
        with one UDP fragment (Fast DDS). Images at a steady rate of their own (gaps within :data:`REGULAR_GAPS` of
        each other) are not lost: camera_info sent three times as often, or images throttled (a retrial warned there)."""
        with self._lock:
            return self._images_lost(self.clock())

    def silent(self) -> list[str]:
        """Roles with no message for ``silent_after_s`` (counted from start-up for inputs never heard)."""
        return [s.role for s in self.statuses() if s.role not in self.unavailable and s.quiet_s > self.silent_after_s]

    def silent_for(self, role: str) -> float:
        """Seconds since the last message on ``role`` (since start-up if none came)."""
        return next(s.quiet_s for s in self.statuses() if s.role == role)

    def arriving(self) -> list[str]:
        """``"role on topic (rate Hz)"`` for each input that is not silent (for the silent-topic warning)."""
        return [f"{s.role} on {s.topic} ({s.rate_hz:.1f} Hz)" for s in self.statuses()
                if s.count and s.quiet_s <= self.silent_after_s]

    def info_missing(self, image_role: str = "image", info_role: str = "camera_info") -> bool:
        """Images arrive, but no camera_info has come for ``INFO_MISSING_AFTER_S`` while they did."""
        with self._lock:
            now = self.clock()
            images, infos = self._arrivals[image_role], self._arrivals[info_role]
            if not images or now - images[-1] > self.window_s:
                return False  # no images arriving: that is a silent image topic, not a missing camera_info
            if infos and now - infos[-1] <= self.window_s:
                return False
            start = self._run_start[image_role]
            since = max(start, infos[-1]) if infos else start
            return now - since >= INFO_MISSING_AFTER_S

    def warnings(self, graph_topics: Callable[[str], list[str]], publishers: Callable[[str], list[PublisherInfo]],
                 qos_problem: Callable[[str], str | None] = lambda topic: None) -> list[tuple[str, str]]:
        """``(kind, message)`` for what to warn about now: images lost on the way, images without camera_info, then
        each silent input.

        Args:
            graph_topics: message type -> topics of that type in the ROS graph (but the node's own).
            publishers: topic -> its publishers (:class:`PublisherInfo`).
            qos_problem: topic -> why a publisher's QoS cannot match this node's subscription (``ros.qos``), or None.
        """
        found = []
        if (lost := self.images_lost()) is not None:
            image = self.inputs["image"][0]
            found.append(("images_lost", images_lost_message(image, *lost, self.window_s, qos_problem(image))))
        info_missing = self.info_missing()
        if info_missing:
            (image, _), (info, info_type) = self.inputs["image"], self.inputs["camera_info"]
            found.append(("camera_info_missing", camera_info_missing_message(
                image, info, info_type, publishers(info), [t for t in graph_topics(info_type) if t != info],
                qos_problem(info))))
        silent = self.silent()
        for role in silent:
            if role == "camera_info" and info_missing:
                continue
            topic, msg_type = self.inputs[role]
            found.append((f"silent_{role}", silent_input_message(
                role, topic, msg_type, self.silent_for(role), publishers(topic), self.arriving(),
                graph_topics(msg_type), qos_problem(topic), info_silent_too=role == "image" and "camera_info" in silent)))
        return found


def _publishers_text(publishers: list[PublisherInfo], msg_type: str, *, durability: bool = False) -> str:
    """``3 publisher(s)``, with the durabilities offered (``durability``) and the types that are not ``msg_type``."""
    text = f"{len(publishers)} publisher(s)"
    details = [f"of {t}" for t in sorted({p.msg_type for p in publishers} - {msg_type})]
    if durability and publishers:
        details.insert(0, ", ".join(sorted({p.durability for p in publishers})))
    return text + (f": {'; '.join(details)}" if details else "")


def unmatched_publishers(msg_type: str, publishers: list[PublisherInfo], qos_problem: str | None) -> str | None:
    """Why publishers of an input topic send this node nothing, when the graph can tell: another message type (ROS
    connects only the same type: a remap onto the wrong topic, compressed images on the raw topic) or a QoS that cannot
    match (``qos_problem``); None when nothing explains it."""
    if not publishers:
        return None
    wrong = sorted({p.msg_type for p in publishers} - {msg_type})
    if wrong:
        hint = ("; for compressed images set image_transport: compressed with image_topic the base topic"
                if "sensor_msgs/msg/CompressedImage" in wrong else "")
        return (f"{'all' if len(wrong) == len({p.msg_type for p in publishers}) else 'some'} publish "
                f"{', '.join(wrong)}, not {msg_type}, and ROS connects only the same type{hint}")
    return qos_problem


def camera_info_missing_message(image: str, info: str, info_type: str, publishers: list[PublisherInfo],
                                others: list[str], qos_problem: str | None = None) -> str:
    """The warning for images that arrive without camera_info: what publishes it and why nothing arrives. A latched
    (transient_local) publisher that sent it once cannot do: like image_transport's CameraSubscriber, the node pairs
    each image with a camera_info of its stamp, so the driver must publish one with every image."""
    unmatched = unmatched_publishers(info_type, publishers, qos_problem)
    if not publishers:
        why = "nothing publishes it (set camera_info_topic or remap)"
    elif unmatched:
        why = unmatched
    elif any(p.durability == "transient_local" for p in publishers):
        why = ("a latched camera_info (transient_local, sent once) is not enough: each image pairs with a camera_info "
               "of its own stamp, as with image_transport's CameraSubscriber, so the driver must publish one with "
               "every image")
    else:
        why = "its publisher(s) sent nothing since this node subscribed"
    offered = _publishers_text(publishers, info_type, durability=True)
    return (f"images arrive on {image} but no camera_info on {info} ({offered}): no frame can be processed without "
            f"intrinsics; {why}; other {info_type} topics in the graph: "
            f"{', '.join(others) if others else 'none'}")


def images_lost_message(image: str, images: int, infos: int, window_s: float, qos_problem: str | None) -> str:
    """The warning for images lost on the way (:meth:`InputMonitor.images_lost`): how many, and what keeps them:
    ``qos_problem`` (a reliable publisher: the reliable override, ``qos.fragment_loss_hint``) or else the general
    remedies for a best-effort publisher."""
    why = qos_problem or (
        "a best-effort image is lost whole when one of its fragments is (large images with Fast DDS over UDP); a "
        "camera driver publishing reliable with the subscription's reliable override (where not set yet: "
        f"{override_parameter(image, 'subscription', 'reliability')}: reliable), compressed images (image_transport: "
        "compressed), a smaller image, or a less loaded network or CPU keep them")
    return (f"{images} images but {infos} camera_info arrived on {image} in the last {window_s:g} s: a camera "
            f"publishes one of each per frame, so {infos - images} images were lost on the way; {why}")


def silent_input_message(role: str, topic: str, msg_type: str, silent_s: float, publishers: list[PublisherInfo],
                         arriving: list[str], same_type_topics: list[str], qos_problem: str | None = None, *,
                         info_silent_too: bool = False) -> str:
    """The warning for an input that stays silent: the topic, its publishers (and why they send nothing, where the
    graph tells: :func:`unmatched_publishers`), what does arrive, where its type is. ``info_silent_too``: the image's
    camera_info is silent as well, so a camera whose publishers match sends nothing (a live trial: a paused camera was
    told to change its QoS); the caller leaves large-message loss out of ``qos_problem`` then."""
    parts = [f"no {msg_type} on {topic} ({role}) for {silent_s:.0f} s; {_publishers_text(publishers, msg_type)}"]
    stopped = False
    if unmatched := unmatched_publishers(msg_type, publishers, qos_problem):
        parts[0] += f" ({unmatched})"
    elif stopped := info_silent_too and bool(publishers):
        parts[0] += (" (their QoS matches, and camera_info is silent too: the camera sends nothing; not started, "
                     "paused or stopped)")
    parts.append("arriving: " + (", ".join(arriving) if arriving else "no input at all"))
    others = [t for t in same_type_topics if t != topic]
    parts.append(f"other {msg_type} topics in the graph: " + (", ".join(others) if others else "none")
                 + ("" if stopped else " (set image_topic / camera_info_topic or remap)"))  # the topics are right
    return "; ".join(parts)
