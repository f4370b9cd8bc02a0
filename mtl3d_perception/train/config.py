"""`TrainConfig`: typed training configuration, loaded from YAML plus ``key=value`` overrides.

Sections are dataclasses (MVSplat / nanoGPT style); a YAML file in ``config/train/`` overrides the
defaults below, and command-line overrides use dotted keys (``optim.lr=3e-4``, ``data.train.0.end=0.5``;
values are parsed as YAML). Unknown keys and wrong types raise :class:`ConfigError` naming the full key
(checked by :func:`mtl3d_perception.typed_config.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl3d_perception.data.augment import AugmentConfig
from mtl3d_perception.data.datasets import SourceConfig
from mtl3d_perception.model.config import ConfigError
from mtl3d_perception.resources import checkout_root
from mtl3d_perception.typed_config import from_dict, parse_yaml, read_yaml_file, require


@dataclass
class ModelSection:
    """The network: a preset (name or YAML path) plus ModelConfig field overrides (e.g. ``use_cvm``, ``refiner``)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str = ""  # start from these weights (fine-tuning)
    # parts kept fixed: top-level names (e.g. [encoder]) or dotted submodule paths (encoder.net._blocks.0);
    # no gradient, BatchNorm statistics frozen
    freeze: tuple[str, ...] = ()
    # parts of init_checkpoint that start again from their initialisation (their weights are not loaded; random, also
    # for a pretrained encoder): names as in ``freeze``, e.g. [heads.confidence] to train a confidence head of another
    # shape from scratch; never also in ``freeze``
    reinit: tuple[str, ...] = ()


@dataclass
class DataConfig:
    train: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    val: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(split="val", num_scenes=2, frames_per_scene=8)])
    image_size: tuple[int, int] | None = None  # (W, H); None: the model's input_size
    num_views: int = 2
    batch_size: int = 4  # per process
    num_workers: int = 0
    label_regime: str = "full"  # full | random | one
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        require("data.batch_size", self.batch_size, self.batch_size >= 1, "an int >= 1")
        if self.image_size is not None:
            require("data.image_size", self.image_size, min(self.image_size) >= 8 and all(v % 8 == 0 for v in self.image_size),
                    "[W, H], each a multiple of 8 (the network's stride), e.g. [160, 120]")
        from mtl3d_perception.data.datasets import LABEL_REGIMES

        require("data.label_regime", self.label_regime, self.label_regime in LABEL_REGIMES,
                f"one of {', '.join(LABEL_REGIMES)}")
        require("data.num_workers", self.num_workers, self.num_workers >= 0, "an int >= 0")
        require("data.num_views", self.num_views, self.num_views >= 1, "an int >= 1")


@dataclass
class LossConfig:
    """Task weights (0 switches a task off), the depth loss kind, and extra registered loss terms."""

    weights: dict[str, float] = field(default_factory=lambda: {"semantic": 1.0, "depth": 1.0, "normals": 1.0, "boundary": 1.0})
    depth_kind: str = "l1"  # l1 | silog | scale_aware
    silog_lambda: float = 0.85
    all_views: bool = True  # supervise every view (the paper), not only the reference
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {weight: w, **kwargs}

    def __post_init__(self) -> None:
        from mtl3d_perception.data.batch import TASKS

        for task, w in self.weights.items():
            require(f"loss.weights.{task}", task, task in TASKS, f"a task name ({', '.join(TASKS)})")
            require(f"loss.weights.{task}", w, math.isfinite(w) and w >= 0, "a finite number >= 0 (0 switches the task off)")
        for name, spec in self.extra.items():  # a negative weight would maximise the term
            require(f"loss.extra.{name}", spec, isinstance(spec, dict), "a mapping {weight: w, ...the term's arguments}")
            w = spec.get("weight", 1.0)
            require(f"loss.extra.{name}.weight", w, isinstance(w, int | float) and not isinstance(w, bool)
                    and math.isfinite(w) and w >= 0, "a finite number >= 0")
        require("loss.silog_lambda", self.silog_lambda, 0 <= self.silog_lambda <= 1, "a number in [0, 1]")

    def weighted_extra(self) -> list[str]:
        """The ``extra`` terms that count: a weight > 0 (1 when not given)."""
        return [name for name, spec in self.extra.items() if float(spec.get("weight", 1.0)) > 0]


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # cosine | poly | constant
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01  # final lr / lr (cosine)
    poly_power: float = 0.9
    grad_clip: float = 10.0  # 0 disables
    encoder_lr_ratio: float = 1.0  # the MTL encoder's lr / lr (below 1 keeps pretrained weights closer)

    def __post_init__(self) -> None:
        require("optim.lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a finite number > 0")
        require("optim.weight_decay", self.weight_decay, math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                 "a finite number >= 0")
        require("optim.betas", self.betas, all(0 <= b < 1 for b in self.betas), "two numbers in [0, 1)")
        require("optim.warmup_steps", self.warmup_steps, self.warmup_steps >= 0, "an int >= 0")
        require("optim.poly_power", self.poly_power, math.isfinite(self.poly_power) and self.poly_power > 0,
                "a finite number > 0")
        require("optim.min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "a number in [0, 1]")
        require("optim.grad_clip", self.grad_clip, math.isfinite(self.grad_clip) and self.grad_clip >= 0,
                 "a finite number >= 0 (0 disables)")
        require("optim.encoder_lr_ratio", self.encoder_lr_ratio,
                 math.isfinite(self.encoder_lr_ratio) and self.encoder_lr_ratio >= 0, "a finite number >= 0")


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = "runs/default"
    steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    log_every: int = 20
    image_every: int = 200  # TensorBoard montages; 0 disables
    eval_every: int = 500  # 0 disables periodic evaluation
    eval_batches: int = 20  # batches per periodic evaluation
    checkpoint_every: int = 500
    tensorboard: bool = True
    progress: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms

    def __post_init__(self) -> None:
        require("steps", self.steps, self.steps >= 1, "an int >= 1")
        require("seed", self.seed, self.seed >= 0, "an int >= 0 (numpy's generators take no negative seed)")
        require("log_every", self.log_every, self.log_every >= 1, "an int >= 1")
        for key in ("image_every", "eval_every", "checkpoint_every"):
            require(key, getattr(self, key), getattr(self, key) >= 0, "an int >= 0 (0 disables)")
        require("eval_batches", self.eval_batches, self.eval_batches >= 1, "an int >= 1")
        require("out_dir", self.out_dir, bool(self.out_dir), "a folder")


def to_dict(cfg: Any) -> Any:
    """Plain YAML/JSON-friendly structure (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict/list tree in place."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        msg = f"override {assignment!r} is not of the form key=value"
        raise ConfigError(msg)
    value = parse_yaml(text, f"override {key.strip()!r}") if text.strip() else ""
    node: Any = tree
    parts = key.strip().split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                msg = f"override key {where!r}: {part!r} is not an index of a list of {len(node)}"
                raise ConfigError(msg)
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            msg = f"override key {where!r}: {'.'.join(parts[:i])!r} is not a section"
            raise ConfigError(msg)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, checked into a :class:`TrainConfig`."""
    tree: dict[str, Any] = to_dict(TrainConfig())
    if path is not None:
        p = Path(path)
        if p.is_dir():
            msg = f"training config {p} is a directory; expected a YAML file (e.g. config/train/finetune.yaml)"
            raise ConfigError(msg)
        if not p.is_file():
            msg = f"training config not found: {p}"
            if not p.is_absolute() and p.parts[:2] == ("config", "train") and checkout_root() is None:
                msg += (" (an installed package ships no training configs: they are in the source checkout and the "
                        "sdist; run mtl3d train from a clone of the repository, README 'Fine-tune on your own robot')")
            raise FileNotFoundError(msg)
        loaded = read_yaml_file(p, "a training config: a YAML mapping")
        if loaded is None:
            msg = f"{p}: the training config is empty; expected a YAML mapping (see config/train/)"
            raise ConfigError(msg)
        if not isinstance(loaded, dict):
            msg = f"{p}: a training config must be a mapping"
            raise ConfigError(msg)
        _merge(tree, loaded)
    for assignment in overrides:
        apply_override(tree, assignment)
    return from_dict(TrainConfig, tree)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    """Recursive dict update; lists and scalars are replaced, and dict-valued fields (weights, extra,
    overrides) merged key by key.
    """
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
