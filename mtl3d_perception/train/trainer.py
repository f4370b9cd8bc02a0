"""The training loop: AdamW, warm-up + cosine/poly schedule, bf16 autocast on GPU, gradient clipping,
seeded and resumable data order, TensorBoard scalars and montages, periodic evaluation, atomic
checkpoints, and DDP under ``torchrun`` (NCCL on GPU, gloo on CPU).

Checkpoints live in ``<out_dir>/checkpoints/`` (:mod:`mtl3d_perception.train.train_state`): per step a model
file (``model.save_checkpoint``: loadable by the node and ``mtl3d eval``) and a state file (optimiser,
scheduler, step, RNG and extra-loss-term state; a tensors-and-primitives dict loaded with
``weights_only=True``), committed together by one atomic rename of ``last.json``, so a kill at any instant
leaves a consistent pair to resume from; ``last.safetensors`` links to the committed model.

Resuming continues identically: the data order is a pure function of (seed, epoch, rank), each
sample's augmentation of (seed, epoch, index), and every rank's RNG state is restored (the data
loaders draw from their own generators, so where an epoch starts does not move the global stream).
The lr schedule is rebuilt from the config, so a resumed run may change ``steps``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from mtl3d_perception.cli_args import check_output_folder
from mtl3d_perception.data.batch import MultiViewBatch, collate
from mtl3d_perception.data.datasets import build_dataset
from mtl3d_perception.data.synthetic import scene_provenance
from mtl3d_perception.evaluation.montage import montage
from mtl3d_perception.model import build_model, save_checkpoint
from mtl3d_perception.model.checkpoint import (
    SHIPPED_NAME,
    CheckpointError,
    checkpoint_argument,
    load_weights_into,
    read_checkpoint_metadata,
)
from mtl3d_perception.model.config import ConfigError, resolve_config
from mtl3d_perception.runtime.loading import resolve_device
from mtl3d_perception.train import train_state
from mtl3d_perception.train.config import TrainConfig, save_config, to_dict
from mtl3d_perception.train.depth_signal import KeptPixelsMonitor, check_parallax
from mtl3d_perception.train.evaluate import evaluate
from mtl3d_perception.train.loss_base import LOSSES
from mtl3d_perception.train.losses import MultiTaskLoss
from mtl3d_perception.train.train_state import CheckpointPairError, commit, find_committed, load_state_file
from mtl3d_perception.train.trained_on import fingerprint, with_identity

log = logging.getLogger(__name__)


TRAIN_POSES_WRONG = "training on its pairs would teach the cost volume wrong geometry"


class RecordedPoseCheck(NamedTuple):
    """One recording's pose check (:func:`check_recorded_poses`)."""

    index: int  # its place in the source list
    name: str  # ``data.train.0 (bag my_bag)``
    pairs: int  # pairs with parallax (on textured cells) among those read
    read: int  # two-view samples read (up to ``runtime.pose_convention.SAMPLES``)
    message: str | None  # the warning where the poses fit another convention better


def check_recorded_poses(sources: list[Any], where: str = "data.train", consequence: str = TRAIN_POSES_WRONG
                         ) -> list[RecordedPoseCheck]:
    """Warn for each recording among ``sources`` (``SourceDataset``s; synthetic scenes and NYUv2 have no recorded
    poses) whose poses fit its images much better read in another convention (OpenGL axes, world-to-camera, a body
    frame: ``runtime.pose_convention.check_dataset``, judged by the shipped model, the one the check was measured
    with); ``consequence`` ends the warning (what wrong relative poses would do there).

    Returns:
        each recording's check, with how many of its pairs had parallax (``train.depth_signal.check_parallax``
        reads them); none where the shipped model is missing.
    """
    from mtl3d_perception.model.checkpoint import default_model_path, load_checkpoint
    from mtl3d_perception.runtime.pose_convention import SAMPLES, check_dataset

    recorded = [(i, ds) for i, ds in enumerate(sources) if ds.cfg.kind not in ("synthetic", "nyuv2")]
    if not recorded:
        return []
    try:
        judge = load_checkpoint(default_model_path())
    except FileNotFoundError as exc:
        log.warning("the poses of %s were not checked: %s", where, exc)
        return []
    results = []
    for i, ds in recorded:
        name = f"{where}.{i} ({ds.cfg.kind} {ds.cfg.path})"
        check, verdict = check_dataset(judge, ds)
        if (message := check.message(name)) is not None:
            log.warning("%s; %s", message, consequence)
        else:
            log.info("%s: poses checked, %s (%d pairs with parallax)", name,
                     "they fit" if verdict == "fit" else "too few pairs with parallax to judge", len(check.checks))
        results.append(RecordedPoseCheck(i, name, len(check.checks), min(len(ds), SAMPLES), message))
    return results

STATE_FORMAT = "mtl3d_perception.train_state/1"


class _Schedule:
    """The lr multiplier at a step: linear warm-up, then cosine (to ``min_lr_ratio``), poly or constant.

    A callable object rather than a lambda; its state is rebuilt from the config, not saved.
    """

    def __init__(self, optim_cfg, total_steps: int) -> None:
        self.warmup = int(optim_cfg.warmup_steps)
        self.kind = optim_cfg.schedule
        self.min_ratio = float(optim_cfg.min_lr_ratio)
        self.power = float(optim_cfg.poly_power)
        self.total = max(1, int(total_steps))
        if self.kind not in ("cosine", "poly", "constant"):
            msg = f"optim.schedule must be cosine, poly or constant, got {self.kind!r}"
            raise ValueError(msg)

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
        return (1.0 - t) ** self.power


class TrainModule(nn.Module):
    """Model plus loss terms in one module, so DDP synchronises the gradients of both.

    ``frozen``: parts of the model that are not trained, as top-level names (``encoder``, ``cvm``, ``heads``)
    or dotted submodule paths (``encoder.net._blocks.0``: the pretrained low-level stages on a CPU budget):
    their parameters get no gradient and they stay in eval mode, so BatchNorm keeps its running statistics.
    """

    def __init__(self, model: nn.Module, criterion: MultiTaskLoss, frozen: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        parts = dict(model.named_children())
        self.frozen = []
        unknown = []
        for name in frozen:
            try:
                self.frozen.append(model.get_submodule(name))
            except AttributeError:
                unknown.append(name)
        if unknown:
            msg = f"model.freeze names {unknown}; the model's parts are {', '.join(parts)} (or dotted submodule paths)"
            raise ValueError(msg)
        for part in self.frozen:
            part.requires_grad_(False)

    def train(self, mode: bool = True) -> TrainModule:
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self

    def forward(self, batch: MultiViewBatch) -> tuple[torch.Tensor, dict[str, float], dict[str, Any]]:
        outputs = self.model(batch.images, batch.K, batch.poses, all_views=self.criterion.needs_all_views,
                             return_features=self.criterion.needs_features)
        loss, logs = self.criterion(batch, outputs)
        return loss, logs, outputs


def build_criterion(cfg: TrainConfig) -> MultiTaskLoss:
    lc = cfg.loss
    return MultiTaskLoss(lc.weights, extra=lc.extra, depth_kind=lc.depth_kind,
                         silog_lambda=lc.silog_lambda, all_views=lc.all_views)


def init_checkpoint_path(spec: str) -> Path:
    """The file ``model.init_checkpoint`` names: a path, or ``default`` for the shipped model from any folder (the
    one rule of every ``mtl3d`` command, ``model.checkpoint.checkpoint_argument``).

    Raises:
        FileNotFoundError: no such file (naming the folder a relative path was read from), or ``default`` and no
            shipped model.
    """
    path = Path(checkpoint_argument(spec))
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        msg = (f"model.init_checkpoint {spec} not found{where}: pass model.init_checkpoint=PATH to an existing "
               f".safetensors, or {SHIPPED_NAME} for the shipped model, or, for the default model's stages, train the "
               "stage it names first (its config's out_dir)")
        raise FileNotFoundError(msg)
    return path


def build_model_from_config(cfg: TrainConfig) -> nn.Module:
    """The network of ``cfg.model``: the preset with its overrides, or, with ``init_checkpoint`` (fine-tuning),
    the checkpoint's own network and weights (its stored config, with the overrides applied; the preset is not
    used), so a fine-tuning config follows whichever model it starts from. Parts the overrides add (e.g.
    ``confidence_head: true``) and parts named in ``reinit`` start from their initialisation.

    Raises:
        FileNotFoundError: ``init_checkpoint`` names no file (:func:`init_checkpoint_path`).
        CheckpointError: an unreadable checkpoint, or overrides that change the shapes of its weights (outside the
            ``reinit`` parts) or drop some.
        ConfigError: ``reinit`` without ``init_checkpoint``, naming a part the network does not have, or a part
            ``freeze`` also holds (it would stay at its initialisation).
    """
    for name in cfg.model.reinit:
        if not cfg.model.init_checkpoint:
            msg = f"model.reinit {list(cfg.model.reinit)} needs model.init_checkpoint (without one every part starts fresh)"
            raise ConfigError(msg)
        held = [f for f in cfg.model.freeze if name == f or name.startswith(f + ".")]
        if held:
            msg = (f"model.reinit names {name!r}, which model.freeze {held} keeps fixed: it would never leave its "
                   "initialisation; take it out of freeze")
            raise ConfigError(msg)
    if cfg.model.init_checkpoint:
        from mtl3d_perception.model import load_checkpoint

        model = load_checkpoint(init_checkpoint_path(cfg.model.init_checkpoint))
        reinit = tuple(cfg.model.reinit)
        if cfg.model.overrides or reinit:
            # a checkpoint holds every weight: nothing pretrained is loaded over it, whatever the overrides say
            tuned = build_model(model.config.replace(**{**cfg.model.overrides, "pretrained": False}))
            known_parts = dict(tuned.named_modules())
            for name in reinit:
                if name not in known_parts or not name:
                    parent = name.rpartition(".")[0] if name.rpartition(".")[0] in known_parts else ""
                    siblings = sorted(n for n in known_parts if n and n.rpartition(".")[0] == parent)
                    msg = (f"model.reinit names {name!r}, which is not a part of the network; parts "
                           f"{'of ' + repr(parent) + ' ' if parent else ''}are {siblings}")
                    raise ConfigError(msg)
            state = {k: v for k, v in model.state_dict().items() if not any(k.startswith(p + ".") for p in reinit)}
            try:
                missing, unexpected = tuned.load_state_dict(state, strict=False)
            except RuntimeError as e:
                msg = (f"model.overrides {cfg.model.overrides} change the shapes of {cfg.model.init_checkpoint}'s weights "
                       f"(list the parts in model.reinit to train them from scratch): {e}")
                raise CheckpointError(msg) from e
            if unexpected:
                msg = (f"model.overrides {cfg.model.overrides} drop weights of {cfg.model.init_checkpoint}: "
                       f"{sorted(unexpected)[:5]} ...")
                raise CheckpointError(msg)
            if missing:  # a part the overrides add (e.g. confidence_head) or reinit names starts from its initialisation
                known = {n for n, _ in model.named_modules()} - set(reinit)
                new = [n for n, _ in tuned.named_modules() if n and n not in known]
                outermost = [n for n in new if not any(n.startswith(m + ".") for m in new)]
                log.info("parts new to %s or named in model.reinit start from their initialisation: %s",
                         cfg.model.init_checkpoint, ", ".join(outermost))
            model = tuned
        return model.train()
    model_cfg = resolve_config(cfg.model.preset)
    if cfg.model.overrides:
        model_cfg = model_cfg.replace(**cfg.model.overrides)
    return build_model(model_cfg)


def check_learns(cfg: TrainConfig, tasks_per_source: list[tuple[str, ...]] | list[list[str]]) -> None:
    """Refuse a run whose every loss would be 0 at every step (it would "train" and exit 0).

    Args:
        cfg: the run's config (its task loss weights and ``loss.extra`` terms).
        tasks_per_source: the labelled tasks of each ``data.train`` source: the configured ``tasks``, or, once the
            data is open, those its data holds (``SourceDataset.labelled_tasks``).

    Raises:
        ConfigError: no source labels a task with a loss weight > 0 and no unsupervised term is on.
    """
    labelled = {t for tasks in tasks_per_source for t in tasks if cfg.loss.weights.get(t, 0.0) > 0}
    held = {t for tasks in tasks_per_source for t in tasks}
    # a term that learns from labels no source holds is 0 at every step too (a trial: depth_error alone without
    # depth labels "trained" with loss 0 and grad 0)
    extra = [name for name in cfg.loss.weighted_extra()
             if LOSSES.get(name).needs_labels is None or LOSSES.get(name).needs_labels in held]
    if labelled or extra:
        return
    weighted = sorted(t for t, w in cfg.loss.weights.items() if w > 0)
    held = [list(tasks) for tasks in tasks_per_source]
    configured = [list(src.tasks) for src in cfg.data.train]
    found = "" if held == configured else f", the labels their data holds: {held}"
    msg = (f"nothing to learn: no data.train source gives labels for a task with a loss weight > 0 ({weighted}; "
           f"the sources' tasks: {configured}{found}) and loss.extra has no term with a weight > 0 that has its "
           "labels or needs none; give a source tasks: [depth, ...] "
           "whose data has those labels (a bag's depth_topic) or add an unsupervised term (loss.extra.photometric)")
    raise ConfigError(msg)


def views_needed(cfg: TrainConfig) -> dict[str, int]:
    """The ``loss.extra`` terms with a weight > 0 that compare views, each with the views per sample it needs
    (``LossTerm.min_views`` > 1: ``photometric``, ``cross_view``)."""
    needed = {name: LOSSES.get(name).min_views for name in cfg.loss.weighted_extra()}
    return {name: n for name, n in needed.items() if n > 1}


def check_views(cfg: TrainConfig) -> None:
    """Refuse ``data.num_views`` below what a weighted ``loss.extra`` term needs (:func:`views_needed`): with one
    view ``photometric`` has no source to warp and is 0 at every step, a run that "trains" on its smoothness alone.

    Raises:
        ConfigError: naming the term, the views it needs and ``data.num_views``.
    """
    short = {name: n for name, n in views_needed(cfg).items() if cfg.data.num_views < n}
    if short:
        terms = ", ".join(f"loss.extra.{name} needs data.num_views >= {n}" for name, n in short.items())
        msg = (f"data.num_views {cfg.data.num_views} leaves a loss term nothing to compare: {terms} (it warps "
               f"source views into the reference view; with fewer it is 0 at every step); set "
               f"data.num_views={max(short.values())}, or drop the term from loss.extra")
        raise ConfigError(msg)


def too_few_views(cfg: TrainConfig, which: str, index: int, source: Any) -> str:
    """The error for a ``data.<which>`` source (a ``SourceDataset``) with fewer distinct frames per sample than
    ``data.num_views``, with the ways out that keep the run's loss terms working: lowering ``data.num_views`` is
    offered only where no weighted term needs more views (:func:`views_needed`)."""
    have, key = source.distinct_views, f"data.{which}.{index}"
    per = "scene" if source.cfg.kind == "synthetic" else "range"
    more = (f"more frames per scene ({key}.frames_per_scene)" if source.cfg.kind == "synthetic" else
            f"a longer range ({key}.start / end{', a smaller stride' if source.cfg.stride > 1 else ''}) or a longer "
            "recording")
    needed = views_needed(cfg)
    msg = (f"data.num_views {cfg.data.num_views} needs that many frames per sample, but {key} ({source.cfg.kind}) has "
           f"{have} per {per}; ")
    if have >= max(needed.values(), default=1):
        return msg + f"lower data.num_views to {have} or give {key} {more}"
    terms = ", ".join(f"loss.extra.{name} (needs {n})" for name, n in needed.items() if have < n)
    skip = ", or validate on another source (data.val), or skip validation: eval_every=0" if which == "val" else ""
    return (msg + f"give {key} {more}{skip} (lowering data.num_views to {have} would switch off {terms})")


def init_history(path: str | Path) -> list[dict[str, Any]]:
    """What the weights a fine-tuning run starts from were trained on: ``path``'s ``trained_on`` sources, each
    tagged ``init`` = its file name and the first 12 hex digits of its sha256 (a source already tagged keeps the
    earlier checkpoint's tag), so ``mtl3d info`` of the fine-tuned checkpoint lists the whole history. A
    ``trained_on`` stored as text becomes one entry with that ``description``.

    Raises:
        CheckpointError: ``path``'s metadata cannot be read.
    """
    path = Path(path)
    tag = f"{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    earlier = read_checkpoint_metadata(path).get("trained_on")
    if not isinstance(earlier, list):
        earlier = [earlier] if earlier else []
    # entries from before recording/fingerprint hold the path as typed where they were trained: anchored now, from
    # the folder the fine-tune runs in (a trial: the shipped model's HoloLens note depended on the folder eval ran in)
    return [with_identity({"init": tag, **source}) if isinstance(source, dict) else
            {"init": tag, "description": str(source)} for source in earlier]


# Keys a resumed run may change: its length (the schedule is rebuilt from it), its folder (moved), logging,
# checkpointing, validation and
# where it runs. Anything else (data, model, losses, optimiser) would make one run of two recipes while its
# checkpoint recorded only the second (`mtl3d info`), or be ignored (the optimiser's saved learning rate).
RESUME_MAY_CHANGE = ("steps", "out_dir", "log_every", "image_every", "eval_every", "eval_batches", "checkpoint_every",
                     "tensorboard", "progress", "device", "amp", "deterministic", "data.num_workers", "data.val")


def resume_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "",
                   same_recording: Callable[[str, Any, Any], bool] | None = None) -> list[str]:
    """``'KEY OLD -> NEW'`` for each dotted key outside :data:`RESUME_MAY_CHANGE` whose value differs between a
    run's saved training config and the one it is resumed with (both :func:`train.config.to_dict` trees). Lists of
    sources of one length are compared source by source (``data.train.0.path ...``: a trial got both whole lists);
    a source ``path`` spelled otherwise is no change where ``same_recording(key, old, new)`` says it is the same
    recording (relative vs absolute, a symlink, the recording moved)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in RESUME_MAY_CHANGE:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += resume_changes(old, new, f"{name}.", same_recording)
        elif (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
              and all(isinstance(v, dict) for v in (*old, *new))):
            for i, (o, n) in enumerate(zip(old, new)):
                out += resume_changes(o, n, f"{name}.{i}.", same_recording)
        elif key == "path" and old != new and same_recording is not None and same_recording(name, old, new):
            continue
        elif old != new and not (isinstance(old, list | tuple) and isinstance(new, list | tuple)
                                 and list(old) == list(new)):
            out.append(f"{name} {old!r} -> {new!r}")
    return out


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs ``fit()``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group itself; rank 0 alone writes
    logs, evaluations and checkpoints.
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool = False) -> None:
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device(resolve_device(cfg.device))
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self._seed(cfg.seed)

        self.out_dir = check_output_folder(cfg.out_dir)  # a file where the run goes: refused before any work
        self.ckpt_dir = check_output_folder(self.out_dir / "checkpoints")
        earlier = [self.ckpt_dir / n for n in (train_state.MANIFEST, train_state.LAST_WEIGHTS)]
        if not resume and any(p.exists() for p in earlier):  # a new run would delete its checkpoints and mix its logs
            msg = (f"out_dir {self.out_dir} already holds a training run ({next(p for p in earlier if p.exists())}); "
                   "continue it with --resume, or pass another out_dir=DIR")
            raise FileExistsError(msg)
        check_learns(cfg, [src.tasks for src in cfg.data.train])  # before any data is read
        check_views(cfg)
        # a resumed fine-tune continues from its own committed weights: its init_checkpoint may have moved, or (a
        # run's last.safetensors) been replaced since, and is neither read nor re-hashed into its history
        own = find_committed(self.ckpt_dir).weights if resume and cfg.model.init_checkpoint else None
        model_cfg = cfg if own is None else dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, init_checkpoint=str(own), reinit=()))
        self.model = build_model_from_config(model_cfg).to(self.device)
        self.criterion = build_criterion(cfg).to(self.device)
        self.module = TrainModule(self.model, self.criterion, tuple(cfg.model.freeze))
        # before DDP, which refuses a module without a trainable parameter in its own words; a loss term's own
        # parameters (cross_task) do not count: the network would never change
        if not any(p.requires_grad for p in self.model.parameters()):
            msg = (f"model.freeze {list(cfg.model.freeze)} leaves no trainable parameter in the network: free at "
                   "least one part (e.g. take heads.confidence out of it to train the confidence head)")
            raise ConfigError(msg)
        if self.world > 1:
            # find_unused_parameters: a task switched off (weight 0) leaves its head without a gradient.
            self.ddp = nn.parallel.DistributedDataParallel(self.module, find_unused_parameters=True)
        else:
            self.ddp = self.module
        oc = cfg.optim
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        encoder = [p for n, p in named if n.startswith("model.encoder.")]
        rest = [p for n, p in named if not n.startswith("model.encoder.")]
        groups = [{"params": rest, "lr": oc.lr}]
        if encoder:
            groups.append({"params": encoder, "lr": oc.lr * oc.encoder_lr_ratio})
        self.optimizer = torch.optim.AdamW(groups, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _Schedule(oc, cfg.steps))
        # the warm-up reaches optim.lr at its last step (``_Schedule``: step warmup - 1), so a run of warmup steps does
        if 0 < cfg.steps < oc.warmup_steps:  # e.g. a short trial run of a config made for hundreds of steps
            log.warning("steps %d < optim.warmup_steps %d: the learning rate stays in its warm-up and never reaches "
                        "optim.lr %g; lower optim.warmup_steps for a run this short", cfg.steps, oc.warmup_steps, oc.lr)

        self.image_size = tuple(cfg.data.image_size or self.model.config.input_size)
        if self.image_size != tuple(self.model.config.input_size):
            # the checkpoint's input_size is the size the node, eval and replay run it at: the one it was trained at
            # (its stored validation metrics are at that size too); the network is fully convolutional
            (log.warning if cfg.model.init_checkpoint and not resume else log.info)(
                "data.image_size %s differs from the model's input_size %s: it trains at %dx%d, and its checkpoints "
                "record input_size %s, so the node, mtl3d eval and replay run it at %dx%d",
                list(self.image_size), tuple(self.model.config.input_size), *self.image_size, self.image_size,
                *self.image_size)
            self.model.config = self.model.config.replace(input_size=self.image_size)
        dc = cfg.data
        self.train_set = build_dataset(dc.train, image_size=self.image_size, num_views=dc.num_views,
                                       augment=dc.augment, label_regime=dc.label_regime, seed=cfg.seed, name="data.train")
        self.val_set = (build_dataset(dc.val, image_size=self.image_size, num_views=dc.num_views, seed=cfg.seed,
                                      name="data.val")
                        if dc.val and cfg.eval_every > 0 else None)
        # again with the labels the data holds (a bag without its depth topic labels no depth)
        check_learns(cfg, [ds.labelled_tasks for ds in self.train_set.sources])
        for i, ds in enumerate(self.train_set.sources):  # a task asked for whose labels the data lacks is not learnt
            unlabelled = [t for t in ds.cfg.tasks if t not in ds.labelled_tasks and cfg.loss.weights.get(t, 0.0) > 0]
            if unlabelled:
                log.warning("data.train.%d (%s %s): no labels for %s; not supervised from it (name the source's "
                            "labels, or drop those tasks from data.train.%d.tasks)", i, ds.cfg.kind,
                            ds.cfg.path or ds.cfg.split, ds.label_sources(unlabelled), i)
        for which, dataset in (("train", self.train_set), ("val", self.val_set)):
            for i, ds in enumerate(dataset.sources if dataset is not None else ()):
                if ds.distinct_views is not None and ds.distinct_views < dc.num_views:  # views would repeat frames
                    raise ConfigError(too_few_views(cfg, which, i, ds))
        if self.rank == 0 and not resume:
            check_parallax(cfg, self.train_set.sources, check_recorded_poses(self.train_set.sources))
            if self.val_set is not None:
                check_recorded_poses(self.val_set.sources, "data.val",
                                     "its two-view validation metrics would use these poses as given")
        if own is not None:  # the history recorded when the fine-tune started
            trained_on = read_checkpoint_metadata(own).get("trained_on")
            self.init_history = [s for s in trained_on if isinstance(s, dict) and "init" in s] \
                if isinstance(trained_on, list) else []
        else:
            self.init_history = (init_history(init_checkpoint_path(cfg.model.init_checkpoint))
                                 if cfg.model.init_checkpoint else [])
        # what every checkpoint records (trained_on): each source with its recording's path and content fingerprint,
        # read once here (a bag's metadata, a folder's file list)
        self._trained_on = [with_identity(to_dict(ds.cfg) | {"tasks": list(ds.labelled_tasks)}
                                          | (scene_provenance() if ds.cfg.kind == "synthetic" else {}))
                            for ds in self.train_set.sources]
        per_rank = len(self.train_set) // self.world
        self.epoch_len = per_rank // dc.batch_size
        if self.epoch_len < 1:
            msg = (f"the training set has {len(self.train_set)} samples, fewer than world size {self.world} x "
                   f"batch size {dc.batch_size}; add data or lower data.batch_size")
            raise ValueError(msg)
        self.step = 0
        # each --resume: {"step": where it continued, "steps": the run's length from then, "steps_before": before};
        # stored in every later checkpoint (`mtl3d info`: the schedule was rebuilt at each)
        self.resumes: list[dict[str, int]] = []
        self.history: list[dict[str, float]] = []
        self.writer = None
        if resume:
            self.load_state()

    # ------------------------------------------------------------------ setup helpers

    def _seed(self, seed: int) -> None:
        # Data randomness comes from explicitly seeded generators (datasets.py); this seeds the model's.
        torch.manual_seed(seed + self.rank)

    def _autocast(self):
        amp = self.cfg.amp
        if amp not in ("auto", "bf16", "off"):
            msg = f"amp must be auto, bf16 or off, got {amp!r}"
            raise ValueError(msg)
        use = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if use else nullcontext()

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)

    def _epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of epoch ``epoch``: lists of (index, draw) keys; a function of seed and epoch only."""
        g = self._epoch_generator(epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()
        mine = order[self.rank::self.world][: self.epoch_len * self.cfg.data.batch_size]
        bs = self.cfg.data.batch_size
        return [[(i, epoch) for i in mine[k: k + bs]] for k in range(0, len(mine), bs)]

    def _batches(self):
        """Infinite iterator of training batches starting at ``self.step`` (resumes mid-epoch)."""
        epoch, offset = divmod(self.step, self.epoch_len)
        while True:
            batches = self._epoch_batches(epoch)[offset:]
            # Each loader draws its workers' base seed from ``generator``; without one it draws from the
            # global RNG, which a resumed run would do at a different step than the original run.
            loader = DataLoader(self.train_set, batch_sampler=batches, collate_fn=collate,
                                num_workers=self.cfg.data.num_workers,
                                pin_memory=self.device.type == "cuda",
                                persistent_workers=False, generator=self._epoch_generator(epoch))
            yield from loader
            epoch, offset = epoch + 1, 0

    # ------------------------------------------------------------------ the loop

    def fit(self, until: int | None = None) -> list[dict[str, float]]:
        """Train until ``cfg.steps`` (or stop early at step ``until``, leaving a resumable checkpoint);
        returns the per-step logs of this call (every rank).
        """
        cfg = self.cfg
        stop = cfg.steps if until is None else min(until, cfg.steps)
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out_dir / "tb"))
        bar = None
        if self.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=stop, initial=self.step, desc="train", dynamic_ncols=True, disable=None)  # a terminal only
        logs_out: list[dict[str, float]] = []
        batches = self._batches()
        self.module.train()
        t0 = time.perf_counter()
        self._start_step = self.step
        kept_pixels = KeptPixelsMonitor(cfg, self.train_set.sources, self.world)
        while self.step < stop:
            batch = next(batches).to(self.device, non_blocking=True)
            with self._autocast():
                loss, logs, outputs = self.ddp(batch)
            if not torch.isfinite(loss):
                msg = f"non-finite loss {float(loss)} at step {self.step}: {logs}"
                raise RuntimeError(msg)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                logs["grad_norm"] = float(nn.utils.clip_grad_norm_(self.module.parameters(), cfg.optim.grad_clip))
            logs["lr"] = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            logs["step"] = self.step
            logs_out.append(logs)
            kept_pixels.update(logs)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if self.is_main:
                self._log(logs, batch, outputs, t0)
            if cfg.eval_every > 0 and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self.run_eval()
            if (cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps
                    and not kept_pixels.pending):  # a run that may yet be stopped commits nothing (a trial)
                self.save_state()
        if bar is not None:
            bar.close()
        kept_pixels.finish()
        metrics = self.run_eval() if cfg.eval_every > 0 and self.step >= cfg.steps else {}
        self.save_state(metrics=metrics)
        if self.writer is not None:
            self.writer.close()
        return logs_out

    def _log(self, logs: dict[str, float], batch: MultiViewBatch, outputs: dict[str, Any], t0: float) -> None:
        cfg = self.cfg
        if self.step % max(1, cfg.log_every) == 0 or self.step == 1:
            log.info("step %d (%.2f s/step): %s", self.step, (time.perf_counter() - t0) / max(1, self.step - self._start_step),
                     {k: float(f"{v:.4g}") for k, v in logs.items() if k != "step"})
        if self.writer is None:
            return
        if self.step % max(1, cfg.log_every) == 0 or self.step == 1:
            for k, v in logs.items():
                if k != "step":
                    self.writer.add_scalar(f"train/{k}", v, self.step)
            self.writer.add_scalar("train/steps_per_s", self.step / max(1e-9, time.perf_counter() - t0), self.step)
        if cfg.image_every > 0 and (self.step % cfg.image_every == 0 or self.step == 1):
            pic = montage(batch, {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor)},
                          depth_range=self.model.config.depth_range, palette=self.model.config.palette)
            self.writer.add_image("train/montage", pic, self.step, dataformats="HWC")

    def run_eval(self) -> dict[str, float]:
        """Evaluate on the validation sources (rank 0; other ranks wait)."""
        metrics: dict[str, float] = {}
        if self.val_set is not None and self.is_main:
            results = evaluate(self.model, self.val_set, batch_size=self.cfg.data.batch_size, device=self.device,
                               max_batches=self.cfg.eval_batches, modes=("two_view",), autocast=self._autocast)
            metrics = results["two_view"]["metrics"]
            if self.writer is not None:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"val/{k}", v, self.step)
                pic = results["two_view"].get("montage")
                if pic is not None:
                    self.writer.add_image("val/montage", pic, self.step, dataformats="HWC")
            log.info("step %d: %s", self.step, {k: float(f"{v:.4g}") for k, v in metrics.items()})
        self.module.train()
        if self.world > 1:
            dist.barrier()
        return metrics

    # ------------------------------------------------------------------ checkpoints

    @property
    def weights_path(self) -> Path:
        """The committed model (``last.safetensors``, a link to the newest complete step's weights)."""
        return self.ckpt_dir / train_state.LAST_WEIGHTS

    def _rng_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's torch RNG states (CPU ``[world, n]``, CUDA ``[world, m]``, m = 0 on CPU).

        A collective under DDP: every rank must call it.
        """
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state() if self.device.type == "cuda" else torch.zeros(0, dtype=torch.uint8)
        if self.world == 1:
            return cpu[None], cuda[None]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, (cpu, cuda))
        return torch.stack([c for c, _ in gathered]), torch.stack([g for _, g in gathered])

    def save_state(self, metrics: dict[str, float] | None = None) -> None:
        """Commit the model and training state of this step as one pair (rank 0; every rank must call it)."""
        torch_rng, cuda_rng = self._rng_states()
        if self.is_main:
            state = {
                "format": STATE_FORMAT,
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "criterion": self.criterion.state_dict(),
                "torch_rng": torch_rng,  # one row per rank
                "cuda_rng": cuda_rng,
            }
            trained_on = self._trained_on + self.init_history
            commit(self.ckpt_dir, self.step,
                   lambda path: save_checkpoint(self.model, path, trained_on=trained_on, metrics=metrics or {},
                                                step=self.step, train_config=to_dict(self.cfg),
                                                resumes=self.resumes, world_size=self.world),
                   lambda path: torch.save(state, path))
        if self.world > 1:
            dist.barrier()

    def load_state(self) -> None:
        """Restore model, optimiser, scheduler, loss terms, step and RNG from the committed pair in ``out_dir``.

        Raises:
            FileNotFoundError: nothing to resume from.
            ValueError (``CheckpointPairError``, ``CheckpointError``): one line naming the file that cannot be used.
        """
        pair = find_committed(self.ckpt_dir)
        state = load_state_file(pair.state, STATE_FORMAT)
        meta = read_checkpoint_metadata(pair.weights)
        meta_step = meta.get("step")
        if isinstance(meta.get("train_config"), dict):
            recorded = {f"data.train.{i}.path": e for i, e in enumerate(meta.get("trained_on") or [])
                        if isinstance(e, dict) and "init" not in e}

            def same_recording(key: str, old: Any, new: Any) -> bool:  # by the identity the checkpoint recorded
                entry = recorded.get(key, {})
                recorded_fp = entry.get("fingerprint")
                return bool(recorded_fp) and fingerprint(entry.get("kind", ""), new, like=recorded_fp) == recorded_fp

            changed = resume_changes(meta["train_config"], to_dict(self.cfg), same_recording=same_recording)
            for i, source in enumerate(self.cfg.data.train):  # the same path, another recording (a retrial)
                entry = recorded.get(f"data.train.{i}.path", {})
                now = (fingerprint(source.kind, source.path, like=entry["fingerprint"])
                       if entry.get("fingerprint") and source.path else None)
                if now and now != entry["fingerprint"] and not any(c.startswith(f"data.train.{i}.path ") for c in changed):
                    changed.append(f"data.train.{i}.path {source.path!r} holds another recording than the one trained on "
                                   f"(content fingerprint {entry['fingerprint']} -> {now})")
            if changed:
                msg = (f"--resume continues the run in {self.out_dir}, but {'; '.join(changed)}: a resumed run keeps "
                       f"its data, model, losses and optimiser (only {', '.join(RESUME_MAY_CHANGE)} may change); "
                       f"to change them start a new run from it: model.init_checkpoint={self.ckpt_dir / train_state.LAST_WEIGHTS} "
                       "out_dir=NEW")
                raise ConfigError(msg)
        if isinstance(state.get("step"), int) and state["step"] >= self.cfg.steps:
            msg = (f"--resume: the run in {self.out_dir} is at step {state['step']}, so steps={self.cfg.steps} leaves "
                   f"nothing to train; pass steps=N with N > {state['step']} to continue it")
            raise ConfigError(msg)
        if meta_step != state.get("step") or (pair.step >= 0 and pair.step != meta_step):
            msg = f"{pair.weights} is from step {meta_step} but {pair.state} from step {state.get('step')}"
            raise CheckpointPairError(msg)
        load_weights_into(self.model, pair.weights)
        self.optimizer.load_state_dict(state["optimizer"])
        # LambdaLR would restore the saved schedule object's attributes (its length among them); keep
        # the one built from this config and set the lr it gives at the saved step.
        self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(self.scheduler.lr_lambdas)})
        for group, base_lr, schedule in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                            self.scheduler.lr_lambdas):
            group["lr"] = base_lr * schedule(self.scheduler.last_epoch)
        self.criterion.load_state_dict(state["criterion"])
        torch_rng, cuda_rng = state["torch_rng"], state["cuda_rng"]
        if torch_rng.dim() == 2:  # one row per rank; a run resumed on more ranks reuses rank 0's
            row = self.rank if self.rank < torch_rng.shape[0] else 0
            # clone: torch.set_rng_state on a view with a storage offset crashes (segfault, torch 2.13)
            torch_rng, cuda_rng = torch_rng[row].clone(), cuda_rng[row].clone()
        torch.set_rng_state(torch_rng)
        if self.device.type == "cuda" and cuda_rng.numel():
            torch.cuda.set_rng_state(cuda_rng)
        self.step = int(state["step"])
        saved_steps = (meta.get("train_config") or {}).get("steps")
        saved_world = meta.get("world_size") if isinstance(meta.get("world_size"), int) else 1  # unrecorded: one
        self.resumes = [r for r in meta.get("resumes") or [] if isinstance(r, dict)] + [
            {"step": self.step, "steps": self.cfg.steps,
             "steps_before": saved_steps if isinstance(saved_steps, int) else self.cfg.steps,
             "world_size": self.world, "world_size_before": saved_world}]
        log.info("resumed from %s at step %d", pair.weights, self.step)
        if saved_world != self.world:  # an API trial: a 2-process run resumed on 1 went on with no word
            log.warning("--resume: the run trained on %d DDP process(es) and resumes on %d: data.batch_size is per "
                        "process, so each step now sees %d x %d samples instead of %d x %d, and the data order is not "
                        "the uninterrupted run's", saved_world, self.world, self.world, self.cfg.data.batch_size,
                        saved_world, self.cfg.data.batch_size)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
