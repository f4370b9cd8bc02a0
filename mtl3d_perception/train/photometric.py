"""Self-supervised depth from posed views: the photometric reprojection loss term ``photometric``.

Where frames have no depth label (a robot's colour camera, a bag without a depth topic), the depth the network
predicts for the reference view is supervised by the views themselves: each source image is warped into the
reference view through the predicted depth and the *known* metric relative pose (from TF / the dataset), with
the one warp of :func:`mtl3d_perception.geometry.backward_warp`, and compared with the reference image.
Because the pose is metric and not estimated, the depth it teaches is metric too.

Following Monodepth2 (Godard et al., "Digging Into Self-Supervised Monocular Depth Estimation", ICCV 2019):

- photometric error ``pe = alpha / 2 * (1 - SSIM) + (1 - alpha) * |I_ref - I_src->ref|`` per pixel (mean over
  colour channels), alpha = 0.85, SSIM over 3x3 windows (reflection padding, C1 = 0.01^2, C2 = 0.03^2);
- the per-pixel minimum over the source views (occlusions and out-of-view pixels are better explained by
  another source; a pixel whose projection leaves a source does not count for that source);
- auto-masking: a pixel whose error against the *unwarped* source is lower than against every warped one
  (a static camera, objects moving with it, textureless areas) is left out;
- edge-aware smoothness of the mean-normalised inverse depth, ``|d_x d*| exp(-|d_x I|) + |d_y d*| exp(-|d_y I|)``,
  weighted by ``smoothness`` (1e-3 in Monodepth2).

Single-scale (the network predicts at input resolution). It can be used alone (``loss.weights`` all 0) or beside
the supervised task terms: ``loss.extra.photometric: {weight: 1.0}``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.geometry import backward_warp, relative_pose
from mtl3d_perception.train.loss_base import LossTerm, register_loss

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
OUT_OF_VIEW = 1e3  # error of a pixel whose projection leaves a source: never the minimum when another source sees it


def ssim_distance(x: Tensor, y: Tensor) -> Tensor:
    """``(1 - SSIM(x, y)) / 2`` per pixel over 3x3 windows (Monodepth2's SSIM), in [0, 1]. ``[B,C,H,W]``."""
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return ((1 - num / den) / 2).clamp(0, 1)


def photometric_error(a: Tensor, b: Tensor, alpha: float = 0.85) -> Tensor:
    """``alpha * (1 - SSIM) / 2 + (1 - alpha) * L1`` per pixel, averaged over channels: ``[B,3,H,W]`` -> ``[B,1,H,W]``."""
    l1 = (a - b).abs().mean(1, keepdim=True)
    return alpha * ssim_distance(a, b).mean(1, keepdim=True) + (1 - alpha) * l1


def smoothness_loss(depth: Tensor, image: Tensor) -> Tensor:
    """Edge-aware smoothness of the mean-normalised inverse depth (Monodepth2). depth ``[B,1,H,W]``, image ``[B,3,H,W]``."""
    disp = 1.0 / depth.clamp_min(1e-3)
    disp = disp / disp.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def photometric_loss(depth: Tensor, images: Tensor, K: Tensor, poses: Tensor, *, alpha: float = 0.85,
                     automask: bool = True, smoothness: float = 1e-3) -> dict[str, Tensor]:
    """The photometric reprojection loss of the reference view.

    Args:
        depth: predicted reference depth ``[B,1,H,W]``, metres.
        images: ``[B,V,3,H,W]`` in [0, 1]; view 0 is the reference, 1.. its sources.
        K: ``[B,V,3,3]`` at (H, W). poses: ``[B,V,4,4]`` T_world_cam (metric).
        alpha: SSIM weight of the photometric error.
        automask: leave out pixels the unwarped sources explain better (Monodepth2 Sec. 3.3).
        smoothness: weight of the edge-aware smoothness term in ``total``.

    Returns:
        dict: ``total``, ``reprojection`` (mean minimum error over kept pixels), ``smoothness``, ``kept_fraction``.
    """
    with torch.autocast(depth.device.type, enabled=False):  # pixel coordinates need float32
        depth, images, K, poses = depth.float(), images.float(), K.float(), poses.float()
        ref = images[:, 0]
        errors, identity = [], []
        for v in range(1, images.shape[1]):
            T_src_ref = relative_pose(poses[:, v], poses[:, 0])
            ones = torch.ones_like(depth)
            warped, _ = backward_warp(torch.cat([images[:, v], ones], 1), depth, K[:, 0], K[:, v], T_src_ref)
            inside = warped[:, 3:4] > 1.0 - 1e-4  # all four bilinear taps in the source image, in front of it
            err = photometric_error(warped[:, :3], ref, alpha)
            errors.append(torch.where(inside, err, torch.full_like(err, OUT_OF_VIEW)))
            identity.append(photometric_error(images[:, v], ref, alpha))
        reprojection = torch.cat(errors, 1).amin(1, keepdim=True) if errors else torch.full_like(depth, OUT_OF_VIEW)
        keep = reprojection < OUT_OF_VIEW
        if automask and identity:
            # ties (a static camera, flat colour) are masked: the unwarped source explains them as well
            # (Monodepth2 breaks them with random noise instead)
            keep &= reprojection < torch.cat(identity, 1).amin(1, keepdim=True)
        count = keep.sum()
        repro = torch.where(keep, reprojection, 0.0).sum() / count.clamp_min(1)
        smooth = smoothness_loss(depth, ref)
        total = repro + smoothness * smooth
        return {"total": total, "reprojection": repro, "smoothness": smooth,
                "kept_fraction": count.float() / keep.numel()}


@register_loss("photometric")
class PhotometricLoss(LossTerm):
    """Loss term ``photometric`` (``loss.extra.photometric: {weight: w, alpha, automask, smoothness}``): the
    self-supervised reprojection loss of :func:`photometric_loss` on the reference view's predicted depth,
    through the batch's known poses. Needs two or more views (``data.num_views``); with one it is 0.
    """

    min_views = 2
    needs_parallax = True  # a static camera: every pixel auto-masked, the smoothness alone trains

    def __init__(self, alpha: float = 0.85, automask: bool = True, smoothness: float = 1e-3) -> None:
        super().__init__()
        self.alpha, self.automask, self.smoothness = float(alpha), bool(automask), float(smoothness)

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        depth = outputs["depth"]
        if depth.dim() == 5:  # another term asked for every view's predictions
            depth = depth[:, 0]
        parts = photometric_loss(depth, batch.images, batch.K, batch.poses, alpha=self.alpha,
                                 automask=self.automask, smoothness=self.smoothness)
        logs = {f"{self.name}/{k}": float(v.detach()) for k, v in parts.items() if k != "total"}
        logs[self.name] = float(parts["total"].detach())
        return parts["total"], logs
