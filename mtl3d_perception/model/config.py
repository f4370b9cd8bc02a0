"""`ModelConfig`: the typed configuration of the CvM-MTL network, and its presets.

Presets are small YAML overrides of the defaults below, one file per preset in ``config/model/``
(the single source of truth). They are found in the source tree (``<repo>/config/model``, which also
covers ``pip install -e``) and, once installed by ament/colcon or pip, in
``<prefix>/share/mtl3d_perception/config/model`` (setup.py's ``data_files``). The loader rejects
unknown keys and wrong types by name (nanoGPT's "Unknown config key", dacite in MVSplat), through
:mod:`mtl3d_perception.typed_config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtl3d_perception import typed_config
from mtl3d_perception.classes import NYU13_CLASSES, NYU13_PALETTE
from mtl3d_perception.resources import share_candidates
from mtl3d_perception.typed_config import ConfigError  # re-exported: model and train raise it

PACKAGE = "mtl3d_perception"
TASKS: tuple[str, ...] = ("semantic", "depth", "normals", "boundary")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a CvM-MTL network; stored in every checkpoint.

    Sizes follow DESIGN's letters: ``input_size`` is (W, H); the CvM works at stride 8.
    """

    name: str = "custom"
    # MTL encoder f(.)
    encoder: str = "tiny_cnn"
    pretrained: bool = True  # load the encoder's ImageNet / user weights when building (not when restoring)
    encoder_weights: str | None = None  # path to a user state dict (vit_small: DINOv2-style keys)
    image_mean: tuple[float, float, float] | None = None  # None: the encoder's own normalisation
    image_std: tuple[float, float, float] | None = None
    input_size: tuple[int, int] = (160, 120)
    # Cross-view Module g = e . m . s
    use_cvm: bool = True
    cvm_stages: tuple[int, int, int] = (16, 32, 48)  # s(.) widths at strides 2, 4, 8
    cvm_channels: int = 48  # s(.) output width = m(.) model width
    cvm_layers: int = 2  # M blocks of (self-view, cross-view) attention
    cvm_heads: int = 1
    cvm_window_splits: int = 2  # the feature map is cut into splits x splits windows
    cvm_ffn_expansion: int = 2
    cvm_max_sources: int = 2  # each view is matched with its k nearest other views (camera distance); 0 = all
    num_depth: int = 32  # D plane-sweep candidates, uniform in inverse depth
    depth_min: float = 0.3  # metres; also the range of the depth head
    depth_max: float = 10.0
    cost_volume_backend: str = "auto"
    # Geometric depth (issue 18, beyond the paper): a softmax over the plane sweep of matching features
    # (normalised image patches + learned features) gives a per-pixel depth distribution; its expectation
    # in inverse depth and its peakedness (confidence) feed the heads, and the depth head refines it.
    # False: the paper-only CvM (checkpoints from before issue 18 load as that).
    geometric_depth: bool = False
    match_channels: int = 32  # width of the learned matching features
    # Cost aggregation (session 8): the sweep's logits are averaged over a k x k window of its cells (stride 4)
    # before the read-out, the window aggregation of classical stereo (Scharstein & Szeliski 2002, IJCV 47).
    # On the real held-out HoloLens pairs, k = 5 on the stage-7 model, untrained: geometric abs rel 0.323 -> 0.274
    # (benchmarks/geometric_read_out.py).
    # 1: none (models from before it load as that).
    sweep_aggregation: int = 1
    # Learned depth confidence (issue 18, session 6): a small head on detached inputs predicts the final depth's
    # expected abs rel error; the published confidence is min(1, matching / MATCHED) * exp(-error / ERROR_SCALE)
    # (heads.ConfidenceHead: 0 only where nothing was matched). False: the prior/geometry agreement instead (models from before it load as that).
    confidence_head: bool = False
    # The confidence head also sees the final depth: its inverse depth scaled to [0, 1] and its local log-gradient
    # (depth edges). False: the four matching cues only (the stage-6 head).
    confidence_depth_cues: bool = False
    # Prior scale alignment (session 13): before the gate, the depth head's prior is rescaled per image to the
    # geometry (heads.Predictor.prior_scale: the mean log ratio weighted by the gate and the parallax, shrunk to 1
    # where little is matched), so a prior whose scale is wrong for a room or camera takes the metric scale of what
    # was matched (as monocular depth is aligned to metric points, Ranftl et al. 2022, MiDaS). False: the prior as the
    # head gives it (checkpoints from before it load as that).
    prior_scale_alignment: bool = False
    # Exposure band (session 15): each input image is scaled so its mean intensity (RGB in [0, 1]) lies in [lo, hi],
    # the automatic gain of a camera's ISP done once more (network.exposure_gain); images inside the band are left
    # as they are. The 10-90 % range of the training images' means is 0.32-0.46 (HoloLens and synthetic alike); an
    # under-exposed camera otherwise costs the real design frames 11 % abs rel (models/README.md). None: off
    # (checkpoints from before it load as that).
    exposure_band: tuple[float, float] | None = None
    # Fusion and task heads
    fusion_channels: int = 64  # width of the 1x1 projection of concat[f(I), C, F]
    decoder_channels: int = 32
    classes: tuple[str, ...] = NYU13_CLASSES
    palette: tuple[tuple[int, int, int], ...] = NYU13_PALETTE
    refiner: str | None = None  # a name from heads.register_refiner, run between decoders and predictors
    refiner_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.classes):
            msg = f"palette has {len(self.palette)} colours but there are {len(self.classes)} classes"
            raise ConfigError(msg)
        if not 0 < self.depth_min < self.depth_max:
            msg = f"depth range [{self.depth_min}, {self.depth_max}] must satisfy 0 < depth_min < depth_max"
            raise ConfigError(msg)
        W, H = self.input_size
        if W % 8 or H % 8 or W <= 0 or H <= 0:
            msg = f"input_size (W, H) = {self.input_size} must be positive multiples of 8 (the CvM stride)"
            raise ConfigError(msg)
        if self.num_depth < 1 or self.cvm_layers < 0 or self.cvm_window_splits < 1:
            msg = f"num_depth, cvm_window_splits must be >= 1 and cvm_layers >= 0, got {self.num_depth}, {self.cvm_window_splits}, {self.cvm_layers}"
            raise ConfigError(msg)
        if self.cvm_max_sources < 0:
            msg = f"cvm_max_sources must be >= 0 (0 = every other view), got {self.cvm_max_sources}"
            raise ConfigError(msg)
        if self.geometric_depth and (not self.use_cvm or self.num_depth < 2):
            msg = f"geometric_depth needs use_cvm: true and num_depth >= 2, got use_cvm {self.use_cvm}, num_depth {self.num_depth}"
            raise ConfigError(msg)
        if self.confidence_head and not self.geometric_depth:
            msg = "confidence_head needs geometric_depth: true (it refines the matching confidence)"
            raise ConfigError(msg)
        if self.confidence_depth_cues and not self.confidence_head:
            msg = "confidence_depth_cues needs confidence_head: true"
            raise ConfigError(msg)
        if self.exposure_band is not None and not 0 < self.exposure_band[0] <= self.exposure_band[1] < 1:
            msg = f"exposure_band (lo, hi) must satisfy 0 < lo <= hi < 1 (mean intensity of RGB in [0, 1]), got {self.exposure_band}"
            raise ConfigError(msg)
        if self.prior_scale_alignment and not self.geometric_depth:
            msg = ("prior_scale_alignment needs geometric_depth: true (it aligns the prior to the geometric depth); "
                   "use false for a model without it")
            raise ConfigError(msg)
        if self.sweep_aggregation < 1 or self.sweep_aggregation % 2 == 0:
            msg = f"sweep_aggregation must be an odd window size >= 1 (1 = none), got {self.sweep_aggregation}"
            raise ConfigError(msg)
        if self.sweep_aggregation > 1 and not self.geometric_depth:
            msg = (f"sweep_aggregation {self.sweep_aggregation} needs geometric_depth: true (it averages the geometric "
                   "sweep); use 1 for a model without it")
            raise ConfigError(msg)
        if self.match_channels < 1:
            msg = f"match_channels must be >= 1, got {self.match_channels}"
            raise ConfigError(msg)
        sizes = {"cvm_channels": self.cvm_channels, "cvm_heads": self.cvm_heads, "cvm_ffn_expansion":
                 self.cvm_ffn_expansion, "cvm_window_splits": self.cvm_window_splits, "fusion_channels":
                 self.fusion_channels, "decoder_channels": self.decoder_channels}
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad:
            msg = f"{', '.join(f'{k} {v}' for k, v in bad.items())}: expected >= 1"
            raise ConfigError(msg)
        if self.image_std is not None and not all(math.isfinite(s) and s > 0 for s in self.image_std):
            msg = f"image_std must be three finite numbers > 0 (the input is divided by it), got {self.image_std}"
            raise ConfigError(msg)
        if self.cvm_channels % self.cvm_heads:
            msg = f"cvm_channels {self.cvm_channels} must be divisible by cvm_heads {self.cvm_heads}"
            raise ConfigError(msg)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def depth_range(self) -> tuple[float, float]:
        return (self.depth_min, self.depth_max)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict; unknown keys and wrong types raise ConfigError naming the key."""
        return typed_config.from_dict(cls, values, what="model config")

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def preset_dirs() -> list[Path]:
    """Folders searched for ``<preset>.yaml``, in order: source tree, then installed share dirs
    (``resources.share_candidates``)."""
    return share_candidates("config", "model")


# How the runtime (``model_path``), ``mtl3d replay --model`` and ``mtl3d info`` name a preset's random-weight network.
PRESET_PREFIX = "preset:"


def available_presets() -> list[str]:
    names: set[str] = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def preset_path(name: str) -> Path:
    for d in preset_dirs():
        path = d / f"{name}.yaml"
        if path.is_file():
            return path
    msg = f"unknown model preset {name!r}; available: {', '.join(available_presets()) or 'none found'} (searched {', '.join(map(str, preset_dirs()))})"
    raise ConfigError(msg)


# Top-level keys of a training config (config/train/), to tell a user who passed one where a model config goes.
_TRAIN_CONFIG_KEYS = {"model", "data", "loss", "optim", "steps", "out_dir"}


def load_yaml(path: str | Path) -> ModelConfig:
    """The model config in the YAML file ``path`` (a preset in ``config/model/`` or a user's own).

    Raises:
        FileNotFoundError: no such file. ConfigError: the file is empty, binary, not YAML, not a mapping, a training
            config, or has an unknown key or a wrong type; each message names ``path`` and what was expected.
    """
    path = Path(path)
    expected = f"a preset name ({', '.join(available_presets())}), a model YAML or a .safetensors checkpoint"
    if not path.is_file():
        raise FileNotFoundError(f"model config not found: {path}; expected {expected}")
    values = typed_config.read_yaml_file(path, f"a model YAML; expected {expected}")
    if values is None:
        msg = f"{path}: the model config is empty; expected a YAML mapping of model settings (see config/model/)"
        raise ConfigError(msg)
    if not isinstance(values, dict):
        msg = f"{path}: a model config must be a mapping, got {type(values).__name__}"
        raise ConfigError(msg)
    if len(_TRAIN_CONFIG_KEYS & set(values)) >= 2:
        msg = (f"{path}: a training config (keys {', '.join(sorted(_TRAIN_CONFIG_KEYS & set(values)))}), not a model "
               f"config; expected {expected} (a training config's model is its model.preset)")
        raise ConfigError(msg)
    values.setdefault("name", path.stem)
    try:
        return ModelConfig.from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_config(spec: str | Path | dict | ModelConfig) -> ModelConfig:
    """A preset name, a YAML path, a dict or a ModelConfig -> ModelConfig."""
    if isinstance(spec, ModelConfig):
        return spec
    if isinstance(spec, dict):
        return ModelConfig.from_dict(spec)
    text = str(spec)
    if Path(text).is_dir():
        msg = (f"{text}: is a directory; expected a preset name ({', '.join(available_presets())}), a model YAML "
               "or a .safetensors checkpoint")
        raise ConfigError(msg)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_yaml(text)
    return load_yaml(preset_path(text))
