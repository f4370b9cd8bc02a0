"""What `mtl3d replay` measures and writes besides the output bag: metrics, report, plots and montage.

Metrics come from :mod:`mtl3d_perception.evaluation.metrics` (the same meters training and `mtl3d eval` use):

- against ground truth when the bag has it, at the ground truth's resolution (predictions are resized
  with nearest-neighbour sampling): depth (abs rel, RMSE, delta1, ...) vs the GT depth topic, mIoU vs the
  GT semantic topic, normals vs normals computed from the GT depth (``geometry.normals_from_depth``);
- always, for posed frames: temporal consistency — frame t's predicted depth moved into the previous posed
  frame with the two poses, against that frame's predicted depth (``CrossViewMeter``, reported as
  ``temporal/*``);
- latency per pipeline stage (p50 / p95 / mean, milliseconds), single-view fallbacks, frame counts.

Pictures use the colourings of :mod:`mtl3d_perception.evaluation.montage`; plots use matplotlib's Agg canvas
(no pyplot, no display).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mtl3d_perception.classes import NYU13_PALETTE, colorize_labels
from mtl3d_perception.evaluation.metrics import CrossViewMeter, DepthMeter, NormalsMeter, SemanticMeter
from mtl3d_perception.evaluation.montage import colorize_depth, colorize_error, colorize_normals, save_png
from mtl3d_perception.geometry import normals_from_depth, resize_intrinsics
from mtl3d_perception.runtime.products import STAGES, Products

MODES = ("multi_view", "single_view")
# Shown in the console table and at the top of report.md: (metrics key, label, format)
HEADLINE = (
    ("depth/abs_rel", "depth abs rel", "{:.3f}"),
    ("depth/rmse", "depth RMSE (m)", "{:.3f}"),
    ("depth/delta1", "depth delta1 (%)", "{:.1f}"),
    ("semantic/miou", "mIoU (%)", "{:.1f}"),
    ("normals/mean", "normals mean error (deg)", "{:.1f}"),
    ("temporal/abs_rel", "temporal consistency abs rel", "{:.3f}"),
    ("temporal/abs_err", "temporal consistency abs err (m)", "{:.3f}"),
)
MONTAGE_COLUMNS = ("RGB", "semantic", "semantic GT", "depth", "depth GT", "depth error", "normals", "normals GT")


@dataclass
class GroundTruth:
    """Ground truth of one frame at its own resolution; ``K`` belongs to that resolution."""

    K: np.ndarray
    depth: np.ndarray | None = None  # [H,W] float32 metres, NaN invalid
    semantic: np.ndarray | None = None  # [H,W] uint8, 255 ignore
    _normals: np.ndarray | None = None

    @property
    def hw(self) -> tuple[int, int]:
        ref = self.depth if self.depth is not None else self.semantic
        return ref.shape[:2]

    @property
    def normals(self) -> np.ndarray | None:
        """Normals from the GT depth (computed once, shared by both modes)."""
        if self._normals is None and self.depth is not None:
            self._normals = normals_from_depth(self.depth, self.K)
        return self._normals


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (keeps NaN, class ids and depth edges as they are)."""
    if a.shape[:2] == tuple(hw):
        return a
    return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


class ModeEvaluator:
    """Pooled and per-frame metrics of one pipeline mode (multi-view, or single-view for comparison)."""

    def __init__(self, num_classes: int, depth_max: float) -> None:
        self.depth_max = depth_max
        self.meters = {"depth": DepthMeter(), "semantic": SemanticMeter(num_classes), "normals": NormalsMeter(),
                       "temporal": CrossViewMeter()}
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.frames = 0
        self.single_view = 0
        self.pair_reasons: Counter[str] = Counter()
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # depth, K, pose

    def add(self, products: Products, pose: np.ndarray | None, gt: GroundTruth | None) -> dict[str, float]:
        """Account one frame's products; returns the frame's own metrics (``depth/abs_rel``, ``temporal/abs_rel``, ...)."""
        self.frames += 1
        self.single_view += int(products.single_view)
        self.pair_reasons[products.pair_reason] += 1
        for stage, seconds in products.timings.items():
            self.latency[stage].append(seconds * 1e3)
        frame: dict[str, float] = {}
        if gt is not None and products.depth is not None:
            frame.update(self._against_gt(products, gt))
        if pose is not None and products.depth is not None:
            frame.update(self._temporal(products, pose))
        return frame

    def _against_gt(self, products: Products, gt: GroundTruth) -> dict[str, float]:
        hw = gt.hw
        # NaN predictions (outside the depth head's range) count as the far end of the range, not as missing
        pred_depth = _resize(np.nan_to_num(products.depth, nan=self.depth_max), hw)
        out: dict[str, float] = {}
        if gt.depth is not None:
            pred_t, gt_t = torch.from_numpy(pred_depth)[None, None], torch.from_numpy(gt.depth)[None, None]
            one = DepthMeter()
            one.update(pred_t, gt_t)
            self.meters["depth"].sums += one.sums  # pooled = sum of the per-frame sums (no second pass)
            out.update(one.compute())
            if products.normals is not None:
                pred_n = _resize(products.normals, hw)
                gt_n = gt.normals.copy()
                gt_n[~np.isfinite(pred_n).all(-1)] = np.nan  # both must exist to compare
                self.meters["normals"].update(torch.from_numpy(pred_n).permute(2, 0, 1)[None],
                                              torch.from_numpy(gt_n).permute(2, 0, 1)[None])
        if gt.semantic is not None and products.labels is not None:
            pred_l = torch.from_numpy(_resize(products.labels, hw))[None]
            gt_l = torch.from_numpy(gt.semantic)[None]
            one = SemanticMeter(self.meters["semantic"].num_classes)
            one.update(pred_l, gt_l)
            self.meters["semantic"].confusion += one.confusion
            out.update(one.compute())
        return out

    def _temporal(self, products: Products, pose: np.ndarray) -> dict[str, float]:
        current = (products.depth, np.asarray(products.K, np.float64), np.asarray(pose, np.float64))
        previous, self._previous = self._previous, current
        if previous is None:
            return {}
        args = [torch.from_numpy(np.ascontiguousarray(a))[None] for a in (current[0], previous[0], current[1],
                                                                          previous[1], current[2], previous[2])]
        one = CrossViewMeter()
        one.update(*args)
        self.meters["temporal"].sums += one.sums
        return {k.replace("cross_view/", "temporal/"): v for k, v in one.compute().items()}

    def reset_temporal(self) -> None:
        """Forget the previous frame (time jumped back: the next frame has nothing earlier to agree with)."""
        self._previous = None

    def summary(self) -> dict[str, Any]:
        metrics: dict[str, float] = {}
        for name, meter in self.meters.items():
            values = meter.compute()
            if name == "temporal":
                values = {k.replace("cross_view/", "temporal/"): v for k, v in values.items()}
            metrics.update(values)
        latency = {
            stage: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "mean": float(np.mean(v))}
            for stage in STAGES if (v := self.latency.get(stage))
        }
        return {
            "metrics": metrics,
            "latency_ms": latency,
            "frames": self.frames,
            "single_view_frames": self.single_view,
            "single_view_rate": self.single_view / self.frames if self.frames else 0.0,
            "pair_reasons": dict(self.pair_reasons),
        }


# --------------------------------------------------------------------------------------------------
# Montage
# --------------------------------------------------------------------------------------------------


class MontageCollector:
    """Keeps a picture row for chosen frame indices: RGB, semantic, depth, depth error and normals, with GT."""

    def __init__(self, indices: list[int], depth_range: tuple[float, float], palette=NYU13_PALETTE) -> None:
        self.indices = set(indices)
        self.depth_range = depth_range
        self.palette = palette
        self.rows: list[np.ndarray] = []

    def wants(self, index: int) -> bool:
        return index in self.indices

    def add(self, rgb: np.ndarray, products: Products, gt: GroundTruth | None) -> None:
        W, H = products.size
        hw = (H, W)
        grey = np.full((H, W, 3), 96, np.uint8)
        gt_depth = None if gt is None or gt.depth is None else _resize(gt.depth, hw)
        cells = [cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)]
        cells.append(products.labels_color if products.labels_color is not None else grey)
        if gt is not None and gt.semantic is not None:
            cells.append(colorize_labels(_resize(gt.semantic, hw), palette=self.palette))
        else:
            cells.append(grey)
        cells.append(colorize_depth(products.depth, self.depth_range) if products.depth is not None else grey)
        cells.append(colorize_depth(gt_depth, self.depth_range) if gt_depth is not None else grey)
        if gt_depth is not None and products.depth is not None:
            cells.append(colorize_error(np.abs(products.depth - gt_depth), 0.1 * self.depth_range[1]))
        else:
            cells.append(grey)
        cells.append(colorize_normals(products.normals) if products.normals is not None else grey)
        gt_normals = None if gt is None else gt.normals
        cells.append(colorize_normals(_resize(gt_normals, hw)) if gt_normals is not None else grey)
        self.rows.append(np.concatenate(cells, axis=1))

    def image(self) -> np.ndarray | None:
        """The montage with a title row naming the columns, or None when no row was kept."""
        if not self.rows:
            return None
        body = np.concatenate(self.rows, axis=0)
        cell_w = body.shape[1] // len(MONTAGE_COLUMNS)
        title = np.full((18, body.shape[1], 3), 255, np.uint8)
        scale = min(0.45, cell_w / 230)
        for i, name in enumerate(MONTAGE_COLUMNS):
            cv2.putText(title, name, (i * cell_w + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        return np.concatenate([title, body], axis=0)


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
    """Per-frame depth abs rel (vs GT) and temporal consistency abs rel over bag time; single-view frames marked."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    t0 = records[0]["stamp_ns"] if records else 0
    for mode, style in zip(modes, ("-", "--")):
        for key, label, colour in (("depth/abs_rel", "depth abs rel vs GT", "C0"),
                                   ("temporal/abs_rel", "temporal abs rel", "C1")):
            pts = [((r["stamp_ns"] - t0) * 1e-9, r[mode][key]) for r in records if key in r.get(mode, {})]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, color=colour, marker=".", label=f"{label} ({mode.replace('_', '-')})")
    fallback = [(r["stamp_ns"] - t0) * 1e-9 for r in records if r["multi_view"].get("single_view_fallback")]
    if fallback:
        ax.plot(fallback, [0.0] * len(fallback), "x", color="red", label="single-view fallback")
    ax.set_xlabel("bag time (s)")
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


def _fmt(value: Any, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, int | float) and math.isfinite(value) else "—"


def metrics_table(summary: dict[str, Any]) -> list[str]:
    """Markdown table rows of the headline metrics, one column per mode that ran."""
    modes = [m for m in MODES if m in summary]
    rows = ["| metric | " + " | ".join(m.replace("_", "-") for m in modes) + " |",
            "|---|" + "---|" * len(modes)]
    for key, label, fmt in HEADLINE:
        values = [summary[m]["metrics"].get(key) for m in modes]
        if any(v is not None for v in values):
            rows.append(f"| {label} | " + " | ".join(_fmt(v, fmt) for v in values) + " |")
    rows.append("| single-view frames | " + " | ".join(
        f"{summary[m]['single_view_frames']}/{summary[m]['frames']}" for m in modes) + " |")
    rows.append("| latency total p50 / p95 (ms) | " + " | ".join(
        _fmt(summary[m]["latency_ms"].get("total", {}).get("p50"), "{:.1f}") + " / "
        + _fmt(summary[m]["latency_ms"].get("total", {}).get("p95"), "{:.1f}") for m in modes) + " |")
    return rows


def write_report(out_dir: Path, summary: dict[str, Any], records: list[dict[str, Any]],
                 montage: np.ndarray | None) -> dict[str, Path]:
    """Write metrics.json, report.md, the plots and the montage; returns name -> path of what was written."""
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    modes = tuple(m for m in MODES if m in summary)
    if records:
        paths["depth_error_plot"] = out_dir / "depth_error.png"
        plot_depth_error(paths["depth_error_plot"], records, modes)
        paths["latency_plot"] = out_dir / "latency.png"
        plot_latency(paths["latency_plot"], records)
    if montage is not None:
        paths["montage"] = out_dir / "montage.png"
        save_png(paths["montage"], montage)
    paths["metrics"] = out_dir / "metrics.json"
    paths["report"] = out_dir / "report.md"
    summary["files"] = {k: p.name for k, p in paths.items()} | {"output_bag": "output.mcap"}
    paths["metrics"].write_text(json.dumps({**summary, "per_frame": records}, indent=1, default=float) + "\n")
    paths["report"].write_text(_report_markdown(summary, modes))
    return paths


def _report_markdown(s: dict[str, Any], modes: tuple[str, ...]) -> str:
    c = s["counts"]
    lines = [f"# Replay of `{s['bag']}`", ""]
    if s.get("error"):
        lines += [f"**Stopped early: {s['error']}** Everything below covers the frames before that point.", ""]
    lines += [
        f"- model: {s['model']} (input {s['input_size'][0]}x{s['input_size'][1]}) on {s['device']}",
        f"- images: `{s['topics']['image']}` ({s['image_type']}), camera info `{s['topics']['camera_info']}`",
        f"- frames: {c['images']} images read, {c['processed']} processed, {c['dropped']} dropped"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(s['dropped_reasons'].items()))})" if s["dropped_reasons"] else ""),
        f"- ground truth: depth {'yes' if s['ground_truth']['depth'] else 'no'}, "
        f"semantic {'yes' if s['ground_truth']['semantic'] else 'no'}"
        + ("; normals are compared with normals computed from the GT depth" if s["ground_truth"]["depth"] else ""),
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
              "frame with the TF poses and compared with that frame's predicted depth (pixels seen by both).", ""]
    mv = s.get("multi_view", {})
    if mv.get("pair_reasons"):
        lines += ["Source-view choice (multi-view run): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(mv["pair_reasons"].items())), ""]
    lines += ["## Latency per stage (ms, multi-view run)", "", "| stage | p50 | p95 | mean |", "|---|---|---|---|"]
    for stage, v in mv.get("latency_ms", {}).items():
        lines.append(f"| {stage} | {v['p50']:.1f} | {v['p95']:.1f} | {v['mean']:.1f} |")
    if s["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in s["warnings"])]
    lines += ["", "## Files", "",
              "- `output.mcap`: the inputs, every output topic of the node "
              f"(`/{s['node_name']}/...`, `/diagnostics`) and TF — open it in Foxglove, or "
              "`ros2 bag play output.mcap` with RViz (`config/mtl3d.rviz`)",
              "- `metrics.json`: everything on this page plus per-frame values"]
    if "montage" in s["files"]:
        lines += ["- `montage.png`: " + ", ".join(MONTAGE_COLUMNS), "", "![montage](montage.png)"]
    if "depth_error_plot" in s["files"]:
        lines += ["", "![depth error over time](depth_error.png)", "", "![latency](latency.png)"]
    return "\n".join(lines) + "\n"


def gt_from_messages(K_image: np.ndarray, image_wh: tuple[int, int], depth: np.ndarray | None,
                     semantic: np.ndarray | None) -> GroundTruth | None:
    """GroundTruth for one frame; K is rescaled when the GT images are not at the colour image's size."""
    ref = depth if depth is not None else semantic
    if ref is None:
        return None
    H, W = ref.shape[:2]
    K = np.asarray(K_image, np.float64)
    if (W, H) != tuple(image_wh):
        K = resize_intrinsics(K, tuple(image_wh), (W, H))
    if depth is not None and semantic is not None and semantic.shape[:2] != (H, W):
        semantic = _resize(semantic, (H, W))
    return GroundTruth(K=K, depth=depth, semantic=semantic)
