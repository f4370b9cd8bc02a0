"""Scoring `mtl3d replay`'s processed frames: ground-truth matching, per-mode meters, the montage rows.

Ground-truth messages are decoded as they are read and kept by stamp (the newest 200 of each kind). A
processed frame waits until its ground truth is there, or can no longer arrive (1 s of bag time later, or
the end of the bag), and is then scored by each mode's :class:`ModeEvaluator` and offered to the montage
(:class:`MontageCollector`). Measured, with the meters of :mod:`mtl3d_perception.evaluation.metrics`:

- against ground truth when the bag has it, at the ground truth's resolution (predictions are resized with
  nearest-neighbour sampling): depth vs the GT depth topic, mIoU vs the GT semantic topic, normals vs normals
  computed from the smoothed GT depth (``geometry.reference_normals``); the real-frame depth report of
  ``RealDepthMeter`` (median-scaled abs rel, median scale ratio) and, for models with a depth confidence, its
  sparsification curve over the two-view frames (abs rel of the x % most-confident pixels, with the confidence
  threshold that keeps them: ``depth/abs_rel_conf_top<x>``, ``depth/conf_threshold_top<x>``; single-view frames
  are left out, their confidence is ~0 by construction);
- always, for posed frames: temporal consistency (frame t's predicted depth moved into the previous posed frame
  with the two poses, against that frame's predicted depth; ``CrossViewMeter``, reported as ``temporal/*``);
- latency per pipeline stage, single-view fallbacks and pairing reasons.

Per-frame meters are pooled with the meters' ``merge``. Writing the files is :mod:`mtl3d_perception.replay.report`.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from mtl3d_perception.classes import NYU13_PALETTE, boundaries_from_semantic, labels_outside_ignored
from mtl3d_perception.evaluation.metrics import (
    CrossViewMeter,
    DepthMeter,
    NormalsMeter,
    RealDepthMeter,
    SemanticMeter,
    baseline_bin,
    baseline_bin_names,
    sparsification_rows,
)
from mtl3d_perception.evaluation.montage import COLUMNS, columns_for, montage_row, with_titles
from mtl3d_perception.geometry import is_registered, reference_normals, resize_intrinsics
from mtl3d_perception.msgs import conversions
from mtl3d_perception.runtime.frames import Frame, bare_frame_id
from mtl3d_perception.runtime.products import STAGES, Products
from mtl3d_perception.runtime.stats import is_fallback

GT_KEEP = 200  # ground-truth images kept per kind, at most ...
# ... and within this many bytes per kind, but never fewer than GT_KEEP_MIN: 200 depth images of a 1280x720 camera
# are 740 MB; 256 MiB keeps 69 of them, 2.3 s of a 30 Hz camera, beyond the 1 s a frame waits for its ground truth
GT_BUDGET_BYTES = 256 << 20
GT_KEEP_MIN = 30
GT_WAIT_NS = 1_000_000_000  # bag time a processed frame waits for ground truth


@dataclass
class GroundTruth:
    """Ground truth of one frame at its own resolution; ``K`` belongs to that resolution."""

    K: np.ndarray
    depth: np.ndarray | None = None  # [H,W] float32 metres, NaN invalid
    semantic: np.ndarray | None = None  # [H,W] uint8, 255 ignore
    _normals: np.ndarray | None = None

    @property
    def hw(self) -> tuple[int, int]:
        ref = self.depth if self.depth is not None else self.semantic
        return ref.shape[:2]

    @property
    def normals(self) -> np.ndarray | None:
        """Normals from the GT depth (computed once, shared by both modes)."""
        if self._normals is None and self.depth is not None:
            self._normals = reference_normals(self.depth, self.K)
        return self._normals

    def outside_removed(self, inside: np.ndarray) -> GroundTruth:
        """This ground truth with the pixels outside ``inside`` (``[H,W]`` bool) invalid: depth and normals NaN,
        semantics ignored (255). The normals are this frame's own (from the whole GT depth), masked."""
        depth, semantic = labels_outside_ignored(inside, self.depth, self.semantic)
        normals = self.normals
        return GroundTruth(self.K, depth, semantic, None if normals is None else
                           np.where(inside[..., None], normals, np.float32(np.nan)))


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (keeps NaN, class ids and depth edges as they are)."""
    if a.shape[:2] == tuple(hw):
        return a
    return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


class ModeEvaluator:
    """Pooled and per-frame metrics of one pipeline mode (multi-view, or single-view for comparison)."""

    def __init__(self, num_classes: int, depth_max: float) -> None:
        self.depth_max = depth_max
        self.meters = {"depth": DepthMeter(), "semantic": SemanticMeter(num_classes), "normals": NormalsMeter(),
                       "temporal": CrossViewMeter(), "depth_real": RealDepthMeter("depth")}
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.frames = 0
        self.single_view = 0
        self.pair_reasons: Counter[str] = Counter()
        self.baseline_bins: Counter[str] = Counter()  # frames per baseline bin, with or without ground truth
        self.baselines: list[float] = []  # metres, the two-view frames'
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # depth, K, pose

    def add(self, products: Products, T_world_cam: np.ndarray | None, gt: GroundTruth | None) -> dict[str, float]:
        """Account one frame's products; returns the frame's own metrics (``depth/abs_rel``, ``temporal/abs_rel``, ...)."""
        self.frames += 1
        self.single_view += int(products.single_view)
        self.pair_reasons[products.pair_reason] += 1
        self.baseline_bins[baseline_bin(products.baseline_m, not products.single_view)] += 1
        if not products.single_view:
            self.baselines.append(products.baseline_m)
        for stage, seconds in products.timings.items():
            self.latency[stage].append(seconds * 1e3)
        frame: dict[str, float] = {}
        if gt is not None and products.depth is not None:
            frame.update(self._against_gt(products, gt))
        if T_world_cam is not None and products.depth is not None:
            frame.update(self._temporal(products, T_world_cam))
        return frame

    def _against_gt(self, products: Products, gt: GroundTruth) -> dict[str, float]:
        hw = gt.hw
        if products.image_mask is not None:  # pixels without image data (a rectified border) are not scored
            gt = gt.outside_removed(_resize(products.image_mask.astype(np.uint8), hw).astype(bool))
        # NaN predictions (outside the depth head's range) count as the far end of the range, not as missing
        pred_depth = _resize(np.nan_to_num(products.depth, nan=self.depth_max), hw)
        out: dict[str, float] = {}
        if gt.depth is not None:
            pred_t, gt_t = torch.from_numpy(pred_depth)[None, None], torch.from_numpy(gt.depth)[None, None]
            one = DepthMeter()
            one.update(pred_t, gt_t)
            self.meters["depth"].merge(one)  # pooled = the per-frame meters merged (no second pass)
            out.update(one.compute())
            confidence = None  # the meter's curve covers the two-view frames (single-view ones: ~0 everywhere)
            if products.depth_confidence is not None:
                confidence = torch.from_numpy(_resize(products.depth_confidence, hw))[None, None]
            self.meters["depth_real"].update(pred_t, gt_t, baseline_m=torch.tensor([products.baseline_m]),
                                             confidence=confidence, two_view=torch.tensor([not products.single_view]))
            if products.normals is not None:
                pred_n = _resize(products.normals, hw)
                gt_n = gt.normals.copy()
                gt_n[~np.isfinite(pred_n).all(-1)] = np.nan  # both must exist to compare
                self.meters["normals"].update(torch.from_numpy(pred_n).permute(2, 0, 1)[None],
                                              torch.from_numpy(gt_n).permute(2, 0, 1)[None])
        if gt.semantic is not None and products.semantic is not None:
            pred_l = torch.from_numpy(_resize(products.semantic, hw))[None]
            gt_l = torch.from_numpy(gt.semantic)[None]
            one = SemanticMeter(self.meters["semantic"].num_classes)
            one.update(pred_l, gt_l)
            self.meters["semantic"].merge(one)
            out.update(one.compute())
        return out

    def _temporal(self, products: Products, T_world_cam: np.ndarray) -> dict[str, float]:
        current = (products.depth, np.asarray(products.K, np.float64), np.asarray(T_world_cam, np.float64))
        previous, self._previous = self._previous, current
        if previous is None:
            return {}
        args = [torch.from_numpy(np.ascontiguousarray(a))[None] for a in (current[0], previous[0], current[1],
                                                                          previous[1], current[2], previous[2])]
        one = CrossViewMeter()
        one.update(*args)
        self.meters["temporal"].merge(one)
        return {k.replace("cross_view/", "temporal/"): v for k, v in one.compute().items()}

    def reset_temporal(self) -> None:
        """Forget the previous frame (time jumped back: the next frame has nothing earlier to agree with)."""
        self._previous = None

    def summary(self) -> dict[str, Any]:
        metrics: dict[str, float] = {}
        for name, meter in self.meters.items():
            values = meter.compute()
            if name == "temporal":
                values = {k.replace("cross_view/", "temporal/"): v for k, v in values.items()}
            metrics.update(values)
        latency = {
            stage: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "mean": float(np.mean(v))}
            for stage in STAGES if (v := self.latency.get(stage))
        }
        return {
            "metrics": metrics,
            "sparsification": sparsification_rows(metrics),
            "latency_ms": latency,
            "frames": self.frames,
            "single_view_frames": self.single_view,
            "single_view_rate": self.single_view / self.frames if self.frames else 0.0,
            "pair_reasons": dict(self.pair_reasons),
            # the parallax of the pairs, ground truth or not (a slow camera's short pairs show here)
            "baselines": {"median_m": float(np.median(self.baselines)) if self.baselines else None,
                          "frames": {b: self.baseline_bins[b] for b in baseline_bin_names() if self.baseline_bins[b]}},
        }


def gt_from_messages(K_image: np.ndarray, image_wh: tuple[int, int], depth: np.ndarray | None,
                     semantic: np.ndarray | None) -> GroundTruth | None:
    """GroundTruth for one frame; K is rescaled when the GT images are not at the colour image's size."""
    ref = depth if depth is not None else semantic
    if ref is None:
        return None
    H, W = ref.shape[:2]
    K = np.asarray(K_image, np.float64)
    if (W, H) != tuple(image_wh):
        K = resize_intrinsics(K, tuple(image_wh), (W, H))
    if depth is not None and semantic is not None and semantic.shape[:2] != (H, W):
        semantic = _resize(semantic, (H, W))
    return GroundTruth(K=K, depth=depth, semantic=semantic)


class MontageCollector:
    """Keeps a montage row (``evaluation.montage.montage_row``) for chosen frame indices, at the products' size."""

    def __init__(self, indices: list[int], depth_range: tuple[float, float], palette=NYU13_PALETTE,
                 columns: tuple[str, ...] = COLUMNS) -> None:
        self.indices = set(indices)
        self.depth_range = depth_range
        self.palette = palette
        self.columns = columns  # evaluation.montage.columns_for the bag's ground truth
        self.rows: list[np.ndarray] = []

    def wants(self, index: int) -> bool:
        return index in self.indices

    def add(self, rgb: np.ndarray, products: Products, gt: GroundTruth | None) -> None:
        W, H = products.size
        hw = (H, W)
        boundary = None if products.boundary is None else products.boundary.astype(np.float32) / 255.0
        self.rows.append(montage_row(
            cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA), depth_range=self.depth_range, palette=self.palette,
            semantic=products.semantic, depth=products.depth, normals=products.normals, boundary=boundary,
            semantic_gt=None if gt is None or gt.semantic is None else _resize(gt.semantic, hw),
            boundary_gt=None if gt is None or gt.semantic is None else boundaries_from_semantic(_resize(gt.semantic, hw)),
            depth_gt=None if gt is None or gt.depth is None else _resize(gt.depth, hw),
            normals_gt=None if gt is None or gt.normals is None else _resize(gt.normals, hw), columns=self.columns,
        ))

    def image(self) -> np.ndarray | None:
        """The montage with a title row naming the columns, or None when no row was kept."""
        return with_titles(self.rows, self.columns)


depth_gt = conversions.depth_image_to_metres  # ground-truth depth: metres, NaN invalid (REP 118)
IMPLAUSIBLE_DEPTH_M = 100.0  # a median ground-truth depth beyond this is another unit (indoor scenes: 1-5 m)
semantic_gt = conversions.label_image_to_ids  # ground-truth class ids from a mono8 image


_DECODERS = {"depth": depth_gt, "semantic": semantic_gt}


class ReplayEvaluation:
    """Ground truth by stamp, processed frames waiting for it, per-mode metrics, per-frame records, the montage.

    Args:
        modes: the pipeline modes run (``multi_view`` and maybe ``single_view``).
        config: the model's config (``classes``, ``depth_max``, ``depth_range``, ``palette``).
        expect_gt: ground-truth kinds (``depth``, ``semantic``) the bag has; a frame waits only for these.
        slop_s: largest stamp difference between a frame and its ground truth.
        montage_picks: frame indices shown in the montage.
        warn: called with a message for unusable ground truth.
        register_depth: ``(depth [h,w] m, its frame_id, its stamp ns, the colour Frame) -> depth`` in the colour camera
            at the frame's size, or None when it cannot be registered (the callee says why); None: depth is taken
            as registered (its K is the colour K, rescaled to its size).
        depth_ready: ``(frame_id, stamp ns, Frame) -> bool``: whether ``register_depth`` has what it needs yet (TF is
            read in bag order, so the depth camera's pose at its stamp may come later); a frame waits for it as for
            its ground truth.
        depth_camera: ``stamp ns -> K`` of the ground-truth depth's own CameraInfo at or before it (None: none yet):
            depth in the image's frame whose K is not the colour K at its size is registered too (``is_registered``).
    """

    def __init__(self, modes: Iterable[str], config: Any, *, expect_gt: Iterable[str], slop_s: float,
                 montage_picks: list[int], warn: Callable[[str], None],
                 register_depth: Callable[[np.ndarray, str, int, Frame], np.ndarray | None] | None = None,
                 depth_ready: Callable[[str, int, Frame], bool] | None = None,
                 depth_camera: Callable[[int], np.ndarray | None] | None = None) -> None:
        self.evaluators = {mode: ModeEvaluator(len(config.classes), config.depth_max) for mode in modes}
        self.expect_gt = set(expect_gt)
        self.montage = MontageCollector(montage_picks, config.depth_range, palette=config.palette,
                                        columns=columns_for({kind: True for kind in self.expect_gt}))
        self.slop_ns = int(slop_s * 1e9)
        self.warn = warn
        self.register_depth = register_depth
        self.depth_ready = depth_ready
        self.depth_camera = depth_camera
        self.gt: dict[str, OrderedDict[int, np.ndarray]] = {kind: OrderedDict() for kind in _DECODERS}
        self.gt_frame_ids: dict[str, OrderedDict[int, str]] = {kind: OrderedDict() for kind in _DECODERS}
        self.waiting: deque[dict[str, Any]] = deque()  # processed frames waiting for their ground truth
        self.scored = {"depth": 0, "semantic": 0}  # frames scored with each ground truth
        self.gt_stamps: dict[str, list[int]] = {"depth": [], "semantic": []}  # every ground-truth message's stamp
        self.records: list[dict[str, Any]] = []
        self._depth_units_checked = False  # the first depth's median, against IMPLAUSIBLE_DEPTH_M

    def add_ground_truth(self, kind: str, msg: Any) -> None:
        """A ``depth`` or ``semantic`` ground-truth image (unusable ones are reported through ``warn``)."""
        store, frame_ids = self.gt[kind], self.gt_frame_ids[kind]
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        self.gt_stamps[kind].append(stamp)
        try:
            store[stamp] = _DECODERS[kind](msg)
            frame_ids[stamp] = bare_frame_id(str(msg.header.frame_id))  # as tf2 and the colour image (a trial: "/cam" unscored)
            if kind == "depth" and not self._depth_units_checked:
                self._depth_units_checked = True
                median = float(np.nanmedian(store[stamp])) if np.isfinite(store[stamp]).any() else 0.0
                if median > IMPLAUSIBLE_DEPTH_M:  # a trial: 32FC1 in millimetres scored abs rel 0.999 without a word
                    self.warn(f"ground-truth depth ({conversions.label_image_encoding(msg)}) has a median of {median:.4g} m: 32FC1 depth is "
                              "metres and 16UC1 millimetres (REP 118); depth stored in millimetres as 32FC1? "
                              "every depth metric is off by that factor")
        except ValueError as exc:
            self.warn(f"ground truth at {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} unusable: {exc}")
        while len(store) > GT_KEEP or (len(store) > GT_KEEP_MIN
                                       and sum(image.nbytes for image in store.values()) > GT_BUDGET_BYTES):
            frame_ids.pop(store.popitem(last=False)[0], None)

    def add_frame(self, index: int, frame: Frame, results: dict[str, Any]) -> None:
        """A processed frame (``results``: mode -> Products), scored once its ground truth is settled."""
        self.waiting.append({"index": index, "frame": frame, "results": results})

    def reset_temporal(self) -> None:
        """Time went back: temporal consistency restarts from the next posed frame."""
        for ev in self.evaluators.values():
            ev.reset_temporal()

    def evaluate_ready(self, now_ns: int, *, final: bool) -> None:
        """Score waiting frames whose ground truth is there or can no longer arrive (all of them when ``final``)."""
        while self.waiting:
            item = self.waiting[0]
            stamp = item["frame"].stamp_ns
            have_all = all(self._gt(kind, stamp) is not None for kind in self.expect_gt) and self._depth_settled(item["frame"])
            if not (final or have_all or now_ns - stamp > GT_WAIT_NS):
                return
            self.waiting.popleft()
            self._evaluate(item)

    def beyond_slop_messages(self, topics: dict[str, str]) -> list[str]:
        """One line per ground-truth kind (``topics``: kind -> its topic) some of whose messages were stamped beyond
        the slop from every processed image yet closer than half the images' period, i.e. offset from their own image:
        how many, how far, and ``--sync-slop`` (a trial: depth 25 ms after its image scored no frame, and the report's
        "see the warnings" had none; an unsynchronised 15 Hz RGB-D driver stamps its two cameras 25-33 ms apart, which
        message_filters' ApproximateTime, depth_image_proc's pairing, pairs). Ground truth on some frames only
        (keyframe labels) or missing for some is no offset: each message is measured from its nearest image, not
        each image from its nearest message (a trial: labels on every 5th frame, 25 ms late, were advised 188 ms)."""
        frames = np.sort(np.array([r["stamp_ns"] for r in self.records], np.int64))
        if len(frames) < 2:
            return []
        half_period = float(np.median(np.diff(frames))) / 2
        out = []
        for kind, stamps in self.gt_stamps.items():
            gt = np.array(stamps, np.int64)
            gt = gt[(gt >= frames[0] - half_period) & (gt <= frames[-1] + half_period)]  # the processed range
            if not len(gt):
                continue
            i = np.clip(np.searchsorted(frames, gt), 1, len(frames) - 1)
            nearest = np.minimum(np.abs(gt - frames[i - 1]), np.abs(gt - frames[i]))
            offset = nearest[nearest > self.slop_ns]
            if not len(offset) or float(np.median(offset)) >= half_period:
                continue  # none late, or images missing for them (dropped frames): not a slop to widen
            median_ms = float(np.median(offset)) * 1e-6
            out.append(f"{len(offset)} of {len(gt)} ground-truth {kind} messages on {topics[kind]} were stamped more "
                       f"than --sync-slop ({self.slop_ns * 1e-9:g} s) from every processed image (a median "
                       f"{median_ms:.1f} ms from the nearest) and scored no frame: if that camera stamps its images apart "
                       f"from the colour camera's, raise --sync-slop above it (e.g. --sync-slop "
                       f"{math.ceil(median_ms * 1.5) / 1000:g})")
        return out

    def summaries(self) -> dict[str, dict[str, Any]]:
        """mode -> pooled metrics."""
        return {mode: ev.summary() for mode, ev in self.evaluators.items()}

    def _gt_stamp(self, kind: str, stamp_ns: int) -> int | None:
        """The stamp of the ground truth nearest ``stamp_ns``, within the slop (None: there is none)."""
        store = self.gt[kind]
        if stamp_ns in store:
            return stamp_ns
        best = min(store, key=lambda s: abs(s - stamp_ns), default=None)
        return None if best is None or abs(best - stamp_ns) > self.slop_ns else best

    def _gt(self, kind: str, stamp_ns: int) -> np.ndarray | None:
        """The ground truth whose stamp is nearest ``stamp_ns``, within the slop (None: there is none)."""
        best = self._gt_stamp(kind, stamp_ns)
        return None if best is None else self.gt[kind][best]

    def _unregistered_depth(self, frame: Frame) -> tuple[int, str] | None:
        """(stamp, frame_id) of the frame's ground-truth depth when it is in another camera and must be registered."""
        stamp = self._gt_stamp("depth", frame.stamp_ns)
        if stamp is None or self.register_depth is None:
            return None
        frame_id = self.gt_frame_ids["depth"].get(stamp, "")
        K_depth = None if self.depth_camera is None else self.depth_camera(stamp)
        h, w = self.gt["depth"][stamp].shape[:2]
        registered = is_registered(frame_id, frame.frame_id, K_depth, (w, h), frame.K, frame.size)
        return None if registered else (stamp, frame_id or frame.frame_id)

    def _depth_settled(self, frame: Frame) -> bool:
        other = self._unregistered_depth(frame)
        return other is None or self.depth_ready is None or self.depth_ready(other[1], other[0], frame)

    def _depth_gt(self, frame: Frame) -> np.ndarray | None:
        """The frame's ground-truth depth, registered to the colour camera (see ``register_depth``)."""
        other = self._unregistered_depth(frame)
        if other is None:
            return self._gt("depth", frame.stamp_ns)
        stamp, frame_id = other
        return self.register_depth(self.gt["depth"][stamp], frame_id, stamp, frame)

    def _evaluate(self, item: dict[str, Any]) -> None:
        frame: Frame = item["frame"]
        gt: GroundTruth | None = gt_from_messages(frame.K, frame.size, self._depth_gt(frame),
                                                  self._gt("semantic", frame.stamp_ns))
        record: dict[str, Any] = {"index": item["index"], "stamp_ns": frame.stamp_ns, "has_pose": frame.T_world_cam is not None}
        for kind in self.scored:
            self.scored[kind] += gt is not None and getattr(gt, kind) is not None
        for mode, products in item["results"].items():
            values = self.evaluators[mode].add(products, frame.T_world_cam, gt)
            values["latency_ms"] = {k: v * 1e3 for k, v in products.timings.items()}
            if mode == "multi_view":
                values["single_view_fallback"] = is_fallback(products.single_view, products.pair_reason)
                values["pair_reason"] = products.pair_reason
                values["source_stamp_ns"] = products.source_stamp_ns
                values["baseline_m"] = products.baseline_m
            record[mode] = values
        self.records.append(record)
        if self.montage.wants(item["index"]):
            self.montage.add(frame.rgb, item["results"]["multi_view"], gt)
