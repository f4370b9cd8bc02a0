"""Augmentations applied identically to every view of a sample, keeping labels and geometry consistent.

- resize and crop: images and labels resampled (labels nearest, boundaries by area so thin edges
  survive downscaling); K follows through ``geometry.resize_intrinsics`` / ``crop_intrinsics``;
- horizontal flip: images and labels mirrored, K by ``geometry.flip_intrinsics``, poses by
  ``geometry.flip_pose`` (camera and world mirrored in x, so transforms stay rigid), normals' x negated;
- colour jitter: brightness, contrast and saturation, the same draw for every view (matching across
  views stays valid).

Depth values do not change under any of these. Randomness comes from a ``numpy.random.Generator`` the
caller seeds, so a sample's augmentation is reproducible (and a resumed run sees the same data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from mtl3d_perception import geometry
from mtl3d_perception.data.batch import ViewSample


@dataclass
class AugmentConfig:
    """Training-time augmentation; ``enabled: false`` leaves only the deterministic resize."""

    enabled: bool = True
    scale: tuple[float, float] = (1.0, 1.3)  # zoom before the random crop back to the output size
    hflip: float = 0.5  # probability
    brightness: float = 0.2  # multiplicative, +/-
    contrast: float = 0.2
    saturation: float = 0.2


def _resize(img: np.ndarray | None, wh: tuple[int, int], interp: int) -> np.ndarray | None:
    if img is None:
        return None
    return cv2.resize(img, wh, interpolation=interp)


def _resize_boundary(b: np.ndarray | None, wh: tuple[int, int]) -> np.ndarray | None:
    """Boundary maps: any boundary in the footprint counts; any invalid pixel in it makes the result invalid."""
    if b is None:
        return None
    known = np.isfinite(b)
    pos = np.where(known, b, 0).astype(np.float32)
    pos = cv2.resize(pos, wh, interpolation=cv2.INTER_AREA if wh[0] < b.shape[1] else cv2.INTER_NEAREST)
    unknown = cv2.resize((~known).astype(np.float32), wh, interpolation=cv2.INTER_NEAREST)
    out = (pos > 0).astype(np.float32)
    out[unknown > 0.5] = np.nan
    return out


def resize_view(view: ViewSample, wh: tuple[int, int]) -> ViewSample:
    """``view`` resized to ``wh`` = (W, H); K scaled through geometry."""
    H, W = view.hw
    if (W, H) == tuple(wh):
        return view
    down = wh[0] < W
    return ViewSample(
        rgb=_resize(view.rgb, wh, cv2.INTER_AREA if down else cv2.INTER_LINEAR),
        K=geometry.resize_intrinsics(view.K, (W, H), wh),
        T_world_cam=view.T_world_cam,
        # NaN-aware nearest neighbour: depth and normals are never averaged across edges.
        depth=_resize(view.depth, wh, cv2.INTER_NEAREST),
        normals=_resize(view.normals, wh, cv2.INTER_NEAREST),
        semantic=_resize(view.semantic, wh, cv2.INTER_NEAREST),
        boundary=_resize_boundary(view.boundary, wh),
    )


def crop_view(view: ViewSample, x0: int, y0: int, wh: tuple[int, int]) -> ViewSample:
    """The ``wh`` = (W, H) window of ``view`` whose top-left pixel is (x0, y0)."""
    W, H = wh
    sl = (slice(y0, y0 + H), slice(x0, x0 + W))

    def crop(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[sl])
    return ViewSample(rgb=crop(view.rgb), K=geometry.crop_intrinsics(view.K, x0, y0), T_world_cam=view.T_world_cam,
                      depth=crop(view.depth), normals=crop(view.normals), semantic=crop(view.semantic),
                      boundary=crop(view.boundary))


def flip_view(view: ViewSample) -> ViewSample:
    """``view`` mirrored horizontally: image, labels, K, pose and normals (x component negated)."""
    def flip(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[:, ::-1])
    normals = flip(view.normals)
    if normals is not None:
        normals[..., 0] *= -1.0
    return ViewSample(rgb=flip(view.rgb), K=geometry.flip_intrinsics(view.K, view.hw[1]),
                      T_world_cam=geometry.flip_pose(np.asarray(view.T_world_cam, np.float64)),
                      depth=flip(view.depth), normals=normals, semantic=flip(view.semantic),
                      boundary=flip(view.boundary))


def fit_views(views: list[ViewSample], wh: tuple[int, int], *, scale: float = 1.0,
              offset: tuple[float, float] = (0.5, 0.5)) -> list[ViewSample]:
    """Resize every view to cover ``wh`` x ``scale`` (keeping aspect) and crop ``wh``.

    ``offset`` in [0, 1]^2 places the crop window (0.5, 0.5 = centred), the same for every view.
    """
    out = []
    W, H = wh
    for v in views:
        h, w = v.hw
        s = max(W / w, H / h) * scale
        cover = (max(W, int(round(w * s))), max(H, int(round(h * s))))
        v = resize_view(v, cover)
        x0 = int(round(offset[0] * (cover[0] - W)))
        y0 = int(round(offset[1] * (cover[1] - H)))
        out.append(crop_view(v, x0, y0, wh) if cover != (W, H) else v)
    return out


def color_jitter(rgbs: list[np.ndarray], brightness: float, contrast: float, saturation: float) -> list[np.ndarray]:
    """Apply one jitter (factors already drawn) to a list of uint8 RGB images."""
    out = []
    for rgb in rgbs:
        x = rgb.astype(np.float32) * brightness
        mean = x.mean()
        x = (x - mean) * contrast + mean
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - grey[..., None]) * saturation + grey[..., None]
        out.append(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    return out


def augment_views(views: list[ViewSample], wh: tuple[int, int], cfg: AugmentConfig,
                  rng: np.random.Generator | None) -> list[ViewSample]:
    """Training augmentation when ``cfg.enabled`` and ``rng`` is given; otherwise a centred resize-crop."""
    if rng is None or not cfg.enabled:
        return fit_views(views, wh)
    scale = float(rng.uniform(*cfg.scale))
    views = fit_views(views, wh, scale=scale, offset=(float(rng.uniform()), float(rng.uniform())))
    if rng.uniform() < cfg.hflip:
        views = [flip_view(v) for v in views]
    b, c, s = (float(rng.uniform(1 - a, 1 + a)) for a in (cfg.brightness, cfg.contrast, cfg.saturation))
    rgbs = color_jitter([v.rgb for v in views], b, c, s)
    return [dataclasses.replace(v, rgb=r) for v, r in zip(views, rgbs)]
