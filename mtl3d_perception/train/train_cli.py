"""`mtl3d train --config FILE [key=value ...] [--resume]`: train the CvM-MTL network.

Multi-GPU: ``torchrun --nproc_per_node N -m mtl3d_perception.cli train --config FILE`` (DDP; gloo on CPU).
"""

from __future__ import annotations

import argparse
import logging
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config YAML (e.g. config/train/default.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides with dotted keys, values parsed as YAML (optim.lr=3e-4)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out_dir>/checkpoints/last.* exactly where it stopped")
    parser.add_argument("--label-regime", choices=("full", "random", "one"),
                        help="simulate partial labels (same as data.label_regime=...)")


def run(args: argparse.Namespace) -> int:
    from mtl3d_perception.train.config import load_config
    from mtl3d_perception.train.trainer import Trainer

    # under torchrun every rank runs this: rank 0 logs, the others only their errors (an API trial: each line came
    # once per process)
    main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.label_regime:
        overrides.append(f"data.label_regime={args.label_regime}")
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg, resume=args.resume)
    try:
        trainer.fit()
    finally:
        trainer.close()
    if trainer.is_main:
        print(f"checkpoint: {trainer.weights_path}")
    return 0
