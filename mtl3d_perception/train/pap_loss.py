"""The pair-wise affinity loss of pattern-affinitive propagation (seed paper 004, Sec. 4.4).

For S randomly sampled pixel pairs (i, j) per image and task, the distance between the two pixels'
predictions should equal the distance between their labels:
``L = mean_S | |z_hat_i - z_hat_j| - |z_i - z_j| |``, compared per channel, where z is depth in metres,
the unit normal, the class-probability vector (label: one-hot) or the boundary probability.
Pairs with an invalid label at either end are dropped. Random pairs cover all distances, not only
neighbours. The paper uses S = 300 pairs per task.

References:
    Z. Zhang et al. "Pattern-Affinitive Propagation across Depth, Surface Normal and Semantic
    Segmentation", CVPR 2019 (``../shared/papers/004_*.txt``), Sec. 4.4, Eq. (5).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl3d_perception.classes import IGNORE_INDEX
from mtl3d_perception.data.batch import TASKS, MultiViewBatch
from mtl3d_perception.train.loss_base import LossTerm, register_loss, select_views


def task_values(task: str, pred: Tensor, label: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(prediction values ``[N, C, H, W]``, label values ``[N, C, H, W]``, pixel mask ``[N, H, W]``).

    ``pred`` is the raw head output, ``label`` the batch label, ``valid`` ``[N]`` per-image validity.
    """
    if task == "semantic":
        K = pred.shape[1]
        mask = (label != IGNORE_INDEX) & (label >= 0) & (label < K)
        onehot = F.one_hot(torch.where(mask, label, 0).long(), K).permute(0, 3, 1, 2).to(pred.dtype)
        values, target = pred.softmax(dim=1), onehot
    elif task == "depth":
        mask = (torch.isfinite(label) & (label > 0))[:, 0]
        values, target = pred, label
    elif task == "normals":
        mask = torch.isfinite(label).all(dim=1)
        values, target = pred, label
    elif task == "boundary":
        mask = torch.isfinite(label)[:, 0]
        values, target = pred.sigmoid(), label
    else:
        raise KeyError(f"unknown task {task!r}")
    mask = mask & valid.to(torch.bool)[:, None, None]
    target = torch.where(mask[:, None], target.to(values.dtype), torch.zeros_like(values))
    return values, target, mask


def pairwise_loss(values: Tensor, target: Tensor, mask: Tensor, num_pairs: int = 300,
                  generator: torch.Generator | None = None) -> Tensor:
    """Mean over S random pairs per image of ``| |v_i - v_j| - |t_i - t_j| |`` (channels summed).

    Args:
        values, target: ``[N, C, H, W]``; mask ``[N, H, W]`` bool (pixels with a label).
        num_pairs: S.
        generator: for reproducible pair sampling.

    Returns:
        scalar, zero (in the graph) when no pair has labels at both ends.
    """
    N, C, H, W = values.shape
    # Pairs are drawn among each image's labelled pixels (multinomial over the mask).
    has = mask.flatten(1).any(dim=1)
    if not bool(has.any()):
        return values.sum() * 0.0
    probs = mask.flatten(1)[has].float()
    idx = torch.multinomial(probs, 2 * num_pairs, replacement=True, generator=generator)  # [n, 2S]
    v = values.flatten(2)[has]  # [n, C, HW]
    t = target.flatten(2)[has]
    gather = idx[:, None, :].expand(-1, C, -1)
    v_s, t_s = v.gather(2, gather), t.gather(2, gather)  # [n, C, 2S]
    d_pred = (v_s[..., :num_pairs] - v_s[..., num_pairs:]).abs()
    d_true = (t_s[..., :num_pairs] - t_s[..., num_pairs:]).abs()
    return (d_pred - d_true).abs().sum(dim=1).mean()


@register_loss("pap_pairwise")
class PairwiseAffinityTerm(LossTerm):
    """Loss term ``pap_pairwise`` (config ``loss.extra.pap_pairwise: {weight: w, num_pairs: 300}``).

    Sums :func:`pairwise_loss` over ``tasks`` (each weighted by ``task_weights``, default 1), on every
    predicted view.
    """

    def __init__(self, num_pairs: int = 300, tasks: tuple[str, ...] | list[str] = TASKS,
                 task_weights: dict[str, float] | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.num_pairs = num_pairs
        self.tasks = tuple(tasks)
        self.task_weights = dict(task_weights or {})
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator()
            self.generator.manual_seed(seed)

    def get_extra_state(self) -> dict[str, Tensor]:
        """The pair sampler's generator state (in the trainer's state file, so a resumed run draws the same pairs)."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        total = None
        logs: dict[str, float] = {}
        for task in self.tasks:
            pred, label, valid = select_views(batch, outputs, task)
            values, target, mask = task_values(task, pred.float(), label, valid)
            gen = self.generator if (self.generator is not None and values.device.type == "cpu") else None
            loss = pairwise_loss(values, target, mask, self.num_pairs, gen)
            logs[f"{self.name}/{task}"] = float(loss.detach())
            weighted = self.task_weights.get(task, 1.0) * loss
            total = weighted if total is None else total + weighted
        logs[self.name] = float(total.detach())
        return total, logs
