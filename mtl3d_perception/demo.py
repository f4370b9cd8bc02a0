"""``mtl3d demo`` (``make demo``): a synthetic bag -> replay with the shipped model -> report, pictures, output bag.

Three steps, each the project's own tool, so the demo shows what a newcomer would run by hand:

1. ``mtl3d synth``: render a held-out synthetic scene (a test-split seed, never trained on) along its camera
   path into ``DIR/sequence``;
2. ``mtl3d bag``: write it as a rosbag2 with camera, TF and ground-truth topics into ``DIR/bag``;
3. ``mtl3d replay --compare-single-view``: run the node's runtime with ``models/default.safetensors`` over
   the bag into ``DIR/replay`` and print where the report, pictures and output bag are, plus the metrics.

Sized to finish within minutes on two CPU cores (60 frames at 160x120 by default).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from mtl3d_perception.cli_args import check_output_folder, int_in_range, size_wh
from mtl3d_perception.resources import shipped_file
from mtl3d_perception.runtime.config import MAX_NUM_THREADS


def remove_earlier_demo(folders: dict[Path, set[str]]) -> None:
    """Remove each folder, an earlier demo's product, if every one holds only its ``parts`` (top-level names; a
    sub-folder only frame files with a number for a name); missing folders are fine. All are checked before any is
    removed.

    Raises:
        FileExistsError: a folder is a file or holds anything else (a user's file is never deleted); the message
            names the first such path.
    """
    def stranger(folder: Path, parts: set[str]) -> Path | None:
        if not folder.is_dir():
            return folder
        for p in sorted(folder.iterdir()):
            if p.name not in parts:
                return p
            if p.is_dir():
                for f in sorted(p.iterdir()):
                    if not (f.is_file() and f.stem.isdigit()):
                        return f
        return None

    present = {folder: parts for folder, parts in folders.items() if folder.exists()}
    for folder, parts in present.items():
        if (bad := stranger(folder, parts)) is not None:
            raise FileExistsError(f"{bad} was not written by the demo, which replaces {folder} on each run; "
                                  "choose another --out or move it")
    for folder in present:
        shutil.rmtree(folder)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), metavar="DIR", help="output folder; default demo_out")
    parser.add_argument("--frames", type=int, default=60, metavar="N", help="frames in the synthetic bag; default 60")
    parser.add_argument("--size", type=size_wh, default=(160, 120), metavar="WxH", help="image size; default 160x120")
    parser.add_argument("--seed", type=int, default=None,
                        help="synthetic scene seed; default the first test-split scene (never trained on)")
    parser.add_argument("--model", default="", metavar="CKPT", help="checkpoint; default the shipped models/default.safetensors")
    parser.add_argument("--device", default="auto", help="torch device; default auto")
    parser.add_argument("--no-compare", action="store_true", help="skip the single-view comparison run")
    parser.add_argument("--num-threads", type=int_in_range(1, MAX_NUM_THREADS), default=1, metavar="N",
                        help="torch CPU threads; default 1 (at the default model's 160x120 the ops are small: a "
                             "second thread gains little and stalls every op when another process holds a core)")


def run(args: argparse.Namespace) -> int:
    from mtl3d_perception.data.bag import write_bag
    from mtl3d_perception.data.datasets import SYNTHETIC_SEED_BASE
    from mtl3d_perception.data.sequence import write_sequence
    from mtl3d_perception.data.synthetic import iter_sequence, scene_provenance, scene_record
    from mtl3d_perception.model.checkpoint import default_model_path
    from mtl3d_perception.replay import ReplayOptions, print_summary, replay_bag
    from mtl3d_perception.runtime.loading import load_model, resolve_device

    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2 (the second frame is the first with a source view), got {args.frames}")
    start = time.perf_counter()
    W, H = args.size
    seed = SYNTHETIC_SEED_BASE["test"] if args.seed is None else args.seed
    # checks --size and --seed (a SettingError, which cli.main words with the flag) before the model is loaded and
    # before anything under --out is touched; the frames are rendered only as write_sequence reads them
    frames = iter_sequence(seed, args.frames, (W, H))
    if not args.model:
        try:
            default_model_path()
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                "the demo needs the shipped model models/default.safetensors, which is missing "
                f"({exc}). Pass --model CKPT, or train one with `mtl3d train`."
            ) from None
    import torch

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    out: Path = args.out
    seq_dir, bag_dir, replay_dir = out / "sequence", out / "bag", out / "replay"
    check_output_folder(out)
    from mtl3d_perception.data.sequence import SEQUENCE_PARTS

    remove_earlier_demo({seq_dir: set(SEQUENCE_PARTS), bag_dir: {"metadata.yaml", f"{bag_dir.name}.mcap"}})
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    model, description = load_model(args.model, device=device, name="--model")

    scenes = scene_provenance()  # a seed's scene depends on these: say which scene the figures are on
    print(f"[1/3] rendering {args.frames} frames {W}x{H} of synthetic scene {seed} (generator v{scenes['generator']}, "
          f"{scenes['textures']} textures) -> {seq_dir}")
    write_sequence(seq_dir, frames, provenance=scene_record(seed))
    print(f"[2/3] writing the rosbag2 -> {bag_dir}")
    write_bag(seq_dir, bag_dir)
    print(f"[3/3] replaying it with {description} on {device} -> {replay_dir}")
    summary = replay_bag(bag_dir, replay_dir, model, ReplayOptions(device=device, compare_single_view=not args.no_compare),
                         model_description=description)
    print()
    print_summary(summary)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s. View the output bag in Foxglove "
          f"(open {replay_dir / 'output.mcap'}) or with RViz: see {shipped_file('docs', 'replay.md')}.")
    return 0
