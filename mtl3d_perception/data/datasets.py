"""Datasets yielding :class:`MultiViewBatch` samples (B=1) from these kinds of source.

- ``synthetic``: procedural scenes (:mod:`.synthetic`) rendered on the fly, with every task labelled.
  Splits draw scene seeds from disjoint ranges (:data:`SYNTHETIC_SEED_BASE`), so train, val and test
  never share a room.
- ``sequence``: a posed RGB-D sequence folder (:mod:`.sequence`): depth labels, normals derived from
  depth, semantic labels (and boundaries from them) when present — the paper's video frames with
  depth-only labels. ``start``/``end`` select a frame range (ints: frame indices; floats: fractions
  of the length), and source views are only chosen inside it, so a held-out range never leaks.
- ``bag``, ``tum``, ``scannet``, ``seven_scenes``: posed frames in a rosbag2, the TUM RGB-D, ScanNet export
  or 7-Scenes layout, read by :mod:`.sources` and used like ``sequence`` (depth where the layout has it,
  normals derived from it, semantic labels from a bag's semantic topic). ``stride`` keeps every n-th frame
  of the range (a 30 Hz recording at ``stride: 3`` gives 10 Hz).
- ``nyuv2``: the NYUv2 labelled ``.mat`` (h5py); single-view, the image duplicated as its own source
  (paper protocol), labels mapped to the 13 classes with the shipped mapping (``nyu_class_mapping.json``).

Source views are picked by frame gap, by camera baseline, or by the runtime's own rule
(``neighbour: pairing``, :func:`mtl3d_perception.source_selection.select_source`) (:class:`SourceConfig`). Training samples
are addressed by ``(index, seed)`` keys so that neighbour choice and augmentation are reproducible;
an int key gives the deterministic evaluation sample. Partial labels (``label_regime``) are drawn
once per sample index, so a sample keeps the same labelled tasks in every epoch (seed 002's setting).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mtl3d_perception import geometry, topics
from mtl3d_perception.classes import IGNORE_INDEX, boundaries_from_semantic
from mtl3d_perception.data.augment import AugmentConfig, augment_views
from mtl3d_perception.data.bag import BagError
from mtl3d_perception.data.batch import TASKS, MultiViewBatch, ViewSample
from mtl3d_perception.data.sequence import DEFAULT_RATE_HZ, SequenceError
from mtl3d_perception.runtime.params import frame_id_problem, topic_name_problem
from mtl3d_perception.runtime.sync import MAX_SLOP_S, SYNC_SLOP_S
from mtl3d_perception.source_selection import PairingConfig, keyframe_history, select_source

SYNTHETIC_SEED_BASE: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
LABEL_REGIMES: tuple[str, ...] = ("full", "random", "one")
# the ground truth each task is supervised from in posed-frame data: normals are derived from depth (a sequence
# folder may also hold them), boundaries from the semantic labels
TASK_LABELS: dict[str, str] = {"depth": "depth", "normals": "depth", "semantic": "semantic", "boundary": "semantic"}
SOURCE_KINDS: tuple[str, ...] = ("synthetic", "sequence", "bag", "tum", "scannet", "seven_scenes", "nyuv2")
FRAME_KINDS: tuple[str, ...] = ("sequence", "bag", "tum", "scannet", "seven_scenes")  # posed-frame readers
NYU_MAPPING_FILE = Path(__file__).with_name("nyu_class_mapping.json")
# SourceConfig fields that one kind reads: set on a source of another kind (a sequence with intrinsics), they would
# change nothing, so they are refused
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "camera": ("tum",), "intrinsics": ("tum",), "nyu_labels": ("nyuv2",),
    **{name: ("synthetic",) for name in ("split", "num_scenes", "frames_per_scene")},
    # a range of frames: the recordings' (NYUv2's images have an order but no stride: its reader takes start/end)
    "start": (*FRAME_KINDS, "nyuv2"), "end": (*FRAME_KINDS, "nyuv2"), "stride": FRAME_KINDS,
    **{name: ("bag",) for name in ("image_topic", "image_kind", "camera_info_topic", "depth_topic",
                                   "depth_camera_info_topic", "semantic_topic", "world_frame", "sync_slop")}}

# The Kinect colour camera of NYUv2 (toolbox camera_params.m) at 640x480; the toolbox's principal point
# is 1-based (MATLAB), so 1 is subtracted to put pixel (0, 0)'s centre at 0.
NYU_K = np.array([[518.8579, 0.0, 325.5824 - 1.0], [0.0, 519.4696, 253.7362 - 1.0], [0.0, 0.0, 1.0]])


log = logging.getLogger(__name__)


@dataclass
class SourceConfig:
    """One data source; see the module docstring. A field only one kind reads (:data:`KIND_FIELDS`: a TUM camera, a
    bag's topics) set on a source of another kind is refused (ValueError naming the field and its kind)."""

    kind: str = "synthetic"
    path: str = ""  # sequence / TUM / ScanNet / 7-Scenes folder, rosbag2, or NYUv2 .mat
    split: str = "train"  # synthetic: train | val | test
    num_scenes: int = 8  # synthetic
    frames_per_scene: int = 24  # synthetic
    start: int | float = 0  # sequence / nyuv2 range: int index or float fraction
    end: int | float = 1.0
    stride: int = 1  # posed-frame kinds: every stride-th frame of [start, end)
    tasks: tuple[str, ...] = TASKS  # tasks whose labels are used (e.g. ["depth"] for video frames)
    neighbour: str = "gap"  # gap | baseline | pairing (the runtime's rule, source_selection.select_source)
    max_gap: int = 4  # training: source gap (pairing: history step) uniform in [1, max_gap]
    eval_gap: int = 2  # evaluation: fixed gap (pairing: history step)
    min_baseline: float = 0.05  # metres (neighbour: baseline)
    max_baseline: float = 0.5
    max_rotation_deg: float = 180.0  # neighbour: baseline; sources turned further from the reference are skipped
    repeat: int = 1  # list the source this many times (a sampling weight)
    nyu_labels: str = "894"  # the .mat's label set: 894 (official) or 40
    camera: str = ""  # tum: fr1 | fr2 | fr3 | default ("" reads freiburgN from the folder name)
    intrinsics: tuple[float, float, float, float] | None = None  # tum: (fx, fy, cx, cy) for the images' size
    image_topic: str = topics.IMAGE_TOPIC  # bag topics and fixed frame
    image_kind: str = "auto"  # bag: image_raw (rectify with camera_info) | image_rect | auto (from the topic name)
    camera_info_topic: str = ""  # "" = camera_info beside image_topic (image_transport's rule)
    depth_topic: str = topics.GT_DEPTH_TOPIC  # "" or a topic not in the bag: no depth labels
    depth_camera_info_topic: str = ""  # unregistered depth's CameraInfo; "" = camera_info beside depth_topic
    semantic_topic: str = topics.GT_SEMANTIC_TOPIC
    world_frame: str = topics.WORLD_FRAME
    # bag: depth and label images pair with the image nearest in time within this (seconds; the node's default
    # sync_slop_s): an unsynchronised RGB-D driver stamps its two cameras 25-33 ms apart (a trial: refused at 20 ms)
    sync_slop: float = SYNC_SLOP_S

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            msg = f"unknown data source kind {self.kind!r}; expected one of {', '.join(SOURCE_KINDS)}"
            raise ValueError(msg)
        if self.kind == "synthetic" and self.split not in SYNTHETIC_SEED_BASE:
            msg = f"unknown synthetic split {self.split!r}; expected one of {', '.join(SYNTHETIC_SEED_BASE)}"
            raise ValueError(msg)
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            msg = f"unknown task(s) {bad} in source tasks; expected a subset of {', '.join(TASKS)}"
            raise ValueError(msg)
        if self.neighbour not in ("gap", "baseline", "pairing"):
            msg = f"neighbour must be 'gap', 'baseline' or 'pairing', got {self.neighbour!r}"
            raise ValueError(msg)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, kinds in KIND_FIELDS.items():
            if self.kind not in kinds and getattr(self, name) != defaults[name]:
                msg = (f"source {name} {getattr(self, name)!r} applies to {' and '.join(kinds)} sources only, not to "
                       f"a {self.kind} source; leave it out")
                raise ValueError(msg)
        if not (0 < self.sync_slop <= MAX_SLOP_S):
            msg = f"source sync_slop {self.sync_slop!r}: expected seconds in (0, {MAX_SLOP_S:g}]"
            raise ValueError(msg)
        if self.kind != "synthetic" and not self.path:
            msg = f"a {self.kind} source needs a path"
            raise ValueError(msg)
        counts = {"num_scenes": self.num_scenes, "frames_per_scene": self.frames_per_scene, "max_gap": self.max_gap,
                  "eval_gap": self.eval_gap, "repeat": self.repeat}
        bad_counts = {k: v for k, v in counts.items() if v < 1}
        if bad_counts:
            msg = f"source {', '.join(f'{k} {v}' for k, v in bad_counts.items())}: expected >= 1"
            raise ValueError(msg)
        if self.stride < 1:
            msg = f"stride must be >= 1, got {self.stride}"
            raise ValueError(msg)
        if not (0 <= self.min_baseline < self.max_baseline and math.isfinite(self.max_baseline)):
            msg = (f"source min_baseline {self.min_baseline}, max_baseline {self.max_baseline}: expected "
                   "0 <= min_baseline < max_baseline (metres)")
            raise ValueError(msg)
        if not 0 < self.max_rotation_deg <= 180:
            msg = f"source max_rotation_deg {self.max_rotation_deg}: expected a number in (0, 180]"
            raise ValueError(msg)
        if self.kind == "bag" and (reason := frame_id_problem("world_frame", self.world_frame)):  # tf2's rule
            raise ValueError(f"source {reason}")
        for name, topic in (("image_topic", self.image_topic), ("camera_info_topic", self.camera_info_topic),
                            ("depth_topic", self.depth_topic), ("depth_camera_info_topic", self.depth_camera_info_topic),
                            ("semantic_topic", self.semantic_topic)):
            if self.kind == "bag" and topic and (reason := topic_name_problem(name, topic)):  # rcl's rule
                raise ValueError(f"source {reason}")
        for name, bound in (("start", self.start), ("end", self.end)):
            if isinstance(bound, float) and not 0.0 <= bound <= 1.0:
                msg = (f"frame range {name} {bound}: a fraction (a number with a dot) must lie in [0, 1]; "
                       "frame indices are whole numbers")
                raise ValueError(msg)


def parse_data_spec(spec: str) -> SourceConfig:
    """``synthetic:SPLIT[:NUM_SCENES]``, or ``KIND:/path[:start:end]`` for the other kinds (``sequence``,
    ``bag``, ``tum``, ``scannet``, ``seven_scenes``, ``nyuv2``).

    ``start``/``end`` with a dot are fractions (``0.8:1.0``), otherwise frame indices.
    """
    kind, _, rest = spec.partition(":")
    if kind not in SOURCE_KINDS or not rest:
        msg = (f"cannot parse data spec {spec!r}; expected synthetic:SPLIT[:N] or KIND:/path[:start:end] with KIND "
               f"one of {', '.join(k for k in SOURCE_KINDS if k != 'synthetic')}")
        raise ValueError(msg)
    if kind == "synthetic":
        split, _, n = rest.partition(":")
        if n and not n.isdigit():
            msg = f"data spec {spec!r}: the number of scenes {n!r} is not a whole number; expected synthetic:SPLIT[:N]"
            raise ValueError(msg)
        return _spec_source(spec, kind=kind, split=split, **({"num_scenes": int(n)} if n else {}))
    parts = rest.rsplit(":", 2)
    rng: dict[str, Any] = {}
    if len(parts) == 3 and all(_is_number(p) for p in parts[1:]):
        rest = parts[0]
        rng = {k: (float(v) if "." in v else int(v)) for k, v in zip(("start", "end"), parts[1:])}
    elif ":" in rest and not Path(rest).exists():
        msg = (f"data spec {spec!r}: {rest!r} does not exist; a frame range is written {kind}:/path:START:END with two "
               "numbers (fractions with a dot, e.g. :0.8:1.0, or frame indices, e.g. :0:300)")
        raise ValueError(msg)
    return _spec_source(spec, kind=kind, path=rest, **rng)


def _spec_source(spec: str, **fields: Any) -> SourceConfig:
    """``SourceConfig(**fields)``; its ValueError is re-raised naming the data spec it came from."""
    try:
        return SourceConfig(**fields)
    except ValueError as exc:
        raise ValueError(f"data spec {spec!r}: {exc}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _resolve(x: int | float, n: int, where: str = "") -> int:
    """A range bound: a float is a fraction of ``n``, an int an index (negative from the end).

    Raises:
        ValueError: an index outside ``[-n, n]`` (it was clamped silently); the message names ``where`` (the source).
    """
    if isinstance(x, float):
        return int(round(min(max(x, 0.0), 1.0) * n))
    if not -n <= x <= n:
        msg = (f"frame range bound {x} is outside {where or 'the source'}'s {n} frames; expected an index in [-{n}, {n}] "
               "(negative counts from the end) or a fraction with a dot (0.8)")
        raise ValueError(msg)
    return x if x >= 0 else n + x


def frame_range(cfg: SourceConfig, n: int) -> tuple[int, int]:
    """``[lo, hi)``: the frames ``cfg.start``:``cfg.end`` select of a source with ``n`` frames (:func:`_resolve`).

    Raises:
        ValueError: a bound outside the source, or an empty range; the message names the source and, where one bound
            is a fraction and the other an index (``:0.9:1``: 1 is frame 1, not the end), says so.
    """
    lo, hi = _resolve(cfg.start, n, cfg.path), _resolve(cfg.end, n, cfg.path)
    if hi <= lo:
        msg = f"empty frame range [{cfg.start}, {cfg.end}) of {cfg.path} ({n} frames): frames {lo} to {hi}"
        kinds = {type(cfg.start), type(cfg.end)}
        if kinds == {int, float}:
            frac, index = (cfg.start, cfg.end) if isinstance(cfg.start, float) else (cfg.end, cfg.start)
            msg += (f"; {frac} is a fraction (it has a dot) but {index} a frame index (the fraction is "
                    f"{float(index)}): write both bounds the same way")
        raise ValueError(msg)
    return lo, hi


def apply_label_regime(available: dict[str, bool], regime: str, rng: np.random.Generator) -> dict[str, bool]:
    """Simulate partial labels: ``full`` keeps all, ``random`` keeps each task with p=0.5 (at least one),
    ``one`` keeps exactly one of the available tasks.
    """
    if regime not in LABEL_REGIMES:
        msg = f"unknown label regime {regime!r}; expected one of {', '.join(LABEL_REGIMES)}"
        raise ValueError(msg)
    have = [t for t in TASKS if available.get(t)]
    if regime == "full" or not have:
        return {t: t in have for t in TASKS}
    if regime == "one":
        keep = {have[int(rng.integers(len(have)))]}
    else:
        draws = rng.uniform(size=len(have)) < 0.5
        keep = {t for t, d in zip(have, draws) if d} or {have[int(rng.integers(len(have)))]}
    return {t: t in keep for t in TASKS}


def choose_sources(poses: np.ndarray, ref: int, lo: int, hi: int, num: int, cfg: SourceConfig,
                   rng: np.random.Generator | None, stamps: np.ndarray | None = None,
                   nominal_stamps: bool = False) -> list[int]:
    """Indices of ``num`` source frames for frame ``ref`` among frames ``[lo, hi)``.

    Earlier frames are preferred (the robot pairs a frame with an earlier one); a sequence of one
    frame pairs it with itself. ``neighbour: baseline`` draws among frames whose camera centre is
    ``[min_baseline, max_baseline]`` m and whose rotation at most ``max_rotation_deg`` from the reference.
    ``neighbour: pairing`` applies the runtime's rule (:func:`select_source`) to a simulated history, so it
    needs ``stamps`` (seconds per frame; ``nominal_stamps``: made up from a nominal rate, so not a time the age
    limit may judge); it returns ``ref`` itself where the runtime would run single-view.
    ``rng`` None gives the deterministic evaluation choice.
    """
    if cfg.neighbour == "pairing":
        return _pairing_sources(poses, stamps, ref, lo, num, cfg, rng, nominal_stamps)
    out: list[int] = []
    for k in range(num):
        if cfg.neighbour == "gap":
            gap = int(rng.integers(1, max(1, cfg.max_gap) + 1)) if rng is not None else cfg.eval_gap
            gap += k  # further sources step further back
            j = ref - gap if ref - gap >= lo else ref + gap
        else:
            idx = np.arange(lo, hi)
            base = np.linalg.norm(poses[idx, :3, 3] - poses[ref, :3, 3], axis=1)
            turn = np.degrees(geometry.rotation_angle(np.swapaxes(poses[idx, :3, :3], 1, 2) @ poses[ref, :3, :3]))
            ok = idx[(base >= cfg.min_baseline) & (base <= cfg.max_baseline) & (turn <= cfg.max_rotation_deg)
                     & (idx != ref)]
            ok = np.array([j for j in ok if j not in out], int)
            if len(ok) == 0:
                j = ref - 1 - k if ref - 1 - k >= lo else ref + 1 + k
            elif rng is not None:
                j = int(rng.choice(ok))
            else:
                earlier = ok[ok < ref]
                j = int(earlier.max() if len(earlier) else ok.min())
        out.append(int(min(max(j, lo), hi - 1)))
    return out


KEYFRAME_LOOKBACK = 256  # frames before the reference through which the node's keyframe history is simulated


def _pairing_sources(poses: np.ndarray, stamps: np.ndarray | None, ref: int, lo: int, num: int,
                     cfg: SourceConfig, rng: np.random.Generator | None, nominal_stamps: bool = False) -> list[int]:
    """Sources picked by the runtime rule from a simulated frame history (``neighbour: pairing``).

    The history is what the node's would hold after every ``step``-th earlier frame (a node that processes every
    step-th camera frame): the last ``history_size`` keyframes and the newest frame (``keyframe_history``, run over
    the last ``KEYFRAME_LOOKBACK`` of those frames).
    Training draws ``step`` in [1, max_gap], ``min_baseline_m`` in
    [min_baseline, max_baseline] and ``min_rotation_deg`` in [5, 15] (the spread of pairs a robot sees);
    evaluation uses step ``eval_gap``, ``min_baseline`` and the default rotation. The pose-jump limits are the
    runtime's. The age limit is the runtime's in evaluation on recorded stamps (a slow camera's 15 cm may lie more
    than ``max_pair_age_s`` back, and the node would not reach it); it is lifted in training (the drawn ``step``
    stretches time) and on ``nominal_stamps`` (keyframes without timestamps: their spacing is not time).
    """
    if stamps is None:
        msg = "neighbour 'pairing' needs frame stamps; this source has none"
        raise ValueError(msg)
    base = PairingConfig()
    if rng is not None:
        step = int(rng.integers(1, max(1, cfg.max_gap) + 1))
        min_baseline = float(rng.uniform(cfg.min_baseline, max(cfg.min_baseline, cfg.max_baseline)))
        min_rotation = float(rng.uniform(5.0, 15.0))
    else:
        step, min_baseline, min_rotation = max(1, cfg.eval_gap), cfg.min_baseline, base.min_rotation_deg
    # the frames the node processed before ref, oldest first, the last KEYFRAME_LOOKBACK of them (24 us a frame: a
    # 10-minute bag's every frame would cost 0.4 s a sample; 256 frames of a 60 Hz camera span past max_pair_age_s)
    seen = list(range(ref - step, lo - 1, -step))[:KEYFRAME_LOOKBACK][::-1]
    # keyframes by time too where the age limit applies (made-up or stretched stamps are not time)
    timed = rng is None and not nominal_stamps
    history = [seen[i] for i in keyframe_history(poses[seen], base, stamps[seen] if timed else None)]
    ages = [float(stamps[ref] - stamps[j]) for j in history]
    max_age = max([base.max_pair_age_s, *ages]) if rng is not None or nominal_stamps else base.max_pair_age_s
    pairing = PairingConfig(min_baseline_m=min_baseline, min_rotation_deg=min_rotation,
                            max_pair_age_s=max_age, history_size=base.history_size)
    out: list[int] = []
    for _ in range(num):
        choice = select_source(poses[ref], [poses[j] for j in history], ages, pairing)
        if choice.index is None:
            out.append(ref)  # single-view: the runtime duplicates the reference
            continue
        out.append(history.pop(choice.index))
        ages.pop(choice.index)
    return out


def _view_from_labels(rgb, K, T, depth=None, semantic=None, normals=None, *, derive_normals: bool = True
                      ) -> ViewSample:
    """A ViewSample with derived labels: normals from depth when missing (``geometry.reference_normals``: a measured
    depth map is smoothed first), boundaries from semantic."""
    if depth is not None:
        depth = np.where(geometry.valid_depth(depth), depth, np.nan).astype(np.float32)
        if normals is None and derive_normals:
            normals = geometry.reference_normals(depth, K)
    boundary = boundaries_from_semantic(semantic) if semantic is not None else None
    return ViewSample(rgb=rgb, K=np.asarray(K, np.float64), T_world_cam=np.asarray(T, np.float64),
                      depth=depth, normals=normals, semantic=semantic, boundary=boundary)


class SourceDataset(Dataset):
    """Base class: subclasses implement ``__len__`` and ``load(index, rng) -> (views, meta)``."""

    def __init__(self, cfg: SourceConfig, *, image_size: tuple[int, int], num_views: int = 2,
                 augment: AugmentConfig | None = None, label_regime: str = "full", seed: int = 0) -> None:
        self.cfg = cfg
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_views = int(num_views)
        self.augment = augment
        self.label_regime = label_regime
        self.seed = int(seed)
        apply_label_regime({}, label_regime, np.random.default_rng(0))  # validates the name early

    def load(self, index: int, rng: np.random.Generator | None) -> tuple[list[ViewSample], dict[str, Any]]:
        raise NotImplementedError

    @property
    def distinct_views(self) -> int | None:
        """How many different frames a sample's views can come from (a scene's frames, a range's), or None where
        every sample is one image duplicated by design (NYUv2's single frames)."""
        return None

    @property
    def labelled_tasks(self) -> tuple[str, ...]:
        """The source's ``tasks`` whose labels its data holds: all of them here; a posed-frame reader without depth
        or semantic labels (a bag whose depth topic is absent) offers fewer (:class:`FramesDataset`)."""
        return tuple(self.cfg.tasks)

    def label_sources(self, tasks: Iterable[str]) -> str:
        """Where the labels of ``tasks`` were looked for, for messages (here: the source's data)."""
        return f"{', '.join(tasks)}: not in its {self.cfg.kind} data"

    def __getitem__(self, key: int | tuple[int, int]) -> MultiViewBatch:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), None)
        if not 0 <= index < len(self):
            msg = f"index {index} out of range for a source of {len(self)} samples"
            raise IndexError(msg)
        rng = None if draw is None else np.random.default_rng([self.seed, draw, index])
        views, meta = self.load(index, rng)
        views = augment_views(views, self.image_size, self.augment or AugmentConfig(enabled=False), rng,
                              kind=self.cfg.kind)
        available = {t: t in self.labelled_tasks for t in TASKS}
        if draw is not None:  # partial labels are a training regime, drawn once per sample
            available = apply_label_regime(available, self.label_regime,
                                           np.random.default_rng([self.seed, 7919, index]))
        return MultiViewBatch.from_views(views, valid=available, meta={"source": self.cfg.kind, **meta})


class SyntheticDataset(SourceDataset):
    """``num_scenes`` x ``frames_per_scene`` samples; the scene seeds of a split never overlap another's.

    Each scene follows its own camera motion (``SyntheticScene.motion``: robot or handheld). Training
    samples draw a horizontal field of view in ``synthetic.HFOV_RANGE_DEG`` (shared by a sample's views);
    evaluation samples use the scene's own (``SyntheticScene.hfov_deg``), so they are deterministic.
    """

    RENDER_SCALE = 1.25  # render larger than the output so random zoom-crops stay sharp

    def __len__(self) -> int:
        return self.cfg.num_scenes * self.cfg.frames_per_scene

    @property
    def distinct_views(self) -> int:
        return self.cfg.frames_per_scene

    @staticmethod
    @lru_cache(maxsize=16)
    def _scene(seed: int, n: int):
        from mtl3d_perception.data.synthetic import SyntheticScene

        scene = SyntheticScene(seed)
        return scene, scene.camera_path(n, motion=scene.motion)

    def load(self, index, rng):
        from mtl3d_perception.data.synthetic import HFOV_RANGE_DEG, default_intrinsics

        s, f = divmod(index, self.cfg.frames_per_scene)
        seed = SYNTHETIC_SEED_BASE[self.cfg.split] + s
        scene, path = self._scene(seed, self.cfg.frames_per_scene)
        W, H = self.image_size
        if rng is not None and self.augment is not None and self.augment.enabled:
            W, H = int(round(W * self.RENDER_SCALE)), int(round(H * self.RENDER_SCALE))
        K = default_intrinsics(W, H, float(rng.uniform(*HFOV_RANGE_DEG)) if rng is not None else scene.hfov_deg)
        stamps = np.arange(len(path)) / DEFAULT_RATE_HZ  # camera_path's rate
        frames = [f, *choose_sources(path, f, 0, len(path), self.num_views - 1, self.cfg, rng, stamps)]
        views = []
        for j in frames:
            out = scene.render(path[j], K, (W, H))
            views.append(ViewSample(rgb=out["rgb"], K=K.copy(), T_world_cam=path[j], depth=out["depth"],
                                    normals=out["normals"], semantic=out["semantic"],
                                    boundary=out["boundary"].astype(np.float32)))
        return views, {"scene": seed, "frames": frames}


def open_frames(cfg: SourceConfig):
    """The posed-frame reader of a ``sequence``, ``bag``, ``tum``, ``scannet`` or ``seven_scenes`` source
    (an object with the :class:`~mtl3d_perception.data.sources.PosedFrames` interface)."""
    if cfg.kind == "sequence":
        from mtl3d_perception.data.sequence import PosedSequence

        return PosedSequence(cfg.path)
    if cfg.kind == "bag":
        from mtl3d_perception.data.sources.bag import BagFrames

        return BagFrames(cfg.path, image_topic=cfg.image_topic, camera_info_topic=cfg.camera_info_topic,
                         depth_topic=cfg.depth_topic, depth_camera_info_topic=cfg.depth_camera_info_topic,
                         semantic_topic=cfg.semantic_topic, world_frame=cfg.world_frame, image_kind=cfg.image_kind,
                         max_dt=cfg.sync_slop)
    if cfg.kind == "tum":
        from mtl3d_perception.data.sources.tum import TumSequence

        K = None
        if cfg.intrinsics is not None:
            fx, fy, cx, cy = cfg.intrinsics
            K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return TumSequence(cfg.path, camera=cfg.camera, K=K)
    if cfg.kind == "scannet":
        from mtl3d_perception.data.sources.scannet import ScanNetSequence

        return ScanNetSequence(cfg.path)
    if cfg.kind == "seven_scenes":
        from mtl3d_perception.data.sources.seven_scenes import SevenScenesSequence

        return SevenScenesSequence(cfg.path)
    msg = f"{cfg.kind!r} is not a posed-frame source; expected one of {', '.join(FRAME_KINDS)}"
    raise ValueError(msg)


# a frame whose image or message cannot be read: its sample is replaced (FramesDataset.load), up to this many in a row
UNREADABLE_FRAME = (BagError, SequenceError)
MAX_SUBSTITUTES = 8


class FramesDataset(SourceDataset):
    """Frames ``start:end:stride`` of a posed-frame source (sequence folder, bag, TUM, ScanNet, 7-Scenes), each
    paired with source frames among those kept, so a held-out range never leaks into training."""

    def __init__(self, cfg: SourceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self.frames = open_frames(cfg)
        n = len(self.frames)
        lo, hi = frame_range(cfg, n)
        self.indices = np.arange(lo, hi, cfg.stride)
        self.poses = np.asarray(self.frames.poses, np.float64)[self.indices]
        stamps = getattr(self.frames, "stamps", None)  # seconds; sources without stamps get the nominal rate
        self.stamps = (np.arange(n) / DEFAULT_RATE_HZ if stamps is None else np.asarray(stamps, np.float64))[self.indices]
        # a sequence folder without timestamps.txt has stamps made up from a nominal rate (data.sequence)
        self.nominal_stamps = stamps is None or not getattr(self.frames, "has_timestamps", True)
        self._unreadable: set[str] = set()  # the errors warned about (one line per bad frame)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def distinct_views(self) -> int:
        return len(self.indices)

    @property
    def labelled_tasks(self) -> tuple[str, ...]:
        """``tasks`` less those the reader has no labels for: depth and normals need its depth (or, for a sequence
        folder, its normals), semantic and boundary its labels; readers that always have them (TUM, ScanNet,
        7-Scenes) keep every task."""
        has = {"depth": getattr(self.frames, "has_depth", True), "semantic": getattr(self.frames, "has_semantic", True)}
        return tuple(t for t in self.cfg.tasks
                     if has[TASK_LABELS[t]] or (t == "normals" and getattr(self.frames, "has_normals", False)))

    def label_sources(self, tasks: Iterable[str]) -> str:
        """Where the labels of ``tasks`` were looked for, for messages: ``semantic, boundary: semantic_topic
        '/gt/semantic' (not in the bag)``; depth and normals read the depth labels, semantic and boundary the
        semantic ones (a reader without ``label_source`` is named by its kind)."""
        by_label: dict[str, list[str]] = {}
        for task in tasks:
            by_label.setdefault(TASK_LABELS[task], []).append(task)
        describe = getattr(self.frames, "label_source", None)
        return "; ".join(f"{', '.join(ts)}: " + (describe(label) if describe else f"no {label} labels in {self.cfg.kind}")
                         for label, ts in by_label.items())

    def load(self, index, rng):
        """The views of sample ``index``; a sample with an unreadable frame (a truncated JPEG in a bag, a damaged
        image file: ``UNREADABLE_FRAME``) is replaced by the next sample, with a warning naming the frame once, as
        replay drops such a frame (a trial: one of them aborted `mtl3d eval` and training on the bag). Raises the
        error when ``MAX_SUBSTITUTES`` samples in a row fail: the source as a whole is unreadable."""
        for attempt in range(MAX_SUBSTITUTES):
            try:
                return self._load((index + attempt) % len(self), rng)
            except UNREADABLE_FRAME as exc:
                if attempt == MAX_SUBSTITUTES - 1:
                    raise
                if str(exc) not in self._unreadable:
                    self._unreadable.add(str(exc))
                    log.warning("%s: %s; its samples are replaced by the next one", self.cfg.path, exc)
        raise AssertionError("unreachable")

    def _load(self, index, rng):
        local = [index, *choose_sources(self.poses, index, 0, len(self.indices), self.num_views - 1, self.cfg, rng,
                                        self.stamps, self.nominal_stamps)]
        frames = [int(self.indices[j]) for j in local]
        tasks = set(self.cfg.tasks)
        need_depth = bool(tasks & {"depth", "normals"})
        need_semantic = bool(tasks & {"semantic", "boundary"})
        views = []
        for j in frames:
            fr = self.frames.frame(j, depth=need_depth, semantic=need_semantic, normals="normals" in tasks)
            views.append(_view_from_labels(fr.rgb, fr.K, fr.T_world_cam, fr.depth, fr.semantic, fr.normals,
                                           derive_normals="normals" in tasks))
        return views, {"path": str(self.cfg.path), "frames": frames}


@lru_cache(maxsize=1)
def nyu_label_mapping(label_set: str = "894") -> np.ndarray:
    """Lookup table raw label id -> NYU13 index (0-based, 255 unlabelled) for label sets ``894`` or ``40``."""
    data = json.loads(NYU_MAPPING_FILE.read_text())
    to13 = np.asarray(data["nyu40_to_13"], np.int64)  # NYU40 id -> 1-based NYU13 id, 0 unlabelled
    if label_set == "894":
        table = to13[np.asarray(data["nyu894_to_40"], np.int64)]
    elif label_set == "40":
        table = to13
    else:
        msg = f"unknown NYUv2 label set {label_set!r}; expected '894' or '40'"
        raise ValueError(msg)
    lut = np.full(65536, IGNORE_INDEX, np.uint8)
    lut[: len(table)] = np.where(table > 0, table - 1, IGNORE_INDEX)
    return lut


class NYUv2Dataset(SourceDataset):
    """NYUv2 labelled ``.mat`` (MATLAB v7.3 / HDF5) in the official layout:
    ``images`` [N,3,W,H] uint8, ``depths`` [N,W,H] float metres, ``labels`` [N,W,H] uint16.
    """

    def __init__(self, cfg: SourceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        import h5py

        if not Path(cfg.path).is_file():
            problem = "is a folder" if Path(cfg.path).is_dir() else "does not exist"
            msg = f"NYUv2 file {cfg.path} {problem} (expected the labelled .mat file, nyu_depth_v2_labeled.mat)"
            raise FileNotFoundError(msg)
        with h5py.File(cfg.path, "r") as f:
            for key in ("images", "depths", "labels"):
                if key not in f:
                    msg = f"{cfg.path} has no dataset {key!r}; expected nyu_depth_v2_labeled.mat's layout"
                    raise ValueError(msg)
            n = f["images"].shape[0]
        self.lo, self.hi = frame_range(cfg, n)
        self._file = None  # opened lazily in each worker (h5py handles do not survive fork)
        self._lut = nyu_label_mapping(cfg.nyu_labels)

    def __len__(self) -> int:
        return self.hi - self.lo

    def load(self, index, rng):
        import h5py

        if self._file is None:
            self._file = h5py.File(self.cfg.path, "r")
        i = self.lo + index
        rgb = np.ascontiguousarray(self._file["images"][i].transpose(2, 1, 0))  # [3,W,H] -> [H,W,3]
        depth = np.ascontiguousarray(self._file["depths"][i].T).astype(np.float32)
        semantic = self._lut[np.asarray(self._file["labels"][i].T, np.int64)]
        H, W = depth.shape
        K = geometry.resize_intrinsics(NYU_K, (640, 480), (W, H))
        view = _view_from_labels(rgb, K, np.eye(4), depth, semantic)
        return [view] * self.num_views, {"path": str(self.cfg.path), "frames": [i]}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state


_KINDS: dict[str, type[SourceDataset]] = {
    "synthetic": SyntheticDataset, "nyuv2": NYUv2Dataset, **dict.fromkeys(FRAME_KINDS, FramesDataset),
}


def two_view_source(source: SourceConfig, gap: int | None) -> SourceConfig:
    """``source`` (a ``data.datasets.SourceConfig``) with the two-view mode's pairing: ``gap`` frames back, or with
    None the runtime's rule (``neighbour: pairing`` over every earlier frame of the range, ``min_baseline_m``,
    ``min_rotation_deg`` and ``history_size`` at ``PairingConfig``'s defaults, the node's). A reference with no
    earlier frame runs single-view, as the node's first frame does (the ``single`` baseline bin counts them).
    NYUv2 (single images) is returned as it is."""
    if source.kind == "nyuv2":
        return source
    if gap is not None:
        return dataclasses.replace(source, neighbour="gap", eval_gap=gap)
    return dataclasses.replace(source, neighbour="pairing", eval_gap=1, min_baseline=PairingConfig().min_baseline_m)


def build_source(cfg: SourceConfig, **kwargs: Any) -> SourceDataset:
    return _KINDS[cfg.kind](cfg, **kwargs)


class MultiSourceDataset(Dataset):
    """The concatenation of sources (each listed ``repeat`` times); keys as for :class:`SourceDataset`."""

    def __init__(self, sources: list[SourceDataset]) -> None:
        if not sources:
            raise ValueError("no data sources configured")
        self.sources = sources
        self.offsets = np.cumsum([0] + [len(s) * s.cfg.repeat for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: int | tuple[int, int]) -> MultiViewBatch:
        index = int(key[0]) if isinstance(key, tuple) else int(key)
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = (index - int(self.offsets[k])) % len(self.sources[k])
        return self.sources[k][(local, key[1]) if isinstance(key, tuple) else local]


def build_dataset(sources: list[SourceConfig], *, image_size: tuple[int, int], num_views: int = 2,
                  augment: AugmentConfig | None = None, label_regime: str = "full", seed: int = 0,
                  name: str = "") -> MultiSourceDataset:
    """All ``sources`` as one dataset of B=1 :class:`MultiViewBatch` samples at ``image_size`` (W, H).

    ``name``: the config key of the list (``data.train``); a source that cannot be opened raises its reader's own
    error (ValueError, OSError, RuntimeError: a bag's ``BagError``) with ``NAME.INDEX (KIND): `` put before the
    message, so a config of several sources says which one and which keys to change (``data.train.0.image_topic``).
    """
    built = []
    for i, s in enumerate(sources):
        try:
            built.append(build_source(s, image_size=image_size, num_views=num_views, augment=augment,
                                      label_regime=label_regime, seed=seed + 1000 * i))
        except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: data.bag.BagError
            if name and len(exc.args) == 1 and isinstance(exc.args[0], str):  # the same type, the key in front
                exc.args = (f"{name}.{i} ({s.kind}): {exc.args[0]}",)
            raise
    return MultiSourceDataset(built)

