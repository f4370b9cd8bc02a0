"""Matching `mtl3d replay`'s processed frames with the bag's ground truth, then scoring them.

Ground-truth messages are decoded as they are read and kept by stamp (the newest 200 of each kind). A
processed frame waits until its ground truth is there, or can no longer arrive (1 s of bag time later, or
the end of the bag), and is then scored by each mode's :class:`~mtl3d_perception.replay.report.ModeEvaluator`
and offered to the montage. The metrics themselves live in :mod:`mtl3d_perception.replay.report`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from mtl3d_perception.msgs import conversions
from mtl3d_perception.replay.report import GroundTruth, ModeEvaluator, MontageCollector, gt_from_messages
from mtl3d_perception.runtime.frames import Frame

GT_KEEP = 200  # ground-truth images kept per kind
GT_WAIT_NS = 1_000_000_000  # bag time a processed frame waits for ground truth


depth_gt = conversions.depth_image_to_metres  # ground-truth depth: metres, NaN invalid (REP 118)
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
    """

    def __init__(self, modes: Iterable[str], config: Any, *, expect_gt: Iterable[str], slop_s: float,
                 montage_picks: list[int], warn: Callable[[str], None]) -> None:
        self.evaluators = {mode: ModeEvaluator(len(config.classes), config.depth_max) for mode in modes}
        self.montage = MontageCollector(montage_picks, config.depth_range, palette=config.palette)
        self.expect_gt = set(expect_gt)
        self.slop_ns = int(slop_s * 1e9)
        self.warn = warn
        self.gt: dict[str, OrderedDict[int, np.ndarray]] = {kind: OrderedDict() for kind in _DECODERS}
        self.waiting: deque[dict[str, Any]] = deque()  # processed frames waiting for their ground truth
        self.records: list[dict[str, Any]] = []

    def add_ground_truth(self, kind: str, msg: Any) -> None:
        """A ``depth`` or ``semantic`` ground-truth image (unusable ones are reported through ``warn``)."""
        store = self.gt[kind]
        try:
            store[conversions.stamp_to_ns(msg.header.stamp)] = _DECODERS[kind](msg)
        except ValueError as exc:
            self.warn(f"ground truth at {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} unusable: {exc}")
        while len(store) > GT_KEEP:
            store.popitem(last=False)

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
            have_all = all(self._gt(kind, stamp) is not None for kind in self.expect_gt)
            if not (final or have_all or now_ns - stamp > GT_WAIT_NS):
                return
            self.waiting.popleft()
            self._evaluate(item)

    def summaries(self) -> dict[str, dict[str, Any]]:
        """mode -> pooled metrics."""
        return {mode: ev.summary() for mode, ev in self.evaluators.items()}

    def _gt(self, kind: str, stamp_ns: int) -> np.ndarray | None:
        """The ground truth whose stamp is nearest ``stamp_ns``, within the slop (None: there is none)."""
        store = self.gt[kind]
        if stamp_ns in store:
            return store[stamp_ns]
        best = min(store, key=lambda s: abs(s - stamp_ns), default=None)
        if best is None or abs(best - stamp_ns) > self.slop_ns:
            return None
        return store[best]

    def _evaluate(self, item: dict[str, Any]) -> None:
        frame: Frame = item["frame"]
        gt: GroundTruth | None = gt_from_messages(frame.K, frame.size, self._gt("depth", frame.stamp_ns),
                                                  self._gt("semantic", frame.stamp_ns))
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
