"""An inference copy of a CvM-MTL network: the same function, fewer and cheaper operations per frame.

``prepare_for_inference(model)`` returns a deep copy in eval mode (the given model is untouched), with
every BatchNorm that directly follows a convolution folded into that convolution's weight and bias
(``torch.nn.utils.fusion.fuse_conv_bn_weights``, computed in float64): the network has the same
parameters' function, one pass per folded layer less. Folding uses the running statistics, so it is
only valid in eval mode; the copy refuses ``train(True)``.

Which pairs fold: a ``Conv2d`` followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` (``conv_bn_relu``,
the matching features' head), and the pairs a module lists in its ``conv_bn_pairs`` attribute
(EfficientNet-Lite's blocks, whose forward calls conv and BatchNorm by name).

Then the per-task decoders, which share their input, run as one module (``FusedTaskDecoders``: their first
convolutions concatenated, their second ones as one grouped convolution; the same sums, 2 calls instead of
8), and the MTL encoder runs in channels-last memory format (its depthwise convolutions skip oneDNN's layout
reorders). Each step measured faster on one CPU thread (benchmarks/RESULTS.md, "Node latency").

The runtime (``runtime.pipeline``) runs this copy; ``test/test_inference.py`` checks it gives the
reference model's outputs to float tolerance.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from mtl3d_perception.model.heads import resize_bilinear


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


class FusedTaskDecoders(nn.Module):
    """The ``TaskDecoder`` s of ``MultiTaskHeads`` (BatchNorm folded) as one module with the same outputs.

    Every decoder maps (fused [N, C_f, h, w], skip [N, C_d, 2h, 2w]) to ``relu(conv4(resize(relu(conv8(fused)))
    + skip))``. The conv8 weights are stacked (one convolution of ``fused`` to T * C_d channels), and the conv4
    weights form one convolution with T groups; resizing is per channel. Returns {task: [N, C_d, 2h, 2w]}.
    """

    def __init__(self, decoders: nn.ModuleDict):
        super().__init__()
        self.tasks = tuple(decoders)
        first = [d.conv8[0] for d in decoders.values()]
        second = [d.conv4[0] for d in decoders.values()]
        for convs in (first, second):
            geometry = {(c.kernel_size, c.stride, c.padding, c.dilation, c.groups) for c in convs}
            if len(geometry) != 1 or convs[0].groups != 1 or any(c.bias is None for c in convs):
                msg = f"decoders differ in shape or still hold BatchNorm; fold first: {geometry}"
                raise ValueError(msg)
        self.conv8 = self._stacked(first, groups=1)
        self.conv4 = self._stacked(second, groups=len(second))

    @staticmethod
    def _stacked(convs: list[nn.Conv2d], groups: int) -> nn.Conv2d:
        c = convs[0]
        stacked = nn.Conv2d(c.in_channels * groups, c.out_channels * len(convs), c.kernel_size, c.stride, c.padding,
                            c.dilation, groups).to(c.weight)
        stacked.weight = nn.Parameter(torch.cat([conv.weight for conv in convs]).detach(), requires_grad=False)
        stacked.bias = nn.Parameter(torch.cat([conv.bias for conv in convs]).detach(), requires_grad=False)
        return stacked

    def forward(self, fused: torch.Tensor, skip: torch.Tensor) -> dict[str, torch.Tensor]:
        n = len(self.tasks)
        x = resize_bilinear(F.relu(self.conv8(fused)), skip.shape[-2:])
        x = F.relu(self.conv4(x + skip.repeat(1, n, 1, 1)))
        return dict(zip(self.tasks, x.split(x.shape[1] // n, 1)))


def _refuse_training(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        msg = "this network was prepared for inference (BatchNorm folded); train the original model instead"
        raise InferenceOnlyError(msg)
    return nn.Module.train(self, False)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` prepared as the module docstring says; its outputs equal ``model.eval()``'s to
    float rounding.

    The copy's parameters do not require gradients, and ``copy.train()`` raises :class:`InferenceOnlyError`.
    """
    prepared = copy.deepcopy(model).eval()
    fold_batchnorm(prepared)
    heads = getattr(prepared, "heads", None)
    if heads is not None and len(heads.decoders) > 1:
        heads.fused_decoders = FusedTaskDecoders(heads.decoders)
    if hasattr(prepared, "encoder"):
        prepared.encoder.to(memory_format=torch.channels_last)
    for p in prepared.parameters():
        p.requires_grad_(False)
    prepared.train = _refuse_training.__get__(prepared)
    return prepared
