"""The ScanNet export layout (Dai et al., CVPR 2017; what ScanNet's ``SensReader`` writes from a ``.sens`` file).

::

    ROOT/color/N.jpg                        colour (1296x968 in ScanNet)
    ROOT/depth/N.png                        uint16 millimetres, 0 = invalid (640x480 in ScanNet)
    ROOT/pose/N.txt                         4x4 camera-to-world T_world_cam, 4 rows of 4 numbers
    ROOT/intrinsic/intrinsic_color.txt      4x4 (K in the top-left 3x3) of the colour camera
    ROOT/intrinsic/intrinsic_depth.txt      4x4 of the depth camera

``N`` runs 0, 1, 2, ... (sorted numerically). ``intrinsic_color.txt`` is the colour camera's K at the sensor's
1296x968 (:data:`SENSOR_COLOR_SIZE`) even when the export resized the colour images (``SensReader``'s
``export_color_images(image_size=...)``; ``export_intrinsics`` writes the sensor's K unchanged): a K whose principal
point lies outside the central half of the images, but inside that of a 1296x968 frame of their aspect, is scaled to
their size (``geometry.resize_intrinsics``; ``color_K_from`` says so); one that fits neither is refused (a trial:
640x480 exports read with the 1296x968 K, principal point outside the image, scored abs rel 0.42 against 0.14,
without a word). ScanNet marks frames whose tracking failed with ``-inf`` poses;
they are left out (``invalid_poses`` counts them), as ScanNet users do. Depth is registered to colour as bag
depth is (``geometry.is_registered``): when ``intrinsic_depth.txt`` is the colour K scaled to the depth's size
(within ``geometry.REGISTERED_K_TOLERANCE_PX``; ScanNet's two cameras are calibrated so), the depth image is
resized to the colour image's size (nearest neighbour, so no depth is invented across edges), as ScanNet users
do; a depth K of its own (another field of view or centre) is a view of its own, reprojected into the colour
camera with its K (``geometry.reproject_depth``; the two cameras share their optical centre, as
``extrinsic_*.txt`` of the export say).
"""

from __future__ import annotations

from pathlib import Path

import cv2
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
    depth_from_mm,
    is_registered,
    is_resized_copy,
    reproject_depth,
    resize_intrinsics,
    to_rigid,
)

COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")
SENSOR_COLOR_SIZE = (1296, 968)  # (W, H) of ScanNet's colour camera, which intrinsic_color.txt describes


def fits_image(K: np.ndarray, wh: tuple[int, int]) -> bool:
    """Whether K's principal point lies in the central half of a ``wh`` = (W, H) image (pixel centres at integers,
    DESIGN §4): any real camera's does; a K for another image size's does not."""
    W, H = wh
    return abs(K[0, 2] + 0.5 - W / 2) <= W / 4 and abs(K[1, 2] + 0.5 - H / 2) <= H / 4


def _matrix(path: Path, rows: int) -> np.ndarray:
    """A text matrix of ``rows`` rows of 4 numbers (NaN and inf allowed: a lost pose), errors naming the file and
    line."""
    out = []
    for line_no, text in text_rows(path):
        try:
            values = [float(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise SequenceError(f"{path} line {line_no}: {text.strip()!r} is not numbers") from None
        if len(values) != 4:
            raise SequenceError(f"{path} line {line_no}: expected 4 numbers, got {text.strip()!r}")
        out.append(values)
    if len(out) != rows:
        raise SequenceError(f"{path}: expected {rows} rows of 4 numbers, got {len(out)}")
    return np.array(out)


def read_intrinsic(path: Path) -> np.ndarray:
    """``intrinsic_*.txt`` (4x4, or 3 rows) -> 3x3 K."""
    rows = [parse_numbers(path, line_no, text) for line_no, text in text_rows(path)]
    if len(rows) not in (3, 4) or any(len(r) != len(rows[0]) or len(r) not in (3, 4) for r in rows):
        raise SequenceError(f"{path}: expected a 4x4 (or 3x3) intrinsic matrix, got rows of "
                            f"{[len(r) for r in rows]} numbers")
    try:
        return check_intrinsics(np.array(rows)[:3, :3], name=str(path))
    except ValueError as exc:
        raise SequenceError(str(exc)) from None


class ScanNetSequence:
    """A ScanNet export folder (see the module docstring).

    Raises:
        SequenceError: missing folders or files, a colour image without depth or pose, malformed matrices
            (the message names the file and line), a colour K that fits neither the images nor a 1296x968 frame
            they could be resized from (the first image is read here to check: :meth:`color_K`).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = check_folder(Path(root), "a ScanNet export folder with color/, depth/, pose/, intrinsic/")
        for sub in ("color", "depth", "pose", "intrinsic"):
            if not (self.root / sub).is_dir():
                raise SequenceError(f"{self.root / sub}: missing (a ScanNet export has color/, depth/, pose/, intrinsic/)")
        self.K = read_intrinsic(self.root / "intrinsic" / "intrinsic_color.txt")
        self.K_depth = read_intrinsic(self.root / "intrinsic" / "intrinsic_depth.txt")
        colors = {}
        for p in (self.root / "color").iterdir():
            if p.name.startswith("."):
                continue
            if p.suffix.lower() not in COLOR_SUFFIXES or not p.stem.isdigit():
                raise SequenceError(f"{p}: unexpected file in color/ (expected N.jpg with N a frame number)")
            colors[int(p.stem)] = p
        if not colors:
            raise SequenceError(f"{self.root / 'color'}: no images")
        self.color_paths: list[Path] = []
        self.depth_paths: list[Path] = []
        poses = []
        self.invalid_poses = 0
        for n in sorted(colors):
            depth_path = self.root / "depth" / f"{n}.png"
            pose_path = self.root / "pose" / f"{n}.txt"
            for p in (depth_path, pose_path):
                if not p.is_file():
                    raise SequenceError(f"{p}: missing (color/ has {colors[n].name})")
            T = _matrix(pose_path, 4)
            if not np.all(np.isfinite(T)):
                self.invalid_poses += 1  # ScanNet's marker of a frame whose tracking failed
                continue
            try:
                poses.append(to_rigid(T, name=f"{pose_path}: pose")[0])
            except ValueError as exc:
                raise SequenceError(str(exc)) from None
            self.color_paths.append(colors[n])
            self.depth_paths.append(depth_path)
        if not poses:
            raise SequenceError(f"{self.root / 'pose'}: every pose is invalid (-inf or NaN)")
        self.poses = np.stack(poses)
        self._depth_registered: bool | None = None  # the depth K is the colour K at its size (the first frame says)
        self.stamps = np.array([float(int(p.stem)) for p in self.color_paths]) / 30.0  # ScanNet records at 30 Hz
        self.color_K_from: tuple[int, int] | None = None  # the sensor size K was scaled from, None: as written
        first = read_rgb(self.color_paths[0])  # a K that cannot fit the images fails here, once
        self.color_K((first.shape[1], first.shape[0]), self.color_paths[0])

    def color_K(self, wh: tuple[int, int], path: Path) -> np.ndarray:
        """``intrinsic_color.txt``'s K for colour images of ``wh`` = (W, H): as written where it fits them
        (:func:`fits_image`), scaled from :data:`SENSOR_COLOR_SIZE` where they are a resized copy of that frame.

        Raises:
            SequenceError: it fits neither (another camera's K, or a crop); the message names K, the image size and
                asks for the exported images' own K.
        """
        if fits_image(self.K, wh):
            return self.K.copy()
        W, H = wh
        sw, sh = SENSOR_COLOR_SIZE
        if fits_image(self.K, SENSOR_COLOR_SIZE) and is_resized_copy(wh, SENSOR_COLOR_SIZE):
            self.color_K_from = SENSOR_COLOR_SIZE
            return resize_intrinsics(self.K, SENSOR_COLOR_SIZE, wh)
        fx, fy, cx, cy = (float(v) for v in self.K[(0, 1, 0, 1), (0, 1, 2, 2)])
        raise SequenceError(f"{path}: {self.root / 'intrinsic' / 'intrinsic_color.txt'} (fx {fx:g}, fy {fy:g}, cx "
                            f"{cx:g}, cy {cy:g}) does not fit {W}x{H} colour images (principal point outside their "
                            f"central half) nor a {sw}x{sh} ScanNet frame of their aspect they were resized from; write "
                            "the exported images' own K to intrinsic_color.txt")

    def __len__(self) -> int:
        return len(self.color_paths)

    @property
    def depth_registration(self) -> str:
        """How depth reaches the colour image, for reports: ``resized`` (the depth K is the colour K at the depth's
        size) or ``reprojected`` (``intrinsic_depth.txt`` has a K of its own); from the first frame's images."""
        if self._depth_registered is None:
            self.frame(0, semantic=False, normals=False)
        return "resized" if self._depth_registered else "reprojected"

    def frame(self, i: int, *, depth: bool = True, semantic: bool = True, normals: bool = True) -> SequenceFrame:
        """Frame ``i`` with the colour K and depth in metres registered to the colour image (NaN where none): resized
        (nearest) when the depth K is the colour K at the depth's size, else reprojected with the depth K."""
        rgb = read_rgb(self.color_paths[i])
        H, W = rgb.shape[:2]
        K = self.color_K((W, H), self.color_paths[i])
        d = None
        if depth:
            raw = read_uint16_depth(self.depth_paths[i], "millimetres")
            self._depth_registered = is_registered("", "", self.K_depth, (raw.shape[1], raw.shape[0]), K, (W, H))
            if not self._depth_registered:
                d = reproject_depth(depth_from_mm(raw), self.K_depth, np.eye(4), K, (H, W))
            else:
                if raw.shape != (H, W):
                    raw = cv2.resize(raw, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)  # pixel centres kept
                d = depth_from_mm(raw)
        return SequenceFrame(index=i, stamp=float(self.stamps[i]), rgb=rgb, depth=d, K=K,
                             T_world_cam=self.poses[i].copy(), name=self.color_paths[i].stem)
