"""The task loss terms (semantic, depth, normals, boundary) and their weighted sum, :class:`MultiTaskLoss`.

Terms are registered by name in :mod:`mtl3d_perception.train.loss_base` (the registry and base class); the
four task terms here the same way as the seed papers' extra terms (``cross_task``, ``cross_view``,
``pap_pairwise``), which ``mtl3d_perception.train`` imports so that they register. Every term respects the
per-task validity masks: a sample (or view) whose task is
invalid, and every invalid pixel (semantic 255, NaN depth / normals / boundary), contributes nothing,
and NaN labels never reach the graph (they are replaced before any arithmetic, so no NaN gradient).

References: class-balanced BCE from HED (Xie & Tu, ICCV'15); scale-invariant log loss from
Eigen et al., NeurIPS'14; SAK's NYUD loss set (CE, L1, normals, balanced BCE).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception.classes import IGNORE_INDEX
from mtl3d_perception.data.batch import TASKS, MultiViewBatch
from mtl3d_perception.train.loss_base import LossLogs, LossTerm, build_loss_term, register_loss, select_views
from mtl3d_perception.train.loss_base import zero_loss as _zero


def semantic_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled pixels of valid images. logits ``[N,K,H,W]``, labels ``[N,H,W]``, valid ``[N]``."""
    labels = torch.where(valid[:, None, None], labels, torch.full_like(labels, IGNORE_INDEX))
    keep = labels != IGNORE_INDEX
    count = keep.sum()
    if count == 0:
        return _zero(logits)
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return torch.where(keep, ce, 0.0).sum() / count


def depth_mask(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pixels with a usable depth label: finite, > 0, in a valid image. ``[N,1,H,W]``."""
    return torch.isfinite(depth) & (depth > 0) & valid[:, None, None, None]


def depth_l1_loss(pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (metres) over valid pixels. pred, depth ``[N,1,H,W]``."""
    mask = depth_mask(depth, valid)
    if not mask.any():
        return _zero(pred)
    target = torch.where(mask, depth, torch.zeros_like(depth))
    return torch.where(mask, (pred.float() - target).abs(), 0.0).sum() / mask.sum()


def _silog_per_image(pred: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor, lam: float,
                     eps: float) -> torch.Tensor:
    """``mean(d^2) - lam * mean(d)^2`` per image ``[N]``, d = log pred - log gt over ``mask`` (0 for an image without
    a pixel in it); the one body of the silog and scale-aware losses."""
    n = mask.flatten(1).sum(1).clamp_min(1)
    target = torch.where(mask, depth, torch.ones_like(depth))
    d = torch.where(mask, torch.log(pred.float().clamp_min(eps)) - torch.log(target), 0.0)
    mean_d = d.flatten(1).sum(1) / n
    return (d * d).flatten(1).sum(1) / n - lam * mean_d * mean_d


def depth_silog_loss(pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor,
                     lam: float = 0.85, eps: float = 1e-6) -> torch.Tensor:
    """Scale-invariant log loss per image, ``mean(d^2) - lam * mean(d)^2`` with d = log pred - log gt,
    averaged over images with valid pixels. lam < 1 keeps it minimal only at the exact depth.
    """
    mask = depth_mask(depth, valid)
    has = mask.flatten(1).any(1)
    if not has.any():
        return _zero(pred)
    return _silog_per_image(pred, depth, mask, lam, eps)[has].mean()


def depth_scale_aware_loss(pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, lam: float = 0.85,
                           inv_weight: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Scale-aware depth loss: per-image ``sqrt(silog)`` (Eigen et al. NeurIPS'14, the square-root form of
    BTS/AdaBins) plus ``inv_weight`` x the mean L1 error in inverse depth (1/m) over valid pixels.

    The silog part weighs structure and (through ``1 - lam``) scale; the inverse-depth L1 ties the metric
    scale and weighs near pixels, where parallax is measurable. pred, depth ``[N,1,H,W]`` metres.
    """
    mask = depth_mask(depth, valid)
    has = mask.flatten(1).any(1)
    if not has.any():
        return _zero(pred)
    silog = _silog_per_image(pred, depth, mask, lam, eps).clamp_min(0.0) + eps
    target = torch.where(mask, depth, torch.ones_like(depth))
    inv_l1 = torch.where(mask, (1.0 / pred.float().clamp_min(eps) - 1.0 / target).abs(), 0.0).sum() / mask.sum()
    return silog[has].sqrt().mean() + inv_weight * inv_l1


def normals_loss(pred: torch.Tensor, normals: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between predicted and labelled normals over valid pixels. ``[N,3,H,W]``."""
    mask = torch.isfinite(normals).all(1, keepdim=True) & valid[:, None, None, None]
    if not mask.any():
        return _zero(pred)
    target = torch.where(mask, normals, torch.zeros_like(normals))
    cos = (F.normalize(pred.float(), dim=1) * F.normalize(target, dim=1)).sum(1, keepdim=True)
    return torch.where(mask, 1.0 - cos, 0.0).sum() / mask.sum()


def boundary_loss(logits: torch.Tensor, boundary: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE (HED): positives weighted by the fraction of negatives and vice versa."""
    mask = torch.isfinite(boundary) & valid[:, None, None, None]
    if not mask.any():
        return _zero(logits)
    target = torch.where(mask, boundary, torch.zeros_like(boundary))
    m = mask.float()
    n_pos = (target * m).sum()
    n_all = m.sum()
    beta = (n_all - n_pos) / n_all  # fraction of negatives
    weight = torch.where(target > 0.5, beta, 1.0 - beta) * m
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    # Normalised by the weight mass, so the scale does not depend on how rare boundaries are.
    return torch.where(mask, bce * weight, 0.0).sum() / weight.sum().clamp_min(1e-12)


class _TaskTerm(LossTerm):
    """A task loss over the task's prediction and label, reporting itself under its task name.

    ``all_views``: supervise every view; otherwise view 0 only, also when another term has the model
    predict every view.
    """

    task: str = ""

    def __init__(self, all_views: bool = False) -> None:
        super().__init__()
        self.needs_all_views = all_views

    def compute(self, pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[torch.Tensor, LossLogs]:
        pred, label, valid = select_views(batch, outputs, self.task, reference_only=not self.needs_all_views)
        loss = self.compute(pred, label, valid)
        return loss, {self.task: float(loss.detach())}


@register_loss("semantic")
class SemanticLoss(_TaskTerm):
    task = "semantic"

    def compute(self, pred, label, valid):
        return semantic_loss(pred, label, valid)


DEPTH_KINDS: tuple[str, ...] = ("l1", "silog", "scale_aware")


@register_loss("depth")
class DepthLoss(_TaskTerm):
    """``kind``: ``l1`` (metres), ``silog`` (scale-invariant log, weight ``silog_lambda``) or ``scale_aware``
    (:func:`depth_scale_aware_loss`: sqrt-silog plus L1 in inverse depth)."""

    task = "depth"

    def __init__(self, all_views: bool = False, kind: str = "l1", silog_lambda: float = 0.85) -> None:
        super().__init__(all_views)
        if kind not in DEPTH_KINDS:
            msg = f"depth loss kind must be one of {', '.join(DEPTH_KINDS)}, got {kind!r}"
            raise ValueError(msg)
        self.kind, self.silog_lambda = kind, silog_lambda

    def compute(self, pred, label, valid):
        if self.kind == "silog":
            return depth_silog_loss(pred, label, valid, self.silog_lambda)
        if self.kind == "scale_aware":
            return depth_scale_aware_loss(pred, label, valid, self.silog_lambda)
        return depth_l1_loss(pred, label, valid)


@register_loss("normals")
class NormalsLoss(_TaskTerm):
    task = "normals"

    def compute(self, pred, label, valid):
        return normals_loss(pred, label, valid)


@register_loss("boundary")
class BoundaryLoss(_TaskTerm):
    task = "boundary"

    def compute(self, pred, label, valid):
        return boundary_loss(pred, label, valid)


class MultiTaskLoss(nn.Module):
    """Weighted sum of loss terms: the task terms plus any registered extras.

    Args:
        weights: task -> weight; a task with weight 0 is not computed.
        extra: name -> {"weight": w, **kwargs of the registered term}.
        depth_kind, silog_lambda: the depth term's options.
        all_views: compute task losses on every view (the paper does), not only the reference.
    """

    def __init__(self, weights: dict[str, float], *, extra: dict[str, dict[str, Any]] | None = None,
                 depth_kind: str = "l1", silog_lambda: float = 0.85, all_views: bool = True) -> None:
        super().__init__()
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for task in TASKS:
            w = float(weights.get(task, 0.0))
            if w == 0.0:
                continue
            kwargs: dict[str, Any] = {"all_views": all_views}
            if task == "depth":
                kwargs.update(kind=depth_kind, silog_lambda=silog_lambda)
            self.terms[task] = build_loss_term(task, **kwargs)
            self.weights[task] = w
        for name, spec in (extra or {}).items():
            spec = dict(spec)
            w = float(spec.pop("weight", 1.0))
            if name in self.terms:
                msg = f"loss term {name!r} is a task term; set its weight under loss.weights instead"
                raise ValueError(msg)
            self.terms[name] = build_loss_term(name, **spec)
            self.weights[name] = w

    @property
    def needs_features(self) -> bool:
        return any(t.needs_features for t in self.terms.values())

    @property
    def needs_all_views(self) -> bool:
        return any(t.needs_all_views for t in self.terms.values())

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[torch.Tensor, LossLogs]:
        """Returns the total loss and logs: each term's unweighted value (``loss/<name>``) and ``loss``."""
        total = None
        logs: LossLogs = {}
        for name, term in self.terms.items():
            value, term_logs = term(batch, outputs)
            for key, v in term_logs.items():
                logs[f"loss/{key}"] = v
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError("no loss terms: every task weight is 0 and loss.extra is empty")
        logs["loss"] = float(total.detach())
        return total, logs
