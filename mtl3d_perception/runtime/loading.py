"""Where the node and replay get their network: the shipped default checkpoint, a given file, or a preset.

``model_path`` forms:
- ``""`` (default) or ``default``: ``models/default.safetensors`` from the source checkout or the installed share
  directory (``model.checkpoint.default_model_path``);
- a ``.safetensors`` path: that checkpoint (config, classes and palette come from its metadata);
- ``preset:NAME``: a freshly built preset with RANDOM task heads — for tests and smoke runs only, and
  logged as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl3d_perception.model.checkpoint import SHIPPED_NAME, checkpoint_argument
from mtl3d_perception.model.config import PRESET_PREFIX
from mtl3d_perception.runtime.params import device_problem
from mtl3d_perception.typed_config import SettingError


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` as given (the one device
    rule of the node, replay, training and evaluation; the accepted strings are ``runtime.params.DEVICES``).

    Raises:
        SettingError: a string not in ``runtime.params.DEVICES``, a CUDA device while CUDA is not available, or a GPU
            index past the last GPU (named ``device``).
    """
    import torch

    if reason := device_problem(device):
        raise SettingError("device", reason)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", f"device {device!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SettingError("device", f"device {device!r}: there are {torch.cuda.device_count()} GPUs (cuda:0 to "
                                     f"cuda:{torch.cuda.device_count() - 1})")
    return str(dev)


def load_model(model_path: str, *, device: str = "cpu", log: Any = None, name: str = "model_path") -> tuple[Any, str]:
    """The network for ``model_path`` (see the module docstring) on ``device``, and a one-line description; ``name``
    is what the caller calls the setting in errors (the node's parameter ``model_path``, ``mtl3d``'s ``--model``).

    Raises:
        FileNotFoundError: no such checkpoint (or no default one).
        ValueError: a checkpoint that does not match its stored config, or an unknown preset.
        SettingError: a ``device`` :func:`resolve_device` refuses (a CUDA device without CUDA, an unknown name).
    """
    from mtl3d_perception.model import build_model, load_checkpoint

    device = resolve_device(device)  # the one device rule: torch's own errors for "gpu" or a missing CUDA said less

    if model_path.startswith(PRESET_PREFIX):
        preset = model_path[len(PRESET_PREFIX):]
        model = build_model(preset)
        description = f"preset {preset} (RANDOM weights: not a trained model)"
        if log is not None:
            log.warning(f"model_path {model_path!r}: built preset {preset!r} with random task heads; outputs are meaningless")
    else:
        path = Path(checkpoint_argument(model_path))
        if not path.is_file():
            raise FileNotFoundError(f"{name} {str(path)!r} is not a file; expected a .safetensors checkpoint, "
                                    f"'' or '{SHIPPED_NAME}' for the shipped model or '{PRESET_PREFIX}NAME' for random "
                                    "weights")
        model = load_checkpoint(path, map_location=device)
        description = str(path)
    return model.to(device).eval(), description
