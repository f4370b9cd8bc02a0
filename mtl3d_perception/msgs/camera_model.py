"""sensor_msgs/CameraInfo as its definition reads: which K applies to an image, and rectification of raw images.

Follows image_geometry's ``PinholeCameraModel`` (ros-perception/vision_opencv ``image_geometry``):

- ``width``/``height``/``K``/``P`` describe the full-resolution sensor; ``roi`` (x_offset, y_offset, width,
  height; all zero = the full image) is the window of the sensor the image shows, in full-resolution pixels, and
  ``binning_x``/``binning_y`` (0 or 1 = none) the factors the image is binned by. The image is therefore
  ``roi / binning`` pixels and its intrinsics are K (or P) cropped by the ROI offset and scaled by the binning.
  Scaling keeps pixel centres (DESIGN §4: cx -> (cx + 0.5) / b - 0.5); image_geometry divides cx by b, which
  differs by (b - 1) / 2b pixels (0.25 px for 2x2 binning);
- a raw image (``image_raw``) with distortion ``D`` (``plumb_bob``, ``rational_polynomial``: cv2's pinhole
  model; ``equidistant``: cv2.fisheye), rectification ``R`` or a projection ``P`` other than K is rectified to
  P's intrinsics with cv2 remap tables built once per camera_info (image_proc's ``rectify``: bilinear, black
  outside the raw image). The rectified image of an ROI is that window of the full rectified image, as
  image_geometry's ``rectifyImage`` cuts it (``do_rectify``, which asks consumers for a separate rectified ROI,
  does not change it);
- an already rectified image (``image_rect``) uses P's intrinsics; D and R no longer apply to it;
- a P that is all zero (drivers that fill only K) means P = [K | 0].

Which of the two an input topic carries is the ``image_kind`` option: ``auto`` follows the topic name as
image_pipeline names topics (``image_rect``, ``image_rect_color``, ... are rectified; anything else is raw).

Why our own code: image_geometry is not installable from PyPI; this is its camera model on top of cv2.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from mtl3d_perception.geometry import check_intrinsics, check_rotation, crop_intrinsics, scale_intrinsics
from mtl3d_perception.runtime.config import IMAGE_KINDS  # the image_kind setting's choices

# sensor_msgs/distortion_models.hpp
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# below this fraction of the rectified image inside the raw one, the calibration is wrong, not a wide lens (a strong
# fisheye rectified to a pinhole P keeps most of its centre)
MIN_RECTIFIED_COVERAGE = 0.5


def resolve_image_kind(image_kind: str, image_topic: str) -> str:
    """``image_raw`` or ``image_rect`` for an input topic: ``auto`` follows its name as image_pipeline names
    topics (the last name, before ``/compressed``, containing ``rect`` means rectified).

    Raises:
        ValueError: ``image_kind`` not one of ``IMAGE_KINDS``.
    """
    if image_kind not in IMAGE_KINDS:
        raise ValueError(f"image_kind must be one of {', '.join(IMAGE_KINDS)}, got {image_kind!r}")
    if image_kind != "auto":
        return image_kind
    names = [n for n in image_topic.split("/") if n and n != "compressed"]
    return "image_rect" if names and "rect" in names[-1] else "image_raw"


@dataclass
class CameraModel:
    """One camera_info applied to the image it describes (binned, ROI), with the rectification it needs.

    Attributes:
        size: ``(W, H)`` of the image: the ROI (or full size) divided by the binning.
        K: ``[3,3]`` intrinsics of the raw image at ``size``.
        P: ``[3,3]`` intrinsics of the rectified image at ``size`` (P's left 3x3; K when P is all zero).
        D: distortion coefficients (empty: none); ``distortion_model`` names their model.
        R: ``[3,3]`` rectification rotation.
        binning: ``(binning_x, binning_y)``, 1 = none; ``roi``: ``(x, y, w, h)`` in full-resolution pixels.
        rectify_raw: whether a raw image needs remapping (D non-zero, R not identity or P not K).
    """

    size: tuple[int, int]
    K: np.ndarray
    P: np.ndarray
    D: np.ndarray
    R: np.ndarray
    distortion_model: str
    binning: tuple[int, int]
    roi: tuple[int, int, int, int]
    rectify_raw: bool
    raw_problem: str | None = None  # why a raw image cannot be rectified with this camera_info (K all zero), or None
    k_from_p: bool = False  # K was all zero: K is P's intrinsics
    _maps: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _covered: np.ndarray | None = field(default=None, repr=False)
    _coverage: float | None = field(default=None, repr=False)

    @classmethod
    def from_camera_info(cls, msg: Any) -> CameraModel:
        """Read a ``sensor_msgs/CameraInfo`` (rclpy or rosbags flavour).

        Raises:
            ValueError: K or P unusable (both all zero: an uncalibrated camera; K all zero is taken as P, and a raw
                image to rectify with D or R then gets ``raw_problem``), D with NaN or inf, an R that is not a rotation, an ROI outside the sensor
                or with an offset but no size, or a distortion model other than
                ``DISTORTION_MODELS`` with non-zero coefficients (the message lists the supported ones).
        """
        K_full = _matrix(msg.k, 3, 3, "k")
        P34 = _matrix(msg.p, 3, 4, "p")
        if not np.isfinite(P34).all():  # Tx, Ty (a stereo pair's baseline) too: none of P may be NaN or inf
            raise ValueError(f"camera_info P contains NaN or inf: {P34.tolist()}")
        P_full = P34[:, :3]
        if not K_full.any() and not P_full.any():  # CameraInfo.msg: "K = 0 ... uncalibrated"
            raise ValueError("camera_info K and P are all zero: the camera is uncalibrated (sensor_msgs/CameraInfo); "
                             "calibrate it (e.g. the camera_calibration package) or publish its intrinsics")
        R = _matrix(msg.r, 3, 3, "r")
        R = check_rotation(R, "camera_info R") if R.any() else np.eye(3)  # all zero: not set (drivers that omit it)
        D = np.asarray(msg.d, np.float64).ravel()
        if not np.isfinite(D).all():  # cv2 would rectify to an all-black image without a word
            raise ValueError(f"camera_info D contains NaN or inf: {D.tolist()}")
        model = str(msg.distortion_model)
        if D.any() and model not in DISTORTION_MODELS:
            raise ValueError(f"camera_info distortion_model {model!r} with D = {D.tolist()} is not supported; "
                             f"supported: {', '.join(DISTORTION_MODELS)}")
        if not D.any():
            D = np.zeros(0)
        elif model == "equidistant" and D.size <= 4:
            D = np.pad(D, (0, 4 - D.size))  # k1..k4, as cv2.fisheye takes them
        elif model != "equidistant" and D.size in (4, 5, 8, 12, 14):
            pass  # cv2's pinhole model: k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [tx ty]]]]
        else:
            raise ValueError(f"camera_info has {D.size} {model} distortion coefficients; expected "
                             f"{'at most 4' if model == 'equidistant' else '4, 5, 8, 12 or 14'}")
        raw_problem, k_from_p = None, not K_full.any()
        if k_from_p:  # only P: the intrinsics of the rectified image (image_geometry projects with P alone)
            if D.size or not np.allclose(R, np.eye(3)):
                raw_problem = (f"camera_info K is all zero but D {D.tolist()} or R asks to rectify the raw image, "
                               "which needs K; publish K, or subscribe to the rectified image (image_kind image_rect)")
            K_full = P_full  # a raw image without distortion is its rectified image (a node trial: every frame of an
            #                  image_rect topic with only P was dropped as "non-positive focal length")
        K_full = check_intrinsics(K_full, name="camera_info K")
        P_full = check_intrinsics(P_full if P_full.any() else K_full, name="camera_info P")
        width, height = int(msg.width), int(msg.height)
        bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
        roi = msg.roi
        x0, y0, rw, rh = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
        if (x0, y0, rw, rh) == (0, 0, 0, 0):
            rw, rh = width, height  # an all-zero ROI is the full image
        elif rw <= 0 or rh <= 0:  # the definition: all zero or a window; an offset alone would shift K silently
            raise ValueError(f"camera_info roi (x {x0}, y {y0}, {rw}x{rh}) has no size; expected all zero (the full "
                             "image) or the window's width and height")
        if width and height and (x0 + rw > width or y0 + rh > height):
            raise ValueError(f"camera_info roi (x {x0}, y {y0}, {rw}x{rh}) is outside the {width}x{height} sensor")

        def for_image(M: np.ndarray) -> np.ndarray:  # full-resolution intrinsics -> the binned ROI image's
            return scale_intrinsics(crop_intrinsics(M, x0, y0), 1.0 / bx, 1.0 / by)

        K, P = for_image(K_full), for_image(P_full)
        rectify = bool(D.size) or not np.allclose(R, np.eye(3)) or not np.allclose(P, K)
        return cls(size=(rw // bx, rh // by), K=K, P=P, D=D, R=R, distortion_model=model, binning=(bx, by),
                   roi=(x0, y0, rw, rh), rectify_raw=rectify, raw_problem=raw_problem,
                   k_from_p=k_from_p)

    def rectified_coverage(self) -> float:
        """The fraction of the rectified image that samples inside the raw image (1.0 when nothing is rectified)."""
        if self._coverage is None:  # once per camera model: every frame's description asks
            covered = self.rectified_mask()
            self._coverage = 1.0 if covered is None else float(covered.mean())
        return self._coverage

    def rectified_mask(self) -> np.ndarray | None:
        """``[H,W]`` bool: the rectified pixels that sample inside the raw image (False: the black border outside it,
        where the image holds no data); None when nothing is rectified or every pixel is covered. Built once per
        camera model (the models are cached per camera_info, ``CameraModels``); read-only."""
        if not self.rectify_raw:
            return None
        if self._covered is None:
            map_x, map_y = self.rectification_maps()
            W, H = self.size
            inside = (map_x >= -0.5) & (map_x <= W - 0.5) & (map_y >= -0.5) & (map_y <= H - 0.5)
            inside.flags.writeable = False
            self._covered = inside if not inside.all() else np.zeros(0, bool)  # empty: every pixel covered
        return self._covered if self._covered.size else None

    def rectification_problem(self, image_kind: str) -> str | None:
        """Why rectifying raw images with this camera_info gives a mostly black image (a D or R that is legal but
        wrong: k1 = 1e6, a 90-degree R), or None. Such frames are still processed: the camera_info is what it is."""
        if image_kind == "image_rect" or not self.rectify_raw:
            return None
        coverage = self.rectified_coverage()
        if coverage >= MIN_RECTIFIED_COVERAGE:
            return None
        return (f"rectifying with this camera_info ({self.distortion_model} D {self.D.tolist()}, R "
                f"{'identity' if np.allclose(self.R, np.eye(3)) else 'a rotation'}) leaves {1 - coverage:.0%} of the "
                "image black (sampled outside the raw image): check its D, R and P")

    def intrinsics(self, image_kind: str) -> np.ndarray:
        """K of the image the pipeline sees: P for ``image_rect`` and for rectified raw images, else K."""
        return self.P if image_kind == "image_rect" or self.rectify_raw else self.K

    def window(self) -> str:
        """Binning and ROI in words ('' when the image is the full sensor)."""
        parts = []
        if self.binning != (1, 1):
            parts.append(f"binning {self.binning[0]}x{self.binning[1]}")
        if self.roi[:2] != (0, 0):
            parts.append(f"roi offset ({self.roi[0]}, {self.roi[1]})")
        return "; ".join(parts)

    def describe(self, image_kind: str) -> str:
        """One line for logs, diagnostics and reports: what is applied to the images."""
        parts = [self.window()] if self.window() else []
        if image_kind == "image_rect":
            parts.append("image_rect: intrinsics from P")
        elif self.rectify_raw:
            what = f"{self.distortion_model} D" if self.D.size else "R/P"
            parts.append(f"image_raw: rectified ({what}) with cv2 maps to P's intrinsics")
        else:
            parts.append("image_raw: no distortion, intrinsics from "
                         + ("P (K all zero)" if self.k_from_p else "K"))
        # the size and intrinsics too: a camera switching resolution or K mid-stream is then a new calibration, logged
        # (a node trial found a 320x240 -> 640x480 switch said nothing)
        K = self.intrinsics(image_kind)
        parts.append(f"{self.size[0]}x{self.size[1]} fx {K[0, 0]:.1f} fy {K[1, 1]:.1f} cx {K[0, 2]:.1f} cy {K[1, 2]:.1f}")
        problem = self.rectification_problem(image_kind)
        return "; ".join([*parts, *([f"WARNING: {problem}"] if problem else [])])

    def rectification_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(map_x, map_y)`` ``[H,W]`` float32: the raw pixel each rectified pixel samples (built once)."""
        if self._maps is None:
            if self.distortion_model == "equidistant":
                D = self.D if self.D.size else np.zeros(4)
                self._maps = cv2.fisheye.initUndistortRectifyMap(self.K, D, self.R, self.P, self.size, cv2.CV_32FC1)
            else:
                self._maps = cv2.initUndistortRectifyMap(self.K, self.D if self.D.size else None, self.R, self.P,
                                                         self.size, cv2.CV_32FC1)
        return self._maps

    def rectify(self, image: np.ndarray) -> np.ndarray:
        """A raw image ``[H,W,...]`` at ``size`` -> the rectified image (bilinear, black outside the raw image)."""
        map_x, map_y = self.rectification_maps()
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _matrix(values: Any, rows: int, cols: int, name: str) -> np.ndarray:
    m = np.asarray(values, np.float64).ravel()
    if m.size != rows * cols:
        raise ValueError(f"CameraInfo.{name} has {m.size} values, expected {rows * cols}")
    return m.reshape(rows, cols)


def _key(msg: Any) -> tuple:
    roi = msg.roi
    return (int(msg.width), int(msg.height), str(msg.distortion_model), tuple(np.asarray(msg.d, float).ravel()),
            tuple(np.asarray(msg.k, float).ravel()), tuple(np.asarray(msg.r, float).ravel()),
            tuple(np.asarray(msg.p, float).ravel()), int(msg.binning_x), int(msg.binning_y),
            int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))


class CameraModels:
    """Camera models (and their rectification maps) cached per distinct camera_info, newest ``size`` kept.

    A camera publishes the same camera_info with every image, so maps are built once per camera (and again
    only when the calibration or resolution changes). Thread-safe.
    """

    def __init__(self, size: int = 4) -> None:
        self._cache: OrderedDict[tuple, CameraModel] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._described: OrderedDict[str, None] = OrderedDict()  # descriptions said so far (describe)

    def describe(self, msg: Any, image_kind: str) -> tuple[str, bool, str | None]:
        """``(description, new, problem)`` of a camera_info the node (or replay) has paired: what is applied to its
        images (:meth:`CameraModel.describe`), whether that description is new, and for a new one
        :meth:`CameraModel.rectification_problem`. Each distinct calibration is new once (the newest 64 are
        remembered), so a camera alternating between two is logged, noted and counted once each, not per frame.

        Raises:
            ValueError: as :meth:`get`.
        """
        camera = self.get(msg)
        description = camera.describe(image_kind)
        with self._lock:
            new = description not in self._described
            self._described[description] = None
            self._described.move_to_end(description)
            while len(self._described) > 64:
                self._described.popitem(last=False)
        return description, new, camera.rectification_problem(image_kind) if new else None

    def get(self, msg: Any) -> CameraModel:
        """The model of ``msg`` (raises ValueError as :meth:`CameraModel.from_camera_info`)."""
        key = _key(msg)
        with self._lock:
            model = self._cache.get(key)
            if model is not None:
                self._cache.move_to_end(key)
                return model
        model = CameraModel.from_camera_info(msg)
        with self._lock:
            self._cache[key] = model
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return model
