"""The TUM RGB-D layout (Sturm et al., IROS 2012; vision.in.tum.de/data/datasets/rgbd-dataset/file_formats).

::

    ROOT/rgb.txt           "timestamp filename" per line (rgb/<t>.png), '#' comments
    ROOT/depth.txt         "timestamp filename" per line (depth/<t>.png: uint16, 5000 = 1 m, 0 = no data)
    ROOT/groundtruth.txt   "timestamp tx ty tz qx qy qz qw": the colour camera's optical centre in the world

Colour and depth are pre-registered by the OpenNI driver (pixels correspond 1:1), so depth needs no
reprojection. Each colour image is associated with the depth image nearest in time within ``max_dt``
(0.02 s, the default of TUM's ``associate.py``), greedily by smallest difference, each depth image used
once; colour images without one are left out. The pose at a colour stamp is interpolated
(``geometry.interpolate_pose``) between the two ground-truth rows around it when they are at most
``max_pose_gap`` apart; colour images outside the ground truth are left out too (``dropped`` counts both).

Intrinsics: the published calibration of the camera (``fr1``, ``fr2``, ``fr3``; read from a
``freiburgN`` in the folder name unless given), else the published default (525, 319.5, 239.5) with
``camera="default"``, or a given ``K``. fr1 and fr2 images are not undistorted in the files; their small lens
distortion is ignored here, as most users of the layout do.
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
from mtl3d_perception.geometry import (
    check_intrinsics,
    check_unit_quaternion,
    interpolate_pose,
    is_resized_copy,
    pose_from_quat_trans,
    resize_intrinsics,
)

NATIVE_SIZE = (640, 480)  # (W, H) the published intrinsics belong to
DEPTH_FACTOR = 5000.0  # depth PNG value per metre
MAX_DT_S = 0.02  # associate.py's default max_difference
MAX_POSE_GAP_S = 0.1  # interpolate ground truth only between rows at most this far apart

# fx, fy, cx, cy of the colour cameras at 640x480 (TUM's intrinsic calibration page; the same values as
# ORB-SLAM2's TUM1/2/3.yaml); "default" is the page's "ROS default" used for the depth->cloud conversion.
CAMERAS: dict[str, tuple[float, float, float, float]] = {
    "fr1": (517.306408, 516.469215, 318.643040, 255.313989),
    "fr2": (520.908620, 521.007327, 325.141442, 249.701764),
    "fr3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}


def camera_K(camera: str) -> np.ndarray:
    """The published K of a TUM camera name (``fr1``, ``fr2``, ``fr3``, ``default``)."""
    if camera not in CAMERAS:
        raise ValueError(f"unknown TUM camera {camera!r}; expected one of {', '.join(CAMERAS)}")
    fx, fy, cx, cy = CAMERAS[camera]
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_file_list(path: Path) -> list[tuple[float, str, int]]:
    """``rgb.txt`` / ``depth.txt`` -> [(stamp s, relative file name, line number)], in file order."""
    rows = []
    for line_no, text in text_rows(path):
        parts = text.split()
        if len(parts) != 2:
            raise SequenceError(f"{path} line {line_no}: expected 'timestamp filename', got {text.strip()!r}")
        stamp = parse_numbers(path, line_no, parts[0])[0]
        rows.append((stamp, parts[1], line_no))
    if not rows:
        raise SequenceError(f"{path}: no entries")
    return rows


def read_groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``groundtruth.txt`` -> (stamps ``[M]`` s ascending, T_world_cam ``[M,4,4]``)."""
    stamps, poses = [], []
    for line_no, text in text_rows(path):
        v = parse_numbers(path, line_no, text)
        if len(v) != 8:
            raise SequenceError(f"{path} line {line_no}: expected 'timestamp tx ty tz qx qy qz qw' (8 numbers), "
                                f"got {len(v)}")
        try:
            q = check_unit_quaternion(v[4:8], name=f"{path} line {line_no}: quaternion")
        except ValueError as exc:
            raise SequenceError(str(exc)) from None
        if stamps and v[0] <= stamps[-1]:
            raise SequenceError(f"{path} line {line_no}: time goes backwards ({v[0]!r} after {stamps[-1]!r})")
        stamps.append(v[0])
        poses.append(pose_from_quat_trans(q, v[1:4]))
    if not stamps:
        raise SequenceError(f"{path}: no poses")
    return np.array(stamps), np.stack(poses)


def associate(first: np.ndarray, second: np.ndarray, max_dt: float) -> dict[int, int]:
    """Index pairs ``{i: j}`` with ``|first[i] - second[j]| < max_dt``, greedily by smallest difference, each
    used once (TUM's ``associate.py``)."""
    diff = np.abs(first[:, None] - second[None, :])
    cand = np.argwhere(diff < max_dt)
    order = np.argsort(diff[cand[:, 0], cand[:, 1]], kind="stable")
    out: dict[int, int] = {}
    used: set[int] = set()
    for i, j in cand[order]:
        if int(i) not in out and int(j) not in used:
            out[int(i)] = int(j)
            used.add(int(j))
    return out


class TumSequence:
    """A TUM RGB-D sequence folder (see the module docstring).

    Args:
        root: the folder holding ``rgb.txt``, ``depth.txt``, ``groundtruth.txt``.
        camera: ``fr1`` | ``fr2`` | ``fr3`` | ``default``; "" reads ``freiburgN`` from the folder name.
        K: a 3x3 colour K for the images' size instead of the published one (which is for 640x480 and is
            scaled to the images' size, ``geometry.resize_intrinsics``, for 4:3 images only).
        max_dt: colour-depth association tolerance (s).
        max_pose_gap: the widest ground-truth gap interpolated over (s).

    Raises:
        SequenceError: a missing or malformed file (the message names it and the line), no associated frames, a
            published K that cannot fit the images (the first one is read here to check: :meth:`published_K`).
    """

    def __init__(self, root: str | Path, *, camera: str = "", K: np.ndarray | None = None,
                 max_dt: float = MAX_DT_S, max_pose_gap: float = MAX_POSE_GAP_S) -> None:
        self.root = check_folder(Path(root), "a TUM RGB-D sequence folder with rgb.txt, depth.txt, groundtruth.txt")
        self.K_given = K is not None
        if K is not None:
            self.K = check_intrinsics(K, name=f"K given for {self.root}")
        else:
            if not camera:
                m = re.search(r"freiburg([123])", self.root.resolve().name)
                if m is None:
                    raise SequenceError(f"{self.root}: cannot tell the TUM camera from the folder name (no "
                                        "'freiburg1/2/3'); give camera: fr1|fr2|fr3|default or K")
                camera = f"fr{m.group(1)}"
            self.K = camera_K(camera)
        self.camera = camera if K is None else ""  # the published calibration read, "" with a given K
        rgb = read_file_list(self.root / "rgb.txt")
        depth = read_file_list(self.root / "depth.txt")
        gt_stamps, gt_poses = read_groundtruth(self.root / "groundtruth.txt")
        pairs = associate(np.array([r[0] for r in rgb]), np.array([d[0] for d in depth]), max_dt)
        self.rgb_paths: list[Path] = []
        self.depth_paths: list[Path] = []
        stamps, poses = [], []
        self.dropped = 0
        for i, (t, name, _line) in enumerate(rgb):
            k = int(np.searchsorted(gt_stamps, t))
            exact = k < len(gt_stamps) and gt_stamps[k] == t
            inside = exact or (0 < k < len(gt_stamps) and gt_stamps[k] - gt_stamps[k - 1] <= max_pose_gap)
            if i not in pairs or not inside:
                self.dropped += 1
                continue
            if exact:
                T = gt_poses[k]
            else:
                T = interpolate_pose(gt_poses[k - 1], gt_poses[k], (t - gt_stamps[k - 1]) / (gt_stamps[k] - gt_stamps[k - 1]))
            self.rgb_paths.append(self.root / name)
            self.depth_paths.append(self.root / depth[pairs[i]][1])
            stamps.append(t)
            poses.append(T)
        if not poses:
            raise SequenceError(f"{self.root / 'rgb.txt'}: none of {len(rgb)} colour images has a depth image within "
                                f"{max_dt} s and a ground-truth pose")
        self.stamps = np.array(stamps)
        self.poses = np.stack(poses)
        if not self.K_given:  # a published K that cannot fit the images fails here, once, not at every frame read
            first = read_rgb(self.rgb_paths[0])
            self.published_K((first.shape[1], first.shape[0]), self.rgb_paths[0])

    def __len__(self) -> int:
        return len(self.rgb_paths)

    def published_K(self, wh: tuple[int, int], path: Path) -> np.ndarray:
        """The published 640x480 K scaled to an image of ``wh`` = (W, H) pixels (a resized copy of the 4:3 frame).

        Raises:
            SequenceError: the image is not 4:3 (cropped or another camera): scaling would stretch K
                anisotropically, a wrong camera; the message names the K, the image size, the 4:3 sizes it fits and
                asks for the images' own K.
        """
        W, H = wh
        if not is_resized_copy(wh, NATIVE_SIZE):
            fx, fy, cx, cy = CAMERAS[self.camera]
            fits = f"{round(H * NATIVE_SIZE[0] / NATIVE_SIZE[1])}x{H} or {W}x{round(W * NATIVE_SIZE[1] / NATIVE_SIZE[0])}"
            raise SequenceError(f"{path}: {W}x{H} is not a resized copy of the {NATIVE_SIZE[0]}x{NATIVE_SIZE[1]} images "
                                f"the published {self.camera} K (fx {fx:g}, fy {fy:g}, cx {cx:g}, cy {cy:g} at "
                                f"{NATIVE_SIZE[0]}x{NATIVE_SIZE[1]}) belongs to (aspect {W / H:.3f}, expected "
                                f"{NATIVE_SIZE[0] / NATIVE_SIZE[1]:.3f}: it fits 4:3 images such as {fits}); give these "
                                "images' own K (eval: --intrinsics FX,FY,CX,CY)")
        return resize_intrinsics(self.K, NATIVE_SIZE, (W, H))

    def frame(self, i: int, *, depth: bool = True, semantic: bool = True, normals: bool = True) -> SequenceFrame:
        """Frame ``i``: RGB, depth in metres (NaN where 0), the colour K and the interpolated pose."""
        rgb = read_rgb(self.rgb_paths[i])
        d = None
        if depth:
            raw = read_uint16_depth(self.depth_paths[i], "5000 per metre")
            if raw.shape != rgb.shape[:2]:
                raise SequenceError(f"{self.depth_paths[i]}: size {raw.shape[1]}x{raw.shape[0]} differs from "
                                    f"{self.rgb_paths[i].name} ({rgb.shape[1]}x{rgb.shape[0]})")
            d = np.where(raw > 0, raw / DEPTH_FACTOR, np.nan).astype(np.float32)
        K = self.K.copy() if self.K_given else self.published_K((rgb.shape[1], rgb.shape[0]), self.rgb_paths[i])
        return SequenceFrame(index=i, stamp=float(self.stamps[i]), rgb=rgb, depth=d, K=K,
                             T_world_cam=self.poses[i].copy(), name=self.rgb_paths[i].stem)
