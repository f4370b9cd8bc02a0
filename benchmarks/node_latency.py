"""End-to-end per-frame latency: the pipeline alone, and through rclpy pub/sub in one process.

    python benchmarks/node_latency.py [--preset tiny] [--size 160x120] [--frames 40] [--threads 2] [--device cpu]
    python benchmarks/node_latency.py --preset small --size 320x240 --device cuda --precision bf16
    python benchmarks/node_latency.py --checkpoint models/default.safetensors --threads 1 --device cpu --no-node \
        --path both --rounds 3     # the inference path against the reference path, rounds interleaved

Pipeline: ``PerceptionPipeline.process`` on a moving camera (two-view frames after the first), all outputs,
point stride 4; per-stage median and p95. Node: ``PerceptionNode`` plus a peer node in one
``SingleThreadedExecutor``; the peer publishes Image + CameraInfo (TF fed to the buffer) and waits for the last
output (``~/points``) before sending the next frame, so the figure is publish -> last output received.
Random weights (a preset; latency does not depend on the weights) or a checkpoint (``--checkpoint``, at its own
size). ``--path``: ``inference`` is what the node runs (``PerceptionPipeline``'s copy prepared by
``model.inference``, the cost volume's automatic backend), ``reference`` the model as trained (BatchNorm, the
grid_sample cost volume); ``both`` with ``--rounds`` alternates them, so a shared machine's load hits both alike.
CPU time is ``time.process_time`` per frame (all threads; with ``--threads 1`` the steadier figure on a busy
machine). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time

import numpy as np
import torch

from mtl3d_perception import topics
from mtl3d_perception.cli_args import int_in_range, positive_int, size_wh
from mtl3d_perception.geometry import pose_from_quat_trans
from mtl3d_perception.model import build_model, load_checkpoint, resolve_config
from mtl3d_perception.runtime import Frame, PerceptionPipeline, RuntimeConfig
from mtl3d_perception.runtime.config import MAX_NUM_THREADS
from mtl3d_perception.runtime.loading import resolve_device
from mtl3d_perception.runtime.params import precision_problem
from mtl3d_perception.typed_config import SettingError

S = 1_000_000_000


def _frames(n: int, W: int, H: int):
    rng = np.random.default_rng(0)
    K = np.array([[0.8 * W, 0, (W - 1) / 2], [0, 0.8 * W, (H - 1) / 2], [0, 0, 1.0]])
    for i in range(n):
        pose = pose_from_quat_trans(np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.03 * i, 0.0, 0.0]))
        yield Frame(S + i * S // 10, topics.CAMERA_FRAME, rng.integers(0, 256, (H, W, 3)).astype(np.uint8), K, pose)


def _pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def bench_pipeline(model, device: str, precision: str, W: int, H: int, n: int,
                   prepare: bool = True, compile_model: bool = False) -> dict[str, list[float]]:
    pipe = PerceptionPipeline(model, RuntimeConfig(device=device, precision=precision, point_stride=4).replace(
        min_baseline_m=0.05), prepare=prepare)
    if compile_model:  # benchmark only: the runtime does not compile (minutes of start-up on a CPU)
        pipe.model.encode = torch.compile(pipe.model.encode, dynamic=False)
        pipe.model.predict = torch.compile(pipe.model.predict, dynamic=False)
    t = time.perf_counter()
    pipe.warmup()
    if compile_model:
        print(f"# torch.compile: first call (compiling encode and predict) {time.perf_counter() - t:.0f} s", flush=True)
    stages: dict[str, list[float]] = {}
    for i, frame in enumerate(_frames(n + 2, W, H)):
        cpu0 = time.process_time()
        products = pipe.process(frame)
        if i >= 2:  # the first frames are single-view and pay first-call costs
            for k, v in products.timings.items():
                stages.setdefault(k, []).append(v)
            stages.setdefault("cpu", []).append(time.process_time() - cpu0)
    pipe.close()
    return stages


def bench_node(model, device: str, precision: str, W: int, H: int, n: int, threads: int) -> list[float]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mtl3d_perception.msgs import conversions as cv
    from mtl3d_perception.ros.node import PerceptionNode

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = PerceptionNode(model=model, context=context, parameter_overrides=[
        Parameter("device", value=device), Parameter("precision", value=precision), Parameter("tf_timeout_s", value=0.0),
        Parameter("point_stride", value=4),
        Parameter("num_threads", value=threads),  # the node sets torch's threads itself (its default: 1)
        # every output computed and published, as with a consumer on each (lazy: only the subscribed ~/points)
        Parameter("lazy", value=False)])
    peer = rclpy.create_node("bench_peer", context=context)
    types = cv.rclpy_types()
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    got: list[float] = []
    peer.create_subscription(types["sensor_msgs/msg/PointCloud2"], topics.output_topic("points"),
                             lambda _msg: got.append(time.perf_counter()), 10)
    image_pub = peer.create_publisher(types["sensor_msgs/msg/Image"], topics.IMAGE_TOPIC, 10)
    info_pub = peer.create_publisher(types["sensor_msgs/msg/CameraInfo"], topics.CAMERA_INFO_TOPIC, 10)
    while not (image_pub.get_subscription_count() and info_pub.get_subscription_count()):
        executor.spin_once(timeout_sec=0.01)
    static = cv.make_transform_stamped(types, cv.make_header(types, 0, topics.BASE_FRAME), topics.CAMERA_FRAME, np.eye(4))
    node.tf_buffer.set_transform_static(static, "bench")
    latencies = []
    for i, frame in enumerate(_frames(n + 2, W, H)):
        header = cv.make_header(types, frame.stamp_ns, frame.frame_id)
        ts = cv.make_transform_stamped(types, cv.make_header(types, frame.stamp_ns, topics.WORLD_FRAME),
                                       topics.BASE_FRAME, frame.T_world_cam)
        node.tf_buffer.set_transform(ts, "bench")
        before = len(got)
        t0 = time.perf_counter()
        image_pub.publish(cv.make_image(types, header, frame.rgb, "rgb8"))
        info_pub.publish(cv.make_camera_info(types, header, frame.K, W, H))
        deadline = t0 + 120
        # Block in the wait set as rclpy.spin does: polling with a 1 ms timeout kept this thread on the GIL and
        # starved the inference thread (246 ms instead of 124 ms per frame on one thread, 2026-11-30).
        while len(got) == before and time.perf_counter() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if i >= 2:
            latencies.append(got[-1] - t0)
    executor.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.try_shutdown(context=context)
    return latencies


def _reference(model):
    """The model as trained, with the reference (grid_sample) cost volume: the path before the inference copy."""
    cfg = model.config.replace(cost_volume_backend="reference")
    model.config = model.cvm.config = cfg
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint instead of a preset (its size)")
    parser.add_argument("--size", type=size_wh, default=(160, 120), metavar="WxH",
                        help="camera and network size (presets only)")
    parser.add_argument("--frames", type=positive_int, default=40, help="measured frames (2 more run first)")
    parser.add_argument("--threads", type=int_in_range(1, MAX_NUM_THREADS), default=2,
                        help="torch CPU threads, in the pipeline and the node (its num_threads)")
    parser.add_argument("--device", default="cpu,cuda",
                        help="comma-separated; cuda is skipped (and said) when absent; an error if none can run")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="autocast; default fp32 (fp16 and bf16 on CUDA devices only: others are skipped)")
    parser.add_argument("--path", default="inference", choices=("inference", "reference", "both"),
                        help="the pipeline's inference copy, the model as trained, or both (alternating rounds)")
    parser.add_argument("--rounds", type=positive_int, default=1, help="repeat the measurement, alternating paths")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the pipeline model's encode and predict (inference path; measures the "
                             "option, which the runtime does not offer: minutes of compilation at start-up)")
    parser.add_argument("--no-node", action="store_true", help="pipeline only (no rclpy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        if args.checkpoint:
            def make_model():
                return load_checkpoint(args.checkpoint)
            cfg = make_model().config
            W, H = cfg.input_size
            what = f"checkpoint {args.checkpoint}"
        else:
            W, H = args.size
            cfg = resolve_config(args.preset).replace(input_size=(W, H), pretrained=False)

            def make_model():
                return build_model(cfg).eval()
            what = f"preset {args.preset}"
    except (OSError, ValueError, KeyError) as exc:  # a missing checkpoint, an unknown preset, a size the model refuses
        parser.error(str(exc))
    devices = []
    for device in args.device.split(","):
        try:
            resolved = resolve_device(device)
        except SettingError as exc:
            print(f"# skipped {device}: {exc}", flush=True)
            continue
        if problem := precision_problem(args.precision, resolved):
            print(f"# skipped {device}: {problem}", flush=True)
            continue
        devices.append(device)
    if not devices:
        parser.error(f"no device of --device {args.device} can run {args.precision} here (see the lines above)")
    paths = ("inference", "reference") if args.path == "both" else (args.path,)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# node_latency: {what}, {W}x{H}, {args.precision}, {args.frames} frames, torch threads {args.threads}, "
          f"{platform.processor() or platform.machine()}, {datetime.date.today()}, commit {commit or 'uncommitted'}{load}")
    print("| device | path | preprocess | encode | predict | postprocess | cloud | total p50 / p95 (ms) | rate (Hz) "
          "| CPU time p50 (ms, all threads) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for _ in range(args.rounds):
            for path in paths:
                model = make_model() if path == "inference" else _reference(make_model())
                compiled = args.compile and path == "inference"
                st = bench_pipeline(model, device, args.precision, W, H, args.frames, prepare=path == "inference",
                                    compile_model=compiled)
                label = f"{path}, torch.compile" if compiled else path
                cells = [f"{_pct(st[k], 50):.1f}" for k in ("preprocess", "encode", "predict", "postprocess", "cloud")]
                total50, total95 = _pct(st["total"], 50), _pct(st["total"], 95)
                print(f"| {device} | pipeline ({label}) | {' | '.join(cells)} | {total50:.1f} / {total95:.1f} "
                      f"| {1e3 / total50:.1f} | {_pct(st['cpu'], 50):.1f} |", flush=True)
        if not args.no_node:
            lat = bench_node(make_model(), device, args.precision, W, H, args.frames, args.threads)
            p50, p95 = _pct(lat, 50), _pct(lat, 95)
            print(f"| {device} | rclpy pub -> ~/points | | | | | | {p50:.1f} / {p95:.1f} | {1e3 / p50:.1f} | |")


if __name__ == "__main__":
    main()
