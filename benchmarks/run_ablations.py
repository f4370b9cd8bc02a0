"""Issue-8 ablations: the seed papers' training ideas against the plain trainer, matched budgets.

Each row trains one ``config/train/ablation_*.yaml`` (same preset, data, steps and seed; only the idea
differs), then evaluates the checkpoint on the fixed held-out set of that config (``data.val``) in
two-view and single-view mode, and times the reference-frame forward pass. Rows are cached in
``--out/results.json`` so an interrupted run resumes; ``--force`` retrains.

    python benchmarks/run_ablations.py                      # all rows, then print the tables
    python benchmarks/run_ablations.py --rows base_full pap  # some rows
    python benchmarks/run_ablations.py --steps 300          # a larger budget (all rows alike)

Each row is the same as ``mtl3d train --config config/train/ablation_<cfg>.yaml [--label-regime R]``
followed by ``mtl3d eval <out_dir>/checkpoints/last.safetensors --data synthetic:val:2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# row -> (config name, label regime[, seed]); base_full_seed1 measures seed-to-seed noise.
ROWS: dict[str, tuple] = {
    "base_full": ("base", "full"),
    "base_full_seed1": ("base", "full", 1),
    "cross_view": ("cross_view", "full"),
    "pap": ("pap", "full"),
    "base_one": ("base", "one"),
    "cross_task_one": ("cross_task", "one"),
    "base_random": ("base", "random"),
    "cross_task_random": ("cross_task", "random"),
}
TABLES = {
    "Seed 002, cross-task consistency (label regimes)": ["base_one", "cross_task_one", "base_random", "cross_task_random"],
    "Seed 003, cross-view consistency (two-view training)": ["base_full", "base_full_seed1", "cross_view"],
    "Seed 004, pattern-affinitive propagation": ["base_full", "pap"],
}
BASELINE_OF = {"cross_task_one": "base_one", "cross_task_random": "base_random", "cross_view": "base_full",
               "pap": "base_full", "base_full_seed1": "base_full"}
COLUMNS = ["semantic/miou", "depth/rmse", "depth/abs_rel", "normals/mean", "boundary/odsF", "cross_view/abs_rel"]


def command(row: str, steps: int | None) -> str:
    cfg, regime, *seed = ROWS[row]
    cmd = f"mtl3d train --config config/train/ablation_{cfg}.yaml --label-regime {regime} out_dir=runs/ablation/{row}"
    if seed:
        cmd += f" seed={seed[0]}"
    if steps is not None:
        cmd += f" steps={steps}"
    return cmd + f" && mtl3d eval runs/ablation/{row}/checkpoints/last.safetensors --data synthetic:val:2"


@torch.no_grad()
def latency_ms(model: torch.nn.Module, size_wh: tuple[int, int], repeats: int = 20) -> float:
    """Median wall time (ms) of one two-view forward predicting the reference frame, batch 1."""
    W, H = size_wh
    images = torch.rand(1, 2, 3, H, W)
    K = torch.tensor([[0.8 * W, 0, (W - 1) / 2], [0, 0.8 * W, (H - 1) / 2], [0, 0, 1.0]]).expand(1, 2, 3, 3)
    poses = torch.eye(4).expand(1, 2, 4, 4).clone()
    poses[0, 1, 0, 3] = 0.1
    model.eval()
    for _ in range(3):
        model(images, K, poses)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(images, K, poses)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def run_row(row: str, steps: int | None, out: Path) -> dict:
    from mtl3d_perception.train.config import load_config
    from mtl3d_perception.train.evaluate import evaluate
    from mtl3d_perception.train.trainer import Trainer

    cfg_name, regime, *seed = ROWS[row]
    overrides = [f"data.label_regime={regime}", f"out_dir={out / row}"] + [f"seed={s}" for s in seed]
    if steps is not None:
        overrides.append(f"steps={steps}")
    cfg = load_config(ROOT / "config" / "train" / f"ablation_{cfg_name}.yaml", overrides)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    try:
        logs = trainer.fit()
    finally:
        trainer.close()
    train_s = time.perf_counter() - t0
    res = evaluate(trainer.model, trainer.val_set, batch_size=cfg.data.batch_size, modes=("two_view", "single_view"))
    last = logs[-min(10, len(logs)):]
    return {
        "row": row, "config": f"config/train/ablation_{cfg_name}.yaml", "label_regime": regime,
        "steps": cfg.steps, "seed": cfg.seed, "command": command(row, steps),
        "train_seconds": train_s, "final_train_loss": statistics.mean(x["loss"] for x in last),
        "two_view": res["two_view"]["metrics"], "single_view": res["single_view"]["metrics"],
        "num_eval_samples": res["two_view"]["num_samples"],
        "latency_ms_64x48": latency_ms(trainer.model, tuple(cfg.model.overrides.get("input_size", (64, 48)))),
    }


def pap_latency(repeats: int = 20) -> dict:
    """Added latency of the PAP refiner at the tiny preset's own 160x120 (untrained weights, interleaved)."""
    from mtl3d_perception.model import build_model, resolve_config

    torch.manual_seed(0)
    plain = build_model(resolve_config("tiny").replace(pretrained=False))
    torch.manual_seed(0)
    pap = build_model(plain.config.replace(refiner="pap", refiner_args={"steps": 3, "affinity_stride": 8}))
    rounds = [(latency_ms(plain, plain.config.input_size, repeats), latency_ms(pap, pap.config.input_size, repeats))
              for _ in range(3)]
    return {"input_size": list(plain.config.input_size),
            "plain_ms": statistics.median(r[0] for r in rounds), "pap_ms": statistics.median(r[1] for r in rounds),
            "threads": torch.get_num_threads()}


def render(results: dict) -> str:
    from mtl3d_perception.train.metrics import delta_m

    lines = []
    for title, rows in TABLES.items():
        have = [r for r in rows if r in results["rows"]]
        if not have:
            continue
        lines += [f"### {title}", "", "| row | label regime | " + " | ".join(COLUMNS) + " | Δm vs plain (%) | train loss |",
                  "|---|---|" + "---|" * (len(COLUMNS) + 2)]
        for r in have:
            res = results["rows"][r]
            m = res["two_view"]
            cells = [f"{m[c]:.4f}" if c in m else "" for c in COLUMNS]
            base = BASELINE_OF.get(r)
            dm = ""
            if base and base in results["rows"]:
                dm = f"{delta_m(m, results['rows'][base]['two_view']):+.2f}"
            lines.append(f"| {r} | {res['label_regime']} | " + " | ".join(cells)
                         + f" | {dm} | {res['final_train_loss']:.3f} |")
        lines.append("")
    if "pap_latency" in results:
        p = results["pap_latency"]
        lines += [f"PAP latency at {p['input_size'][0]}x{p['input_size'][1]} (tiny preset, CPU, {p['threads']} threads): "
                  f"{p['plain_ms']:.1f} ms without, {p['pap_ms']:.1f} ms with ({p['pap_ms'] - p['plain_ms']:+.1f} ms; "
                  "median of 3 interleaved rounds of 20 forwards).", ""]
    lines += ["Commands:", ""] + [f"- `{r}`: `{results['rows'][r]['command']}`" for r in ROWS if r in results["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--steps", type=int, default=None, help="override steps for every row (default: the configs')")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--force", action="store_true", help="retrain rows already in results.json")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    results["machine"] = f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    for row in args.rows:
        if row in results["rows"] and not args.force:
            continue
        print(f"== {row}: {command(row, args.steps)}", flush=True)
        results["rows"][row] = run_row(row, args.steps, args.out)
        results["date"] = time.strftime("%Y-%m-%d %H:%M")
        path.write_text(json.dumps(results, indent=2))
    if not args.no_latency and ("pap_latency" not in results or args.force):
        results["pap_latency"] = pap_latency()
        path.write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
