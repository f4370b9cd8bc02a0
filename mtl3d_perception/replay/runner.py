"""The loop of `mtl3d replay`: bag messages through the node's runtime, in bag time (see :mod:`mtl3d_perception.replay`).

:func:`replay_bag` checks the bag's topics, then reads it in time order and feeds each message to ``_Replay``:
image (raw or compressed) + camera_info go through the approximate-time synchroniser (``runtime.sync``) and
become frames (``msgs.messages.frame_from_messages``), ``/tf`` + ``/tf_static`` go into the TF buffer (``runtime.tf_buffer``),
each frame waits for its pose as long as the bag can still deliver it (``runtime.pose_wait``, in bag time), runs
through ``PerceptionPipeline`` and its products are written as the node's output messages
(``msgs.messages.products_to_messages``) into the output bag (:mod:`mtl3d_perception.replay.output`). Ground
truth and metrics: :mod:`mtl3d_perception.replay.evaluation`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtl3d_perception import topics
from mtl3d_perception.data.bag import (
    QOS_SENSOR,
    QOS_TF,
    QOS_TF_STATIC,
    BagError,
    bag_topics,
    check_topic_type,
    read_bag,
    resolve_image_topic,
    typestore,
)
from mtl3d_perception.msgs import conversions
from mtl3d_perception.msgs.camera_model import CameraModels, resolve_image_kind
from mtl3d_perception.msgs.messages import (
    HEADER_PROBLEMS,
    BadInput,
    frame_from_messages,
    products_to_messages,
)
from mtl3d_perception.replay.evaluation import ReplayEvaluation
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
from mtl3d_perception.runtime.frames import MAX_IMAGE_PIXELS, Frame
from mtl3d_perception.runtime.history import PairingConfig
from mtl3d_perception.runtime.pipeline import PerceptionPipeline
from mtl3d_perception.runtime.pose_wait import RECORDED_TF_HORIZON_S, RecordedPoseWait
from mtl3d_perception.runtime.stats import RuntimeStats
from mtl3d_perception.runtime.sync import ApproximateTimeSync
from mtl3d_perception.runtime.tf_buffer import TransformBuffer, TransformException


@dataclass
class ReplayOptions:
    """Topics, frames and runtime settings of a replay (defaults: DESIGN §5 and the node's parameters)."""

    image_topic: str = topics.IMAGE_TOPIC
    camera_info_topic: str = topics.CAMERA_INFO_TOPIC
    tf_topic: str = topics.TF_TOPIC
    tf_static_topic: str = topics.TF_STATIC_TOPIC
    depth_gt_topic: str = topics.GT_DEPTH_TOPIC
    semantic_gt_topic: str = topics.GT_SEMANTIC_TOPIC
    world_frame: str = topics.WORLD_FRAME
    node_name: str = topics.NODE_NAME
    device: str = "cpu"
    limit: int | None = None  # frames to process; None = all
    compare_single_view: bool = False
    sync_slop_s: float = 0.02
    sync_queue_size: int | None = None  # None: pair by stamp over the recording (runtime.pose_wait's horizon)
    tf_timeout_s: float = 0.3  # how far past a frame the bag's TF must be before a frame without a TF chain gives up
    image_kind: str = "auto"  # image_raw (rectify), image_rect (use P) or auto (from the image topic's name)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    output_resolution: str = "network"
    point_stride: int = 4
    cloud_frame: str = "camera"
    montage_frames: int = 4
    diagnostics_period_s: float = 1.0
    max_image_pixels: int = MAX_IMAGE_PIXELS  # larger images (or compressed headers declaring them) are bad input
    progress: bool = True


class _Replay:
    """Feeds bag messages through sync, TF and the pipeline(s); keeps the metrics; writes the output bag."""

    def __init__(self, bag: Path, out_dir: Path, model: Any, options: ReplayOptions, available: dict[str, str],
                 model_description: str) -> None:
        from tqdm import tqdm

        o = self.o = options
        self.bag, self.out_dir, self.available = bag, out_dir, available
        self.model_description = model_description
        self.has_tf = o.tf_topic in available or o.tf_static_topic in available
        self.types = typestore().types
        kwargs = dict(device=o.device, pairing=o.pairing, output_resolution=o.output_resolution,
                      point_stride=o.point_stride, cloud_frame=o.cloud_frame, world_frame=o.world_frame,
                      max_image_pixels=o.max_image_pixels)
        self.pipelines = {"multi_view": PerceptionPipeline(model, **kwargs)}
        if o.compare_single_view:
            self.pipelines["single_view"] = PerceptionPipeline(model, **{**kwargs, "outputs": ("depth", "semantic", "normals")})
        # as the node does before its first frame, so the first frame's latency is not the set-up's
        self.warmup_s = sum(pipeline.warmup() for pipeline in self.pipelines.values())
        self.config = model.config
        counts, self.input_qos = bag_index(bag)
        expected = counts.get(o.image_topic) or None
        if o.limit is not None:
            expected = o.limit if expected is None else min(expected, o.limit)
        rows = max(1, min(o.montage_frames, expected or o.montage_frames))
        picks = [round(i) for i in np.linspace(0, (expected or rows * 10) - 1, rows)] if o.montage_frames > 0 else []
        expect_gt = [kind for kind, topic in (("depth", o.depth_gt_topic), ("semantic", o.semantic_gt_topic))
                     if topic in available]
        self.evaluation = ReplayEvaluation(self.pipelines, self.config, expect_gt=expect_gt, slop_s=o.sync_slop_s,
                                           montage_picks=picks, warn=self._warn)
        self.progress = tqdm(total=expected, unit="frame", desc="replay", disable=not o.progress, leave=False)

        self.tf = TransformBuffer(cache_time_s=max(10.0, 2 * o.pairing.max_pair_age_s), on_problem=self._tf_problem)
        self.sync = ApproximateTimeSync(2, o.sync_queue_size, o.sync_slop_s, callback=self._on_pair,
                                        max_age_s=RECORDED_TF_HORIZON_S)
        self.pose_wait = RecordedPoseWait(self.tf, o.world_frame, o.tf_timeout_s)
        self.pending: deque[Frame] = deque()  # synchronised frames waiting for TF, in order
        self.image_kind = resolve_image_kind(o.image_kind, o.image_topic)
        self.cameras = CameraModels()
        self.camera: dict[str, str] = {"image_kind": self.image_kind,
                                       "image_kind_from": "the image topic's name" if o.image_kind == "auto" else "--image-kind"}
        self.writer = OutputBag(out_dir)
        self.stats = RuntimeStats(clock=lambda: self.now_ns * 1e-9)
        self.now_ns = 0
        self.last_diag_ns: int | None = None
        self.images = 0
        self.processed = 0
        self.dropped: dict[str, int] = {}
        self.bad_input: dict[str, int] = {}  # frames dropped as bad input, by BadInput kind
        self.counts = {"no_pose": 0, "time_jumps": 0}
        self.warnings: list[str] = []
        self._warned: set[str] = set()  # keys of warnings given once
        self.notes: list[str] = []  # how the inputs were read (e.g. a compressed image topic found for the default)
        self.last_stamp_ns: int | None = None

    # ------------------------------------------------------------------------------------------ input

    @property
    def done(self) -> bool:
        return self.o.limit is not None and self.processed >= self.o.limit

    def feed(self, topic: str, t_ns: int, msg: Any) -> None:
        """One bag message, in bag order."""
        o = self.o
        self.now_ns = max(self.now_ns, t_ns)
        self._run_ready()  # frames whose TF wait ended before this message: single-view
        default = QOS_TF_STATIC if topic == o.tf_static_topic else QOS_TF if topic == o.tf_topic else QOS_SENSOR
        self.writer.write(topic, self.available[topic], t_ns, msg, self.input_qos.get(topic, [default]))
        if topic in (o.tf_topic, o.tf_static_topic):
            self._add_tf(msg, static=topic == o.tf_static_topic)
        elif topic == o.image_topic:
            self.images += 1
            self.sync.add(0, conversions.stamp_to_ns(msg.header.stamp), msg)
        elif topic == o.camera_info_topic:
            self.sync.add(1, conversions.stamp_to_ns(msg.header.stamp), msg)
        elif topic == o.depth_gt_topic:
            self.evaluation.add_ground_truth("depth", msg)
        elif topic == o.semantic_gt_topic:
            self.evaluation.add_ground_truth("semantic", msg)
        self._run_ready()
        self.evaluation.evaluate_ready(self.now_ns, final=False)

    def feed_after_limit(self, topic: str, t_ns: int, msg: Any) -> bool:
        """One bag message after ``--limit`` was reached: only ground truth for frames still waiting for theirs
        (the last frames' ground truth is often recorded just after their image). Returns False once no frame
        waits any more, so reading can stop."""
        self.now_ns = max(self.now_ns, t_ns)
        if topic in (self.o.depth_gt_topic, self.o.semantic_gt_topic):
            self.writer.write(topic, self.available[topic], t_ns, msg, self.input_qos.get(topic, [QOS_SENSOR]))
            self.evaluation.add_ground_truth("depth" if topic == self.o.depth_gt_topic else "semantic", msg)
        self.evaluation.evaluate_ready(self.now_ns, final=False)
        return bool(self.evaluation.waiting)

    def _add_tf(self, msg: Any, *, static: bool) -> None:
        for tf in msg.transforms:
            try:
                stamp_ns = conversions.stamp_to_ns(tf.header.stamp)
                self.tf.set_transform_matrix(tf.header.frame_id, tf.child_frame_id, stamp_ns,
                                             conversions.transform_to_matrix(tf.transform), is_static=static)
                if not static:
                    self.pose_wait.tf_read(stamp_ns)
            except (TransformException, ValueError) as exc:
                self.tf.reject(f"transform {tf.header.frame_id} -> {tf.child_frame_id} ignored: {exc}")

    def _tf_problem(self, kind: str, message: str) -> None:
        """The TF buffer's problems: rejected transforms are bad input in /diagnostics; every one is in the report."""
        if kind == "transform":
            self.stats.problem(kind, message)
        self._warn(message)

    def _drop(self, reason: str, message: str | None = None, *, kind: str | None = None) -> None:
        """Count a dropped frame (``reason`` in the report; ``kind``: also a bad input of that kind in /diagnostics)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.stats.count("dropped")
        if kind is not None:
            self.stats.problem(kind, message or reason)
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

    def _on_pair(self, image: Any, info: Any) -> None:
        """Synchronised image + camera_info -> a frame waiting for its pose."""
        self.stats.count("received")
        try:
            frame = frame_from_messages(image, info, image_kind=self.image_kind, cameras=self.cameras,
                                        max_pixels=self.o.max_image_pixels)
        except BadInput as exc:
            self._drop("bad_input")
            self.stats.problem(exc.kind, str(exc))  # every bad input counted in /diagnostics, by kind
            self.bad_input[exc.kind] = self.bad_input.get(exc.kind, 0) + 1
            # warned once per kind (a camera's every frame repeats it); the count is in dropped_reasons / bad_input
            self._warn_once(f"bad_input.{exc.kind}", f"frame at {image.header.stamp.sec}."
                                                     f"{image.header.stamp.nanosec:09d} dropped ({exc.kind}): {exc}")
            return
        if "camera_info" not in self.camera:
            self.camera["camera_info"] = self.cameras.get(info).describe(self.image_kind)
            self.notes.append(f"camera_info: {self.camera['camera_info']} ({self.image_kind} "
                              f"from {self.camera['image_kind_from']})")
        if frame.header_problem:
            self.counts[frame.header_problem] = self.counts.get(frame.header_problem, 0) + 1
            self.stats.problem("header", HEADER_PROBLEMS[frame.header_problem], counter="header_problems")
            self._warn_once(frame.header_problem, HEADER_PROBLEMS[frame.header_problem])
        self.pending.append(frame)

    # ------------------------------------------------------------------------------------------ processing

    def _run_ready(self, *, end: bool = False) -> None:
        """Process pending frames in order, each once ``runtime.pose_wait`` says it stops waiting (posed, or
        single-view when the bag cannot deliver its pose any more; ``end``: the bag is over)."""
        while self.pending and not self.done:
            frame = self.pending[0]
            pose = None
            if self.has_tf and not frame.header_problem:
                check = self.pose_wait.check(frame, self.now_ns, end=end)
                if not check.ready:
                    return  # TF for this stamp may still come
                pose = check.pose
                if check.error is not None:
                    self.counts["no_pose"] += 1
                    self.stats.problem("tf", check.error, counter="tf_failures")
                    self._warn_once("no_pose", (
                        f"no pose of {frame.frame_id} in {self.o.world_frame} for the frame at {frame.stamp:.3f} s "
                        f"({check.error}); such frames run single-view. Replay waits for TF as long as the bag can "
                        f"deliver it: up to {RECORDED_TF_HORIZON_S:g} s of recording, or, with no TF path from "
                        f"{self.o.world_frame} to the camera, until the bag's TF is --tf-timeout "
                        f"({self.o.tf_timeout_s:g} s) past the frame. Check --world-frame and the bag's TF tree"))
            self.pending.popleft()
            self._process(frame.with_pose(pose))

    def _process(self, frame: Frame) -> None:
        if self.last_stamp_ns is not None and frame.stamp_ns < self.last_stamp_ns:
            self.counts["time_jumps"] += 1
            self.evaluation.reset_temporal()
        self.last_stamp_ns = frame.stamp_ns
        results = {}
        for mode, pipeline in self.pipelines.items():
            try:
                results[mode] = pipeline.process(frame if mode == "multi_view" else frame.with_pose(None))
            except ValueError as exc:
                self._drop("bad_input", f"frame at {frame.stamp:.6f} s dropped: {exc}", kind="frame")
                return
        products = results["multi_view"]
        for kind, message in products.warnings:
            self.stats.problem(kind, message)
            self._warn(f"{kind}: {message}")
        for name, msg in products_to_messages(self.types, products).items():
            self.writer.write(topics.output_topic(name, self.o.node_name), topics.OUTPUTS[name][0], frame.stamp_ns,
                              msg, QOS_OUTPUT)
        self.stats.frame_done(products.timings, single_view=products.single_view, pair_reason=products.pair_reason)
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
        info = {**{f"camera.{k}": v for k, v in self.camera.items()}, "device": self.o.device,
                "model": self.model_description,
                "precision": self.pipelines["multi_view"].precision,
                "input_size": "{}x{}".format(*self.config.input_size), "source": f"replay of {self.bag.name}"}
        msg = diagnostics.make_diagnostic_array(self.types, header, self.stats.snapshot(),
                                                name=f"{self.o.node_name}: pipeline", hardware_id=self.o.device, info=info)
        self.writer.write(topics.DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", self.now_ns, msg, QOS_DIAGNOSTICS)

    def finish(self) -> None:
        self._run_ready(end=True)
        for _ in self.pending:  # left over after --limit
            self._drop("limit")
        self.pending.clear()
        self.evaluation.evaluate_ready(self.now_ns, final=True)

    def close(self, error: str | None) -> dict[str, Any]:
        """Close the output bag and write the report; returns the summary (also in metrics.json)."""
        self.progress.close()
        try:
            if self.processed:
                self._diagnostics(final=True)
        finally:
            self.writer.close()
        evaluation = self.evaluation
        evaluation.evaluate_ready(self.now_ns, final=True)
        unsynced = self.images - self.stats.counts.get("received", 0)
        if unsynced > 0 and not self.done:
            self.dropped["no_camera_info_match"] = unsynced
            self._warn(f"{unsynced} image(s) had no camera_info on {self.o.camera_info_topic} stamped within "
                       f"--sync-slop ({self.o.sync_slop_s:g} s) of their own stamp; raise --sync-slop if the camera "
                       "stamps them apart")
        o = self.o
        summary: dict[str, Any] = {
            "bag": str(self.bag),
            "model": self.model_description,
            "input_size": list(self.config.input_size),
            "device": o.device,
            "node_name": o.node_name,
            "world_frame": o.world_frame,
            "topics": {"image": o.image_topic, "camera_info": o.camera_info_topic, "tf": o.tf_topic,
                       "tf_static": o.tf_static_topic, "depth_gt": o.depth_gt_topic, "semantic_gt": o.semantic_gt_topic},
            "image_type": self.available[o.image_topic],
            "camera": dict(self.camera),
            "has_tf": self.has_tf,
            "ground_truth": {"depth": o.depth_gt_topic in self.available, "semantic": o.semantic_gt_topic in self.available},
            "counts": {"images": self.images, "processed": self.processed,
                       "dropped": sum(self.dropped.values()), **self.counts},
            "dropped_reasons": dict(self.dropped),
            "bad_input": dict(self.bad_input),
            "output_counts": dict(self.writer.counts),
            "warmup_s": self.warmup_s,
            "warnings": self.warnings,
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
        The options to run with (``image_topic`` replaced by ``image_topic + '/compressed'`` when only that one
        is in the bag) and a note saying so (None when nothing was replaced).

    Raises:
        FileNotFoundError: no such bag.
        BagError: the bag cannot be opened; lacks the image or camera_info topic; a topic has the wrong message
            type (the message lists the bag's topics and types); or ``out_dir`` is a file, the input bag or
            another bag's folder.
    """
    bag, out_dir = Path(bag), Path(out_dir)
    available = bag_topics(bag)
    image_topic = resolve_image_topic(bag, available, options.image_topic)
    note = None
    if image_topic != options.image_topic:
        note = f"image topic {options.image_topic} is not in the bag; read {image_topic} ({available[image_topic]})"
        options = replace(options, image_topic=image_topic)
    check_topic_type(bag, available, options.camera_info_topic, "camera_info", ("sensor_msgs/msg/CameraInfo",))
    for topic, what, msgtype in ((options.tf_topic, "TF", "tf2_msgs/msg/TFMessage"),
                                 (options.tf_static_topic, "static TF", "tf2_msgs/msg/TFMessage"),
                                 (options.depth_gt_topic, "ground-truth depth", "sensor_msgs/msg/Image"),
                                 (options.semantic_gt_topic, "ground-truth semantic", "sensor_msgs/msg/Image")):
        if topic in available:  # optional topics, but one of the wrong type is a mistake worth stopping for
            check_topic_type(bag, available, topic, what, (msgtype,))
    check_out_dir(out_dir, bag)
    return options, note


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
                          options.depth_gt_topic, options.semantic_gt_topic) if t in available]
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = read_bag(bag, wanted)
    try:
        state = _Replay(bag, out_dir, model, options, available, model_description or type(model).__name__)
    except BaseException:
        messages.close()
        raise
    if note:
        state.notes.append(note)
    error = None
    try:
        for topic, t_ns, msg in messages:
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
    if images == 0:
        return f"no message on {topic}"
    reasons = ", ".join(f"{reason} {n}" for reason, n in summary["dropped_reasons"].items())
    why = f"{images} image(s) on {topic}, all dropped ({reasons})"
    if summary["dropped_reasons"].get("no_camera_info_match"):
        why += f"; no camera_info on {summary['topics']['camera_info']} within the sync slop of an image's stamp"
    if summary["warnings"]:
        why += f"; first problem: {summary['warnings'][0]}"
    return why
