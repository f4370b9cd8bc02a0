"""The files `mtl3d replay` writes besides the output bag: metrics.json, report.md, plots and the montage.

What is measured (by :mod:`mtl3d_perception.replay.evaluation`, with the meters of
:mod:`mtl3d_perception.evaluation.metrics` that training and `mtl3d eval` use):

- against ground truth when the bag has it, at the ground truth's resolution (predictions are resized
  with nearest-neighbour sampling): depth (abs rel, RMSE, delta1, ...) vs the GT depth topic, mIoU vs the
  GT semantic topic, normals vs normals computed from the smoothed GT depth (``geometry.reference_normals``);
- always, for posed frames: temporal consistency — frame t's predicted depth moved into the previous posed
  frame with the two poses, against that frame's predicted depth (``CrossViewMeter``, reported as
  ``temporal/*``);
- with GT depth and a model that outputs a depth confidence: its sparsification curve over the two-view frames
  (``ModeEvaluator.summary``'s ``sparsification`` rows: the abs rel of the most-confident x % of pixels and
  the confidence threshold that keeps them), as a table and ``sparsification.png``;
- latency per pipeline stage (p50 / p95 / mean, milliseconds), single-view fallbacks, frame counts.

The montage comes from :mod:`mtl3d_perception.evaluation.montage`; plots use matplotlib's Agg canvas (no pyplot,
no display).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mtl3d_perception.data.sequence import describe_provenance
from mtl3d_perception.evaluation import json_report
from mtl3d_perception.evaluation.metrics import SPARSIFICATION_TEXT, format_metric, sparsification_table
from mtl3d_perception.evaluation.montage import columns_for, save_png, titles_for
from mtl3d_perception.resources import shipped_file
from mtl3d_perception.runtime.pose_convention import POSE_CONVENTION
from mtl3d_perception.runtime.products import STAGES
from mtl3d_perception.source_selection import MIN_PARALLAX_M, PAIRED_REASONS

MODES = ("multi_view", "single_view")
# Shown in the console table and at the top of report.md: (metrics key, label, format)
HEADLINE = (
    ("depth/abs_rel", "depth abs rel", "{:.3f}"),
    ("depth/rmse", "depth RMSE (m)", "{:.3f}"),
    ("depth/delta1", "depth delta1 (%)", "{:.1f}"),
    ("semantic/miou", "mIoU (%)", "{:.1f}"),
    ("normals/mean", "normals mean error (deg)", "{:.1f}"),
    ("depth/conf_top50_ratio", "abs rel of the 50 % most-confident / all (two-view)", "{:.2f}"),
    ("temporal/abs_rel", "temporal consistency abs rel", "{:.3f}"),
    ("temporal/abs_err", "temporal consistency abs err (m)", "{:.3f}"),
)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_depth_error(path: Path, records: list[dict[str, Any]], modes: tuple[str, ...]) -> None:
    """Per-frame depth abs rel (vs GT) and temporal consistency abs rel over the image stamps (from the first processed
    frame's, so a ranged replay starts at 0); single-view frames marked."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    t0 = records[0]["stamp_ns"] if records else 0
    # the modes differ in line style and marker (dots: multi-view, open squares: single-view), the metrics in colour
    for mode, style, marker in zip(modes, ("-", "--"), (".", "s")):
        for key, label, colour in (("depth/abs_rel", "depth abs rel vs GT", "C0"),
                                   ("temporal/abs_rel", "temporal abs rel", "C1")):
            pts = [((r["stamp_ns"] - t0) * 1e-9, r[mode][key]) for r in records if key in r.get(mode, {})]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, color=colour, marker=marker, markersize=3 if marker == "s" else 6,
                        markerfacecolor="none" if marker == "s" else colour, alpha=0.6 if marker == "s" else 1.0,
                        label=f"{label} ({mode.replace('_', '-')})")
    fallback = [(r["stamp_ns"] - t0) * 1e-9 for r in records if r["multi_view"].get("single_view_fallback")]
    if fallback:
        ax.plot(fallback, [0.0] * len(fallback), "x", color="red", label="single-view fallback (marked at 0)")
    ax.set_xlabel("image stamp since the first processed frame (s)")
    ax.set_ylabel("abs rel")
    ax.set_title("Depth error over time")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_latency(path: Path, records: list[dict[str, Any]]) -> None:
    """Per-frame latency of each pipeline stage (multi-view run), milliseconds."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for stage in STAGES:
        y = [r["multi_view"]["latency_ms"].get(stage, math.nan) for r in records]
        if any(math.isfinite(v) for v in y):
            ax.plot(range(len(y)), y, "-" if stage != "total" else "k-", label=stage, linewidth=1.0 + (stage == "total"))
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_title("Per-stage latency")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path)


def plot_sparsification(path: Path, rows: list[dict[str, float]]) -> None:
    """Depth abs rel of the most-confident x % of pixels against x (``sparsification`` rows), each point labelled
    with the confidence threshold that keeps it."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    x = [100.0 * r["fraction"] for r in rows]
    ax.plot(x, [r["abs_rel"] for r in rows], "o-", color="C0", label="most-confident pixels")
    ax.axhline(rows[0]["abs_rel"], color="grey", linestyle="--", linewidth=1.0, label="all pixels")
    for xi, r in zip(x, rows):
        ax.annotate(f">= {r['confidence_min']:.2f}", (xi, r["abs_rel"]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    ax.set_xlim(105, 0)  # fewer pixels to the right: the curve falls when the confidence predicts the error
    ax.set_ylim(0.0, 1.15 * max(r["abs_rel"] for r in rows) + 1e-6)
    ax.set_xlabel("most-confident pixels kept (%), labelled with the confidence threshold")
    ax.set_ylabel("depth abs rel")
    ax.set_title("Depth confidence: sparsification (two-view frames)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def no_curve_reason(s: dict[str, Any]) -> str | None:
    """Why the replay summary ``s`` has no sparsification curve (report.md and the console), or None when it has one."""
    mv = s.get("multi_view", {})
    if mv.get("sparsification"):
        return None
    if not s.get("depth_confidence"):
        return "the model outputs no depth confidence (`geometric_depth: false`)"
    if "depth/confidence_mean" in mv.get("metrics", {}):  # a curve was computed, and is NaN: a constant confidence
        # over the two-view frames, or every frame where none had a source (a trial: all single-view, yet "two-view")
        paired = any(mv.get("pair_reasons", {}).get(reason) for reason in PAIRED_REASONS)
        frames = "two-view frames" if paired else "frames (all single-view: none had a source view)"
        return (f"the confidence was {mv['metrics']['depth/confidence_mean']:.3g} at every pixel of the {frames}, "
                "so it ranks no pixel (sparsification n/a)")
    return "no two-view frame had ground-truth depth" if s["ground_truth"]["depth"] else "the bag has no ground-truth depth"


def _pairing_lines(mv: dict[str, Any]) -> list[str]:
    """How the multi-view run chose its source views: the reasons counted, the median baseline and the frames per
    baseline bin (``ModeEvaluator``), with the depth abs rel of each bin where there was ground truth
    (``RealDepthMeter``), so a slow 30 Hz stream's short pairs show."""
    if not mv.get("pair_reasons"):
        return []
    lines = ["Source-view choice (multi-view run): " + ", ".join(f"{k} {v}" for k, v in sorted(mv["pair_reasons"].items()))
             + " (`baseline`: the most recent frame at least `min_baseline_m` away or turned `min_rotation_deg`; "
             "`farthest`: none was, so the widest baseline in the history; the others ran single-view, "
             f"`no_parallax` among them when every earlier frame was within {MIN_PARALLAX_M * 1e3:g} mm: "
             f"{shipped_file('docs', 'replay.md')}).", ""]
    baselines, metrics = mv.get("baselines", {}), mv.get("metrics", {})
    if baselines.get("median_m") is not None:
        bins = [f"{name} ({_frames(n)}" + (f", abs rel {metrics[f'depth/abs_rel_baseline_{name}']:.3f})"
                                           if f"depth/abs_rel_baseline_{name}" in metrics else ")")
                for name, n in baselines["frames"].items()]
        scored = "; abs rel over those with ground-truth depth" if any("abs rel" in b for b in bins) else ""
        lines += [f"Median baseline of the two-view frames: {baselines['median_m']:.3f} m. Frames by baseline (`single`: "
                  f"no source{scored}): " + ", ".join(bins) + ".", ""]
    return lines


def _frames(count: float) -> str:
    n = int(count)
    return f"{n} frame" + ("" if n == 1 else "s")


def metrics_table(summary: dict[str, Any]) -> list[str]:
    """Markdown table rows of the headline metrics, one column per mode that ran."""
    modes = [m for m in MODES if m in summary]
    rows = ["| metric | " + " | ".join(m.replace("_", "-") for m in modes) + " |",
            "|---|" + "---|" * len(modes)]
    for key, label, fmt in HEADLINE:
        values = [summary[m]["metrics"].get(key) for m in modes]
        if any(v is not None for v in values):
            rows.append(f"| {label} | " + " | ".join(format_metric(v, fmt) for v in values) + " |")
    rows.append("| single-view frames | " + " | ".join(
        f"{summary[m]['single_view_frames']}/{summary[m]['frames']}" for m in modes) + " |")
    rows.append("| latency total p50 / p95 (ms) | " + " | ".join(
        format_metric(summary[m]["latency_ms"].get("total", {}).get("p50"), "{:.1f}") + " / "
        + format_metric(summary[m]["latency_ms"].get("total", {}).get("p95"), "{:.1f}") for m in modes) + " |")
    return rows


def ground_truth_note(s: dict[str, Any], kind: str) -> str:
    """``no`` (not in the bag), ``N of M frames`` scored with it, or why none was although the bag has it."""
    if not s["ground_truth"][kind]:
        return "no"
    n = s.get("ground_truth_frames", {}).get(kind)
    if n is None:  # a summary from before the count
        return "yes"
    if n == 0:
        return ("in the bag (no frame processed)" if not s["counts"]["processed"]
                else "in the bag but no frame scored with it (see the warnings)")
    return f"{n} of {s['counts']['processed']} frames"


def unprocessed_note(counts: dict[str, Any]) -> str:
    """``"; N before --start-offset (not processed); ..."``: the images outside a replay's range (``before_start``,
    ``after_end``) and those read ahead past ``--limit`` (``past_limit``), each part when its count is > 0."""
    parts = [(counts.get("before_start", 0), "before --start-offset"),
             (counts.get("after_end", 0), "after --playback-duration"),
             (counts.get("past_limit", 0), "read ahead past --limit")]
    return "".join(f"; {n} {what} (not processed)" for n, what in parts if n)


# Every picture write_report can write, by its key in the returned paths. A replay into an earlier replay's folder
# removes those it does not write this time, so no picture of another run sits beside the new report.
PICTURES = {"depth_error_plot": "depth_error.png", "latency_plot": "latency.png",
            "sparsification_plot": "sparsification.png", "montage": "montage.png"}


def write_report(out_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]],
                 montage: np.ndarray | None) -> dict[str, Path]:
    """Write metrics.json, report.md, the plots and the montage; returns name -> path of what was written.

    Pictures of an earlier run in ``out_dir`` that this run does not write (no ground truth, ``--montage-frames 0``)
    are removed (:data:`PICTURES`).
    """
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    modes = tuple(m for m in MODES if m in summary)
    if records:
        paths["depth_error_plot"] = out_dir / PICTURES["depth_error_plot"]
        plot_depth_error(paths["depth_error_plot"], records, modes)
        paths["latency_plot"] = out_dir / PICTURES["latency_plot"]
        plot_latency(paths["latency_plot"], records)
    if summary.get("multi_view", {}).get("sparsification"):
        paths["sparsification_plot"] = out_dir / PICTURES["sparsification_plot"]
        plot_sparsification(paths["sparsification_plot"], summary["multi_view"]["sparsification"])
    if montage is not None:
        paths["montage"] = out_dir / PICTURES["montage"]
        save_png(paths["montage"], montage)
    for key, name in PICTURES.items():
        if key not in paths:
            (out_dir / name).unlink(missing_ok=True)
    paths["metrics"] = out_dir / "metrics.json"
    paths["report"] = out_dir / "report.md"
    summary["files"] = {k: p.name for k, p in paths.items()} | {"output_bag": "output.mcap"}
    paths["metrics"].write_text(json_report.dumps({**summary, "per_frame": records}, indent=1) + "\n")
    paths["report"].write_text(_report_markdown(summary, modes))
    return paths


def _report_markdown(s: dict[str, Any], modes: tuple[str, ...]) -> str:
    c = s["counts"]
    lines = [f"# Replay of `{s['bag']}`", ""]
    if s.get("error"):
        lines += [f"**Stopped early: {s['error']}** Everything below covers the frames before that point.", ""]
    if s.get("provenance"):
        lines.append(f"- data: {describe_provenance(s['provenance'])} (the bag's metadata, from `mtl3d bag`)")
    lines += [
        f"- model: {s['model']} (input {s['input_size'][0]}x{s['input_size'][1]}) on {s['device']}",
        f"- images: `{s['topics']['image']}` ({s['image_type']}), camera info `{s['topics']['camera_info']}`",
        f"- frames: {c['processed']} processed, {c['dropped']} dropped"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(s['dropped_reasons'].items()))})" if s["dropped_reasons"] else "")
        + f" of {c['images']} images read{unprocessed_note(c)}",
        *([f"- bad input (as /diagnostics counts it; dropped or kept): "
           f"{', '.join(f'{k} {v}' for k, v in sorted(s['bad_input'].items()))}"
           + (f" ({POSE_CONVENTION} counts the checks that found the poses wrong, not frames: the frames that ran "
              "single-view for it are under Source-view choice)" if POSE_CONVENTION in s["bad_input"] else "")]
          if s["bad_input"] else []),
        f"- ground truth: depth {ground_truth_note(s, 'depth')}, semantic {ground_truth_note(s, 'semantic')}"
        + ("; normals are compared with normals computed from the smoothed GT depth"
           if s.get("ground_truth_frames", {}).get("depth") else ""),
    ]
    lines += [f"- note: {note}" for note in s["notes"]]
    if not s["has_tf"]:
        lines.append(f"- **no TF in the bag** ({s['topics']['tf']}, {s['topics']['tf_static']} absent): every frame "
                     "ran single-view, and temporal consistency could not be measured")
    elif s["counts"].get("no_pose"):
        lines.append(f"- {s['counts']['no_pose']} frame(s) had no pose ({s['world_frame']} <- camera) in time: ran single-view")
    lines += ["", "## Metrics", "", *metrics_table(s), ""]
    lines += ["Depth, semantic and normals metrics are pooled over all labelled pixels at the ground truth's "
              "resolution. Temporal consistency: each frame's predicted depth is moved into the previous posed "
              "frame with the TF poses and compared with that frame's predicted depth (pixels seen by both): it "
              "measures flicker, not accuracy (a depth that is wrong the same way every frame scores well), so read "
              "it beside the abs rel.", ""]
    mv = s.get("multi_view", {})
    lines += _pairing_lines(mv)
    lines += _confidence_section(s, mv)
    lines += ["## Latency per stage (ms, multi-view run)", "", "| stage | p50 | p95 | mean |", "|---|---|---|---|"]
    for stage, v in mv.get("latency_ms", {}).items():
        lines.append(f"| {stage} | {v['p50']:.1f} | {v['p95']:.1f} | {v['mean']:.1f} |")
    if s["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in s["warnings"])]
    lines += ["", "## Files", "",
              "- `output.mcap`: the inputs, every output topic of the node "
              f"(`/{s['node_name']}/...`, `/diagnostics`) and TF — open it in Foxglove, or "
              f"`ros2 bag play output.mcap` with RViz (`{shipped_file('config', 'mtl3d.rviz')}`)",
              "- `metrics.json`: everything on this page plus per-frame values"]
    if "sparsification_plot" in s["files"]:
        lines.append("- `sparsification.png`: the depth confidence's sparsification curve (above)")
    if "montage" in s["files"]:
        columns = columns_for(s["ground_truth"])  # as the montage was drawn: no column of a ground truth it lacks
        lines += ["- `montage.png`: " + ", ".join(titles_for(columns)), "", "![montage](montage.png)"]
    if "depth_error_plot" in s["files"]:
        lines += ["", "![depth error over time](depth_error.png)", "", "![latency](latency.png)"]
    return "\n".join(lines) + "\n"


def _confidence_section(s: dict[str, Any], mv: dict[str, Any]) -> list[str]:
    """report.md's section on ``~/depth/confidence``: the sparsification table, or why there is none."""
    topic = f"/{s['node_name']}/depth/confidence"
    if not s.get("depth_confidence"):
        body = ["The model outputs no depth confidence (`geometric_depth: false`): the output bag has no "
                f"`{topic}` and there is no sparsification curve."]
    elif (why := no_curve_reason(s)) is not None:
        body = [f"No sparsification curve: {why}."]
    else:
        rows = mv["sparsification"]
        body = [f"Sparsification over the two-view frames of the multi-view run, of `{topic}`. "
                + SPARSIFICATION_TEXT, "",
                *sparsification_table(rows), "", "![sparsification](sparsification.png)"]
    return [f"## Depth confidence (`{topic}`)", "", *body, ""]
