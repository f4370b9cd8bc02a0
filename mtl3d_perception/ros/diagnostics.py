"""Runtime statistics and their ``diagnostic_msgs/DiagnosticArray`` form (no rclpy import).

``diagnostic_updater`` is not installable here (``../shared/notes/ros2_ecosystem.md`` C.3); this is the small
part of it the node needs: one status with the rate, per-stage latency p50/p95, dropped frames, single-view
fallbacks, TF failures, bad input by kind, device and model. Messages are built through a ``types`` mapping
like ``ros/conversions.py``, so replay can write the same status into a bag.

Levels: ERROR while the pipeline itself fails (an internal error within ``warn_window_s``); WARN while inputs
or poses are bad (a recent problem: bad input, TF failure, time jump), when most recent frames ran single-view
for lack of a usable source, when images arrive but none pairs with a camera_info, or when no frame was
processed for ``rate_window_s``; else OK.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from mtl3d_perception.runtime.products import STAGES

OK, WARN, ERROR, STALE = 0, 1, 2, 3


class RuntimeStats:
    """Thread-safe counters and latency windows, written by the node's threads and read by its diagnostics timer.

    Args:
        window: frames kept for the latency percentiles.
        rate_window_s: span over which the output rate is measured.
        warn_window_s: a problem (bad input, TF failure) this recent makes the status WARN (an internal error:
            ERROR); the single-view ratio is taken over the frames of this window.
        clock: monotonic seconds (injected so tests need no sleeps).

    Counter names the status knows: ``images`` and ``camera_infos`` (every input message), ``received``
    (synchronised pairs), ``processed``, ``dropped``, ``single_view``, ``tf_failures``, ``time_jumps``,
    ``internal_errors``.
    """

    def __init__(self, window: int = 200, rate_window_s: float = 5.0, warn_window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.rate_window_s = rate_window_s
        self.warn_window_s = warn_window_s
        self._lock = threading.Lock()
        self._latency: dict[str, deque[float]] = {stage: deque(maxlen=window) for stage in STAGES}
        self._latency["end_to_end"] = deque(maxlen=window)
        self._done_at: deque[float] = deque(maxlen=window)
        self._fallbacks: deque[tuple[float, bool]] = deque(maxlen=window)  # (done at, single-view without a source)
        self.counts: Counter[str] = Counter()
        self.bad_input: Counter[str] = Counter()
        self._first_at: dict[str, float] = {}
        self._last_at: dict[str, float] = {}
        self.last_problem = ""
        self._last_problem_at = -np.inf
        self.last_error = ""
        self._last_error_at = -np.inf
        self.last_pair_reason = ""

    def count(self, name: str, n: int = 1) -> None:
        """Bump a plain counter (``received``, ``dropped``, ...)."""
        with self._lock:
            now = self.clock()
            self.counts[name] += n
            self._first_at.setdefault(name, now)
            self._last_at[name] = now

    def problem(self, kind: str, message: str, *, counter: str | None = None, error: bool = False) -> None:
        """Record a problem: ``bad_input`` by ``kind`` unless ``counter`` names a dedicated counter (e.g. ``tf_failures``).

        ``error``: the pipeline itself failed (not its input); the status is ERROR while it is recent.
        """
        with self._lock:
            if counter is None:
                self.bad_input[kind] += 1
            else:
                self.counts[counter] += 1
            if error:
                self.last_error = f"{kind}: {message}"
                self._last_error_at = self.clock()
            else:
                self.last_problem = f"{kind}: {message}"
                self._last_problem_at = self.clock()

    def frame_done(self, timings: dict[str, float], *, single_view: bool, pair_reason: str,
                   end_to_end_s: float | None = None) -> None:
        with self._lock:
            now = self.clock()
            self.counts["processed"] += 1
            self._done_at.append(now)
            for stage, seconds in timings.items():
                if stage in self._latency:
                    self._latency[stage].append(seconds)
            if end_to_end_s is not None:
                self._latency["end_to_end"].append(end_to_end_s)
            self.last_pair_reason = pair_reason
            if single_view:
                self.counts["single_view"] += 1
            # the first frame (after start or a reset) has no source by design: not a fallback
            self._fallbacks.append((now, single_view and pair_reason != "no_history"))

    def snapshot(self) -> dict[str, Any]:
        """Everything the status needs, as plain numbers and strings."""
        with self._lock:
            now = self.clock()
            recent = [t for t in self._done_at if now - t <= self.rate_window_s]
            if len(recent) >= 2 and recent[-1] > recent[0]:
                rate = (len(recent) - 1) / (recent[-1] - recent[0])
            else:
                rate = 0.0
            latency = {
                stage: (float(np.percentile(v, 50)), float(np.percentile(v, 95)))
                for stage, v in self._latency.items() if v
            }
            fallbacks = [fallback for t, fallback in self._fallbacks if now - t <= self.warn_window_s]
            image_at = self._last_at.get("images")
            # images keep coming, but the newest came rate_window_s after the last pair (or the first image)
            paired_at = self._last_at.get("received", self._first_at.get("images", -np.inf))
            sync_stalled = (image_at is not None and now - image_at <= self.rate_window_s
                            and image_at - paired_at > self.rate_window_s)
            return {
                "rate_hz": rate,
                "latency_s": latency,
                "counts": dict(self.counts),
                "bad_input": dict(self.bad_input),
                "last_problem": self.last_problem,
                "recent_problem": now - self._last_problem_at <= self.warn_window_s,
                "last_error": self.last_error,
                "recent_error": now - self._last_error_at <= self.warn_window_s,
                "single_view_ratio": sum(fallbacks) / len(fallbacks) if fallbacks else 0.0,
                "sync_stalled": sync_stalled,
                "idle_s": now - self._done_at[-1] if self._done_at else None,
                "rate_window_s": self.rate_window_s,
                "last_pair_reason": self.last_pair_reason,
            }


def _level_value(cls: type, level: int) -> Any:
    """rclpy stores the ``byte`` field ``level`` as ``bytes``; rosbags as int."""
    if getattr(cls, "_fields_and_field_types", {}).get("level") == "octet":
        return bytes([level])
    return level


def status_fields(snapshot: dict[str, Any], info: dict[str, str]) -> tuple[int, str, list[tuple[str, str]]]:
    """(level, message, [(key, value)]) for a snapshot plus static ``info`` (device, model, ...)."""
    counts = snapshot["counts"]
    processed = counts.get("processed", 0)
    latency = snapshot["latency_s"]
    if processed == 0:
        message = "waiting for synchronised image + camera_info"
    else:
        p50 = latency.get("total", (0.0, 0.0))[0] * 1e3
        message = f"{snapshot['rate_hz']:.1f} Hz, inference p50 {p50:.1f} ms"
    warnings = []
    if snapshot["sync_stalled"]:
        warnings.append(f"images arrive but none pairs with a camera_info within sync_slop_s "
                        f"({counts.get('images', 0)} images, {counts.get('camera_infos', 0)} camera_info)")
    idle_s = snapshot["idle_s"]
    if idle_s is not None and idle_s > snapshot["rate_window_s"]:
        warnings.append(f"no frame processed for {idle_s:.1f} s")
    ratio = snapshot["single_view_ratio"]
    if ratio > 0.5:
        warnings.append(f"mostly single-view ({ratio:.0%} of recent frames; last: {snapshot['last_pair_reason']})")
    if snapshot["recent_problem"]:
        warnings.append(snapshot["last_problem"])
    level = ERROR if snapshot["recent_error"] else WARN if warnings else OK
    if snapshot["recent_error"]:
        warnings.insert(0, snapshot["last_error"])
    message = "; ".join([message, *warnings])
    values = [(key, str(value)) for key, value in info.items()]
    values.append(("rate_hz", f"{snapshot['rate_hz']:.2f}"))
    for name in ("images", "camera_infos", "received", "processed", "dropped", "single_view", "tf_failures",
                 "time_jumps", "internal_errors"):
        key = {"dropped": "dropped_frames", "single_view": "single_view_fallbacks"}.get(name, name)
        values.append((key, str(counts.get(name, 0))))
    values.append(("single_view_ratio", f"{ratio:.2f}"))
    values.append(("bad_input", str(sum(snapshot["bad_input"].values()))))
    values.extend((f"bad_input.{kind}", str(n)) for kind, n in sorted(snapshot["bad_input"].items()))
    for stage, (p50, p95) in latency.items():
        values.append((f"latency_{stage}_p50_ms", f"{p50 * 1e3:.2f}"))
        values.append((f"latency_{stage}_p95_ms", f"{p95 * 1e3:.2f}"))
    values.append(("last_pair_reason", snapshot["last_pair_reason"]))
    values.append(("last_problem", snapshot["last_problem"]))
    values.append(("last_error", snapshot["last_error"]))
    return level, message, values


def make_diagnostic_array(types: Any, header: Any, snapshot: dict[str, Any], *, name: str, hardware_id: str,
                          info: dict[str, str]) -> Any:
    """A ``diagnostic_msgs/DiagnosticArray`` holding one status for the pipeline."""
    level, message, values = status_fields(snapshot, info)
    status = make_status(types, level, name=name, message=message, hardware_id=hardware_id, values=values)
    return types["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[status])


def make_status(types: Any, level: int, *, name: str, message: str, hardware_id: str,
                values: list[tuple[str, str]]) -> Any:
    """One ``diagnostic_msgs/DiagnosticStatus`` (``level`` OK / WARN / ERROR / STALE)."""
    kv = types["diagnostic_msgs/msg/KeyValue"]
    status_cls = types["diagnostic_msgs/msg/DiagnosticStatus"]
    return status_cls(level=_level_value(status_cls, level), name=name, message=message, hardware_id=hardware_id,
                      values=[kv(key=k, value=v) for k, v in values])


def diagnostic_values(array_msg: Any) -> dict[str, str]:
    """``{key: value}`` of the first status of a DiagnosticArray (for tests and tools)."""
    return {kv.key: kv.value for kv in array_msg.status[0].values}
