"""Pattern-affinitive propagation between the task decoders and the predictors (seed paper 004).

Registered as refiner ``"pap"`` (config ``refiner: pap``, options in ``refiner_args``). For every task:

1. *Affinity learning*: the decoder feature, average-pooled to 1/``affinity_stride`` of the input
   (1/8 by default, the paper's best trade-off), is shrunk by a 1x1 conv to ``X [N, C_a]`` and turned
   into the non-local affinity ``M = rownorm(exp(X X^T / sqrt(C_a)))`` (non-negative, rows sum to 1).
2. *Cross-task propagation*: each task combines all tasks' matrices with its own learned convex
   weights, ``M_hat_i = sum_k w_ik M_k`` (``w_i = softmax(logits_i)``; initialised to favour itself).
3. *Task-specific propagation*: ``steps`` diffusion steps ``h^{t+1} = M_hat h^t`` of the pooled task
   feature, then ``h_out = alpha h^T + (1 - alpha) h^0`` (Eq. 4; alpha = 0.05 in the paper, here a
   learned per-task scalar starting there).
4. The change ``h_out - h^0`` is upsampled to the decoder resolution and added to the decoder feature
   (the residual to the initial features), so zero steps leave the features unchanged.

Memory: the matrices are ``[B, T, N, N]`` with ``N`` tokens at the affinity resolution; ``max_tokens``
pools further when an input is large (160x120 at 1/8 gives N = 300).

References:
    Z. Zhang, Z. Cui, C. Xu, Y. Yan, N. Sebe, J. Yang. "Pattern-Affinitive Propagation across Depth,
    Surface Normal and Semantic Segmentation", CVPR 2019 (``../shared/papers/004_*.txt``), Sec. 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d_perception.model.config import ModelConfig
from mtl3d_perception.model.heads import register_refiner


def row_normalised_affinity(x: Tensor) -> Tensor:
    """Non-local affinity of tokens ``x [B, N, C]`` -> ``[B, N, N]``, rows summing to 1.

    ``exp(x_i . x_j / sqrt(C))`` normalised over j: a softmax, written so to stay finite.
    """
    sim = x @ x.transpose(1, 2) / math.sqrt(x.shape[-1])
    return sim.softmax(dim=-1)


def diffuse(h0: Tensor, M: Tensor, steps: int, alpha: Tensor | float) -> Tensor:
    """``steps`` diffusion steps of tokens ``h0 [B, N, C]`` with ``M [B, N, N]``, then
    ``alpha h^steps + (1 - alpha) h0`` (identity when ``steps == 0``)."""
    h = h0
    for _ in range(steps):
        h = M @ h
    if steps == 0:
        return h0
    return alpha * h + (1.0 - alpha) * h0


@register_refiner("pap")
class PAPRefiner(nn.Module):
    """Pattern-affinitive propagation over the task features (see the module docstring).

    Args:
        task_channels: task -> channels of its decoder feature.
        config: the model config (unused beyond construction; kept for the registry's signature).
        affinity_channels: C_a of the shrunk features the affinities are computed from.
        affinity_stride: the affinity resolution as a fraction of the input (8 -> 1/8).
        feature_stride: the decoder features' stride (4 in :mod:`heads`).
        steps: diffusion steps.
        alpha: initial weight of the diffused features (Eq. 4).
        max_tokens: upper bound on N; larger inputs are pooled further.
    """

    def __init__(self, task_channels: dict[str, int], config: ModelConfig | None = None, *,
                 affinity_channels: int = 16, affinity_stride: int = 8, feature_stride: int = 4,
                 steps: int = 3, alpha: float = 0.05, max_tokens: int = 1024) -> None:
        super().__init__()
        if steps < 0 or not 0.0 < alpha < 1.0 or affinity_stride < feature_stride:
            msg = (f"pap: need steps >= 0, 0 < alpha < 1 and affinity_stride >= feature_stride, "
                   f"got steps={steps}, alpha={alpha}, affinity_stride={affinity_stride}, feature_stride={feature_stride}")
            raise ValueError(msg)
        self.tasks = tuple(task_channels)
        T = len(self.tasks)
        self.steps = steps
        self.pool = max(1, affinity_stride // feature_stride)
        self.max_tokens = max_tokens
        self.shrink = nn.ModuleDict({t: nn.Conv2d(c, affinity_channels, 1) for t, c in task_channels.items()})
        # Row i holds task i's combination logits; a +2 diagonal starts each task at ~70% its own affinity.
        self.combine_logits = nn.Parameter(2.0 * torch.eye(T))
        # alpha in (0, 1) through a sigmoid, one per task, starting at ``alpha``.
        self.alpha_logit = nn.Parameter(torch.full((T,), math.log(alpha / (1.0 - alpha))))

    def _pool_factor(self, hw: tuple[int, int]) -> int:
        k = self.pool
        while math.ceil(hw[0] / k) * math.ceil(hw[1] / k) > self.max_tokens:
            k += 1
        return k

    def affinities(self, task_feats: dict[str, Tensor]) -> tuple[Tensor, Tensor, int]:
        """(per-task affinities ``[B, T, N, N]``, combined ``[B, T, N, N]``, pool factor)."""
        hw = tuple(next(iter(task_feats.values())).shape[-2:])
        k = self._pool_factor(hw)
        mats = []
        for t in self.tasks:
            x = F.avg_pool2d(self.shrink[t](task_feats[t]), k, ceil_mode=True) if k > 1 else self.shrink[t](task_feats[t])
            mats.append(row_normalised_affinity(x.flatten(2).transpose(1, 2).float()))
        M = torch.stack(mats, dim=1)  # [B, T, N, N]
        weights = self.combine_logits.softmax(dim=1).to(M.dtype)  # [T, T], rows sum to 1
        M_hat = torch.einsum("ik,bknm->binm", weights, M)
        return M, M_hat, k

    def forward(self, task_feats: dict[str, Tensor]) -> dict[str, Tensor]:
        """task -> ``[B, C_t, h, w]`` -> the same keys and shapes."""
        if self.steps == 0:
            return dict(task_feats)
        _, M_hat, k = self.affinities(task_feats)
        alpha = self.alpha_logit.sigmoid()
        out = {}
        for i, t in enumerate(self.tasks):
            f = task_feats[t]
            p = F.avg_pool2d(f, k, ceil_mode=True) if k > 1 else f
            B, C, hp, wp = p.shape
            h0 = p.flatten(2).transpose(1, 2).float()  # [B, N, C]
            h = diffuse(h0, M_hat[:, i], self.steps, alpha[i])
            delta = (h - h0).transpose(1, 2).reshape(B, C, hp, wp).to(f.dtype)
            if k > 1:
                delta = F.interpolate(delta, size=f.shape[-2:], mode="bilinear", align_corners=False)
            out[t] = f + delta
        return out
