"""The CvM-MTL network (DESIGN §5 "Model"): encoders, the Cross-view Module, task heads, presets and
safetensors checkpoints.

``build_model(preset | yaml path | dict | ModelConfig)`` makes a network; ``save_checkpoint`` /
``load_checkpoint`` write and rebuild one from a single ``.safetensors`` file whose metadata carries
its config, classes, palette, input size, depth range, training data and metrics.
"""

from __future__ import annotations

from mtl3d_perception.model import pap  # noqa: F401  (registers the "pap" refiner)
from mtl3d_perception.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from mtl3d_perception.model.config import ConfigError, ModelConfig, available_presets, resolve_config
from mtl3d_perception.model.encoders import list_encoders, register_encoder
from mtl3d_perception.model.heads import list_refiners, register_refiner
from mtl3d_perception.model.network import CvMMTL, FrameFeatures


def build_model(spec="tiny") -> CvMMTL:
    """A CvM-MTL network from a preset name, a YAML path, a dict or a ModelConfig."""
    return CvMMTL(resolve_config(spec))


__all__ = [
    "CheckpointError",
    "ConfigError",
    "CvMMTL",
    "FrameFeatures",
    "ModelConfig",
    "available_presets",
    "build_model",
    "list_encoders",
    "list_refiners",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "register_encoder",
    "register_refiner",
    "resolve_config",
    "save_checkpoint",
]
