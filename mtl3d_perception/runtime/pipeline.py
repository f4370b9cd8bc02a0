"""PerceptionPipeline: Frame -> Products through the network's streaming API (DESIGN §2, §5).

preprocess (``frames.resize_to_network``: the whole image to the network size, K scaled per axis) -> pick the source view
(``FrameHistory``) -> ``model.encode`` the new frame once and reuse cached features of the source ->
``model.predict`` -> postprocess (class ids and palette, depth with invalid pixels NaN, normals, boundary
probability, at network or camera resolution, point cloud with stride in the camera or world frame).
No ROS here: the node and replay both drive it with :class:`Frame` objects.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mtl3d_perception.classes import IGNORE_INDEX, colorize_labels
from mtl3d_perception.evaluation.montage import colorize_depth, colorize_normals
from mtl3d_perception.geometry import (
    check_rigid,
    normals_towards_camera,
    point_cloud,
    unit_rays,
    unit_vectors,
)
from mtl3d_perception.model.inference import prepare_for_inference
from mtl3d_perception.runtime.config import RuntimeConfig, required_outputs
from mtl3d_perception.runtime.frames import (
    Frame,
    TimeJumpDetector,
    check_image_size,
    image_interpolation,
    resize_to_network,
)
from mtl3d_perception.runtime.history import FrameHistory, pose_jump_message
from mtl3d_perception.runtime.params import CUDA_ONLY_PRECISIONS
from mtl3d_perception.runtime.pose_consistency import ScaleHistory, pose_consistency_message
from mtl3d_perception.runtime.pose_convention import (
    POSE_CONVENTION,
    PoseConventionCheck,
    can_check,
    score_readings,
)
from mtl3d_perception.runtime.products import Products

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# cameras whose pose checks and intrinsics are kept (the least recently seen is forgotten first: frame_ids come from
# the input, and a publisher with a counter in its frame_id must not grow them without bound)
MAX_CAMERAS = 16
# The world-frame cloud is warned about once where float32 spaces its coordinates this far apart (at 65,536 m from the
# world origin: 7.8 mm; UTM northings are millions of metres: 0.5 m)
FLOAT32_CLOUD_STEP_M = 0.005

_LOG = logging.getLogger(__name__)


class PerceptionPipeline:
    """The runtime around one CvM-MTL model.

    Args:
        model: a CvMMTL (``encode``/``predict`` streaming API, ``config.input_size`` (W, H), ``config.palette``). The
            pipeline runs its own copy prepared for inference (``model.inference.prepare_for_inference``).
        config: the runtime settings (:class:`RuntimeConfig`; defaults when None). The pipeline reads
            ``device`` (``auto``: CUDA when available), ``precision`` (fp16 and bf16 need CUDA; on CPU it falls
            back to fp32 with a warning, kept in ``precision_note``), ``pairing`` (its own :class:`FrameHistory`),
            ``output_resolution``, ``point_stride``, ``cloud_frame``, ``world_frame``, the ``publish_*`` outputs,
            ``max_image_pixels`` (frames with more pixels are refused with ValueError; bounds what
            ``output_resolution=camera`` allocates) and ``single_view`` (never pair: every frame single-view with reason ``single_view_mode``,
            its pose still checked and used for the world-frame cloud; no history or feature cache is kept).
        logger: ``logging.Logger``-like object (the node passes an adapter to its rclpy logger).
        prepare: run a copy prepared for inference (the default); False runs ``model`` itself in eval mode, moved
            to the device (the reference path, for benchmarks and checks).

    A frame older than the newest processed one by more than ``frames.JUMP_BACK_S`` (time went back) clears the
    history and the feature cache first (``frames.TimeJumpDetector``).

    Frames of several cameras may be interleaved: each is paired only with earlier frames of its own camera
    (``history.same_camera``), and every switch of camera adds a ``cameras`` warning to the products.
    """

    def __init__(self, model: Any, config: RuntimeConfig | None = None, *, logger: Any = None,
                 prepare: bool = True) -> None:
        from mtl3d_perception.runtime.loading import resolve_device

        self.log = logger or _LOG
        config = config or RuntimeConfig()
        self.device = torch.device(resolve_device(config.device))
        # An eval copy prepared for inference (model.inference): the caller's model is neither changed nor moved.
        self.model = (prepare_for_inference(model) if prepare else model.eval()).to(self.device)
        self.model_config = model.config
        self.net_size: tuple[int, int] = tuple(int(v) for v in self.model_config.input_size)  # (W, H)
        self.history = FrameHistory(config.pairing)
        self.jump = TimeJumpDetector()
        # history key (frame_id, stamp_ns) -> FrameFeatures of history frames
        self._features: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._last_camera: str | None = None  # frame_id of the previous frame (interleaved cameras are reported)
        self._intrinsics: OrderedDict[str, _CameraIntrinsics] = OrderedDict()  # camera -> its recent (K, size)
        self._cloud_precision_warned = False
        # (mask, output size, it at that size, on the device)
        self._mask_cache: tuple[np.ndarray, tuple[int, int], np.ndarray, torch.Tensor] | None = None
        self._pose_checks: OrderedDict[str, PoseConventionCheck] = OrderedDict()  # camera -> its pose check
        self._scales = ScaleHistory()  # each camera's recent prior scales (runtime.pose_consistency)
        self._rays_cache: tuple[tuple[bytes, int, int], torch.Tensor] | None = None  # (K, H, W) -> unit rays
        # Products.depth_color (~1 ms a frame at 160x120): the node turns it off while ~/depth/image_color has no
        # subscriber under lazy: true (image_pipeline's lazy outputs); replay records it
        self.depth_color = True
        self._config = copy.deepcopy(config)
        self.set_config(config)

    # ------------------------------------------------------------------------------------------ options

    def set_config(self, config: RuntimeConfig) -> None:
        """Apply new settings between frames (validated by :class:`RuntimeConfig`).

        A new ``world_frame`` forgets the history (its poses are expressed in the old frame), and so does switching
        ``single_view`` on (no source will be used); new pairing rules keep the newest frames that fit.

        The pipeline keeps a copy, and :attr:`config` gives a copy of it: changing either object changes nothing until
        it is passed to ``set_config``, which compares it with the settings applied (a Python-API trial: the
        pipeline's own config object, changed in place and passed to ``set_config``, went unnoticed; a review: changed
        in place without ``set_config``, half of it took effect at once).
        """
        config.validate()
        config = copy.deepcopy(config)
        precision = config.precision
        self.precision_note: str | None = None  # why precision differs from config.precision (replay reports it)
        if precision in CUDA_ONLY_PRECISIONS and self.device.type != "cuda":
            self.precision_note = f"precision {precision} needs CUDA; running fp32 on {self.device}"
            self.log.warning(self.precision_note)
            precision = "fp32"
        old, self._config = self._config, config
        self.precision = precision
        self.outputs = config.outputs()
        if config.world_frame != old.world_frame or config.cloud_frame != old.cloud_frame:
            self._cloud_precision_warned = False
        if config.world_frame != old.world_frame or config.single_view:
            # poses in the old frame would pair into wrong relative poses; single-view mode never uses a source
            self._forget()
        if config.pairing != self.history.config:
            self.history.reconfigure(config.pairing)
            self._evict()

    @property
    def config(self) -> RuntimeConfig:
        """A copy of the settings applied (change one with ``set_config``; changing this object does nothing)."""
        return copy.deepcopy(self._config)

    @property
    def has_depth_confidence(self) -> bool:
        """Whether the model outputs a depth confidence (``geometric_depth: true``), i.e. whether
        ``Products.depth_confidence`` (``~/depth/confidence``) comes with the depth. False for models without the
        geometric depth (``geometric_depth: false``, e.g. the ``tiny`` preset, checkpoints from before issue 18)."""
        return bool(getattr(self.model_config, "geometric_depth", False))

    @property
    def world_frame(self) -> str:
        return self._config.world_frame

    def reset(self) -> None:
        """Start afresh: forget the history, cached features and the newest stamp seen (between two sequences run
        through one pipeline, or the next one's first frames pair with the last one's; two trials: with the stamp
        kept, the next sequence's second frame was taken for a time jump and lost its pair)."""
        self._forget()
        self.jump.reset()
        self._last_camera = None
        self._intrinsics.clear()
        self._cloud_precision_warned = False

    def _forget(self) -> None:
        """Forget the history, cached features and pose checks (a time jump, a camera change, new pairing rules)."""
        self.history.clear()
        self._features.clear()
        self._pose_checks.clear()
        self._scales.clear()

    def close(self) -> None:
        """Release the model and cached features, and give cached GPU memory back to the driver. Running a frame
        afterwards raises RuntimeError (:meth:`_check_open`)."""
        self.reset()
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------ running

    def _check_open(self) -> None:
        """Raise RuntimeError after :meth:`close` (a Python-API trial: ``process`` then failed deep in the network with
        'NoneType' object has no attribute 'encode')."""
        if self.model is None:
            raise RuntimeError("this PerceptionPipeline was closed (close() released its model); create a new one")

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def preprocess(self, frame: Frame) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """Resize to the network size -> (rgb_net [h,w,3] uint8, image [1,3,h,w] float in [0,1], K_net [3,3]).

        ``frame.rgb`` may be read-only or strided (a view of a bag message's buffer); it is copied only then,
        since ``torch.from_numpy`` needs a writable, contiguous array.
        """
        rgb, K_net = resize_to_network(frame.rgb, frame.K, self.net_size)
        image = torch.from_numpy(np.require(rgb, np.uint8, ("C", "W"))).to(self.device).permute(2, 0, 1)[None]
        image = image.float().div_(255.0).contiguous()  # NCHW: the layout the CvM's encoder runs fastest in
        return rgb, image, K_net

    def _encode(self, image: torch.Tensor) -> Any:
        with self._autocast():
            return self.model.encode(image)

    @torch.inference_mode()
    def warmup(self) -> float:
        """Run the network once on a blank single-view input (first calls pay for lazy imports and allocations).

        Returns the seconds it took; the history and feature cache are untouched.
        """
        self._check_open()
        t = time.perf_counter()
        w, h = self.net_size
        image = torch.zeros(1, 3, h, w, device=self.device)
        K = torch.tensor([[w, 0.0, (w - 1) / 2], [0.0, w, (h - 1) / 2], [0.0, 0.0, 1.0]], device=self.device)[None]
        feats = self._encode(image)
        with self._autocast():
            self.model.predict(feats, feats, K, torch.eye(4, device=self.device)[None])
        self._sync()
        return time.perf_counter() - t

    def _admit(self, frame: Frame, warnings: list[tuple[str, str]]) -> Frame:
        """The checks every frame passes before it runs or joins the history: its pose (dropped with a warning when
        not rigid), image and K, the time-jump rule, the pixel limit and the camera it comes from.

        Raises:
            ValueError: an unusable image or K, or an image above ``max_image_pixels``.
            RuntimeError: the pipeline was closed.
        """
        self._check_open()
        if frame.T_world_cam is not None:
            try:
                frame = frame.with_pose(check_rigid(frame.T_world_cam, name=f"pose at {frame.stamp_ns} ns"))
            except ValueError as exc:
                warnings.append(("invalid_pose", f"{exc}; processing single-view"))
                frame = frame.with_pose(None)
        frame.validate()
        if self.jump.check(frame.stamp_ns):
            warnings.append(("time_jump", f"stamp {frame.stamp:.6f} s is before the newest frame; history cleared"))
            self._forget()
        elif self.jump.outlier_ns is not None:
            warnings.append(("stamp_outlier", self.jump.outlier_message(frame.stamp_ns)))
            self.history.drop_after(frame.stamp_ns + self.jump.jump_back_ns)
            self._evict()
        check_image_size(*frame.size, self._config.max_image_pixels, what=f"frame {frame.frame_id!r} at {frame.stamp_ns} ns")
        # a header glitch is not a second camera: an empty frame_id (its own header problem) is skipped
        camera = frame.camera
        if frame.header_problem != "empty_frame_id":
            if self._last_camera is not None and self._last_camera != camera:
                cameras = " and ".join(repr(c) for c in sorted((camera, self._last_camera)))  # one message a pair
                warnings.append(("cameras", f"input interleaves cameras {cameras}; source views are taken from the "
                                            "same camera only"))
            self._last_camera = camera
        warnings.extend(self._intrinsics_problems(camera, frame))
        return frame

    def _intrinsics_problems(self, camera: str, frame: Frame) -> list[tuple[str, str]]:
        """Checks that run when a camera's size or K changes (kept for the ``MAX_CAMERAS`` cameras seen last): the
        principal point (:func:`_principal_point_problem`), and, once per camera, a size or K that keeps switching
        back and forth (A, B, A): two cameras publishing under one frame_id (a trial: paired right, per size and K,
        but both take one pose from TF, and nothing said so)."""
        key = (frame.K.tobytes(), frame.size)
        state = self._intrinsics.pop(camera, None)
        problems: list[tuple[str, str]] = []
        if state is None or state.key != key:
            if state is not None and state.previous is not None and state.previous[0] == key and not state.warned:
                state.warned = True
                before = state.description  # the other one; this frame brings the previous one back
                problems.append(("cameras", f"camera {camera!r} switches back and forth between two image sizes or "
                                            f"intrinsics ({before} and {_describe_intrinsics(frame)}): two cameras "
                                            "publishing under one frame_id? Each needs its own optical frame_id and "
                                            "TF frame (REP 105), or both get one pose; source views are taken only "
                                            "from frames of the same size and K"))
            if state is None:
                state = _CameraIntrinsics(key, _describe_intrinsics(frame))
            else:
                state.previous, state.key, state.description = ((state.key, state.description), key,
                                                                _describe_intrinsics(frame))
            if (message := _principal_point_problem(camera, frame)) is not None:
                problems.append(("calibration", message))
        self._intrinsics[camera] = state  # newest last
        while len(self._intrinsics) > MAX_CAMERAS:
            self._intrinsics.popitem(last=False)
        return problems

    def _mask_at(self, mask: np.ndarray, wh: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
        """``Frame.image_mask`` ``[H,W]`` bool at the output size ``wh`` = (W, H), as an array and on the device: a
        pixel holds image data when at least half of its footprint did (area averaging when shrinking, as the image:
        ``frames.image_interpolation``). The last result for a read-only mask is kept: a camera's frames share one
        (``CameraModel.rectified_mask``), so it is resized and copied to the device once; a writable one may change in
        place between frames (a trial: a reused buffer kept its old border)."""
        cached = self._mask_cache
        if cached is not None and cached[0] is mask and cached[1] == tuple(wh) and not mask.flags.writeable:
            return cached[2], cached[3]
        out = mask
        if mask.shape[::-1] != tuple(wh):
            src_wh = (mask.shape[1], mask.shape[0])
            out = cv2.resize(mask.astype(np.float32), tuple(wh), interpolation=image_interpolation(src_wh, wh)) >= 0.5
            out.flags.writeable = False
        out_t = torch.tensor(out, device=self.device)  # a copy: the mask may be read-only, or change
        self._mask_cache = (mask, tuple(wh), out, out_t)
        return out, out_t

    def _cloud_precision_problem(self, frame: Frame) -> str | None:
        """Once (until :meth:`reset` or a new world or cloud frame): the camera is so far from the world frame's
        origin that the cloud's float32 coordinates (PointCloud2 FLOAT32 x, y, z) lose centimetres."""
        if self._cloud_precision_warned:
            return None
        position = frame.T_world_cam[:3, 3]
        far = float(np.abs(position).max())
        step = float(np.spacing(np.float32(far)))
        if step < FLOAT32_CLOUD_STEP_M:
            return None
        self._cloud_precision_warned = True
        return (f"camera {frame.camera!r} is at ({', '.join(f'{v:.6g}' for v in position)}) m in "
                f"{self.world_frame!r}, where float32 cloud coordinates (PointCloud2 FLOAT32 x, y, z) are "
                f"{step * 1000:.3g} mm apart: publish the cloud in the camera frame (cloud_frame camera) or use a "
                "world_frame near the robot (REP 105's map or odom, not a UTM or earth frame)")

    def _remember(self, frame: Frame, features: Any) -> None:
        """A posed frame joins the history as a future source (``features`` cached, or None: encoded when used)."""
        if frame.T_world_cam is not None and not self._config.single_view:
            self.history.add(frame)
            if features is not None:
                self._features[(frame.frame_id, frame.stamp_ns)] = features
            self._evict()

    def observe(self, frame: Frame) -> list[tuple[str, str]]:
        """A frame whose outputs nobody wants (the node's ``lazy`` mode): checked as :meth:`process` checks it and,
        with a valid pose, added to the history without inference (its features are computed if it is ever used as
        a source), so the first frame that runs again has a source view.

        Returns:
            the warnings :meth:`process` would have put in the products (kind, message).

        Raises:
            ValueError: as :meth:`process`.
        """
        warnings: list[tuple[str, str]] = []
        self._remember(self._admit(frame, warnings), None)
        return warnings

    @torch.inference_mode()
    def process(self, frame: Frame, outputs: Iterable[str] | None = None) -> Products:
        """Run one frame; the frame joins the history (as a future source) when it has a valid pose.

        Args:
            frame: the frame, with its pose or None.
            outputs: the output groups to compute (names from ``config.OUTPUT_NAMES``, plus what they need:
                ``config.required_outputs``); None: the enabled ones (``publish_*``). The node passes the groups
                that have subscribers (``lazy``).

        Raises:
            ValueError: an unusable image or K, or an image above ``max_image_pixels`` (bad poses are dropped with a
                warning instead).
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        warnings: list[tuple[str, str]] = []
        frame = self._admit(frame, warnings)
        want = self.outputs if outputs is None else required_outputs(outputs)

        t = time.perf_counter()
        rgb_net, image, K_net = self.preprocess(frame)
        self._sync()
        timings["preprocess"] = time.perf_counter() - t

        pair = self.history.select(frame, single_view=self._config.single_view)
        if pair.reason == "pose_jump" and (last := self.history.newest_earlier(frame)) is not None:
            warnings.append(("pose_jump", pose_jump_message(frame, last, self.history.config)))
            # the camera's frames before the jump are across it: forget them, or once the jump is older than
            # |jump| / max_speed_mps they looked slow enough and later frames paired across it (a trial: 1-2 m)
            self.history.drop_camera(frame)
            self._evict()
        check = self._pose_check(frame, pair)
        suspect = check is not None and check.suspect is not None  # the poses do not fit: run single-view
        check_now = check is not None and check.due()
        t = time.perf_counter()
        ref_feats = self._encode(image)
        src_feats = ref_feats
        if pair.src is not None and (check_now or not suspect):
            src_feats = self._features.get((pair.src.frame_id, pair.src.stamp_ns))
            if src_feats is None:  # never cached (kept while idle: observe) or evicted: encode it now, and keep it
                src_feats = self._encode(self.preprocess(pair.src)[1])
                if (pair.src.frame_id, pair.src.stamp_ns) in self.history.keys:
                    self._features[(pair.src.frame_id, pair.src.stamp_ns)] = src_feats
        self._sync()
        timings["encode"] = time.perf_counter() - t

        t = time.perf_counter()
        K_t = torch.as_tensor(K_net, dtype=torch.float32, device=self.device)[None]
        two_view = pair.src is not None and not suspect
        T_t = torch.as_tensor(pair.T_src_ref if two_view else np.eye(4), dtype=torch.float32, device=self.device)[None]
        with self._autocast():
            out = self.model.predict(ref_feats, src_feats if two_view else ref_feats, K_t, T_t)
        self._sync()
        timings["predict"] = time.perf_counter() - t
        if check_now:
            t = time.perf_counter()
            self._check_pose_convention(check, frame, pair, ref_feats, src_feats, K_t, out, two_view, warnings)
            timings["pose_check"] = time.perf_counter() - t
        jumped = two_view and self._pose_jumped(frame, pair, out, warnings)
        if jumped:  # the pair is across a jump: this frame runs single-view
            t = time.perf_counter()
            two_view = False
            with self._autocast():
                out = self.model.predict(ref_feats, ref_feats, K_t, torch.eye(4, device=self.device)[None])
            self._sync()
            timings["predict"] += time.perf_counter() - t

        t = time.perf_counter()
        products = self._postprocess(frame, out, rgb_net, K_net, want)
        timings["postprocess"] = time.perf_counter() - t - products.timings.get("cloud", 0.0)
        timings["cloud"] = products.timings.get("cloud", 0.0)

        self._remember(frame, ref_feats)
        products.single_view = not two_view
        products.pair_reason = (POSE_CONVENTION if suspect and pair.src is not None else
                                "pose_jump" if jumped else pair.reason)
        products.source_stamp_ns = pair.src.stamp_ns if two_view else None
        products.baseline_m = float(np.linalg.norm(pair.T_src_ref[:3, 3])) if two_view else 0.0
        products.warnings = warnings + products.warnings  # + the cloud's (_postprocess)
        timings["total"] = time.perf_counter() - t_start
        products.timings = timings
        return products

    def _rays(self, K: np.ndarray, height: int, width: int) -> torch.Tensor:
        """The output pixels' unit rays (``geometry.unit_rays``) on the device, kept for the last K and size (they
        cost ~1 ms a frame to make at 160x120, the normals' orientation that uses them ~0.2 ms)."""
        key = (np.asarray(K, np.float64).tobytes(), height, width)
        if self._rays_cache is None or self._rays_cache[0] != key:
            rays = unit_rays(torch.as_tensor(np.asarray(K, np.float64), device=self.device), height, width)
            self._rays_cache = (key, rays.float())
        return self._rays_cache[1]

    def _pose_jumped(self, frame: Frame, pair: Any, out: dict[str, torch.Tensor],
                     warnings: list[tuple[str, str]]) -> bool:
        """Whether this two-view frame's prior scale leapt from its camera's recent ones (``runtime.pose_consistency``:
        a pose jump the speed limits let through); then its camera's earlier frames are forgotten, as for a
        ``pose_jump`` found by the pairing rule, and a ``pose_jump`` warning says why."""
        if not self._config.check_pose_consistency or "depth_prior_scale" not in out:
            return False
        scale = float(out["depth_prior_scale"].reshape(-1)[0])
        median = self._scales.check(frame.camera, scale, frame.stamp_ns)
        if median is None:
            return False
        warnings.append(("pose_jump", pose_consistency_message(
            scale, median, (frame.stamp_ns - pair.src.stamp_ns) * 1e-9, float(np.linalg.norm(pair.T_src_ref[:3, 3])),
            self._config.world_frame)))
        self.history.drop_camera(frame)
        self._evict()
        return True

    def _pose_check(self, frame: Frame, pair: Any) -> PoseConventionCheck | None:
        """The pose-convention check of the frame's camera (``runtime.pose_convention``), or None where it does not
        apply: no source view, ``check_pose_convention`` off, or a model without the geometric depth's sweep."""
        if pair.src is None or not self._config.check_pose_convention or not can_check(self.model):
            return None
        check = self._pose_checks.pop(frame.camera, None) or PoseConventionCheck()
        self._pose_checks[frame.camera] = check  # newest last; a bounded number of cameras (frame_ids come from input)
        while len(self._pose_checks) > MAX_CAMERAS:
            self._pose_checks.popitem(last=False)
        return check

    def _check_pose_convention(self, check: PoseConventionCheck, frame: Frame, pair: Any, ref_feats: Any,
                               src_feats: Any, K_t: torch.Tensor, out: dict[str, torch.Tensor], two_view: bool,
                               warnings: list[tuple[str, str]]) -> None:
        """Score this pair's poses read each way (``pose_convention.score_readings``) against the single-view depth
        (this frame's own prediction when it ran single-view, else one more prediction) and warn while they do not
        fit."""
        with self._autocast():
            prior = (self.model.predict(ref_feats, ref_feats, K_t, torch.eye(4, device=self.device)[None])
                     if two_view else out)["depth"]
            scores = score_readings(self.model, ref_feats.matching, src_feats.matching, K_t, frame.T_world_cam,
                                    pair.src.T_world_cam, prior, out.get("depth_logits") if two_view else None)
        check.add(scores)
        if (message := check.message(f"camera {frame.camera!r}")) is not None:
            warnings.append((POSE_CONVENTION, f"{message}, T being the frame's T_world_cam ({frame.camera!r} in "
                                              f"{self._config.world_frame!r}; from TF in the node and replay: fix it "
                                              "where it is published, the odometry or the camera's static transform); "
                                              "its frames run single-view until the poses fit"))

    def _evict(self) -> None:
        keep = set(self.history.keys)
        for key in [k for k in self._features if k not in keep]:
            del self._features[key]

    def _postprocess(self, frame: Frame, out: dict[str, torch.Tensor], rgb_net: np.ndarray, K_net: np.ndarray,
                     want: frozenset[str]) -> Products:
        cfg, opts = self.model_config, self._config
        if opts.output_resolution == "camera":
            W, H = frame.size
            K_out, rgb_out = np.asarray(frame.K, np.float64), frame.rgb
        else:
            (W, H), K_out, rgb_out = self.net_size, K_net, rgb_net
        need_labels = "semantic" in want or "points" in want
        # no image data there (a rectified raw image's border): no depth, normals, class or boundary to give
        image_mask, mask_t = (None, None) if frame.image_mask is None else self._mask_at(frame.image_mask, (W, H))
        need_depth = "depth" in want or "normals" in want or "points" in want

        def at_output_size(x: torch.Tensor, mode: str) -> torch.Tensor:  # [1,C,h,w] float -> [1,C,H,W]
            x = x.float()
            if x.shape[-2:] == (H, W):
                return x
            return F.interpolate(x, size=(H, W), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))

        dev: dict[str, torch.Tensor] = {}
        if need_depth:
            # nearest keeps depth edges sharp (no flying pixels between foreground and background)
            depth = at_output_size(out["depth"], "nearest")[0, 0]
            valid = torch.isfinite(depth) & (depth > 0) & (depth <= cfg.depth_max * 1.001)
            if mask_t is not None:
                valid &= mask_t
            dev["depth"] = torch.where(valid, depth, torch.full_like(depth, float("nan")))
            if "depth" in want and "depth_confidence" in out:  # models with the geometric depth (issue 18)
                conf = at_output_size(out["depth_confidence"], "bilinear")[0, 0].clamp(0.0, 1.0)
                dev["depth_confidence"] = torch.where(valid, conf, torch.zeros_like(conf))
        if need_labels:
            # max(0).indices is argmax(0) (the first maximum on ties), ~4x faster over a leading dim on a CPU
            dev["semantic"] = at_output_size(out["semantic"], "bilinear")[0].max(0).indices.to(torch.uint8)
            if mask_t is not None:
                dev["semantic"] = torch.where(mask_t, dev["semantic"], IGNORE_INDEX)
        if "normals" in want:
            n = out["normals"][0].float()  # unit vectors at the network size
            if n.shape[-2:] != (H, W):
                n = unit_vectors(at_output_size(n[None], "bilinear")[0], 0)
            n = normals_towards_camera(n.permute(1, 2, 0), self._rays(K_out, H, W))
            dev["normals"] = torch.where(valid[..., None], n, torch.full_like(n, float("nan")))
        if "boundary" in want:
            prob = torch.sigmoid(at_output_size(out["boundary"], "bilinear")[0, 0])
            dev["boundary"] = (prob * 255.0).round_().to(torch.uint8)
            if mask_t is not None:
                dev["boundary"] = torch.where(mask_t, dev["boundary"], 0)
        host = {k: v.cpu().numpy() for k, v in dev.items()}  # one device->host copy per output

        products = Products(stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, size=(W, H), K=K_out,
                            classes=tuple(cfg.classes), image_mask=image_mask)
        if "depth" in want:
            products.depth = host["depth"].astype(np.float32)
            if self.depth_color:
                products.depth_color = colorize_depth(products.depth, cfg.depth_range)
            if "depth_confidence" in host:
                products.depth_confidence = host["depth_confidence"].astype(np.float32)
        if "semantic" in want:
            products.semantic = host["semantic"]
            products.semantic_color = colorize_labels(host["semantic"], palette=cfg.palette)
        if "normals" in want:
            normals = host["normals"].astype(np.float32)
            products.normals = normals
            products.normals_color = colorize_normals(normals)
        if "boundary" in want:
            products.boundary = host["boundary"]
        if "points" in want:
            t = time.perf_counter()
            world = opts.cloud_frame == "world" and frame.T_world_cam is not None
            if world and (message := self._cloud_precision_problem(frame)) is not None:
                products.warnings.append(("cloud_precision", message))
            products.points = point_cloud(host["depth"], K_out, rgb=rgb_out, labels=host["semantic"],
                                         stride=opts.point_stride, T_frame_cam=frame.T_world_cam if world else None)
            products.points_frame_id = self.world_frame if world else frame.frame_id
            products.timings["cloud"] = time.perf_counter() - t
        return products


@dataclass
class _CameraIntrinsics:
    """One camera's image size and K, now and before the last change (``PerceptionPipeline._intrinsics_problems``)."""

    key: tuple[bytes, tuple[int, int]]  # (K's bytes, (W, H))
    description: str
    previous: tuple[tuple[bytes, tuple[int, int]], str] | None = None  # (key, description) before the last change
    warned: bool = False  # the back-and-forth switch was reported


def _describe_intrinsics(frame: Frame) -> str:
    K = frame.K
    return f"{frame.size[0]}x{frame.size[1]}, fx {K[0, 0]:.6g} fy {K[1, 1]:.6g} cx {K[0, 2]:.6g} cy {K[1, 2]:.6g}"


def _principal_point_problem(camera: str, frame: Frame) -> str | None:
    """A principal point far from the image centre (more than a fifth of the image away), the mark of a K for another
    image size (a Python-API trial: a K for twice the size was taken without a word and doubled the depth error).
    Legal (a cropped ROI), so the frame still runs."""
    (W, H), cx, cy = frame.size, float(frame.K[0, 2]), float(frame.K[1, 2])
    u, v = (cx + 0.5) / W, (cy + 0.5) / H  # 0.5: centred (DESIGN §4's pixel-centre convention)
    if abs(u - 0.5) <= 0.2 and abs(v - 0.5) <= 0.2:
        return None
    # cx + 0.5 ~ W' / 2 and cy + 0.5 ~ H' / 2 for a K of a W' x H' image: both off the centre the same way is the
    # mark of another size (a retrial: a 3840x2160 K on 640x480 frames, another aspect, got no hint)
    same_way = u > 0 and v > 0 and (u - 0.5) * (v - 0.5) > 0 and min(abs(u - 0.5), abs(v - 0.5)) > 0.1
    hint = (f"; it is centred for a {round(2 * u * W)}x{round(2 * v * H)} image: is K for another size?"
            if same_way else "")
    return (f"K's principal point ({cx:.1f}, {cy:.1f}) is far from the centre of the {W}x{H} image of camera "
            f"{camera!r} (at {u:.2f}, {v:.2f} of its width and height){hint}; the frame still runs")
