"""Loss term ``depth_distribution``: supervision of the geometric depth distribution (issue 18).

The plane-sweep softmax of ``model.geometric`` is trained with a cross-entropy against the ground-truth
inverse depth, spread over its two neighbouring candidates with linear weights (the "soft one-hot" of
ordinal depth regression; the candidates are uniform in inverse depth, so the target's expectation is the
true inverse depth). Only cells with a usable target count: at least half their pixels have depth, the
depth lies within the candidate range, the point projects into the source image, and the pair has a
baseline (a duplicated view has no parallax and its flat volume carries no gradient anyway). So the
matching features learn to match, whatever the heads do.

Config: ``loss.extra.depth_distribution: {weight: w}``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl3d_perception import geometry
from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.train.loss_base import LossTerm, register_loss, zero_loss

MIN_BASELINE_M = 0.01  # pairs closer than this are treated as single-view


def cell_inverse_depth(depth: Tensor, size: tuple[int, int], min_valid: float = 0.5) -> tuple[Tensor, Tensor]:
    """Mean inverse depth of each cell of a ``size`` = (h, w) grid over ``depth`` [N,1,H,W] (metres, NaN/<=0 invalid).

    Returns (inverse depth [N,1,h,w] in 1/m, mask [N,1,h,w]: at least ``min_valid`` of the cell's pixels valid).
    """
    ok = geometry.valid_depth(depth)
    inv = torch.where(ok, 1.0 / torch.where(ok, depth, torch.ones_like(depth)), 0.0)
    k = (depth.shape[-2] // size[0], depth.shape[-1] // size[1])
    count = F.avg_pool2d(ok.float(), k)
    inv_cell = F.avg_pool2d(inv, k) / count.clamp_min(1e-6)
    return inv_cell, count >= min_valid


def soft_target(inv: Tensor, inv_candidates: Tensor) -> Tensor:
    """Linear two-bin target ``[N,D,h,w]`` for inverse depths ``inv`` [N,1,h,w] over ascending-depth candidates.

    ``inv_candidates`` [D] is descending (candidates ascend in depth); values outside are clamped to the ends.
    """
    D = inv_candidates.numel()
    lo, hi = inv_candidates[-1], inv_candidates[0]
    step = (hi - lo) / (D - 1)
    pos = ((hi - inv.clamp(lo, hi)) / step).clamp(0, D - 1)  # fractional index along the candidates
    i0 = pos.floor().long().clamp(max=D - 2)
    w1 = pos - i0
    target = torch.zeros(inv.shape[0], D, *inv.shape[-2:], dtype=inv.dtype, device=inv.device)
    target.scatter_(1, i0, 1.0 - w1)
    target.scatter_add_(1, i0 + 1, w1)
    return target


def visible_in_source(inv: Tensor, K: Tensor, T_src_ref: Tensor, image_wh: tuple[int, int]) -> Tensor:
    """Whether each cell centre at inverse depth ``inv`` [N,1,h,w] projects into the source image.

    ``K`` [N,3,3] at ``image_wh`` = (W, H); ``T_src_ref`` [N,4,4]. Returns a bool mask [N,1,h,w].
    """
    h, w = inv.shape[-2:]
    W, H = image_wh
    K_cell = geometry.resize_intrinsics(K.float(), (W, H), (w, h))
    z = 1.0 / inv.clamp_min(1e-6)
    P = geometry.backproject(z[:, 0], K_cell)  # [N,h,w,3]
    R, t = T_src_ref[:, :3, :3].float(), T_src_ref[:, :3, 3].float()
    Q = torch.einsum("nij,nhwj->nhwi", R, P) + t[:, None, None]
    uvw = torch.einsum("nij,nhwj->nhwi", K_cell, Q)
    zq = uvw[..., 2]
    u = uvw[..., 0] / zq.clamp_min(1e-6)
    v = uvw[..., 1] / zq.clamp_min(1e-6)
    ok = (zq > 1e-3) & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    return ok[:, None]


@register_loss("depth_distribution")
class DepthDistributionLoss(LossTerm):
    """Cross-entropy of the plane-sweep softmax (``outputs["depth_logits"]``) against the true inverse depth.

    Args:
        all_views: supervise every view's distribution (needs the model to predict every view).
        depth_min, depth_max: the model's candidate range in metres (the candidates are rebuilt from it and
            the logits' count, uniform in inverse depth); the defaults are the presets'.

    With two views each view's source is the other; with more, view 0 is supervised against view 1's
    visibility (the visibility mask is then approximate).
    """

    def __init__(self, all_views: bool = False, depth_min: float = 0.3, depth_max: float = 10.0) -> None:
        super().__init__()
        self.needs_all_views = all_views
        self.depth_min, self.depth_max = float(depth_min), float(depth_max)

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        logits = outputs.get("depth_logits")
        if logits is None:
            msg = "loss term depth_distribution needs a model with geometric_depth: true (no 'depth_logits' output)"
            raise ValueError(msg)
        depth = batch.label("depth")  # [B,V,1,H,W]
        valid = batch.valid["depth"]  # [B,V]
        B, V = depth.shape[:2]
        if logits.dim() == 5 and V == 2:  # every view; each one's source is the other
            src, ref_idx = [1, 0], [0, 1]
        else:
            src, ref_idx = [1 if V > 1 else 0], [0]
            logits = logits[:, :1] if logits.dim() == 5 else logits[:, None]
        H, W = depth.shape[-2:]
        losses, counts = [], []
        D, (h, w) = logits.shape[2], logits.shape[-2:]
        inv_c = 1.0 / geometry.depth_candidates(self.depth_min, self.depth_max, D, like=logits.float())
        for k, (v, s) in enumerate(zip(ref_idx, src)):
            inv, mask = cell_inverse_depth(depth[:, v], (h, w))
            T = geometry.relative_pose(batch.poses[:, s], batch.poses[:, v])  # source <- reference
            moving = T[:, :3, 3].norm(dim=-1) >= MIN_BASELINE_M
            in_range = (inv >= inv_c[-1] * 0.999) & (inv <= inv_c[0] * 1.001)
            mask = mask & in_range & visible_in_source(inv, batch.K[:, v], T, (W, H))
            mask = mask & (valid[:, v] & moving)[:, None, None, None]
            logp = F.log_softmax(logits[:, k].float(), 1)
            ce = -(soft_target(inv, inv_c) * logp).sum(1, keepdim=True)
            losses.append(torch.where(mask, ce, 0.0).sum())
            counts.append(mask.sum())
        n = torch.stack(counts).sum()
        if n == 0:
            return zero_loss(logits), {"depth_distribution": 0.0}
        loss = torch.stack(losses).sum() / n
        return loss, {"depth_distribution": float(loss.detach())}
