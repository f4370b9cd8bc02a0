"""Benchmark the synthetic scene renderer on one CPU core: frames per second by image size.

    python benchmarks/synthetic.py                   # 160x120, 320x240, 640x480; 4 scenes x 40 frames
    python benchmarks/synthetic.py --frames 100 --sizes 160x120
    python benchmarks/synthetic.py --textures none   # procedural textures only (the fallback)

The process is pinned to one core (``sched_setaffinity``) and every thread pool (BLAS, OpenMP, torch, OpenCV) is
set to one thread, so the figure is a single-core one. Each frame is one ``scene.render``
(rgb, depth, normals, semantic, boundary) along the scene's camera path; the first frame of each scene
is a warm-up (ray cache, texture mip maps). Scenes are photo-textured when ``../shared/data/textures`` is
there (``--textures auto``, the default); scene construction then includes decoding the tiles and
photos it uses (cached per process, so later scenes are cheaper). Prints the median frames/s with the 20/80 % quantiles of per-frame wall
times, and frames/s in process CPU time: on a shared machine (see the load average printed) the wall
figure includes time the core spent on other processes, the CPU figure does not.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mtl3d_perception.cli_args import positive_int, size_wh  # noqa: E402
from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics  # noqa: E402


def _quantiles(times: list[float]) -> tuple[float, float, float]:
    q = np.quantile(np.asarray(times), [0.2, 0.5, 0.8])
    return float(q[0]), float(q[1]), float(q[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda text: [size_wh(v) for v in text.split(",")],
                        default="160x120,320x240,640x480", help="comma-separated WxH list")
    parser.add_argument("--scenes", type=positive_int, default=4, help="scenes (seeds 0..N-1)")
    parser.add_argument("--frames", type=positive_int, default=40, help="timed frames per scene (one more warms up)")
    parser.add_argument("--textures", default="auto", choices=("auto", "none"),
                        help="photo textures where available (auto) or procedural only (none)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)  # OpenCV's pool (textures' resizing) is not set by OMP_NUM_THREADS
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, pinned to 1; "
          f"numpy {np.__version__}; {args.scenes} scenes x {args.frames} frames; textures {args.textures}")
    textures = None if args.textures == "none" else "auto"
    build = []
    for seed in range(args.scenes):
        start = time.perf_counter()
        SyntheticScene(seed, textures=textures)
        build.append(time.perf_counter() - start)
    print(f"scene construction: median {statistics.median(build) * 1e3:.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    print(f"{'size':>9} | {'frames/s (wall, median)':>23} | {'ms/frame p20':>12} | {'p50':>7} | {'p80':>7} | "
          f"{'frames/s (CPU time)':>19}")
    print("-" * 94)
    for W, H in args.sizes:
        text = f"{W}x{H}"
        K = default_intrinsics(W, H)
        times, cpu = [], 0.0
        for seed in range(args.scenes):
            scene = SyntheticScene(seed, textures=textures)
            poses = scene.camera_path(args.frames + 1)
            scene.render(poses[0], K, (W, H))  # warm-up: builds the ray cache
            for T in poses[1:]:
                start, start_cpu = time.perf_counter(), time.process_time()
                scene.render(T, K, (W, H))
                times.append(time.perf_counter() - start)
                cpu += time.process_time() - start_cpu
        p20, p50, p80 = _quantiles(times)
        print(f"{text:>9} | {1.0 / p50:23.1f} | {p20 * 1e3:12.2f} | {p50 * 1e3:7.2f} | {p80 * 1e3:7.2f} | "
              f"{len(times) / cpu:19.1f}")


if __name__ == "__main__":
    main()
