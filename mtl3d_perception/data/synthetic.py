"""Procedural indoor scenes with exact multi-view ground truth (numpy ray casting).

A scene is one box-shaped room (floor, ceiling, four walls) furnished along its walls with objects built
from boxes (rotated about the vertical axis) and vertical cylinders, each labelled with the NYUv2-13 class
it stands for (bed, sofa, table, chair, furniture, books, objects, tv, painting, window), plus small
clutter on the floor. Parts are labelled as NYUv2 labels them: tall cabinets are often bookshelves (rows of
books against their fronts), beds are made (frame, sheet, duvet and headboard ``bed``, pillows ``objects``), and
windows often carry curtains and/or a roller blind (``window``: NYU40 "curtain" and "blinds" map there). Every surface
carries a texture defined in its own face coordinates (world coordinates for the room, object coordinates
for furniture), so the same surface point has the same colour in every view and features match across
views: CC0 photo textures (material tiles; photo crops on paintings, screens and windows, each framed as
its class is: :func:`.textures.class_look`) where the texture folder is available, procedural
ones otherwise. Shading is Lambertian under one ceiling light plus ambient; it depends on the surface
point only, never on the viewer.

Rendering (:class:`.raycast.RoomRenderer`: one ray per pixel through K) returns, for any pose and resolution:

- ``rgb`` ``[H,W,3]`` uint8, ``depth`` ``[H,W]`` float32 z-depth in metres (every pixel valid: the room
  is closed), ``normals`` ``[H,W,3]`` float32 unit, camera optical frame, towards the camera,
  ``semantic`` ``[H,W]`` uint8 NYU13 ids, ``boundary`` ``[H,W]`` uint8 (1 on semantic label edges).

This module lays the scene out (room, furniture, materials, camera paths); :mod:`.raycast` draws it. The world frame is z-up with the floor at z = 0 (like ``odom``); camera poses are ``T_world_cam`` with the
camera in the optical convention (x right, y down, z forward). Everything is deterministic per seed.
The furniture stays in a band along the walls and the camera path (a smooth loop at 1.2-1.3 m height,
driving forwards and turning) stays in the free middle of the room.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mtl3d_perception.classes import NYU13_CLASSES, class_index
from mtl3d_perception.data.raycast import Material, Primitive, RoomRenderer, rotz
from mtl3d_perception.data.sequence import DEFAULT_RATE_HZ, START_TIME_S, SequenceFrame
from mtl3d_perception.data.textures import ImageMaterial, TextureAtlas, TextureLibrary, texture_library
from mtl3d_perception.runtime.frames import MAX_IMAGE_PIXELS
from mtl3d_perception.typed_config import SettingError, frame_rate, positive_finite

# Bumped whenever the scene a seed gives changes (layout, parts or their looks), so that a checkpoint's
# ``trained_on`` says which scenes it saw: 1 = up to session 8; 2 = session 9 (class looks: picture frames, tv
# bezels, window casings; bookshelves); 3 = session 10 (made beds, curtains and blinds, the casing palette).
GENERATOR_VERSION = 3
DEFAULT_HFOV_DEG = 65.0
HFOV_RANGE_DEG = (50.0, 90.0)  # the horizontal fields of view scenes and training samples draw from
MOTIONS = ("robot", "handheld")
DEFAULT_SPEED_MPS = 0.5

WALL_BAND = 1.6  # furniture stays within this distance of a wall; the camera path stays outside it
PATH_MARGIN = 0.35  # extra clearance between the camera path and the furniture band
CAMERA_HEIGHT = 1.25
CAMERA_PITCH_DEG = -10.0  # looking slightly down, like a robot's head camera
_CLS = {name: class_index(name) for name in NYU13_CLASSES}


def scene_provenance() -> dict[str, int | str]:
    """What draws the synthetic scenes in this process, for a checkpoint's ``trained_on`` and an evaluation's
    record: ``{"generator": GENERATOR_VERSION, "textures": "photo" | "procedural"}`` (photo where the texture
    folder, :func:`.textures.texture_library`, is found)."""
    return {"generator": GENERATOR_VERSION, "textures": "photo" if texture_library() is not None else "procedural"}


def scene_record(seed: int) -> dict[str, int | str]:
    """The provenance of one rendered scene (``data.sequence.write_sequence``'s ``provenance``): ``{"kind":
    "synthetic", "seed": seed}`` and :func:`scene_provenance` (a seed's scene changes with the generator)."""
    return {"kind": "synthetic", "seed": int(seed), **scene_provenance()}


def default_intrinsics(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """A pinhole K ``[3,3]`` float64 for ``width x height`` with square pixels and ``hfov_deg`` horizontal FOV.

    The principal point is the image centre, ``((W - 1) / 2, (H - 1) / 2)`` in the pixel-centre convention.
    """
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------------


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
        if int(seed) < 0:  # numpy's own refusal names neither the seed nor the rule
            raise SettingError("seed", f"seed must be a whole number >= 0, got {seed}")
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self.size = np.array([rng.uniform(5.4, 8.0), rng.uniform(5.4, 8.0), rng.uniform(2.5, 3.0)])
        self.light = np.array([self.size[0] / 2, self.size[1] / 2, self.size[2] - 0.2])
        self.room_materials: dict[str, Material | ImageMaterial] = dict(self._make_room_materials(rng))
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
        self._renderer = RoomRenderer()

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
            items: list[tuple[float, float, float]] = []  # (start, end) along the wall and top (m) of each item
            s = s0 + rng.uniform(0.0, 0.6)
            while True:
                kind = str(rng.choice(kinds, p=probs / probs.sum()))
                if kind in ("bed", "sofa") and kind in placed_once:
                    kind = "furniture"
                width, build = self._item(kind, rng)
                if s + width > s1:
                    break
                placed_once.add(kind)
                first = len(self.primitives)
                build(origin + along * (s + width / 2), along, inward, yaw)
                items.append((s, s + width, max(p.center[2] + p.half[2] for p in self.primitives[first:])))
                s += width + rng.uniform(0.1, 0.7)
            self._decorate(rng, origin, along, inward, yaw, (s0, s1), items)
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
        """Width along the wall and a builder ``(center_xy_on_wall, along, inward, yaw)`` that adds the item."""
        m = self._material

        def at(base_xy, along, inward, x, y):
            """Item-frame (x along the wall from the item centre, y inward from the wall) -> world xy."""
            return base_xy + along * x + inward * y

        if kind == "bed":
            w, d = rng.uniform(1.9, 2.1), rng.uniform(1.3, 1.5)

            def build(c, along, inward, yaw):
                self._bed(rng, lambda x, y: at(c, along, inward, x, y), yaw, w, d)

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

            return w, build
        if kind == "furniture":
            w, d, h = rng.uniform(0.6, 1.3), rng.uniform(0.4, 0.6), float(rng.choice([0.75, 0.9, 1.8, 2.0]))
            wood = m(rng, "wood", (0.55, 0.4, 0.25), (0.8, 0.7, 0.55), cell=0.3, fine=0.04, stripes=14.0,
                     weights=(0.3, 0.3, 0.4), grout=0.03)

            def build(c, along, inward, yaw):
                self._add_box("furniture", [*at(c, along, inward, 0, d / 2 + 0.02), h / 2], [w / 2, d / 2, h / 2], yaw, wood)
                if h > 1.0 and rng.uniform() < 0.5:
                    self._bookshelf_rows(rng, lambda x, y: at(c, along, inward, x, y), w, d + 0.02, h, yaw)
                elif h < 1.0 and rng.uniform() < 0.5:  # a tv on a low cabinet
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

            return w, build
        if kind == "chair":
            mat = m(rng, "wood", (0.3, 0.2, 0.15), (0.6, 0.45, 0.3), cell=0.1, fine=0.03, stripes=12.0, weights=(0.4, 0.3, 0.3))

            def build(c, along, inward, yaw):
                self._chair(at(c, along, inward, 0, 0.3), yaw + rng.uniform(-0.4, 0.4), mat)

            return 0.55, build
        # "objects": a bin or plant pot on the floor
        r, hh = rng.uniform(0.15, 0.25), rng.uniform(0.2, 0.45)
        mat = m(rng, "object", (0.3, 0.5, 0.3), (0.7, 0.6, 0.4), cell=0.08, fine=0.02, stripes=15.0, weights=(0.4, 0.3, 0.3))

        def build(c, along, inward, yaw):
            xy = at(c, along, inward, 0, r + 0.05)
            self._add_cylinder("objects", [xy[0], xy[1], hh], r, hh, mat)

        return 2 * r + 0.1, build

    def _bookshelf_rows(self, rng: np.random.Generator, at: Callable[[float, float], np.ndarray], w: float,
                        front: float, h: float, yaw: float) -> None:
        """Rows of books standing against the front of a tall cabinet, as a bookcase shows them.

        The cabinet is ``w`` m wide and ``h`` m tall, its front face ``front`` m from the wall, turned by ``yaw``
        (rad) like the cabinet; ``at(x, y)`` maps the item frame (x along the wall from the cabinet's centre, y from
        the wall into the room, metres) to world xy. Rows every 32-42 cm from 12 cm up, each kept with
        probability 0.75; spines 2-9 cm thick and 16-30 cm tall, their backs on the front face, 2.5 cm deep; up to
        36 books in all (there are no shelf boards: the cabinet's face stands in for the back of the shelves).
        On cabinet tops alone books were 0.04 % of the held-out pixels and the class was never learned (IoU 0).
        """
        m = self._material
        shelf = rng.uniform(0.32, 0.42)
        rows = [z for z in np.arange(0.12, h - 0.3, shelf) if rng.uniform() < 0.75]
        left = 36
        for z in rows:
            x = -w / 2 + 0.04 + rng.uniform(0.0, 0.1)
            end = w / 2 - 0.04 - rng.uniform(0.0, 0.3)
            while left > 0:
                bt, bh = rng.uniform(0.02, 0.09), rng.uniform(0.16, min(0.3, shelf - 0.04))
                if x + bt > end:
                    break
                cover = m(rng, "cover", tuple(rng.uniform(0.1, 0.9, 3)), tuple(rng.uniform(0.1, 0.9, 3)),
                          cell=0.05, fine=0.015, stripes=30.0, weights=(0.4, 0.3, 0.3))
                self._add_box("books", [*at(x + bt / 2, front + 0.0125), z + bh / 2], [bt / 2, 0.0125, bh / 2], yaw, cover)
                x += bt + (rng.uniform(0.0, 0.01) if rng.uniform() < 0.85 else rng.uniform(0.05, 0.2))
                left -= 1

    def _bed(self, rng: np.random.Generator, at: Callable[[float, float], np.ndarray], yaw: float, w: float, d: float
             ) -> None:
        """A made bed ``w`` m long (along the wall) and ``d`` m wide, as NYUv2 labels one: frame, mattress (its
        sheet), duvet and headboard are ``bed``; pillows are ``objects`` (NYU40 "pillow" maps to NYU13 "objects").

        A frame 15-30 cm high, the mattress top at 45-60 cm, a headboard 0.8-1.2 m high at the item's -x end; the
        duvet covers 60-75 % of the length from the foot, 2-8 cm above the mattress and hanging 10-25 cm down its
        sides and foot; 1-2 pillows lie side by side on the mattress at the headboard end (their linen the sheet's
        half the time). ``at(x, y)`` maps the item frame (x along the wall from the bed's centre, y from the wall
        into the room, metres) to world xy. Before (session 9) a bed was one fabric box with a wooden end: it was
        taken for a sofa 35 % of the time.
        """
        m = self._material
        h, base, head_h = rng.uniform(0.45, 0.6), rng.uniform(0.15, 0.3), rng.uniform(0.8, 1.2)
        frame = m(rng, "wood", (0.35, 0.22, 0.12), (0.55, 0.38, 0.2), cell=0.2, fine=0.03, stripes=15.0, weights=(0.2, 0.3, 0.5))
        sheet = m(rng, "linen", (0.9, 0.9, 0.88), (0.8, 0.8, 0.82), cell=0.2, fine=0.03, stripes=4.0, weights=(0.5, 0.3, 0.2))
        duvet = m(rng, "fabric", (0.3, 0.35, 0.6), (0.8, 0.8, 0.85), cell=0.15, fine=0.04, stripes=8.0, weights=(0.3, 0.3, 0.4))
        head = frame if rng.uniform() < 0.6 else m(rng, "fabric", (0.5, 0.45, 0.4), (0.35, 0.3, 0.3), cell=0.1, fine=0.03,
                                                    stripes=6.0, weights=(0.4, 0.4, 0.2))
        pillow = sheet if rng.uniform() < 0.5 else m(rng, "linen", (0.92, 0.92, 0.9), (0.85, 0.85, 0.88), cell=0.2,
                                                      fine=0.03, stripes=4.0, weights=(0.5, 0.3, 0.2))
        y = d / 2 + 0.02
        self._add_box("bed", [*at(0.05, y), base / 2], [w / 2 - 0.05, d / 2, base / 2], yaw, frame)
        self._add_box("bed", [*at(0.06, y), (base + h) / 2], [w / 2 - 0.07, d / 2 - 0.02, (h - base) / 2], yaw, sheet)
        top, drape = h + rng.uniform(0.02, 0.08), rng.uniform(0.1, 0.25)
        length = rng.uniform(0.6, 0.75) * (w - 0.1)
        self._add_box("bed", [*at(w / 2 - length / 2 + 0.02, y), (top + h - drape) / 2],
                      [length / 2, d / 2 + 0.02, (top - h + drape) / 2], yaw, duvet)
        self._add_box("bed", [*at(-w / 2 + 0.04, y), head_h / 2], [0.04, d / 2, head_h / 2], yaw, head)
        n_pillows = int(rng.integers(1, 3))
        pw = (d - 0.1) / n_pillows
        for k in range(n_pillows):
            xy = at(-w / 2 + 0.13 + 0.2, 0.07 + pw * (k + 0.5))
            self._add_box("objects", [*xy, h + 0.07], [0.2, pw / 2 - 0.03, 0.07], yaw, pillow)

    def _chair(self, xy: np.ndarray, yaw: float, mat: Material) -> None:
        """A chair at ``xy`` facing ``yaw`` (its back at local -y): seat, four legs, backrest."""
        R = rotz(yaw)[:2, :2]

        def p(x, y):
            return xy + R @ np.array([x, y])

        self._add_box("chair", [*p(0, 0), 0.45], [0.22, 0.22, 0.025], yaw, mat)
        for sx in (-1, 1):
            for sy in (-1, 1):
                self._add_box("chair", [*p(sx * 0.19, sy * 0.19), 0.2125], [0.02, 0.02, 0.2125], yaw, mat)
        self._add_box("chair", [*p(0, -0.2), 0.7], [0.22, 0.02, 0.22], yaw, mat)

    def _decorate(self, rng, origin, along, inward, yaw, s_range, items) -> None:
        """Paintings, windows and wall-mounted tvs on one wall, clear of each other and of the furniture below.

        ``items`` holds the furniture on this wall: (start, end) along it (metres from ``origin``) and top height
        (m). A painting or tv (3-5 cm deep) stays clear of every item that reaches its bottom edge; a window (a 2 cm
        pane, behind anything standing at the wall) of items taller than 1.05 m. Windows are dressed as real ones
        often are, with what NYUv2 also labels ``window`` (NYU40 "curtain" and "blinds" map to NYU13 "window"):
        half of them get a pair of curtains, a third a roller blind pulled part-way down, some both.
        """
        used: list[tuple[float, float]] = []
        for _ in range(int(rng.integers(1, 4))):
            kind = str(rng.choice(["painting", "window", "tv", "painting", "window"]))
            curtain_w = blind = 0.0
            if kind == "window":
                w, h, t, zc = rng.uniform(0.8, 1.5), rng.uniform(1.0, 1.3), 0.02, 0.9
                zc = zc + h / 2
                mat = self._material(rng, "window", (0.55, 0.75, 0.95), (0.85, 0.92, 1.0), cell=0.3, fine=0.06, stripes=3.0,
                                     weights=(0.4, 0.3, 0.3), grout=0.05)
                curtain_w = rng.uniform(0.2, 0.45) if rng.uniform() < 0.5 else 0.0
                blind = rng.uniform(0.15, 0.7) if rng.uniform() < 0.35 else 0.0
            elif kind == "tv":
                w, h, t, zc = rng.uniform(0.9, 1.3), rng.uniform(0.55, 0.75), 0.05, 1.3
                mat = self._material(rng, "tv", (0.04, 0.04, 0.06), (0.25, 0.3, 0.4), cell=0.1, fine=0.03, stripes=25.0,
                                     weights=(0.4, 0.3, 0.3))
            else:
                w, h, t, zc = rng.uniform(0.4, 1.1), rng.uniform(0.35, 0.8), 0.03, rng.uniform(1.4, 1.7)
                mat = self._material(rng, "painting", tuple(rng.uniform(0.1, 0.9, 3)), tuple(rng.uniform(0.1, 0.9, 3)),
                                     cell=0.08, fine=0.025, stripes=9.0, weights=(0.5, 0.3, 0.2))
            reach = 1.05 if kind == "window" else zc - h / 2
            blocked = used + [(a, b) for a, b, top in items if top > reach]
            side = max(curtain_w - 0.05, 0.0)  # curtains overlap the casing by 5 cm
            for _try in range(8):
                s = rng.uniform(s_range[0] + side, s_range[1] - w - side)
                a, b = s - side, s + w + side
                if all(b + 0.1 < u or a > v + 0.1 for u, v in blocked):
                    used.append((a, b))
                    xy = origin + along * (s + w / 2) + inward * (t / 2)
                    self._add_box(kind, [xy[0], xy[1], zc], [w / 2, t / 2, h / 2], yaw, mat)
                    if kind == "window":
                        curtains = ((a, s + 0.05), (s + w - 0.05, b))
                        under = max([top for u, v, top in items for c0, c1 in curtains if u < c1 and v > c0], default=0.0)
                        self._dress_window(rng, origin + along * (s + w / 2), along, inward, yaw, (w, h, zc, t),
                                           curtain_w, blind, under)
                    break

    def _dress_window(self, rng, centre, along, inward, yaw, window, curtain_w: float, blind: float, under: float
                      ) -> None:
        """Curtains ``curtain_w`` m wide each side (0: none) and a roller blind covering the top ``blind`` of the
        pane (0: none) on a window of (width, height, centre height, thickness) ``window`` whose centre on the wall
        is ``centre`` (xy). Curtains hang 3-6 cm thick in front of the casing from a rail 5-30 cm above it (below
        the ceiling) to 0-15 cm below the sill, or to 2 cm above the furniture below them (``under``: its top, m;
        at most 1.05 m, as taller furniture keeps windows away), as curtains behind a sofa or a cabinet do. The
        blind hangs 1 cm in front of the pane, 6 cm in from its edges. Both are labelled ``window``."""
        w, h, zc, t = window
        if curtain_w:
            fabric = self._material(rng, "fabric", (0.7, 0.6, 0.5), (0.5, 0.45, 0.4), cell=0.15, fine=0.03,
                                    stripes=20.0, weights=(0.3, 0.3, 0.4))
            top = min(zc + h / 2 + rng.uniform(0.05, 0.3), self.size[2] - 0.03)
            bottom = max(zc - h / 2 - rng.uniform(0.0, 0.15), under + 0.02)
            depth = rng.uniform(0.03, 0.06)
            for sx in (-1, 1):
                xy = centre + along * sx * (w / 2 + curtain_w / 2 - 0.05) + inward * (t + 0.01 + depth / 2)
                self._add_box("window", [*xy, (top + bottom) / 2], [curtain_w / 2, depth / 2, (top - bottom) / 2],
                              yaw, fabric)
        if blind:
            roller = self._material(rng, "linen", (0.9, 0.88, 0.82), (0.8, 0.8, 0.78), cell=0.2, fine=0.03,
                                    stripes=4.0, weights=(0.5, 0.3, 0.2))
            drop = blind * (h - 0.12)
            xy = centre + inward * (t + 0.005)
            self._add_box("window", [*xy, zc + h / 2 - 0.06 - drop / 2], [w / 2 - 0.06, 0.005, drop / 2], yaw, roller)

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
        for name, mat in self.room_materials.items():
            self.room_materials[name] = self.atlas.material(mat.surface)
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

        Raises:
            SettingError: ``rate_hz`` or ``speed`` not a finite number > 0 (a negative speed would drive the loop
                backwards), or ``n`` < 0.
        """
        frame_rate("rate_hz", rate_hz)
        positive_finite("speed", speed)
        if n < 0:
            raise SettingError("n", f"n must be >= 0 poses, got {n}")
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

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Render one view of this scene from ``T_world_cam`` ``[4,4]`` with ``K`` ``[3,3]`` at ``size`` = (W, H):
        ``rgb``, ``depth``, ``normals``, ``semantic``, ``boundary`` as :meth:`.raycast.RoomRenderer.render` returns them."""
        return self._renderer.render(self, T_world_cam, K, size)


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

    Raises:
        SettingError: on the call, before any frame (so nothing is written for them): ``seed`` < 0, ``n_frames`` < 0,
            ``size`` below 2x2 or above ``runtime.frames.MAX_IMAGE_PIXELS`` (the runtime's input limit), or
            ``rate_hz`` / ``speed`` not a finite number > 0.
    """
    W, H = int(size[0]), int(size[1])
    if min(W, H) < 2 or W * H > MAX_IMAGE_PIXELS:
        msg = f"size must be at least 2x2 and at most {MAX_IMAGE_PIXELS} pixels, got {W}x{H}"
        raise SettingError("size", msg)
    if n_frames < 0:
        raise SettingError("n_frames", f"n_frames must be >= 0, got {n_frames}")
    K = default_intrinsics(W, H) if K is None else np.asarray(K, np.float64)
    scene = SyntheticScene(seed)
    poses = scene.camera_path(n_frames, rate_hz=rate_hz, speed=speed)
    return _render_frames(scene, poses, K, (W, H), rate_hz)


def _render_frames(scene: SyntheticScene, poses: np.ndarray, K: np.ndarray, size: tuple[int, int],
                   rate_hz: float) -> Iterator[SequenceFrame]:
    """:func:`iter_sequence`'s frames, rendered one at a time (its checks ran on the call)."""
    for i, T in enumerate(poses):
        out = scene.render(T, K, size)
        yield SequenceFrame(
            index=i, stamp=START_TIME_S + i / rate_hz, rgb=out["rgb"], depth=out["depth"], K=K.copy(),
            T_world_cam=T, semantic=out["semantic"], normals=out["normals"], name=f"{i:05d}",
        )
