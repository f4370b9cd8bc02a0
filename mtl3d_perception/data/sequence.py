"""Posed RGB-D sequence folders: the project's interchange format (DESIGN §5, docs/sequence_format.md).

::

    ROOT/images/NNNNN.{png,jpg}     colour images, RGB 8-bit
    ROOT/depth/NNNNN.png            uint16 millimetres, 0 = invalid             (optional)
    ROOT/semantic/NNNNN.png         uint8 NYU13 ids, 255 = ignore               (optional)
    ROOT/normals/NNNNN.npy          float16 [H,W,3], camera frame, to camera    (optional)
    ROOT/poses.txt                  one row-major 4x4 T_world_cam per line, in sorted image order
    ROOT/K.txt                      3x3 intrinsics
    ROOT/timestamps.txt             seconds, one per frame                      (optional)
    ROOT/provenance.json            what made the frames, a JSON object         (optional)

Frame names need not start at 0 or be contiguous; frames are in sorted name order (numerically when
every name is a number). :class:`PosedSequence` checks the folder's structure and text files when it
is opened and reads images lazily, one frame at a time. Every problem raises :class:`SequenceError`
with a message naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl3d_perception.geometry import check_intrinsics, depth_from_mm, depth_to_mm, to_rigid
from mtl3d_perception.runtime.frames import Frame

# Everything write_sequence may put in a sequence folder: the frame folders (files named by frame) and the files.
SEQUENCE_PARTS = ("images", "depth", "semantic", "normals", "poses.txt", "K.txt", "timestamps.txt", "provenance.json")
DEFAULT_RATE_HZ = 10.0  # frame rate assumed when a sequence has no timestamps.txt
START_TIME_S = 1_700_000_000.0  # first stamp of rate-derived stamps: ROS reads a zero stamp as "latest"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_OPTIONAL_DIRS = {"depth": ".png", "semantic": ".png", "normals": ".npy"}


class SequenceError(ValueError):
    """A posed RGB-D sequence folder is malformed; the message names the file and the problem."""


def check_folder(root: Path, expected: str) -> Path:
    """``root`` when it is a folder (a sequence of some kind).

    Raises:
        SequenceError: ``root`` is missing or not a folder; the message names it and ``expected``, what should be
            there (``"a posed RGB-D sequence folder, docs/sequence_format.md"``).
    """
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise SequenceError(f"{root} {problem} (expected {expected})")
    return root


@dataclass
class SequenceFrame:
    """One posed RGB-D frame.

    Attributes:
        index: position in the sequence (0-based).
        stamp: time in seconds.
        rgb: ``[H,W,3]`` uint8.
        depth: ``[H,W]`` float32 z-depth in metres, NaN invalid; or None.
        K: ``[3,3]`` float64 intrinsics at the image size.
        T_world_cam: ``[4,4]`` float64 camera pose (optical frame).
        semantic: ``[H,W]`` uint8 class ids (255 ignore), or None.
        normals: ``[H,W,3]`` float32 unit normals (camera frame, towards the camera), or None.
        name: file stem in a sequence folder (``"00003"``), or None.
    """

    index: int
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray | None
    K: np.ndarray
    T_world_cam: np.ndarray
    semantic: np.ndarray | None = None
    normals: np.ndarray | None = None
    name: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the image."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def runtime_frame(self, frame_id: str = "camera") -> Frame:
        """This frame as :meth:`runtime.PerceptionPipeline.process` takes it: the stamp in integer nanoseconds
        (:func:`seconds_to_ns`), the image, K and pose; the ground truth (depth, labels, normals) stays here."""
        return Frame(seconds_to_ns(self.stamp), frame_id, self.rgb, self.K, self.T_world_cam)


def seconds_to_ns(stamp_s: float) -> int:
    """Seconds (float) -> integer nanoseconds, exact to the float's precision (no 1e9 multiply of a big float)."""
    sec = math.floor(stamp_s)
    return int(sec) * 1_000_000_000 + round((stamp_s - sec) * 1e9)


def _sort_key(stem: str) -> tuple[int, int | str]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def parse_numbers(path: Path, line_no: int, text: str, *, finite: bool = True) -> list[float]:
    """The numbers of one text line (spaces or commas); SequenceError naming ``path`` and the line otherwise (and for
    NaN or infinity, unless ``finite`` is False: a dataset's marker of a lost pose, for the caller to count)."""
    values = []
    for token in text.replace(",", " ").split():
        try:
            values.append(float(token))
        except ValueError:
            raise SequenceError(f"{path} line {line_no}: {token!r} is not a number") from None
    if finite and not all(math.isfinite(v) for v in values):
        raise SequenceError(f"{path} line {line_no}: NaN or infinite value in {text.strip()!r}")
    return values


def text_rows(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-empty, non-comment lines of a text file."""
    if not path.is_file():
        raise SequenceError(f"{path}: missing")
    lines = path.read_text().splitlines()
    return [(i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]


def read_poses(path: str | Path) -> np.ndarray:
    """``poses.txt`` -> ``[N,4,4]`` float64; raises SequenceError naming the line of a bad row.

    Near-rotations are projected onto SO(3) (:func:`~mtl3d_perception.geometry.to_rigid`); see
    :func:`read_poses_counted` for how many were.
    """
    return read_poses_counted(path)[0]


def read_poses_counted(path: str | Path) -> tuple[np.ndarray, int]:
    """``poses.txt`` -> (``[N,4,4]`` float64 rigid poses, how many rotations were projected onto SO(3))."""
    path = Path(path)
    poses = []
    projected = 0
    for line_no, text in text_rows(path):
        values = parse_numbers(path, line_no, text)
        if len(values) != 16:
            raise SequenceError(f"{path} line {line_no}: expected 16 numbers (a row-major 4x4), got {len(values)}")
        try:
            T, was_projected = to_rigid(np.array(values).reshape(4, 4), name=f"{path} line {line_no}: pose")
        except ValueError as exc:
            raise SequenceError(str(exc)) from None
        poses.append(T)
        projected += was_projected
    return (np.stack(poses) if poses else np.zeros((0, 4, 4))), projected


def read_intrinsics(path: str | Path) -> np.ndarray:
    """``K.txt`` -> ``[3,3]`` float64; raises SequenceError if it is not 3x3, not finite or has fx, fy <= 0."""
    path = Path(path)
    rows = [parse_numbers(path, line_no, text) for line_no, text in text_rows(path)]
    if len(rows) != 3 or any(len(r) != 3 for r in rows):
        shape = ", ".join(str(len(r)) for r in rows) or "none"
        raise SequenceError(f"{path}: expected a 3x3 matrix (3 rows of 3 numbers), got {len(rows)} rows ({shape} numbers)")
    try:
        return check_intrinsics(np.array(rows), name=str(path))
    except ValueError as exc:
        raise SequenceError(str(exc)) from None


def read_timestamps(path: str | Path) -> np.ndarray:
    """``timestamps.txt`` -> ``[N]`` float64 seconds; raises SequenceError unless one increasing number per line."""
    path = Path(path)
    stamps = []
    for line_no, text in text_rows(path):
        values = parse_numbers(path, line_no, text)
        if len(values) != 1:
            raise SequenceError(f"{path} line {line_no}: expected one number (seconds), got {len(values)}")
        if not 0 <= values[0] < 2**31:  # builtin_interfaces/Time sec is an int32 (a trial: nanoseconds here)
            raise SequenceError(f"{path} line {line_no}: {values[0]:.6g} s is not a ROS time (0 to 2147483647 s); "
                                "stamps are seconds" + (" (nanoseconds? divide them by 1e9)" if values[0] >= 2**31 else ""))
        if stamps and values[0] <= stamps[-1]:
            raise SequenceError(f"{path} line {line_no}: time goes backwards ({values[0]!r} after {stamps[-1]!r})")
        stamps.append(values[0])
    return np.array(stamps, np.float64)


class PosedSequence(Sequence[SequenceFrame]):
    """A posed RGB-D sequence folder, validated when opened and read lazily.

    Args:
        root: the folder.
        rate_hz: frame rate used for stamps when there is no ``timestamps.txt``
            (``START_TIME_S + i / rate_hz``).

    Attributes:
        projected_rotations: how many poses of ``poses.txt`` were near-rotations projected onto SO(3).
        provenance: the folder's ``provenance.json`` (:func:`read_provenance`), or None.

    Raises:
        SequenceError: the folder is malformed (missing or extra files, counts that differ, bad poses,
            K or timestamps, a provenance.json that is not a JSON object); the message names the file.

    Example:
        >>> seq = PosedSequence("../shared/data/hololens_000")
        >>> frame = seq[0]  # reads images/00003.jpg and depth/00003.png
    """

    def __init__(self, root: str | Path, *, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        self.root = check_folder(Path(root), "a posed RGB-D sequence folder, docs/sequence_format.md")
        self.provenance = read_provenance(self.root)
        self.image_paths = self._list_images()
        self.names = [p.stem for p in self.image_paths]
        n = len(self.names)
        self.optional_paths: dict[str, list[Path] | None] = {
            kind: self._list_matching(kind, suffix) for kind, suffix in _OPTIONAL_DIRS.items()
        }
        self.poses, self.projected_rotations = read_poses_counted(self.root / "poses.txt")
        if len(self.poses) != n:
            raise SequenceError(f"{self.root / 'poses.txt'}: has {len(self.poses)} poses but images/ has {n} images")
        self.K = read_intrinsics(self.root / "K.txt")
        stamps_path = self.root / "timestamps.txt"
        self.has_timestamps = stamps_path.exists()
        if self.has_timestamps:
            self.stamps = read_timestamps(stamps_path)
            if len(self.stamps) != n:
                raise SequenceError(f"{stamps_path}: has {len(self.stamps)} stamps but images/ has {n} images")
        else:
            self.stamps = START_TIME_S + np.arange(n) / float(rate_hz)

    # ------------------------------------------------------------------ structure

    def _list_images(self) -> list[Path]:
        folder = self.root / "images"
        if not folder.is_dir():
            raise SequenceError(f"{folder}: missing (a sequence needs images/)")
        paths, stems = [], set()
        for p in folder.iterdir():
            if p.name.startswith("."):
                continue
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise SequenceError(f"{p}: unexpected file in images/ (expected {', '.join(IMAGE_SUFFIXES)})")
            if p.stem in stems:
                raise SequenceError(f"{p}: a second image named {p.stem!r}")
            stems.add(p.stem)
            paths.append(p)
        if not paths:
            raise SequenceError(f"{folder}: no images")
        return sorted(paths, key=lambda p: _sort_key(p.stem))

    def _list_matching(self, kind: str, suffix: str) -> list[Path] | None:
        """Files of an optional folder, one per image, or None when the folder is absent."""
        folder = self.root / kind
        if not folder.is_dir():
            return None
        found = {}
        for p in folder.iterdir():
            if p.name.startswith("."):
                continue
            if p.suffix.lower() != suffix:
                raise SequenceError(f"{p}: unexpected file in {kind}/ (expected NNNNN{suffix})")
            found[p.stem] = p
        extra = sorted(set(found) - set(self.names), key=_sort_key)
        if extra:
            raise SequenceError(f"{found[extra[0]]}: extra file, no image named {extra[0]!r} in images/"
                                + (f" ({len(extra)} extra files in {kind}/)" if len(extra) > 1 else ""))
        missing = [name for name in self.names if name not in found]
        if missing:
            raise SequenceError(f"{folder / (missing[0] + suffix)}: missing (images/ has {missing[0]!r})"
                                + (f"; {len(missing)} files missing in {kind}/" if len(missing) > 1 else ""))
        return [found[name] for name in self.names]

    @property
    def has_depth(self) -> bool:
        return self.optional_paths["depth"] is not None

    @property
    def has_semantic(self) -> bool:
        return self.optional_paths["semantic"] is not None

    @property
    def has_normals(self) -> bool:
        return self.optional_paths["normals"] is not None

    def label_source(self, label: str) -> str:
        """Where ``label`` ('depth', 'semantic' or 'normals') ground truth is read from, for messages: its folder, and
        ``(absent)`` when the sequence has none."""
        return f"{self.root / label}/" + ("" if self.optional_paths[label] is not None else " (absent)")

    # ------------------------------------------------------------------ frames

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.frame(j) for j in range(*i.indices(len(self)))]
        return self.frame(i)

    def __iter__(self) -> Iterator[SequenceFrame]:
        for i in range(len(self)):
            yield self.frame(i)

    def frame(self, i: int, *, depth: bool = True, semantic: bool = True, normals: bool = True) -> SequenceFrame:
        """Read frame ``i``; pass ``depth=False`` (etc.) to skip reading an optional part.

        Raises:
            IndexError: ``i`` out of range.
            SequenceError: a file cannot be read, has the wrong type, or its size differs from the image.
        """
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for a sequence of {n} frames ({self.root})")
        i %= n
        rgb = read_rgb(self.image_paths[i])
        H, W = rgb.shape[:2]
        paths = self.optional_paths
        depth_m = _read_depth(paths["depth"][i], (H, W), self.image_paths[i]) if depth and paths["depth"] else None
        labels = _read_semantic(paths["semantic"][i], (H, W), self.image_paths[i]) if semantic and paths["semantic"] else None
        nrm = _read_normals(paths["normals"][i], (H, W), self.image_paths[i]) if normals and paths["normals"] else None
        return SequenceFrame(
            index=i, stamp=float(self.stamps[i]), rgb=rgb, depth=depth_m, K=self.K.copy(),
            T_world_cam=self.poses[i].copy(), semantic=labels, normals=nrm, name=self.names[i],
        )

    def validate(self) -> None:
        """Read every frame once (the slow, complete check); raises SequenceError at the first bad file."""
        for i in range(len(self)):
            self.frame(i)


def imread(path: Path, flags: int) -> np.ndarray:
    """``cv2.imread`` that raises SequenceError naming the file when it cannot be read."""
    img = cv2.imread(str(path), flags)
    if img is None:
        raise SequenceError(f"{path}: cannot be read as an image")
    return img


def _check_size(path: Path, arr: np.ndarray, hw: tuple[int, int], image_path: Path) -> None:
    if arr.shape[:2] != hw:
        raise SequenceError(
            f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from {image_path.name} ({hw[1]}x{hw[0]})"
        )


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image file as ``[H,W,3]`` uint8 RGB."""
    bgr = imread(path, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_uint16_depth(path: Path, units: str = "millimetres") -> np.ndarray:
    """A one-channel uint16 depth PNG as ``[H,W]`` uint16 (0 invalid), ``units`` naming its scale in the error.

    Raises:
        SequenceError: the file is not a one-channel uint16 image (message names the file and what it holds).
    """
    raw = imread(path, cv2.IMREAD_UNCHANGED)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise SequenceError(f"{path}: expected a one-channel uint16 PNG ({units}), got {raw.dtype} with {channels} channel(s)")
    return raw


def _read_depth(path: Path, hw: tuple[int, int], image_path: Path) -> np.ndarray:
    raw = read_uint16_depth(path)
    _check_size(path, raw, hw, image_path)
    return depth_from_mm(raw)


def _read_semantic(path: Path, hw: tuple[int, int], image_path: Path) -> np.ndarray:
    raw = imread(path, cv2.IMREAD_UNCHANGED)
    if raw.dtype != np.uint8 or raw.ndim != 2:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise SequenceError(f"{path}: expected a one-channel uint8 PNG of class ids, got {raw.dtype} with {channels} channel(s)")
    _check_size(path, raw, hw, image_path)
    return raw


def _read_normals(path: Path, hw: tuple[int, int], image_path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SequenceError(f"{path}: cannot be read as a .npy array ({exc})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise SequenceError(f"{path}: expected a float [H,W,3] array, got {arr.dtype} of shape {arr.shape}")
    _check_size(path, arr, hw, image_path)
    return arr.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def write_sequence(
    root: str | Path,
    frames: Iterable[SequenceFrame],
    *,
    image_format: str = "png",
    jpeg_quality: int = 95,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write frames as a posed RGB-D sequence folder and return ``root``.

    Frames are consumed one at a time (a generator of rendered frames never sits in memory). Files are
    named by ``frame.name``, or ``00000``, ``00001``, ... for frames without one. Depth is stored as
    uint16 millimetres (:func:`~mtl3d_perception.geometry.depth_to_mm`, so 0.5 mm rounding), normals as
    float16 ``.npy``, poses and K with full float64 precision, and the stamps in ``timestamps.txt``.
    The optional parts (depth, semantic, normals) written are those the first frame has.

    Args:
        root: the folder; created if needed, must be missing or empty.
        frames: frames sharing one K and one image size.
        image_format: ``"png"`` (lossless) or ``"jpg"``.
        jpeg_quality: JPEG quality when ``image_format="jpg"``.
        provenance: where the frames came from (JSON-serialisable, e.g. ``data.synthetic.scene_record``), written to
            ``provenance.json``; ``mtl3d bag`` carries it into the bag's metadata and ``mtl3d replay`` names it.

    Raises:
        SequenceError: no frames, frames that differ in K, size or optional parts, duplicate names, a
            ``provenance`` that is not JSON-serialisable (nothing is written), or ``root`` a file or not empty.
    """
    root = Path(root)
    try:
        provenance_json = None if provenance is None else json.dumps(dict(provenance), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise SequenceError(f"provenance is not JSON-serialisable ({exc}); use plain numbers and strings") from None
    if image_format not in ("png", "jpg"):
        raise SequenceError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):  # its poses.txt, K.txt would be replaced
        what = "is a file" if not root.is_dir() else f"is not empty (holds {sorted(p.name for p in root.iterdir())[0]!r})"
        raise SequenceError(f"{root}: {what}; write a sequence into a new or empty folder")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpg" else []
    first: SequenceFrame | None = None
    parts: list[str] = []
    names: set[str] = set()
    poses, stamps = [], []
    for i, f in enumerate(frames):
        if first is None:
            first = f
            parts = [kind for kind in ("depth", "semantic", "normals") if getattr(f, kind) is not None]
            for kind in ["images", *parts]:
                (root / kind).mkdir(parents=True, exist_ok=True)
        if not np.allclose(f.K, first.K, rtol=0, atol=1e-9):
            raise SequenceError(f"frame {i} has a different K from frame 0; a sequence folder holds one K.txt")
        if f.size != first.size:
            raise SequenceError(f"frame {i} is {f.size[0]}x{f.size[1]}, frame 0 is {first.size[0]}x{first.size[1]}")
        have = [kind for kind in ("depth", "semantic", "normals") if getattr(f, kind) is not None]
        if have != parts:
            raise SequenceError(f"frame {i} has {have or 'no optional parts'}, frame 0 has {parts or 'none'}")
        name = f.name if f.name is not None else f"{i:05d}"
        if name in names:
            raise SequenceError(f"frame {i}: a second frame named {name!r}")
        names.add(name)
        path = root / "images" / f"{name}.{image_format}"
        if not cv2.imwrite(str(path), np.ascontiguousarray(np.asarray(f.rgb, np.uint8)[:, :, ::-1]), params):
            raise SequenceError(f"{path}: could not be written")
        if "depth" in parts:
            cv2.imwrite(str(root / "depth" / f"{name}.png"), depth_to_mm(f.depth))
        if "semantic" in parts:
            cv2.imwrite(str(root / "semantic" / f"{name}.png"), np.asarray(f.semantic, np.uint8))
        if "normals" in parts:
            np.save(root / "normals" / f"{name}.npy", np.asarray(f.normals, np.float16))
        poses.append(np.asarray(f.T_world_cam, np.float64).ravel().tolist())
        stamps.append(float(f.stamp))
    if first is None:
        raise SequenceError(f"{root}: no frames to write")
    with open(root / "poses.txt", "w") as fh:
        fh.writelines(" ".join(f"{v!r}" for v in row) + "\n" for row in poses)
    with open(root / "K.txt", "w") as fh:
        fh.writelines(" ".join(f"{v!r}" for v in row) + "\n" for row in np.asarray(first.K, np.float64).tolist())
    with open(root / "timestamps.txt", "w") as fh:
        fh.writelines(f"{s!r}\n" for s in stamps)
    if provenance_json is not None:
        (root / PROVENANCE_FILE).write_text(provenance_json + "\n")
    return root


PROVENANCE_FILE = "provenance.json"


def read_provenance(root: str | Path) -> dict[str, Any] | None:
    """A sequence folder's ``provenance.json`` (what made its frames, as :func:`write_sequence` was told), or None
    where it has none (recorded sequences).

    Raises:
        SequenceError: the file is not a JSON object.
    """
    path = Path(root) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SequenceError(f"{path}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SequenceError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def describe_provenance(provenance: Mapping[str, Any]) -> str:
    """One line for a report: ``synthetic scene 2000000 (generator v3, photo textures)``, or the record as JSON for
    any other kind."""
    if provenance.get("kind") == "synthetic":
        return (f"synthetic scene {provenance.get('seed', '?')} (generator v{provenance.get('generator', '?')}, "
                f"{provenance.get('textures', '?')} textures)")
    return json.dumps(dict(provenance), sort_keys=True)
