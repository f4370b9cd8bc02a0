"""An inference copy of a CvM-MTL network: the same function, fewer and cheaper operations per frame.

``prepare_for_inference(model)`` returns a deep copy in eval mode (the given model is untouched), with
every BatchNorm that directly follows a convolution folded into that convolution's weight and bias
(``torch.nn.utils.fusion.fuse_conv_bn_weights``, computed in float64): the network has the same
parameters' function, one pass per folded layer less. Folding uses the running statistics, so it is
only valid in eval mode; the copy refuses ``train(True)``.

Which pairs fold: a ``Conv2d`` followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` (``conv_bn_relu``,
the matching features' head), and the pairs a module lists in its ``conv_bn_pairs`` attribute
(EfficientNet-Lite's blocks, whose forward calls conv and BatchNorm by name).

The runtime (``runtime.pipeline``) runs this copy; ``test/test_inference.py`` checks it gives the
reference model's outputs to float tolerance.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


class InferenceOnlyError(RuntimeError):
    """Training was asked of a network prepared for inference."""


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval mode, running statistics) into ``conv`` in place; float64 arithmetic, original dtype."""
    if bn.running_mean is None or bn.running_var is None:
        msg = f"cannot fold {bn}: it tracks no running statistics"
        raise ValueError(msg)
    dtype = conv.weight.dtype

    def f64(t):
        return None if t is None else t.detach().double()

    weight, bias = fuse_conv_bn_weights(f64(conv.weight), f64(conv.bias), f64(bn.running_mean), f64(bn.running_var),
                                        bn.eps, f64(bn.weight), f64(bn.bias))
    conv.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that follows a Conv2d into it, in place (see the module docstring).

    The folded BatchNorm becomes ``nn.Identity`` (so ``nn.Sequential`` indices stay). Returns how many
    were folded. The model must be in eval mode.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it uses the running statistics)")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if type(bn) is nn.BatchNorm2d and isinstance(conv, nn.Conv2d):
                    _fold(conv, bn)
                    module[i + 1] = nn.Identity()
                    folded += 1
        for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
                _fold(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def _refuse_training(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        msg = "this network was prepared for inference (BatchNorm folded); train the original model instead"
        raise InferenceOnlyError(msg)
    return nn.Module.train(self, False)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded; its outputs equal ``model.eval()``'s to float rounding.

    The copy's parameters do not require gradients, and ``copy.train()`` raises :class:`InferenceOnlyError`.
    """
    prepared = copy.deepcopy(model).eval()
    fold_batchnorm(prepared)
    for p in prepared.parameters():
        p.requires_grad_(False)
    prepared.train = _refuse_training.__get__(prepared)
    return prepared
