"""``mtl3d replay``: run the node's runtime over a rosbag2 (.mcap or .db3) without ROS, and evaluate it.

The same parts as the node, driven by bag time instead of an executor: image + camera_info through the
approximate-time synchroniser (``runtime.sync``), ``/tf`` + ``/tf_static`` into the TF buffer
(``runtime.tf_buffer``), each frame waiting up to ``tf_timeout_s`` of bag time for its pose (then single-view,
as the node does), ``PerceptionPipeline`` (history pairing, streaming model) and the node's output topics.
Unlike the node, which drops stale frames when inference is slower than the camera, replay processes every
synchronised frame (the offline equivalent of an infinitely fast node), so runs are deterministic.

Writes into ``--out DIR``:

- ``output.mcap``: the inputs, ground truth, TF, every output topic (``/<node>/depth`` ... ``/<node>/points``,
  ``/diagnostics``) with the input image's stamp and frame id, and the offered QoS of each topic — a single
  self-describing MCAP file that Foxglove opens and ``ros2 bag play`` plays; ``metadata.yaml`` beside it makes
  ``DIR`` a rosbag2 directory as well;
- ``metrics.json``, ``report.md``, ``montage.png``, ``depth_error.png``, ``latency.png``
  (see :mod:`mtl3d_perception.replay_report`).

Output is written as frames are processed and the bag writer is closed in every case, so a corrupt bag keeps
everything up to the bad message (and the command then fails, naming it).

Example::

    mtl3d replay demo_out/bag --out /tmp/replay --compare-single-view
"""

from __future__ import annotations

import argparse
import shutil
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mtl3d_perception import topics
from mtl3d_perception.data.bag import (
    QOS_SENSOR,
    QOS_TF,
    QOS_TF_STATIC,
    BagError,
    bag_topics,
    read_bag,
    typestore,
)
from mtl3d_perception.geometry import depth_from_mm
from mtl3d_perception.replay_report import (
    MODES,
    GroundTruth,
    ModeEvaluator,
    MontageCollector,
    gt_from_messages,
    metrics_table,
    write_report,
)
from mtl3d_perception.ros import conversions, diagnostics
from mtl3d_perception.runtime.frames import Frame
from mtl3d_perception.runtime.history import PairingConfig
from mtl3d_perception.runtime.pipeline import CLOUD_FRAMES, OUTPUT_RESOLUTIONS, PerceptionPipeline
from mtl3d_perception.runtime.sync import ApproximateTimeSync
from mtl3d_perception.runtime.tf_buffer import TransformBuffer, TransformException

OUTPUT_BAG = "output.mcap"


def _qos(depth: int) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, QosDurability.VOLATILE, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


QOS_OUTPUT = _qos(2)  # the node's OUTPUT_QOS: reliable, volatile, keep last 2
QOS_DIAGNOSTICS = _qos(10)


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
    sync_queue_size: int = 2
    tf_timeout_s: float = 0.1  # bag time a frame waits for its pose before running single-view
    pairing: PairingConfig = field(default_factory=PairingConfig)
    output_resolution: str = "network"
    point_stride: int = 4
    cloud_frame: str = "camera"
    montage_frames: int = 4
    diagnostics_period_s: float = 1.0
    progress: bool = True


def _bag_index(bag: Path) -> tuple[dict[str, int], dict[str, list[Qos]]]:
    """Message counts and offered QoS per topic from the bag's index (empty when the index cannot say)."""
    counts: dict[str, int] = {}
    qos: dict[str, list[Qos]] = {}
    try:
        with Reader(bag) as reader:
            for c in reader.connections:
                counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
                if getattr(c.ext, "offered_qos_profiles", None):
                    qos[c.topic] = list(c.ext.offered_qos_profiles)
    except Exception:  # only sizes the progress bar and copies QoS; read_bag reports real problems
        pass
    return counts, qos


class _OutputBag:
    """The output rosbag2: written into a staging folder, then moved to ``DIR/output.mcap`` (+ metadata.yaml)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.staging = out_dir / ".output_staging"
        shutil.rmtree(self.staging, ignore_errors=True)
        for old in (out_dir / OUTPUT_BAG, out_dir / "metadata.yaml"):
            old.unlink(missing_ok=True)
        # the storage file is named after the bag folder: <staging>/output/output.mcap
        self.writer = Writer(self.staging / "output", version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.store = typestore()
        self.conns: dict[str, Any] = {}
        self.last_ns = 0
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msgtype: str, t_ns: int, msg: Any, qos: Qos | list[Qos]) -> None:
        if topic not in self.conns:
            profiles = qos if isinstance(qos, list) else [qos]
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                           offered_qos_profiles=profiles)
        self.last_ns = max(self.last_ns, int(t_ns))
        self.writer.write(self.conns[topic], self.last_ns, self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        self.writer.close()
        bag_dir = self.staging / "output"
        shutil.move(str(bag_dir / OUTPUT_BAG), self.out_dir / OUTPUT_BAG)
        shutil.move(str(bag_dir / "metadata.yaml"), self.out_dir / "metadata.yaml")
        shutil.rmtree(self.staging, ignore_errors=True)


def product_messages(types: Any, products: Any) -> list[tuple[str, str, Any]]:
    """Products -> ``[(output name, message type, message)]`` for every output present, headers copied from the input.

    Mirrors the node's ``publish_products`` (same topics, encodings and frames; ``topics.OUTPUTS``).
    """
    header = conversions.make_header(types, products.stamp_ns, products.frame_id)
    W, H = products.size
    out = []
    images = [("depth", products.depth), ("semantic", products.labels), ("semantic/color", products.labels_color),
              ("normals", products.normals), ("normals/color", products.normals_color), ("boundary", products.boundary)]
    for name, array in images:
        if array is not None:
            msgtype, encoding = topics.OUTPUTS[name]
            out.append((name, msgtype, conversions.make_image(types, header, array, encoding)))
    if products.depth is not None:
        out.append(("depth/camera_info", topics.OUTPUTS["depth/camera_info"][0],
                    conversions.make_camera_info(types, header, products.K, W, H)))
    if products.cloud is not None:
        cloud = products.cloud
        cloud_header = conversions.make_header(types, products.stamp_ns, products.cloud_frame_id)
        out.append(("points", topics.OUTPUTS["points"][0], conversions.make_point_cloud2(
            types, cloud_header, cloud.points, rgb=cloud.rgb, labels=cloud.labels)))
    return out


def _depth_gt(msg: Any) -> np.ndarray:
    """Ground-truth depth in metres, NaN invalid, from 32FC1 metres or 16UC1 millimetres (REP 118)."""
    if msg.encoding == "32FC1":
        return conversions.image_to_array(msg).astype(np.float32)
    if msg.encoding in ("16UC1", "mono16"):
        return depth_from_mm(conversions.image_to_array(msg))
    raise ValueError(f"depth ground truth must be 32FC1 (m) or 16UC1 (mm), got {msg.encoding!r}")


def _semantic_gt(msg: Any) -> np.ndarray:
    if msg.encoding not in ("mono8", "8UC1"):
        raise ValueError(f"semantic ground truth must be mono8 class ids, got {msg.encoding!r}")
    return conversions.image_to_array(msg).astype(np.uint8)


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
                      point_stride=o.point_stride, cloud_frame=o.cloud_frame, world_frame=o.world_frame)
        self.pipelines = {"multi_view": PerceptionPipeline(model, **kwargs)}
        if o.compare_single_view:
            self.pipelines["single_view"] = PerceptionPipeline(model, **{**kwargs, "outputs": ("depth", "semantic", "normals")})
        cfg = model.config
        self.config = cfg
        self.evaluators = {mode: ModeEvaluator(len(cfg.classes), cfg.depth_max) for mode in self.pipelines}
        counts, self.input_qos = _bag_index(bag)
        expected = counts.get(o.image_topic) or None
        if o.limit is not None:
            expected = o.limit if expected is None else min(expected, o.limit)
        rows = max(1, min(o.montage_frames, expected or o.montage_frames))
        picks = [round(i) for i in np.linspace(0, (expected or rows * 10) - 1, rows)] if o.montage_frames > 0 else []
        self.montage = MontageCollector(picks, cfg.depth_range, palette=cfg.palette)
        self.progress = tqdm(total=expected, unit="frame", desc="replay", disable=not o.progress, leave=False)

        self.tf = TransformBuffer(cache_time_s=max(10.0, 2 * o.pairing.max_pair_age_s))
        self.sync = ApproximateTimeSync(2, o.sync_queue_size, o.sync_slop_s, callback=self._on_pair)
        self.pending: deque[tuple[Frame, int]] = deque()  # synchronised frames waiting for TF (arrival ns)
        self.to_evaluate: deque[dict[str, Any]] = deque()  # processed frames waiting for their ground truth
        self.gt_depth: OrderedDict[int, np.ndarray] = OrderedDict()
        self.gt_semantic: OrderedDict[int, np.ndarray] = OrderedDict()
        self.writer = _OutputBag(out_dir)
        self.stats = diagnostics.RuntimeStats(clock=lambda: self.now_ns * 1e-9)
        self.now_ns = 0
        self.last_diag_ns: int | None = None
        self.images = 0
        self.processed = 0
        self.dropped: dict[str, int] = {}
        self.counts = {"no_pose": 0, "time_jumps": 0}
        self.records: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.last_stamp_ns: int | None = None

    # ------------------------------------------------------------------------------------------ input

    @property
    def done(self) -> bool:
        return self.o.limit is not None and self.processed >= self.o.limit

    def feed(self, topic: str, t_ns: int, msg: Any) -> None:
        """One bag message, in bag order."""
        o = self.o
        self._run_ready(expire_before=t_ns)  # frames whose TF wait ended before this message: single-view
        self.now_ns = max(self.now_ns, t_ns)
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
            self._keep(self.gt_depth, msg, _depth_gt)
        elif topic == o.semantic_gt_topic:
            self._keep(self.gt_semantic, msg, _semantic_gt)
        self._run_ready()
        self._evaluate_ready(final=False)

    def _keep(self, store: OrderedDict, msg: Any, convert) -> None:
        try:
            store[conversions.stamp_to_ns(msg.header.stamp)] = convert(msg)
        except ValueError as exc:
            self._warn(f"ground truth at {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} unusable: {exc}")
        while len(store) > 200:
            store.popitem(last=False)

    def _add_tf(self, msg: Any, *, static: bool) -> None:
        for tf in msg.transforms:
            try:
                self.tf.set_transform_matrix(tf.header.frame_id, tf.child_frame_id, conversions.stamp_to_ns(tf.header.stamp),
                                             conversions.transform_to_matrix(tf.transform), is_static=static)
            except (TransformException, ValueError) as exc:
                self._warn(f"transform {tf.header.frame_id} -> {tf.child_frame_id} ignored: {exc}")

    def _drop(self, reason: str, message: str | None = None) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.stats.count("dropped")
        if message:
            self._warn(message)

    def _warn(self, message: str) -> None:
        if len(self.warnings) < 50 and message not in self.warnings:
            self.warnings.append(message)

    def _on_pair(self, image: Any, info: Any) -> None:
        """Synchronised image + camera_info -> a frame waiting for its pose (the node's ``frame_from_messages``)."""
        self.stats.count("received")
        try:
            rgb = np.require(conversions.image_to_rgb8(image), requirements="W")  # bag buffers are read-only
            K = conversions.camera_info_to_K(info)
            if (info.width, info.height) != (0, 0) and (info.width, info.height) != (image.width, image.height):
                raise ValueError(f"camera_info size {info.width}x{info.height} differs from image size {image.width}x{image.height}")
            if not image.header.frame_id:
                raise ValueError("image header has an empty frame_id")
            frame = Frame(conversions.stamp_to_ns(image.header.stamp), image.header.frame_id, rgb, K)
            frame.validate()
        except ValueError as exc:
            self._drop("bad_input", f"frame at {image.header.stamp.sec}.{image.header.stamp.nanosec:09d} dropped: {exc}")
            return
        self.pending.append((frame, self.now_ns))

    # ------------------------------------------------------------------------------------------ processing

    def _pose(self, frame: Frame) -> tuple[np.ndarray | None, str | None]:
        try:
            return self.tf.lookup_matrix(self.o.world_frame, frame.frame_id, frame.stamp_ns), None
        except TransformException as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _run_ready(self, *, expire_before: int | None = None) -> None:
        """Process pending frames in order: each once its pose is there, or, when its TF wait
        (``tf_timeout_s`` of bag time after it was synchronised) ended before ``expire_before``, single-view.
        """
        wait_ns = int(self.o.tf_timeout_s * 1e9)
        while self.pending and not self.done:
            frame, arrived = self.pending[0]
            pose, error = self._pose(frame) if self.has_tf else (None, None)
            if error is not None:
                if expire_before is None or max(arrived, frame.stamp_ns) + wait_ns >= expire_before:
                    return  # TF for this stamp may still come
                self.counts["no_pose"] += 1
                self.stats.problem("tf", error, counter="tf_failures")
                self._warn(f"no pose of {frame.frame_id} in {self.o.world_frame} after {self.o.tf_timeout_s:g} s: "
                           f"{error}; frame ran single-view")
            self.pending.popleft()
            self._process(frame.with_pose(pose))

    def _process(self, frame: Frame) -> None:
        if self.last_stamp_ns is not None and frame.stamp_ns < self.last_stamp_ns:
            self.counts["time_jumps"] += 1
            for ev in self.evaluators.values():
                ev.reset_temporal()
        self.last_stamp_ns = frame.stamp_ns
        results = {}
        for mode, pipeline in self.pipelines.items():
            try:
                results[mode] = pipeline.process(frame if mode == "multi_view" else frame.with_pose(None))
            except ValueError as exc:
                self._drop("bad_input", f"frame at {frame.stamp:.6f} s dropped: {exc}")
                return
        products = results["multi_view"]
        for kind, message in products.warnings:
            self.stats.problem(kind, message)
            self._warn(f"{kind}: {message}")
        for name, msgtype, msg in product_messages(self.types, products):
            self.writer.write(topics.output_topic(name, self.o.node_name), msgtype, frame.stamp_ns, msg, QOS_OUTPUT)
        self.stats.frame_done(products.timings, single_view=products.single_view, pair_reason=products.pair_reason)
        self._diagnostics(final=False)
        self.to_evaluate.append({"index": self.processed, "frame": frame, "results": results})
        self.processed += 1
        self.progress.update(1)

    def _diagnostics(self, *, final: bool) -> None:
        period = int(self.o.diagnostics_period_s * 1e9)
        if not final and self.last_diag_ns is not None and self.now_ns - self.last_diag_ns < period:
            return
        self.last_diag_ns = self.now_ns
        header = conversions.make_header(self.types, self.now_ns, "")
        info = {"device": self.o.device, "model": self.model_description,
                "precision": self.pipelines["multi_view"].precision,
                "input_size": "{}x{}".format(*self.config.input_size), "source": f"replay of {self.bag.name}"}
        msg = diagnostics.make_diagnostic_array(self.types, header, self.stats.snapshot(),
                                                name=f"{self.o.node_name}: pipeline", hardware_id=self.o.device, info=info)
        self.writer.write(topics.DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", self.now_ns, msg, QOS_DIAGNOSTICS)

    # ------------------------------------------------------------------------------------------ evaluation

    def _evaluate_ready(self, *, final: bool) -> None:
        """Evaluate processed frames once their ground truth can no longer arrive (1 s of bag time later)."""
        while self.to_evaluate:
            item = self.to_evaluate[0]
            stamp = item["frame"].stamp_ns
            have_all = ((self.o.depth_gt_topic not in self.available or self._gt(self.gt_depth, stamp) is not None)
                        and (self.o.semantic_gt_topic not in self.available
                             or self._gt(self.gt_semantic, stamp) is not None))
            if not (final or have_all or self.now_ns - stamp > 1_000_000_000):
                return
            self.to_evaluate.popleft()
            self._evaluate(item)

    def _gt(self, store: OrderedDict, stamp_ns: int) -> np.ndarray | None:
        """The ground truth whose stamp is nearest ``stamp_ns``, within the sync slop (None: there is none)."""
        if stamp_ns in store:
            return store[stamp_ns]
        best = min(store, key=lambda s: abs(s - stamp_ns), default=None)
        if best is None or abs(best - stamp_ns) > int(self.o.sync_slop_s * 1e9):
            return None
        return store[best]

    def _evaluate(self, item: dict[str, Any]) -> None:
        frame: Frame = item["frame"]
        gt: GroundTruth | None = gt_from_messages(frame.K, frame.size, self._gt(self.gt_depth, frame.stamp_ns),
                                                  self._gt(self.gt_semantic, frame.stamp_ns))
        record: dict[str, Any] = {"index": item["index"], "stamp_ns": frame.stamp_ns, "has_pose": frame.pose is not None}
        for mode, products in item["results"].items():
            values = self.evaluators[mode].add(products, frame.pose, gt)
            values["latency_ms"] = {k: v * 1e3 for k, v in products.timings.items()}
            if mode == "multi_view":
                values["single_view_fallback"] = products.single_view
                values["pair_reason"] = products.pair_reason
                values["source_stamp_ns"] = products.source_stamp_ns
            record[mode] = values
        self.records.append(record)
        if self.montage.wants(item["index"]):
            self.montage.add(frame.rgb, item["results"]["multi_view"], gt)

    def finish(self) -> None:
        self._run_ready(expire_before=2**63)
        for _ in self.pending:  # left over after --limit
            self._drop("limit")
        self.pending.clear()
        self._evaluate_ready(final=True)

    def close(self, error: str | None) -> dict[str, Any]:
        """Close the output bag and write the report; returns the summary (also in metrics.json)."""
        self.progress.close()
        try:
            if self.processed:
                self._diagnostics(final=True)
        finally:
            self.writer.close()
        self._evaluate_ready(final=True)
        unsynced = self.images - self.stats.counts.get("received", 0)
        if unsynced > 0 and not self.done:
            self.dropped["no_camera_info_match"] = unsynced
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
            "has_tf": self.has_tf,
            "ground_truth": {"depth": o.depth_gt_topic in self.available, "semantic": o.semantic_gt_topic in self.available},
            "counts": {"images": self.images, "processed": self.processed,
                       "dropped": sum(self.dropped.values()), **self.counts},
            "dropped_reasons": dict(self.dropped),
            "output_counts": dict(self.writer.counts),
            "warnings": self.warnings,
            "error": error,
        }
        for mode in MODES:
            if mode in self.evaluators:
                summary[mode] = self.evaluators[mode].summary()
        summary["paths"] = {k: str(v) for k, v in write_report(self.out_dir, summary, self.records, self.montage.image()).items()}
        summary["paths"]["output_bag"] = str(self.out_dir / OUTPUT_BAG)
        return summary


def replay_bag(bag: str | Path, out_dir: str | Path, model: Any, options: ReplayOptions | None = None, *,
               model_description: str = "") -> dict[str, Any]:
    """Run the perception runtime over ``bag`` and write the output bag, metrics and pictures into ``out_dir``.

    Args:
        bag: rosbag2 directory, or a single ``.mcap`` / ``.db3`` file.
        out_dir: created if missing; replay's own files in it are replaced.
        model: a CvM-MTL network (or anything with its ``config`` / ``encode`` / ``predict`` API).
        options: topics, frames and runtime settings.
        model_description: how the model is named in the report.

    Returns:
        The summary written to ``metrics.json`` (without the per-frame values), with ``paths`` of the files.

    Raises:
        FileNotFoundError: no such bag.
        BagError: the bag cannot be opened, lacks the image or camera_info topic, or breaks off part-way (then
            everything up to that point has been written first).
    """
    bag, out_dir = Path(bag), Path(out_dir)
    options = options or ReplayOptions()
    available = bag_topics(bag)
    for topic, what in ((options.image_topic, "image"), (options.camera_info_topic, "camera_info")):
        if topic not in available:
            raise BagError(f"{bag}: no {what} topic {topic!r}; the bag has {', '.join(sorted(available)) or 'no topics'}")
    wanted = [t for t in (options.image_topic, options.camera_info_topic, options.tf_topic, options.tf_static_topic,
                          options.depth_gt_topic, options.semantic_gt_topic) if t in available]
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = read_bag(bag, wanted)
    try:
        state = _Replay(bag, out_dir, model, options, available, model_description or type(model).__name__)
    except BaseException:
        messages.close()
        raise
    error = None
    try:
        for topic, t_ns, msg in messages:
            state.feed(topic, t_ns, msg)
            if state.done:
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
    return summary


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ReplayOptions()
    parser.add_argument("bag", type=Path, metavar="BAG", help="rosbag2 directory, or a .mcap / .db3 file")
    parser.add_argument("--model", default="", metavar="CKPT",
                        help="checkpoint (.safetensors); default: the shipped models/default.safetensors; "
                             "'preset:NAME' = untrained network (smoke tests only)")
    parser.add_argument("--out", type=Path, default=Path("replay_out"), metavar="DIR", help="output folder; default replay_out")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="process at most N frames")
    parser.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--compare-single-view", action="store_true",
                        help="also run every frame in single-view mode and report both side by side")
    parser.add_argument("--num-threads", type=int, default=0, metavar="N", help="torch CPU threads (0: torch default)")
    g = parser.add_argument_group("topics and frames")
    for name, help_text in (("image_topic", "colour image"), ("camera_info_topic", "camera info"),
                            ("tf_topic", "TF"), ("tf_static_topic", "static TF"),
                            ("depth_gt_topic", "ground-truth depth (32FC1 m), used when present"),
                            ("semantic_gt_topic", "ground-truth labels (mono8), used when present")):
        g.add_argument("--" + name.replace("_", "-"), default=getattr(d, name), metavar="TOPIC",
                       help=f"{help_text}; default {getattr(d, name)}")
    g.add_argument("--world-frame", default=d.world_frame, help=f"fixed frame of the poses; default {d.world_frame}")
    g.add_argument("--node-name", default=d.node_name, help=f"output topics are /NODE_NAME/...; default {d.node_name}")
    r = parser.add_argument_group("runtime (as the node's parameters)")
    r.add_argument("--sync-slop", type=float, default=d.sync_slop_s, metavar="S",
                   help=f"image / camera_info stamp tolerance; default {d.sync_slop_s}")
    r.add_argument("--tf-timeout", type=float, default=d.tf_timeout_s, metavar="S",
                   help=f"bag time a frame waits for its pose, then single-view; default {d.tf_timeout_s}")
    r.add_argument("--output-resolution", choices=OUTPUT_RESOLUTIONS, default=d.output_resolution)
    r.add_argument("--point-stride", type=int, default=d.point_stride, metavar="N")
    r.add_argument("--cloud-frame", choices=CLOUD_FRAMES, default=d.cloud_frame)
    r.add_argument("--montage-frames", type=int, default=d.montage_frames, metavar="N", help="rows in montage.png")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace, device: str) -> ReplayOptions:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    return ReplayOptions(
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic, tf_topic=args.tf_topic,
        tf_static_topic=args.tf_static_topic, depth_gt_topic=args.depth_gt_topic, semantic_gt_topic=args.semantic_gt_topic,
        world_frame=args.world_frame, node_name=args.node_name, device=device, limit=args.limit,
        compare_single_view=args.compare_single_view, sync_slop_s=args.sync_slop, tf_timeout_s=args.tf_timeout,
        output_resolution=args.output_resolution, point_stride=args.point_stride, cloud_frame=args.cloud_frame,
        montage_frames=args.montage_frames, progress=not args.no_progress,
    )


def print_summary(summary: dict[str, Any]) -> None:
    """The console view of a replay: counts, warnings, the headline metrics table and where the files are."""
    c = summary["counts"]
    print(f"replayed {summary['bag']}: {c['processed']} frames processed, {c['dropped']} dropped "
          f"({c['images']} images read)")
    if not summary["has_tf"]:
        print("note: the bag has no TF; every frame ran single-view and temporal consistency was not measured")
    for line in summary["warnings"][:5]:
        print(f"warning: {line}")
    print()
    print("\n".join(metrics_table(summary)))
    print()
    paths = summary["paths"]
    for key, label in (("report", "report"), ("montage", "montage"), ("depth_error_plot", "depth error plot"),
                       ("latency_plot", "latency plot"), ("metrics", "metrics"), ("output_bag", "output bag")):
        if key in paths:
            print(f"{label + ':':18s}{paths[key]}")


def run(args: argparse.Namespace) -> int:
    import torch

    from mtl3d_perception.runtime.loading import load_model, resolve_device

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    options = options_from_args(args, device)
    bag_topics(args.bag)  # a missing or unreadable bag fails before the model is loaded
    model, description = load_model(args.model, device=device)
    summary = replay_bag(args.bag, args.out, model, options, model_description=description)
    print_summary(summary)
    return 0
