"""Augmentations applied identically to every view of a sample, keeping labels and geometry consistent.

- resize and crop: images and labels resampled (labels nearest, boundaries by area so thin edges
  survive downscaling); K follows through ``geometry.resize_intrinsics`` / ``crop_intrinsics``;
- horizontal flip: images and labels mirrored, K by ``geometry.flip_intrinsics``, poses by
  ``geometry.flip_pose`` (camera and world mirrored in x, so transforms stay rigid), normals' x negated;
- colour jitter: brightness, contrast and saturation, the same draw for every view (matching across
  views stays valid);
- camera effects (:func:`camera_effects`, for the source kinds in ``CameraEffectsConfig.kinds``, by default
  synthetic only: real frames have them already): what a real camera does to an image, per view where a
  camera varies per frame: exposure and white balance (a per-sample draw plus a smaller per-view one, as
  auto-exposure drifts), vignetting (the same lens for every view), motion blur (a short line kernel in a
  random direction), sensor noise (shot + read, the Poisson-Gaussian model of Foi et al., "Practical
  Poissonian-Gaussian noise modeling", IEEE TIP 2008, in linear light) and JPEG artefacts (OpenCV's encoder
  at a random quality). Only the images change: labels, K and poses stay exact.

Depth values do not change under any of these. Randomness comes from a ``numpy.random.Generator`` the
caller seeds, so a sample's augmentation is reproducible (and a resumed run sees the same data).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from mtl3d_perception import geometry
from mtl3d_perception.data.batch import ViewSample
from mtl3d_perception.runtime.frames import resize_to_network
from mtl3d_perception.typed_config import require


@dataclass
class CameraEffectsConfig:
    """Real-camera photometric effects (module docstring); a strength of 0 (or probability 0) switches one off."""

    enabled: bool = True
    kinds: tuple[str, ...] = ("synthetic",)  # data source kinds they apply to
    exposure_stops: float = 0.5  # per sample, +/- (a factor 2**U(-e, e) in linear light)
    exposure_view_stops: float = 0.15  # per view on top
    white_balance: float = 0.12  # per-channel gain 1 + U(-w, w) per sample (green fixed)
    white_balance_view: float = 0.03  # per view on top
    vignetting: float = 0.4  # max darkening at the image corner: gain 1 - U(0, v) * r^2 (r = 1 at the corner)
    read_noise: float = 0.004  # max read-noise sigma, linear intensity in [0, 1]
    shot_noise: float = 0.004  # max shot-noise variance per unit intensity (sigma^2 = shot * I + read^2)
    blur_prob: float = 0.3  # probability of motion blur per view
    blur_px: float = 3.0  # max blur length (pixels)
    jpeg_prob: float = 0.7  # probability of JPEG compression per view
    jpeg_quality: tuple[int, int] = (40, 95)

    def __post_init__(self) -> None:
        k = "data.augment.camera"
        for name in ("exposure_stops", "exposure_view_stops", "white_balance", "white_balance_view", "read_noise",
                     "shot_noise", "blur_px"):
            v = getattr(self, name)
            require(f"{k}.{name}", v, math.isfinite(v) and v >= 0, "a finite number >= 0 (0 switches it off)")
        for name in ("vignetting", "blur_prob", "jpeg_prob"):
            v = getattr(self, name)
            require(f"{k}.{name}", v, 0 <= v <= 1, "a number in [0, 1]")
        lo, hi = self.jpeg_quality
        require(f"{k}.jpeg_quality", self.jpeg_quality, 1 <= lo <= hi <= 100, "[low, high] with 1 <= low <= high <= 100")


@dataclass
class AugmentConfig:
    """Training-time augmentation; ``enabled: false`` leaves only the deterministic resize."""

    enabled: bool = True
    scale: tuple[float, float] = (1.0, 1.3)  # zoom before the random crop back to the output size
    hflip: float = 0.5  # probability
    brightness: float = 0.2  # multiplicative, +/-
    contrast: float = 0.2
    saturation: float = 0.2
    camera: CameraEffectsConfig = dataclasses.field(default_factory=CameraEffectsConfig)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        # zoom in only: a view is cropped from the stretched frame (fit_views), never padded (a trial: [0.6, 0.8]
        # passed and changed nothing)
        require("data.augment.scale", self.scale, 1 <= lo <= hi and math.isfinite(hi),
                "[low, high] with 1 <= low <= high (a zoom in before the crop; zooming out is not done)")
        require("data.augment.hflip", self.hflip, 0 <= self.hflip <= 1, "a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            require(f"data.augment.{name}", v, 0 <= v < 1, "a number in [0, 1) (a factor in 1 +- it)")


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
    """``view`` resized to ``wh`` = (W, H) as the runtime resizes a frame (``runtime.frames.resize_to_network``: the
    whole image, K scaled per axis); labels by nearest neighbour, so depth and classes are never averaged."""
    H, W = view.hw
    if (W, H) == tuple(wh):
        return view
    rgb, K = resize_to_network(view.rgb, view.K, wh)  # the runtime's own resize
    return ViewSample(
        rgb=rgb,
        K=K,
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
    """Stretch every whole view to ``wh`` x ``scale`` (:func:`resize_view`: the runtime's resize, K scaled per axis)
    and crop ``wh``: the zoom and crop of the augmentation happen within the view the runtime gives the network, so
    a camera of another aspect ratio (16:9 for a 4:3 network) is trained on the stretched geometry the node, replay
    and ``mtl3d eval`` run it on, and ``scale`` 1 is exactly that view. (Before, the view kept the camera's aspect and
    a 16:9 frame was cropped to its central 75 %: objects 1.33x narrower than at run time, the sides never seen.)

    ``offset`` in [0, 1]^2 places the crop window (0.5, 0.5 = centred), the same for every view.
    """
    out = []
    W, H = wh
    for v in views:
        cover = (max(W, int(round(W * scale))), max(H, int(round(H * scale))))
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


_SRGB_GAMMA = 2.2  # the simple power-law approximation of sRGB (IEC 61966-2-1) for linear light


def _motion_blur_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel ``length`` pixels long at ``angle`` radians (a straight camera shake)."""
    size = int(np.ceil(length)) | 1
    k = np.zeros((size, size), np.float32)
    c = (size - 1) / 2.0
    for s in np.linspace(-length / 2, length / 2, 4 * size):
        x, y = c + s * np.cos(angle), c + s * np.sin(angle)
        k[int(round(y)), int(round(x))] += 1.0
    return k / k.sum()


def camera_effects(rgbs: list[np.ndarray], cfg: CameraEffectsConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """The views' uint8 RGB images ``[H,W,3]`` as a real camera might have taken them (module docstring).

    Exposure, white balance, vignetting and noise act in linear light (gamma 2.2); blur before noise
    (the scene blurs, the sensor adds noise); JPEG last. Raises ValueError for a bad quality range.
    """
    q0, q1 = cfg.jpeg_quality
    if not 1 <= q0 <= q1 <= 100:
        msg = f"jpeg_quality must be 1 <= lo <= hi <= 100, got {cfg.jpeg_quality}"
        raise ValueError(msg)
    exposure = rng.uniform(-cfg.exposure_stops, cfg.exposure_stops)
    wb = 1.0 + rng.uniform(-cfg.white_balance, cfg.white_balance, 3)
    wb[1] = 1.0
    vignette = rng.uniform(0.0, cfg.vignetting)
    out = []
    for rgb in rgbs:
        H, W = rgb.shape[:2]
        x = (rgb.astype(np.float32) / 255.0) ** _SRGB_GAMMA
        gain = 2.0 ** (exposure + rng.uniform(-cfg.exposure_view_stops, cfg.exposure_view_stops))
        view_wb = wb * (1.0 + rng.uniform(-cfg.white_balance_view, cfg.white_balance_view, 3))
        x = x * (gain * view_wb).astype(np.float32)
        if vignette > 0:
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
            r2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / (((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2)
            x = x * (1.0 - vignette * r2)[..., None]
        if cfg.blur_px > 1.0 and rng.uniform() < cfg.blur_prob:
            kernel = _motion_blur_kernel(rng.uniform(1.0, cfg.blur_px), rng.uniform(0, np.pi))
            x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT)
        read, shot = rng.uniform(0, cfg.read_noise), rng.uniform(0, cfg.shot_noise)
        if read > 0 or shot > 0:
            sigma = np.sqrt(shot * np.clip(x, 0.0, None) + read * read)
            x = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
        img = np.clip(np.clip(x, 0.0, 1.0) ** (1.0 / _SRGB_GAMMA) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if rng.uniform() < cfg.jpeg_prob:
            quality = int(rng.integers(q0, q1 + 1))
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                msg = f"JPEG encoding failed at quality {quality} for a {W}x{H} image"
                raise RuntimeError(msg)
            img = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
        out.append(img)
    return out


def augment_views(views: list[ViewSample], wh: tuple[int, int], cfg: AugmentConfig,
                  rng: np.random.Generator | None, kind: str = "") -> list[ViewSample]:
    """Training augmentation when ``cfg.enabled`` and ``rng`` is given; otherwise the runtime's view of the frames:
    each whole image resized to ``wh`` (stretched for another aspect ratio, K scaled per axis, as
    ``runtime.frames.resize_to_network``), so ``mtl3d eval`` and validation score what the node and replay run.

    ``kind`` is the data source kind; camera effects apply when it is in ``cfg.camera.kinds``.
    """
    if rng is None or not cfg.enabled:
        return [resize_view(v, wh) for v in views]
    scale = float(rng.uniform(*cfg.scale))
    views = fit_views(views, wh, scale=scale, offset=(float(rng.uniform()), float(rng.uniform())))
    if rng.uniform() < cfg.hflip:
        views = [flip_view(v) for v in views]
    b, c, s = (float(rng.uniform(1 - a, 1 + a)) for a in (cfg.brightness, cfg.contrast, cfg.saturation))
    rgbs = color_jitter([v.rgb for v in views], b, c, s)
    if cfg.camera.enabled and kind in cfg.camera.kinds:
        rgbs = camera_effects(rgbs, cfg.camera, rng)
    return [dataclasses.replace(v, rgb=r) for v, r in zip(views, rgbs)]
