"""``mtl3d replay`` command line: options, the summary table, ``run``. See the package docstring."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mtl3d_perception.msgs.camera_model import IMAGE_KINDS
from mtl3d_perception.replay.report import metrics_table
from mtl3d_perception.replay.runner import ReplayOptions, check_inputs, replay_bag
from mtl3d_perception.runtime.params import frame_id_problem
from mtl3d_perception.runtime.pipeline import CLOUD_FRAMES, OUTPUT_RESOLUTIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ReplayOptions()
    parser.add_argument("bag", type=Path, metavar="BAG", help="rosbag2 directory, or a .mcap / .db3 file")
    parser.add_argument("--model", default="", metavar="CKPT",
                        help="checkpoint (.safetensors); default: the shipped models/default.safetensors; "
                             "'preset:NAME' = untrained network (smoke tests only)")
    parser.add_argument("--out", type=Path, default=Path("replay_out"), metavar="DIR", help="output folder; default replay_out")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="process at most N frames")
    parser.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--compare-single-view", action="store_true",
                        help="also run every frame in single-view mode and report both side by side")
    parser.add_argument("--num-threads", type=int, default=1, metavar="N",
                        help="torch CPU threads; default 1 (0: torch default), see benchmarks/RESULTS.md")
    g = parser.add_argument_group("topics and frames")
    for name, help_text in (("image_topic", "colour image (sensor_msgs/Image or CompressedImage); TOPIC/compressed "
                                            "is read when only that one is in the bag"),
                            ("camera_info_topic", "camera info"),
                            ("tf_topic", "TF"), ("tf_static_topic", "static TF"),
                            ("depth_gt_topic", "ground-truth depth (32FC1 m), used when present"),
                            ("semantic_gt_topic", "ground-truth labels (mono8), used when present")):
        g.add_argument("--" + name.replace("_", "-"), default=getattr(d, name), metavar="TOPIC",
                       help=f"{help_text}; default {getattr(d, name)}")
    g.add_argument("--world-frame", default=d.world_frame, help=f"fixed frame of the poses; default {d.world_frame}")
    g.add_argument("--node-name", default=d.node_name, help=f"output topics are /NODE_NAME/...; default {d.node_name}")
    r = parser.add_argument_group("runtime (as the node's parameters)")
    r.add_argument("--sync-slop", type=float, default=d.sync_slop_s, metavar="S",
                   help=f"image / camera_info stamp tolerance; default {d.sync_slop_s}")
    r.add_argument("--tf-timeout", type=float, default=d.tf_timeout_s, metavar="S",
                   help="frames wait for their pose as long as the bag can deliver it (docs/replay.md); one whose "
                        "camera has no TF path gives up once the bag's TF is S past it; "
                        f"default {d.tf_timeout_s}")
    r.add_argument("--image-kind", choices=IMAGE_KINDS, default=d.image_kind,
                   help="image_raw: rectified with camera_info's D/R/P; image_rect: already rectified (P's "
                        f"intrinsics); auto: from the image topic's name; default {d.image_kind}")
    r.add_argument("--output-resolution", choices=OUTPUT_RESOLUTIONS, default=d.output_resolution,
                   help=f"output image size: the network's input or the camera's; default {d.output_resolution}")
    r.add_argument("--point-stride", type=int, default=d.point_stride, metavar="N",
                   help=f"point cloud from every N-th pixel in x and y; default {d.point_stride}")
    r.add_argument("--cloud-frame", choices=CLOUD_FRAMES, default=d.cloud_frame,
                   help=f"point cloud frame: the image's frame_id or the world frame; default {d.cloud_frame}")
    r.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels, metavar="N",
                   help=f"larger images (width x height; a compressed image's declared size) are dropped as bad "
                        f"input before decoding; default {d.max_image_pixels} (4096 x 4096)")
    r.add_argument("--montage-frames", type=int, default=d.montage_frames, metavar="N", help="rows in montage.png")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace, device: str) -> ReplayOptions:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.max_image_pixels < 4:
        raise ValueError(f"--max-image-pixels must be >= 4 (a 2x2 image), got {args.max_image_pixels}")
    if reason := frame_id_problem("--world-frame", args.world_frame):  # the node refuses it too (tf2's rule)
        raise ValueError(reason)
    return ReplayOptions(
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic, tf_topic=args.tf_topic,
        tf_static_topic=args.tf_static_topic, depth_gt_topic=args.depth_gt_topic, semantic_gt_topic=args.semantic_gt_topic,
        world_frame=args.world_frame, node_name=args.node_name, device=device, limit=args.limit,
        compare_single_view=args.compare_single_view, sync_slop_s=args.sync_slop, tf_timeout_s=args.tf_timeout,
        image_kind=args.image_kind,
        output_resolution=args.output_resolution, point_stride=args.point_stride, cloud_frame=args.cloud_frame,
        montage_frames=args.montage_frames, max_image_pixels=args.max_image_pixels, progress=not args.no_progress,
    )


def print_summary(summary: dict[str, Any]) -> None:
    """The console view of a replay: counts, warnings, the headline metrics table and where the files are."""
    c = summary["counts"]
    print(f"replayed {summary['bag']}: {c['processed']} frames processed, {c['dropped']} dropped "
          f"({c['images']} images read)")
    for line in summary["notes"]:
        print(f"note: {line}")
    if not summary["has_tf"]:
        print("note: the bag has no TF; every frame ran single-view and temporal consistency was not measured")
    for line in summary["warnings"][:5]:
        print(f"warning: {line}")
    print()
    print("\n".join(metrics_table(summary)))
    print()
    paths = summary["paths"]
    for key, label in (("report", "report"), ("montage", "montage"), ("depth_error_plot", "depth error plot"),
                       ("latency_plot", "latency plot"), ("metrics", "metrics"), ("output_bag", "output bag")):
        if key in paths:
            print(f"{label + ':':18s}{paths[key]}")


def run(args: argparse.Namespace) -> int:
    import torch

    from mtl3d_perception.runtime.loading import load_model, resolve_device

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    options = options_from_args(args, device)
    check_inputs(args.bag, args.out, options)  # a bad bag, topic or output folder fails before the model is loaded
    model, description = load_model(args.model, device=device)
    summary = replay_bag(args.bag, args.out, model, options, model_description=description)
    print_summary(summary)
    return 0
