"""Cross-view consistency of depth and semantics between the views of a posed pair (seed paper 003).

The source view's predictions are warped into the reference view (backward warping with
``torch.nn.functional.grid_sample``): every reference pixel is lifted to 3D with a *geometry depth*
(the ground truth where present, otherwise the reference's own prediction, detached), moved into the
source camera with the relative pose and projected. There the source's maps are sampled:

- depth: the source prediction, lifted to 3D and expressed in the reference frame, gives a z that is
  compared with the reference prediction (L1 in metres, "compare in the reference frame's z");
- semantics: the source's class probabilities are the target of a cross-entropy on the reference logits.

Each pixel is weighted by a confidence map and its visibility. Visibility drops pixels that leave the
source image, fall behind its camera, or are occluded there (the source depth at the projection
disagrees with the point's z by more than ``occlusion_tol`` relative; this also drops samples that
straddle depth edges). Confidence is 1 where the geometry depth is ground truth; where it is a
prediction it is soft-thresholded by the two views' agreement, ``exp(-rel_err / conf_tau)``, the role
the stereo confidence map plays in the paper (inaccurate geometry must not steer the warp).

References:
    "Pseudo Label-Guided Multi Task Learning for Scene Understanding", ICLR 2021 submission
    (``../shared/papers/003_*.txt``), Sec. 3.2.2, Eq. (3)-(10).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.geometry import (
    MIN_Z,
    backproject,
    backward_warp,
    invert_se3,
    relative_pose,
    transform_points,
)
from mtl3d_perception.train.loss_base import LossTerm, register_loss


def _geometry_depth(pred: Tensor, gt: Tensor | None) -> tuple[Tensor, Tensor]:
    """(depth used for warping ``[B,1,H,W]`` detached, bool mask where it is ground truth)."""
    pred = pred.detach()
    if gt is None:
        return pred, torch.zeros_like(pred, dtype=torch.bool)
    gt = gt.to(pred.dtype)
    is_gt = torch.isfinite(gt) & (gt > 0)
    return torch.where(is_gt, gt, pred), is_gt


def warp_pair(
    depth_ref: Tensor, depth_src: Tensor, K_ref: Tensor, K_src: Tensor, T_src_ref: Tensor, *,
    logits_ref: Tensor | None = None, logits_src: Tensor | None = None,
    gt_depth_ref: Tensor | None = None, gt_depth_src: Tensor | None = None,
    occlusion_tol: float = 0.05, conf_tau: float = 0.1,
) -> dict[str, Tensor]:
    """Warp the source view's predictions into the reference view.

    Args:
        depth_ref, depth_src: predicted depth ``[B,1,H,W]`` metres.
        K_ref, K_src: ``[B,3,3]`` at (H, W).
        T_src_ref: ``[B,4,4]``, reference-camera points -> source camera.
        logits_ref, logits_src: semantic logits ``[B,K,H,W]`` (optional).
        gt_depth_ref, gt_depth_src: ground-truth depth ``[B,1,H,W]`` (NaN / <= 0 invalid) or None.
        occlusion_tol: relative depth disagreement beyond which a pixel counts as occluded.
        conf_tau: softness of the confidence of predicted (non ground-truth) geometry.

    Returns:
        dict: ``z_src_in_ref`` ``[B,1,H,W]`` (the source depth warped into the reference, as z in the
        reference frame; differentiable w.r.t. ``depth_src``), ``visible`` and ``confidence``
        ``[B,1,H,W]`` (detached); when logits are given also ``prob_src`` ``[B,K,H,W]`` (warped source
        probabilities) and ``label_interior`` ``[B,1,H,W]`` (the sample is not on a source label edge).
    """
    # Geometry in float32 even under bf16 autocast: pixel coordinates need more than 8 mantissa bits.
    with torch.autocast(depth_ref.device.type, enabled=False):
        return _warp_pair(depth_ref.float(), depth_src.float(), K_ref.float(), K_src.float(), T_src_ref.float(),
                          None if logits_ref is None else logits_ref.float(),
                          None if logits_src is None else logits_src.float(),
                          gt_depth_ref, gt_depth_src, occlusion_tol, conf_tau)


def _warp_pair(depth_ref, depth_src, K_ref, K_src, T_src_ref, logits_ref, logits_src, gt_depth_ref, gt_depth_src,
               occlusion_tol, conf_tau) -> dict[str, Tensor]:
    geo_ref, ref_is_gt = _geometry_depth(depth_ref, gt_depth_ref)
    occ_src, _ = _geometry_depth(depth_src, gt_depth_src)
    # The source's predicted depth as z in the reference frame, sampled bilinearly at those points.
    T_ref_src = invert_se3(T_src_ref)
    z_src_in_ref = transform_points(T_ref_src, backproject(depth_src[:, 0], K_src))[..., 2:3]  # [B,H,W,1]
    maps = [z_src_in_ref.permute(0, 3, 1, 2), occ_src, torch.ones_like(occ_src)]
    if logits_src is not None:
        prob_src = logits_src.softmax(dim=1)
        hard_src = F.one_hot(prob_src.detach().argmax(dim=1), prob_src.shape[1]).permute(0, 3, 1, 2).to(prob_src)
        maps += [prob_src, hard_src]
    # Sampled where each reference pixel lands in the source view; z_expected is its z there.
    sampled, z_expected = backward_warp(torch.cat(maps, dim=1), geo_ref, K_ref, K_src, T_src_ref)
    z_warped, occ_warped, inside = sampled[:, 0:1], sampled[:, 1:2], sampled[:, 2:3]
    with torch.no_grad():
        in_front = torch.isfinite(z_expected) & (z_expected > MIN_Z) & torch.isfinite(geo_ref)
        # ``inside`` is 1 only when all four bilinear taps lie in the source image.
        visible = in_front & (inside > 1.0 - 1e-4)
        rel = (occ_warped - z_expected).abs() / z_expected.clamp_min(MIN_Z)
        visible &= torch.nan_to_num(rel, nan=float("inf")) < occlusion_tol
        agreement = (z_warped - geo_ref).abs() / geo_ref.clamp_min(MIN_Z)
        conf_pred = torch.exp(-torch.nan_to_num(agreement, nan=float("inf")) / conf_tau)
        confidence = torch.where(ref_is_gt, torch.ones_like(conf_pred), conf_pred)
    out = {"z_src_in_ref": z_warped, "visible": visible.float(), "confidence": confidence}
    if logits_src is not None:
        C = logits_src.shape[1]
        out["prob_src"] = sampled[:, 3:3 + C]
        # 1 where every bilinear tap of the source has the same arg-max class: the sample does not
        # straddle a label edge (edges are where warping mixes classes, whatever the geometry).
        out["label_interior"] = (sampled[:, 3 + C:].amax(dim=1, keepdim=True) > 1.0 - 1e-3).float().detach()
    return out


def _weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    values = torch.where(weight > 0, values, torch.zeros_like(values))  # no NaN leaks through 0 weights
    return (values * weight).sum() / weight.sum().clamp_min(1e-6)


def cross_view_pair_loss(
    depth_ref: Tensor, depth_src: Tensor, K_ref: Tensor, K_src: Tensor, T_src_ref: Tensor, *,
    logits_ref: Tensor | None = None, logits_src: Tensor | None = None,
    gt_depth_ref: Tensor | None = None, gt_depth_src: Tensor | None = None,
    occlusion_tol: float = 0.05, conf_tau: float = 0.1,
) -> dict[str, Tensor]:
    """Depth and semantic disagreement of one ordered pair (source warped into reference).

    Returns:
        dict: ``depth`` (confidence- and visibility-weighted L1 in metres of reference-frame z),
        ``semantic`` (weighted cross-entropy of the reference logits against the warped source
        distribution q, which is the target and gets no gradient, minus the entropy of q so that it is
        0 when the two agree: KL(q || p_ref), with the cross-entropy's gradients; pixels on a source
        label edge are left out; present when logits are given), ``visible_fraction``.
    """
    w = warp_pair(depth_ref, depth_src, K_ref, K_src, T_src_ref, logits_ref=logits_ref,
                  logits_src=logits_src, gt_depth_ref=gt_depth_ref, gt_depth_src=gt_depth_src,
                  occlusion_tol=occlusion_tol, conf_tau=conf_tau)
    weight = w["visible"] * w["confidence"]
    out = {
        "depth": _weighted_mean((w["z_src_in_ref"] - depth_ref).abs(), weight),
        "visible_fraction": w["visible"].mean(),
    }
    if logits_ref is not None and logits_src is not None:
        q = w["prob_src"].detach()
        kl = (q * (q.clamp_min(1e-8).log() - logits_ref.log_softmax(dim=1))).sum(dim=1, keepdim=True)
        out["semantic"] = _weighted_mean(kl, weight * w["label_interior"])
    return out


class CrossViewLoss(nn.Module):
    """The seed-003 term over the views of a batch: pairs (0, v) and, if ``symmetric``, (v, 0).

    Needs the predictions of all views (model called with ``all_views=True``): ``depth``
    ``[B,V,1,H,W]`` and ``semantic`` ``[B,V,K,H,W]``.

    Args:
        depth_weight, semantic_weight: weights of the two parts in ``total``.
        symmetric: also warp the reference into each source.
        occlusion_tol, conf_tau: see :func:`warp_pair`.
    """

    needs_features = False
    needs_all_views = True

    def __init__(self, *, depth_weight: float = 1.0, semantic_weight: float = 1.0, symmetric: bool = True,
                 occlusion_tol: float = 0.05, conf_tau: float = 0.1) -> None:
        super().__init__()
        self.depth_weight = depth_weight
        self.semantic_weight = semantic_weight
        self.symmetric = symmetric
        self.occlusion_tol = occlusion_tol
        self.conf_tau = conf_tau

    def forward(self, depth: Tensor, K: Tensor, poses: Tensor, *, semantic: Tensor | None = None,
                gt_depth: Tensor | None = None) -> dict[str, Tensor]:
        """Args: ``depth`` ``[B,V,1,H,W]``, ``K`` ``[B,V,3,3]``, ``poses`` ``[B,V,4,4]`` T_world_cam,
        ``semantic`` logits ``[B,V,K,H,W]``, ``gt_depth`` ``[B,V,1,H,W]`` (NaN invalid) or None."""
        V = depth.shape[1]
        if V < 2:
            zero = depth.sum() * 0.0
            return {"depth": zero, "semantic": zero, "total": zero}
        pairs = [(0, v) for v in range(1, V)]
        if self.symmetric:
            pairs += [(v, 0) for v in range(1, V)]
        terms: dict[str, list[Tensor]] = {"depth": [], "semantic": [], "visible_fraction": []}
        for r, s in pairs:
            with torch.autocast(poses.device.type, enabled=False):  # float32 poses (see warp_pair)
                T_src_ref = relative_pose(poses[:, s].float(), poses[:, r].float())
            part = cross_view_pair_loss(
                depth[:, r], depth[:, s], K[:, r], K[:, s], T_src_ref,
                logits_ref=None if semantic is None else semantic[:, r],
                logits_src=None if semantic is None else semantic[:, s],
                gt_depth_ref=None if gt_depth is None else gt_depth[:, r],
                gt_depth_src=None if gt_depth is None else gt_depth[:, s],
                occlusion_tol=self.occlusion_tol, conf_tau=self.conf_tau)
            for key, value in part.items():
                terms[key].append(value)
        out = {key: torch.stack(values).mean() for key, values in terms.items() if values}
        total = self.depth_weight * out["depth"]
        if "semantic" in out:
            total = total + self.semantic_weight * out["semantic"]
        out["total"] = total
        return out


@register_loss("cross_view")
class CrossViewTerm(LossTerm):
    """Loss term ``cross_view`` (config ``loss.extra.cross_view: {weight: w, ...}``): :class:`CrossViewLoss`
    on the batch's views, with ground-truth depth as the warping geometry wherever a view has it.

    Args: ``depth_weight``, ``semantic_weight``, ``symmetric``, ``occlusion_tol``, ``conf_tau`` (see
    :class:`CrossViewLoss`); ``use_gt_depth``: False warps with predictions only (no depth labels used).
    """

    needs_all_views = True
    min_views = 2

    def __init__(self, depth_weight: float = 1.0, semantic_weight: float = 1.0, symmetric: bool = True,
                 occlusion_tol: float = 0.05, conf_tau: float = 0.1, use_gt_depth: bool = True) -> None:
        super().__init__()
        self.loss = CrossViewLoss(depth_weight=depth_weight, semantic_weight=semantic_weight,
                                  symmetric=symmetric, occlusion_tol=occlusion_tol, conf_tau=conf_tau)
        self.use_gt_depth = use_gt_depth

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        depth = outputs["depth"]
        if depth.dim() != 5:
            msg = "cross_view needs the predictions of all views (model called with all_views=True)"
            raise ValueError(msg)
        gt = None
        if self.use_gt_depth:
            has = batch.valid["depth"].to(torch.bool)[:, :, None, None, None]  # [B,V,1,1,1]
            gt = torch.where(has, batch.depth, torch.full_like(batch.depth, float("nan")))
        semantic = outputs.get("semantic") if self.loss.semantic_weight > 0 else None
        parts = self.loss(depth.float(), batch.K.float(), batch.poses.float(),
                          semantic=None if semantic is None else semantic.float(), gt_depth=gt)
        logs = {f"{self.name}/{k}": float(v.detach()) for k, v in parts.items() if k != "total"}
        logs[self.name] = float(parts["total"].detach())
        return parts["total"], logs
