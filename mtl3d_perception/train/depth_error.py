"""Loss term ``depth_error``: teaches the learned depth confidence (``model.heads.ConfidenceHead``, issue 18).

The head predicts ``s`` = the expected abs rel error of the final depth; its target is the error the network
actually makes, ``e = |d - d*| / d*`` on pixels with ground truth, taken detached. The loss is the negative
log-likelihood of ``e`` under a Laplace density of scale ``s`` (up to a constant), ``e / s + log s``, which is
minimised by ``s = E[e | inputs]``: the mean error, the quantity a sparsification curve of abs rel ranks. (The
aleatoric-uncertainty loss of Kendall & Gal, "What Uncertainties Do We Need...", NeurIPS 2017, with the error
of a given prediction as its residual, as confidence learning for stereo does.) Its inputs are detached in the
model, so it trains the head alone, with or without the other terms.

Config: ``loss.extra.depth_error: {weight: w}``; the model needs ``confidence_head: true``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mtl3d_perception import geometry
from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.train.loss_base import LossTerm, register_loss, select_views, zero_loss


def expected_error_nll(estimate: Tensor, error: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``error / estimate + log(estimate)`` over ``mask``; all ``[N,1,H,W]``, ``estimate`` > 0.

    ``error`` is treated as a constant (no gradient). Raises ValueError on different shapes.
    """
    if estimate.shape != error.shape or estimate.shape != mask.shape:
        msg = f"estimate, error and mask must have one shape, got {tuple(estimate.shape)}, {tuple(error.shape)}, {tuple(mask.shape)}"
        raise ValueError(msg)
    nll = error.detach() / estimate + estimate.log()
    return torch.where(mask, nll, 0.0).sum() / mask.sum().clamp_min(1)


@register_loss("depth_error")
class DepthErrorLoss(LossTerm):
    """Laplace likelihood of the final depth's abs rel error under the predicted ``outputs["depth_error"]``.

    Reference view only (the view the runtime predicts); samples without depth labels are skipped.
    """

    needs_labels = "depth"

    def forward(self, batch: MultiViewBatch, outputs: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        if "depth_error" not in outputs:
            msg = "loss term depth_error needs a model with confidence_head: true (no 'depth_error' output)"
            raise ValueError(msg)
        pred, label, valid = select_views(batch, outputs, "depth", reference_only=True)
        estimate = outputs["depth_error"]
        if estimate.dim() == 5:  # every view predicted: the reference's
            estimate = estimate[:, 0]
        mask = geometry.valid_depth(label) & valid[:, None, None, None]
        if not bool(mask.any()):
            return zero_loss(estimate), {"depth_error": 0.0}
        safe = torch.where(mask, label, torch.ones_like(label))
        error = ((pred.float() - safe).abs() / safe).detach()
        loss = expected_error_nll(estimate, error, mask)
        mean_error = float(torch.where(mask, error, 0.0).sum() / mask.sum())
        mean_estimate = float(torch.where(mask, estimate.detach(), 0.0).sum() / mask.sum())
        return loss, {"depth_error": float(loss.detach()), "depth_error/actual": mean_error,
                      "depth_error/estimate": mean_estimate}
