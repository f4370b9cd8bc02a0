"""Geometric depth from the plane sweep (issue 18; beyond the CvM paper, in the line of MVSNet/MVSplat).

The paper feeds the raw correlation volume to the heads and stops there. Here a second plane sweep, of
*matching* features, is read out as a per-pixel distribution over the D inverse-depth candidates:

- ``MatchingFeatures`` m(I) at stride 4 (twice the CvM's resolution: descriptors of 8x8 cells do not
  interpolate between cells, so sub-cell disparities were lost at stride 8): two channel groups, each
  unit-normalised per pixel and scaled by a learnable factor, so one call of the ``mtl3d::cost_volume``
  op gives ``a^2 NCC + b^2 cos``:
  1. normalised image patches (ZNCC, generalises by construction): 3x3 neighbourhoods of the low-pass grey
     image at strides 4 and 8, each mean-subtracted and divided by ``sqrt(|x|^2 + eps^2)`` so that flat
     patches give short vectors (weak, flat matches);
  2. learned features: a small conv on the encoder's stride-4 and stride-8 levels (ImageNet-pretrained
     low-level features as the start), trained by the distribution loss (``train.losses`` ``depth_distribution``).
- ``window_mean`` (``sweep_aggregation: k`` in the model config, applied in ``CvMMTL.sweep_logits``): each cell's
  logits averaged over its k x k cells, as classical stereo aggregates matching costs over a window (Scharstein &
  Szeliski 2002), so one textured cell carries its flat neighbours; the default model uses k = 5 since stage 8.
- ``read_out``: softmax over candidates -> the expectation of inverse depth (the geometric depth, MVSNet's
  soft argmin taken in inverse depth as the candidates are uniform there) and a confidence
  ``1 - H(p) / log D`` in [0, 1]: exactly 0 for a volume flat along depth (single-view mode: the identity
  pose warps every candidate to the same pixel), 1 for a one-hot distribution.
- ``epipolar_span``: how many pixels the sweep's candidates travel in the source at each cell (the pair's parallax
  there), which weighs the depth head's prior scale alignment (``prior_scale_alignment``, ``heads.Predictor``).

Why our own code: no maintained library provides a plane-sweep read-out on our cost-volume op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception.geometry import resize_intrinsics, unit_vectors
from mtl3d_perception.ops.cost_volume_reference import pixel_rays, projection_coefficients, source_pixels

# ITU-R BT.601 luma weights
_LUMA = (0.299, 0.587, 0.114)
FLAT_CONFIDENCE = 1e-5  # read_out: a confidence below this is float rounding of a flat volume's, i.e. 0


def _unit(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero-mean over channels, then ``x / sqrt(|x|^2 + eps^2)`` per pixel: ``[B,C,h,w]`` -> same."""
    x = x - x.mean(1, keepdim=True)
    return x * torch.rsqrt((x * x).sum(1, keepdim=True) + eps * eps)


def patch_features(images: torch.Tensor, stride: int = 4, eps: float = 0.01) -> torch.Tensor:
    """Normalised grey neighbourhoods at ``stride``: ``images`` [B,3,H,W] RGB in [0,1] -> [B, 18, H/s, W/s].

    Channels 0-8: the 3x3 neighbourhood of the grey image area-averaged by ``stride`` (support 3 s pixels);
    channels 9-17: the same at twice the stride, bilinearly resampled to ``stride`` (support 6 s pixels).
    Each group is zero-mean and scaled to unit norm, and the vector divided by sqrt(2), so the dot product
    of two vectors is the mean of two ZNCCs. Sampling these vectors bilinearly at a warped position is
    (nearly) ZNCC on the bilinearly warped low-pass image, the classical plane sweep. Cell j covers input
    pixels s j .. s j + s - 1 (centre s j + (s - 1) / 2, DESIGN §4). ``eps`` (grey levels x sqrt(9))
    shrinks textureless neighbourhoods so they match weakly.
    """
    w = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    grey = (images.float() * w).sum(1, keepdim=True)
    groups = []
    for k in (stride, 2 * stride):
        cells = F.avg_pool2d(grey, k)
        h, w_ = cells.shape[-2:]
        nb = F.unfold(F.pad(cells, (1, 1, 1, 1), mode="replicate"), 3).view(grey.shape[0], 9, h, w_)
        nb = _unit(nb, eps * 3.0)
        if k != stride:
            nb = F.interpolate(nb, size=(grey.shape[-2] // stride, grey.shape[-1] // stride), mode="bilinear",
                               align_corners=False)
        groups.append(nb)
    return torch.cat(groups, 1) * (1.0 / math.sqrt(2.0))


class MatchingFeatures(nn.Module):
    """m(I): ``[a * patches, b * learned]`` at ``stride`` (4), ``[B, 18 + match_channels, H/s, W/s]``.

    ``a`` and ``b`` are learnable (log-parametrised) so the plane-sweep dot product, used directly as the
    softmax logit, is ``a^2 NCC + b^2 cos(learned)``: the two temperatures are learned.
    """

    PATCH_CHANNELS = 18

    def __init__(self, feature_info: list[dict], channels: int, stride: int = 4):
        super().__init__()
        self.stride = stride
        self.levels = [i for i, f in enumerate(feature_info) if f["reduction"] in (stride, 2 * stride)]
        if not self.levels:
            msg = f"the encoder has no feature level at stride {stride} or {2 * stride}: {feature_info}"
            raise ValueError(msg)
        cin = sum(feature_info[i]["num_chs"] for i in self.levels)
        hidden = max(channels, 32)
        self.net = nn.Sequential(
            nn.Conv2d(cin, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.log_patch_scale = nn.Parameter(torch.tensor(0.5 * math.log(20.0)))
        self.log_feature_scale = nn.Parameter(torch.tensor(0.5 * math.log(5.0)))

    @property
    def out_channels(self) -> int:
        return self.PATCH_CHANNELS + self.net[-1].out_channels

    def texture(self, features: torch.Tensor) -> torch.Tensor:
        """How much image texture each cell of ``features`` (this module's output ``[B, C, h, w]``) holds, in [0, 1]:
        the norm of its normalised patches (:func:`patch_features`), ~0 for a flat neighbourhood (shrunk by ``eps``),
        1 for one whose contrast is far above it. ``[B, 1, h, w]``."""
        patches = features[:, : self.PATCH_CHANNELS].float() / self.log_patch_scale.exp()
        return patches.norm(dim=1, keepdim=True).clamp(max=1.0)

    def forward(self, images: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        """``images`` [B,3,H,W] RGB in [0,1]; ``levels``: the encoder's feature maps. Returns float32."""
        H, W = images.shape[-2:]
        size = (H // self.stride, W // self.stride)
        x = torch.cat([_fit(levels[i].float(), size) for i in self.levels], 1)
        learned = unit_vectors(self.net(x).float(), 1, eps=1e-6)
        patches = patch_features(images, self.stride)
        return torch.cat([patches * self.log_patch_scale.exp(), learned * self.log_feature_scale.exp()], 1)


def _fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool (finer level) or bilinearly resize ``x`` to ``size`` = (h, w)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] % size[0] == 0 and x.shape[-1] % size[1] == 0:
        return F.avg_pool2d(x, (x.shape[-2] // size[0], x.shape[-1] // size[1]))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def window_mean(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Window aggregation: ``logits`` [B, D, h, w] averaged over each cell's k x k window (odd k; 1 returns them).

    At the border the mean is over the window's cells inside the volume (no padding values), so a flat volume
    stays flat and single view keeps a confidence of 0. The model config's ``sweep_aggregation``.
    """
    if k == 1:
        return logits
    return F.avg_pool2d(logits, k, 1, k // 2, count_include_pad=False)


def epipolar_span(K: torch.Tensor, T_src_ref: torch.Tensor, size: tuple[int, int], grid: tuple[int, int],
                  depths: torch.Tensor) -> torch.Tensor:
    """How far the plane sweep's candidates travel in the source image: for each cell of the sweep's ``grid``, the
    length in input pixels of the path its ``depths`` trace along the epipolar line, counting the steps between
    consecutive candidates that both land inside the source image in front of its camera.

    The parallax the pair offers there: 0 for a pure rotation and at the epipole of a forward move, ``f b (1/z_min -
    1/z_max)`` for a sideways baseline ``b`` where the whole path stays in the image. Below about one pixel per
    candidate the sweep's expectation is a sub-pixel interpolation, biased towards the middle of the range (session 13,
    models/README.md). The projection is the sweep's own (``ops.cost_volume_reference``: its coefficients in float64,
    its pixel centres and its rule for points behind a camera), computed in float32 outside autocast: under fp16 the
    far ends of near candidates overflow.

    Args:
        K: [N,3,3] intrinsics at the input ``size``, shared by reference and sources.
        T_src_ref: [N,S,4,4] reference-camera points into each source camera.
        size: (H, W) input pixels.
        grid: (h, w) cells of the sweep (stride H/h = W/w).
        depths: [D] candidate depths in metres (``geometry.depth_candidates``).

    Returns:
        [N,1,h,w] float32 input pixels, the widest over the S sources.
    """
    (H, W), (h, w) = size, grid
    with torch.autocast(K.device.type, enabled=False):
        K_grid = resize_intrinsics(K.float(), (W, H), (w, h))
        coef = projection_coefficients(K_grid, T_src_ref, torch.float32)  # [N, S, 12]
        rays = pixel_rays(coef, h, w)  # [N, S, 3, hw]
        z = depths.float().view(1, 1, -1, 1, 1)
        p = z * rays[:, :, None] + coef[:, :, None, 9:, None]  # [N, S, D, 3, hw]
        u, v = source_pixels(p, h, w)  # points behind the camera parked outside the image
        inside = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
        steps = torch.hypot(u.diff(dim=2), v.diff(dim=2)) * (inside[:, :, 1:] & inside[:, :, :-1])
        span = steps.sum(2).amax(1) * (W / w)  # [N, hw], grid cells -> input pixels
    return span.view(-1, 1, h, w)


def read_out(logits: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometric depth and confidence from plane-sweep logits.

    Args:
        logits: [B, D, h, w] matching scores per candidate (the softmax's input).
        depths: [D] (or [B, D]) candidate depths in metres.

    Returns:
        (inverse depth [B,1,h,w] in 1/m: the softmax expectation of 1/depth, confidence [B,1,h,w] in
        [0, 1]: ``1 - entropy / log D``, 0 for a flat distribution).
    """
    D = logits.shape[1]
    inv = 1.0 / depths.to(logits)
    inv = inv.view(1, D, 1, 1) if inv.dim() == 1 else inv.view(-1, D, 1, 1)
    logp = F.log_softmax(logits.float(), 1)
    p = logp.exp()
    inv_depth = (p * inv).sum(1, keepdim=True)
    entropy = -(p * logp).sum(1, keepdim=True)
    confidence = 1.0 - entropy / math.log(D)
    # float32 rounding leaves a flat volume's entropy ~1e-7 short of log D: 0 there, as single view must be (a node
    # trial: single-view frames published a confidence of 1.1e-6, so "confidence > 0" kept every pixel)
    confidence = torch.where(confidence < FLAT_CONFIDENCE, torch.zeros_like(confidence), confidence.clamp(max=1.0))
    return inv_depth, confidence
