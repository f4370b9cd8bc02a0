"""The unit the runtime works on: one camera frame, with its pose once TF has supplied it (DESIGN §2)."""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from mtl3d_perception.geometry import check_intrinsics, check_rigid, resize_intrinsics

# Time went back (a looping bag, a restarted simulation) when a stamp is this much older than the newest one:
# tf2_ros's clock-jump threshold. Every layer detects it with :class:`TimeJumpDetector` and clears only its own
# state: the synchroniser its queues, the TF buffer its dynamic transforms, the driver its waiting frames, the
# pipeline its history and feature cache, replay's evaluation its temporal reference.
JUMP_BACK_S = 1.0

# The largest image (width * height) the runtime accepts, raw or compressed, by default: 4096 x 4096 = 16.8 MP covers
# 4K UHD (8.3 MP) and 12-16 MP machine-vision sensors with room to spare, while a decoded RGB frame stays <= 50 MB and
# the camera-resolution outputs (``output_resolution=camera``: class scores, normals, depth) stay near 1.5 GB.
# A parameter where it matters (the node's ``max_image_pixels``, replay's ``--max-image-pixels``).
MAX_IMAGE_PIXELS = 4096 * 4096


class ImageTooLarge(ValueError):
    """An image whose (declared) size is above the pixel limit; raised before anything of that size is allocated."""


def check_image_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS, what: str = "image") -> None:
    """Raise :class:`ImageTooLarge` when ``width * height`` exceeds ``max_pixels`` (see ``MAX_IMAGE_PIXELS``)."""
    if int(width) * int(height) > max_pixels:
        msg = (f"{what} is {width}x{height} = {int(width) * int(height)} pixels "
               f"({int(width) * int(height) / 1e6:.1f} MP), above max_image_pixels = {max_pixels} "
               f"({max_pixels / 1e6:.1f} MP); refused before decoding")
        raise ImageTooLarge(msg)


def image_interpolation(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> int:
    """The OpenCV interpolation for resizing a colour image from ``src_wh`` to ``dst_wh`` (W, H): area averaging when
    both sides shrink (no aliasing), bilinear otherwise."""
    return cv2.INTER_AREA if dst_wh[0] < src_wh[0] and dst_wh[1] < src_wh[1] else cv2.INTER_LINEAR


def resize_to_network(rgb: np.ndarray, K: np.ndarray, wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The network's view of a frame: the whole image ``rgb`` [H, W, 3] resized to ``wh`` = (W, H) and ``K`` scaled per
    axis (:func:`~mtl3d_perception.geometry.resize_intrinsics`); an image of another aspect ratio is stretched, not
    cropped, so every output covers the camera's whole field of view (models/README.md, session 18: against cropping,
    stretching a 3:2 or 16:9 image moves the shipped model's abs rel by -1 to +2 %). The one rule of the node, replay
    and ``mtl3d eval``.

    Returns:
        (rgb [h, w, 3], K [3, 3] float64); ``rgb`` is the input itself when the size already matches.
    """
    H, W = rgb.shape[:2]
    K_net = resize_intrinsics(np.asarray(K, np.float64), (W, H), wh)
    if (W, H) == tuple(wh):
        return rgb, K_net
    return cv2.resize(rgb, tuple(wh), interpolation=image_interpolation((W, H), wh)), K_net


class TimeJumpDetector:
    """The one time-jump rule: a stamp older than the newest seen by more than ``jump_back_s`` is a jump back.

    Smaller steps back (out-of-order messages) are not jumps: they leave the newest stamp as it is. After a jump
    the newest stamp is the jumped-to one, so the next pass through a looping bag is tracked afresh. A zero stamp is
    ROS's "not stamped" (a driver's glitch: the frame is a header problem, ``msgs.messages.HEADER_PROBLEMS``), not
    time: it is neither a jump nor the newest stamp, so one such frame does not clear the history and caches.

    A lone stamp far ahead is not time either: when the newest stamp leapt ahead by more than ``jump_back_s`` and
    the very next one goes back to where the stream was before the leap (no earlier than ``jump_back_s`` before it;
    later is fine, as the caller may see only some frames), the leap was one bad stamp (a driver stamping a frame in 2037), not a jump: :meth:`check` returns False, sets ``outlier_ns`` to
    the bad stamp for that call (the caller drops what it kept of that frame) and the newest stamp goes back.
    """

    def __init__(self, jump_back_s: float = JUMP_BACK_S) -> None:
        if not jump_back_s >= 0:
            raise ValueError(f"jump_back_s must be >= 0, got {jump_back_s}")
        self.jump_back_ns = int(jump_back_s * 1e9)
        self.newest_ns: int | None = None
        self.jumps = 0
        self.outliers = 0
        self.outlier_ns: int | None = None  # the lone stamp ahead the last check found, else None
        self._before_leap_ns: int | None = None  # the newest stamp before the newest leapt ahead (unconfirmed)

    def check(self, stamp_ns: int) -> bool:
        """Note ``stamp_ns``; True when it jumped back (then ``newest_ns`` restarts from it)."""
        stamp_ns = int(stamp_ns)
        self.outlier_ns = None
        if stamp_ns == 0:
            return False
        if self.newest_ns is None:
            self.newest_ns = stamp_ns
            return False
        if stamp_ns < self.newest_ns - self.jump_back_ns:
            before, self._before_leap_ns = self._before_leap_ns, None
            if before is not None and stamp_ns >= before - self.jump_back_ns:  # the leap was one bad stamp
                self.outlier_ns, self.newest_ns = self.newest_ns, max(stamp_ns, before)
                self.outliers += 1
                return False
            self.newest_ns = stamp_ns
            self.jumps += 1
            return True
        # a leap ahead stays unconfirmed until the next stamp: near it (time moved on) or back before it (an outlier)
        self._before_leap_ns = self.newest_ns if stamp_ns > self.newest_ns + self.jump_back_ns else None
        self.newest_ns = max(self.newest_ns, stamp_ns)
        return False

    def reset(self) -> None:
        self.newest_ns = self._before_leap_ns = self.outlier_ns = None

    def outlier_message(self, stamp_ns: int) -> str:
        """What the last :meth:`check` found when it set ``outlier_ns``, for the problem a caller reports.

        Raises:
            ValueError: the last check found no outlier (``outlier_ns`` is None).
        """
        if self.outlier_ns is None:
            raise ValueError("the last check found no stamp outlier (outlier_ns is None)")
        return (f"a frame stamped {self.outlier_ns * 1e-9:.3f} s leapt {(self.outlier_ns - stamp_ns) * 1e-9:.3f} s ahead "
                f"of the frames before and after it (now {stamp_ns * 1e-9:.3f} s): a bad stamp, not a time jump; "
                "what was kept of it is dropped, the history is kept")


def bare_frame_id(frame_id: str) -> str:
    """``frame_id`` without a leading '/', as tf2 stores transforms (``BufferCore::setTransform`` strips it; lookups
    refuse it); '' and '/' stay as they are (an empty frame_id is a header problem of its own)."""
    return frame_id.lstrip("/") or frame_id


def stamp_ns_value(stamp_ns: object) -> int:
    """``stamp_ns`` as an int, or ValueError: an integer, or a float with an integral value (``1.7e18``).

    A fractional value is refused, naming the likely mistake: seconds where nanoseconds belong (a Python-API trial:
    float seconds as ``stamp_ns`` ran every frame as a ``pose_jump`` with a hint about metres).
    """
    if not isinstance(stamp_ns, bool | float | np.floating):
        with contextlib.suppress(TypeError):  # int, numpy and 0-d integer arrays or tensors (their __index__)
            return operator.index(stamp_ns)
    if isinstance(stamp_ns, float | np.floating) and np.isfinite(stamp_ns) and float(stamp_ns).is_integer():
        return int(stamp_ns)
    msg = (f"stamp_ns must be integer nanoseconds, got {type(stamp_ns).__name__} {stamp_ns!r}"
           + (" (seconds? pass int(t * 1e9))" if isinstance(stamp_ns, float | np.floating) else ""))
    raise ValueError(msg)


def _as_array(value: object, name: str, what: str, dtype: type | None = None) -> np.ndarray:
    """``value`` as a numpy array (PIL images, CPU torch tensors, nested lists), or ValueError naming ``name``."""
    if isinstance(value, np.ndarray) and (dtype is None or value.dtype == dtype):
        return value
    try:
        return np.asarray(value, dtype)
    except (TypeError, ValueError, RuntimeError) as exc:  # a CUDA tensor, ragged lists, strings
        msg = (f"frame {name} must be {what} as a numpy array (or convertible: a PIL image, a CPU torch tensor), got "
               f"{type(value).__name__}: {exc}")
        raise ValueError(msg) from None


@dataclass
class Frame:
    """One synchronised camera frame.

    Attributes:
        stamp_ns: the image's header stamp in integer nanoseconds (kept exact so outputs carry it unchanged).
        frame_id: the camera's optical frame (the image header's ``frame_id``).
        rgb: ``[H,W,3]`` uint8 RGB.
        K: ``[3,3]`` float64 intrinsics for ``rgb``'s size.
        T_world_cam: the pose ``[4,4]`` float64 (DESIGN §4), or None until TF supplies it (or when it never does).
        header_problem: why the header allows no pose lookup (``empty_frame_id``, ``zero_stamp``, ``invalid_stamp``:
            ``msgs.messages.HEADER_PROBLEMS``), or None; such a frame runs single-view with this as its pair reason.
        header_note: a header value the frame uses only after a fix (a ``frame_id`` with a leading '/', used
            without it: ``msgs.messages.frame_from_messages``), worded for the warning; the frame runs as usual.
        image_mask: ``[H,W]`` bool, the pixels that hold image data (False: the black border a rectified raw image
            gets where it samples outside the sensor, ``CameraModel.rectified_mask``), or None: every pixel. Outputs
            there are invalid (depth and normals NaN, confidence 0, no cloud points: REP 118).
    """

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray | None = None
    header_problem: str | None = None
    header_note: str | None = None
    image_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        # array-likes as numpy (a Python-API trial: a PIL image, a torch tensor or a list K failed deep inside, in
        # cv2.resize or K.tobytes); what they hold is checked by validate()
        self.stamp_ns = stamp_ns_value(self.stamp_ns)
        if (mode := getattr(self.rgb, "mode", "RGB")) != "RGB" and hasattr(self.rgb, "convert"):  # a PIL image
            raise ValueError(f"frame rgb is a PIL image in mode {mode!r}; pass image.convert('RGB')")
        self.rgb = _as_array(self.rgb, "rgb", "an [H,W,3] uint8 RGB image")
        self.K = _as_array(self.K, "K", "3x3 intrinsics", np.float64)
        if self.image_mask is not None:
            self.image_mask = _as_array(self.image_mask, "image_mask", "an [H,W] bool mask")
        if self.T_world_cam is not None:
            self.T_world_cam = _as_array(self.T_world_cam, "T_world_cam", "a 4x4 pose", np.float64)

    @property
    def stamp(self) -> float:
        """The stamp in seconds (float; use ``stamp_ns`` where exactness matters)."""
        return self.stamp_ns * 1e-9

    @property
    def size(self) -> tuple[int, int]:
        """Image size ``(W, H)``."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @property
    def camera(self) -> str:
        """The camera the frame comes from, for the pipeline's per-camera state and messages: ``frame_id`` without
        surrounding blanks or a leading '/' (a header glitch is not a second camera; frames made from messages lose
        the slash already, ``msgs.messages.SLASHED_FRAME_ID``, as tf2 refuses it in lookups)."""
        return bare_frame_id(self.frame_id.strip())

    def with_pose(self, T_world_cam: np.ndarray | None) -> Frame:
        """A copy carrying the pose ``T_world_cam`` (the image is shared, not copied)."""
        return replace(self, T_world_cam=None if T_world_cam is None else np.asarray(T_world_cam, np.float64))

    def validate(self) -> None:
        """Raise ValueError naming what is wrong with the image, K or pose (DESIGN §8: bad input says why).

        A pose whose rotation is orthonormal only to within 1e-2 passes (``geometry.to_rigid``); the pipeline
        uses its projection onto SO(3).
        """
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 2:
            hint = (" (RGBA: drop the alpha channel, rgb[..., :3]; a PIL image: .convert('RGB'))"
                    if rgb.ndim == 3 and rgb.shape[2] == 4 else
                    " (channels first? rgb.transpose(1, 2, 0))" if rgb.ndim == 3 and rgb.shape[0] == 3 else
                    " (a grey image: repeat it, np.repeat(rgb[..., None], 3, axis=2))" if rgb.ndim == 2 else
                    " (values in [0, 1]? pass (rgb * 255).astype(np.uint8))" if rgb.dtype.kind == "f" and rgb.size
                    and float(np.nanmax(rgb)) <= 1.0 else
                    " (0-255 values? pass rgb.astype(np.uint8))" if rgb.dtype.kind == "f" else
                    " (0-255 integers? convert with np.asarray(rgb, np.uint8))" if rgb.dtype.kind in "iu" else "")
            raise ValueError(f"frame rgb must be [H,W,3] uint8 with H, W >= 2, got {rgb.dtype} {rgb.shape}{hint}")
        check_intrinsics(self.K, name=f"K of frame {self.frame_id!r} at {self.stamp_ns} ns", size=self.size)
        if self.image_mask is not None and (self.image_mask.shape != rgb.shape[:2] or self.image_mask.dtype != bool):
            raise ValueError(f"frame image_mask must be [H,W] bool for the {self.size[0]}x{self.size[1]} image, got "
                             f"{self.image_mask.dtype} {self.image_mask.shape}")
        if self.T_world_cam is not None:
            check_rigid(self.T_world_cam, name=f"pose of frame {self.frame_id!r} at {self.stamp_ns} ns")
