"""``mtl3d bag``: write a posed RGB-D sequence folder as a rosbag2 that ``ros2 bag play`` and RViz open.

Example::

    mtl3d synth --seed 3 --frames 100 --out /tmp/scene3
    mtl3d bag /tmp/scene3 --out /tmp/scene3_bag
    ros2 bag play /tmp/scene3_bag
    mtl3d bag /tmp/scene3 --out /tmp/scene3_jpeg --compressed jpeg   # images as a robot often records them
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mtl3d_perception.data.bag import STORAGES, bag_topics, write_bag
from mtl3d_perception.data.sequence import PosedSequence
from mtl3d_perception.geometry import ORTHONORMAL_EPS, z_up_rotation
from mtl3d_perception.msgs.conversions import COMPRESSED_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sequence", type=Path, metavar="SEQ_DIR", help="posed RGB-D sequence folder")
    parser.add_argument("--out", type=Path, required=True, metavar="BAG", help="bag directory to create")
    parser.add_argument("--rate", dest="rate_hz", type=float, default=None, metavar="HZ",
                        help="stamp frames at this rate (default: timestamps.txt, else 10 Hz)")
    parser.add_argument("--format", choices=tuple(STORAGES), default="mcap", help="storage; default mcap")
    parser.add_argument("--keep-world", action="store_true",
                        help="write odom as poses.txt's world even when it is not z-up (default: a y-up world such "
                             "as a HoloLens one is turned z-up, REP 103, so viewers show the floor level)")
    parser.add_argument("--pose-check", action=argparse.BooleanOptionalAction, default=True,
                        help="check with the shipped model that poses.txt holds optical-frame camera-to-world poses "
                             "(runtime.pose_convention); where another convention fits, warn and do not turn the "
                             "world z-up (default: on, a few seconds)")
    parser.add_argument("--compressed", choices=COMPRESSED_FORMATS, default=None,
                        help="write the images as sensor_msgs/CompressedImage on <image topic>/compressed "
                             "instead of raw rgb8; default raw")


def pose_warning(sequence: Path) -> str | None:
    """The pose-convention warning for ``sequence``'s poses.txt (``runtime.pose_convention.check_dataset``, the
    shipped model judging the pairs the node would pick, as training's preflight), or None where they fit or cannot
    be judged.

    Raises:
        FileNotFoundError: the checkout has no shipped model.
    """
    from mtl3d_perception.data.datasets import SourceConfig, build_source, two_view_source
    from mtl3d_perception.model.checkpoint import default_model_path, load_checkpoint
    from mtl3d_perception.runtime.pose_convention import check_dataset

    judge = load_checkpoint(default_model_path())
    source = two_view_source(SourceConfig(kind="sequence", path=str(sequence)), None)
    dataset = build_source(source, image_size=tuple(judge.config.input_size), num_views=2)
    return check_dataset(judge, dataset)[0].message(str(sequence / "poses.txt"))


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    seq = PosedSequence(args.sequence)
    z_up = not args.keep_world
    if args.pose_check:
        try:
            warning = pose_warning(args.sequence)
        except FileNotFoundError as exc:
            print(f"note: the poses were not checked: {exc}")
            warning = None
        if warning is not None:
            # The turn is computed from camera-to-world poses; applied to others it leaves poses that no convention
            # the node checks for can read, and the node could no longer name them.
            print(f"warning: {warning}. The bag gets them as they are (not turned z-up): convert poses.txt and run "
                  "mtl3d bag again (--no-pose-check skips this check)")
            z_up = False
    write_bag(seq, args.out, rate_hz=args.rate_hz, storage=args.format, compressed=args.compressed, z_up=z_up)
    turn = z_up_rotation(seq.poses)
    if z_up and not np.allclose(turn, np.eye(4)):
        down = -turn[2, :3]  # the world axis the turn takes to -z
        axis = int(np.argmax(np.abs(down)))
        print(f"turned the sequence's world so that odom is z-up (REP 103): its cameras' mean down was "
              f"{'-' if down[axis] < 0 else '+'}{'xyz'[axis]}; --keep-world writes it as it is")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({args.format}, {len(seq)} frames, {size / 1e6:.1f} MB) "
          f"in {time.perf_counter() - start:.1f} s; topics: {', '.join(sorted(bag_topics(args.out)))}")
    if seq.projected_rotations:
        print(f"note: {seq.projected_rotations} of {len(seq)} pose rotations of {seq.root / 'poses.txt'} were not "
              f"orthonormal to {ORTHONORMAL_EPS:g} (usual for poses written as text) and were replaced by the nearest "
              "rotation (geometry.to_rigid)")
    return 0
