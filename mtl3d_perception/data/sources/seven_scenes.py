"""The Microsoft 7-Scenes layout (Shotton et al., CVPR 2013), one sequence folder (``chess/seq-01``)::

    ROOT/frame-NNNNNN.color.png   colour 640x480 (``.jpg`` accepted)
    ROOT/frame-NNNNNN.depth.png   uint16 millimetres; 0 and 65535 = invalid
    ROOT/frame-NNNNNN.pose.txt    4x4 camera-to-world (KinectFusion), 4 rows of 4 numbers

Colour and depth come from the Kinect's two cameras and are not registered: the depth camera has a focal
length of 585 px, the colour camera about 525 px, both about the image centre. Depth is registered into the
colour camera (``geometry.reproject_depth``: identity extrinsic, so each colour pixel looks up the depth pixel its
ray meets; the two optical centres are taken as one, as the dataset's users do), and frames carry the colour K,
which the cost volume matches with. The principal point is the image centre, (W - 1) / 2 and (H - 1) / 2 in the
pixel-centre convention (DESIGN §4). The poses are orthonormal only to ~1e-4 (printed with limited
precision) and are projected onto SO(3) (``geometry.to_rigid``). A pose file of NaN or infinite values (tracking
lost, as ScanNet's ``-inf`` poses) leaves its frame out, counted in ``invalid_poses`` (a trial: one such file refused
the whole sequence).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mtl3d_perception.data.sequence import (
    SequenceError,
    SequenceFrame,
    check_folder,
    parse_numbers,
    read_rgb,
    read_uint16_depth,
    text_rows,
)
from mtl3d_perception.geometry import depth_from_mm, reproject_depth, to_rigid

DEPTH_FOCAL = 585.0  # px at 640x480
COLOR_FOCAL = 525.0
NATIVE_WIDTH = 640
INVALID_MM = 65535
_NAME = re.compile(r"^frame-(\d+)\.(color\.(?:png|jpg)|depth\.png|pose\.txt)$")


def centred_K(focal_at_640: float, W: int, H: int) -> np.ndarray:
    """K with focal ``focal_at_640 * W / 640`` and the principal point at the image centre."""
    f = focal_at_640 * W / NATIVE_WIDTH
    return np.array([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]])


def read_pose(path: Path) -> np.ndarray | None:
    """``frame-NNNNNN.pose.txt`` -> ``[4,4]`` T_world_cam projected onto SO(3); None for a pose of NaN or infinite
    values (tracking lost)."""
    rows = [parse_numbers(path, line_no, text, finite=False) for line_no, text in text_rows(path)]
    if len(rows) != 4 or any(len(r) != 4 for r in rows):
        raise SequenceError(f"{path}: expected 4 rows of 4 numbers, got rows of {[len(r) for r in rows]} numbers")
    if not np.isfinite(rows).all():
        return None
    try:
        return to_rigid(np.array(rows), name=f"{path}: pose")[0]
    except ValueError as exc:
        raise SequenceError(str(exc)) from None


def register_depth(depth_m: np.ndarray, rgb_hw: tuple[int, int]) -> np.ndarray:
    """The depth camera's image ``[h,w]`` (metres, NaN invalid) as z-depth in the colour camera ``rgb_hw``.

    The cameras share their centre: each colour pixel takes the depth pixel its ray meets (``reproject_depth``);
    NaN where that is outside the depth image or invalid.
    """
    h, w = depth_m.shape
    H, W = rgb_hw
    return reproject_depth(depth_m, centred_K(DEPTH_FOCAL, w, h), np.eye(4), centred_K(COLOR_FOCAL, W, H), (H, W))


class SevenScenesSequence:
    """One 7-Scenes sequence folder (see the module docstring).

    Raises:
        SequenceError: a scene folder given instead of a sequence, unexpected or missing files, malformed poses
            (the message names the file and line), no frame with a valid pose.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = check_folder(Path(root), "a 7-Scenes sequence folder (seq-NN) of frame-NNNNNN.color.png, "
                                             ".depth.png, .pose.txt")
        found: dict[int, dict[str, Path]] = {}
        for p in self.root.iterdir():
            if p.name.startswith(".") or p.name in ("Thumbs.db",):
                continue
            m = _NAME.match(p.name)
            if m is None:
                if p.is_dir() and p.name.startswith("seq-"):
                    raise SequenceError(f"{self.root}: a 7-Scenes scene; give one of its sequences ({p.name}, ...)")
                raise SequenceError(f"{p}: unexpected file (expected frame-NNNNNN.color.png, .depth.png, .pose.txt)")
            kind = m.group(2).split(".")[0]
            found.setdefault(int(m.group(1)), {})[kind] = p
        if not found:
            raise SequenceError(f"{self.root}: no frame-NNNNNN.color.png files")
        self.color_paths, self.depth_paths, poses, numbers = [], [], [], []
        self.invalid_poses = 0
        for n in sorted(found):
            parts = found[n]
            for kind, suffix in (("color", "color.png"), ("depth", "depth.png"), ("pose", "pose.txt")):
                if kind not in parts:
                    raise SequenceError(f"{self.root / f'frame-{n:06d}.{suffix}'}: missing "
                                        f"(frame {n:06d} has {', '.join(sorted(parts))})")
            if (T := read_pose(parts["pose"])) is None:
                self.invalid_poses += 1
                continue
            self.color_paths.append(parts["color"])
            self.depth_paths.append(parts["depth"])
            poses.append(T)
            numbers.append(n)
        if not poses:
            raise SequenceError(f"{self.root}: every pose is NaN or infinite (tracking lost)")
        self.poses = np.stack(poses)
        self.stamps = np.array(numbers, np.float64) / 30.0  # Kinect at 30 Hz

    def __len__(self) -> int:
        return len(self.color_paths)

    def frame(self, i: int, *, depth: bool = True, semantic: bool = True, normals: bool = True) -> SequenceFrame:
        """Frame ``i``: colour, depth registered into the colour camera, the colour K."""
        rgb = read_rgb(self.color_paths[i])
        H, W = rgb.shape[:2]
        d = None
        if depth:
            raw = read_uint16_depth(self.depth_paths[i], "millimetres")
            d = register_depth(depth_from_mm(np.where(raw == INVALID_MM, 0, raw)), (H, W))
        return SequenceFrame(index=i, stamp=float(self.stamps[i]), rgb=rgb, depth=d, K=centred_K(COLOR_FOCAL, W, H),
                             T_world_cam=self.poses[i].copy(), name=self.color_paths[i].name.split(".")[0])
