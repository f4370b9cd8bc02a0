"""Offline training and evaluation of the CvM-MTL network (`mtl3d train`, `mtl3d eval`).

Task losses and the loss-term registry (:func:`register_loss`), dataset-level metrics, the typed
training config, the trainer (AdamW, warm-up + cosine/poly, bf16 autocast, DDP, atomic resumable
checkpoints) and the evaluation loop shared with `mtl3d eval`. See docs/training.md.
"""

from __future__ import annotations

from mtl3d_perception.train.config import TrainConfig, load_config
from mtl3d_perception.train.evaluate import evaluate
from mtl3d_perception.train.losses import LossTerm, MultiTaskLoss, register_loss, registered_losses
from mtl3d_perception.train.metrics import MultiTaskMeter, delta_m
from mtl3d_perception.train.trainer import Trainer

__all__ = [
    "LossTerm",
    "MultiTaskLoss",
    "MultiTaskMeter",
    "TrainConfig",
    "Trainer",
    "delta_m",
    "evaluate",
    "load_config",
    "register_loss",
    "registered_losses",
]
