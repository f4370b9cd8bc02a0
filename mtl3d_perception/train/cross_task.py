"""Cross-task consistency from partial labels in joint pairwise task spaces (seed paper 002).

For an image whose task ``s`` is unlabelled and task ``t`` labelled, the prediction of ``s`` and the
label of ``t`` are mapped into the joint space of the pair (s, t) by ONE shared mapping network whose
hidden layers are FiLM-modulated by an auxiliary network fed the asymmetric K x K task-pair matrix
``A`` (``A[s, t] = 1`` when mapping s into (s, t), ``A[t, s] = 1`` when mapping t into it). Each task
has its own input layer. The loss is the cosine distance between the two embeddings, plus the cosine
regulariser that ties each embedding to the encoder's image feature so that the mapping cannot
collapse to a constant (Eq. 4 of the paper).

The mapping is used in training only: its parameters live in :class:`CrossTaskLoss` and are optimised
together with the model's.

References:
    W.-H. Li, X. Liu, H. Bilen. "Learning Multiple Dense Prediction Tasks from Partially Annotated
    Data", CVPR 2022 (``../shared/papers/002_*.txt``), Sec. 3, Eq. (3)-(4).
    E. Perez et al. "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d_perception.classes import IGNORE_INDEX
from mtl3d_perception.data.batch import TASKS, MultiViewBatch
from mtl3d_perception.train.loss_base import LossTerm, register_loss, select_views


def task_pair_matrix(task_index: Tensor | int, pair_index: Tensor | int, num_tasks: int) -> Tensor:
    """The asymmetric task-pair code ``A`` flattened to ``[N, K*K]``: ``A[input task, other task] = 1``.

    Args:
        task_index: the task being mapped (s when mapping the prediction, t when mapping the label).
        pair_index: the other task of the pair.
        num_tasks: K.
    """
    i = torch.as_tensor(task_index).reshape(-1)
    j = torch.as_tensor(pair_index).reshape(-1)
    if bool((i == j).any()):
        raise ValueError("a task pair needs two different tasks (the diagonal of A is always zero)")
    A = torch.zeros(i.numel(), num_tasks * num_tasks)
    A[torch.arange(i.numel()), i * num_tasks + j] = 1.0
    return A


class FiLM(nn.Module):
    """Per-channel scale and shift from the task-pair code: ``h <- (1 + a_c(A)) * h + a_b(A)``.

    Each of ``a_c``, ``a_b`` is one fully connected layer (the paper's auxiliary network a_theta).
    The scale is written as ``1 + a_c`` so that a freshly built mapping starts near the identity.
    """

    def __init__(self, code_dim: int, channels: int) -> None:
        super().__init__()
        self.scale = nn.Linear(code_dim, channels)
        self.shift = nn.Linear(code_dim, channels)
        for layer in (self.scale, self.shift):
            nn.init.normal_(layer.weight, std=0.1)
            nn.init.zeros_(layer.bias)

    def forward(self, h: Tensor, code: Tensor) -> Tensor:
        """h: ``[N, M, h, w]``; code: ``[N, K*K]``."""
        gamma = 1.0 + self.scale(code)[:, :, None, None]
        beta = self.shift(code)[:, :, None, None]
        return gamma * h + beta


class TaskPairMapping(nn.Module):
    """The conditional joint pairwise task mapping ``m^{s->st}`` (task-specific input layer + shared trunk).

    The trunk downsamples by ``2 ** num_layers`` (stride 8 by default, the network's fusion resolution)
    and projects to ``out_channels``, the width of the encoder feature used by the regulariser.

    Args:
        task_channels: task -> channels of its encoded prediction / label.
        out_channels: embedding width C (= the encoder feature's channels).
        width: M, the trunk's hidden width.
        num_layers: strided FiLM-modulated conv layers of the trunk.
    """

    def __init__(self, task_channels: dict[str, int], out_channels: int, *, width: int = 32,
                 num_layers: int = 3) -> None:
        super().__init__()
        self.tasks = tuple(task_channels)
        num_tasks = len(self.tasks)
        self.input_layers = nn.ModuleDict({
            task: nn.Conv2d(ch, width, 3, padding=1) for task, ch in task_channels.items()
        })
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in range(num_layers))
        # Affine-free norms: the FiLM layers supply the (task-pair dependent) affine part.
        self.norms = nn.ModuleList(nn.GroupNorm(math.gcd(8, width), width, affine=False) for _ in range(num_layers))
        self.films = nn.ModuleList(FiLM(num_tasks * num_tasks, width) for _ in range(num_layers))
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, task: str, other: str, x: Tensor, out_hw: tuple[int, int] | None = None) -> Tensor:
        """Map ``x`` (the encoded prediction or label of ``task``) into the space of the pair (task, other).

        Args:
            task: the task whose prediction / label ``x`` is.
            other: the other task of the pair.
            x: ``[N, O_task, H, W]``.
            out_hw: (h, w) of the embedding; default the trunk's own output size.

        Returns:
            ``[N, C, h, w]`` embedding.
        """
        code = task_pair_matrix(self.tasks.index(task), self.tasks.index(other), len(self.tasks))
        code = code.to(x).expand(x.shape[0], -1)
        h = F.relu(self.input_layers[task](x))
        for conv, norm, film in zip(self.convs, self.norms, self.films):
            h = F.relu(film(norm(conv(h)), code))
        h = self.head(h)
        if out_hw is not None and tuple(h.shape[-2:]) != tuple(out_hw):
            h = F.adaptive_avg_pool2d(h, out_hw)
        return h


# ------------------------------------------------------------------------------------------------
# Encoding predictions and labels as dense maps (the input of the task-specific input layers)
# ------------------------------------------------------------------------------------------------


def encode_prediction(task: str, pred: Tensor, depth_range: tuple[float, float]) -> Tensor:
    """A task prediction as the mapping's input: semantic -> softmax, depth -> normalised log depth,
    normals -> as is, boundary -> sigmoid. ``pred``: ``[N, O, H, W]`` raw head output."""
    if task == "semantic":
        return pred.softmax(dim=1)
    if task == "depth":
        return _normalised_log_depth(pred, depth_range)
    if task == "normals":
        return pred
    if task == "boundary":
        return pred.sigmoid()
    raise KeyError(f"unknown task {task!r}")


def encode_label(task: str, label: Tensor, num_classes: int, depth_range: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """A label as the mapping's input, plus its validity ``[N, 1, H, W]`` (invalid pixels are zero-filled).

    ``label``: semantic ``[N, H, W]`` int (255 ignore); depth / boundary ``[N, 1, H, W]``; normals
    ``[N, 3, H, W]`` (NaN or non-positive depth invalid).
    """
    if task == "semantic":
        valid = (label != IGNORE_INDEX) & (label >= 0) & (label < num_classes)
        onehot = F.one_hot(torch.where(valid, label, 0).long(), num_classes).permute(0, 3, 1, 2).float()
        valid = valid[:, None].float()
        return onehot * valid, valid
    if task == "depth":
        valid = torch.isfinite(label) & (label > 0)
        enc = _normalised_log_depth(torch.where(valid, label, torch.ones_like(label)), depth_range)
        return torch.where(valid, enc, torch.zeros_like(enc)), valid.float()
    if task in ("normals", "boundary"):
        valid = torch.isfinite(label).all(dim=1, keepdim=True)
        return torch.where(valid, label, torch.zeros_like(label)), valid.float()
    raise KeyError(f"unknown task {task!r}")


def _normalised_log_depth(depth: Tensor, depth_range: tuple[float, float]) -> Tensor:
    lo, hi = math.log(depth_range[0]), math.log(depth_range[1])
    return (depth.clamp_min(1e-3).log() - lo) / (hi - lo)


def cosine_distance(a: Tensor, b: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample mean over pixels of ``1 - cos(a, b)`` along channels -> ``[N]``.

    ``a``, ``b`` ``[N, C, h, w]``; ``weight`` ``[N, 1, h, w]`` (e.g. the fraction of labelled pixels).
    """
    dist = 1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-6)[:, None]  # [N, 1, h, w]
    if weight is None:
        return dist.flatten(1).mean(dim=1)
    return (dist * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1e-6)


# ------------------------------------------------------------------------------------------------
# The loss term
# ------------------------------------------------------------------------------------------------


class CrossTaskLoss(nn.Module):
    """Eq. (4) of seed 002: cross-task consistency for (unlabelled s, labelled t) pairs + regulariser.

    Per sample n with unlabelled tasks U_n and labelled tasks T_n:
    ``1/|U_n| * sum_{s in U_n, t in T_n} [ L_ct(m^{s->st}(y_hat^s), m^{t->st}(y^t))
    + reg_weight * (R(f(x), m^{s->st}(y_hat^s)) + R(f(x), m^{t->st}(y^t))) ]`` with cosine distances,
    averaged over the batch (samples with no such pair contribute zero).

    Args:
        feature_channels: channels C of the encoder feature ``features["image"]``.
        num_classes: semantic classes.
        depth_range: (min, max) metres, to normalise depth for the mapping.
        tasks: the tasks the network predicts.
        width, num_layers: the mapping trunk's size.
        reg_weight: weight of the regulariser R (0 gives the paper's "w/o reg" ablation).
        include_labelled: also use pairs whose source task is labelled (the paper's fully supervised
            variant, Tab. 5); by default only unlabelled sources are used, as in Eq. (4).
        detach_image_feature: stop the regulariser's gradient into the encoder, so that the encoder is
            never pulled towards the mapping (which would open a second route to collapse).
    """

    needs_features = True  # the model must be called with return_features=True
    needs_all_views = False

    def __init__(self, feature_channels: int, num_classes: int, depth_range: tuple[float, float], *,
                 tasks: tuple[str, ...] = TASKS, width: int = 32, num_layers: int = 3,
                 reg_weight: float = 1.0, include_labelled: bool = False,
                 detach_image_feature: bool = True) -> None:
        super().__init__()
        channels = {"semantic": num_classes, "depth": 1, "normals": 3, "boundary": 1}
        self.tasks = tuple(tasks)
        self.num_classes = num_classes
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        self.mapping = TaskPairMapping({t: channels[t] for t in self.tasks}, feature_channels,
                                       width=width, num_layers=num_layers)
        self.reg_weight = reg_weight
        self.include_labelled = include_labelled
        self.detach_image_feature = detach_image_feature

    def forward(self, preds: dict[str, Tensor], labels: dict[str, Tensor], valid: dict[str, Tensor],
                image_feature: Tensor) -> dict[str, Tensor]:
        """Compute the term on one view per sample.

        Args:
            preds: task -> raw head output ``[N, O, H, W]``.
            labels: task -> label (semantic ``[N, H, W]``; others ``[N, O, H, W]``).
            valid: task -> ``[N]`` bool, whether the sample has that task's label.
            image_feature: ``[N, C, h, w]`` encoder feature f(x).

        Returns:
            dict with ``"consistency"``, ``"regulariser"`` and ``"total"`` (scalars; zero with a graph
            when no sample has an (unlabelled, labelled) pair).
        """
        N = image_feature.shape[0]
        feat = image_feature.detach() if self.detach_image_feature else image_feature
        out_hw = tuple(feat.shape[-2:])
        lab = {t: valid[t].to(torch.bool).reshape(N) for t in self.tasks}
        sources = {t: (torch.ones_like(lab[t]) if self.include_labelled else ~lab[t]) for t in self.tasks}
        num_sources = sum(sources[t].float() for t in self.tasks).clamp_min(1.0)  # |U_n|, [N]
        consistency = feat.new_zeros(())
        regulariser = feat.new_zeros(())
        for s in self.tasks:
            for t in self.tasks:
                if s == t:
                    continue
                sel = sources[s] & lab[t]
                if not bool(sel.any()):
                    continue
                idx = sel.nonzero().squeeze(1)
                x_s = encode_prediction(s, preds[s][idx], self.depth_range)
                x_t, valid_t = encode_label(t, labels[t][idx], self.num_classes, self.depth_range)
                e_s = self.mapping(s, t, x_s, out_hw)
                e_t = self.mapping(t, s, x_t, out_hw)
                w_t = F.adaptive_avg_pool2d(valid_t, out_hw)  # fraction of labelled pixels per cell
                per_sample = 1.0 / num_sources[idx]  # the paper's 1/|U_n|
                f = feat[idx]
                ct = cosine_distance(e_s, e_t, w_t)
                reg = cosine_distance(f, e_s) + cosine_distance(f, e_t, w_t)
                consistency = consistency + (per_sample * ct).sum()
                regulariser = regulariser + (per_sample * reg).sum()
        consistency = consistency / N
        regulariser = regulariser / N
        total = consistency + self.reg_weight * regulariser
        # Keep every mapping parameter in the graph (DDP requires all parameters to receive a gradient).
        total = total + 0.0 * sum(p.sum() for p in self.mapping.parameters())
        return {"consistency": consistency, "regulariser": regulariser, "total": total}


@register_loss("cross_task")
class CrossTaskTerm(LossTerm):
    """Loss term ``cross_task`` (config ``loss.extra.cross_task: {weight: w, ...}``): :class:`CrossTaskLoss`
    on every predicted view, with the model's encoder feature ``outputs["features"]["image"]``.

    The arguments default to the ``ModelConfig`` defaults; set ``feature_channels`` to the model's
    ``fusion_channels`` (and ``num_classes``, ``depth_min``, ``depth_max``) when they differ — a
    mismatch fails on the first batch with a message naming the key.
    """

    needs_features = True

    def __init__(self, feature_channels: int = 64, num_classes: int = 13, depth_min: float = 0.3,
                 depth_max: float = 10.0, width: int = 32, num_layers: int = 3, reg_weight: float = 1.0,
                 include_labelled: bool = False, detach_image_feature: bool = True,
                 tasks: tuple[str, ...] | list[str] = TASKS) -> None:
        super().__init__()
        self.feature_channels = feature_channels
        self.loss = CrossTaskLoss(feature_channels, num_classes, (depth_min, depth_max), tasks=tuple(tasks),
                                  width=width, num_layers=num_layers, reg_weight=reg_weight,
                                  include_labelled=include_labelled, detach_image_feature=detach_image_feature)

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        preds, labels, valid = {}, {}, {}
        for task in self.loss.tasks:
            preds[task], labels[task], valid[task] = select_views(batch, outputs, task)
        feat = outputs["features"]["image"]
        if feat.dim() == 5:  # all_views: [B, V, C, h, w]
            feat = feat.flatten(0, 1)
        if feat.shape[1] != self.feature_channels:
            msg = (f"cross_task: the encoder feature has {feat.shape[1]} channels but feature_channels="
                   f"{self.feature_channels}; set loss.extra.cross_task.feature_channels to the model's fusion_channels")
            raise ValueError(msg)
        if preds[self.loss.tasks[0]].shape[0] != feat.shape[0]:
            msg = "cross_task: predictions and encoder features cover different numbers of views"
            raise ValueError(msg)
        parts = self.loss(preds, labels, valid, feat.float())
        logs = {f"{self.name}/consistency": float(parts["consistency"].detach()),
                f"{self.name}/regulariser": float(parts["regulariser"].detach()),
                self.name: float(parts["total"].detach())}
        return parts["total"], logs
