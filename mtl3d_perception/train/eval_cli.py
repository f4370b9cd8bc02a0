"""`mtl3d eval CHECKPOINT --data SPEC [--out DIR]`: metrics.json, report.md and montage PNGs.

SPEC: ``synthetic:SPLIT[:NUM_SCENES]``, or ``KIND:/path[:start:end]`` with KIND ``sequence``, ``bag``,
``tum``, ``scannet``, ``seven_scenes`` or ``nyuv2`` (ints: frames, floats: fractions, e.g. ``:0.8:1.0`` for
the last 20 %). Posed frames are evaluated against their depth (and semantic labels when present), NYUv2
against all tasks.
Both modes are run: two-view (real source view and poses) and single-view (duplicated reference).
Two-view pairs each reference with the source view a node processing every frame would pick
(:func:`data.datasets.two_view_source`: the runtime's ``source_selection.select_source`` with its default rules over the earlier
frames of the range), so the numbers are those of the robot on the same stream, at 30 Hz or on keyframes alike (a node
that drops frames under load has fewer candidates); ``--gap N`` pairs it with the frame N back instead (the fixed
protocol of sessions 1-11's tables in models/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from mtl3d_perception.cli_args import check_output_folder, non_negative_int, output_folder, positive_int
from mtl3d_perception.data.datasets import KIND_FIELDS, SOURCE_KINDS, SourceConfig, two_view_source
from mtl3d_perception.data.sources.tum import CAMERAS as TUM_CAMERAS
from mtl3d_perception.evaluation import json_report
from mtl3d_perception.runtime.params import DEVICES
from mtl3d_perception.train.evaluate import MODES

# The bag source's topic and frame fields a recording may name differently (a RealSense's depth:
# /camera/depth/image_rect_raw in its own frame with its own camera_info; a robot's world frame: map), and how far
# its depth and labels may be stamped from their image (sync_slop, seconds: --sync-slop, as replay's).
BAG_TOPIC_DEFAULTS = {name: getattr(SourceConfig(), name) for name in (
    "image_topic", "camera_info_topic", "depth_topic", "depth_camera_info_topic", "semantic_topic", "world_frame",
    "sync_slop")}
BAG_TOPIC_HELP = {"depth_topic": "; '' for none", "camera_info_topic": ": the one beside --image-topic",
                  "semantic_topic": ": mono8 NYUv2-13 class ids registered to the colour image, scored when the bag has "
                                    "it (mIoU, boundaries); '' for none",
                  "depth_camera_info_topic": ": the one beside --depth-topic (for depth in another frame than the "
                                             "image's, reprojected into the colour camera)",
                  "world_frame": ": the fixed frame TF poses the images in",
                  "sync_slop": " s: depth and label images pair with the image nearest in time within this (replay's "
                               "--sync-slop; an RGB-D driver that stamps its two cameras apart needs more)"}
BAG_METAVARS = {"world_frame": "FRAME", "sync_slop": "S"}


def intrinsics_arg(text: str) -> tuple[float, float, float, float]:
    """``FX,FY,CX,CY`` (pixels, for the images' own size) -> a tuple; argparse's type for ``--intrinsics``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not FX,FY,CX,CY (four numbers in pixels, e.g. 525,525,319.5,239.5)")
    return values  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .safetensors checkpoint written by mtl3d train, or 'default' for the "
                                           "shipped model")
    parser.add_argument("--data", required=True, action="append",
                        help="data SPEC (repeatable): synthetic:test, KIND:/path[:start:end] with KIND sequence, bag, "
                             "tum, scannet, seven_scenes or nyuv2")
    parser.add_argument("--out", default="eval_out", help="output folder (default: eval_out)")
    parser.add_argument("--batch-size", type=positive_int, default=4, metavar="N", help="samples per batch (default: 4)")
    parser.add_argument("--max-batches", type=positive_int, default=None, metavar="N",
                        help="evaluate at most this many batches per SPEC (default: all)")
    parser.add_argument("--device", default="auto", help=f"torch device: {DEVICES} (default: auto)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of: {', '.join(MODES)} (default: {','.join(MODES)})")
    parser.add_argument("--gap", type=positive_int, default=None, metavar="N",
                        help="two-view source: the frame N back (default: the one the node would pick, by its "
                             "min_baseline_m / min_rotation_deg / history_size defaults)")
    parser.add_argument("--montages", type=non_negative_int, default=2, metavar="N",
                        help="montage PNGs per SPEC and mode (default: 2)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar per SPEC on a terminal")
    bag = parser.add_argument_group("bag topics, frame and pairing (bag:... specs; defaults: what mtl3d bag writes)")
    for name, default in BAG_TOPIC_DEFAULTS.items():
        bag.add_argument(f"--{name.replace('_', '-')}", default=default, type=type(default),
                         metavar=BAG_METAVARS.get(name, "TOPIC"), help=f"default {default!r}{BAG_TOPIC_HELP.get(name, '')}")
    tum = parser.add_argument_group("TUM RGB-D camera (tum:... specs; default: freiburg1/2/3 from the folder name)")
    tum.add_argument("--tum-camera", choices=tuple(TUM_CAMERAS), default=None,
                     help="the published calibration to use (fr1, fr2, fr3 or default), scaled to the images' size")
    tum.add_argument("--intrinsics", type=intrinsics_arg, default=None, metavar="FX,FY,CX,CY",
                     help="the colour camera's own K, in pixels of its images (a TUM-layout recording of another camera)")


def check_spec_flags(specs: list[str], kinds: list[str], *, bag_topics: dict[str, str] | None = None,
                     tum_camera: dict | None = None, gap: int | None = None) -> None:
    """Refuse a flag that only some spec kinds read when no ``--data`` spec is of such a kind (a trial: ``--intrinsics``
    and ``--tum-camera`` on a ``sequence:`` spec changed nothing, without a word).

    Args:
        specs: the ``--data`` specs, for the message; ``kinds``: their kinds (``SourceConfig.kind``), in order.
        bag_topics: the ``BAG_TOPIC_DEFAULTS`` fields as given (one that differs from its default was set).
        tum_camera: ``camera`` and ``intrinsics`` as given (None: not set).
        gap: ``--gap`` (None: not set).

    Raises:
        ValueError: names the flag, the spec kinds it applies to and the kinds given.
    """
    given = [(f"--{name.replace('_', '-')}", KIND_FIELDS[name]) for name, value in (bag_topics or {}).items()
             if value != BAG_TOPIC_DEFAULTS[name]]
    given += [(flag, KIND_FIELDS[name]) for name, flag in (("camera", "--tum-camera"), ("intrinsics", "--intrinsics"))
              if (tum_camera or {}).get(name) is not None]
    if gap is not None:  # NYUv2 images are single views: no source to pick
        given.append(("--gap", tuple(k for k in SOURCE_KINDS if k != "nyuv2")))
    for flag, applies in given:
        if not any(kind in applies for kind in kinds):
            raise ValueError(f"{flag} applies to {', '.join(f'{k}:' for k in applies)} specs only, and --data "
                             f"{' --data '.join(specs)} has none (kinds: {', '.join(dict.fromkeys(kinds))}); "
                             "leave it out, or give such a spec")


def with_flags(message: str) -> str:
    """A bag or TUM source's message with its setting names (``source depth_topic '/x/' ...``, ``PATH: depth_topic /gt
    ...``, ``give camera: ... or K``) as the flags that set them here (``--depth-topic``, ``--tum-camera``)."""
    for name in BAG_TOPIC_DEFAULTS:
        flag = "--" + name.replace("_", "-")
        message = message.replace(f"source {name} ", f"{flag} ").replace(f": {name} ", f": {flag} ")
    return message.replace("give camera: fr1|fr2|fr3|default or K",  # a TUM folder's camera (data.sources.tum)
                           "pass --tum-camera fr1|fr2|fr3|default or --intrinsics FX,FY,CX,CY")


def check_label_topics(source) -> None:
    """Refuse a ``bag`` source (``data.datasets.SourceConfig``) whose depth topic, or whose semantic topic other than
    the default, is not in the bag: training may go on without labels, a score may not (the default semantic topic is
    scored where a bag has it, as most bags have no labels).

    Raises:
        ValueError: the topic is absent; the message names it, the bag's Image topics and the flag to pass.
    """
    from mtl3d_perception.data import bag as bag_io

    available = bag_io.bag_topics(source.path)
    if source.depth_topic and bag_io.resolve_depth_topic(available, source.depth_topic) not in available:
        raise ValueError(f"{bag_io.absent_topic(source.path, available, source.depth_topic, 'depth')}: pass "
                         "--depth-topic TOPIC, or --depth-topic '' to score without depth")
    if source.semantic_topic not in ("", BAG_TOPIC_DEFAULTS["semantic_topic"], *available):
        raise ValueError(f"{bag_io.absent_topic(source.path, available, source.semantic_topic, 'semantic')}: pass the "
                         "bag's label topic to --semantic-topic, or leave it out")


def pairing_description(gap: int | None) -> dict:
    """What ``data.datasets.two_view_source`` does, for metrics.json and report.md."""
    from mtl3d_perception.source_selection import PairingConfig

    if gap is not None:
        return {"rule": "gap", "gap": gap}
    rule = PairingConfig()
    return {"rule": "runtime", "min_baseline_m": rule.min_baseline_m, "min_rotation_deg": rule.min_rotation_deg,
            "history_size": rule.history_size, "max_pair_age_s": rule.max_pair_age_s,
            "keyframe_spacing_m": rule.keyframe_spacing_m, "keyframe_spacing_deg": rule.keyframe_spacing_deg}


def check_poses(model, dataset, source) -> dict | None:
    """Whether a recording's poses fit its images as optical camera-to-world (``runtime.pose_convention``
    ``check_dataset``); None for synthetic scenes and NYUv2 (no recorded poses) and for models without the geometric
    depth (no sweep to check with).

    Returns:
        ``{"pairs": pairs with parallax, "verdict": "fit" | "too_few_pairs" | a convention's name, "message": the
        warning or None}``.
    """
    from mtl3d_perception.runtime.pose_convention import can_check, check_dataset

    if source.kind in ("synthetic", "nyuv2") or not can_check(model):
        return None
    check, verdict = check_dataset(model, dataset)
    return {"pairs": len(check.checks), "verdict": verdict, "message": check.message("this recording")}


def evaluate_checkpoint(checkpoint: str, specs: list[str], out: str | Path, *, batch_size: int = 4,
                        max_batches: int | None = None, device: str = "auto",
                        modes: tuple[str, ...] = MODES, gap: int | None = None,
                        montages: int = 2, progress: bool = False, bag_topics: dict[str, str] | None = None,
                        tum_camera: dict | None = None) -> dict:
    """Evaluate ``checkpoint`` on each data spec; writes metrics.json, report.md and PNGs into ``out`` (montage PNGs of
    an earlier evaluation there are removed first).

    ``progress``: a progress bar per data spec (on a terminal only). ``bag_topics``: the ``BAG_TOPIC_DEFAULTS``
    fields (``image_topic``, ``camera_info_topic``, ``depth_topic``, ``depth_camera_info_topic``, ``semantic_topic``,
    ``world_frame``) for the ``bag:`` specs (default: the source's defaults). A depth topic, or a semantic topic other
    than the default, that the bag lacks is refused. ``tum_camera``: ``camera`` and/or ``intrinsics`` (fx, fy, cx, cy)
    for the ``tum:`` specs (``SourceConfig``'s fields). What each bag and TUM spec read is recorded under ``inputs``.

    Raises:
        ValueError: a spec's data cannot be opened (a missing or malformed folder, a bag without the topics); the
            message starts with ``--data SPEC``, then the reader's own (which names the path and what was expected).
            A spec-specific setting (a bag topic, the TUM camera, ``gap``) given with no spec of its kind
            (:func:`check_spec_flags`).
    """
    from mtl3d_perception.data.datasets import build_dataset, parse_data_spec
    from mtl3d_perception.data.synthetic import scene_provenance
    from mtl3d_perception.evaluation.montage import save_png
    from mtl3d_perception.model import load_checkpoint
    from mtl3d_perception.runtime.loading import resolve_device
    from mtl3d_perception.train.evaluate import check_modes, eval_indices, evaluate
    from mtl3d_perception.train.trained_on import RECORDED_KINDS, overlap_note, training_overlap

    check_modes(modes)
    check_spec_flags(specs, [parse_data_spec(spec).kind for spec in specs], bag_topics=bag_topics,
                     tum_camera=tum_camera, gap=gap)
    check_output_folder(out)  # a bad --out fails before the model loads; created only once every --data opens
    dev = resolve_device(device)
    model = load_checkpoint(checkpoint, map_location=dev)
    report: dict = {"checkpoint": str(checkpoint), "input_size": list(model.config.input_size),
                    "trained_on": model.checkpoint_metadata.get("trained_on"), "results": {}}
    if any(parse_data_spec(spec).kind != "nyuv2" for spec in specs):  # NYUv2 images are single views
        report["pairing"] = pairing_description(gap)
    opened = []
    for spec in specs:
        source = parse_data_spec(spec)
        if source.kind == "synthetic":  # which scenes were scored (a seed's scene changes with the generator)
            report["synthetic_scenes"] = scene_provenance()
        source = two_view_source(source, gap)
        try:
            if source.kind == "bag" and bag_topics:
                source = dataclasses.replace(source, **bag_topics)
            if source.kind == "tum" and tum_camera:
                source = dataclasses.replace(source, **{k: v for k, v in tum_camera.items() if v is not None})
            if source.kind == "bag":
                check_label_topics(source)
            dataset = build_dataset([source], image_size=tuple(model.config.input_size), num_views=2)
        except (ValueError, OSError, RuntimeError) as exc:  # the path's own message, under the spec that named it
            raise ValueError(f"--data {spec}: {with_flags(str(exc))}") from exc
        if gap is not None and source.kind not in ("synthetic", "nyuv2") and gap >= len(dataset):
            msg = (f"--gap {gap}: --data {spec} has {len(dataset)} frames, so no frame has one {gap} back; expected a "
                   f"gap below {len(dataset)}")
            raise ValueError(msg)
        opened.append((spec, source, dataset))
        if (poses := check_poses(model, dataset, source)) is not None:
            report.setdefault("pose_check", {})[spec] = poses
            if poses["message"]:
                print(f"warning: --data {spec}: {poses['message']}", file=sys.stderr)
        if source.kind in RECORDED_KINDS:  # frames the checkpoint was trained on score recall, not held-out data
            frames = dataset.sources[0]
            scored = [int(frames.indices[k]) for k in
                      eval_indices(len(frames), None if max_batches is None else max_batches * batch_size)]
            for overlap in training_overlap(report["trained_on"], source, scored, len(frames.frames)):
                report.setdefault("training_overlap", {}).setdefault(spec, []).append(overlap)
                print(f"note: {overlap_note(spec, overlap)}", file=sys.stderr)
        if source.kind == "bag":  # what was read: the image topic may have resolved to its /compressed one
            frames = dataset.sources[0].frames
            report.setdefault("inputs", {})[spec] = {
                "image_topic": frames.image_topic, "camera_info_topic": frames.camera_info_topic,
                "depth_topic": frames.depth_topic or None,
                "depth_camera_info_topic": frames.depth_camera_info_topic or None,
                "semantic_topic": frames.semantic_topic or None, "world_frame": frames.world_frame}
            if not frames.semantic_topic:  # labels on a topic of another name would be missed without a word
                from mtl3d_perception.data import bag as bag_io

                used = {frames.image_topic, frames.depth_topic}
                report["inputs"][spec]["other_image_topics"] = sorted(
                    t for t, msgtype in bag_io.bag_topics(source.path).items()
                    if msgtype == "sensor_msgs/msg/Image" and t not in used)
        if source.kind == "tum":  # the K the frames were read with, and the images no depth or pose was found for
            frames = dataset.sources[0].frames
            fx, fy, cx, cy = (float(v) for v in frames.K[(0, 1, 0, 1), (0, 1, 2, 2)])
            report.setdefault("inputs", {})[spec] = {
                "camera": "given K" if frames.K_given else frames.camera, "K_fx_fy_cx_cy": [fx, fy, cx, cy],
                "K_for": "the images' size" if frames.K_given else "640x480 (scaled to the images' size)",
                "frames": len(frames), "frames_left_out": frames.dropped}
        if source.kind == "scannet":  # frames whose tracking failed (-inf poses) are left out
            frames = dataset.sources[0].frames
            report.setdefault("inputs", {})[spec] = {"frames": len(frames), "frames_left_out": frames.invalid_poses,
                                                     "depth_registration": frames.depth_registration}
            if frames.color_K_from is not None:  # intrinsic_color.txt is the sensor's: the images were resized
                report["inputs"][spec]["color_K_scaled_from"] = "x".join(map(str, frames.color_K_from))
        if source.kind == "seven_scenes":  # frames whose pose file is NaN or infinite (tracking lost) are left out
            frames = dataset.sources[0].frames
            report.setdefault("inputs", {})[spec] = {"frames": len(frames), "frames_left_out": frames.invalid_poses}
    out = output_folder(out)
    for old in out.glob("montage_*.png"):  # an earlier evaluation's: none may sit beside this report
        old.unlink()
    slugs: list[str] = []
    for spec, source, dataset in opened:
        use_modes = modes if source.kind != "nyuv2" else tuple(m for m in modes if m == "single_view") or modes
        res = evaluate(model, dataset, batch_size=batch_size, device=dev, max_batches=max_batches,
                       modes=use_modes, montage_batches=montages, progress=f"eval {spec}" if progress else None)
        slug = _slug(source)
        slugs.append(slug)
        if slugs.count(slug) > 1:  # two folders of one name (a/seq, b/seq): number the later ones
            slug = f"{slug}-{slugs.count(slug)}"
        report["results"][spec] = {}
        for mode, r in res.items():
            for i, pic in enumerate(r["montages"]):
                save_png(out / f"montage_{slug}_{mode}_{i}.png", pic)
            report["results"][spec][mode] = {"metrics": r["metrics"], "num_samples": r["num_samples"],
                                             "seconds_per_sample": r["seconds_per_sample"]}
    (out / "metrics.json").write_text(json_report.dumps(report, indent=2))
    (out / "report.md").write_text(render_report(report))
    return report


def _slug(source) -> str:
    """A file-name part for a data source: ``synthetic-test``, ``sequence-hololens_000-0.8-1.0`` (the folder's name,
    not its path, so ``../`` does not end up in file names)."""
    parts = [source.kind, source.split if source.kind == "synthetic" else Path(source.path).name or "data"]
    if source.kind != "synthetic" and (source.start, source.end) != (0, 1.0):
        parts += [str(source.start), str(source.end)]
    return "-".join(p.replace("/", "_").replace(":", "_") for p in parts)


_CURVES = {
    "depth": "the published depth confidence (`~/depth/confidence`) against the final depth's abs rel",
    "geometric": "the plane sweep's matching confidence against its own read-out depth (`depth_geometric`)",
}


def _is_curve_point(name: str) -> bool:
    """A sparsification point's key (``depth/abs_rel_conf_top50``, ``geometric/conf_threshold_top10``): these go in
    the curve tables, not the metrics table."""
    metric = name.split("/", 1)[-1]
    return metric.startswith(("abs_rel_conf_top", "conf_threshold_top", "conf_threshold_kept_top",
                              "abs_rel_conf_threshold_top"))


def _metric_order(name: str) -> tuple[str, int]:
    """Sort key of report.md's metric rows: by name, the baseline bins of one metric in bin order (``<0.05m`` first,
    as replay lists them) rather than alphabetically."""
    from mtl3d_perception.evaluation.metrics import baseline_bin_names

    head, _, tail = name.rpartition("_baseline_")
    bins = baseline_bin_names()
    return (head, bins.index(tail)) if head and tail in bins else (name, -1)


_POSE_VERDICTS = {  # report.md's line for check_poses' verdict; any other verdict names the convention that fits
    "fit": "Poses: they fit the images as optical-frame camera-to-world ({pairs} pairs with parallax checked against "
           "the other usual conventions, runtime.pose_convention)",
    "too_few_pairs": "Poses: not checked ({pairs} of the pairs read had parallax; the check needs 4)",
}
_POSE_MISFIT = ("Poses: **{message}.** The two-view metrics below used the poses as given (the node and replay would "
                "have run such frames single-view); convert the poses and evaluate again.")


def render_report(report: dict) -> str:
    """A Markdown report: per data spec, one metrics table with a column per mode (``n/a`` for a NaN metric), then each
    confidence's sparsification curve as replay's report shows it (kept fraction, abs rel, ratio to all, threshold, what it keeps;
    ``evaluation.metrics.sparsification_table``), or why a mode has none (single view: a flat volume ranks nothing)."""
    from mtl3d_perception.evaluation.metrics import (
        SPARSIFICATION_TEXT,
        format_metric,
        sparsification_rows,
        sparsification_table,
    )
    from mtl3d_perception.source_selection import MIN_PARALLAX_M
    from mtl3d_perception.train.trained_on import overlap_note

    lines = [f"# Evaluation of `{report['checkpoint']}`", "",
             f"Input size (W, H): {tuple(report['input_size'])}; the errors (abs rel, RMSE, delta, normals, mIoU's "
             "confusion) are pooled over all labelled pixels of a range at that size (the ground truth resized with "
             "nearest neighbour), not averaged per frame; the scale ratio is the median of the frames' ratios", ""]
    pairing = report.get("pairing")
    if pairing and pairing["rule"] == "gap":
        lines += [f"Two-view source: the frame {pairing['gap']} back (`--gap`)", ""]
    elif pairing:
        lines += [f"Two-view source: the one the node would pick (the most recent earlier frame >= "
                  f"{pairing['min_baseline_m']} m away or turned >= {pairing['min_rotation_deg']} deg among the last "
                  f"{pairing['history_size']} keyframes ({pairing['keyframe_spacing_m']:g} m or "
                  f"{pairing['keyframe_spacing_deg']:g} deg apart) and the newest frame, within "
                  f"{pairing['max_pair_age_s']:g} s on recorded stamps, else "
                  f"the widest baseline, never one within {MIN_PARALLAX_M * 1e3:g} mm; the first frame of each range or "
                  "scene has none and runs single-view; "
                  "`depth/frames_baseline_*` counts the frames of each baseline bin)", ""]
    if "synthetic_scenes" in report:
        scenes = report["synthetic_scenes"]
        lines += [f"Synthetic scenes: generator v{scenes['generator']}, {scenes['textures']} textures", ""]
    for spec, modes in report["results"].items():
        lines += [f"## `{spec}`", ""]
        inputs = report.get("inputs", {}).get(spec)
        if inputs and "camera" in inputs:  # tum:
            fx, fy, cx, cy = inputs["K_fx_fy_cx_cy"]
            lines += [f"Read: {inputs['frames']} frames with TUM camera {inputs['camera']} (fx {fx:g}, fy {fy:g}, cx {cx:g}, "
                      f"cy {cy:g} for {inputs['K_for']}); {inputs['frames_left_out']} colour images left out (no depth "
                      "within the association tolerance or outside the ground truth)", ""]
        elif inputs and "depth_registration" not in inputs and "image_topic" not in inputs:  # seven_scenes:
            lines += [f"Read: {inputs['frames']} frames; {inputs['frames_left_out']} left out (a pose of NaN or "
                      "infinite values: tracking lost)", ""]
        elif inputs and "image_topic" not in inputs:  # scannet:
            how = {"resized": "resized to the colour images (intrinsic_depth.txt is the colour K at its size)",
                   "reprojected": "reprojected into the colour camera with intrinsic_depth.txt's own K (another view "
                                  "than the colour K's)"}.get(inputs.get("depth_registration", ""), "")
            scaled = inputs.get("color_K_scaled_from")
            lines += [f"Read: {inputs['frames']} frames; {inputs['frames_left_out']} left out (ScanNet's -inf pose: its "
                      f"tracking failed){f'; depth {how}' if how else ''}"
                      + (f"; intrinsic_color.txt scaled from the {scaled} sensor frame to the exported images' size"
                         if scaled else ""), ""]
        elif inputs:
            depth = inputs["depth_topic"] or "none"
            if inputs.get("depth_camera_info_topic") and inputs["depth_topic"]:
                depth += f" (its camera_info, for depth in another frame: {inputs['depth_camera_info_topic']})"
            semantic = inputs.get("semantic_topic") or "none"
            if inputs.get("other_image_topics"):
                semantic += (f" (the bag's other Image topics: {', '.join(inputs['other_image_topics'])}; "
                             "--semantic-topic scores labels on one)")
            lines += [f"Read: {inputs['image_topic']} with {inputs['camera_info_topic']}, depth {depth}, semantic labels "
                      f"{semantic}, poses in {inputs['world_frame']} from TF", ""]
        poses = report.get("pose_check", {}).get(spec)
        if poses:
            lines += [_POSE_VERDICTS.get(poses["verdict"], _POSE_MISFIT).format(**poses), ""]
        for overlap in report.get("training_overlap", {}).get(spec, ()):
            lines += [f"**Training frames:** {overlap_note(spec, overlap)}.", ""]
        names = sorted({k for r in modes.values() for k in r["metrics"] if not _is_curve_point(k)}, key=_metric_order)
        cols = list(modes)
        lines.append("| metric | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for name in names:
            fmt = "{:.0f}" if "/frames_" in name else "{:.4f}"  # counts (RealDepthMeter's frames per baseline bin)
            cells = [format_metric(modes[c]["metrics"][name], fmt) if name in modes[c]["metrics"] else "" for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| samples | " + " | ".join(str(modes[c]["num_samples"]) for c in cols) + " |")
        lines.append("| s / sample | " + " | ".join(f"{modes[c]['seconds_per_sample']:.4f}" for c in cols) + " |")
        lines.append("")
        explained = False
        for prefix, what in _CURVES.items():
            present = [c for c in cols if f"{prefix}/abs_rel_conf_top100" in modes[c]["metrics"]]
            if not present:
                continue
            lines += [f"### Sparsification: {what}", ""]
            if not explained:
                lines += [SPARSIFICATION_TEXT, ""]
                explained = True
            for c in present:
                rows = sparsification_rows(modes[c]["metrics"], prefix)
                lines += ([f"{c}:", "", *sparsification_table(rows), ""] if rows else
                          [f"{c}: no curve (the confidence ranks no pixel: flat where nothing was matched, as in single "
                           "view)", ""])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mtl3d_perception.model.checkpoint import checkpoint_argument

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    report = evaluate_checkpoint(checkpoint_argument(args.checkpoint), args.data, args.out, batch_size=args.batch_size,
                                 max_batches=args.max_batches, device=args.device, modes=modes, gap=args.gap,
                                 montages=args.montages, progress=args.progress,
                                 bag_topics={name: getattr(args, name) for name in BAG_TOPIC_DEFAULTS},
                                 tum_camera={"camera": args.tum_camera, "intrinsics": args.intrinsics})
    out = Path(args.out)
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}\nmetrics: {out / 'metrics.json'}"
          + (f"\nmontages: {out}/montage_*.png" if args.montages else ""))
    return 0 if report["results"] else 1
