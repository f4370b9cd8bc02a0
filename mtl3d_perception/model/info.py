"""`mtl3d info PRESET_OR_CHECKPOINT`: config, classes, parameters and FLOPs per part, stored metrics.

Parts follow the streaming use on a robot (one new frame per step, the source frame cached):
``encoder`` is f(.) on one frame; ``cvm`` is s(.) on one frame plus m(.) and the plane sweep e(.) on
the (reference, source) pair; ``geometric`` (``geometric_depth: true``) the matching features of one
frame plus their plane sweep; ``heads`` is the neck, fusion, the geometric read-out, decoders and
predictors for the reference. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``; the cost volume is a custom
op it cannot see, so its FLOPs are added analytically (bilinear sample + dot product per channel:
10 FLOPs per channel, candidate, pixel and source).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl3d_perception.model.checkpoint import SHIPPED_NAME, checkpoint_argument
from mtl3d_perception.model.config import PRESET_PREFIX, available_presets
from mtl3d_perception.model.cvm import STRIDE


def example_inputs(model, batch: int = 1, device="cpu", input_size: tuple[int, int] | None = None):
    """A random frame, a pinhole K (focal = 0.8 W) and a 10 cm sideways relative pose."""
    W, H = input_size or model.config.input_size
    images = torch.rand(batch, 3, H, W, device=device)
    K = torch.tensor([[0.8 * W, 0.0, (W - 1) / 2], [0.0, 0.8 * W, (H - 1) / 2], [0.0, 0.0, 1.0]], device=device)
    T = torch.eye(4, device=device)
    T[0, 3] = 0.1
    return images, K.expand(batch, 3, 3).contiguous(), T.expand(batch, 4, 4).contiguous()


def part_callables(model, batch: int = 1, device="cpu", input_size=None) -> dict[str, Callable[[], object]]:
    """Zero-argument callables running each part of one streaming step on prepared inputs."""
    images, K, T = example_inputs(model, batch, device, input_size)
    H, W = images.shape[-2:]
    with torch.no_grad():
        frame = model.encode(images)
        cvm_feat = None
        if model.cvm is not None:
            pair = torch.stack([frame.spatial, frame.spatial], 1)
            cross, cost = model.cvm.match(pair, K, T[:, None], (W, H))
            cvm_feat = torch.cat([cost[:, 0], cross[:, 0]], 1)
        logits = None
        if model.matching is not None:
            logits = model.sweep_logits(frame.matching, frame.matching[:, None], K, T[:, None], (H, W))
    gained, xn, xc = model.inputs(images)
    parts: dict[str, Callable[[], object]] = {"encoder": lambda: model.encoder(xn)}
    if model.cvm is not None:

        def cvm():
            s = model.cvm.spatial(xc)
            return model.cvm.match(torch.stack([s, frame.spatial], 1), K, T[:, None], (W, H))

        parts["cvm"] = cvm
    if model.matching is not None:

        def geometric():
            m = model.matching(gained, frame.image)
            return model.sweep_logits(m, frame.matching[:, None], K, T[:, None], (H, W))

        parts["geometric"] = geometric

    def heads():  # the network's own fusion, read-out of the geometric depth and heads
        return model._heads(frame, cvm_feat, logits, False, model._span(K, T[:, None], (H, W), logits))

    parts["heads"] = heads
    return parts


def cost_volume_flops(model, batch: int = 1, sources: int = 1, input_size=None) -> int:
    if model.cvm is None:
        return 0
    W, H = input_size or model.config.input_size
    cfg = model.config
    return 10 * cfg.cvm_channels * cfg.num_depth * (H // STRIDE) * (W // STRIDE) * sources * batch


def geometric_sweep_flops(model, batch: int = 1, sources: int = 1, input_size=None) -> int:
    """FLOPs of the geometric depth's plane sweep (an opaque op to the FLOP counter), as ``cost_volume_flops``."""
    if model.matching is None:
        return 0
    W, H = input_size or model.config.input_size
    s = model.matching.stride
    return 10 * model.matching.out_channels * model.config.num_depth * (H // s) * (W // s) * sources * batch


def count_parameters(model) -> dict[str, int]:
    parts = {"encoder": model.encoder, "cvm": model.cvm, "geometric": model.matching, "heads": model.heads}
    out = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items() if m is not None}
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


def count_flops(model, input_size=None) -> dict[str, int]:
    """FLOPs per part for one streaming step at batch 1 (see the module docstring)."""
    flops = {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for name, fn in part_callables(model, 1, next(model.parameters()).device, input_size).items():
            with FlopCounterMode(display=False) as counter:
                fn()
            flops[name] = counter.get_total_flops()
    model.train(was_training)
    if "cvm" in flops:
        flops["cvm"] += cost_volume_flops(model, input_size=input_size)
    if "geometric" in flops:
        flops["geometric"] += geometric_sweep_flops(model, input_size=input_size)
    flops["total"] = sum(flops.values())
    return flops


def _load(spec: str):
    from mtl3d_perception.model import build_model, load_checkpoint, read_checkpoint_metadata

    if spec.endswith(".safetensors"):
        return load_checkpoint(spec), read_checkpoint_metadata(spec)
    if spec.endswith((".pt", ".pth", ".ckpt", ".bin")):
        # pickles can run code when loaded: never opened here
        msg = (f"{spec}: a PyTorch pickle ({Path(spec).suffix}) is not read; expected a preset name, a model YAML or "
               "a .safetensors checkpoint (convert the weights with safetensors.torch.save_file)")
        raise ValueError(msg)
    from mtl3d_perception.model.config import resolve_config

    # Parameters and FLOPs do not depend on the weights: skip loading pretrained ones.
    return build_model(resolve_config(spec).replace(pretrained=False)), None


def describe(spec: str) -> dict:
    """What ``mtl3d info SPEC`` prints, as a dict: a preset (``NAME`` or ``preset:NAME``, as ``model_path`` takes it),
    a model YAML, a checkpoint or ``default`` (the shipped one, ``checkpoint.checkpoint_argument``)."""
    spec = spec.removeprefix(PRESET_PREFIX) if spec.startswith(PRESET_PREFIX) else checkpoint_argument(spec)
    model, meta = _load(spec)
    cfg = model.config
    info = {
        "source": spec,
        "config": cfg.to_dict(),
        "classes": list(cfg.classes),
        "parameters": count_parameters(model),
        "flops": count_flops(model),
        "input_size": list(cfg.input_size),
    }
    if meta is None:  # a preset: its own config (it was built without its pretrained weights, to count them)
        from mtl3d_perception.model.config import resolve_config

        info["config"] = resolve_config(spec).to_dict()
    else:
        info["is_checkpoint"] = True
        info["trained_on"] = meta.get("trained_on")
        info["task_weights"] = task_weights(meta.get("train_config"))
        info["training_run"] = training_run(meta.get("train_config"), meta.get("step"))
        info["training_recipe"] = training_recipe(meta.get("train_config"), meta.get("resumes"), meta.get("world_size"))
        info["metrics"] = meta.get("metrics")
        info["file_mb"] = round(Path(spec).stat().st_size / 2**20, 2)
    return info


def training_run(train_config: Any, step: Any = None) -> str:
    """One line naming the run that wrote a checkpoint, from its stored ``train_config`` (a ``train.config.TrainConfig``
    dict) and ``step``: output folder, steps, seed and the weights it started from; the output folder is how the
    shipped model's stage reads (``runs/default_stage12``, models/README.md). "not stored" without a config."""
    if not isinstance(train_config, dict):
        return "not stored"
    parts = [f"out_dir {train_config.get('out_dir', '?')}"]
    steps = train_config.get("steps")
    parts.append(f"step {step} of {steps}" if step is not None else f"{steps} steps")
    parts.append(f"seed {train_config.get('seed', '?')}")
    model = train_config.get("model") or {}
    init = model.get("init_checkpoint")
    parts.append(f"from {init}" if init else "from the preset")
    if init and model.get("reinit"):
        parts.append(f"{', '.join(model['reinit'])} from scratch")
    return ", ".join(parts)


def training_recipe(train_config: Any, resumes: Any = None, world_size: Any = None) -> list[str]:
    """Lines naming how the run that wrote a checkpoint trained, from its stored ``train_config`` (a
    ``train.config.TrainConfig`` dict): the losses (depth kind, task weights, extra terms with their weights and
    arguments), the optimiser and schedule, the batch (per process, times ``world_size`` DDP processes where more
    than one), the frozen and re-initialised parts, and each ``--resume`` (``resumes``, written by
    ``train.trainer.Trainer``: the schedule is rebuilt from the new length at each; the processes it ran on). Empty
    without a config (a checkpoint saved outside the trainer). Earlier runs of a staged or fine-tuned model are not
    stored (models/README.md has the shipped model's stages)."""
    if not isinstance(train_config, dict):
        return []
    loss, optim = train_config.get("loss") or {}, train_config.get("optim") or {}
    data, model = train_config.get("data") or {}, train_config.get("model") or {}
    depth = loss.get("depth_kind", "?")
    if depth == "silog":
        depth += f" (lambda {loss.get('silog_lambda', '?')})"
    terms = ", ".join(f"{k} {v:g}" for k, v in (task_weights(train_config) or {}).items())
    lines = [f"losses: depth {depth}; task weights {terms or '?'}; "
             f"{'every view' if loss.get('all_views', True) else 'the reference view only'}"]
    for name, spec in (loss.get("extra") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        args = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "weight")
        lines.append(f"  + {name} x{spec.get('weight', 1.0)}" + (f" ({args})" if args else ""))
    def num(key: str) -> str:
        value = optim.get(key, "?")
        return f"{value:g}" if isinstance(value, int | float) else str(value)

    ratio = optim.get("encoder_lr_ratio", 1.0)
    lines.append(f"optimiser: AdamW lr {num('lr')}" + (f" (encoder x{num('encoder_lr_ratio')})" if ratio != 1.0 else "")
                 + f", weight decay {num('weight_decay')}, {num('warmup_steps')} warm-up steps then "
                 f"{optim.get('schedule', '?')}, grad clip {num('grad_clip')}; batch {data.get('batch_size', '?')} x "
                 f"{data.get('num_views', '?')} views" + _processes(world_size, " per process x {} processes"))
    for key, what in (("freeze", "frozen"), ("reinit", "re-initialised")):
        if model.get(key):
            lines.append(f"{what}: {', '.join(model[key])}")
    for r in resumes if isinstance(resumes, list) else []:
        if isinstance(r, dict):
            change = f" (steps {r.get('steps_before')} -> {r.get('steps')})" if r.get("steps_before") != r.get("steps") else ""
            processes = ""
            if isinstance(r.get("world_size"), int) and r.get("world_size_before") != r.get("world_size"):
                processes = f" on {r['world_size']} process(es), trained on {r.get('world_size_before', '?')} before"
            lines.append(f"resumed at step {r.get('step')}{change}{processes}")
    return lines


def _processes(world_size: Any, text: str) -> str:
    """``text`` with the DDP world size, for more than one process; '' otherwise (or unrecorded)."""
    return text.format(world_size) if isinstance(world_size, int) and world_size > 1 else ""


def task_weights(train_config: Any) -> dict[str, float] | None:
    """The task loss weights of the run that wrote a checkpoint (``loss.weights`` of its stored ``train_config``, a
    ``train.config.TrainConfig`` dict); None when not stored (a checkpoint saved outside the trainer)."""
    if not isinstance(train_config, dict):
        return None
    weights = (train_config.get("loss") or {}).get("weights")
    return {str(k): float(v) for k, v in weights.items()} if isinstance(weights, dict) else None


def format_trained_on(trained_on: Any, *, weights: dict[str, float] | None = None) -> list[str]:
    """Lines for a checkpoint's ``trained_on``: one per data source (a dict of ``data.datasets.SourceConfig``
    fields: kind, path or split, frame range, scenes and the scene generator's version, tasks, repeat; and, in a
    model trained in stages, ``stages``: which of them used it, e.g. ``"13, 14"``), or the stored text as it is.

    Args:
        trained_on: the checkpoint's ``trained_on``.
        weights: the run's task loss weights (:func:`task_weights`). A source's ``tasks`` are the labels it offers;
            a task whose weight is 0 (or missing: ``train.losses.LossCriterion`` skips it) was not supervised, so only
            tasks with weight > 0 are listed. Sources tagged with ``stages`` or ``init`` (a fine-tuned checkpoint's
            init checkpoint's sources: ``train.trainer.init_history``) came from earlier runs whose weights are not
            stored (``train_config`` is the last run's), and are listed as stored; so is every source when ``weights``
            is None.
    """
    if not isinstance(trained_on, list) or not all(isinstance(s, dict) for s in trained_on):
        return [f"trained on: {trained_on if trained_on else 'not stored'}"]
    lines = [f"trained on ({len(trained_on)} source{'' if len(trained_on) == 1 else 's'}):"]
    for source in trained_on:
        earlier = f"before fine-tuning, {source['init']}" if source.get("init") else ""  # train.trainer.init_history
        if "kind" not in source and "description" in source:  # an init checkpoint's trained_on stored as text
            lines.append(f"  - {earlier}: {source['description']}" if earlier else f"  - {source['description']}")
            continue
        kind = source.get("kind", "?")
        where = source.get("path") or f"{source.get('split', '')} split"
        parts = [f"{kind} {where}"]
        if source.get("stages"):  # models/README.md names the stages of the shipped model
            stages = source["stages"]
            stages = ", ".join(map(str, stages)) if isinstance(stages, list) else str(stages)
            parts[0] = f"stage{'s' if ',' in stages else ''} {stages}: {parts[0]}"
        if earlier:
            parts[0] = f"{earlier}, {parts[0]}"
        if kind == "synthetic":
            parts.append(f"{source.get('num_scenes')} scenes x {source.get('frames_per_scene')} frames")
            if "generator" in source:  # data.synthetic.scene_provenance(); absent before session 10
                parts.append(f"generator v{source['generator']}, {source.get('textures', '?')} textures")
        if (source.get("start"), source.get("end")) not in ((0, 1.0), (None, None)):
            parts.append(f"frames {source.get('start'):g}-{source.get('end'):g}")
        labelled = list(source.get("tasks", ()))
        tasks = labelled
        if weights is not None and not source.get("stages") and not source.get("init"):
            tasks = [t for t in labelled if weights.get(t, 0.0) > 0]
        if tasks:
            parts.append("tasks " + "/".join(tasks))
        else:
            parts.append("no task supervised (task loss weights 0)" if labelled else "no labels")
        if source.get("repeat", 1) != 1:
            parts.append(f"x{source['repeat']}")
        lines.append("  - " + ", ".join(parts))
    return lines


def format_info(info: dict) -> str:
    cfg = info["config"]
    lines = [f"model: {info['source']} ({cfg['name']})", "config:"]
    lines += [f"  {k}: {v}" for k, v in cfg.items() if k not in ("classes", "palette")]
    if info.get("is_checkpoint") and cfg.get("pretrained") is False:  # how every checkpoint is stored
        i = next(i for i, line in enumerate(lines) if line.startswith("  pretrained: "))
        lines[i] += " (a checkpoint holds every weight: nothing is loaded from elsewhere)"
    lines.append(f"classes ({len(info['classes'])}): {', '.join(info['classes'])}")
    W, H = info["input_size"]
    lines.append(f"per part, one streaming step at {W}x{H} (batch 1):")
    lines.append(f"  {'part':<9} {'params':>12} {'GFLOPs':>10}")
    for part in ("encoder", "cvm", "geometric", "heads", "total"):
        if part in info["parameters"]:
            lines.append(f"  {part:<9} {info['parameters'][part]:>12,} {info['flops'].get(part, 0) / 1e9:>10.3f}")
    if "metrics" in info:
        lines.append(f"training run: {info.get('training_run', 'not stored')}")
        lines += ["  " + line for line in info.get("training_recipe") or []]
        lines += format_trained_on(info.get("trained_on"), weights=info.get("task_weights"))
        lines.append(f"file: {info['file_mb']} MiB")
        metrics = info.get("metrics") or {}
        lines.append("metrics:" + ("" if metrics else " none stored"))
        lines += [f"  {k}: {v}" for k, v in metrics.items()]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"a preset name ({', '.join(available_presets())}), a model YAML, a "
                                      f".safetensors checkpoint or '{SHIPPED_NAME}' (the shipped model)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    info = describe(args.model)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
