"""Issue-8 ablations: the seed papers' training ideas against the plain trainer, matched budgets.

Each experiment trains one ``config/train/ablation_*.yaml`` (same preset, data, steps; only the idea
differs) once per seed in :data:`SEEDS`, then evaluates the checkpoint on the fixed held-out set of
that config (``data.val``, the same samples for every row and seed) in two-view and single-view mode.
Rows (experiment x seed) are cached in ``--out/results.json`` so an interrupted run resumes; a cached
row whose resolved config differs from the current one (e.g. after a budget change) is retrained, and
``--force`` retrains everything selected. The tables report the mean over seeds ± half the range, and
Δm of each idea against its baseline computed per seed (same seed, same labels) and then averaged.

    python benchmarks/run_ablations.py                           # all rows, then print the tables
    python benchmarks/run_ablations.py --rows base_full pap      # some experiments, every seed
    python benchmarks/run_ablations.py --rows base_full --seeds 0
    python benchmarks/run_ablations.py --steps 2000 --out runs/ablation_2k   # a larger budget (all rows alike)
    python benchmarks/run_ablations.py --latency-only            # only the PAP latency measurement

Each row is the same as ``mtl3d train --config config/train/ablation_<cfg>.yaml --label-regime R seed=S``:
its final evaluation (two-view, all of ``data.val``) is logged and stored with the checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

SEEDS: tuple[int, ...] = (0, 1)
# experiment -> (config name, label regime); every experiment runs once per seed.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "base_full": ("base", "full"),
    "cross_view": ("cross_view", "full"),
    "pap": ("pap", "full"),
    "base_one": ("base", "one"),
    "cross_task_one": ("cross_task", "one"),
    "base_random": ("base", "random"),
    "cross_task_random": ("cross_task", "random"),
}
# row name -> (config name, label regime, seed)
ROWS: dict[str, tuple[str, str, int]] = {f"{e}_s{s}": (*EXPERIMENTS[e], s) for e in EXPERIMENTS for s in SEEDS}
TABLES = {
    "Seed 002, cross-task consistency (label regimes)": ["base_one", "cross_task_one", "base_random", "cross_task_random"],
    "Seed 003, cross-view consistency (two-view training)": ["base_full", "cross_view"],
    "Seed 004, pattern-affinitive propagation": ["base_full", "pap"],
}
BASELINE_OF = {"cross_task_one": "base_one", "cross_task_random": "base_random", "cross_view": "base_full",
               "pap": "base_full"}
COLUMNS = ["semantic/miou", "depth/rmse", "depth/abs_rel", "normals/mean", "boundary/odsF", "cross_view/abs_rel"]
PAP_ARGS = {"steps": 3, "affinity_stride": 8}


def command(row: str, steps: int | None, out: str = "runs/ablation") -> str:
    cfg, regime, seed = ROWS[row]
    cmd = (f"mtl3d train --config config/train/ablation_{cfg}.yaml --label-regime {regime} "
           f"out_dir={out}/{row} seed={seed}")
    return cmd + (f" steps={steps}" if steps is not None else "")


def _label(out: Path) -> str:
    return out.relative_to(ROOT).as_posix() if out.is_relative_to(ROOT) else str(out)


def row_config(row: str, steps: int | None, out: Path):
    from mtl3d_perception.train.config import load_config

    cfg_name, regime, seed = ROWS[row]
    overrides = [f"data.label_regime={regime}", f"out_dir={out / row}", f"seed={seed}"]
    if steps is not None:
        overrides.append(f"steps={steps}")
    return load_config(ROOT / "config" / "train" / f"ablation_{cfg_name}.yaml", overrides)


def signature(cfg) -> str:
    """Hash of the resolved config without its output folder: a cached row is reused only if it matches."""
    from mtl3d_perception.train.config import to_dict

    tree = to_dict(cfg)
    tree.pop("out_dir", None)
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:12]


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
    from mtl3d_perception.train.evaluate import evaluate
    from mtl3d_perception.train.trainer import Trainer

    cfg = row_config(row, steps, out)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    try:
        logs = trainer.fit()
    finally:
        trainer.close()
    train_s = time.perf_counter() - t0
    res = evaluate(trainer.model, trainer.val_set, batch_size=cfg.data.batch_size, modes=("two_view", "single_view"))
    last = logs[-min(20, len(logs)):]
    cfg_name, regime, _ = ROWS[row]
    return {
        "row": row, "config": f"config/train/ablation_{cfg_name}.yaml", "label_regime": regime,
        "steps": cfg.steps, "seed": cfg.seed, "batch_size": cfg.data.batch_size, "signature": signature(cfg),
        "command": command(row, steps, _label(out)),
        "train_seconds": train_s, "final_train_loss": statistics.mean(x["loss"] for x in last),
        "two_view": res["two_view"]["metrics"], "single_view": res["single_view"]["metrics"],
        "num_eval_samples": res["two_view"]["num_samples"], "torch_threads": torch.get_num_threads(),
    }


@torch.no_grad()
def _refiner_ms(model: torch.nn.Module, size_wh: tuple[int, int], repeats: int) -> float:
    """Median time (ms) of the refiner alone on the task features of one reference frame."""
    from mtl3d_perception.model.pap import PAPRefiner

    refiner = next(m for m in model.modules() if isinstance(m, PAPRefiner))
    captured: dict = {}
    handle = refiner.register_forward_pre_hook(lambda _m, args: captured.setdefault("feats", args[0]))
    latency_ms(model, size_wh, repeats=1)
    handle.remove()
    feats = captured["feats"]
    for _ in range(3):
        refiner(feats)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        refiner(feats)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def pap_latency(repeats: int = 50) -> dict:
    """PAP cost (untrained weights, batch 1, two views, current torch threads): whole-network forward
    without and with the refiner (interleaved rounds) and the refiner alone, at the ablation
    resolution and at the tiny preset's own input size.
    """
    from mtl3d_perception.model import build_model, resolve_config

    cfg_base = row_config("base_full_s0", None, ROOT / "runs" / "unused")
    out = {"threads": torch.get_num_threads(), "repeats": repeats, "sizes": []}
    base = resolve_config(cfg_base.model.preset).replace(pretrained=False)
    ablation = base.replace(**{k: (tuple(v) if k == "input_size" else v) for k, v in cfg_base.model.overrides.items()})
    for name, mc in (("ablation", ablation), ("tiny", base)):
        torch.manual_seed(0)
        plain = build_model(mc.replace(refiner=None, refiner_args={}))
        torch.manual_seed(0)
        pap = build_model(mc.replace(refiner="pap", refiner_args=PAP_ARGS))
        size = tuple(mc.input_size)
        rounds = [(latency_ms(plain, size, repeats), latency_ms(pap, size, repeats)) for _ in range(3)]
        out["sizes"].append({
            "name": name, "input_size": list(size),
            "plain_ms": statistics.median(r[0] for r in rounds), "pap_ms": statistics.median(r[1] for r in rounds),
            "refiner_ms": _refiner_ms(pap, size, repeats),
        })
    return out


def _mean_half(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (max(values) - min(values)) / 2


def _fmt(values: list[float], digits: int, signed: bool = False) -> str:
    if not values:
        return ""
    m, h = _mean_half(values)
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f.format(m) if len(values) == 1 else f"{f.format(m)} ± {h:.{digits}f}"


def _digits(column: str) -> int:
    return 3 if column.startswith(("depth/", "cross_view/")) else 1


def seed_rows(results: dict, experiment: str) -> dict[int, dict]:
    return {s: results["rows"][f"{experiment}_s{s}"] for s in SEEDS if f"{experiment}_s{s}" in results["rows"]}


def per_seed_delta_m(results: dict, experiment: str, baseline: str) -> list[float]:
    """Δm (%) of ``experiment`` over ``baseline``, one value per seed both have (paired by seed)."""
    from mtl3d_perception.evaluation.metrics import delta_m

    a, b = seed_rows(results, experiment), seed_rows(results, baseline)
    return [delta_m(a[s]["two_view"], b[s]["two_view"]) for s in SEEDS if s in a and s in b]


def seed_noise(results: dict, experiment: str) -> float | None:
    """Δm (%) of seed 1 over seed 0 of the same row: what the seed alone does."""
    from mtl3d_perception.evaluation.metrics import delta_m

    rows = seed_rows(results, experiment)
    if len(rows) < 2:
        return None
    s0, s1 = SEEDS[0], SEEDS[1]
    return delta_m(rows[s1]["two_view"], rows[s0]["two_view"])


def render(results: dict) -> str:
    names = {"semantic/miou": "mIoU %", "depth/rmse": "depth RMSE m", "depth/abs_rel": "depth abs rel",
             "normals/mean": "normals mean °", "boundary/odsF": "boundary odsF %",
             "cross_view/abs_rel": "cross-view abs rel"}
    lines = []
    for title, experiments in TABLES.items():
        have = [e for e in experiments if seed_rows(results, e)]
        if not have:
            continue
        lines += [f"### {title}", "",
                  "| row | labels | seeds | " + " | ".join(names[c] for c in COLUMNS)
                  + " | Δm vs plain % (mean; s0, s1) | train loss |",
                  "|---|---|---|" + "---|" * (len(COLUMNS) + 2)]
        for e in have:
            rows = seed_rows(results, e)
            cells = [_fmt([r["two_view"][c] for r in rows.values() if c in r["two_view"]], _digits(c)) for c in COLUMNS]
            base = BASELINE_OF.get(e)
            dm = ""
            if base:
                d = per_seed_delta_m(results, e, base)
                if d:
                    dm = f"{statistics.mean(d):+.2f} ({', '.join(f'{x:+.2f}' for x in d)})"
            else:
                noise = seed_noise(results, e)
                dm = "baseline" + (f" (seed 1 vs 0: {noise:+.2f})" if noise is not None else "")
            regime = next(iter(rows.values()))["label_regime"]
            lines.append(f"| {e} | {regime} | {','.join(str(s) for s in rows)} | " + " | ".join(cells)
                         + f" | {dm} | {_fmt([r['final_train_loss'] for r in rows.values()], 3)} |")
        lines.append("")
    if "pap_latency" in results:
        p = results["pap_latency"]
        lines += [f"PAP latency (CPU, {p['threads']} torch thread(s), batch 1, two views, median of {p['repeats']} "
                  "forwards; whole network: median of 3 interleaved rounds):", "",
                  "| input | network without PAP (ms) | with PAP (ms) | added (ms) | refiner alone (ms) |",
                  "|---|---|---|---|---|"]
        for s in p["sizes"]:
            lines.append(f"| {s['input_size'][0]}x{s['input_size'][1]} ({s['name']}) | {s['plain_ms']:.2f} | "
                         f"{s['pap_ms']:.2f} | {s['pap_ms'] - s['plain_ms']:+.2f} | {s['refiner_ms']:.2f} |")
        lines.append("")
    lines += ["Commands:", ""] + [f"- `{r}`: `{results['rows'][r]['command']}`" for r in ROWS if r in results["rows"]]
    return "\n".join(lines)


def select_rows(names: list[str], seeds: list[int]) -> list[str]:
    """Row names in run order: every experiment's first seed, then the next seed (single rows as given)."""
    bad = [n for n in names if n not in ROWS and n not in EXPERIMENTS]
    if bad:
        msg = f"unknown row(s) {bad}; expected one of {', '.join([*EXPERIMENTS, *ROWS])}"
        raise SystemExit(msg)
    rows = [n for n in names if n in ROWS]
    rows += [f"{n}_s{s}" for s in seeds for n in names if n in EXPERIMENTS]
    return list(dict.fromkeys(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=list(EXPERIMENTS),
                        help="experiments (all selected seeds) or single rows such as pap_s1 (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS), choices=list(SEEDS))
    parser.add_argument("--steps", type=int, default=None, help="override steps for every row (default: the configs')")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--force", action="store_true", help="retrain rows already in results.json")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--latency-only", action="store_true", help="only (re)measure the PAP latency")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    results["machine"] = f"torch {torch.__version__}"
    for row in [] if args.latency_only else select_rows(args.rows, args.seeds):
        cached = results["rows"].get(row)
        if cached and not args.force:
            if cached.get("signature") == signature(row_config(row, args.steps, out)):
                continue
            print(f"== {row}: cached result has another config, retraining", flush=True)
        print(f"== {row}: {command(row, args.steps, _label(out))}", flush=True)
        results["rows"][row] = run_row(row, args.steps, out)
        results["date"] = time.strftime("%Y-%m-%d %H:%M")
        path.write_text(json.dumps(results, indent=2))
        r = results["rows"][row]
        print(f"   {r['train_seconds']:.0f} s, loss {r['final_train_loss']:.3f}, "
              + ", ".join(f"{c} {r['two_view'].get(c, float('nan')):.4f}" for c in COLUMNS), flush=True)
    if args.latency_only or (not args.no_latency and ("pap_latency" not in results or args.force)):
        results["pap_latency"] = pap_latency()
        path.write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
