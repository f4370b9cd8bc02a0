"""``mtl3d synth``: render a synthetic scene's camera path as a posed RGB-D sequence folder.

Example::

    mtl3d synth --seed 3 --frames 200 --size 320x240 --out /tmp/scene3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mtl3d_perception.cli_args import output_folder, positive_int, size_wh
from mtl3d_perception.data.sequence import DEFAULT_RATE_HZ, write_sequence
from mtl3d_perception.data.synthetic import (
    DEFAULT_SPEED_MPS,
    GENERATOR_VERSION,
    iter_sequence,
    scene_provenance,
    scene_record,
)
from mtl3d_perception.data.textures import TEXTURES_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0,
                        help=f"scene seed (layout, textures, path); default 0. A seed's scene is fixed for one "
                             f"generator version (now v{GENERATOR_VERSION}) and texture folder (${TEXTURES_ENV}, "
                             "default ../shared/data/textures; procedural textures without one)")
    parser.add_argument("--frames", type=positive_int, default=100, help="number of frames; default 100")
    parser.add_argument("--size", type=size_wh, default=(320, 240), metavar="WxH",
                        help="image size; default 320x240")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="sequence folder to create")
    # dests are iter_sequence's keywords: cli.main names the flag in its errors (cli_args.option_for)
    parser.add_argument("--rate", dest="rate_hz", type=float, default=DEFAULT_RATE_HZ, metavar="HZ",
                        help=f"frame rate for stamps and motion; default {DEFAULT_RATE_HZ:g}")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED_MPS, metavar="M/S",
                        help=f"robot speed (> 0); default {DEFAULT_SPEED_MPS:g}")
    parser.add_argument("--image-format", choices=("png", "jpg"), default="png", help="colour image format")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    # checks seed, size, rate and speed (SettingError) before the output folder is made
    frames = iter_sequence(args.seed, args.frames, args.size, rate_hz=args.rate_hz, speed=args.speed)
    write_sequence(output_folder(args.out), frames, image_format=args.image_format, provenance=scene_record(args.seed))
    w, h = args.size
    scenes = scene_provenance()
    print(f"wrote {args.out}: {args.frames} frames {w}x{h} of scene {args.seed} (generator v{scenes['generator']}, "
          f"{scenes['textures']} textures; images, depth, semantic, normals, poses, K, timestamps) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
