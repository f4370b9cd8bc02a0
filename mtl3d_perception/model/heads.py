"""Fusion and task heads of CvM-MTL (cvm_method_notes.md §1.5).

- ``ImageNeck`` merges the encoder levels at stride >= 8 into one map f(I) at the fusion resolution
  (stride 8, the CvM's grid), FPN style.
- ``Fusion`` concatenates [f(I), C, F] and projects them with a 1x1 conv (F~ of the paper); without the
  CvM (``use_cvm: false``) it projects f(I) alone, so the baseline has the same heads.
- One ``TaskDecoder`` per task (an ``nn.ModuleDict``): 3x3 conv at stride 8, upsampling, the encoder's
  stride-4 skip, 3x3 conv -> the task feature at stride 4.
- An optional refiner (``register_refiner``) maps the dict of task features to a new one.
- ``Predictor`` per task: 1x1 conv, bilinear upsampling to the input size, then the task's output
  mapping: semantic/boundary logits; depth in metres within [depth_min, depth_max] through a sigmoid
  in inverse depth (positive by construction); normals L2-normalised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception.model.config import TASKS, ConfigError, ModelConfig
from mtl3d_perception.model.encoders import conv_bn_relu
from mtl3d_perception.registry import Registry

# Refiners shipped in the package (``model/pap.py``) register on import; ``mtl3d_perception.model`` imports them.
REFINERS: Registry[Callable[..., nn.Module]] = Registry("refiner", ConfigError)


def register_refiner(name: str):
    """Decorator registering a refiner class under ``name`` (config key ``refiner``).

    The class is built as ``cls(task_channels: dict[str, int], config: ModelConfig, **config.refiner_args)``
    and called as ``refiner(task_feats: dict[str, Tensor [B, C_t, h, w]]) -> dict[str, Tensor]`` with
    the same keys and shapes; it runs between the task decoders and the predictors.
    """
    return REFINERS.register(name)


def list_refiners() -> list[str]:
    return REFINERS.names()


def build_refiner(config: ModelConfig, task_channels: dict[str, int]) -> nn.Module | None:
    if config.refiner is None:
        return None
    return REFINERS.get(config.refiner)(task_channels, config, **config.refiner_args)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImageNeck(nn.Module):
    """Encoder levels with reduction >= 8 -> one ``[B, C, H/8, W/8]`` map (sum of 1x1 projections, then BN-ReLU)."""

    def __init__(self, feature_info: list[dict], channels: int, stride: int = 8):
        super().__init__()
        self.levels = [i for i, f in enumerate(feature_info) if f["reduction"] >= stride]
        if not self.levels:
            msg = f"the encoder has no feature level at stride >= {stride}: {feature_info}"
            raise ConfigError(msg)
        self.proj = nn.ModuleList(nn.Conv2d(feature_info[i]["num_chs"], channels, 1, bias=False) for i in self.levels)
        self.out = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = sum(_resize(p(feats[i]), size) for p, i in zip(self.proj, self.levels))
        return self.out(x)


class TaskDecoder(nn.Module):
    def __init__(self, cin: int, channels: int):
        super().__init__()
        self.conv8 = conv_bn_relu(cin, channels)
        self.conv4 = conv_bn_relu(channels, channels)

    def forward(self, fused: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv8(fused)
        return self.conv4(_resize(x, skip.shape[-2:]) + skip)


class Predictor(nn.Module):
    """1x1 conv to the task's channels, bilinear upsampling, then the task's output mapping."""

    def __init__(self, task: str, cin: int, cout: int, depth_range: tuple[float, float]):
        super().__init__()
        self.task = task
        self.conv = nn.Conv2d(cin, cout, 1)
        self.inv_min, self.inv_max = 1.0 / depth_range[1], 1.0 / depth_range[0]
        if task == "normals":  # start facing the camera (-z in the optical frame), then learn
            nn.init.normal_(self.conv.weight, std=1e-3)
            with torch.no_grad():
                self.conv.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = _resize(self.conv(x), size).float()
        if self.task == "depth":
            # inverse depth in [1/depth_max, 1/depth_min]: positive, metric, no clamping needed
            inv = self.inv_min + torch.sigmoid(y) * (self.inv_max - self.inv_min)
            return 1.0 / inv
        if self.task == "normals":
            return F.normalize(y, dim=1, eps=1e-6)
        return y


class MultiTaskHeads(nn.Module):
    """Fusion + task decoders + optional refiner + predictors: the part of the network after f and g."""

    def __init__(self, config: ModelConfig, feature_info: list[dict], cvm_channels: int):
        super().__init__()
        self.config = config
        self.neck = ImageNeck(feature_info, config.fusion_channels)
        self.fuse = conv_bn_relu(config.fusion_channels + cvm_channels, config.fusion_channels, kernel=1)
        skip_levels = [i for i, f in enumerate(feature_info) if f["reduction"] == 4]
        if not skip_levels:
            msg = f"the encoder has no stride-4 feature level for the decoder skip: {feature_info}"
            raise ConfigError(msg)
        self.skip_level = skip_levels[0]
        self.skip = conv_bn_relu(feature_info[self.skip_level]["num_chs"], config.decoder_channels, kernel=1)
        out_channels = {"semantic": config.num_classes, "depth": 1, "normals": 3, "boundary": 1}
        self.decoders = nn.ModuleDict({t: TaskDecoder(config.fusion_channels, config.decoder_channels) for t in TASKS})
        self.refiner = build_refiner(config, dict.fromkeys(TASKS, config.decoder_channels))
        self.predictors = nn.ModuleDict(
            {t: Predictor(t, config.decoder_channels, out_channels[t], config.depth_range) for t in TASKS}
        )

    def image_feature(self, feats: list[torch.Tensor], fusion_size: tuple[int, int]) -> torch.Tensor:
        """f(I) at the fusion resolution ``[B, fusion_channels, h, w]``."""
        return self.neck(feats, fusion_size)

    def forward(
        self, feats: list[torch.Tensor], image: torch.Tensor, cvm: torch.Tensor | None, size: tuple[int, int]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Task outputs at ``size`` = (H, W) and the task features (the predictors' inputs).

        Args:
            feats: encoder levels of the views being predicted (batch N).
            image: f(I) [N, fusion_channels, h, w] from :meth:`image_feature`.
            cvm: concat[C, F] [N, D + C_cvm, h, w], or None without the CvM.
            size: output (H, W).
        """
        x = image if cvm is None else torch.cat([image, cvm.to(image.dtype)], 1)
        fused = self.fuse(x)
        skip = self.skip(feats[self.skip_level])
        task_feats = {t: dec(fused, skip) for t, dec in self.decoders.items()}
        if self.refiner is not None:
            task_feats = self.refiner(task_feats)
        out = {t: self.predictors[t](task_feats[t], size) for t in TASKS}
        return out, task_feats
