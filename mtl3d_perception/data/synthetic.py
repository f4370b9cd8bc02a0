"""Procedural indoor scenes with exact multi-view ground truth (numpy ray casting).

A scene is one box-shaped room (floor, ceiling, four walls) furnished along its walls with objects built
from boxes (rotated about the vertical axis) and vertical cylinders, each labelled with the NYUv2-13 class
it stands for (bed, sofa, table, chair, furniture, books, objects, tv, painting, window), plus small
clutter on the floor. Every surface carries a texture defined in its own face coordinates (world
coordinates for the room, object coordinates for furniture), so the same surface point has the same
colour in every view and features match across views: CC0 photo textures (material tiles; photo crops on
paintings, screens and windows; :mod:`.textures`) where the texture folder is available, procedural
ones otherwise. Shading is Lambertian under one ceiling light plus ambient; it depends on the surface
point only, never on the viewer.

Rendering casts one ray per pixel through K (pixel centres, :func:`mtl3d_perception.geometry.backproject`)
and returns, for any pose and resolution:

- ``rgb`` ``[H,W,3]`` uint8, ``depth`` ``[H,W]`` float32 z-depth in metres (every pixel valid: the room
  is closed), ``normals`` ``[H,W,3]`` float32 unit, camera optical frame, towards the camera,
  ``semantic`` ``[H,W]`` uint8 NYU13 ids, ``boundary`` ``[H,W]`` uint8 (1 on semantic label edges).

The world frame is z-up with the floor at z = 0 (like ``odom``); camera poses are ``T_world_cam`` with the
camera in the optical convention (x right, y down, z forward). Everything is deterministic per seed.
The furniture stays in a band along the walls and the camera path (a smooth loop at 1.2-1.3 m height,
driving forwards and turning) stays in the free middle of the room.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl3d_perception.classes import NYU13_CLASSES, class_index
from mtl3d_perception.data.sequence import DEFAULT_RATE_HZ, START_TIME_S, SequenceFrame
from mtl3d_perception.data.textures import ImageMaterial, TextureAtlas, TextureLibrary, texture_library
from mtl3d_perception.geometry import backproject

DEFAULT_HFOV_DEG = 65.0
HFOV_RANGE_DEG = (50.0, 90.0)  # the horizontal fields of view scenes and training samples draw from
MOTIONS = ("robot", "handheld")
DEFAULT_SPEED_MPS = 0.5

WALL_BAND = 1.6  # furniture stays within this distance of a wall; the camera path stays outside it
PATH_MARGIN = 0.35  # extra clearance between the camera path and the furniture band
CAMERA_HEIGHT = 1.25
CAMERA_PITCH_DEG = -10.0  # looking slightly down, like a robot's head camera
_EPS = 1e-6

_CLS = {name: class_index(name) for name in NYU13_CLASSES}
FLOOR, CEILING, WALL = _CLS["floor"], _CLS["ceiling"], _CLS["wall"]


def default_intrinsics(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """A pinhole K ``[3,3]`` float64 for ``width x height`` with square pixels and ``hfov_deg`` horizontal FOV.

    The principal point is the image centre, ``((W - 1) / 2, (H - 1) / 2)`` in the pixel-centre convention.
    """
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """A procedural 2-D texture: two colours mixed by cell noise (two scales) and stripes, optional grout lines."""

    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    cell: float  # metres, coarse cells
    fine: float  # metres, fine cells
    stripe_freq: float  # cycles per metre
    stripe_angle: float  # radians
    weights: tuple[float, float, float]  # (coarse, fine, stripes), sums to 1
    grout: float = 0.0  # fraction of a coarse cell drawn as a dark line (tiles, planks); 0 = none
    seed: int = 0
    surface: str = ""  # the surface kind (textures.SURFACES / PHOTO_SURFACES) a photo texture replaces it with


@dataclass(frozen=True)
class Primitive:
    """A box (rotated by ``yaw`` about z) or a vertical cylinder (radius ``half[0]``) with its class and material."""

    kind: str  # "box" | "cylinder"
    label: int
    center: np.ndarray  # [3] world
    half: np.ndarray  # [3] half extents in the primitive's frame; cylinders use (r, r, half height)
    yaw: float
    material: Material | ImageMaterial

    def corners(self) -> np.ndarray:
        """The 8 corners ``[8,3]`` of a world box that contains the primitive."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
        local = signs * self.half
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return local @ R.T + self.center

    def footprint_distance(self, xy: np.ndarray) -> np.ndarray:
        """Horizontal distance ``[N]`` from points ``xy [N,2]`` to the primitive's footprint (0 inside)."""
        q = np.asarray(xy, np.float64) - self.center[:2]
        if self.kind == "cylinder":
            return np.maximum(np.linalg.norm(q, axis=-1) - self.half[0], 0.0)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        local = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], axis=-1)
        outside = np.maximum(np.abs(local) - self.half[:2], 0.0)
        return np.linalg.norm(outside, axis=-1)


@dataclass
class _RayCache:
    key: tuple = ()
    rays: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [H*W,3] camera-frame rays with z = 1


def _rotz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rgb(rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 0.08):
    return tuple(float(v) for v in np.clip(np.asarray(base) + rng.uniform(-jitter, jitter, 3), 0.02, 0.98))


class SyntheticScene:
    """One procedural room, deterministic per ``seed``.

    Args:
        seed: the scene's random seed (layout, sizes, materials, camera path, field of view, motion).
        textures: ``"auto"`` photo-textures the scene from :func:`~.textures.texture_library` when the
            texture folder is there (procedural textures otherwise, with one logged notice); a path uses
            that folder; None keeps the procedural textures.

    Example:
        >>> scene = SyntheticScene(3)
        >>> poses = scene.camera_path(10)
        >>> out = scene.render(poses[0], default_intrinsics(160, 120), (160, 120))
    """

    def __init__(self, seed: int, textures: str | Path | None = "auto") -> None:
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self.size = np.array([rng.uniform(5.4, 8.0), rng.uniform(5.4, 8.0), rng.uniform(2.5, 3.0)])
        self.light = np.array([self.size[0] / 2, self.size[1] / 2, self.size[2] - 0.2])
        self._room_materials: dict[str, Material | ImageMaterial] = dict(self._make_room_materials(rng))
        self.primitives: list[Primitive] = []
        self._furnish(rng)
        self._path_rng_state = rng.integers(0, 2**31)
        # streams of their own, so layout and the robot path stay the same with or without them
        camera_rng = np.random.default_rng([self.seed, 1])
        self.hfov_deg = float(camera_rng.uniform(*HFOV_RANGE_DEG))  # this scene's camera (evaluation)
        self.motion = str(camera_rng.choice(MOTIONS))  # the motion the datasets use for this scene
        self._clutter(np.random.default_rng([self.seed, 3]))
        library = texture_library(None if textures == "auto" else textures) if textures is not None else None
        self.atlas: TextureAtlas | None = None
        if library is not None:
            self._texturise(library, np.random.default_rng([self.seed, 2]))
        self._rays = _RayCache()
        self._corners = np.zeros((0, 8, 3))  # [P,8,3] bounding-box corners of the primitives, built on first use

    # ------------------------------------------------------------------ layout

    def _material(self, rng: np.random.Generator, surface: str, a, b, *, cell, fine, stripes, weights, grout=0.0
                  ) -> Material:
        w = np.asarray(weights, np.float64)
        return Material(
            colour_a=_rgb(rng, a), colour_b=_rgb(rng, b),
            cell=cell * rng.uniform(0.8, 1.25), fine=fine * rng.uniform(0.8, 1.25),
            stripe_freq=stripes * rng.uniform(0.8, 1.25), stripe_angle=float(rng.uniform(0, math.pi)),
            weights=tuple(float(v) for v in w / w.sum()), grout=grout, seed=int(rng.integers(0, 2**20)),
            surface=surface,
        )

    def _make_room_materials(self, rng: np.random.Generator) -> dict[str, Material]:
        wall_base = [(0.85, 0.8, 0.7), (0.7, 0.78, 0.85), (0.8, 0.72, 0.65), (0.75, 0.82, 0.7)][rng.integers(4)]
        return {
            "floor": self._material(rng, "floor", (0.45, 0.3, 0.18), (0.7, 0.5, 0.3), cell=0.35, fine=0.05,
                                    stripes=6.0, weights=(0.5, 0.3, 0.2), grout=0.04),
            "ceiling": self._material(rng, "ceiling", (0.85, 0.85, 0.83), (0.95, 0.95, 0.93), cell=0.6, fine=0.08,
                                      stripes=2.0, weights=(0.4, 0.4, 0.2), grout=0.02),
            "wall": self._material(rng, "wall", wall_base, np.asarray(wall_base) * 0.75, cell=0.25, fine=0.05,
                                   stripes=4.0, weights=(0.4, 0.4, 0.2)),
        }

    def _add_box(self, label: str, center, half, yaw: float, material: Material) -> None:
        self.primitives.append(Primitive("box", _CLS[label], np.asarray(center, np.float64),
                                         np.asarray(half, np.float64), float(yaw), material))

    def _add_cylinder(self, label: str, center, radius: float, half_height: float, material: Material) -> None:
        self.primitives.append(Primitive("cylinder", _CLS[label], np.asarray(center, np.float64),
                                         np.array([radius, radius, half_height]), 0.0, material))

    def _walls(self):
        """Per wall: (origin on the floor at the wall's start, unit direction along it, inward normal, length,
        usable range along it). Walls along x use their full length; walls along y leave the corners to them."""
        Lx, Ly = self.size[:2]
        b = WALL_BAND
        return [
            (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), Lx, (0.1, Lx - 0.1)),
            (np.array([Lx, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), Ly, (b, Ly - b)),
            (np.array([Lx, Ly]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]), Lx, (0.1, Lx - 0.1)),
            (np.array([0.0, Ly]), np.array([0.0, -1.0]), np.array([1.0, 0.0]), Ly, (b, Ly - b)),
        ]

    def _furnish(self, rng: np.random.Generator) -> None:
        kinds = ["bed", "sofa", "furniture", "table", "chair", "objects", "furniture"]
        probs = np.array([0.12, 0.14, 0.24, 0.18, 0.12, 0.1, 0.1])
        placed_once: set[str] = set()
        for origin, along, inward, _length, (s0, s1) in self._walls():
            yaw = math.atan2(along[1], along[0])  # item frame: x along the wall, y into the room
            tall: list[tuple[float, float]] = []  # intervals along the wall covered by tall items
            s = s0 + rng.uniform(0.0, 0.6)
            while True:
                kind = str(rng.choice(kinds, p=probs / probs.sum()))
                if kind in ("bed", "sofa") and kind in placed_once:
                    kind = "furniture"
                width, build = self._item(kind, rng)
                if s + width > s1:
                    break
                placed_once.add(kind)
                top = build(origin + along * (s + width / 2), along, inward, yaw)
                if top > 1.05:
                    tall.append((s, s + width))
                s += width + rng.uniform(0.1, 0.7)
            self._decorate(rng, origin, along, inward, yaw, (s0, s1), tall)
        # a few things on the floor near the walls for clutter (inside the band, clear of other items)
        for _ in range(int(rng.integers(1, 4))):
            r, hh = rng.uniform(0.1, 0.2), rng.uniform(0.15, 0.4)
            for _try in range(10):
                wall = self._walls()[int(rng.integers(4))]
                origin, along, inward, _, (s0, s1) = wall
                p = origin + along * rng.uniform(s0 + r, s1 - r) + inward * rng.uniform(r + 0.05, WALL_BAND - r - 0.05)
                if all(pr.footprint_distance(p[None])[0] > r + 0.05 for pr in self.primitives):
                    mat = self._material(rng, "object", (0.2, 0.5, 0.3), (0.6, 0.7, 0.3), cell=0.08, fine=0.03,
                                         stripes=12.0, weights=(0.4, 0.3, 0.3))
                    self._add_cylinder("objects", [p[0], p[1], hh], r, hh, mat)
                    break

    def _item(self, kind: str, rng: np.random.Generator):
        """Width along the wall and a builder ``(center_xy_on_wall, along, inward, yaw) -> top height``."""
        m = self._material

        def at(base_xy, along, inward, x, y):
            """Item-frame (x along the wall from the item centre, y inward from the wall) -> world xy."""
            return base_xy + along * x + inward * y

        if kind == "bed":
            w, d, h = rng.uniform(1.9, 2.1), rng.uniform(1.3, 1.5), rng.uniform(0.4, 0.55)
            fabric = m(rng, "fabric", (0.3, 0.35, 0.6), (0.8, 0.8, 0.85), cell=0.15, fine=0.04, stripes=8.0, weights=(0.3, 0.3, 0.4))
            wood = m(rng, "wood", (0.35, 0.22, 0.12), (0.55, 0.38, 0.2), cell=0.2, fine=0.03, stripes=15.0, weights=(0.2, 0.3, 0.5))

            def build(c, along, inward, yaw):
                xy = at(c, along, inward, 0.05, d / 2 + 0.02)
                self._add_box("bed", [*xy, h / 2], [w / 2 - 0.05, d / 2, h / 2], yaw, fabric)
                xy = at(c, along, inward, -w / 2 + 0.04, d / 2 + 0.02)
                self._add_box("bed", [*xy, 0.45], [0.04, d / 2, 0.45], yaw, wood)
                return 0.9

            return w, build
        if kind == "sofa":
            w, d = rng.uniform(1.6, 2.2), rng.uniform(0.8, 0.95)
            fabric = m(rng, "fabric", (0.5, 0.2, 0.2), (0.3, 0.3, 0.35), cell=0.12, fine=0.03, stripes=10.0, weights=(0.4, 0.4, 0.2))

            def build(c, along, inward, yaw):
                self._add_box("sofa", [*at(c, along, inward, 0, d / 2 + 0.02), 0.21], [w / 2, d / 2, 0.21], yaw, fabric)
                self._add_box("sofa", [*at(c, along, inward, 0, 0.12), 0.45], [w / 2, 0.1, 0.45], yaw, fabric)
                for sx in (-1, 1):
                    xy = at(c, along, inward, sx * (w / 2 - 0.08), d / 2 + 0.02)
                    self._add_box("sofa", [*xy, 0.31], [0.08, d / 2, 0.31], yaw, fabric)
                return 0.9

            return w, build
        if kind == "furniture":
            w, d, h = rng.uniform(0.6, 1.3), rng.uniform(0.4, 0.6), float(rng.choice([0.75, 0.9, 1.8, 2.0]))
            wood = m(rng, "wood", (0.55, 0.4, 0.25), (0.8, 0.7, 0.55), cell=0.3, fine=0.04, stripes=14.0,
                     weights=(0.3, 0.3, 0.4), grout=0.03)

            def build(c, along, inward, yaw):
                self._add_box("furniture", [*at(c, along, inward, 0, d / 2 + 0.02), h / 2], [w / 2, d / 2, h / 2], yaw, wood)
                if h < 1.0 and rng.uniform() < 0.5:  # a tv on a low cabinet
                    tw, th = min(w - 0.1, rng.uniform(0.7, 1.0)), rng.uniform(0.4, 0.55)
                    screen = m(rng, "tv", (0.05, 0.05, 0.07), (0.2, 0.25, 0.35), cell=0.1, fine=0.03, stripes=20.0,
                               weights=(0.4, 0.3, 0.3))
                    xy = at(c, along, inward, 0, d / 2)
                    self._add_box("tv", [*xy, h + th / 2], [tw / 2, 0.03, th / 2], yaw, screen)
                elif h < 1.0:  # books standing on top
                    x = -w / 2 + 0.05
                    for _ in range(int(rng.integers(3, 9))):
                        bt, bh, bd = rng.uniform(0.03, 0.07), rng.uniform(0.15, 0.28), rng.uniform(0.14, 0.22)
                        if x + bt > w / 2 - 0.05:
                            break
                        cover = m(rng, "cover", tuple(rng.uniform(0.1, 0.9, 3)), tuple(rng.uniform(0.1, 0.9, 3)),
                                  cell=0.05, fine=0.015, stripes=30.0, weights=(0.4, 0.3, 0.3))
                        xy = at(c, along, inward, x + bt / 2, bd / 2 + 0.05)
                        self._add_box("books", [*xy, h + bh / 2], [bt / 2, bd / 2, bh / 2], yaw, cover)
                        x += bt + rng.uniform(0.0, 0.02)
                return h

            return w, build
        if kind == "table":
            w, d, h = rng.uniform(0.9, 1.5), rng.uniform(0.6, 0.8), rng.uniform(0.72, 0.76)
            n_chairs = int(rng.integers(0, 3))
            wood = m(rng, "wood", (0.45, 0.3, 0.18), (0.7, 0.55, 0.35), cell=0.25, fine=0.03, stripes=18.0, weights=(0.3, 0.3, 0.4))
            chair_mat = m(rng, "wood", (0.25, 0.25, 0.28), (0.55, 0.4, 0.3), cell=0.1, fine=0.03, stripes=12.0, weights=(0.4, 0.3, 0.3))
            cup = m(rng, "object", (0.8, 0.8, 0.75), (0.2, 0.4, 0.7), cell=0.04, fine=0.015, stripes=40.0, weights=(0.3, 0.3, 0.4))

            def build(c, along, inward, yaw):
                y0 = d / 2 + 0.05
                self._add_box("table", [*at(c, along, inward, 0, y0), h - 0.02], [w / 2, d / 2, 0.02], yaw, wood)
                for sx in (-1, 1):
                    for sy in (-1, 1):
                        xy = at(c, along, inward, sx * (w / 2 - 0.05), y0 + sy * (d / 2 - 0.05))
                        self._add_box("table", [*xy, (h - 0.04) / 2], [0.025, 0.025, (h - 0.04) / 2], yaw, wood)
                if rng.uniform() < 0.7:
                    xy = at(c, along, inward, rng.uniform(-w / 3, w / 3), y0 + rng.uniform(-d / 4, d / 4))
                    hh = rng.uniform(0.05, 0.15)
                    self._add_cylinder("objects", [xy[0], xy[1], h + hh], rng.uniform(0.04, 0.08), hh, cup)
                for k in range(n_chairs):
                    x = (k - (n_chairs - 1) / 2) * min(0.6, w / max(n_chairs, 1))
                    self._chair(at(c, along, inward, x, d + 0.05 + 0.3), yaw + math.pi, chair_mat)
                return h

            return w, build
        if kind == "chair":
            mat = m(rng, "wood", (0.3, 0.2, 0.15), (0.6, 0.45, 0.3), cell=0.1, fine=0.03, stripes=12.0, weights=(0.4, 0.3, 0.3))

            def build(c, along, inward, yaw):
                self._chair(at(c, along, inward, 0, 0.3), yaw + rng.uniform(-0.4, 0.4), mat)
                return 0.9

            return 0.55, build
        # "objects": a bin or plant pot on the floor
        r, hh = rng.uniform(0.15, 0.25), rng.uniform(0.2, 0.45)
        mat = m(rng, "object", (0.3, 0.5, 0.3), (0.7, 0.6, 0.4), cell=0.08, fine=0.02, stripes=15.0, weights=(0.4, 0.3, 0.3))

        def build(c, along, inward, yaw):
            xy = at(c, along, inward, 0, r + 0.05)
            self._add_cylinder("objects", [xy[0], xy[1], hh], r, hh, mat)
            return 2 * hh

        return 2 * r + 0.1, build

    def _chair(self, xy: np.ndarray, yaw: float, mat: Material) -> None:
        """A chair at ``xy`` facing ``yaw`` (its back at local -y): seat, four legs, backrest."""
        R = _rotz(yaw)[:2, :2]

        def p(x, y):
            return xy + R @ np.array([x, y])

        self._add_box("chair", [*p(0, 0), 0.45], [0.22, 0.22, 0.025], yaw, mat)
        for sx in (-1, 1):
            for sy in (-1, 1):
                self._add_box("chair", [*p(sx * 0.19, sy * 0.19), 0.2125], [0.02, 0.02, 0.2125], yaw, mat)
        self._add_box("chair", [*p(0, -0.2), 0.7], [0.22, 0.02, 0.22], yaw, mat)

    def _decorate(self, rng, origin, along, inward, yaw, s_range, tall) -> None:
        """Paintings, windows and wall-mounted tvs on one wall, clear of tall furniture and of each other."""
        used = list(tall)
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["painting", "window", "tv", "painting"]))
            if kind == "window":
                w, h, t, zc = rng.uniform(0.8, 1.5), rng.uniform(1.0, 1.3), 0.02, 0.9
                zc = zc + h / 2
                mat = self._material(rng, "window", (0.55, 0.75, 0.95), (0.85, 0.92, 1.0), cell=0.3, fine=0.06, stripes=3.0,
                                     weights=(0.4, 0.3, 0.3), grout=0.05)
            elif kind == "tv":
                w, h, t, zc = rng.uniform(0.9, 1.3), rng.uniform(0.55, 0.75), 0.05, 1.3
                mat = self._material(rng, "tv", (0.04, 0.04, 0.06), (0.25, 0.3, 0.4), cell=0.1, fine=0.03, stripes=25.0,
                                     weights=(0.4, 0.3, 0.3))
            else:
                w, h, t, zc = rng.uniform(0.4, 1.1), rng.uniform(0.35, 0.8), 0.03, rng.uniform(1.4, 1.7)
                mat = self._material(rng, "painting", tuple(rng.uniform(0.1, 0.9, 3)), tuple(rng.uniform(0.1, 0.9, 3)),
                                     cell=0.08, fine=0.025, stripes=9.0, weights=(0.5, 0.3, 0.2))
            for _try in range(8):
                s = rng.uniform(s_range[0], s_range[1] - w)
                if all(s + w + 0.1 < a or s > b + 0.1 for a, b in used):
                    used.append((s, s + w))
                    xy = origin + along * (s + w / 2) + inward * (t / 2)
                    self._add_box(kind, [xy[0], xy[1], zc], [w / 2, t / 2, h / 2], yaw, mat)
                    break

    def _clutter(self, rng: np.random.Generator) -> None:
        """Small objects (boxes and cylinders) on the floor in the furniture band, clear of everything else."""
        def clear(p: np.ndarray, gap: float) -> bool:
            # bounding circles first: only primitives that might be that close get the exact test
            near = np.linalg.norm(centres - p, axis=1) < radii + gap
            return all(self.primitives[k].footprint_distance(p[None])[0] > gap for k in np.nonzero(near)[0])

        for _ in range(int(rng.integers(3, 8))):
            centres = np.array([pr.center[:2] for pr in self.primitives]).reshape(-1, 2)
            radii = np.array([np.linalg.norm(pr.half[:2]) for pr in self.primitives])
            box = rng.uniform() < 0.5
            r, hh = rng.uniform(0.06, 0.2), rng.uniform(0.05, 0.3)
            for _try in range(10):
                origin, along, inward, _, (s0, s1) = self._walls()[int(rng.integers(4))]
                p = origin + along * rng.uniform(s0 + r, s1 - r) + inward * rng.uniform(r + 0.05, WALL_BAND - r - 0.1)
                if clear(p, 1.5 * r + 0.05):
                    mat = self._material(rng, "object", tuple(rng.uniform(0.1, 0.9, 3)), tuple(rng.uniform(0.1, 0.9, 3)),
                                         cell=0.05, fine=0.02, stripes=15.0, weights=(0.4, 0.3, 0.3))
                    if box:
                        self._add_box("objects", [p[0], p[1], hh], [r, r * rng.uniform(0.5, 1.0), hh],
                                      float(rng.uniform(0, math.pi)), mat)
                    else:
                        self._add_cylinder("objects", [p[0], p[1], hh], r, hh, mat)
                    break

    def _texturise(self, library: TextureLibrary, rng: np.random.Generator) -> None:
        """Replace every procedural material by a photo texture of its surface kind (parts sharing a material
        keep sharing its replacement); photo crops are sized to the face they hang on."""
        self.atlas = TextureAtlas(library, rng)
        shared: dict[Material, ImageMaterial] = {}
        for name, mat in self._room_materials.items():
            self._room_materials[name] = self.atlas.material(mat.surface)
        for k, prim in enumerate(self.primitives):
            mat = prim.material
            if mat.surface in ("painting", "tv", "window"):
                new = self.atlas.material(mat.surface, (2 * prim.half[0], 2 * prim.half[2]))
            else:
                if mat not in shared:
                    shared[mat] = self.atlas.material(mat.surface)
                new = shared[mat]
            self.primitives[k] = dataclasses.replace(prim, material=new)

    # ------------------------------------------------------------------ camera path

    def free_area(self) -> tuple[np.ndarray, np.ndarray]:
        """The floor rectangle ``(xy_min, xy_max)`` that no furniture reaches (the camera drives in it)."""
        lo = np.array([WALL_BAND, WALL_BAND])
        return lo, self.size[:2] - lo

    def camera_path(self, n: int, *, rate_hz: float = DEFAULT_RATE_HZ, speed: float = DEFAULT_SPEED_MPS,
                    motion: str = "robot") -> np.ndarray:
        """``n`` camera poses ``T_world_cam`` ``[N,4,4]`` float64 along a smooth loop.

        ``motion="robot"``: a robot drives forwards around an ellipse in the free middle of the room at
        ``speed`` m/s (one pose every ``1 / rate_hz`` s); the camera at ~1.25 m looks slightly down and
        swings its gaze smoothly between straight ahead and outwards (towards the furniture).
        ``motion="handheld"``: a person walks the same loop at 0.6 x ``speed`` holding the camera at
        1.2-1.7 m, with smooth random 6-DoF jitter (sums of sinusoids at 0.1-0.6 Hz: +/- 8 cm sideways and
        up/down, +/- 10 deg yaw, pitch -25..+5 deg, +/- 6 deg roll). The first ``n`` poses of a longer
        path are the same poses (a path is a prefix of any longer one).
        """
        if motion not in MOTIONS:
            msg = f"unknown camera motion {motion!r}; expected one of {', '.join(MOTIONS)}"
            raise ValueError(msg)
        handheld = motion == "handheld"
        if handheld:
            speed = 0.6 * speed
        rng = np.random.default_rng(self._path_rng_state)
        lo, hi = self.free_area()
        centre = (lo + hi) / 2
        a, b = (hi - lo) / 2 - PATH_MARGIN
        phase0 = rng.uniform(0, 2 * math.pi)
        direction = 1.0 if rng.uniform() < 0.5 else -1.0
        gaze_amp, gaze_period = math.radians(rng.uniform(20, 40)), rng.uniform(6.0, 12.0)
        gaze_phase = rng.uniform(0, 2 * math.pi)
        # arc length of the ellipse, so the robot moves at constant speed
        theta = np.linspace(0.0, 2 * math.pi, 4097)
        seg = np.hypot(np.diff(a * np.cos(theta)), np.diff(b * np.sin(theta)))
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        t = np.arange(n) / rate_hz
        s = np.mod(speed * t, arc[-1])
        th = phase0 + direction * np.interp(s, arc, theta)
        x, y = centre[0] + a * np.cos(th), centre[1] + b * np.sin(th)
        heading = np.arctan2(direction * b * np.cos(th), -direction * a * np.sin(th))  # tangent
        outward = -direction  # driving ccw (direction +1) the room's walls are on the right: negative yaw
        gaze = outward * gaze_amp * 0.5 * (1 - np.cos(2 * math.pi * t / gaze_period + gaze_phase))
        yaw = heading + gaze
        pitch = np.radians(CAMERA_PITCH_DEG + 3.0 * np.sin(2 * math.pi * t / 7.0 + phase0))
        roll = np.radians(1.0 * np.sin(2 * math.pi * t / 3.1))
        z = CAMERA_HEIGHT + 0.04 * np.sin(2 * math.pi * t / 4.3)
        if handheld:
            hrng = np.random.default_rng([self.seed, 4])

            def wobble(amp: float) -> np.ndarray:  # smooth random signal in [-amp, amp]
                f, ph = hrng.uniform(0.1, 0.6, 3), hrng.uniform(0, 2 * math.pi, 3)
                w = hrng.uniform(0.2, 1.0, 3)
                return amp * (w[:, None] * np.sin(2 * math.pi * f[:, None] * t + ph[:, None])).sum(0) / w.sum()

            side = wobble(0.08)
            x, y = x - side * np.sin(heading), y + side * np.cos(heading)
            z = hrng.uniform(1.2, 1.7) + wobble(0.08)
            yaw = yaw + np.radians(wobble(10.0))
            pitch = np.radians(hrng.uniform(-20, 0) + wobble(5.0))
            roll = np.radians(wobble(6.0))
        poses = np.zeros((n, 4, 4))
        # optical axes in a level robot frame (x forward, y left, z up): z_opt = x, x_opt = -y, y_opt = -z
        base_to_optical = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        for i in range(n):
            cy, sy = math.cos(yaw[i]), math.sin(yaw[i])
            cp, sp = math.cos(pitch[i]), math.sin(pitch[i])
            cr, sr = math.cos(roll[i]), math.sin(roll[i])
            Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
            Ry = np.array([[cp, 0, -sp], [0, 1.0, 0], [sp, 0, cp]])  # positive pitch looks up
            Rx = np.array([[1.0, 0, 0], [0, cr, -sr], [0, sr, cr]])
            poses[i, :3, :3] = Rz @ Ry @ Rx @ base_to_optical
            poses[i, :3, 3] = (x[i], y[i], z[i])
            poses[i, 3, 3] = 1.0
        return poses

    # ------------------------------------------------------------------ rendering

    def _camera_rays(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        key = (width, height, K.tobytes())
        if self._rays.key != key:
            rays = backproject(np.ones((height, width)), K)  # z = 1: the ray parameter is z-depth
            self._rays = _RayCache(key, np.ascontiguousarray(rays.reshape(-1, 3), np.float64))
        return self._rays.rays

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Render one view.

        Args:
            T_world_cam: ``[4,4]`` camera pose (optical frame).
            K: ``[3,3]`` intrinsics at ``size``.
            size: ``(W, H)`` in pixels.

        Returns:
            dict with ``rgb`` ``[H,W,3]`` uint8, ``depth`` ``[H,W]`` float32 (m), ``normals`` ``[H,W,3]``
            float32 (camera frame, towards the camera), ``semantic`` ``[H,W]`` uint8, ``boundary`` ``[H,W]`` uint8.
        """
        W, H = int(size[0]), int(size[1])
        T = np.asarray(T_world_cam, np.float64)
        K = np.asarray(K, np.float64)
        R, o = T[:3, :3], T[:3, 3]
        rays_cam = self._camera_rays(K, W, H)
        d = rays_cam @ R.T  # [N,3] world directions; hit point = o + t d with t the z-depth

        t, face = self._hit_room(o, d)
        d_rows = np.ascontiguousarray(d.T).reshape(3, H, W)
        t_img = t.reshape(H, W)  # views: updating them updates t and owner
        owner = np.full(t.shape, -1, np.int32)  # -1: room
        owner_img = owner.reshape(H, W)
        for k, box in enumerate(self._screen_boxes(T, K, W, H)):
            if box is None:
                continue
            v0, v1, u0, u1 = box
            dd = d_rows[:, v0:v1, u0:u1].reshape(3, -1)
            prim = self.primitives[k]
            th = self._hit_box(prim, o, dd) if prim.kind == "box" else self._hit_cylinder(prim, o, dd)
            tcur = t_img[v0:v1, u0:u1]
            closer = (th < tcur.ravel()).reshape(tcur.shape)
            if closer.any():
                tcur[closer] = th.reshape(tcur.shape)[closer]
                owner_img[v0:v1, u0:u1][closer] = k

        p = o + t[:, None] * d  # [N,3] world hit points
        normal_w = np.zeros_like(p)
        uv = np.zeros((p.shape[0], 2))
        mat_id = np.zeros(p.shape[0], np.int64)
        face_id = np.zeros(p.shape[0], np.int64)
        labels = np.zeros(p.shape[0], np.uint8)
        materials = [self._room_materials["floor"], self._room_materials["ceiling"], self._room_materials["wall"]]

        room = np.nonzero(owner < 0)[0]
        self._shade_room(p[room], face[room], room, normal_w, uv, mat_id, face_id, labels)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(len(self.primitives) + 1))
        for k, prim in enumerate(self.primitives):
            sel = order[bounds[k]:bounds[k + 1]]
            if sel.size == 0:
                continue
            n_k, uv_k, f_k = self._surface(prim, p[sel])
            normal_w[sel], uv[sel], face_id[sel] = n_k, uv_k, f_k
            mat_id[sel] = len(materials)
            labels[sel] = prim.label
            materials.append(prim.material)

        albedo = self._albedo(uv, mat_id, face_id, materials, t * np.linalg.norm(rays_cam, axis=1) / K[0, 0],
                              np.abs(np.einsum("ij,ij->i", normal_w, d)) / np.linalg.norm(d, axis=1))
        to_light = self.light - p
        dist = np.linalg.norm(to_light, axis=1)
        lambert = np.maximum(np.einsum("ij,ij->i", normal_w, to_light) / dist, 0.0)
        shade = 0.35 + 0.75 * lambert / (1.0 + 0.04 * dist**2)
        rgb = np.clip(albedo * shade[:, None] * 255.0 + 0.5, 0, 255).astype(np.uint8)

        normals = normal_w @ R  # world -> camera: R^T n
        flip = np.einsum("ij,ij->i", normals, rays_cam) > 0  # keep them towards the camera
        normals[flip] *= -1.0
        semantic = labels.reshape(H, W)
        return {
            "rgb": rgb.reshape(H, W, 3),
            "depth": t.reshape(H, W).astype(np.float32),
            "normals": normals.reshape(H, W, 3).astype(np.float32),
            "semantic": semantic,
            "boundary": label_boundaries(semantic),
        }

    def _albedo(self, uv, mat_id, face_id, materials, pixel_m, cos_incidence) -> np.ndarray:
        """Albedo ``[N,3]``: procedural materials by :func:`_texture`, photo textures from the atlas with the
        pixel footprint ``pixel_m / sqrt(cos_incidence)`` (metres; the area-preserving isotropic size) as
        the mip-map level of detail."""
        is_image = np.array([isinstance(m, ImageMaterial) for m in materials])
        if not is_image.any():
            return _texture(uv, mat_id, face_id, materials)
        albedo = np.zeros((len(uv), 3))
        img_px = is_image[mat_id]
        proc = np.nonzero(~img_px)[0]
        if proc.size:
            procedural = [m if not isinstance(m, ImageMaterial) else materials[0] for m in materials]
            albedo[proc] = _texture(uv[proc], mat_id[proc], face_id[proc], procedural)
        sel = np.nonzero(img_px)[0]
        dummy = ImageMaterial(0, ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), True)
        mats = [m if isinstance(m, ImageMaterial) else dummy for m in materials]
        A = np.array([m.affine for m in mats])[mat_id[sel]]  # [M,2,3]
        u, v = uv[sel, 0], uv[sel, 1]
        shift = np.array([m.face_shift for m in mats])[mat_id[sel]] * face_id[sel]
        xy = np.stack([A[:, 0, 0] * u + A[:, 0, 1] * v + A[:, 0, 2] + shift,
                       A[:, 1, 0] * u + A[:, 1, 1] * v + A[:, 1, 2] + shift], axis=1)
        texels_per_m = np.sqrt(np.abs(A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]))
        footprint = pixel_m[sel] / np.sqrt(np.maximum(cos_incidence[sel], 0.05)) * texels_per_m
        albedo[sel] = self.atlas.sample(np.array([m.image for m in mats])[mat_id[sel]], xy,
                                        np.array([m.repeat for m in mats])[mat_id[sel]], footprint)
        return albedo

    def _hit_room(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance of rays from inside the room box and the face hit (axis * 2 + (1 if the + side))."""
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(d > 0, self.size, 0.0)
            ts = (bound - o) / d  # [N,3]
        ts[~np.isfinite(ts) | (ts <= 0)] = np.inf
        axis = np.argmin(ts, axis=1)
        t = np.take_along_axis(ts, axis[:, None], axis=1)[:, 0]
        positive = np.take_along_axis(d, axis[:, None], axis=1)[:, 0] > 0
        return t, axis * 2 + positive

    def _shade_room(self, p, face, idx, normal_w, uv, mat_id, face_id, labels) -> None:
        axis = face // 2
        positive = face % 2 == 1
        n = np.zeros((idx.size, 3))
        n[np.arange(idx.size), axis] = np.where(positive, -1.0, 1.0)  # room normals point inwards
        normal_w[idx] = n
        # face coordinates: floor/ceiling (x, y); walls (horizontal along the wall, z)
        u = np.where(axis == 0, p[:, 1], p[:, 0])
        v = np.where(axis == 2, p[:, 1], p[:, 2])
        uv[idx, 0], uv[idx, 1] = u, v
        is_floor, is_ceiling = (axis == 2) & ~positive, (axis == 2) & positive
        mat_id[idx] = np.where(is_floor, 0, np.where(is_ceiling, 1, 2))
        face_id[idx] = face
        labels[idx] = np.where(is_floor, FLOOR, np.where(is_ceiling, CEILING, WALL))

    def _screen_boxes(self, T: np.ndarray, K: np.ndarray, W: int, H: int) -> list[tuple[int, int, int, int] | None]:
        """Per primitive, the pixel rectangle ``(v0, v1, u0, u1)`` (end-exclusive) its projection may cover,
        or None when it is entirely behind the camera or outside the image."""
        if len(self._corners) != len(self.primitives):
            self._corners = np.stack([p.corners() for p in self.primitives]) if self.primitives else np.zeros((0, 8, 3))
        cam = (self._corners - T[:3, 3]) @ T[:3, :3]  # [P,8,3] world -> camera: R^T (p - o)
        z = cam[..., 2]
        near = z <= 0.05
        zs = np.where(near, 1.0, z)
        u = K[0, 0] * cam[..., 0] / zs + K[0, 2]
        v = K[1, 1] * cam[..., 1] / zs + K[1, 2]
        u0 = np.clip(np.floor(u.min(axis=1)), 0, W).astype(int)
        u1 = np.clip(np.ceil(u.max(axis=1)) + 1, 0, W).astype(int)
        v0 = np.clip(np.floor(v.min(axis=1)), 0, H).astype(int)
        v1 = np.clip(np.ceil(v.max(axis=1)) + 1, 0, H).astype(int)
        straddles = near.any(axis=1)  # crosses the camera plane: the projection is unbounded, test every ray
        behind = near.all(axis=1)
        boxes = []
        for b, s, a0, a1, c0, c1 in zip(behind.tolist(), straddles.tolist(), v0.tolist(), v1.tolist(),
                                        u0.tolist(), u1.tolist()):
            if b:
                boxes.append(None)
            elif s:
                boxes.append((0, H, 0, W))
            else:
                boxes.append((a0, a1, c0, c1) if a0 < a1 and c0 < c1 else None)
        return boxes

    @staticmethod
    def _hit_box(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray/box entry distance ``[N]`` (inf for a miss) with the slab method in the box frame.

        ``d`` is ``[3,N]`` (one contiguous row per axis: reductions over a trailing axis of 3 are slow).
        """
        c, s = math.cos(prim.yaw), math.sin(prim.yaw)
        ol = _rotz(-prim.yaw) @ (o - prim.center)
        dl = (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])  # rotate by -yaw about z
        tmin = tmax = None
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                inv = 1.0 / dl[k]
                t1 = (-prim.half[k] - ol[k]) * inv
                t2 = (prim.half[k] - ol[k]) * inv
                lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)  # fmin/fmax skip the NaN of 0 * inf
                tmin = lo if tmin is None else np.fmax(tmin, lo)
                tmax = hi if tmax is None else np.fmin(tmax, hi)
        hit = (tmax >= tmin) & (tmin > _EPS)
        return np.where(hit, tmin, np.inf)

    @staticmethod
    def _hit_cylinder(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray/vertical-cylinder entry distance ``[N]``: the side or the cap facing the camera (``d`` is ``[3,N]``)."""
        r, hh = prim.half[0], prim.half[2]
        ol = o - prim.center
        dx, dy, dz = d[0], d[1], d[2]
        a = dx * dx + dy * dy
        b = 2.0 * (ol[0] * dx + ol[1] * dy)
        c = ol[0] ** 2 + ol[1] ** 2 - r * r
        disc = b * b - 4 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
            z = ol[2] + t_side * dz
            side_ok = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(z) <= hh)
            cap_z = hh if ol[2] > hh else -hh
            t_cap = (cap_z - ol[2]) / dz
            xc, yc = ol[0] + t_cap * dx, ol[1] + t_cap * dy
            cap_ok = (np.abs(ol[2]) > hh) & (t_cap > _EPS) & (xc * xc + yc * yc <= r * r)
        t = np.where(side_ok, t_side, np.inf)
        return np.where(cap_ok & (t_cap < t), t_cap, t)

    @staticmethod
    def _surface(prim: Primitive, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World normals ``[M,3]``, face texture coordinates ``[M,2]`` and face ids ``[M]`` at hit points ``p``."""
        R = _rotz(prim.yaw)
        q = (p - prim.center) @ R  # world -> primitive frame: R^T (p - c)
        m = q.shape[0]
        if prim.kind == "box":
            rel = np.abs(q) / prim.half
            axis = np.argmax(rel, axis=1)
            sign = np.sign(q[np.arange(m), axis])
            n_local = np.zeros_like(q)
            n_local[np.arange(m), axis] = sign
            # the two coordinates spanning the face
            u = np.where(axis == 0, q[:, 1], q[:, 0])
            v = np.where(axis == 2, q[:, 1], q[:, 2])
            face = axis * 2 + (sign > 0)
        else:
            r, hh = prim.half[0], prim.half[2]
            cap = np.abs(q[:, 2]) >= hh - 1e-7
            radial = q[:, :2] / np.maximum(np.linalg.norm(q[:, :2], axis=1, keepdims=True), 1e-12)
            n_local = np.where(cap[:, None], np.array([0.0, 0.0, 1.0]) * np.sign(q[:, 2:3]),
                               np.concatenate([radial, np.zeros((m, 1))], axis=1))
            u = np.where(cap, q[:, 0], np.arctan2(q[:, 1], q[:, 0]) * r)
            v = np.where(cap, q[:, 1], q[:, 2])
            face = np.where(cap, 1 + (q[:, 2] > 0), 0)
        return n_local @ R.T, np.stack([u, v], axis=1), face.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Textures and labels
# --------------------------------------------------------------------------------------------------


def _hash2(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """A per-cell pseudo-random value in [0, 1) from integer cell coordinates (a small integer hash)."""
    h = (i * 73856093) ^ (j * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float64) / 65536.0


def _texture(uv: np.ndarray, mat_id: np.ndarray, face_id: np.ndarray, materials: list[Material]) -> np.ndarray:
    """Albedo ``[N,3]`` in [0,1] of every pixel from its face coordinates and material (one vectorised pass)."""
    table = np.array([[m.cell, m.fine, m.stripe_freq, m.stripe_angle, *m.weights, m.grout] for m in materials])
    cell, fine, freq, angle, w0, w1, w2, grout = (np.take(col, mat_id) for col in table.T)
    col_a = np.take(np.array([m.colour_a for m in materials]), mat_id, axis=0)
    col_b = np.take(np.array([m.colour_b for m in materials]), mat_id, axis=0)
    seeds = np.take(np.array([m.seed for m in materials], np.int64), mat_id) * 8 + face_id
    u, v = uv[:, 0], uv[:, 1]
    gu, gv = u / cell, v / cell
    iu, iv = np.floor(gu), np.floor(gv)
    coarse = _hash2(iu.astype(np.int64), iv.astype(np.int64), seeds)
    fine_v = _hash2(np.floor(u / fine).astype(np.int64), np.floor(v / fine).astype(np.int64), seeds + 3)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (u * np.cos(angle) + v * np.sin(angle)))
    mix = w0 * coarse + w1 * fine_v + w2 * stripes
    line = ((gu - iu) < grout) | ((gv - iv) < grout)
    albedo = col_a * (1.0 - mix[:, None]) + col_b * mix[:, None]
    return np.where(line[:, None], albedo * 0.45, albedo)


def label_boundaries(semantic: np.ndarray) -> np.ndarray:
    """Semantic boundaries ``[H,W]`` uint8: 1 where a 4-neighbour has a different label (both sides of an edge)."""
    s = np.asarray(semantic)
    b = np.zeros(s.shape, bool)
    dx = s[:, 1:] != s[:, :-1]
    dy = s[1:, :] != s[:-1, :]
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    b[1:, :] |= dy
    b[:-1, :] |= dy
    return b.astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------------


def iter_sequence(
    seed: int,
    n_frames: int,
    size: tuple[int, int],
    *,
    K: np.ndarray | None = None,
    rate_hz: float = DEFAULT_RATE_HZ,
    speed: float = DEFAULT_SPEED_MPS,
) -> Iterator[SequenceFrame]:
    """Render ``n_frames`` of scene ``seed`` along its camera path at ``size`` = (W, H), one at a time.

    Frames carry rgb, float depth, exact normals and semantic labels, and are named ``00000``, ...;
    stamps start at ``START_TIME_S`` and advance by ``1 / rate_hz``. ``K`` defaults to
    :func:`default_intrinsics`.
    """
    W, H = int(size[0]), int(size[1])
    if W <= 0 or H <= 0 or n_frames < 0:
        raise ValueError(f"need a positive size and a non-negative frame count, got {W}x{H} and {n_frames} frames")
    K = default_intrinsics(W, H) if K is None else np.asarray(K, np.float64)
    scene = SyntheticScene(seed)
    for i, T in enumerate(scene.camera_path(n_frames, rate_hz=rate_hz, speed=speed)):
        out = scene.render(T, K, (W, H))
        yield SequenceFrame(
            index=i, stamp=START_TIME_S + i / rate_hz, rgb=out["rgb"], depth=out["depth"], K=K.copy(),
            T_world_cam=T, semantic=out["semantic"], normals=out["normals"], name=f"{i:05d}",
        )
