"""Checkpoints: one ``.safetensors`` file, the weights plus JSON metadata (DESIGN §5 "Checkpoints").

``__metadata__`` holds JSON strings for ``config`` (the ModelConfig), ``classes``, ``palette``,
``input_size`` (W, H), ``depth_range`` (metres), ``trained_on`` and ``metrics``, plus ``format``.
Loading rebuilds the network from the stored config (nanoGPT's ``model_args``, but inside the file)
and loads it strictly; nothing is ever unpickled. Any mismatch raises ``CheckpointError`` naming the
key and both shapes; so does a tensor holding NaN or inf (such a network only ever outputs garbage).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mtl3d_perception.model.config import PRESET_PREFIX, ConfigError, ModelConfig
from mtl3d_perception.resources import share_candidates

FORMAT = "mtl3d_perception.cvm_mtl/1"
_REQUIRED = ("config", "classes", "palette", "input_size", "depth_range", "trained_on", "metrics")


DEFAULT_CHECKPOINT = "default.safetensors"
SHIPPED_NAME = "default"  # what the mtl3d commands and model_path take for the shipped checkpoint, wherever it is


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match the network it describes."""


def default_model_path() -> Path:
    """The shipped checkpoint, ``models/default.safetensors`` (``resources.share_candidates``: the source checkout,
    then the installed share dirs).

    Raises:
        FileNotFoundError: it is in none of them, naming every place looked at.
    """
    candidates = share_candidates("models", DEFAULT_CHECKPOINT)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no default checkpoint found (looked at {', '.join(map(str, candidates))}; built with colcon? source "
        f"install/setup.bash first); set model_path to a .safetensors file, or to '{PRESET_PREFIX}tiny' for an "
        "untrained network"
    )


def checkpoint_argument(spec: str) -> str:
    """A checkpoint as the ``mtl3d`` commands and ``model_path`` take it: a path, or ``''`` or ``default``
    (:data:`SHIPPED_NAME`, unless a file of that name is in the working directory) for the shipped checkpoint, so
    ``mtl3d eval default`` works from any folder of an installed package.

    Raises:
        FileNotFoundError: ``default`` and no shipped checkpoint (:func:`default_model_path`).
    """
    if not spec or (spec == SHIPPED_NAME and not Path(spec).is_file()):
        return str(default_model_path())
    return spec


def save_checkpoint(model, path: str | Path, *, trained_on: Any = None, metrics: dict | None = None, **extra: Any) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (``.safetensors``).

    Args:
        model: a CvMMTL (its ``config`` is stored).
        path: output file; its folder is created.
        trained_on: description of the training data (string or JSON-able), stored as ``trained_on``.
        metrics: evaluation metrics (JSON-able), stored as ``metrics``.
        **extra: more JSON-able metadata entries (e.g. ``step=1000``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    meta = {
        "format": FORMAT,
        "config": config.to_dict(),
        "classes": list(config.classes),
        "palette": [list(c) for c in config.palette],
        "input_size": list(config.input_size),
        "depth_range": list(config.depth_range),
        "trained_on": trained_on,
        "metrics": metrics or {},
    }
    for key, value in extra.items():
        if key in meta:
            msg = f"metadata key {key!r} is reserved; pass it through its own argument"
            raise CheckpointError(msg)
        meta[key] = value
    strings = {k: json.dumps(v) for k, v in meta.items()}
    # Contiguous, unshared copies: safetensors refuses views sharing storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=strings)
    # safetensors writes through a private temporary file (mode 0600): give the checkpoint the mode any file
    # written here gets, so a node running as another user can read the weights.
    with contextlib.suppress(OSError):  # a filesystem without modes keeps its own
        os.chmod(tmp, 0o666 & ~_umask())
    tmp.replace(path)
    return path


def _umask() -> int:
    """The process's file-mode creation mask: Linux reports it in /proc (no race with other threads); elsewhere it
    is read by setting it and putting it back."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open(path: str | Path):
    path = Path(path)
    if path.is_dir():
        msg = f"{path}: is a directory, expected a .safetensors checkpoint file"
        raise CheckpointError(msg)
    if not path.is_file():
        msg = f"checkpoint not found: {path}"
        raise FileNotFoundError(msg)
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        msg = f"{path}: not a readable safetensors checkpoint ({_first_line(exc)})"
        raise CheckpointError(msg) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _get_tensor(f, path: Path | str, key: str) -> torch.Tensor:
    """One tensor of an open file; unreadable or non-finite ones raise CheckpointError naming the key."""
    try:
        t = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        msg = f"{path}: cannot read tensor {key!r} ({_first_line(exc)})"
        raise CheckpointError(msg) from None
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        msg = f"{path}: tensor {key!r} holds {bad} NaN or inf value(s) of {t.numel()}; refusing a non-finite model"
        raise CheckpointError(msg)
    return t


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file (CPU), checked finite; for ``init_checkpoint`` and resuming.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a directory, not a safetensors file, an unreadable or a non-finite tensor.
    """
    with _open(path) as f:
        return {key: _get_tensor(f, path, key) for key in f.keys()}


def load_weights_into(model: torch.nn.Module, path: str | Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """Load ``path``'s tensors (or already read ``weights``) into ``model`` strictly.

    Raises:
        CheckpointError: what :func:`read_weights` raises, or keys / shapes that do not match ``model`` (one line).
    """
    weights = read_weights(path) if weights is None else weights
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        msg = (f"{path}: weights do not match the model: missing keys {missing[:6]}, unexpected keys {unexpected[:6]}")
        raise CheckpointError(msg)
    for key, t in weights.items():
        if t.shape != expected[key].shape:
            msg = (f"{path}: key {key!r} has shape {tuple(t.shape)} in the file, the model expects "
                   f"{tuple(expected[key].shape)}")
            raise CheckpointError(msg)
    model.load_state_dict(weights, strict=True)


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint (no weights are read)."""
    with _open(path) as f:
        raw = f.metadata() or {}
    meta = {}
    for key, text in raw.items():
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError:
            msg = f"{path}: metadata entry {key!r} is not JSON: {text[:80]!r}"
            raise CheckpointError(msg) from None
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        msg = f"{path}: checkpoint metadata lacks {', '.join(map(repr, missing))} (not written by save_checkpoint?)"
        raise CheckpointError(msg)
    return meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the network stored in ``path`` and load its weights strictly; returns it in eval mode."""
    from mtl3d_perception.model.network import CvMMTL

    meta = read_checkpoint_metadata(path)
    try:
        # The stored weights replace the encoder's ImageNet/user weights: do not load those again.
        config = ModelConfig.from_dict({**meta["config"], "pretrained": False})
    except (ConfigError, TypeError) as exc:
        msg = f"{path}: stored config is not usable: {exc}"
        raise CheckpointError(msg) from None
    model = CvMMTL(config)
    expected = model.state_dict()
    state = {}
    with _open(path) as f:
        keys = set(f.keys())
        missing = sorted(set(expected) - keys)
        unexpected = sorted(keys - set(expected))
        if missing or unexpected:
            msg = f"{path}: checkpoint does not match its config: missing keys {missing[:6]}, unexpected keys {unexpected[:6]}"
            raise CheckpointError(msg)
        for key in expected:
            t = _get_tensor(f, path, key)
            if t.shape != expected[key].shape or t.dtype != expected[key].dtype:
                msg = (
                    f"{path}: key {key!r} has shape {tuple(t.shape)} {t.dtype} in the file, "
                    f"the model expects {tuple(expected[key].shape)} {expected[key].dtype}"
                )
                raise CheckpointError(msg)
            state[key] = t
    model.load_state_dict(state, strict=True)
    model.checkpoint_metadata = meta
    return model.to(map_location).eval()
