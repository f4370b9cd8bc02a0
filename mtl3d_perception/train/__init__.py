"""Offline training and evaluation of the CvM-MTL network (`mtl3d train`, `mtl3d eval`).

Task losses and the loss-term registry (:func:`register_loss`; the modules holding loss terms are imported
here so that they register, as timm registers its models), the typed
training config, the trainer (AdamW, warm-up + cosine/poly, bf16 autocast, DDP, atomic resumable
checkpoints) and the evaluation loop shared with `mtl3d eval`. See docs/training.md.
"""

from __future__ import annotations

from mtl3d_perception.train import (  # noqa: F401  (register their loss terms)
    cross_task,
    cross_view,
    depth_distribution,
    depth_error,
    pap_loss,
    photometric,
)
from mtl3d_perception.train.config import TrainConfig, load_config
from mtl3d_perception.train.evaluate import evaluate
from mtl3d_perception.train.loss_base import LossTerm, register_loss, registered_losses
from mtl3d_perception.train.losses import MultiTaskLoss
from mtl3d_perception.train.trainer import Trainer

__all__ = [
    "LossTerm",
    "MultiTaskLoss",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_config",
    "register_loss",
    "registered_losses",
]
