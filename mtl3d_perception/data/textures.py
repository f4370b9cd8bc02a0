"""Photo textures for the synthetic scenes: CC0 material tiles and photographs, loaded once per process.

The tiles (ambientCG swatches, ``materials/<Category>_<n>.jpg``, 128x128) and photographs
(``photos/*.jpg``) live outside the repository in ``../shared/data/textures`` (README there: sources and
CC0 licences). :func:`texture_library` finds and caches them; where the folder is absent it returns None
and logs one notice, and the scenes keep their procedural textures.

A scene builds a :class:`TextureAtlas` of the images it uses (tile variants with random colour and
brightness, photo crops), each stored as a mip pyramid; :meth:`TextureAtlas.sample` reads albedo at
surface texture coordinates with trilinear mip-mapping (Williams, "Pyramidal parametrics", SIGGRAPH
1983), the level chosen from the pixel's footprint on the surface. Coordinates are functions of the
surface point only (see :class:`ImageMaterial`), so a point has the same colour from every view up to
the prefilter width, which is what a real camera does too. We keep our own sampler because the renderer
is numpy ray casting (no rasteriser or GPU texture unit to hand the job to).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from mtl3d_perception.resources import checkout_root

LOG = logging.getLogger(__name__)

TEXTURES_ENV = "MTL3D_TEXTURES"
SHARED_TEXTURES = Path("shared") / "data" / "textures"  # beside the source checkout (like the HoloLens sequence)
TILE = 128  # atlas images are TILE x TILE texels (the material tiles' own size)
MIP_LEVELS = 5  # 128, 64, 32, 16, 8
PHOTO_LONG_SIDE = 640  # photographs are downscaled to this on load (crops are resampled to TILE anyway)

# Surface kind -> (material categories and weights, albedo mean range, physical tile size range in metres).
# The categories are the file-name prefixes of the tiles; weights are per category, not per tile.
SURFACES: dict[str, tuple[dict[str, float], tuple[float, float], tuple[float, float]]] = {
    "floor": ({"WoodFloor": 3, "Tiles": 2, "Carpet": 1.5, "Marble": 0.7, "Terrazzo": 0.7, "Planks": 0.7,
               "Concrete": 0.5, "Travertine": 0.3, "Tatami": 0.2, "Cork": 0.2}, (0.2, 0.65), (0.6, 2.0)),
    "wall": ({"Plaster": 3, "Paint": 2.5, "Wallpaper": 1.5, "Bricks": 0.8, "Concrete": 0.8, "Tiles": 0.5,
              "WoodSiding": 0.3, "Paper": 0.3}, (0.45, 0.85), (0.8, 2.5)),
    "ceiling": ({"OfficeCeiling": 2, "Plaster": 2, "Paint": 1.5, "Concrete": 0.5}, (0.65, 0.9), (0.8, 2.0)),
    "wood": ({"Wood": 4, "Planks": 1, "Chipboard": 0.7, "Bamboo": 0.4, "Plastic": 0.7, "Metal": 0.5,
              "Marble": 0.3}, (0.2, 0.7), (0.4, 1.2)),
    "fabric": ({"Fabric": 4, "Carpet": 0.5}, (0.15, 0.7), (0.3, 1.0)),
    "object": ({"Plastic": 2, "Metal": 1.5, "Rubber": 0.5, "Cardboard": 0.7, "Fabric": 0.7, "Wood": 0.7,
                "Porcelain": 0.5, "GlazedTerracotta": 0.5, "Marble": 0.3, "Foil": 0.2}, (0.15, 0.8), (0.1, 0.4)),
    "cover": ({"Paper": 1, "Fabric": 1, "Cardboard": 1}, (0.15, 0.8), (0.1, 0.3)),
    "linen": ({"Fabric": 1}, (0.6, 0.92), (0.3, 1.0)),  # bed sheets, pillows, roller blinds: light and muted
}
# Surface kind -> the largest colour saturation factor drawn (0: grey; :func:`_saturate`): painted rooms and
# bed linen are mostly muted, whatever colour the tile had.
MUTED = {"wall": 0.7, "ceiling": 0.3, "linen": 0.4}
PHOTO_SURFACES = ("painting", "tv", "window")  # one photo crop stretched over the face (no repeat)


# (RGB in [0, 1], weight). Picture frames are mostly wood, black or gilt; window casings mostly white, off-white or
# aluminium: with the same palettes windows were taken for paintings (session 9 review: window IoU 15).
FRAME_COLOURS = (([0.45, 0.3, 0.15], 3), ([0.3, 0.18, 0.1], 2), ([0.06, 0.05, 0.05], 3), ([0.75, 0.6, 0.3], 2),
                 ([0.9, 0.88, 0.85], 1))
CASING_COLOURS = (([0.93, 0.93, 0.91], 4), ([0.84, 0.82, 0.76], 2), ([0.68, 0.69, 0.7], 2), ([0.22, 0.22, 0.24], 1))


def _pick(rng: np.random.Generator, palette: tuple[tuple[list[float], float], ...]) -> np.ndarray:
    """One colour ``[3]`` of a ``palette`` of (RGB, weight) pairs, drawn by weight."""
    weights = np.array([w for _, w in palette], np.float64)
    return np.asarray(palette[int(rng.choice(len(palette), p=weights / weights.sum()))][0], np.float64)


def _saturate(img: np.ndarray, factor: float) -> np.ndarray:
    """``img`` [..., 3] RGB with its colour scaled by ``factor`` about each pixel's grey (0: grey, 1: unchanged)."""
    grey = img.mean(axis=-1, keepdims=True)
    return grey + (img - grey) * factor


def _border(extent: tuple[float, float], width_m: float) -> tuple[int, int]:
    """A border ``width_m`` metres wide on a face of ``extent`` = (width, height) m, in texels (x, y) of a TILE image."""
    return (max(1, round(TILE * width_m / max(extent[0], 1e-3))), max(1, round(TILE * width_m / max(extent[1], 1e-3))))


def _frame(img: np.ndarray, extent: tuple[float, float], width_m: float, colour: np.ndarray) -> np.ndarray:
    """``img`` [TILE,TILE,3] with a ``width_m`` m border of ``colour`` [3] RGB in [0, 1] (a frame, bezel or casing)."""
    bx, by = _border(extent, width_m)
    out = img.copy()
    out[:by], out[-by:], out[:, :bx], out[:, -bx:] = colour, colour, colour, colour
    return out


def class_look(surface: str, crop: np.ndarray, extent: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """What tells a painting, a tv and a window apart in a real room, on a photo crop ``[TILE,TILE,3]`` in [0, 1].

    Without it the three classes showed the same photographs and differed only in size and height: the
    network confused them (held-out synthetic scenes: painting -> tv 42 %, window -> painting 32 %, IoU 25-35).

    - ``painting``: a picture frame 2-7 cm wide (:data:`FRAME_COLOURS`: mostly wood, black or gilt) around it.
    - ``tv``: a near-black bezel 1-3 cm wide; the screen is off (near-black, a faint reflection gradient) half
      the time, else the picture a little brighter and more saturated (an emissive screen).
    - ``window``: a casing 4-8 cm wide (:data:`CASING_COLOURS`: mostly white, off-white or aluminium) and mullions
      (one vertical bar, sometimes also a horizontal one); the view outside overexposed and hazy, as indoor cameras
      see it. (Curtains and blinds, also NYU13 ``window``, are geometry: :mod:`.synthetic`.)

    ``extent`` is the face's (width, height) in metres (the border widths are metres on the face). Returns float32
    ``[TILE,TILE,3]`` in [0, 1]; other surfaces get ``crop`` back unchanged.
    """
    if surface == "painting":
        colour = _pick(rng, FRAME_COLOURS) * rng.uniform(0.8, 1.15)
        return np.clip(_frame(crop, extent, rng.uniform(0.02, 0.07), colour), 0.0, 1.0).astype(np.float32)
    if surface == "tv":
        if rng.uniform() < 0.5:
            y, x = np.mgrid[0:TILE, 0:TILE] / TILE
            gloss = rng.uniform(0.02, 0.06) + rng.uniform(0.0, 0.08) * np.clip(1.0 - (x + y) * rng.uniform(0.6, 1.2), 0, 1)
            screen = np.repeat(gloss[..., None], 3, -1) * np.array([0.95, 1.0, 1.1])
        else:
            screen = _saturate(crop, rng.uniform(1.1, 1.4)) * rng.uniform(1.0, 1.3)
        bezel = np.full(3, rng.uniform(0.02, 0.08))
        return np.clip(_frame(screen, extent, rng.uniform(0.01, 0.03), bezel), 0.0, 1.0).astype(np.float32)
    if surface == "window":
        exposure = rng.uniform(1.3, 2.0)
        view = 1.0 - (1.0 - np.clip(crop * exposure, 0.0, 1.0)) * rng.uniform(0.5, 0.8)  # haze towards white
        colour = _pick(rng, CASING_COLOURS) * rng.uniform(0.9, 1.05)
        out = _frame(view, extent, rng.uniform(0.04, 0.08), colour)
        bx, by = _border(extent, rng.uniform(0.02, 0.04))
        out[:, TILE // 2 - bx // 2: TILE // 2 + (bx + 1) // 2] = colour
        if rng.uniform() < 0.5:
            out[TILE // 2 - by // 2: TILE // 2 + (by + 1) // 2] = colour
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    return crop


@dataclass(frozen=True)
class ImageMaterial:
    """An atlas image mapped onto a surface.

    ``affine`` ``[2,3]`` maps face coordinates ``(u, v, 1)`` (metres, see ``SyntheticScene``) to texel
    coordinates ``(x, y)`` at level 0; ``repeat`` wraps them (tiles), otherwise they clamp (photo crops).
    ``face_shift`` offsets each face of a primitive (texels per face id) so faces do not repeat each other.
    """

    image: int
    affine: tuple[tuple[float, float, float], tuple[float, float, float]]
    repeat: bool
    face_shift: float = 0.0


@dataclass(frozen=True)
class TextureLibrary:
    """The tile files by category and the photograph files (decoded lazily, cached per process)."""

    root: Path
    tiles: dict[str, tuple[Path, ...]]
    photos: tuple[Path, ...]

    def tile(self, path: Path) -> np.ndarray:
        """One tile ``[TILE,TILE,3]`` float32 RGB in [0, 1]."""
        return _read_rgb(str(path), TILE).astype(np.float32) / 255.0

    def photo(self, path: Path) -> np.ndarray:
        """One photograph ``[h,w,3]`` float32 RGB in [0, 1], long side at most ``PHOTO_LONG_SIDE``."""
        return _read_rgb(str(path), PHOTO_LONG_SIDE).astype(np.float32) / 255.0


@lru_cache(maxsize=2048)
def _read_rgb(path: str, long_side: int) -> np.ndarray:
    """Decoded uint8 RGB, cached per process (uint8 keeps all tiles and photos under ~100 MB)."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        msg = f"cannot decode texture image {path}; expected a readable JPEG"
        raise ValueError(msg)
    h, w = bgr.shape[:2]
    s = long_side / max(h, w)
    if s < 1.0:
        bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    elif (h, w) != (long_side, long_side) and long_side == TILE:
        bgr = cv2.resize(bgr, (TILE, TILE), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb.setflags(write=False)  # shared by every scene of the process
    return rgb


def textures_dir() -> Path | None:
    """``$MTL3D_TEXTURES`` if set, else ``../shared/data/textures`` beside the source checkout (found from any
    working directory); None for an installed package without the variable (an install trial: the notice named a
    folder made up from site-packages' parent)."""
    if env := os.environ.get(TEXTURES_ENV):
        return Path(env)
    root = checkout_root()
    return root.parent / SHARED_TEXTURES if root is not None else None


def texture_library(root: str | Path | None = None) -> TextureLibrary | None:
    """The texture folder at ``root`` (default :func:`textures_dir`) or None, with one logged notice, when
    it is absent or holds no tiles. Cached: the folder is listed once per process and path, however it is named
    (``texture_library()``, ``texture_library(None)`` and the folder's path share one entry).
    """
    path = Path(root) if root is not None else textures_dir()
    return _texture_library(path.absolute() if path is not None else None)


@lru_cache(maxsize=8)
def _texture_library(path: Path | None) -> TextureLibrary | None:
    if path is None:
        LOG.warning("synthetic scenes: no texture folder (an installed package: set $%s to the CC0 texture folder, "
                    "materials/ and photos/): using procedural textures", TEXTURES_ENV)
        return None
    tiles: dict[str, list[Path]] = {}
    for f in sorted((path / "materials").glob("*.jpg")) if (path / "materials").is_dir() else []:
        tiles.setdefault(f.stem.rsplit("_", 1)[0], []).append(f)
    photos = tuple(sorted((path / "photos").glob("*.jpg"))) if (path / "photos").is_dir() else ()
    if not tiles or not photos:
        LOG.warning("synthetic scenes: no texture tiles/photos in %s (set $%s): using procedural textures",
                    path, TEXTURES_ENV)
        return None
    return TextureLibrary(path, {k: tuple(v) for k, v in tiles.items()}, photos)


def _mips(img: np.ndarray) -> list[np.ndarray]:
    levels = [img]
    for _ in range(MIP_LEVELS - 1):
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return levels


class TextureAtlas:
    """A scene's images as mip pyramids, built from a :class:`TextureLibrary` with the scene's own rng."""

    def __init__(self, library: TextureLibrary, rng: np.random.Generator) -> None:
        self.library = library
        self.rng = rng
        self._images: list[np.ndarray] = []
        self._levels: list[np.ndarray] = []  # per level [M*S*S, 3] float32, built on first sample

    def __len__(self) -> int:
        return len(self._images)

    def _add(self, img: np.ndarray) -> int:
        self._images.append(np.ascontiguousarray(img, np.float32))
        self._levels = []
        return len(self._images) - 1

    def material(self, surface: str, extent: tuple[float, float] = (1.0, 1.0)) -> ImageMaterial:
        """A new material for a ``surface`` kind (a key of :data:`SURFACES` or :data:`PHOTO_SURFACES`).

        Tiles get a random tile of a plausible category, colour/brightness change, physical size and
        rotation; photo surfaces get a random crop with the face's aspect ``extent`` = (width, height) in
        metres, mapped once over a face centred at (0, 0) (a primitive's face coordinates).
        """
        rng = self.rng
        if surface in PHOTO_SURFACES:
            return self._photo_material(surface, extent)
        if surface not in SURFACES:
            msg = f"unknown surface kind {surface!r}; expected one of {', '.join([*SURFACES, *PHOTO_SURFACES])}"
            raise ValueError(msg)
        weights, mean_range, size_range = SURFACES[surface]
        cats = [c for c in weights if c in self.library.tiles]
        p = np.array([weights[c] for c in cats], np.float64)
        cat = cats[int(rng.choice(len(cats), p=p / p.sum()))]
        files = self.library.tiles[cat]
        tile = self.library.tile(files[int(rng.integers(len(files)))])
        # colour: contrast about the mean, a target mean brightness, a per-channel tint
        mean = tile.reshape(-1, 3).mean(0)
        contrast = rng.uniform(0.6, 1.3)
        target = rng.uniform(*mean_range)
        tint = 1.0 + rng.uniform(-0.15, 0.15, 3)
        img = ((tile - mean) * contrast + mean) * (target / max(float(mean.mean()), 1e-3)) * tint
        if surface in MUTED:
            img = _saturate(img, rng.uniform(0.0, MUTED[surface]))
        if rng.uniform() < 0.5:  # flip: more variety from the same tile
            img = img[:, ::-1]
        img = np.clip(img, 0.0, 1.0)
        metres = rng.uniform(*size_range)  # physical size of one tile repeat (upsampled 2-4x and more)
        angle = rng.choice([0.0, 0.5 * math.pi]) + rng.normal(0, 0.05) if surface in ("floor", "wall", "ceiling") \
            else rng.uniform(0, 2 * math.pi)
        c, s = math.cos(angle) * TILE / metres, math.sin(angle) * TILE / metres
        off = rng.uniform(0, TILE, 2)
        affine = ((c, -s, float(off[0])), (s, c, float(off[1])))
        return ImageMaterial(self._add(img), affine, True, face_shift=float(rng.uniform(20, 100)))

    def _photo_material(self, surface: str, extent: tuple[float, float]) -> ImageMaterial:
        rng = self.rng
        photos = self.library.photos
        photo = self.library.photo(photos[int(rng.integers(len(photos)))])
        h, w = photo.shape[:2]
        aspect = max(extent[0], 1e-3) / max(extent[1], 1e-3)
        ch = int(rng.uniform(0.3, 1.0) * min(h, w / aspect))
        cw = max(2, min(w, int(ch * aspect)))
        ch = max(2, ch)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (TILE, TILE), interpolation=cv2.INTER_AREA)
        crop = np.clip(crop * rng.uniform(0.7, 1.1), 0.0, 1.0)
        crop = class_look(surface, crop, extent, rng)
        sx, sy = TILE / max(extent[0], 1e-3), TILE / max(extent[1], 1e-3)
        # u right, v up on the face -> x right, y down in the image, face centre at the image centre
        affine = ((sx, 0.0, TILE / 2), (0.0, -sy, TILE / 2))
        return ImageMaterial(self._add(crop), affine, False)

    def _pyramid(self) -> list[np.ndarray]:
        if len(self._levels) != MIP_LEVELS:
            per_image = [_mips(img) for img in self._images]
            self._levels = [np.concatenate([p[k].reshape(-1, 3) for p in per_image]) for k in range(MIP_LEVELS)]
        return self._levels

    def sample(self, image: np.ndarray, xy: np.ndarray, repeat: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Albedo ``[N,3]`` in [0, 1] at texel coordinates ``xy`` ``[N,2]`` (level 0) of atlas images ``image``
        ``[N]`` (int), wrapping where ``repeat`` ``[N]`` (bool) else clamping; ``footprint`` ``[N]`` is the
        pixel's size in level-0 texels, which picks the two mip levels blended (trilinear filtering).
        """
        levels = self._pyramid()
        lod = np.clip(np.log2(np.maximum(footprint, 1.0)), 0.0, MIP_LEVELS - 1.0)
        l0 = np.minimum(np.floor(lod).astype(np.int64), MIP_LEVELS - 2)
        frac = (lod - l0)[:, None]
        out = np.zeros((len(xy), 3), np.float32)
        for k in range(MIP_LEVELS - 1):
            sel = np.nonzero(l0 == k)[0]
            if sel.size:
                a = self._bilinear(levels[k], k, image[sel], xy[sel], repeat[sel])
                b = self._bilinear(levels[k + 1], k + 1, image[sel], xy[sel], repeat[sel])
                out[sel] = a * (1.0 - frac[sel]) + b * frac[sel]
        return out

    @staticmethod
    def _bilinear(flat: np.ndarray, level: int, image: np.ndarray, xy: np.ndarray, repeat: np.ndarray) -> np.ndarray:
        S = TILE >> level
        p = xy / (1 << level) - 0.5  # texel centres at integer + 0.5
        i0 = np.floor(p).astype(np.int64)
        f = (p - i0).astype(np.float32)
        base = image * (S * S)
        acc = np.zeros((len(xy), 3), np.float32)
        for dy in (0, 1):
            for dx in (0, 1):
                x, y = i0[:, 0] + dx, i0[:, 1] + dy
                x = np.where(repeat, np.mod(x, S), np.clip(x, 0, S - 1))
                y = np.where(repeat, np.mod(y, S), np.clip(y, 0, S - 1))
                w = (f[:, 0] if dx else 1.0 - f[:, 0]) * (f[:, 1] if dy else 1.0 - f[:, 1])
                acc += flat[base + y * S + x] * w[:, None]
        return acc
