"""Latency of the CvM-MTL presets, split encoder / CvM / heads, plus parameters and FLOPs.

One "step" is what the robot runs per new frame: encode the frame (f and s) and predict it against
the cached source frame (m, e, heads). Parts are timed separately and together, as median and
20/80 % quantiles of ``--iters`` runs after warm-up.

    python benchmarks/model.py                      # CPU, 2 threads, all presets (cpu: the shipped model's)
    python benchmarks/model.py --presets tiny --threads 2
    python benchmarks/model.py --device cuda        # fp32 / bf16, eager / compile / CUDA graphs

CUDA variants: ``fp32`` and ``bf16`` (autocast) eager; ``+compile`` is ``torch.compile`` of the
whole step (default mode); ``+cudagraphs`` is ``torch.compile(mode="reduce-overhead")``, which
captures CUDA graphs. Parts are timed eager only.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl3d_perception.cli_args import int_in_range, non_negative_int
from mtl3d_perception.model import build_model, resolve_config
from mtl3d_perception.model.info import (
    count_flops,
    count_parameters,
    example_inputs,
    part_callables,
)
from mtl3d_perception.runtime.config import MAX_NUM_THREADS
from mtl3d_perception.runtime.loading import resolve_device
from mtl3d_perception.typed_config import SettingError

VARIANTS = ("fp32", "bf16", "fp32+compile", "bf16+compile", "bf16+cudagraphs")


def measure(fn, iters: int, warmup: int, cuda: bool) -> tuple[float, float, float, float]:
    """(median, q20, q80) wall milliseconds and the median process CPU milliseconds (all threads).

    On a shared CPU the wall time swings with other jobs; CPU time per step is steadier, and
    CPU time / threads is the wall time an idle machine would show when the threads scale.
    """
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    q = statistics.quantiles(times, n=10)
    return statistics.median(times), q[1], q[7], statistics.median(cpu)


def step_fn(model, device):
    images, K, T = example_inputs(model, 1, device)
    with torch.no_grad():
        src = model.encode(images)

    def step(images=images):
        return model.predict(model.encode(images), src, K, T)

    return step


def bench_preset(name: str, device: str, iters: int, warmup: int, variants: list[str]) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(resolve_config(name).replace(pretrained=False)).to(device).eval()
    params = count_parameters(model)
    flops = count_flops(model)
    cuda = device.startswith("cuda")
    rows = []
    for variant in variants:
        dtype_ctx = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if "bf16" in variant else contextlib.nullcontext
        )
        row = {"preset": name, "variant": variant}
        with torch.inference_mode(), dtype_ctx():
            if "+" not in variant:
                for part, fn in part_callables(model, 1, device).items():
                    row[part] = measure(fn, iters, warmup, cuda)[0]
            step = step_fn(model, device)
            if "+compile" in variant:
                step = torch.compile(step)
            elif "+cudagraphs" in variant:
                step = torch.compile(step, mode="reduce-overhead")
            row["step"] = measure(step, iters, warmup + (3 if "+" in variant else 0), cuda)
        row["params"] = params
        row["flops"] = flops
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    head = "| preset | variant | encoder ms | CvM ms | heads ms | step ms (median [q20, q80]) | step CPU ms | params enc / CvM / heads / total (M) | GFLOPs enc / CvM / heads / total |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        p, f = r["params"], r["flops"]

        def ms(k, r=r):
            return f"{r[k]:.1f}" if k in r else "-"

        med, q20, q80, cpu = r["step"]
        lines.append(
            f"| {r['preset']} | {r['variant']} | {ms('encoder')} | {ms('cvm')} | {ms('heads')} | "
            f"{med:.1f} [{q20:.1f}, {q80:.1f}] | {cpu:.1f} | "
            f"{p['encoder'] / 1e6:.2f} / {p.get('cvm', 0) / 1e6:.2f} / {p['heads'] / 1e6:.2f} / {p['total'] / 1e6:.2f} | "
            f"{f['encoder'] / 1e9:.2f} / {f.get('cvm', 0) / 1e9:.2f} / {f['heads'] / 1e9:.2f} / {f['total'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "cpu", "small", "base"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int_in_range(1, MAX_NUM_THREADS), default=2,
                        help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--iters", type=int_in_range(2, 100000), default=30, help="timed runs, >= 2 (quantiles)")
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS, metavar="VARIANT",
                        help=f"of {', '.join(VARIANTS)} (bf16 ones on CUDA only); default: cpu: fp32; cuda: all")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        for name in args.presets:
            resolve_config(name)
    except (SettingError, KeyError, ValueError) as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    if args.variants is None:
        args.variants = ["fp32"] if device == "cpu" else list(VARIANTS)
    if device == "cpu" and (gpu_only := [v for v in args.variants if v != "fp32"]):
        parser.error(f"--variants {' '.join(gpu_only)}: CUDA only (bf16 autocast, compile and CUDA graphs are measured "
                     "on a GPU); on a CPU the variant is fp32")
    rows = []
    for name in args.presets:
        rows += bench_preset(name, device, args.iters, args.warmup, args.variants)
    dev = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or platform.machine()} CPU, {args.threads} threads"
    sizes = ", ".join(f"{name} {'x'.join(map(str, resolve_config(name).input_size))}" for name in args.presets)
    print(f"device: {dev}; torch {torch.__version__}; batch 1; input = each preset's input_size ({sizes})")
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
