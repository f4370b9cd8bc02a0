"""Where the geometric depth's read-out goes wrong: its abs rel when the sweep is averaged over k x k windows.

    python benchmarks/geometric_read_out.py models/default.safetensors \
        --data sequence:../shared/data/hololens_000:0.8:1.0 --windows 1,3,5,9

For each two-view sample of ``--data`` (the evaluation's pairs), the model's plane-sweep logits
(``depth_logits``, with its own ``sweep_aggregation``) are averaged again over k x k cells for each ``--windows``
k, with no retraining, and read out (softmax expectation in inverse depth) at the sweep's stride 4; the depth label is sampled at each
cell's top-left pixel (``F.interpolate`` nearest: pixel 4i of cell i, not its centre; kept so the recorded numbers
stay comparable). Printed: mean and median abs rel over labelled cells, and both over the 50 % of cells
with the highest matching confidence of the model as it is. ``--zncc`` adds the normalised-patch channel alone
(``geometric.patch_features``, the model's learned temperature x ``--zncc-gain``) at strides 4, 2 and 1.
This is how session 8 chose ``sweep_aggregation: 5`` (models/README.md, "Stage 8"), on the stage-7 model
(``git show a024ece:models/default.safetensors > stage7.safetensors``), which had none; on a model with its own
aggregation the windows come on top of it. Bad arguments and unusable inputs end with one ``ERROR:`` line.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mtl3d_perception import geometry
from mtl3d_perception.cli_args import positive_int
from mtl3d_perception.data.batch import collate
from mtl3d_perception.data.datasets import build_dataset, parse_data_spec
from mtl3d_perception.model import load_checkpoint
from mtl3d_perception.model.cvm import plane_sweep
from mtl3d_perception.model.geometric import patch_features, read_out, window_mean


def _windows(text: str) -> list[int]:
    """An argparse type: comma-separated odd window sizes >= 1."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated odd whole numbers >= 1, got {text!r}") from None
    bad = [k for k in sizes if k < 1 or k % 2 == 0]
    if bad:
        raise argparse.ArgumentTypeError(f"window sizes must be odd whole numbers >= 1, got {bad} in {text!r}")
    return sizes


def _abs_rel(inv: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """abs rel of depth 1/inv against ``gt`` resized (nearest) to inv's grid, over labelled cells (1-D)."""
    g = F.interpolate(torch.nan_to_num(gt, 0.0), size=inv.shape[-2:], mode="nearest")
    ok = g > 0
    return ((1.0 / inv - g).abs() / g.clamp(min=1e-6))[ok], ok


def _row(name: str, err: np.ndarray, top: np.ndarray | None) -> str:
    line = f"{name:24s} mean {err.mean():.3f}  median {np.median(err):.3f}"
    if top is not None:
        line += f"  | top-50 % confident: mean {err[top].mean():.3f}  median {np.median(err[top]):.3f}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a .safetensors model with the geometric depth (geometric_depth: true)")
    parser.add_argument("--data", required=True, help="a data spec with depth labels, e.g. sequence:PATH:0.8:1.0")
    parser.add_argument("--windows", type=_windows, default="1,3,5,9", metavar="K[,K...]",
                        help="comma-separated odd window sizes, in sweep cells (stride 4)")
    parser.add_argument("--zncc", action="store_true", help="also the patch channel alone at strides 4, 2, 1")
    parser.add_argument("--zncc-gain", type=float, default=10.0, help="patch logits x the learned scale x this")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    args = parser.parse_args()
    try:
        report(args)
    except (ValueError, OSError, RuntimeError) as exc:  # as `mtl3d`: missing files, bad specs, unusable data
        raise SystemExit(f"ERROR: {exc}") from None


def report(args: argparse.Namespace) -> None:
    """Print the read-out's abs rel per window for ``args`` (see the module docstring)."""
    torch.set_num_threads(1)
    windows = args.windows
    model = load_checkpoint(args.checkpoint)
    cfg = model.config
    if not cfg.geometric_depth:
        raise ValueError(f"{args.checkpoint}: the model has no geometric depth (geometric_depth: false)")
    ds = build_dataset([parse_data_spec(args.data)], image_size=tuple(cfg.input_size), num_views=2)
    cands = geometry.depth_candidates(cfg.depth_min, cfg.depth_max, cfg.num_depth, like=torch.zeros(1))
    errs: dict[str, list[np.ndarray]] = {}
    conf_all: list[np.ndarray] = []
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=args.batch_size, collate_fn=collate):
            images, K, poses = batch.images, batch.K, batch.poses
            B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
            gt = batch.depth[:, 0].reshape(B, 1, H, W)
            logits = model(images, K, poses)["depth_logits"]
            _, conf = read_out(logits, cands)
            for k in windows:
                e, ok = _abs_rel(read_out(window_mean(logits, k), cands)[0], gt)
                errs.setdefault(f"model, window {k}x{k}", []).append(e.numpy())
            conf_all.append(conf[ok].numpy())
            if args.zncc:
                T = geometry.relative_pose(poses[:, 1:], poses[:, :1]).float()  # [B, 1, 4, 4]
                gain = float(model.matching.log_patch_scale.exp() ** 2) * args.zncc_gain
                for s in (4, 2, 1):
                    f0, f1 = patch_features(images[:, 0], s), patch_features(images[:, 1], s)
                    lg = plane_sweep(f0, f1[:, None], K[:, 0], T, (W, H), cfg.depth_range, cfg.num_depth)
                    lg = lg * math.sqrt(f0.shape[1]) * gain
                    for k in windows:
                        e, _ = _abs_rel(read_out(window_mean(lg, k), cands)[0], gt)
                        errs.setdefault(f"zncc stride {s}, window {k}x{k}", []).append(e.numpy())
    conf = np.concatenate(conf_all) if conf_all else np.zeros(0)
    if conf.size == 0:
        raise ValueError(f"{args.data}: no pixel with a depth label (a bag needs its depth topic; see mtl3d eval --help)")
    top = conf >= np.median(conf)
    print(f"{args.checkpoint} (sweep_aggregation {cfg.sweep_aggregation}) on {args.data}: {conf.size} labelled cells")
    for name, parts in errs.items():
        err = np.concatenate(parts)
        print(_row(name, err, top if name.startswith("model") else None))


if __name__ == "__main__":
    main()
