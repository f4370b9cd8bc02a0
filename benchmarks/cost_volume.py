"""Benchmark the plane-sweep cost volume: one-shot grid_sample, its torch.compile, the chunked reference, the
correlation-matrix forward, Triton.

    python benchmarks/cost_volume.py                 # CUDA when available, the full sizes
    python benchmarks/cost_volume.py --device cpu    # CPU variants, sizes reduced to finish in minutes
    python benchmarks/cost_volume.py --device cpu --threads 1 --sizes default-model --variants reference,correlation

On CUDA the Triton kernels appear twice: through the op (validation, projection coefficients and
dispatch included, as the network calls it) and as the bare kernel launches with precomputed
coefficients (what CUDA graphs or torch.compile leave of the call). The autotuned tile sizes are
printed per size.

Forward and forward+backward times are medians after warm-up (CUDA events on GPU, perf_counter on
CPU, or the thread's CPU time with --cpu-time), with the 20/80 % quantiles. Peak memory is what one call adds on top of its inputs: the CUDA
caching allocator's peak, or on CPU the peak of the allocator's running total recorded by
torch.profiler(profile_memory=True). Throughput is counted against the floor of
../shared/notes/cost_volume_performance.md §2: each input read once and each output written once
(bytes), 10 FLOP per channel per output and source forward (bilinear + dot), 28 for forward+backward.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch._C._profiler import _EventType

from mtl3d_perception.cli_args import int_in_range, non_negative_int
from mtl3d_perception.ops import cost_volume
from mtl3d_perception.ops.cost_volume_reference import pixel_rays, projection_coefficients, sample_grid
from mtl3d_perception.runtime.config import MAX_NUM_THREADS
from mtl3d_perception.runtime.loading import resolve_device
from mtl3d_perception.typed_config import SettingError


@dataclass(frozen=True)
class Size:
    name: str
    B: int
    S: int
    C: int
    h: int
    w: int
    D: int

    def reduced(self) -> Size:
        """CPU version: a quarter of the pixels, half the depths, B <= 2."""
        return Size(self.name + "/cpu", min(self.B, 2), self.S, self.C, self.h // 2, self.w // 2, self.D // 2)


SIZES = [
    Size("robot 480x640 @1/4", 1, 1, 128, 120, 160, 64),
    Size("batch 480x640 @1/8", 8, 1, 128, 60, 80, 128),
    Size("train 2 src", 4, 2, 64, 60, 80, 64),
]
# The default model's two sweeps (matching features at stride 4, CvM at stride 8, 160x120 input) and two
# larger maps around the correlation path's break-even (`cost_volume_correlation.use_correlation`).
DEFAULT_MODEL_SIZES = [
    Size("cpu preset match @1/4", 1, 1, 50, 30, 40, 32),
    Size("cpu preset CvM @1/8", 1, 1, 48, 15, 20, 32),
    Size("240x180 @1/4", 1, 1, 50, 45, 60, 32),
    Size("320x240 @1/4", 1, 1, 50, 60, 80, 32),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Peak DRAM bandwidth (GB/s) and fp32 non-tensor-core FLOP/s (TFLOP/s) from vendor data sheets.
DEVICE_PEAKS = {"H100 80GB HBM3": (3350, 67), "H100 PCIe": (2000, 51), "H100": (3350, 67), "H200": (4800, 67)}


def naive_cost_volume(ref, src, K, T_src_ref, depths):
    """MVSplat/UniMatch style: coordinates without grad, one grid_sample over all D, mul, sum, mean over S."""
    B, S, C, h, w = src.shape
    D = depths.shape[1]
    with torch.no_grad():
        coef = projection_coefficients(K, T_src_ref, torch.float32)
        rays = pixel_rays(coef, h, w)  # [B, S, 3, hw]
    cost = 0
    for s in range(S):
        with torch.no_grad():
            grid = sample_grid(rays[:, s], coef[:, s, 9:], depths, h, w).to(ref.dtype)  # [B, D*h, w, 2]
        warped = F.grid_sample(src[:, s], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        cost = cost + (warped.view(B, C, D, h, w) * ref[:, :, None]).sum(1).float()  # [B, D, h, w]
    return cost / (math.sqrt(C) * S)


def make_inputs(size: Size, dtype: torch.dtype, device: str):
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(size.B, size.C, size.h, size.w, generator=g).to(device, dtype)
    src = torch.randn(size.B, size.S, size.C, size.h, size.w, generator=g).to(device, dtype)
    K = torch.tensor([[0.9 * size.w, 0, (size.w - 1) / 2], [0, 0.9 * size.w, (size.h - 1) / 2], [0, 0, 1]])
    T = torch.eye(4).repeat(size.B, size.S, 1, 1)
    T[..., :3, 3] = torch.tensor([0.12, -0.03, 0.05])  # a 12 cm sideways step, like a walking robot
    depths = (1.0 / torch.linspace(1 / 0.25, 1 / 10.0, size.D)).repeat(size.B, 1)
    return ref, src, K.repeat(size.B, 1, 1).to(device), T.to(device), depths.to(device)


def _cpu_peak(fn) -> int:
    """Peak of the CPU allocator's running total during fn, from torch.profiler allocation events."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    allocs, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation:
            allocs.append((e.start_time_ns, e.extra_fields.total_allocated, e.extra_fields.alloc_size))
        stack.extend(e.children)
    if not allocs:
        return 0
    allocs.sort()
    return max(a[1] for a in allocs) - (allocs[0][1] - allocs[0][2])


def measure_peak(fn, device: str) -> float | None:
    """Bytes one call of fn adds at its peak."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return _cpu_peak(fn)


def time_fn(fn, device: str, warmup: int, repeats: int, clock=time.perf_counter) -> tuple[float, float, float]:
    """(median, q20, q80) in milliseconds; on CPU read from ``clock`` (wall time, or the thread's CPU time)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = clock()
            fn()
            times.append((clock() - t0) * 1e3)
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    return statistics.median(times), q[0], q[3]


def floor_counts(size: Size, dtype: torch.dtype) -> dict[str, float]:
    e = torch.empty((), dtype=dtype).element_size()
    feats = size.B * size.C * size.h * size.w * (1 + size.S) * e
    out = size.B * size.D * size.h * size.w * 4
    outputs = size.B * size.S * size.D * size.h * size.w * size.C
    return {
        "fwd_bytes": feats + out,
        "bwd_bytes": feats + out + feats,  # + read the incoming grad, write d_ref and d_src
        "fwd_flop": 10 * outputs,
        "fwdbwd_flop": 28 * outputs,
    }


def variants(device: str, compile_model: bool = True):
    """Variant name -> callable on ``device`` (``compile_model`` False: the names only, nothing compiled)."""
    out = {
        "grid_sample one-shot": naive_cost_volume,
        "torch.compile(one-shot)": torch.compile(naive_cost_volume, fullgraph=True) if compile_model else None,
        "reference (chunked)": lambda *a: cost_volume(*a, backend="reference"),
        "correlation": lambda *a: cost_volume(*a, backend="correlation"),
    }
    if device == "cuda":
        out["triton (op)"] = lambda *a: cost_volume(*a, backend="triton")
    return out


def kernel_only(ref, src, K, T, depths, grad):
    """The bare Triton launches with precomputed coefficients: (fwd, fwd+bwd) callables."""
    from mtl3d_perception.ops.cost_volume_triton import cost_volume_bwd, cost_volume_fwd

    coef = projection_coefficients(K, T, torch.float32)

    def fwd():
        return cost_volume_fwd(ref, src, coef, depths)

    def fwd_bwd():
        cost_volume_fwd(ref, src, coef, depths)
        return cost_volume_bwd(grad, ref, src, coef, depths)

    return fwd, fwd_bwd


def run(args) -> list[dict]:
    device = args.device
    dtype = DTYPES[args.dtype]
    if args.sizes == "default-model":
        sizes = DEFAULT_MODEL_SIZES
    else:
        sizes = [s.reduced() for s in SIZES] if device == "cpu" and not args.full else SIZES
    chosen = {k: v for k, v in variants(device).items() if not args.variants or k.split(" ")[0] in args.variants}
    rows = []
    for size in sizes:
        ref, src, K, T, depths = make_inputs(size, dtype, device)
        grad = torch.randn(size.B, size.D, size.h, size.w, device=device)
        counts = floor_counts(size, dtype)
        timed = []
        for name, fn in chosen.items():
            r, s = ref.clone().requires_grad_(True), src.clone().requires_grad_(True)

            # Arguments bound as defaults: the peaks are measured after the loop.
            def fwd(fn=fn, a=(ref, src, K, T, depths)):
                with torch.no_grad():
                    return fn(*a)

            def fwd_bwd(fn=fn, a=(r, s, K, T, depths), grad=grad):
                a[0].grad = a[1].grad = None
                fn(*a).backward(grad)

            timed.append((name, fwd, fwd_bwd))
        if device == "cuda" and "triton (op)" in chosen:
            timed.append(("triton (kernels only)", *kernel_only(ref, src, K, T, depths, grad)))
        clock = time.thread_time if args.cpu_time else time.perf_counter
        for name, fwd, fwd_bwd in timed:
            t_f = time_fn(fwd, device, args.warmup, args.repeats, clock)
            t_fb = time_fn(fwd_bwd, device, args.warmup, args.repeats, clock)
            rows.append(
                dict(size=size, variant=name, fwd=t_f, fwdbwd=t_fb, fwd_fn=fwd, fwdbwd_fn=fwd_bwd, **counts)
            )
            print(
                f"  measured {size.name:<22} {name:<24} fwd {t_f[0]:9.2f} ms  fwd+bwd {t_fb[0]:9.2f} ms",
                flush=True,
            )
        if device == "cuda":
            from mtl3d_perception.ops.cost_volume_triton import tuned_configs

            print(f"  autotuned {size.name}: {tuned_configs()}", flush=True)
    for row in rows:
        row["peak_fwd"] = measure_peak(row.pop("fwd_fn"), device)
        row["peak_fwdbwd"] = measure_peak(row.pop("fwdbwd_fn"), device)
    return rows


def print_table(rows: list[dict], device: str, dtype: str) -> None:
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peaks = next((v for k, v in DEVICE_PEAKS.items() if k in name), None) if device == "cuda" else None
    mib = 1 / 2**20
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(
        f"\ndevice: {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads{load}, features {dtype}"
    )
    head = (
        "| size (B,S,C,h,w,D) | variant | fwd ms (q20-q80) | fwd+bwd ms (q20-q80) | peak fwd MiB | peak fwd+bwd MiB"
        " | fwd GB/s | fwd GFLOP/s | fwd+bwd GFLOP/s |" + (" fwd % of floor |" if peaks else "")
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        s = r["size"]
        f_ms, fb_ms = r["fwd"][0], r["fwdbwd"][0]

        def peak(v):
            return "n/a" if v is None else f"{v * mib:.1f}"

        line = (
            f"| {s.name} ({s.B},{s.S},{s.C},{s.h},{s.w},{s.D}) | {r['variant']} "
            f"| {f_ms:.3f} ({r['fwd'][1]:.3f}-{r['fwd'][2]:.3f}) | {fb_ms:.3f} ({r['fwdbwd'][1]:.3f}-{r['fwdbwd'][2]:.3f}) "
            f"| {peak(r['peak_fwd'])} | {peak(r['peak_fwdbwd'])} "
            f"| {r['fwd_bytes'] / f_ms / 1e6:.3g} | {r['fwd_flop'] / f_ms / 1e6:.3g} | {r['fwdbwd_flop'] / fb_ms / 1e6:.3g} |"
        )
        if peaks:
            floor_ms = max(r["fwd_bytes"] / (peaks[0] * 1e6), r["fwd_flop"] / (peaks[1] * 1e9))
            line += f" {100 * floor_ms / f_ms:.1f} |"
        print(line)
    outs = {r["size"]: r["size"].B * r["size"].D * r["size"].h * r["size"].w * 4 * mib for r in rows}
    print("output (fp32) MiB: " + ", ".join(f"{k.name}: {v:.1f}" for k, v in outs.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--full", action="store_true", help="full sizes on CPU too (slow)")
    p.add_argument("--sizes", choices=("paper", "default-model"), default="paper",
                   help="paper: the GPU sizes (reduced on CPU); default-model: the shipped model's sweeps")
    p.add_argument("--variants", type=lambda v: v.split(","), default=None,
                   help="comma-separated first words of the variants to run (grid_sample, torch.compile(one-shot), "
                        "reference, correlation, triton); default all")
    p.add_argument("--warmup", type=non_negative_int, default=None, help="default 2 on CPU, 10 on CUDA")
    p.add_argument("--repeats", type=int_in_range(2, 100000), default=None,
                   help="timed calls per variant and size, >= 2 (the q20-q80 spread); default 5 on CPU, 50 on CUDA")
    p.add_argument("--threads", type=int_in_range(1, MAX_NUM_THREADS), default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu-time", action="store_true",
                   help="CPU: time with the calling thread's CPU time (time.thread_time) instead of wall time; "
                        "steadier on a shared machine, meaningful with --threads 1 only")
    args = p.parse_args(argv)
    try:
        resolve_device(args.device)
    except SettingError as exc:
        p.error(str(exc))
    names = {k.split(" ")[0] for k in variants(args.device, compile_model=False)}
    if args.variants and (unknown := sorted(set(args.variants) - names)):
        p.error(f"--variants {','.join(unknown)}: not a variant on {args.device}; choose from {', '.join(sorted(names))}")
    if args.threads:
        # On a shared, oversubscribed CPU every OpenMP barrier waits for a descheduled thread, which
        # costs small ops (the chunked reference) ~50x; one thread per process avoids that.
        torch.set_num_threads(args.threads)
    if args.warmup is None:
        args.warmup = 2 if args.device == "cpu" else 10
    if args.repeats is None:
        args.repeats = 5 if args.device == "cpu" else 50
    rows = run(args)
    print_table(rows, args.device, args.dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
