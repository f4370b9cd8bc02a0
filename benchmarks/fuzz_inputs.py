"""Seeded fuzzing of the message entry points: no exception may escape but the declared ones, memory stays bounded.

    python benchmarks/fuzz_inputs.py [--cases 20000] [--pipeline-cases 200] [--seed 0] [--json]

Entry points and what each may raise (anything else is an escape, reported with the case's seed to replay it):

- ``frame_from_messages(Image | CompressedImage, CameraInfo)``: only ``BadInput``. Inputs are mutations of valid
  messages: random encodings, sizes, steps and (short) data; JPEG / PNG bytes with flipped bits, overwritten header
  fields (SOF sizes, IHDR sizes, chunk lengths up to 0x7FFFFFFF), truncations and random bytes; K with zeros,
  NaN, inf, denormals and extreme exponents; camera_info sizes; empty frame ids.
- compat ``tf2_ros.Buffer.set_transform`` (the node's TF ingest) and ``TransformBuffer.lookup_matrix``: the first
  returns False for a rejected transform and never raises; lookups raise only the tf2 ``TransformException`` tree.
  Quaternions with zeros, NaN, huge and denormal values; translations likewise; odd frame names.
- ``PerceptionPipeline.process`` on frames that passed ``frame_from_messages``, with random poses (NaN, scaled,
  huge translations) and, for some, an extreme K entry: only ``ValueError``, and no output cloud carries a
  non-finite point.

The test (``test/test_fuzz_inputs.py``) runs a few hundred cases in a fresh process under an address-space cap;
the long run's figures are in ``benchmarks/RESULTS.md``. Prints one line per entry point, or JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
import traceback
from collections import Counter
from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

from mtl3d_perception.cli_args import non_negative_int, positive_int
from mtl3d_perception.msgs import conversions as cv
from mtl3d_perception.msgs.messages import BadInput, frame_from_messages
from mtl3d_perception.ros.compat import tf2_ros as compat_tf2
from mtl3d_perception.runtime.tf_buffer import TransformException

TYPES = get_typestore(Stores.ROS2_JAZZY).types
S = 1_000_000_000
EXTREMES = (0.0, -0.0, 1e-320, -1e-320, 1e-300, 1e300, -1e300, 1e308, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, 64.0)


def _extreme(rng: np.random.Generator) -> float:
    return float(EXTREMES[rng.integers(len(EXTREMES))]) if rng.random() < 0.5 else float(rng.normal() * 10.0 ** int(rng.integers(-5, 6)))


def _rgb(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mutate_bytes(rng: np.random.Generator, data: bytes) -> bytes:
    """One or more of: bit flips, a header field overwritten with an extreme value, truncation, random bytes."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(6)
        if op == 0 and buf:  # flip bits
            for i in rng.integers(0, len(buf), size=int(rng.integers(1, 8))):
                buf[i] ^= 1 << int(rng.integers(8))
        elif op == 1 and b"\xff\xc0" in buf:  # JPEG SOF size
            at = buf.index(b"\xff\xc0") + 5
            buf[at:at + 4] = int(rng.choice([0, 1, 0xFFFF, rng.integers(1, 0x10000)])).to_bytes(2, "big") * 2
        elif op == 2 and buf[:4] == b"\x89PNG" and len(buf) > 24:  # PNG IHDR size
            buf[16:24] = int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, rng.integers(1, 2**20)])).to_bytes(4, "big") * 2
        elif op == 3 and buf[:4] == b"\x89PNG" and len(buf) > 40:  # a chunk length (IDAT usually follows IHDR)
            at = 33
            buf[at:at + 4] = int(rng.choice([0, 2**31 - 1, 2**32 - 1, rng.integers(0, 1 << 16)])).to_bytes(4, "big")
        elif op == 4 and buf:  # truncate
            del buf[int(rng.integers(0, len(buf))):]
        elif op == 5:  # random bytes, sometimes behind a real signature
            junk = rng.integers(0, 256, int(rng.integers(0, 512)), dtype=np.uint8).tobytes()
            buf = bytearray(bytes(buf[: int(rng.integers(0, 12))]) + junk)
    return bytes(buf)


def _image_message(rng: np.random.Generator, header: Any, w: int, h: int, mutate: bool) -> Any:
    """A valid colour image (raw or JPEG / PNG) of ``w`` x ``h``, mutated when ``mutate``."""
    kind = int(rng.integers(3))
    if kind == 0:  # raw
        encoding = str(rng.choice(list(cv.COLOUR_ENCODINGS)))
        planar = encoding in cv.PLANAR_YUV_ENCODINGS  # a Y plane of step = w bytes, then up to 2 x that of chroma
        channels = 1 if planar else cv.ENCODINGS[encoding][1]
        step, height, width = w * channels, h, w
        data = rng.integers(0, 256, h * w * channels * (3 if planar else 1), dtype=np.uint8)
        if mutate:
            field = int(rng.integers(5))
            if field == 0:
                encoding = str(rng.choice([*cv.ENCODINGS, "yuv422", "nv12", "nv24", "bayer_rggb8", "", "rgb16"]))
            elif field == 1:
                width, height = int(rng.choice([0, 1, 5000, 2**16, 2**31 - 1])), int(rng.choice([0, 1, 5000, 2**31 - 1]))
            elif field == 2:
                step = int(rng.choice([0, step - 1, step + 3, 2**32 - 1]))
            elif field == 3:
                data = data[: int(rng.integers(0, data.size + 1))]
            else:
                data = rng.integers(0, 256, int(rng.integers(0, 1 << 12)), dtype=np.uint8)
        return TYPES["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding=encoding,
                                              is_bigendian=int(rng.integers(2)), step=step, data=data)
    ext = ".jpg" if kind == 1 else ".png"
    rgb = _rgb(rng, w, h)
    ok, encoded = cv2.imencode(ext, rgb if rng.random() < 0.8 else rgb[:, :, 0])
    data = _mutate_bytes(rng, encoded.tobytes()) if mutate else encoded.tobytes()
    formats = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "rgb8; png compressed bgr8", "mono8; png"]
    if mutate and rng.random() < 0.2:
        formats = ["16UC1; png compressed mono16", "", "bogus; format", "32FC1; compressedDepth png"]
    return TYPES["sensor_msgs/msg/CompressedImage"](header=header, format=str(rng.choice(formats)),
                                                    data=np.frombuffer(data, np.uint8))


def _camera_info(rng: np.random.Generator, header: Any, w: int, h: int, mutate: bool) -> Any:
    K = np.array([[0.8 * w, 0.0, (w - 1) / 2], [0.0, 0.8 * w, (h - 1) / 2], [0.0, 0.0, 1.0]])
    if mutate:
        for _ in range(int(rng.integers(1, 3))):
            K.flat[int(rng.integers(9))] = _extreme(rng)
        if rng.random() < 0.2:
            w, h = int(rng.integers(0, 100)), int(rng.integers(0, 100))
    return cv.make_camera_info(TYPES, header, K, w, h)


def fuzz_messages(rng: np.random.Generator, outcomes: Counter, escapes: list, seed: int) -> Any:
    """One image + camera_info case (a quarter valid, the rest with the image, K or both mutated); returns the
    frame when it was accepted."""
    header = cv.make_header(TYPES, int(rng.integers(0, 2**40)), "" if rng.random() < 0.03 else "cam")
    w, h = int(rng.integers(2, 48)), int(rng.integers(2, 48))
    what = int(rng.integers(4))  # 0 valid, 1 image mutated, 2 camera_info mutated, 3 both
    image = _image_message(rng, header, w, h, mutate=what in (1, 3))
    info = _camera_info(rng, header, w, h, mutate=what in (2, 3))
    try:
        frame = frame_from_messages(image, info)
    except BadInput as exc:
        outcomes[f"bad_input.{exc.kind}"] += 1
        return None
    except Exception as exc:  # an escape
        escapes.append(("frame_from_messages", seed, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))
        return None
    outcomes["accepted"] += 1
    return frame


def fuzz_tf(rng: np.random.Generator, buffer: Any, outcomes: Counter, escapes: list, seed: int) -> None:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)  # a rotation, before any mutation
    t = rng.normal(size=3)
    for _ in range(int(rng.integers(0, 3))):
        q[int(rng.integers(4))] = _extreme(rng)
    if rng.random() < 0.3:
        t[int(rng.integers(3))] = _extreme(rng)
    parent, child = (str(rng.choice(["odom", "base_link", "", "/odom", "cam", "odom"])) for _ in range(2))
    ts = TYPES["geometry_msgs/msg/TransformStamped"](
        header=cv.make_header(TYPES, int(rng.integers(0, 20)) * S // 10, parent), child_frame_id=child,
        transform=TYPES["geometry_msgs/msg/Transform"](
            translation=TYPES["geometry_msgs/msg/Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=TYPES["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))
    try:
        accepted = buffer.set_transform(ts, "fuzz", is_static=bool(rng.random() < 0.1))
        outcomes["tf_accepted" if accepted else "tf_rejected"] += 1
    except Exception as exc:
        escapes.append(("set_transform", seed, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))
    try:
        buffer.core.lookup_matrix("odom", "cam", int(rng.integers(0, 20)) * S // 10)
        outcomes["lookup_ok"] += 1
    except TransformException:
        outcomes["lookup_refused"] += 1
    except Exception as exc:
        escapes.append(("lookup_matrix", seed, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))


def fuzz_pipeline(rng: np.random.Generator, pipeline: Any, frame: Any, outcomes: Counter, escapes: list,
                  seed: int) -> None:
    pose = np.eye(4)
    pose[:3, 3] = rng.normal(size=3) * 10.0 ** int(rng.integers(-3, 40))
    if rng.random() < 0.2:
        pose.flat[int(rng.integers(16))] = _extreme(rng)
    frame = frame.with_pose(pose)
    if rng.random() < 0.3:  # a Frame built by library code, not from messages: K unchecked so far
        K = frame.K.copy()
        K.flat[int(rng.choice([0, 1, 2, 4, 5]))] = _extreme(rng)
        frame = dataclasses.replace(frame, K=K)
    try:
        products = pipeline.process(frame)
    except ValueError as exc:
        outcomes[f"pipeline_refused.{type(exc).__name__}"] += 1
        return
    except Exception as exc:
        escapes.append(("pipeline.process", seed, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))
        return
    if products.points is not None and not np.isfinite(products.points.points).all():
        escapes.append(("pipeline.process", seed, "non-finite cloud point", ""))
    outcomes["pipeline_ok"] += 1


def run(cases: int, pipeline_cases: int, seed: int) -> dict[str, Any]:
    import torch

    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.runtime import PerceptionPipeline
    from mtl3d_perception.runtime.config import RuntimeConfig

    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(resolve_config("tiny"), input_size=(32, 24), pretrained=False, num_depth=4))
    pipeline = PerceptionPipeline(model, RuntimeConfig(point_stride=2))
    outcomes: dict[str, Counter] = {"messages": Counter(), "tf": Counter(), "pipeline": Counter()}
    escapes: list = []
    buffer = compat_tf2.Buffer(types=TYPES)
    buffer.core.on_problem = lambda kind, message: None  # counted in ``rejected``; no log lines per case
    accepted = []
    seconds: Counter = Counter()
    for i in range(cases):
        case_seed = seed * 1_000_003 + i
        rng = np.random.default_rng(case_seed)
        t = time.perf_counter()
        frame = fuzz_messages(rng, outcomes["messages"], escapes, case_seed)
        seconds["messages"] += time.perf_counter() - t
        if frame is not None and len(accepted) < pipeline_cases:
            accepted.append((case_seed, frame))
        t = time.perf_counter()
        fuzz_tf(rng, buffer, outcomes["tf"], escapes, case_seed)
        seconds["tf"] += time.perf_counter() - t
    for case_seed, frame in accepted:
        t = time.perf_counter()
        fuzz_pipeline(np.random.default_rng(case_seed + 7), pipeline, frame, outcomes["pipeline"], escapes, case_seed)
        seconds["pipeline"] += time.perf_counter() - t
    return {
        "cases": cases, "pipeline_cases": len(accepted), "seed": seed,
        "outcomes": {k: dict(sorted(v.items())) for k, v in outcomes.items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "tf_rejected": buffer.rejected,
        "escapes": escapes[:20], "escape_count": len(escapes),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=positive_int, default=20000, help="image + camera_info and TF cases")
    parser.add_argument("--pipeline-cases", type=non_negative_int, default=200,
                        help="accepted frames also run through the pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--address-space-gb", type=float, default=0.0, help="cap the process (RLIMIT_AS); 0: none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.address_space_gb > 0:
        cap = int(args.address_space_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t = time.perf_counter()
    result = run(args.cases, args.pipeline_cases, args.seed)
    result["wall_s"] = round(time.perf_counter() - t, 2)
    if args.json:
        print(json.dumps(result))
    else:
        for name, counts in result["outcomes"].items():
            print(f"{name:9s} {result['seconds'].get(name, 0.0):8.2f} s  {counts}")
        print(f"escapes: {result['escape_count']}  peak RSS: {result['peak_rss_mb']} MB  wall: {result['wall_s']} s")
        for where, case_seed, what, _ in result["escapes"]:
            print(f"  {where} (case seed {case_seed}): {what}")
    return 1 if result["escape_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
