"""FrameDriver: the loop the node and replay share, from a synchronised frame to its products (issue 14).

frame -> time-jump rule -> ``PosedFrameQueue`` (waits for TF: ``newest`` live, ``in_order`` for a recording)
-> ``PerceptionPipeline.process`` -> ``RuntimeStats`` (problems, pipeline warnings, latency) -> Products.

What stays outside: the node keeps its threads, QoS, parameters and publishing; replay keeps bag reading, the
output bag and scoring. Both build frames with ``msgs.messages.frame_from_messages``, look poses up through
``msgs.tf.pose_from_tf`` on a tf2_ros ``Buffer`` (the compat one in replay) and hand frames to
:meth:`FrameDriver.add_frame`.

Waiting is event-driven: :meth:`wait_job` sleeps on a condition variable until a frame arrives, new TF data
arrives (:meth:`notify`, called from the TF buffer's new-data callback), or the oldest frame's wait runs out.

Problems go to ``stats`` and then to ``on_problem(kind, message, counter, error)`` (the node logs them
throttled, replay lists them in its report).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from mtl3d_perception.runtime.frames import Frame, TimeJumpDetector
from mtl3d_perception.runtime.pipeline import PerceptionPipeline
from mtl3d_perception.runtime.pose_queue import PosedFrameQueue, PoseJob, PoseWait
from mtl3d_perception.runtime.pose_wait import LivePoseWait
from mtl3d_perception.runtime.products import Products
from mtl3d_perception.runtime.stats import RuntimeStats

MAX_PENDING = 30  # frames waiting for TF; older ones are dropped
ProblemHook = Callable[[str, str, "str | None", bool], None]

# how a caller's pose lookup starts its error when /tf is not subscribed at all (the node without tf2_msgs): no
# waiting helps, so no tf_timeout_s advice follows
TF_NOT_SUBSCRIBED = "TF is not subscribed"
# tf2's wording (and the compat buffer's) for a frame it has never heard of, and for frames in unconnected trees
_MISSING_FRAME = "passed to lookupTransform argument"
_UNCONNECTED = "not part of the same tree"
TF_FRAMES = "frames in TF"  # how the node appends the frames TF holds to a missing-path error ("...: none" when empty)


def is_missing_tf_path(tf_error: str) -> bool:
    """Whether a failed lookup's error (``msgs.tf.pose_from_tf``) says TF has no path at all between the frames (a
    frame it has never held, or unconnected trees): a setting or a missing transform, which waiting cannot fix."""
    return (_MISSING_FRAME in tf_error and "does not exist" in tf_error) or _UNCONNECTED in tf_error


def _missing_path_advice(tf_error: str, world_frame: str, frame_id: str) -> str:
    """What to fix when TF has no path from ``world_frame`` to the camera's ``frame_id``."""
    if f"{TF_FRAMES}: none" in tf_error:  # nothing to look a frame up in: not a setting (yet)
        return ("TF holds no transform at all (none received since start-up, or since the cache was cleared for a time "
                "jump): check that odometry and the camera's static transform are published on /tf and /tf_static")
    if f'"{world_frame}" {_MISSING_FRAME}' in tf_error:
        return (f"world_frame {world_frame!r} is not in TF: set the world_frame parameter to the fixed frame your "
                "odometry publishes (e.g. odom or map)")
    if f'"{frame_id}" {_MISSING_FRAME}' in tf_error:
        return (f"the image's frame_id {frame_id!r} is not in TF: publish the camera's transform (usually a static one "
                "from the robot's base) or fix the camera driver's frame_id")
    return (f"{world_frame!r} and {frame_id!r} are in unconnected TF trees: a transform between them is missing "
            "(the camera's static transform from the robot's base, or odometry's)")


class FrameDriver:
    """Frames in, products out, for one pipeline.

    Args:
        pipeline: the perception pipeline (its config supplies ``tf_timeout_s`` and ``world_frame``).
        wait: when a frame stops waiting for its pose (``runtime.pose_wait``: ``LivePoseWait`` in the node,
            ``RecordedPoseWait`` in replay).
        policy: ``newest`` (node) or ``in_order`` (replay), see :mod:`~mtl3d_perception.runtime.pose_queue`.
        stats: where counters, problems and latencies go.
        clock: the driver's time in integer nanoseconds (monotonic in the node, bag time in replay).
        on_problem: called after ``stats`` records a problem (logging, report).
        report_stamp_outliers: report a lone stamp far ahead (``frames.TimeJumpDetector``) when the next frame shows
            it; False where the caller sees every image first and reports it there (the node: an outlier image that
            never paired with a camera_info never reaches the driver).
    """

    def __init__(self, pipeline: PerceptionPipeline, wait: PoseWait, *, policy: str, stats: RuntimeStats,
                 clock: Callable[[], int] = time.monotonic_ns, on_problem: ProblemHook | None = None,
                 max_pending: int = MAX_PENDING, report_stamp_outliers: bool = True) -> None:
        self.pipeline = pipeline
        self.stats = stats
        self.clock = clock
        self.on_problem = on_problem
        self.queue = PosedFrameQueue(wait, policy=policy, max_pending=max_pending)
        self.jump = TimeJumpDetector()
        self.report_stamp_outliers = report_stamp_outliers
        self.cond = threading.Condition()
        self._last_stamp_ns: int | None = None

    @property
    def config(self):
        return self.pipeline.config

    def problem(self, kind: str, message: str, *, counter: str | None = None, error: bool = False) -> None:
        """Record a problem in the stats and pass it on to ``on_problem``."""
        self.stats.problem(kind, message, counter=counter, error=error)
        if self.on_problem is not None:
            self.on_problem(kind, message, counter, error)

    # ------------------------------------------------------------------------------------------ input

    def add_frame(self, frame: Frame, arrived_ns: int | None = None) -> bool:
        """Queue a synchronised frame to wait for its pose; returns False when it was dropped.

        Time jumping back clears the waiting frames (this layer's state; the pipeline clears its history itself).
        Under the ``newest`` policy a frame older than one already queued or run is stale and dropped
        (``out_of_order``); an unstamped one (zero stamp, a header problem) cannot be ordered and is kept.
        """
        arrived_ns = self.clock() if arrived_ns is None else int(arrived_ns)
        with self.cond:
            newest_ns = self.jump.newest_ns
            if self.jump.check(frame.stamp_ns):
                self.stats.count("dropped", self.queue.clear())
                self._last_stamp_ns = None
                self.problem("time_jump", f"frame stamp went back from {newest_ns * 1e-9:.3f} s to {frame.stamp:.3f} s; "
                                          "the waiting frames and the frame history are cleared", counter="time_jumps")
            elif self.jump.outlier_ns is not None:
                self.stats.count("dropped", self.queue.drop_after(frame.stamp_ns + self.jump.jump_back_ns))
                self._last_stamp_ns = self.jump.newest_ns
                if self.report_stamp_outliers:
                    self.problem("header", self.jump.outlier_message(frame.stamp_ns), counter="header_problems")
            elif (self.queue.policy == "newest" and self._last_stamp_ns is not None
                  and 0 < frame.stamp_ns < self._last_stamp_ns):  # a zero stamp cannot be ordered: runs single-view
                self.stats.count("dropped")
                self.problem("out_of_order", f"frame at {frame.stamp:.3f} s arrived after one at "
                                             f"{self._last_stamp_ns * 1e-9:.3f} s; dropped")
                return False
            if frame.stamp_ns:
                self._last_stamp_ns = max(self._last_stamp_ns or 0, frame.stamp_ns)
            self.stats.count("dropped", self.queue.push(frame, arrived_ns))
            self.cond.notify_all()
        return True

    def notify(self, *_: Any) -> None:
        """New data that may complete a waiting frame (a TF buffer's new-data callback); wakes :meth:`wait_job`."""
        with self.cond:
            self.cond.notify_all()

    def pending_frames(self) -> list[Frame]:
        """The frames waiting for their pose, oldest first."""
        with self.cond:
            return self.queue.frames()

    def clear(self) -> int:
        """Forget the waiting frames (counted as dropped); returns how many."""
        with self.cond:
            n = self.queue.clear()
            self._last_stamp_ns = None
        self.stats.count("dropped", n)
        return n

    # ------------------------------------------------------------------------------------------ taking

    def take(self, now_ns: int | None = None, *, end: bool = False) -> PoseJob | None:
        """The next frame to run (see ``PosedFrameQueue.take``), or None; never waits."""
        with self.cond:
            job = self.queue.take(self.clock() if now_ns is None else now_ns, end=end)
        if job is not None and job.dropped:
            self.stats.count("dropped", job.dropped)
        return job

    def wait_job(self, should_stop: Callable[[], bool]) -> PoseJob | None:
        """Block until a frame can run (posed, or its wait ran out) and return it; None once ``should_stop()``.

        Woken by :meth:`add_frame`, :meth:`notify` (new TF) and the oldest frame's deadline: no polling.
        """
        with self.cond:
            while not should_stop():
                now = self.clock()
                job = self.queue.take(now)
                if job is not None:
                    break
                deadline = self.queue.deadline_ns()
                self.cond.wait(None if deadline is None else max(deadline - now, 0) * 1e-9 + 1e-4)
            else:
                return None
        if job.dropped:
            self.stats.count("dropped", job.dropped)
        return job

    # ------------------------------------------------------------------------------------------ running

    def _report_tf_error(self, job: PoseJob, *, idle: bool = False) -> None:
        """A frame's failed pose lookup as a ``tf`` problem, with what it means for the frame (``idle``: kept
        without running, :meth:`skip`) and the advice that fits tf2's error."""
        frame = job.frame
        if job.tf_error is not None:
            done = ("kept without a pose (no source view later)" if idle else
                    "only the world-frame cloud uses it (single_view)" if self.config.single_view else "single-view")
            # tf2's and the compat buffer's wording: TF holds only newer data, so waiting cannot help
            what = (f"{done}. TF holds only data newer than this frame: odometry began after it, the frame is older "
                    "than the TF cache, or a transform on that edge was stamped in the future (it holds the edge until "
                    "time passes it, as in tf2); raising tf_timeout_s does not help"
                    if "extrapolation into the past" in job.tf_error else
                    f"{done}. " + _missing_path_advice(job.tf_error, self.config.world_frame, frame.frame_id)
                    + "; raising tf_timeout_s does not help"
                    if is_missing_tf_path(job.tf_error) else
                    done if self.config.single_view or job.tf_error.startswith(TF_NOT_SUBSCRIBED) else
                    f"{done}. Raise tf_timeout_s if odometry publishes later")
            self.problem("tf", f"no pose of {frame.frame_id} in {self.config.world_frame} at {frame.stamp:.3f} s "
                               f"within tf_timeout_s ({self.config.tf_timeout_s:g} s): {job.tf_error}; {what}"
                               + (f"; ~/points is in {frame.frame_id}, not {self.config.world_frame}, for this frame"
                                  if self.config.cloud_frame == "world" else ""), counter="tf_failures")

    def _report_warnings(self, warnings: list[tuple[str, str]]) -> None:
        for kind, message in warnings:
            if kind not in ("time_jump", "stamp_outlier"):  # reported (and counted) when the frame arrived, by add_frame
                self.problem(kind, message)

    def run(self, job: PoseJob, *, end_to_end: bool = True, outputs: Iterable[str] | None = None) -> Products | None:
        """Run one job through the pipeline and record it; None when the frame was unusable (reported).

        ``end_to_end``: record the time from the frame's arrival to now as the end-to-end latency. ``outputs``: the
        output groups to compute (``PerceptionPipeline.process``; None: the enabled ones).
        """
        frame = job.frame
        self._report_tf_error(job)
        try:
            products = self.pipeline.process(frame.with_pose(job.T_world_cam), outputs)
        except ValueError as exc:
            self.stats.count("dropped")
            self.problem("frame", str(exc))
            return None
        self._report_warnings(products.warnings)
        latency = (self.clock() - job.arrived_ns) * 1e-9 if end_to_end else None
        self.stats.frame_done(products.timings, single_view=products.single_view, pair_reason=products.pair_reason,
                              end_to_end_s=latency, baseline_m=products.baseline_m)
        return products

    def skip(self, job: PoseJob, reason: str, *, warn: bool = False) -> None:
        """Keep a frame nobody wants the outputs of as a source view, without inference (the node's ``lazy`` mode:
        ``PerceptionPipeline.observe``); counted as ``idle`` with ``reason``. Its problems are reported as
        :meth:`run` reports them. ``warn``: the reason is a setting to fix (``RuntimeStats.frame_idle``)."""
        self._report_tf_error(job, idle=True)
        try:
            warnings = self.pipeline.observe(job.frame.with_pose(job.T_world_cam))
        except ValueError as exc:
            self.stats.count("dropped")
            self.problem("frame", str(exc))
            return
        self._report_warnings(warnings)
        self.stats.frame_idle(reason, warn=warn)

    def apply(self, config: Any) -> None:
        """New settings between frames: the pipeline's options and the TF wait."""
        self.pipeline.set_config(config)
        with self.cond:
            if isinstance(self.queue.wait, LivePoseWait):
                self.queue.wait.timeout_s = config.tf_timeout_s

    def info(self, **extra: str) -> dict[str, str]:
        """The static part of the diagnostics status (node and replay): device, precision, input size, whether the depth
        confidence is published, plus ``extra`` (model, ...)."""
        w, h = self.pipeline.net_size
        confidence = ("published on ~/depth/confidence" if self.pipeline.has_depth_confidence
                      else "none: the model has no geometric depth (geometric_depth: false)")
        return {"device": str(self.pipeline.device), **extra, "precision": self.pipeline.precision,
                "input_size": f"{w}x{h}", "depth_confidence": confidence}
