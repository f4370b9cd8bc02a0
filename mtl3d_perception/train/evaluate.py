"""The evaluation loop shared by the trainer (periodic validation) and ``mtl3d eval``.

Two modes:
- ``two_view``: the reference view with its real source view(s) and poses; every view is predicted
  (``all_views=True``) so the cross-view consistency of predicted depths can be measured;
- ``single_view``: the paper's test protocol — the reference image duplicated as its own source,
  identity relative pose.
Metrics are computed on the reference view (view 0) against its labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mtl3d_perception.data.batch import collate
from mtl3d_perception.evaluation.metrics import MultiTaskMeter
from mtl3d_perception.evaluation.montage import montage

MODES: tuple[str, ...] = ("two_view", "single_view")


def eval_indices(n: int, max_samples: int | None) -> list[int]:
    """All ``n`` indices, or ``max_samples`` of them spread evenly over the dataset."""
    if max_samples is None or max_samples >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_samples)})


def check_modes(modes: tuple[str, ...]) -> None:
    """Raises ValueError naming the modes that are not in ``MODES`` (and the ones that are)."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        msg = f"unknown evaluation mode(s) {bad}; expected {', '.join(MODES)}" if bad else \
            f"no evaluation mode given; expected one or more of {', '.join(MODES)}"
        raise ValueError(msg)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 4, device: torch.device | str = "cpu",
             max_batches: int | None = None, modes: tuple[str, ...] = MODES, num_workers: int = 0,
             autocast: Callable[[], Any] | None = None, montage_batches: int = 1,
             boundary_max_dist: float = 0.011, progress: str | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on ``dataset`` (int keys: deterministic samples).

    ``progress``: a tqdm bar over the samples with this label (shown on a terminal only, tqdm's ``disable=None``);
    None: no bar (the trainer's periodic validation runs under its own).

    Returns:
        mode -> {"metrics": dict, "montages": list of RGB uint8 arrays, "montage": the first or None,
        "num_samples": int, "seconds_per_sample": float}.
    """
    check_modes(modes)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    cfg = model.config
    idx = eval_indices(len(dataset), None if max_batches is None else max_batches * batch_size)
    # The loader's own generator: evaluating must not draw from the global RNG a training run is using.
    loader = DataLoader(dataset, batch_size=batch_size, sampler=idx, collate_fn=collate, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    results: dict[str, dict[str, Any]] = {}
    meters = {m: MultiTaskMeter(cfg.num_classes, boundary_max_dist=boundary_max_dist) for m in modes}
    pics: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    count = 0
    bar = tqdm(total=len(idx), unit="sample", desc=progress, leave=False, disable=None if progress else True)
    ctx = autocast or nullcontext
    for b, batch in enumerate(loader):
        batch = batch.to(device)
        count += batch.batch_size
        for mode in modes:
            t = time.perf_counter()
            if mode == "two_view":
                with ctx():
                    out = model(batch.images, batch.K, batch.poses, all_views=True)
                ref = {k: v[:, 0].float() for k, v in out.items() if isinstance(v, torch.Tensor)}
                baseline = (batch.poses[:, 1, :3, 3] - batch.poses[:, 0, :3, 3]).norm(dim=-1) if batch.num_views > 1 \
                    else torch.zeros(batch.batch_size)
                # a reference paired with itself (no earlier frame: single view, as the node's first frame) is not a
                # two-view sample, and has no second view to disagree with
                two_view = ((batch.poses[:, 1] != batch.poses[:, 0]).flatten(1).any(1) if batch.num_views > 1
                            else torch.zeros(batch.batch_size, dtype=torch.bool))
                if two_view.any():
                    i = two_view.nonzero()[:, 0]
                    meters[mode].cross_view.update(out["depth"][i, 0].float(), out["depth"][i, 1].float(),
                                                   batch.K[i, 0], batch.K[i, 1], batch.poses[i, 0], batch.poses[i, 1])
            else:
                single = batch.single_view()
                with ctx():
                    out = model(single.images, single.K, single.poses)
                ref = {k: v.float() for k, v in out.items() if isinstance(v, torch.Tensor)}
                baseline = torch.zeros(batch.batch_size)
                two_view = torch.zeros(batch.batch_size, dtype=torch.bool)
            seconds[mode] += time.perf_counter() - t
            meters[mode].update(ref, batch, baseline.cpu(), two_view.cpu())
            if b < montage_batches:
                pics[mode].append(montage(batch, ref, depth_range=cfg.depth_range, palette=cfg.palette))
        bar.update(batch.batch_size)
    bar.close()
    for mode in modes:
        results[mode] = {
            "metrics": meters[mode].compute(),
            "montages": pics[mode],
            "montage": pics[mode][0] if pics[mode] else None,
            "num_samples": count,
            "seconds_per_sample": seconds[mode] / max(1, count),
        }
    model.train(was_training)
    return results
