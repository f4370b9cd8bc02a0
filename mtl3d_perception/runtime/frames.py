"""The unit the runtime works on: one camera frame, with its pose once TF has supplied it (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mtl3d_perception.geometry import check_intrinsics, check_rigid

# Time went back (a looping bag, a restarted simulation) when a stamp is this much older than the newest one:
# tf2_ros's clock-jump threshold, used by the node, the synchroniser and the compat TF buffer alike.
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
        msg = (f"{what} is {width}x{height} = {int(width) * int(height) / 1e6:.1f} MP, above the limit of "
               f"{max_pixels / 1e6:.1f} MP (max_image_pixels = {max_pixels}); refused before decoding")
        raise ImageTooLarge(msg)


@dataclass
class Frame:
    """One synchronised camera frame.

    Attributes:
        stamp_ns: the image's header stamp in integer nanoseconds (kept exact so outputs carry it unchanged).
        frame_id: the camera's optical frame (the image header's ``frame_id``).
        rgb: ``[H,W,3]`` uint8 RGB.
        K: ``[3,3]`` float64 intrinsics for ``rgb``'s size.
        pose: ``T_world_cam`` ``[4,4]`` float64, or None until TF supplies it (or when it never does).
        header_problem: why the header allows no pose lookup (``empty_frame_id``, ``zero_stamp``), or None; such a
            frame runs single-view with this as its pair reason.
    """

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    K: np.ndarray
    pose: np.ndarray | None = None
    header_problem: str | None = None

    @property
    def stamp(self) -> float:
        """The stamp in seconds (float; use ``stamp_ns`` where exactness matters)."""
        return self.stamp_ns * 1e-9

    @property
    def size(self) -> tuple[int, int]:
        """Image size ``(W, H)``."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def with_pose(self, pose: np.ndarray | None) -> Frame:
        """A copy carrying ``pose`` (the image is shared, not copied)."""
        return replace(self, pose=None if pose is None else np.asarray(pose, np.float64))

    def validate(self) -> None:
        """Raise ValueError naming what is wrong with the image, K or pose (DESIGN §8: bad input says why).

        A pose whose rotation is orthonormal only to within 1e-2 passes (``geometry.to_rigid``); the pipeline
        uses its projection onto SO(3).
        """
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 2:
            raise ValueError(f"frame rgb must be [H,W,3] uint8 with H, W >= 2, got {rgb.dtype} {rgb.shape}")
        check_intrinsics(self.K, name=f"K of frame {self.frame_id!r} at {self.stamp_ns} ns", size=self.size)
        if self.pose is not None:
            check_rigid(self.pose, name=f"pose of frame {self.frame_id!r} at {self.stamp_ns} ns")
