"""``mtl3d replay`` command line: options, the summary table, ``run``. See the package docstring.

The options are generated from :class:`~mtl3d_perception.replay.runner.ReplayOptions`: the runtime settings the
node has as parameters (``runtime.config.RuntimeConfig``, same names with dashes: ``--tf-timeout-s``,
``--min-baseline-m``, ...) plus replay's own. A few keep a short alias (``--model``, ``--sync-slop``,
``--tf-timeout``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mtl3d_perception.data.sequence import describe_provenance
from mtl3d_perception.evaluation.metrics import sparsification_table
from mtl3d_perception.replay.options import ReplayOptions
from mtl3d_perception.replay.report import metrics_table, no_curve_reason, unprocessed_note
from mtl3d_perception.replay.runner import check_inputs, replay_bag
from mtl3d_perception.runtime.config import config_from_parameters, parameter_specs

ALIASES = {"model_path": "--model", "sync_slop_s": "--sync-slop", "tf_timeout_s": "--tf-timeout",
           "start_offset_s": "--start-offset", "playback_duration_s": "--playback-duration"}  # ros2 bag play's
# settings whose value is neither a unit nor plain text -> their metavar (model_path: as ``mtl3d demo --model CKPT``;
# its help names the other values runtime.loading.load_model takes, '' and 'preset:NAME')
SETTING_METAVARS = {"model_path": "CKPT"}
METAVARS = {str: "TEXT", int: "N", float: "X"}
# the unit a setting's name ends in (the ROS parameter naming of REP 103 units) -> its metavar
UNIT_METAVARS = {"_topic": "TOPIC", "_s": "SECONDS", "_m": "METRES", "_deg": "DEGREES", "_hz": "HZ", "_mps": "M/S",
                 "_dps": "DEG/S"}
TOPICS_AND_FRAMES = ("image_topic", "camera_info_topic", "tf_topic", "tf_static_topic", "depth_gt_topic",
                     "depth_gt_camera_info_topic", "semantic_gt_topic", "world_frame", "node_name")


def or_none(kind: type) -> Any:
    """An argparse ``type`` for a setting whose default is none: ``none`` (any case) gives None, as the help's
    "default none" says, anything else ``kind(text)``; argparse names ``kind`` in its error ("invalid float value")."""
    def parse(text: str) -> Any:
        return None if text.strip().lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, metavar="BAG", help="rosbag2 directory, or a .mcap / .db3 file")
    parser.add_argument("--out", type=Path, default=Path("replay_out"), metavar="DIR", help="output folder; default replay_out")
    groups = {"topics": parser.add_argument_group("topics and frames"),
              "runtime": parser.add_argument_group("runtime (the node's parameters of the same names)")}
    for name, spec in parameter_specs(ReplayOptions, "replay").items():
        flags = [ALIASES[name]] if name in ALIASES else []
        flags.append("--" + name.replace("_", "-"))
        group = groups["topics"] if name in TOPICS_AND_FRAMES else groups["runtime"] if "node" in spec.scope else parser
        if spec.type is bool:  # --NAME / --no-NAME
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=spec.default,
                               help=f"{spec.description}; default {spec.default!r}")
            continue
        kwargs: dict[str, Any] = {"dest": name, "type": spec.type if spec.default is not None else or_none(spec.type),
                                  "default": spec.default}
        if isinstance(spec.constraint, tuple) and isinstance(spec.constraint[0], str):
            kwargs["choices"] = spec.constraint
        else:
            unit = next((m for suffix, m in UNIT_METAVARS.items() if name.endswith(suffix)), None)
            kwargs["metavar"] = SETTING_METAVARS.get(name) or unit or METAVARS.get(spec.type, "VALUE")
        default = "none" if spec.default is None else repr(spec.default)
        group.add_argument(*flags, help=f"{spec.description}; default {default}", **kwargs)


def options_from_args(args: argparse.Namespace, device: str | None = None) -> ReplayOptions:
    """The ReplayOptions of parsed arguments (``device``: a resolved device replacing ``--device``).

    Raises:
        SettingError: a setting outside its range (named by its setting name; ``cli.main`` names the flag).
    """
    values = {name: getattr(args, name) for name in parameter_specs(ReplayOptions, "replay")}
    if device is not None:
        values["device"] = device
    return config_from_parameters(values, ReplayOptions())


def print_summary(summary: dict[str, Any]) -> None:
    """The console view of a replay: counts, warnings, the headline metrics table and where the files are."""
    c = summary["counts"]
    print(f"replayed {summary['bag']}: {c['processed']} frames processed, {c['dropped']} dropped "
          f"({c['images']} images read{unprocessed_note(c)})")
    if summary.get("provenance"):
        print(f"data: {describe_provenance(summary['provenance'])}")
    for line in summary["notes"]:
        print(f"note: {line}")
    if not summary["has_tf"]:
        print("note: the bag has no TF; every frame ran single-view and temporal consistency was not measured")
    for line in summary["warnings"][:5]:
        print(f"warning: {line}")
    print()
    print("\n".join(metrics_table(summary)))
    print()
    if rows := summary.get("multi_view", {}).get("sparsification"):
        print("depth confidence, two-view frames (dropping the pixels below a row's threshold leaves `keeps` of them, "
              "at `abs rel kept`):")
        print("\n".join(sparsification_table(rows)))
        print()
    elif summary.get("depth_confidence"):
        print(f"depth confidence: no sparsification curve: {no_curve_reason(summary)}")
        print()
    paths = summary["paths"]
    for key, label in (("report", "report"), ("montage", "montage"), ("depth_error_plot", "depth error plot"),
                       ("latency_plot", "latency plot"), ("sparsification_plot", "confidence plot"),
                       ("metrics", "metrics"), ("output_bag", "output bag")):
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
    model, description = load_model(options.model_path, device=device, name="--model")
    summary = replay_bag(args.bag, args.out, model, options, model_description=description)
    print_summary(summary)
    return 0
