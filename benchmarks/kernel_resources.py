"""Static resources of every cost-volume autotune config on an H100 (sm_90a), no GPU needed.

    python benchmarks/kernel_resources.py            # fp32 and bf16 features, [B, D] candidates

Compiles each config of FWD_CONFIGS and BWD_CONFIGS with Triton's bundled compiler, runs the bundled
`ptxas -v` on the PTX and prints registers per thread, spill bytes and shared memory, plus the warps
per SM that the register file allows (65536 registers per SM, at most 64 warps). Spills and low
occupancy make a config slow, not wrong; the autotuner measures speed on the GPU. This is a guide
for choosing the config space, not a substitute for `benchmarks/cost_volume.py` on a GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, even where tests set the interpreter

import triton

from mtl3d_perception.ops import cost_volume_triton as kernels

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
REGISTERS_PER_SM, MAX_WARPS_PER_SM = 65536, 64


def resources(kernel: str, config: triton.Config, dtype: str, per_pixel: bool) -> dict[str, int]:
    """Compile one config for sm_90a and read ptxas's resource report."""
    compiled = kernels.compile_ahead(kernel, config, dtype, per_pixel=per_pixel)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(compiled.asm["ptx"])
        f.flush()
        report = subprocess.run(
            [PTXAS, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull], capture_output=True, text=True, check=True
        ).stderr
    found = {
        "registers": re.search(r"Used (\d+) registers", report),
        "spill_stores": re.search(r"(\d+) bytes spill stores", report),
        "spill_loads": re.search(r"(\d+) bytes spill loads", report),
    }
    out = {k: int(m.group(1)) if m else 0 for k, m in found.items()}
    out["shared"] = compiled.metadata.shared
    threads = 32 * config.num_warps
    blocks = REGISTERS_PER_SM // (out["registers"] * threads) if out["registers"] else 0
    out["warps_per_sm"] = min(blocks * config.num_warps, MAX_WARPS_PER_SM)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="fp32,bf16", help="feature dtypes, comma-separated; default fp32,bf16")
    parser.add_argument("--per-pixel", action="store_true", help="[B, D, h, w] candidates instead of [B, D]")
    args = parser.parse_args()
    if unknown := [d for d in args.dtypes.split(",") if d not in ("fp32", "bf16", "fp16")]:
        parser.error(f"--dtypes {','.join(unknown)}: expected a comma-separated list of fp32, bf16, fp16")
    print(f"triton {triton.__version__}, target sm_90a, candidates {'[B,D,h,w]' if args.per_pixel else '[B,D]'}")
    print("| dtype | kernel | BLOCK_P | BLOCK_C | BLOCK_D | warps | elements/thread | registers | spill st/ld (B) "
          "| shared (B) | warps/SM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        for name, configs in (("fwd", kernels.FWD_CONFIGS), ("bwd", kernels.BWD_CONFIGS)):
            for config in configs:
                r = resources(name, config, dtype, args.per_pixel)
                k = config.kwargs
                per_thread = k["BLOCK_P"] * k["BLOCK_C"] // (32 * config.num_warps)
                print(f"| {dtype} | {name} | {k['BLOCK_P']} | {k['BLOCK_C']} | {k.get('BLOCK_D', '')} | "
                      f"{config.num_warps} | {per_thread} | {r['registers']} | {r['spill_stores']}/{r['spill_loads']} | "
                      f"{r['shared']} | {r['warps_per_sm']} |")  # fmt: skip


if __name__ == "__main__":
    main()
