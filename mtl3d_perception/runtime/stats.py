"""Runtime statistics: counters, latency windows and the output rate of the perception pipeline.

Written by the node's threads (and by replay) and read as a plain-dict :meth:`RuntimeStats.snapshot`;
``ros/diagnostics.py`` turns a snapshot into a ``diagnostic_msgs/DiagnosticArray``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from mtl3d_perception.runtime.history import SINGLE_VIEW_MODE
from mtl3d_perception.runtime.products import STAGES

# Single-view reasons that are no fallback to warn about ("mostly single-view" in /diagnostics): the first frame
# (after start or a reset) has no source by design, a robot standing still or turning in place gives no parallax to
# match, and a pipeline run with ``single_view`` never pairs.
BY_DESIGN = ("no_history", "no_parallax", SINGLE_VIEW_MODE)
# What the fallbacks that say least by their name mean, and what changes them ("mostly single-view"); the header
# problems (empty_frame_id, zero_stamp, invalid_stamp) are explained where they are reported.
FALLBACK_MEANING = {
    "no_pose": "no pose from TF at the frame's stamp (see tf_failures and the last tf problem)",
    "no_earlier_frame": "the history holds only frames stamped at or after this one: frames arrive out of order",
    "too_old": "every earlier posed frame is older than max_pair_age_s: frames come slower than that, or poses were "
               "missing for a while",
    "pose_jump": "the camera moved faster than max_speed_mps / max_angular_speed_dps since every earlier frame, or "
                 "its pair's geometry leapt from the camera's recent pairs (check_pose_consistency): odometry or "
                 "localisation jumped, or the poses are not in metres (see the pose_jump warning)",
    "pose_convention": "the poses do not fit the images as optical-frame camera-to-world (see the pose_convention "
                       "warning for the reading that fits and how to convert)",
}


def is_fallback(single_view: bool, pair_reason: str) -> bool:
    """Whether a frame ran single-view for want of a usable source (no pose, too old, a pose jump, a header problem:
    ``history.ViewPair`` reasons), not by design (:data:`BY_DESIGN`). /diagnostics warns about these; replay marks them."""
    return single_view and pair_reason not in BY_DESIGN


class RuntimeStats:
    """Thread-safe counters and latency windows, written by the node's threads and read by its diagnostics timer.

    Args:
        window: frames kept for the latency percentiles.
        rate_window_s: span over which the output rate is measured.
        warn_window_s: a problem (bad input, TF failure) this recent makes the status WARN (an internal error:
            ERROR); the single-view ratio is taken over the frames of this window.
        clock: monotonic seconds (injected so tests need no sleeps).

    Counter names the status knows: ``images`` and ``camera_infos`` (every input message), ``received``
    (synchronised pairs), ``processed``, ``idle`` (frames kept as sources but not run: :meth:`frame_idle`),
    ``dropped``, ``single_view`` (every single-view frame), ``fallbacks`` (those
    of them without a usable source, :func:`is_fallback`), ``tf_failures``, ``time_jumps``, ``internal_errors``.
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
        self.last_baseline_m = 0.0  # metres between the last frame's camera and its source's (0: single view)
        self._idle_at = -np.inf
        self._first_snapshot_at: float | None = None  # "since start-up": from the first status on (node and replay)
        self.idle_reason = ""
        self.idle_warn = False

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

    def resolve(self, kind: str) -> None:
        """A condition that is reported while it lasts (``clock``: no /clock yet) has ended: if it is the last
        problem, it stops counting as recent at once instead of for ``warn_window_s`` (a node trial: the pipeline
        status said "no /clock has arrived" for 10 s after /clock came and frames ran). Its text stays in
        ``last_problem``."""
        with self._lock:
            if self.last_problem.startswith(f"{kind}: "):
                self._last_problem_at = -np.inf

    def frame_done(self, timings: dict[str, float], *, single_view: bool, pair_reason: str,
                   end_to_end_s: float | None = None, baseline_m: float = 0.0) -> None:
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
            self.last_baseline_m = baseline_m
            fallback = is_fallback(single_view, pair_reason)
            if single_view:
                self.counts["single_view"] += 1
            if fallback:
                self.counts["fallbacks"] += 1
            self._fallbacks.append((now, fallback))

    def frame_idle(self, reason: str, *, warn: bool = False) -> None:
        """A frame kept (as a source view) but not run: ``reason`` says why nobody wants its outputs (counter
        ``idle``); ``warn``: the reason is a setting to fix (every output disabled, or a subscriber on a disabled
        one), not a quiet robot."""
        with self._lock:
            self.counts["idle"] += 1
            self._idle_at = self.clock()
            self.idle_reason = reason
            self.idle_warn = warn

    def snapshot(self) -> dict[str, Any]:
        """Everything the status needs, as plain numbers and strings."""
        with self._lock:
            now = self.clock()
            if self._first_snapshot_at is None:
                self._first_snapshot_at = now
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
                # of the frames done within warn_window_s; None with none there (a stream that stopped)
                "single_view_ratio": sum(fallbacks) / len(fallbacks) if fallbacks else None,
                "sync_stalled": sync_stalled,
                "idle_s": now - self._done_at[-1] if self._done_at else None,
                # seconds without any frame run or kept since the first status (None once one was)
                "waiting_s": None if self._done_at or self.counts["idle"] else now - self._first_snapshot_at,
                # frames come but are not run (no subscriber, or no output enabled): why, or "" while frames run
                "idle_reason": (self.idle_reason if now - self._idle_at <= self.rate_window_s
                                and (not self._done_at or self._idle_at > self._done_at[-1]) else ""),
                "idle_warn": self.idle_warn,
                "rate_window_s": self.rate_window_s,
                "last_pair_reason": self.last_pair_reason,
                "last_baseline_m": self.last_baseline_m,
            }
