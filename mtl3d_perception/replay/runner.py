"""The loop of `mtl3d replay`: bag messages through the node's runtime, in bag time (see :mod:`mtl3d_perception.replay`).

:func:`replay_bag` checks the bag's topics, then reads it in time order and feeds each message to ``_Replay``:
image (raw or compressed) + camera_info go through the approximate-time synchroniser (``runtime.sync``) and
become frames (``msgs.messages.frame_from_messages``), ``/tf`` + ``/tf_static`` go into a tf2_ros ``Buffer`` (the
compat one, fed by ``msgs.tf.ingest_tf`` as the node's TransformListener feeds its own), and the frames go to the
runtime's ``FrameDriver`` with the ``in_order`` policy: each waits for its pose (``msgs.tf.pose_from_tf``) as long
as the bag can still deliver it (``runtime.pose_wait.RecordedPoseWait``, in bag time), runs through
``PerceptionPipeline`` (single-view when it has no pose), and its
products are written as the node's output messages (``msgs.messages.products_to_messages``) into the output bag
(:mod:`mtl3d_perception.replay.output`). Ground truth and metrics: :mod:`mtl3d_perception.replay.evaluation`.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtl3d_perception import topics
from mtl3d_perception.data.bag import (
    QOS_SENSOR,
    QOS_TF,
    QOS_TF_STATIC,
    BagError,
    absent_topic,
    bag_provenance,
    bag_time_range,
    bag_topics,
    check_topic_type,
    read_bag,
    resolve_depth_topic,
    resolve_image_topic,
    typestore,
)
from mtl3d_perception.data.sources.bag import check_label_encoding, colour_from_depth
from mtl3d_perception.geometry import reproject_depth
from mtl3d_perception.msgs import conversions
from mtl3d_perception.msgs.camera_model import CameraModels, resolve_image_kind
from mtl3d_perception.msgs.messages import (
    CAMERA_INFO_STAMP_PROBLEM,
    BadInput,
    frame_from_messages,
    header_message,
    products_to_messages,
)
from mtl3d_perception.msgs.tf import ingest_tf, latest_stamp_ns, pose_from_tf
from mtl3d_perception.replay.evaluation import GT_KEEP, ReplayEvaluation
from mtl3d_perception.replay.options import ReplayOptions
from mtl3d_perception.replay.output import (
    OUTPUT_BAG,
    QOS_DIAGNOSTICS,
    QOS_OUTPUT,
    OutputBag,
    bag_index,
    check_out_dir,
)
from mtl3d_perception.replay.report import write_report
from mtl3d_perception.ros import diagnostics
from mtl3d_perception.ros.compat.tf2_ros import Buffer
from mtl3d_perception.ros.input_monitor import InputMonitor
from mtl3d_perception.runtime.driver import FrameDriver
from mtl3d_perception.runtime.frames import JUMP_BACK_S, Frame
from mtl3d_perception.runtime.loading import resolve_device
from mtl3d_perception.runtime.pipeline import PerceptionPipeline
from mtl3d_perception.runtime.pose_queue import PoseJob
from mtl3d_perception.runtime.pose_wait import RECORDED_TF_HORIZON_S, RecordedPoseWait
from mtl3d_perception.runtime.stats import RuntimeStats
from mtl3d_perception.runtime.sync import ApproximateTimeSync, pairing_advice
from mtl3d_perception.runtime.tf_buffer import TransformException
from mtl3d_perception.runtime.throttled_log import message_shape


def depth_gt_info_topic(options: ReplayOptions) -> str:
    """The CameraInfo topic of the ground-truth depth: ``depth_gt_camera_info_topic``, or the one beside
    ``depth_gt_topic`` (image_transport's rule, as training reads a bag's depth)."""
    return options.depth_gt_camera_info_topic or topics.camera_info_topic_for(options.depth_gt_topic)


class _Replay:
    """Feeds bag messages through sync, TF and the driver; keeps the metrics; writes the output bag."""

    def __init__(self, bag: Path, out_dir: Path, model: Any, options: ReplayOptions, available: dict[str, str],
                 model_description: str, time_range: TimeRange | None = None) -> None:
        from tqdm import tqdm

        o = self.o = replace(options, device=resolve_device(options.device))
        self.bag, self.out_dir, self.available = bag, out_dir, available
        self.model_description = model_description
        self.has_tf = o.tf_topic in available or o.tf_static_topic in available
        self.types = typestore().types
        # the pipeline's one warning (a precision that fell back to fp32) reaches the user as a note in the console
        # and report.md (below); logged as well, it was printed twice
        quiet = logging.getLogger(f"{__name__}.pipeline")
        quiet.disabled = True
        self.pipeline = PerceptionPipeline(model, o, logger=quiet)
        self.single_view = None
        if o.compare_single_view:
            self.single_view = PerceptionPipeline(
                model, o.with_outputs({"depth", "semantic", "normals"}).replace(single_view=True, compare_single_view=False),
                logger=quiet)
        # as the node does before its first frame, so the first frame's latency is not the set-up's
        self.warmup_s = sum(p.warmup() for p in (self.pipeline, self.single_view) if p is not None)
        self.config = model.config
        counts, self.input_qos = bag_index(bag)
        expected = counts.get(o.image_topic) or None
        if expected and time_range is not None:  # the images in range, by rate
            expected = time_range.expected_images(expected)
        if o.limit is not None:
            expected = o.limit if expected is None else min(expected, o.limit)
        rows = max(1, min(o.montage_frames, expected or o.montage_frames))
        picks = [round(i) for i in np.linspace(0, (expected or rows * 10) - 1, rows)] if o.montage_frames > 0 else []
        expect_gt = [kind for kind, topic in (("depth", o.depth_gt_topic), ("semantic", o.semantic_gt_topic))
                     if topic in available]
        modes = ("multi_view", "single_view") if o.compare_single_view else ("multi_view",)
        self.evaluation = ReplayEvaluation(modes, self.config, expect_gt=expect_gt, slop_s=o.sync_slop_s,
                                           montage_picks=picks, warn=self._warn, register_depth=self._register_depth,
                                           depth_ready=self._depth_pose_ready, depth_camera=self._depth_gt_camera)
        # CameraInfo of ground-truth depth in its own frame (stamp -> K), for reprojecting it into the colour camera
        self.depth_gt_info_topic = depth_gt_info_topic(o)
        self.depth_gt_K: OrderedDict[int, np.ndarray] = OrderedDict()
        self.progress = tqdm(total=expected, unit="frame", desc="replay", leave=False,
                             disable=None if o.progress else True)  # None: tqdm's rule, a terminal only

        self.tf = Buffer(cache_time=max(10.0, 2 * o.pairing.max_pair_age_s), types=self.types)
        self.tf.core.on_problem = self._tf_problem  # rejected transforms: bad input in /diagnostics and the report
        # no count limit: a recording pairs by stamp over its whole length (the horizon bounds memory)
        self.sync = ApproximateTimeSync(2, None, o.sync_slop_s, callback=self._on_pair,
                                        max_age_s=RECORDED_TF_HORIZON_S)
        self.pose_wait = RecordedPoseWait(self._pose, self._latest, o.tf_timeout_s, dynamic_tf=o.tf_topic in available)
        self.image_kind = resolve_image_kind(o.image_kind, o.image_topic)
        self.cameras = CameraModels()
        self.camera: dict[str, str] = {"image_kind": self.image_kind,
                                       "image_kind_from": "the image topic's name" if o.image_kind == "auto" else "--image-kind"}
        self.writer = OutputBag(out_dir)
        self.now_ns = 0
        self._tf_logged: list[tuple[int, int]] = []  # (TF stamp covered so far, log time of the message), log order
        # logged before --start-offset and copied to the output bag when the range starts: the /tf of the last
        # PRE_START_TF_S and the last camera_info, which pose and pair the first frames in range
        self._pre_start_tf: deque[tuple[str, int, Any]] = deque()
        self._pre_start_info: tuple[str, int, Any] | None = None
        self._pre_start_images: deque[int] = deque(maxlen=8)  # stamps of the last images before the range
        self.stats = RuntimeStats(clock=lambda: self.now_ns * 1e-9)
        self.driver = FrameDriver(self.pipeline, self.pose_wait, policy="in_order", stats=self.stats,
                                  clock=lambda: self.now_ns, on_problem=self._on_problem, max_pending=REPLAY_MAX_PENDING)
        self.last_diag_ns: int | None = None
        self.last_stamp_ns: dict[str, int] = {}  # "image" / "camera_info" -> the newest header stamp (pairing advice)
        self.info_read = False  # a camera_info was read
        self.earliest_info_ns: int | None = None  # the earliest camera_info stamp (out of order: not the first's)
        self.images_before_info: list[int] = []  # stamps of the images read before any camera_info
        # the node's per-input statuses, on bag time; started at the first message in range (`_monitor_inputs`)
        self.inputs: InputMonitor | None = None
        self.images = 0
        self.processed = 0
        self.dropped: dict[str, int] = {}
        self.counts = {"no_pose": 0}
        self.past_limit = 0  # images read but left unprocessed because --limit was reached first
        self.before_start = 0  # images logged before --start-offset: read for nothing but their TF
        self.ended = False  # past --playback-duration: no more images are read; the rest is, for the frames in range
        self.total_images = counts.get(o.image_topic, 0)  # in the whole bag (its index), for the count after the range
        self.warnings: list[str] = []
        self._warned: set[str] = set()  # keys of warnings given once
        self._repeats: dict[str, list] = {}  # message_shape -> [its warning as listed, times reported]
        self._first_bad_input: dict[str, str] = {}  # bad-input kind -> the warning of its first dropped frame
        self.notes: list[str] = []  # how the inputs were read (e.g. a compressed image topic found for the default)
        # A ground-truth topic the bag lacks is named when it was asked for, or when the bag has depth elsewhere (a
        # driver's own name, e.g. image_rect_raw); a bag with no ground truth at all needs no note.
        depth_elsewhere = any("depth" in t and m in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
                              for t, m in self.available.items())
        for what, topic, default, elsewhere in (
                ("ground-truth depth", o.depth_gt_topic, topics.GT_DEPTH_TOPIC, depth_elsewhere),
                ("ground-truth semantic", o.semantic_gt_topic, topics.GT_SEMANTIC_TOPIC, False)):
            if topic and topic not in self.available and (topic != default or elsewhere):
                self.notes.append(absent_topic(bag, self.available, topic, what))
        if self.pipeline.precision_note:  # --precision fp16 on a CPU: the figures are fp32's
            self.notes.append(self.pipeline.precision_note)

    # ------------------------------------------------------------------------------------------ input

    @property
    def done(self) -> bool:
        return self.o.limit is not None and self.processed >= self.o.limit

    @property
    def in_range_pending(self) -> bool:
        """Whether frames of the range still wait: images for their camera_info, frames for TF, ground truth."""
        return bool(self.sync.queues[0]) or len(self.driver.queue) > 0 or bool(self.evaluation.waiting)

    def feed_before_start(self, topic: str, t_ns: int, msg: Any) -> None:
        """One bag message logged before ``--start-offset``: TF goes into the buffer (the first frames in range
        need the poses before them) and static TF into the output bag; images are counted, nothing is run. The /tf
        of the last ``PRE_START_TF_S`` and the last camera_info go into the output bag when the range starts (a replay
        trial: the first frame's camera_info and TF were missing from it, so RViz could not place that frame)."""
        slop_ns = round(self.o.sync_slop_s * 1e9)
        if topic in (self.o.tf_topic, self.o.tf_static_topic):  # into the buffer already (``TFLookahead``)
            if topic == self.o.tf_static_topic:
                self.writer.write(topic, self.available[topic], t_ns, msg, self.input_qos.get(topic, [QOS_TF_STATIC]))
            else:
                self._pre_start_tf.append((topic, t_ns, msg))
        elif topic == self.o.camera_info_topic:  # logged just before the first image in range, it is that one's
            stamp_ns = conversions.header_stamp_ns(msg.header.stamp)
            self.sync.add(1, stamp_ns, msg)
            self._camera_info_read(stamp_ns)
            # unless it pairs with an image before the range, logged before or after it
            paired = any(abs(stamp_ns - s) <= slop_ns for s in self._pre_start_images)
            self._pre_start_info = None if paired else (topic, t_ns, msg)
        elif topic == self.o.image_topic:
            self.before_start += 1
            stamp_ns = conversions.header_stamp_ns(msg.header.stamp)
            self._pre_start_images.append(stamp_ns)
            if (self._pre_start_info is not None
                    and abs(conversions.header_stamp_ns(self._pre_start_info[2].header.stamp) - stamp_ns) <= slop_ns):
                self._pre_start_info = None
        horizon = t_ns - round(PRE_START_TF_S * 1e9)
        while self._pre_start_tf and self._pre_start_tf[0][1] < horizon:
            self._pre_start_tf.popleft()

    def _camera_info_read(self, stamp_ns: int) -> None:
        """A camera_info was read (before or in the range): images read from now on are not before the first one."""
        self.info_read = True
        if stamp_ns > 0:
            self.earliest_info_ns = min(self.earliest_info_ns or stamp_ns, stamp_ns)

    def _copy(self, topic: str, t_ns: int, msg: Any) -> None:
        """An input message into the output bag at its own log time, with its recorded QoS."""
        o = self.o
        default = QOS_TF_STATIC if topic == o.tf_static_topic else QOS_TF if topic == o.tf_topic else QOS_SENSOR
        self.writer.write(topic, self.available[topic], t_ns, msg, self.input_qos.get(topic, [default]))

    def feed(self, topic: str, t_ns: int, msg: Any) -> None:
        """One bag message, in bag order."""
        o = self.o
        if self._pre_start_tf or self._pre_start_info:  # the range starts: what its first frames need from before it
            for pre_start in sorted([*self._pre_start_tf, *([self._pre_start_info] if self._pre_start_info else [])],
                                    key=lambda m: m[1]):
                self._copy(*pre_start)
            self._pre_start_tf.clear()
            self._pre_start_info = None
        self._run_ready(t_ns - 1)  # frames whose TF wait ended before this message: single-view
        self.now_ns = max(self.now_ns, t_ns)
        if self.inputs is None:
            self.inputs = self._monitor_inputs()
        role = {o.image_topic: "image", o.camera_info_topic: "camera_info"}.get(topic)
        if role in self.inputs.inputs:  # with its stamp: images at a steady rate of their own are not "lost"
            self.inputs.tick(role, max(conversions.header_stamp_ns(msg.header.stamp, invalid=-1), 0))
        # past --playback-duration a camera_info is copied only while it may belong to an image in range
        orphan = (self.ended and topic == o.camera_info_topic and conversions.header_stamp_ns(msg.header.stamp)
                  > self.last_stamp_ns.get("image", -1) + round(o.sync_slop_s * 1e9))
        if not orphan:
            self._copy(topic, t_ns, msg)
        if topic in (o.tf_topic, o.tf_static_topic):
            pass  # into the buffer already, read ahead (``TFLookahead``)
        elif topic == o.image_topic:
            self.images += 1
            self.stats.count("images")
            stamp_ns = self.last_stamp_ns["image"] = conversions.header_stamp_ns(msg.header.stamp, invalid=-1)
            if not self.info_read:
                self.images_before_info.append(stamp_ns)
            self.sync.add(0, max(stamp_ns, 0), msg)  # not a time: unstamped
        elif topic == o.camera_info_topic:
            self.stats.count("camera_infos")
            stamp_ns = self.last_stamp_ns["camera_info"] = conversions.header_stamp_ns(msg.header.stamp, invalid=-1)
            self._camera_info_read(stamp_ns)
            if stamp_ns < 0:  # the node counts it alike (on_camera_info)
                self.driver.problem("header", CAMERA_INFO_STAMP_PROBLEM, counter="header_problems")
            self.sync.add(1, max(stamp_ns, 0), msg)
        elif topic == o.depth_gt_topic:
            self.evaluation.add_ground_truth("depth", msg)
        elif topic == self.depth_gt_info_topic:
            self._add_depth_gt_info(msg)
        elif topic == o.semantic_gt_topic:
            self.evaluation.add_ground_truth("semantic", msg)
        self._run_ready(self.now_ns - 1)
        self.evaluation.evaluate_ready(self.now_ns, final=False)

    def feed_after_limit(self, topic: str, t_ns: int, msg: Any) -> bool:
        """One bag message after ``--limit`` was reached: only ground truth for frames still waiting for theirs
        (the last frames' ground truth is often recorded just after their image). Returns False once no frame
        waits any more, so reading can stop."""
        self.now_ns = max(self.now_ns, t_ns)
        if topic in (self.o.depth_gt_topic, self.o.semantic_gt_topic):
            self.writer.write(topic, self.available[topic], t_ns, msg, self.input_qos.get(topic, [QOS_SENSOR]))
            self.evaluation.add_ground_truth("depth" if topic == self.o.depth_gt_topic else "semantic", msg)
        elif topic == self.depth_gt_info_topic:
            self._add_depth_gt_info(msg)
        self.evaluation.evaluate_ready(self.now_ns, final=False)
        return bool(self.evaluation.waiting)

    def _monitor_inputs(self) -> InputMonitor:
        """The node's input monitor (``ros/input_monitor.py``) on bag time, with the node's inputs: image and
        camera_info (the node adds TF only when it cannot subscribe to it, which a bag's reader always can; a bag
        without TF is named in the report)."""
        o = self.o
        inputs = {"image": (o.image_topic, self.available[o.image_topic]),
                  "camera_info": (o.camera_info_topic, "sensor_msgs/msg/CameraInfo")}
        return InputMonitor(inputs, window_s=self.stats.rate_window_s, clock=lambda: self.now_ns * 1e-9)

    def add_tf(self, topic: str, msg: Any, t_ns: int | None = None) -> None:
        """A ``tf2_msgs/TFMessage`` logged at ``t_ns`` into the buffer, as the node's TransformListener does
        (``TFLookahead`` calls it ahead of the other messages); refused transforms are reported through the buffer's
        ``on_problem`` hook (``_tf_problem``)."""
        static = topic == self.o.tf_static_topic
        if not static and (jump := self.tf_jump(msg)) is not None:
            self._forget_tf(*jump)
        ingest_tf(self.tf, msg, static=static)
        if not static and msg.transforms:
            newest = max(conversions.header_stamp_ns(t.header.stamp) for t in msg.transforms)
            self.pose_wait.tf_read(newest)
            if t_ns is not None:  # when the bag first held TF up to each stamp (_pose_logged_ns)
                covered = max(newest, self._tf_logged[-1][0]) if self._tf_logged else newest
                self._tf_logged.append((covered, t_ns))
                if len(self._tf_logged) > 2 * TF_LOGGED_KEEP:
                    del self._tf_logged[:TF_LOGGED_KEEP]

    def _pose_logged_ns(self, stamp_ns: int) -> int:
        """The log time of the first TF message that took the bag's TF to ``stamp_ns`` (what a live node would have
        waited for to pose that frame), or 0 when none did (read so far)."""
        i = bisect.bisect_left(self._tf_logged, (stamp_ns, -1))
        return self._tf_logged[i][1] if i < len(self._tf_logged) else 0

    def tf_jump(self, msg: Any) -> tuple[int, int, Any] | None:
        """``(newest, stamp, transform)`` when a dynamic transform of ``msg`` is stamped over ``JUMP_BACK_S`` before its
        own edge's newest: the bag's clock went back (a simulator reset, recordings joined); else None. A zero stamp
        is no time and is left to the buffer's own refusal."""
        core = self.tf.core
        for t in msg.transforms:
            stamp = conversions.header_stamp_ns(t.header.stamp)
            newest = core.newest_stamp_ns(t.child_frame_id)
            if stamp > 0 and newest is not None and stamp < newest - int(JUMP_BACK_S * 1e9):
                return newest, stamp, t
        return None

    def _forget_tf(self, newest: int, stamp: int, t: Any) -> None:
        """At a TF time jump, forget the dynamic transforms first, as tf2_ros's Buffer does when its clock jumps back;
        else each was refused as older than the cache and the rest of the bag ran without poses (a trial: 12 of 24
        frames)."""
        self.tf.core.clear()
        self.pose_wait.newest_tf_ns = None
        self._tf_logged.clear()
        self._warn(f"TF time went back from {newest * 1e-9:.3f} s to {stamp * 1e-9:.3f} s "
                   f"({t.header.frame_id} -> {t.child_frame_id}): the bag's clock was reset; the dynamic "
                   "transforms read so far are forgotten, as tf2_ros's Buffer does at a time jump")

    def _images_before_first_info(self) -> list[int]:
        """Stamps (ns, ascending) of the images read before any camera_info and stamped more than ``sync_slop_s``
        before the first one: no camera_info can pair them (a recording, or a camera_info publisher, that started
        after the camera)."""
        if self.earliest_info_ns is None:
            return []
        slop_ns = int(self.o.sync_slop_s * 1e9)
        return sorted(s for s in self.images_before_info if 0 < s < self.earliest_info_ns - slop_ns)

    def _pose(self, frame: Frame) -> tuple[np.ndarray | None, str | None]:
        """The frame's pose from the bag's TF; a bag without TF gives none, and that is no TF failure."""
        if not self.has_tf:
            return None, None
        return pose_from_tf(self.tf, self.o.world_frame, frame)

    def _latest(self, frame: Frame) -> int | None:
        return latest_stamp_ns(self.tf, self.o.world_frame, frame.frame_id)

    def _add_depth_gt_info(self, msg: Any) -> None:
        try:
            self.depth_gt_K[conversions.stamp_to_ns(msg.header.stamp)] = conversions.camera_info_to_K(msg)
        except ValueError as exc:
            self._warn_once("depth_gt_info", f"ground-truth depth CameraInfo on {self.depth_gt_info_topic} unusable: {exc}")
        while len(self.depth_gt_K) > GT_KEEP:
            self.depth_gt_K.popitem(last=False)

    def _depth_gt_camera(self, stamp_ns: int) -> np.ndarray | None:
        """K of the ground-truth depth's camera: its CameraInfo at or before ``stamp_ns`` (training's rule)."""
        return next((K for s, K in reversed(self.depth_gt_K.items()) if s <= stamp_ns), None)

    def _depth_pose_ready(self, frame_id: str, stamp_ns: int, frame: Frame) -> bool:
        """Whether the bag has given what ``_register_depth`` needs: the depth camera's CameraInfo (a driver logs
        it just after its image) and its pose at ``stamp_ns`` from TF (read in bag order)."""
        target = self.o.world_frame if frame.T_world_cam is not None else frame.frame_id
        return self._depth_gt_camera(stamp_ns) is not None and self.tf.core.can_transform(target, frame_id, stamp_ns)

    def _register_depth(self, depth: np.ndarray, frame_id: str, stamp_ns: int, frame: Frame) -> np.ndarray | None:
        """Ground-truth depth in its own camera (``frame_id``) reprojected into the colour camera of ``frame``, as
        training reads such depth (``data.sources.bag``): its CameraInfo at or before its stamp, the colour <- depth
        transform from TF (``colour_from_depth``). None, with a warning given once, when either is missing."""
        K_depth = self._depth_gt_camera(stamp_ns)
        if K_depth is None:
            self._warn_once("depth_gt_unregistered", (
                f"ground-truth depth on {self.o.depth_gt_topic} is in frame {frame_id!r}, not the image's "
                f"{frame.frame_id!r}, and has no CameraInfo on {self.depth_gt_info_topic} to reproject it with; "
                "give --depth-gt-camera-info-topic (depth not scored)"))
            return None
        try:
            if frame.T_world_cam is not None:
                T_colour_depth = colour_from_depth(self.tf.core, self.o.world_frame, frame.T_world_cam, frame_id, stamp_ns)
            else:  # no pose in the world frame: the fixed colour <- depth transform
                T_colour_depth = self.tf.core.lookup_matrix(frame.frame_id, frame_id, stamp_ns)
        except TransformException as exc:
            self._warn_once("depth_gt_tf", f"ground-truth depth in frame {frame_id!r}: no transform to the image's "
                                           f"{frame.frame_id!r} at its stamp ({exc}); depth not scored")
            return None
        W, H = frame.size
        return reproject_depth(depth, K_depth, T_colour_depth, frame.K, (H, W))

    def _tf_problem(self, kind: str, message: str) -> None:
        """The TF buffer's problems: rejected transforms are bad input in /diagnostics; every one is in the report."""
        if kind == "transform":
            self.stats.problem(kind, message)
        self._warn(message)

    def _drop(self, reason: str, message: str | None = None) -> None:
        """Count a dropped frame under ``reason`` in the report (the stats count is the caller's or the driver's)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if message:
            self._warn(message)

    def _warn(self, message: str) -> None:
        if len(self.warnings) < 50 and message not in self.warnings:
            self.warnings.append(message)

    def _warn_once(self, key: str, message: str) -> None:
        """A warning for a problem that repeats frame after frame: given once, for the first frame."""
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)

    def _with_repeats(self, bad_input: dict[str, int]) -> list[str]:
        """The warnings, each bad-input one (given once, for its kind's first frame) with how many frames of that
        kind there were in all, so a second bomb or a camera's every frame is not mistaken for one."""
        kinds = {message: kind for kind, message in self._first_bad_input.items()}
        return [f"{m} (the first of {n} frames refused as {kinds[m]}; bad_input counts them)"
                if m in kinds and (n := bad_input.get(kinds[m], 0)) > 1 else m for m in self.warnings]

    def _on_problem(self, kind: str, message: str, counter: str | None, error: bool) -> None:
        o = self.o
        if kind == "tf":
            self.counts["no_pose"] += 1
            self._warn_once("no_pose", (
                f"{message.split('; single-view')[0]}; such frames run single-view. Replay waits for TF as long as "
                f"the bag can deliver it: up to {RECORDED_TF_HORIZON_S:g} s of recording, or, with no TF path from "
                f"{o.world_frame} to the camera, until the bag's TF is --tf-timeout ({o.tf_timeout_s:g} s) past the "
                f"frame. Check --world-frame and the bag's TF tree (its frames so far: "
                f"{', '.join(sorted(self.tf.core.all_frames())) or 'none'})"))
        elif kind == "header":
            self._warn_once(message, message)
        else:
            self._warn_latest(f"{kind}: {message}")

    def _warn_latest(self, message: str) -> None:
        """A warning that repeats with other numbers (a pose-convention verdict re-measured at each check): kept once,
        in its first place, as its latest text with how many times it came."""
        shape = message_shape(message)
        if shape not in self._repeats:
            self._repeats[shape] = [message, 0]
            self._warn(message)
        entry = self._repeats[shape]
        entry[1] += 1
        if entry[1] > 1 and entry[0] in self.warnings:
            latest = f"{message} (reported {entry[1]} times; the latest)"
            self.warnings[self.warnings.index(entry[0])] = latest
            entry[0] = latest

    def _on_pair(self, image: Any, info: Any) -> None:
        """Synchronised image + camera_info -> a frame waiting for its pose."""
        self.stats.count("received")
        try:
            frame = frame_from_messages(image, info, image_kind=self.image_kind, cameras=self.cameras,
                                        max_pixels=self.o.max_image_pixels)
        except BadInput as exc:
            self.stats.count("dropped")
            self._drop("bad_input")
            self.stats.problem(exc.kind, str(exc))  # every bad input counted in /diagnostics, by kind
            # warned once per kind (a camera's every frame repeats it); the count is in dropped_reasons / bad_input
            message = f"frame at {image.header.stamp.sec}.{image.header.stamp.nanosec:09d} dropped ({exc.kind}): {exc}"
            self._first_bad_input.setdefault(exc.kind, message)
            self._warn_once(f"bad_input.{exc.kind}", message)
            return
        described, new, problem = self.cameras.describe(info, self.image_kind)
        changed = "camera_info" in self.camera
        self.camera["camera_info"] = described  # the latest, as the node's /diagnostics
        if new:  # each distinct calibration once, as the node logs it
            self.notes.append(f"camera_info{f' changed at {frame.stamp:.3f} s' if changed else ''}: {described} "
                              f"({self.image_kind} from {self.camera['image_kind_from']})")
        if problem:  # legal values, wrong calibration: the frames are kept (warned through _on_problem)
            self.driver.problem("calibration", problem)
        if frame.header_problem:
            self.counts[frame.header_problem] = self.counts.get(frame.header_problem, 0) + 1
        if (message := header_message(frame)) is not None:
            self.driver.problem("header", message, counter="header_problems")
        # a frame's TF wait starts when it is complete and no earlier than its own stamp (bag time)
        self.driver.add_frame(frame, max(self.now_ns, frame.stamp_ns))

    # ------------------------------------------------------------------------------------------ processing

    def _run_ready(self, now_ns: int, *, end: bool = False) -> None:
        """Process the waiting frames, in order, that are ready at bag time ``now_ns`` (see ``FrameDriver``)."""
        while not self.done:
            job = self.driver.take(now_ns, end=end)
            if job is None:
                return
            self._process(job)

    def _process(self, job: PoseJob) -> None:
        products = self.driver.run(job, end_to_end=False)
        if products is None:  # unusable frame: the driver counted and reported it
            self.dropped["bad_input"] = self.dropped.get("bad_input", 0) + 1
            return
        frame = job.frame.with_pose(job.T_world_cam)
        if any(kind == "time_jump" for kind, _ in products.warnings):
            self.evaluation.reset_temporal()
        results = {"multi_view": products}
        if self.single_view is not None:
            results["single_view"] = self.single_view.process(frame)
        # logged at the bag time the frame was complete (its image and the TF that poses it recorded), as a recorder
        # logs a live node's outputs; not at the header stamp, which may run ahead of the recording's clock (a replay
        # trial: stamps 5 s ahead pushed every later message 5 s on), nor before the TF read ahead (a trial: outputs
        # preceded the /tf they used)
        log_ns = max(self.now_ns, self._pose_logged_ns(frame.stamp_ns) if job.T_world_cam is not None else 0)
        for name, msg in products_to_messages(self.types, products).items():
            self.writer.write_later(topics.output_topic(name, self.o.node_name), topics.OUTPUTS[name][0], log_ns,
                                    msg, QOS_OUTPUT)
        self._diagnostics(final=False)
        self.evaluation.add_frame(self.processed, frame, results)
        self.processed += 1
        self.progress.update(1)

    def _diagnostics(self, *, final: bool) -> None:
        period = int(self.o.diagnostics_period_s * 1e9)
        if not final and self.last_diag_ns is not None and self.now_ns - self.last_diag_ns < period:
            return
        self.last_diag_ns = self.now_ns
        header = conversions.make_header(self.types, self.now_ns, "")
        info = self.driver.info(**{f"camera.{k}": v for k, v in self.camera.items()}, model=self.model_description,
                                source=f"replay of {self.bag.name}")
        camera = topics.base_image_topic(self.o.image_topic)
        msg = diagnostics.make_diagnostic_array(self.types, header, self.stats.snapshot(),
                                                name=diagnostics.status_name(self.o.node_name, "pipeline"),
                                                hardware_id=camera, info=info)
        for status in self.inputs.statuses() if self.inputs is not None else ():  # as the node publishes them
            msg.status.append(diagnostics.make_input_status(self.types, status, self.inputs.inputs[status.role][1],
                                                            node_name=self.o.node_name, hardware_id=camera))
        self.writer.write(topics.DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", self.now_ns, msg, QOS_DIAGNOSTICS)

    def finish(self) -> None:
        self._run_ready(self.now_ns, end=True)
        # frames read ahead (waiting for TF or a source) when --limit was reached: not processed, not dropped
        self.past_limit += self.driver.clear()
        self.evaluation.evaluate_ready(self.now_ns, final=True)

    def close(self, error: str | None) -> dict[str, Any]:
        """Close the output bag and write the report; returns the summary (also in metrics.json)."""
        self.progress.close()
        unsynced = self.images - self.stats.counts.get("received", 0)
        if unsynced > 0 and not self.done:
            self.dropped["no_camera_info_match"] = unsynced
            # counted as the node counts them, before the output bag's last /diagnostics
            self.stats.count("dropped", unsynced)
            self.stats.count("sync_warnings")
            early = self._images_before_first_info()
            if early:
                stamps = f"{early[0] * 1e-9:.3f} s" + (f" to {early[-1] * 1e-9:.3f} s" if len(early) > 1 else "")
                self._warn(f"{len(early)} image(s) on {self.o.image_topic} (stamped {stamps}) were recorded before "
                           "the first camera_info on "
                           f"{self.o.camera_info_topic} (stamped {self.earliest_info_ns * 1e-9:.3f} s): they are left out, "
                           "as the node drops images until their camera_info comes (the recording or the camera_info "
                           "publisher started between them)")
            if (rest := unsynced - len(early)) > 0:
                advice = pairing_advice(self.last_stamp_ns.get("image"), self.last_stamp_ns.get("camera_info"),
                                        self.o.sync_slop_s, slop="--sync-slop",
                                        arrivals=(self.images - len(early), self.stats.counts.get("camera_infos", 0)))
                self._warn(f"{rest} {'other ' if early else ''}image(s) had no camera_info on "
                           f"{self.o.camera_info_topic} stamped within --sync-slop ({self.o.sync_slop_s:g} s) of their "
                           f"own stamp; {advice}")
        try:
            if self.processed:
                self._diagnostics(final=True)
        finally:
            self.writer.close()
        evaluation = self.evaluation
        evaluation.evaluate_ready(self.now_ns, final=True)
        if overflow := self.driver.queue.overflow:  # the oldest waiting frames, dropped to bound memory
            self.dropped["tf_wait_overflow"] = overflow
            self._warn(f"{overflow} frame(s) dropped while waiting for TF: more than {REPLAY_MAX_PENDING} frames waited "
                       f"at once (the bag's TF lags its images by seconds, up to {RECORDED_TF_HORIZON_S:g} s)")
        o = self.o
        core = self.tf.core
        if core.out_of_order:
            late_s = core.max_out_of_order_ns * 1e-9
            self._warn(f"{core.out_of_order} transform(s) on {o.tf_topic} were recorded out of order (up to "
                       f"{late_s:.3f} s older than their edge's newest): inserted in time order, as tf2 does; TF is read "
                       f"{TF_LOOKAHEAD_S:g} s of recording ahead of the images, so frames are posed with them"
                       + ("" if late_s <= TF_LOOKAHEAD_S else
                          ", except where one came later than that: a frame in its gap may have been posed across it"))
        for message in evaluation.beyond_slop_messages({"depth": o.depth_gt_topic, "semantic": o.semantic_gt_topic}):
            self._warn(message)
        if not self.pipeline.has_depth_confidence:
            self.notes.append(f"the model outputs no depth confidence (geometric_depth: false): no "
                              f"{topics.output_topic('depth/confidence', o.node_name)} and no sparsification curve")
        summary: dict[str, Any] = {
            "bag": str(self.bag),
            "provenance": bag_provenance(self.bag),  # what made the bag's data, where `mtl3d bag` recorded it
            "model": self.model_description,
            "input_size": list(self.config.input_size),
            "device": o.device,
            "node_name": o.node_name,
            "world_frame": o.world_frame,
            "topics": {"image": o.image_topic, "camera_info": o.camera_info_topic, "tf": o.tf_topic,
                       "tf_static": o.tf_static_topic, "depth_gt": o.depth_gt_topic,
                       "depth_gt_camera_info": self.depth_gt_info_topic, "semantic_gt": o.semantic_gt_topic},
            # the range of images processed, seconds from the bag's first message (ros2 bag play's); None: all
            "range_s": None if not (o.start_offset_s or o.playback_duration_s is not None) else
            {"start_offset": o.start_offset_s, "playback_duration": o.playback_duration_s},
            "image_type": self.available[o.image_topic],
            "camera": dict(self.camera),
            "has_tf": self.has_tf,
            "ground_truth": {"depth": o.depth_gt_topic in self.available, "semantic": o.semantic_gt_topic in self.available},
            "ground_truth_frames": dict(evaluation.scored),  # frames scored with each (0: in the bag, none usable)
            "depth_confidence": self.pipeline.has_depth_confidence,
            "counts": {"images": self.images, "processed": self.processed,
                       "dropped": sum(self.dropped.values()), "past_limit": self.past_limit,
                       "before_start": self.before_start,
                       "after_end": self.total_images - self.before_start - self.images if self.ended else 0,
                       **self.counts,
                       "time_jumps": self.stats.counts.get("time_jumps", 0),
                       "tf_out_of_order": core.out_of_order},
            "dropped_reasons": dict(self.dropped),
            # the counts /diagnostics carries as bad_input.<kind>: dropped frames and kept ones (interleaved
            # cameras, rejected transforms, ...) alike
            "bad_input": (bad_input := self.stats.snapshot()["bad_input"]),
            "output_counts": dict(self.writer.counts),
            "warmup_s": self.warmup_s,
            "warnings": self._with_repeats(bad_input),
            "notes": self.notes,
            "error": error,
        }
        summary.update(evaluation.summaries())
        paths = write_report(self.out_dir, summary, evaluation.records, evaluation.montage.image())
        summary["paths"] = {k: str(v) for k, v in paths.items()}
        summary["paths"]["output_bag"] = str(self.out_dir / OUTPUT_BAG)
        return summary


def check_inputs(bag: str | Path, out_dir: str | Path, options: ReplayOptions) -> tuple[ReplayOptions, str | None]:
    """Check the bag's topics and the output folder before anything is loaded or written.

    Returns:
        The options to run with (``camera_info_topic`` '' replaced by the topic beside ``image_topic``;
        ``image_topic`` replaced by ``image_topic + '/compressed'`` when only that one is in the bag) and a note saying so (None when nothing was replaced).

    Raises:
        FileNotFoundError: no such bag.
        BagError: the bag cannot be opened; lacks the image or camera_info topic; a topic has the wrong message
            type (the message lists the bag's topics and types); ``start_offset_s`` is past its end; or ``out_dir`` is a file, the input bag or
            another bag's folder.
    """
    bag, out_dir = Path(bag), Path(out_dir)
    available = bag_topics(bag)
    options = replace(options, camera_info_topic=options.camera_info_input())  # '' -> beside the image topic
    image_topic = resolve_image_topic(bag, available, options.image_topic)
    note = None
    if image_topic != options.image_topic:
        note = f"image topic {options.image_topic} is not in the bag; read {image_topic} ({available[image_topic]})"
        options = replace(options, image_topic=image_topic)
    if (depth_topic := resolve_depth_topic(available, options.depth_gt_topic)) != options.depth_gt_topic:
        note = "; ".join(filter(None, [note, f"ground-truth depth topic {options.depth_gt_topic} is not in the bag; "
                                             f"read {depth_topic} (image_transport's compressedDepth)"]))
        options = replace(options, depth_gt_topic=depth_topic)
    check_topic_type(bag, available, options.camera_info_topic, "camera_info", ("sensor_msgs/msg/CameraInfo",))
    for topic, what, msgtype in ((options.tf_topic, "TF", "tf2_msgs/msg/TFMessage"),
                                 (options.tf_static_topic, "static TF", "tf2_msgs/msg/TFMessage"),
                                 (options.depth_gt_topic, "ground-truth depth",
                                  ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")),
                                 (depth_gt_info_topic(options), "ground-truth depth camera_info",
                                  "sensor_msgs/msg/CameraInfo"),
                                 (options.semantic_gt_topic, "ground-truth semantic", "sensor_msgs/msg/Image")):
        if topic in available:  # optional topics, but one of the wrong type is a mistake worth stopping for
            check_topic_type(bag, available, topic, what, msgtype if isinstance(msgtype, tuple) else (msgtype,))
    for topic, kind, flag in ((options.depth_gt_topic, "depth", "--depth-gt-topic"),
                              (options.semantic_gt_topic, "semantic", "--semantic-gt-topic")):
        if topic in available:  # a colour or label topic given as depth: say so now, not once per frame
            messages = read_bag(bag, [topic])
            try:
                first = next(messages, None)
            finally:
                messages.close()
            if first is not None:
                check_label_encoding(bag, topic, kind, conversions.label_image_encoding(first[2]), flag)
                if kind == "depth" and conversions.is_compressed_image(first[2]):
                    try:  # a compressed format that cannot be read (RVL): refused now, not warned once per frame
                        conversions.depth_image_to_metres(first[2])
                    except ValueError as exc:
                        raise BagError(f"{bag}: {flag} {topic}: {exc}") from None
    replay_range(bag, options)  # an offset past the bag's end
    check_out_dir(out_dir, bag)
    return options, note


# How far ahead, in log time, replay reads TF before the other messages. tf2 inserts a transform recorded out of order
# in time order, but a pose looked up before it is read is interpolated across the gap it fills (a trial: odometry
# recorded in reversed bursts of 0.5 s, abs rel 0.106 -> 0.181). The node cannot wait; a recording can read ahead.
# 1 s: tf2_ros's jump threshold (JUMP_BACK_S), and more than such bursts; a few dozen TF messages held, not images.
TF_LOOKAHEAD_S = 1.0
TF_LOGGED_KEEP = 4096  # TF messages whose log times replay keeps (when each stamp was first covered), at least
# /tf logged this long before --start-offset is copied to the output bag with the range (the first frames' poses)
PRE_START_TF_S = 1.0


class TFLookahead:
    """Feeds a bag's TF messages to a replay ``TF_LOOKAHEAD_S`` of log time ahead of its other messages.

    Args:
        messages: the bag's ``(topic, t_ns, msg)`` on the TF topics, in log order (a second reader of the bag).
        state: the replay, whose ``add_tf`` inserts a message and ``tf_jump`` tells a time jump: a message that jumps
            back is held until the other messages reach its log time, so the frames before the jump keep their TF.
    """

    def __init__(self, messages: Any, state: _Replay, window_s: float = TF_LOOKAHEAD_S) -> None:
        self.messages = messages
        self.state = state
        self.window_ns = round(window_s * 1e9)
        self.pending: tuple[str, int, Any] | None = None
        self.stopped = False  # the TF reader met damage in the bag

    def advance(self, t_ns: int | None) -> None:
        """Insert the TF messages logged up to ``t_ns`` + the window (None: all that are left)."""
        while not self.stopped:
            if self.pending is None:
                try:
                    self.pending = next(self.messages, None)
                except BagError:  # damaged ahead: the frames before the damage keep the TF read so far; the other
                    self.stopped = True  # reader stops at the damage with its own error (and position)
                    return
                if self.pending is None:
                    return
            topic, t_tf, msg = self.pending
            if t_ns is not None and t_tf > t_ns + self.window_ns:
                return
            if (t_ns is not None and t_tf > t_ns and topic != self.state.o.tf_static_topic
                    and self.state.tf_jump(msg) is not None):
                return  # a time jump waits for its own log time
            self.pending = None
            self.state.add_tf(topic, msg, t_tf)

    def close(self) -> None:
        self.messages.close()


# Frames a replay keeps waiting for TF. A recording's frames wait up to RECORDED_TF_HORIZON_S of bag time (the node
# drops the oldest beyond runtime.driver.MAX_PENDING, 30): 300 holds 5 s of a 60 Hz camera; more are counted as dropped.
REPLAY_MAX_PENDING = 300


@dataclass(frozen=True)
class TimeRange:
    """The log times (ns) of a ranged replay: the bag's first and last message, and the images processed from
    ``start`` to ``end`` (None: to the bag's end), as ``ros2 bag play --start-offset / --playback-duration``."""

    first: int
    last: int
    start: int
    end: int | None

    def expected_images(self, total: int) -> int:
        """About how many of the bag's ``total`` images lie in the range (by their rate; montage rows, progress)."""
        end = self.last if self.end is None else min(self.end, self.last)
        return max(1, round((end - self.start) / max(self.last - self.first, 1) * (total - 1)))

    def note(self, limit: int | None = None) -> str:
        """How much of the bag the replay covers, for the report's notes; ``limit``: ``--limit``, which may end it
        first (a trial: the note said "to the end" of a replay that stopped after 10 frames)."""
        start = f"{(self.start - self.first) * 1e-9:g} s"
        end = "the end" if self.end is None else f"{(self.end - self.first) * 1e-9:g} s"
        return (f"replayed the images logged from {start} to {end} of the bag's {(self.last - self.first) * 1e-9:.3f} s "
                "(--start-offset / --playback-duration)" + ("" if limit is None else f", at most {limit} frames "
                                                            "(--limit)") + "; TF before the range was read")


def replay_range(bag: str | Path, options: ReplayOptions) -> TimeRange | None:
    """The range of images to process: from the bag's start + ``start_offset_s`` for ``playback_duration_s``
    (``ros2 bag play``'s origin and options); None for the whole bag.

    Raises:
        BagError: the start offset is past the bag's last message.
    """
    if not options.start_offset_s and options.playback_duration_s is None:
        return None
    first, last = bag_time_range(bag)
    start = first + round(options.start_offset_s * 1e9)
    if start > last:
        raise BagError(f"{bag}: --start-offset {options.start_offset_s:g} s is past the bag's end (its messages span "
                       f"{(last - first) * 1e-9:.3f} s); expected an offset within it")
    end = None if options.playback_duration_s is None else start + round(options.playback_duration_s * 1e9)
    return TimeRange(first, last, start, end)


def replay_bag(bag: str | Path, out_dir: str | Path, model: Any, options: ReplayOptions | None = None, *,
               model_description: str = "") -> dict[str, Any]:
    """Run the perception runtime over ``bag`` and write the output bag, metrics and pictures into ``out_dir``.

    Args:
        bag: rosbag2 directory, or a single ``.mcap`` / ``.db3`` file.
        out_dir: created if missing; replay's own files in it are replaced.
        model: a CvM-MTL network (or anything with its ``config`` / ``encode`` / ``predict`` API).
        options: topics, frames and runtime settings. When ``image_topic`` is not in the bag but
            ``image_topic + '/compressed'`` is, that one is read.
        model_description: how the model is named in the report.

    Returns:
        The summary written to ``metrics.json`` (without the per-frame values), with ``paths`` of the files.

    Raises:
        FileNotFoundError: no such bag.
        BagError: what :func:`check_inputs` refuses; no frame could be processed; or the bag breaks off part-way.
            In the last two cases everything up to that point has been written first.
    """
    bag, out_dir = Path(bag), Path(out_dir)
    options, note = check_inputs(bag, out_dir, options or ReplayOptions())
    available = bag_topics(bag)
    wanted = [t for t in (options.image_topic, options.camera_info_topic, options.tf_topic, options.tf_static_topic,
                          options.depth_gt_topic, depth_gt_info_topic(options), options.semantic_gt_topic)
              if t in available]
    out_dir.mkdir(parents=True, exist_ok=True)
    time_range = replay_range(bag, options)
    messages = read_bag(bag, wanted)
    tf_messages = read_bag(bag, [t for t in (options.tf_topic, options.tf_static_topic) if t in available])
    try:
        state = _Replay(bag, out_dir, model, options, available, model_description or type(model).__name__,
                        time_range)
    except BaseException:
        messages.close()
        tf_messages.close()
        raise
    tf_ahead = TFLookahead(tf_messages, state)
    if note:
        state.notes.append(note)
    start_ns, end_ns = (None, None) if time_range is None else (time_range.start, time_range.end)
    if time_range is not None:
        state.notes.append(time_range.note(options.limit))
    error = None
    try:
        for topic, t_ns, msg in messages:
            tf_ahead.advance(t_ns)
            if start_ns is not None and t_ns < start_ns:
                state.feed_before_start(topic, t_ns, msg)
                continue
            if end_ns is not None and t_ns > end_ns:  # past the range: its frames' camera_info, TF, ground truth
                state.ended = True
                if topic == options.image_topic:
                    continue
                if not state.in_range_pending:
                    break
            if not state.done:
                state.feed(topic, t_ns, msg)
            elif not state.feed_after_limit(topic, t_ns, msg):
                break
        state.finish()
    except BagError as exc:
        error = str(exc)
    except BaseException as exc:  # a crash or Ctrl-C: still close the bag and write the report, then re-raise
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        messages.close()
        tf_ahead.close()
        summary = state.close(error)
    if error is not None:
        raise BagError(f"{error} — stopped after {state.processed} processed frame(s); "
                       f"what was processed is in {out_dir}")
    if state.processed == 0:
        raise BagError(f"{bag}: no frame was processed: {_why_nothing(summary)}; the report is in {out_dir}")
    return summary


def _why_nothing(summary: dict[str, Any]) -> str:
    """Why a replay processed no frame, from its summary."""
    topic, images = summary["topics"]["image"], summary["counts"]["images"]
    outside = summary["counts"].get("before_start", 0) + summary["counts"].get("after_end", 0)
    if images == 0 and outside:
        return (f"no image on {topic} in the range (--start-offset / --playback-duration); "
                f"{summary['counts']['before_start']} before it, {summary['counts']['after_end']} after it")
    if images == 0:
        return f"no message on {topic}"
    reasons = ", ".join(f"{reason} {n}" for reason, n in summary["dropped_reasons"].items())
    why = f"{images} image(s) on {topic}, all dropped ({reasons})"
    if summary["dropped_reasons"].get("no_camera_info_match"):
        why += f"; no camera_info on {summary['topics']['camera_info']} within the sync slop of an image's stamp"
    if summary["warnings"]:
        why += f"; first problem: {summary['warnings'][0]}"
    return why
