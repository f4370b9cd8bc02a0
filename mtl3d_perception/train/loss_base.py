"""The loss-term registry and base class: what every loss term builds on.

Every term is an ``nn.Module`` registered by name with :func:`register_loss`. It receives the batch
and the model outputs and returns ``(scalar, logs)``; it says what it needs through class attributes:

- ``needs_features``: the trainer calls the model with ``return_features=True`` (outputs["features"]);
- ``needs_all_views``: the trainer calls the model with ``all_views=True`` (outputs with a view dim);
- ``min_views``: the views per sample (``data.num_views``) below which the term has nothing to compare and is 0
  (``photometric``, ``cross_view``: 2); the trainer refuses such a run (``trainer.check_views``);
- ``needs_parallax``: the term learns only from pixels that move between the views (``photometric``): a run whose
  pairs have none is refused or warned about (``train.depth_signal``).

Terms may hold parameters (e.g. a FiLM mapping net); the trainer optimises and checkpoints them with
the model. The modules holding terms (``losses``, ``cross_task``, ``cross_view``, ``depth_distribution``, ``pap_loss``) import
this one and register on import; ``mtl3d_perception.train`` imports them all (timm's registration
pattern), so no term module imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.registry import Registry

LossLogs = dict[str, float]
LOSSES: Registry[type[LossTerm]] = Registry("loss term")


def zero_loss(pred: torch.Tensor) -> torch.Tensor:
    """A zero that keeps ``pred`` in the graph (DDP needs every used parameter to receive a gradient),
    even where ``pred`` holds NaN (``0 * NaN`` would not be zero).
    """
    return torch.where(torch.zeros_like(pred, dtype=torch.bool), pred, 0.0).sum()


def register_loss(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    """Class decorator: make a :class:`LossTerm` subclass available as ``loss.extra.<name>`` in configs."""
    def decorator(cls: type[LossTerm]) -> type[LossTerm]:
        cls = LOSSES.register(name)(cls)
        cls.name = name
        return cls
    return decorator


def registered_losses() -> list[str]:
    return LOSSES.names()


def build_loss_term(name: str, **kwargs: Any) -> LossTerm:
    """Instantiate the registered term ``name``; unknown names and arguments raise ValueError naming them."""
    cls = LOSSES.get(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # the arguments the term takes, so a misspelt one (alfa for alpha) is plain to see
        import inspect

        takes = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        msg = f"loss term {name!r} (loss.extra.{name}): {exc}; it takes {', '.join(takes) or 'no argument'} and weight"
        raise ValueError(msg) from None


class LossTerm(nn.Module):
    """Base class of a loss term: ``forward(batch, outputs) -> (scalar, logs)``."""

    name: str = ""
    needs_features: bool = False
    needs_all_views: bool = False
    min_views: int = 1  # data.num_views below this leaves the term nothing to compare (it is 0)
    needs_parallax: bool = False  # views without parallax leave the term no pixel to learn from
    needs_labels: str | None = None  # the task whose labels the term learns from (None: none, unsupervised)

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[torch.Tensor, LossLogs]:
        raise NotImplementedError


def select_views(batch: MultiViewBatch, outputs: dict[str, Any], task: str, *, reference_only: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction, label, sample validity) for ``task``, flattened to N images.

    Outputs with a view dim (``all_views=True``) pair with every view's labels (N = B*V), or with
    view 0's when ``reference_only``; outputs of the reference view alone pair with view 0 (N = B).
    """
    pred = outputs[task]
    label = batch.label(task)
    valid = batch.valid[task]
    label_dims = label.dim() - 2  # per-image dims of the label, without B and V
    pred_dims = pred.dim() - 1 - label_dims  # 1 when pred has a view dim
    if task == "semantic":
        pred_dims = pred.dim() - 1 - (label_dims + 1)  # logits carry a class dim the label lacks
    if pred_dims == 1:
        if reference_only:
            return pred[:, 0], label[:, 0], valid[:, 0]
        return pred.flatten(0, 1), label.flatten(0, 1), valid.flatten(0, 1)
    return pred, label[:, 0], valid[:, 0]
