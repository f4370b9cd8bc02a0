"""Dense-prediction metrics as dataset accumulators, plus the multi-task gain Δm.

Each meter has ``update(pred, label, valid)`` (torch tensors, any device; batch-first) and
``compute() -> dict[str, float]``. Sums are kept in float64 and pooled over every labelled pixel
of the dataset (the MTL benchmarks' convention), so the order of batches does not matter.

- semantic: mIoU over classes that occur in prediction or label, and pixel accuracy (percent);
- depth: abs err (m), abs rel, RMSE (m), RMSE log, delta1-3 (percent, thresholds 1.25^k);
- normals: mean and median angle (degrees) and percent within 11.25 / 22.5 / 30 degrees;
- boundary: odsF — the best F over a threshold sweep of dataset-pooled precision and recall, a
  pixel matching when the other map has a boundary within ``max_dist`` x image diagonal
  (SEISM's tolerance; matching by distance transform rather than SEISM's bipartite assignment and
  without thinning, so values are comparable within this project, not to published odsF);
- cross-view: how far apart the two views' predicted depths are after reprojection;
- real frames (issue 18, :class:`RealDepthMeter`): median-scaled abs rel (structure) and the median scale
  ratio (scale), abs rel by baseline bin, the confidence's sparsification curve and the confidence
  threshold of each of its points; normals against normals of
  the smoothed depth label (``geometry.smoothed_depth_normals``); the cost volume's own read-out (``geometric/``);
- :func:`delta_m`: Δm = mean_i (-1)^{l_i} (M_i - M_b,i) / M_b,i x 100 (Maninis et al., CVPR'19).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy import ndimage

from mtl3d_perception import geometry
from mtl3d_perception.classes import IGNORE_INDEX

# Metric name -> True when higher is better (for Δm and reports).
HIGHER_IS_BETTER: dict[str, bool] = {
    "semantic/miou": True, "semantic/pixel_acc": True,
    "depth/abs_err": False, "depth/abs_rel": False, "depth/rmse": False, "depth/rmse_log": False,
    "depth/delta1": True, "depth/delta2": True, "depth/delta3": True,
    "normals/mean": False, "normals/median": False,
    "normals/within_11.25": True, "normals/within_22.5": True, "normals/within_30": True,
    "boundary/odsF": True,
    "cross_view/abs_rel": False, "cross_view/abs_err": False,
    "depth/abs_rel_median_scaled": False, "normals_smoothed/mean": False, "normals_smoothed/median": False,
    "geometric/abs_rel": False,
}
# The headline metric of each task (the paper's: mIoU, RMSE, mean angle, odsF) used by Δm by default.
HEADLINE: tuple[str, ...] = ("semantic/miou", "depth/rmse", "normals/mean", "boundary/odsF")


def _valid_images(valid: torch.Tensor | None, n: int, device) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool, device=device) if valid is None else valid.to(device).bool()


class SemanticMeter:
    """Confusion matrix over labelled pixels. pred: logits ``[N,K,H,W]`` or ids ``[N,H,W]``."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)

    def update(self, pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        ids = pred.argmax(1) if pred.dim() == label.dim() + 1 else pred
        keep = (label != IGNORE_INDEX) & (label >= 0) & (label < self.num_classes)
        keep &= _valid_images(valid, label.shape[0], label.device).view(-1, *([1] * (label.dim() - 1)))
        k = self.num_classes
        ids = ids[keep].long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
            # label * k + id would silently count it in another (label, prediction) cell
            msg = f"predicted class ids must be in [0, {k}), got {int(ids.min())}..{int(ids.max())}"
            raise ValueError(msg)
        idx = label[keep].long() * k + ids
        self.confusion += torch.bincount(idx.cpu(), minlength=k * k).view(k, k).double()

    def compute(self) -> dict[str, float]:
        c = self.confusion
        total = c.sum()
        if total == 0:
            return {}
        tp = c.diag()
        union = c.sum(0) + c.sum(1) - tp
        present = union > 0
        iou = tp[present] / union[present]
        return {"semantic/miou": 100.0 * float(iou.mean()), "semantic/pixel_acc": 100.0 * float(tp.sum() / total)}

    def merge(self, other: SemanticMeter) -> SemanticMeter:
        """Pool ``other``'s pixels into this meter (e.g. per-frame meters into a run's); returns self."""
        self.confusion += other.confusion
        return self


class DepthMeter:
    """Depth errors over pixels with a finite label > 0. pred, label ``[N,1,H,W]`` (or ``[N,H,W]``) metres."""

    def __init__(self, min_depth: float = 1e-3) -> None:
        self.min_depth = min_depth
        self.sums = torch.zeros(8, dtype=torch.float64)  # n, |e|, |e|/gt, e^2, elog^2, d1, d2, d3

    def update(self, pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        mask = torch.isfinite(label) & (label > 0)
        mask &= _valid_images(valid, label.shape[0], label.device).view(-1, *([1] * (label.dim() - 1)))
        p = pred.detach().double()[mask].clamp_min(self.min_depth)
        g = label.double()[mask]
        if g.numel() == 0:
            return
        err = p - g
        ratio = torch.maximum(p / g, g / p)
        self.sums += torch.stack([
            torch.tensor(float(g.numel()), dtype=torch.float64, device=g.device), err.abs().sum(),
            (err.abs() / g).sum(), (err * err).sum(), ((p.log() - g.log()) ** 2).sum(),
            (ratio < 1.25).sum().double(), (ratio < 1.25 ** 2).sum().double(), (ratio < 1.25 ** 3).sum().double(),
        ]).cpu()

    def compute(self) -> dict[str, float]:
        n = float(self.sums[0])
        if n == 0:
            return {}
        s = (self.sums / n).tolist()
        return {
            "depth/abs_err": s[1], "depth/abs_rel": s[2], "depth/rmse": math.sqrt(s[3]),
            "depth/rmse_log": math.sqrt(s[4]), "depth/delta1": 100 * s[5], "depth/delta2": 100 * s[6],
            "depth/delta3": 100 * s[7],
        }

    def merge(self, other: DepthMeter) -> DepthMeter:
        """Pool ``other``'s pixels into this meter; returns self."""
        self.sums += other.sums
        return self


class NormalsMeter:
    """Angular error (degrees) over pixels with a finite label; the median comes from a 0.01° histogram."""

    BIN = 0.01

    def __init__(self) -> None:
        self.hist = torch.zeros(int(round(180 / self.BIN)) + 1, dtype=torch.float64)
        self.sum = 0.0

    def update(self, pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """pred, label ``[N,3,H,W]``."""
        mask = torch.isfinite(label).all(1) & _valid_images(valid, label.shape[0], label.device).view(-1, 1, 1)
        p = torch.nn.functional.normalize(pred.detach().double(), dim=1).permute(0, 2, 3, 1)[mask]
        g = torch.nn.functional.normalize(label.double(), dim=1).permute(0, 2, 3, 1)[mask]
        if g.numel() == 0:
            return
        angle = torch.rad2deg(torch.acos((p * g).sum(-1).clamp(-1.0, 1.0)))
        self.sum += float(angle.sum())
        bins = torch.round(angle / self.BIN).long().clamp(0, self.hist.numel() - 1)
        self.hist += torch.bincount(bins.cpu(), minlength=self.hist.numel()).double()

    def compute(self) -> dict[str, float]:
        n = float(self.hist.sum())
        if n == 0:
            return {}
        cdf = torch.cumsum(self.hist, 0)
        median = float(torch.searchsorted(cdf, torch.tensor(n / 2, dtype=torch.float64))) * self.BIN

        def within(deg: float) -> float:
            return 100.0 * float(self.hist[: int(round(deg / self.BIN)) + 1].sum()) / n
        return {"normals/mean": self.sum / n, "normals/median": median, "normals/within_11.25": within(11.25),
                "normals/within_22.5": within(22.5), "normals/within_30": within(30.0)}

    def merge(self, other: NormalsMeter) -> NormalsMeter:
        """Pool ``other``'s pixels into this meter; returns self."""
        self.hist += other.hist
        self.sum += other.sum
        return self


class BoundaryMeter:
    """odsF over a threshold sweep. pred: logits or probabilities ``[N,1,H,W]``; label {0,1}, NaN invalid.

    Args:
        thresholds: probability thresholds swept (default 0.02..0.98, 49 values).
        max_dist: matching tolerance as a fraction of the image diagonal (SEISM: 0.011 on NYUD).
        logits: whether ``pred`` are logits (sigmoid applied) or probabilities.
    """

    def __init__(self, thresholds: np.ndarray | None = None, max_dist: float = 0.011, logits: bool = True) -> None:
        self.thresholds = np.linspace(0.02, 0.98, 49) if thresholds is None else np.asarray(thresholds)
        self.max_dist = max_dist
        self.logits = logits
        # per threshold: predicted positives matched, predicted positives, labelled positives matched, labelled positives
        self.counts = np.zeros((len(self.thresholds), 4), np.float64)

    def update(self, pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        prob = torch.sigmoid(pred.detach().float()) if self.logits else pred.detach().float()
        prob = prob.reshape(label.shape[0], *label.shape[-2:]).cpu().numpy()
        lab = label.reshape(label.shape[0], *label.shape[-2:]).cpu().numpy()
        ok = _valid_images(valid, label.shape[0], "cpu").numpy()
        for p, g, v in zip(prob, lab, ok):
            known = np.isfinite(g)
            if not v or not known.any():
                continue
            tol = self.max_dist * math.hypot(*g.shape)
            gt = (g > 0.5) & known
            # Distance of every pixel to the nearest labelled boundary (inf when there is none).
            d_gt = ndimage.distance_transform_edt(~gt) if gt.any() else np.full(g.shape, np.inf)
            for i, t in enumerate(self.thresholds):
                pb = (p >= t) & known
                d_pred = ndimage.distance_transform_edt(~pb) if pb.any() else np.full(g.shape, np.inf)
                self.counts[i] += (np.count_nonzero(pb & (d_gt <= tol)), np.count_nonzero(pb),
                                   np.count_nonzero(gt & (d_pred <= tol)), np.count_nonzero(gt))

    def compute(self) -> dict[str, float]:
        if self.counts[:, 3].max(initial=0) == 0:
            return {}
        mp, np_, mg, ng = self.counts.T
        precision = np.divide(mp, np_, out=np.zeros_like(mp), where=np_ > 0)
        recall = np.divide(mg, ng, out=np.zeros_like(mg), where=ng > 0)
        f = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(mp),
                      where=(precision + recall) > 0)
        best = int(np.argmax(f))
        return {"boundary/odsF": 100.0 * float(f[best]), "boundary/ods_threshold": float(self.thresholds[best])}

    def merge(self, other: BoundaryMeter) -> BoundaryMeter:
        """Pool ``other``'s images into this meter (same thresholds); returns self."""
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError("BoundaryMeter.merge: the meters sweep different thresholds")
        self.counts += other.counts
        return self


class CrossViewMeter:
    """Disagreement of two views' predicted depths after reprojection (:func:`geometry.depth_in_other_view`, through
    :func:`geometry.backward_warp`, the warp of the cross-view loss).

    For each pixel of view 0 seen by view 1: its z in view 1 versus view 1's predicted depth there (bilinear, not
    across a depth edge). ``abs_err`` is the mean ``|dz|`` in metres, ``abs_rel`` the mean ``|dz| / z_b``.
    """

    def __init__(self) -> None:
        self.sums = np.zeros(3, np.float64)  # n, |dz|, |dz| / z_b

    def update(self, depth_a: torch.Tensor, depth_b: torch.Tensor, K_a: torch.Tensor, K_b: torch.Tensor,
               T_world_a: torch.Tensor, T_world_b: torch.Tensor) -> None:
        """depth_* ``[N,1,H,W]`` (or ``[N,H,W]``) metres; K_* ``[N,3,3]``; T_world_* ``[N,4,4]``."""
        # float64 on the CPU: pixel coordinates and depth differences far below the errors measured
        da, db, K_a, K_b, T_world_a, T_world_b = (x.detach().cpu().double() for x in
                                                  (depth_a, depth_b, K_a, K_b, T_world_a, T_world_b))
        da = da.reshape(da.shape[0], *da.shape[-2:])
        db = db.reshape(db.shape[0], *db.shape[-2:])
        T_b_a = geometry.relative_pose(T_world_b, T_world_a)
        z_pred, z_b = geometry.depth_in_other_view(da, K_a, T_b_a, db, K_b)
        ok = torch.isfinite(z_pred)
        dz = (z_pred - z_b)[ok].abs()
        self.sums += (float(ok.sum()), float(dz.sum()), float((dz / z_b[ok]).sum()))

    def compute(self) -> dict[str, float]:
        n = self.sums[0]
        if n == 0:
            return {}
        return {"cross_view/abs_err": float(self.sums[1] / n), "cross_view/abs_rel": float(self.sums[2] / n)}

    def merge(self, other: CrossViewMeter) -> CrossViewMeter:
        """Pool ``other``'s pixels into this meter; returns self."""
        self.sums += other.sums
        return self


def format_metric(value: float | None, fmt: str = "{:.4f}") -> str:
    """A metric for a report or the console: ``fmt`` applied, or ``n/a`` for a missing or non-finite value (a curve
    that does not exist, a mode that did not run)."""
    return fmt.format(value) if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def sparsification_rows(metrics: dict[str, float], prefix: str = "depth") -> list[dict[str, float]]:
    """The sparsification curve in ``metrics`` (``RealDepthMeter`` keys) as rows, all pixels first: ``fraction``
    (of pixels kept, most confident first), ``abs_rel`` (theirs), ``ratio`` (to all pixels' abs rel),
    ``confidence_min`` (the threshold at the fraction's least confident pixel) and what that threshold keeps when
    applied, ``threshold_kept`` (fraction) and ``threshold_abs_rel``: more than ``fraction`` where pixels tie at it
    (:func:`threshold_keeps`; NaN for metrics from before those keys). Empty when there is no curve (no GT depth, no
    confidence, or one that ranks no pixel: NaN keys)."""
    rows = []
    for f in sorted(SPARSIFICATION_FRACTIONS, reverse=True):
        x = int(round(f * 100))
        if math.isfinite(metrics.get(f"{prefix}/abs_rel_conf_top{x}", math.nan)):
            rows.append({"fraction": f, "confidence_min": metrics[f"{prefix}/conf_threshold_top{x}"],
                         "abs_rel": metrics[f"{prefix}/abs_rel_conf_top{x}"],
                         "threshold_kept": metrics.get(f"{prefix}/conf_threshold_kept_top{x}", math.nan),
                         "threshold_abs_rel": metrics.get(f"{prefix}/abs_rel_conf_threshold_top{x}", math.nan)})
    for row in rows:
        row["ratio"] = row["abs_rel"] / max(rows[0]["abs_rel"], 1e-12)
    return rows


# What the sparsification table says, for the reports of replay and mtl3d eval (one wording)
SPARSIFICATION_TEXT = (
    "The depth abs rel of the most-confident x % of pixels: when the confidence predicts the error it falls as x "
    "shrinks. To keep only depth you can trust, pick a row whose abs rel you accept and drop the pixels below its "
    "confidence threshold; `keeps` and `abs rel kept` are what that threshold gives (more than x % where many pixels "
    "share the threshold's value, e.g. a confidence of exactly 0 where nothing was matched).")


def sparsification_table(rows: list[dict[str, float]]) -> list[str]:
    """Markdown rows of the sparsification curve: kept fraction, abs rel, ratio to all, then the confidence threshold
    with what applying it keeps and their abs rel (more than the fraction where pixels tie at the threshold)."""
    lines = ["| most-confident pixels | depth abs rel | / all pixels | confidence >= | keeps | abs rel kept |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {100 * r['fraction']:.0f} % | {r['abs_rel']:.3f} | {r['ratio']:.2f} | {r['confidence_min']:.3f} | "
              f"{format_metric(100 * r.get('threshold_kept', math.nan), '{:.0f} %')} | "
              f"{format_metric(r.get('threshold_abs_rel', math.nan), '{:.3f}')} |" for r in rows]
    return lines


def delta_m(metrics: dict[str, float], baseline: dict[str, float], keys: tuple[str, ...] | None = None) -> float:
    """Multi-task gain Δm (percent) of ``metrics`` over ``baseline`` on ``keys`` (default: HEADLINE keys
    present in both). Lower-is-better metrics count with a minus sign.
    """
    keys = tuple(k for k in (keys or HEADLINE) if k in metrics and k in baseline)
    if not keys:
        raise ValueError("delta_m: no metric present in both the result and the baseline")
    gains = []
    for k in keys:
        if k not in HIGHER_IS_BETTER:
            msg = f"delta_m: unknown direction for metric {k!r}"
            raise ValueError(msg)
        sign = 1.0 if HIGHER_IS_BETTER[k] else -1.0
        gains.append(sign * (metrics[k] - baseline[k]) / baseline[k])
    return 100.0 * float(np.mean(gains))


BASELINE_BINS_M: tuple[float, ...] = (0.001, 0.05, 0.10, 0.20, 0.40)  # edges; below the first: single view
SPARSIFICATION_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
# A confidence in [0, 1] spanning less than this ranks no pixel: float32 rounding of an entropy over D depth
# candidates is ~D x 1.2e-7, far below it, and a confidence that means anything spans far more.
CONFIDENCE_RESOLUTION = 1e-4


def baseline_bin(baseline_m: float, two_view: bool | None = None) -> str:
    """The name of the baseline bin of a pair ``baseline_m`` metres apart: ``single``, ``<0.05m``, ``0.05-0.10m``, ...,
    ``>=0.40m``. ``single`` is a frame without a source; by default any pair under 1 mm counts as one, with
    ``two_view`` given a two-view pair with no translation (a camera standing still or turning in place) is
    ``<0.05m`` and a frame without a source ``single`` whatever its baseline."""
    edges = BASELINE_BINS_M
    if two_view is False or (baseline_m < edges[0] and two_view is None):
        return "single"
    for lo, hi in itertools.pairwise(edges):
        if baseline_m < hi:
            return f"{lo:.2f}-{hi:.2f}m" if lo >= 0.01 else f"<{hi:.2f}m"
    return f">={edges[-1]:.2f}m"


def baseline_bin_names() -> list[str]:
    """Every :func:`baseline_bin` name, from ``single`` up to the widest (the order a report lists them in)."""
    return ["single", *(baseline_bin(hi - 1e-9, True) for hi in BASELINE_BINS_M[1:]),
            baseline_bin(BASELINE_BINS_M[-1], True)]


def confidence_ranks(confidence: np.ndarray) -> bool:
    """Whether ``confidence`` (any shape, values in [0, 1]) orders pixels at all: False when its values span less
    than :data:`CONFIDENCE_RESOLUTION`, i.e. one value everywhere up to float rounding (single-view mode: the flat
    cost volume's 1 - entropy / log D is 0 to about 1e-7), where any "most confident" subset is an arbitrary one."""
    c = np.asarray(confidence)
    return c.size > 1 and bool(c.max() - c.min() >= CONFIDENCE_RESOLUTION)


def sparsification(abs_rel: np.ndarray, confidence: np.ndarray,
                   fractions: tuple[float, ...] = SPARSIFICATION_FRACTIONS) -> dict[float, float]:
    """Mean abs rel of the most-confident ``fraction`` of pixels, for each fraction (the sparsification curve
    of Ilg et al., ECCV'18: falling with the fraction removed when the confidence predicts the error).

    ``abs_rel`` and ``confidence`` are matching 1-D arrays over pixels. Pixels tied at a fraction's cut count with
    their mean abs rel (the expectation over the order of ties), so no value depends on the order pixels came in.
    A confidence that ranks no pixel (:func:`confidence_ranks`) has no curve: NaN at every fraction.

    Raises:
        ValueError: arrays that are not matching 1-D ones.
    """
    if abs_rel.shape != confidence.shape or abs_rel.ndim != 1:
        msg = f"abs_rel and confidence must be matching 1-D arrays, got {abs_rel.shape} and {confidence.shape}"
        raise ValueError(msg)
    if not confidence_ranks(confidence):
        return dict.fromkeys(fractions, float("nan"))
    order = np.argsort(-confidence, kind="stable")
    lower = -confidence[order]  # ascending: searchsorted finds each run of ties
    cum = np.concatenate([[0.0], np.cumsum(abs_rel[order], dtype=np.float64)])
    out = {}
    for f in fractions:
        k = _top_count(f, len(order))
        lo, hi = np.searchsorted(lower, lower[k - 1], "left"), np.searchsorted(lower, lower[k - 1], "right")
        out[f] = float((cum[lo] + (k - lo) * (cum[hi] - cum[lo]) / (hi - lo)) / k)
    return out


def confidence_thresholds(confidence: np.ndarray,
                          fractions: tuple[float, ...] = SPARSIFICATION_FRACTIONS) -> dict[float, float]:
    """For each fraction, the confidence of the least confident pixel among the most-confident ``fraction`` of
    ``confidence`` (1-D): keeping the pixels with confidence >= this value keeps that fraction (more where pixels
    tie at it), so each point of :func:`sparsification` comes with the threshold that gives it. NaN at every
    fraction where the confidence ranks no pixel (:func:`confidence_ranks`), as the curve.
    """
    if not confidence_ranks(confidence):
        return dict.fromkeys(fractions, float("nan"))
    ranked = np.sort(np.asarray(confidence).ravel())[::-1]
    return {f: float(ranked[_top_count(f, len(ranked)) - 1]) for f in fractions}


def threshold_keeps(abs_rel: np.ndarray, confidence: np.ndarray,
                    thresholds: dict[float, float]) -> dict[float, tuple[float, float]]:
    """What keeping the pixels with ``confidence >= threshold`` gives, for each of :func:`confidence_thresholds`'
    thresholds: ``(fraction kept, their mean abs rel)``. Where many pixels tie at a threshold (a confidence of
    exactly 0 on unmatched pixels) it keeps more than its fraction and their abs rel differs from the curve's point
    (a replay trial: the 90 % row's threshold 0.000 kept 100 %, abs rel 0.083 against the row's 0.080), so reports
    give both. NaN pairs where a threshold is NaN.
    """
    out = {}
    for f, t in thresholds.items():
        keep = confidence >= t if math.isfinite(t) else np.zeros(confidence.shape, bool)
        out[f] = ((float(keep.mean()), float(abs_rel[keep].mean(dtype=np.float64))) if keep.any() else
                  (float("nan"), float("nan")))
    return out


def _top_count(fraction: float, n: int) -> int:
    """How many of ``n`` pixels the most-confident ``fraction`` holds (at least one)."""
    return max(1, int(round(fraction * n)))


class RealDepthMeter:
    """The real-frame depth report of issue 18: structure vs scale, abs rel by baseline, confidence.

    Per image: the scale ratio ``median(pred / gt)`` and the abs rel after scaling the prediction by
    ``median(gt) / median(pred)`` (structure only, Eigen et al.'s median scaling); pooled over pixels like
    ``DepthMeter``. Abs rel by the pair's baseline bin (:func:`baseline_bin`), with the number of frames in each
    bin (``frames_baseline_*``: a bin of one frame says little) and the median baseline of the frames with a
    source. With a confidence map, the sparsification curve (:func:`sparsification`) over the two-view frames (as
    replay's; ``two_view`` None: every frame), the confidence threshold of each of its points
    (:func:`confidence_thresholds`) and the ratio of the 50 % most-confident pixels' abs rel to all pixels'; all
    NaN where the confidence ranks no pixel (one value everywhere, as in single-view mode) or no frame had a source;
    ``confidence_mean`` over the frames the curve ranks (every frame where none had a source).

    The curve's pixels are kept in memory (8 bytes each); past ``max_pixels`` every other one is dropped, and
    so on (a systematic sample of every pixel seen), so long sequences (replay at the ground truth's
    resolution) stay bounded. Below ``max_pixels`` the curve is exact.
    """

    def __init__(self, prefix: str = "depth", max_pixels: int = 1 << 23) -> None:
        self.prefix = prefix
        self.max_pixels = max_pixels
        self._stride = 1  # every _stride-th pixel of the curve is kept
        self._kept = 0
        self.ratios: list[float] = []
        self.scaled = np.zeros(2, np.float64)  # n, sum |s p - g| / g
        self.bins: dict[str, np.ndarray] = {}  # name -> (pixels, sum of abs rel, frames)
        self.baselines: list[float] = []  # metres, each frame with a source
        self.errors: list[np.ndarray] = []  # the curve's pixels: two-view frames only
        self.confidences: list[np.ndarray] = []
        self.confidence_sum = np.zeros((2, 2), np.float64)  # [two-view, single-view] x (n, sum) over valid pixels

    def update(self, pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None = None,
               baseline_m: torch.Tensor | None = None, confidence: torch.Tensor | None = None,
               two_view: torch.Tensor | None = None) -> None:
        """pred, label ``[N,1,H,W]`` metres; valid ``[N]``; baseline_m ``[N]`` metres; confidence ``[N,1,H,W]``;
        two_view ``[N]`` bool: the frame had a source (None: judged by ``baseline_m``, see :func:`baseline_bin`)."""
        p_all = pred.detach().double().reshape(pred.shape[0], -1).cpu()
        g_all = label.double().reshape(label.shape[0], -1).cpu()
        ok_img = _valid_images(valid, label.shape[0], "cpu")
        c_all = None if confidence is None else confidence.detach().float().reshape(confidence.shape[0], -1).cpu()
        for i in range(p_all.shape[0]):
            mask = torch.isfinite(g_all[i]) & (g_all[i] > 0) & torch.isfinite(p_all[i]) & (p_all[i] > 0)
            if not ok_img[i] or not mask.any():
                continue
            p, g = p_all[i][mask], g_all[i][mask]
            rel = ((p - g).abs() / g).numpy()
            self.ratios.append(float((p / g).median()))
            s = float(g.median() / p.median())
            self.scaled += (g.numel(), float(((s * p - g).abs() / g).sum()))
            if baseline_m is not None:
                name = baseline_bin(float(baseline_m[i]), None if two_view is None else bool(two_view[i]))
                self.bins.setdefault(name, np.zeros(3, np.float64))
                self.bins[name] += (len(rel), rel.sum(), 1)
                if name != "single":
                    self.baselines.append(float(baseline_m[i]))
            # the curve ranks two-view frames, as replay's: a frame without a source (the first of a range, a
            # single-view mode) has the flat volume's ~0 everywhere and would only add its error at the bottom
            has_source = two_view is None or bool(two_view[i])
            if c_all is not None:
                self.confidence_sum[0 if has_source else 1] += (int(mask.sum()), float(c_all[i][mask].double().sum()))
            if c_all is not None and has_source:
                # copies, never views: a strided view keeps its whole base alive (a frame's every masked pixel, and
                # for the confidence a torch tensor), so the sample would grow with the sequence (a soak trial:
                # replay's memory rose ~0.6 MB per 540x360 frame without end)
                self.errors.append(np.array(rel[::self._stride], np.float32))
                self.confidences.append(np.array(c_all[i][mask].numpy()[::self._stride], np.float32))
                self._kept += len(self.errors[-1])
                while self._kept > self.max_pixels:
                    self._stride *= 2
                    self.errors = [e[::2].copy() for e in self.errors]
                    self.confidences = [c[::2].copy() for c in self.confidences]
                    self._kept = sum(len(e) for e in self.errors)

    def compute(self) -> dict[str, float]:
        if not self.ratios:
            return {}
        k = self.prefix
        out = {f"{k}/abs_rel_median_scaled": float(self.scaled[1] / self.scaled[0]),
               f"{k}/scale_ratio_median": float(np.median(self.ratios))}
        for name, (n, total, frames) in self.bins.items():
            out[f"{k}/abs_rel_baseline_{name}"] = float(total / n)
            out[f"{k}/frames_baseline_{name}"] = float(frames)
        if self.baselines:  # the parallax the two-view frames had
            out[f"{k}/baseline_median_m"] = float(np.median(self.baselines))
        if self.confidence_sum[:, 0].any():
            err = np.concatenate(self.errors) if self.errors else np.zeros(0, np.float32)
            conf = np.concatenate(self.confidences) if self.confidences else np.zeros(0, np.float32)
            curve = sparsification(err, conf)
            thresholds = confidence_thresholds(conf)
            keeps = threshold_keeps(err, conf, thresholds)
            for f, v in curve.items():
                x = int(round(f * 100))
                out[f"{k}/abs_rel_conf_top{x}"] = v
                out[f"{k}/conf_threshold_top{x}"] = thresholds[f]
                out[f"{k}/conf_threshold_kept_top{x}"], out[f"{k}/abs_rel_conf_threshold_top{x}"] = keeps[f]
            out[f"{k}/conf_top50_ratio"] = curve[0.5] / max(curve[1.0], 1e-12)
            n, total = self.confidence_sum[0] if self.confidence_sum[0, 0] else self.confidence_sum[1]
            out[f"{k}/confidence_mean"] = float(total / n)
        return out


class MultiTaskMeter:
    """All task meters together. ``update(outputs, batch)`` takes reference-view outputs (``[B,...]``)."""

    def __init__(self, num_classes: int, *, boundary_max_dist: float = 0.011,
                 boundary_thresholds: np.ndarray | None = None) -> None:
        self.semantic = SemanticMeter(num_classes)
        self.depth = DepthMeter()
        self.normals = NormalsMeter()
        self.boundary = BoundaryMeter(boundary_thresholds, boundary_max_dist)
        self.cross_view = CrossViewMeter()
        self.real = RealDepthMeter("depth")
        self.normals_smoothed = NormalsMeter()  # against normals of the smoothed depth label
        self.geometric = DepthMeter()  # the cost volume's own read-out ("depth_geometric")
        self.geometric_real = RealDepthMeter("geometric")

    def update(self, outputs: dict[str, torch.Tensor], batch, baseline_m: torch.Tensor | None = None,
               two_view: torch.Tensor | None = None) -> None:
        """``outputs`` for the reference view; labels are taken from view 0 of ``batch``.

        ``baseline_m`` [B]: the distance between the reference and source cameras of each sample (0 in
        single-view mode); default: from ``batch.poses`` (views 0 and 1), 0 for a one-view batch. ``two_view`` [B]
        bool: whether each sample had a source (None: judged by the baseline, ``baseline_bin``).
        """
        if baseline_m is None:
            baseline_m = (batch.poses[:, 1, :3, 3] - batch.poses[:, 0, :3, 3]).norm(dim=-1) if batch.poses.shape[1] > 1 \
                else torch.zeros(batch.poses.shape[0])
        if "semantic" in outputs:
            self.semantic.update(outputs["semantic"], batch.semantic[:, 0], batch.valid["semantic"][:, 0])
        if "depth" in outputs:
            valid = batch.valid["depth"][:, 0]
            self.depth.update(outputs["depth"], batch.depth[:, 0], valid)
            self.real.update(outputs["depth"], batch.depth[:, 0], valid, baseline_m, outputs.get("depth_confidence"),
                             two_view)
            if "depth_geometric" in outputs:
                self.geometric.update(outputs["depth_geometric"], batch.depth[:, 0], valid)
                self.geometric_real.update(outputs["depth_geometric"], batch.depth[:, 0], valid, baseline_m,
                                           outputs.get("depth_matching_confidence"), two_view)
            if "normals" in outputs and valid.any():
                self.normals_smoothed.update(outputs["normals"], geometry.smoothed_depth_normals(batch.depth[:, 0], batch.K[:, 0]),
                                             valid)
        if "normals" in outputs:
            self.normals.update(outputs["normals"], batch.normals[:, 0], batch.valid["normals"][:, 0])
        if "boundary" in outputs:
            self.boundary.update(outputs["boundary"], batch.boundary[:, 0], batch.valid["boundary"][:, 0])

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for meter in (self.semantic, self.depth, self.normals, self.boundary, self.cross_view, self.real,
                      self.geometric_real):
            out.update(meter.compute())
        out.update({k.replace("normals/", "normals_smoothed/", 1): v for k, v in self.normals_smoothed.compute().items()})
        out.update({k.replace("depth/", "geometric/", 1): v for k, v in self.geometric.compute().items()})
        return out
