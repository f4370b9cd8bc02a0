"""Real-frame depth report (issue 18): structure vs scale, baseline bins, confidence sparsification; the losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mtl3d_perception import geometry
from mtl3d_perception.evaluation.metrics import (
    SPARSIFICATION_FRACTIONS,
    RealDepthMeter,
    baseline_bin,
    baseline_bin_names,
    confidence_thresholds,
    sparsification,
    sparsification_rows,
    sparsification_table,
    threshold_keeps,
)
from mtl3d_perception.train.depth_distribution import cell_inverse_depth, soft_target
from mtl3d_perception.train.losses import depth_scale_aware_loss


def test_median_scaling_separates_structure_from_scale():
    gt = torch.rand(2, 1, 6, 8) * 3 + 1
    meter = RealDepthMeter()
    meter.update(gt * 1.25, gt, torch.tensor([True, True]))  # right structure, 25 % too far
    r = meter.compute()
    assert r["depth/abs_rel_median_scaled"] == pytest.approx(0.0, abs=1e-6)  # float32 input
    assert r["depth/scale_ratio_median"] == pytest.approx(1.25)


def test_abs_rel_by_baseline_bin():
    gt = torch.full((3, 1, 2, 2), 2.0)
    pred = torch.stack([torch.full((1, 2, 2), v) for v in (2.2, 2.4, 2.0)])
    meter = RealDepthMeter()
    meter.update(pred, gt, None, torch.tensor([0.0, 0.07, 0.5]))
    r = meter.compute()
    assert r["depth/abs_rel_baseline_single"] == pytest.approx(0.1)
    assert r["depth/abs_rel_baseline_0.05-0.10m"] == pytest.approx(0.2)
    assert r["depth/abs_rel_baseline_>=0.40m"] == pytest.approx(0.0)
    # how many frames each bin holds, and the median parallax of the frames with a source (0.07 and 0.5 m)
    assert (r["depth/frames_baseline_single"], r["depth/frames_baseline_0.05-0.10m"]) == (1, 1)
    assert r["depth/baseline_median_m"] == pytest.approx(0.285)
    # a two-view pair without translation (standing still, turning in place) is not "single": a source was used
    meter = RealDepthMeter()
    meter.update(pred, gt, None, torch.tensor([0.0, 0.0, 0.5]), two_view=torch.tensor([False, True, True]))
    r = meter.compute()
    assert (r["depth/frames_baseline_single"], r["depth/frames_baseline_<0.05m"]) == (1, 1)
    assert r["depth/baseline_median_m"] == pytest.approx(0.25)
    assert baseline_bin_names() == ["single", "<0.05m", "0.05-0.10m", "0.10-0.20m", "0.20-0.40m", ">=0.40m"]
    assert [baseline_bin(b) for b in (0.0, 0.02, 0.15, 0.3)] == ["single", "<0.05m", "0.10-0.20m", "0.20-0.40m"]


def test_sparsification_of_a_confidence_that_predicts_the_error():
    err = np.array([0.4, 0.1, 0.3, 0.2])
    conf = np.array([0.1, 0.9, 0.2, 0.8])
    curve = sparsification(err, conf, (0.25, 0.5, 1.0))
    assert curve == pytest.approx({0.25: 0.1, 0.5: 0.15, 1.0: 0.25})
    meter = RealDepthMeter()
    gt = torch.ones(1, 1, 1, 4)
    meter.update(torch.tensor(1.0 + err, dtype=torch.float32).view(1, 1, 1, 4), gt, None, None,
                 torch.tensor(conf, dtype=torch.float32).view(1, 1, 1, 4))
    r = meter.compute()
    assert r["depth/abs_rel_conf_top50"] == pytest.approx(0.15, rel=1e-5)
    assert r["depth/conf_top50_ratio"] == pytest.approx(0.6, rel=1e-5)
    # the threshold that keeps each fraction: the 2 most confident of 4 are those >= 0.8
    assert confidence_thresholds(conf, (0.25, 0.5, 1.0)) == pytest.approx({0.25: 0.9, 0.5: 0.8, 1.0: 0.1})
    assert r["depth/conf_threshold_top50"] == pytest.approx(0.8) and r["depth/conf_threshold_top100"] == pytest.approx(0.1)
    assert (conf.astype(np.float32) >= r["depth/conf_threshold_top50"]).mean() == 0.5  # as a 32FC1 image holds it


def test_the_two_view_curve_leaves_out_frames_without_a_source():
    """A user trial: `mtl3d eval`'s two-view curve counted the range's first frame (no earlier frame: single view,
    confidence ~0) where replay's left it out, so the two reports' 100 % rows and thresholds differed."""
    err = np.array([0.4, 0.1, 0.3, 0.2])
    conf = torch.tensor([0.1, 0.9, 0.2, 0.8]).view(1, 1, 1, 4)
    pred = torch.stack([torch.tensor(1.0 + err, dtype=torch.float32).view(1, 1, 4), torch.full((1, 1, 4), 2.0)])
    meter = RealDepthMeter()
    meter.update(pred, torch.ones(2, 1, 1, 4), None, torch.tensor([0.2, 0.0]),
                 torch.cat([conf, torch.zeros_like(conf)]), two_view=torch.tensor([True, False]))
    r = meter.compute()
    assert r["depth/abs_rel_conf_top100"] == pytest.approx(0.25, rel=1e-5)  # the two-view frame alone (1.0 with both)
    assert r["depth/conf_threshold_top100"] == pytest.approx(0.1) and r["depth/confidence_mean"] == pytest.approx(0.5)
    assert r["depth/abs_rel_baseline_single"] == pytest.approx(1.0)  # the frame still counts in the depth figures


SPARSIFICATION_KEYS = [f"depth/{name}{int(round(f * 100))}" for f in SPARSIFICATION_FRACTIONS
                       for name in ("abs_rel_conf_top", "conf_threshold_top")] + ["depth/conf_top50_ratio"]


@pytest.mark.parametrize("noise", [0.0, 1.2e-7])
def test_a_constant_confidence_has_no_sparsification_curve(noise):
    """Single-view mode's confidence is 0 everywhere (up to ~1e-7 of float rounding): ranking its ties gave an
    arbitrary order's numbers (`conf_top50_ratio 0.9401`); every sparsification key is NaN instead."""
    err = np.array([0.4, 0.1, 0.3, 0.2])
    conf = np.array([0.0, noise, 0.0, noise / 2])
    assert all(np.isnan(v) for v in sparsification(err, conf).values())
    assert all(np.isnan(v) for v in confidence_thresholds(conf).values())
    meter = RealDepthMeter()
    meter.update(torch.tensor(1.0 + err, dtype=torch.float32).view(1, 1, 1, 4), torch.ones(1, 1, 1, 4), None, None,
                 torch.tensor(conf, dtype=torch.float32).view(1, 1, 1, 4))
    r = meter.compute()
    assert all(np.isnan(r[k]) for k in SPARSIFICATION_KEYS), {k: r[k] for k in SPARSIFICATION_KEYS}
    assert r["depth/confidence_mean"] == pytest.approx(noise * 3 / 8, abs=1e-12)
    assert r["depth/scale_ratio_median"] == pytest.approx(1.2, rel=1e-6)  # torch.median: the lower middle value


def test_sparsification_does_not_depend_on_the_order_of_ties():
    """Pixels tied at a fraction's cut count with their mean error, whichever came first."""
    err = np.array([0.1, 0.3, 0.2, 0.4])
    conf = np.array([1.0, 0.5, 0.5, 0.0])
    swapped = [0, 2, 1, 3]
    for e, c in ((err, conf), (err[swapped], conf[swapped])):
        curve = sparsification(e, c, (0.25, 0.5, 0.75, 1.0))
        assert curve == pytest.approx({0.25: 0.1, 0.5: (0.1 + 0.25) / 2, 0.75: 0.2, 1.0: 0.25})


def test_a_threshold_shared_by_many_pixels_says_what_it_keeps():
    """A replay trial: 10.9 % of the two-view pixels had a confidence of exactly 0, so the 90 % row's threshold was
    0.000 and applying it kept 100 % of the pixels (abs rel 0.083), not the row's 90 % (0.080). Each row now says
    what its threshold keeps and their abs rel; without ties that is the row itself."""
    rng = np.random.default_rng(0)
    n = 10_000
    conf = rng.uniform(0.01, 1.0, n)
    conf[: int(0.109 * n)] = 0.0  # unmatched pixels: exactly 0
    err = rng.uniform(0.0, 0.1, n) + 0.1 * (conf == 0)
    thresholds = confidence_thresholds(conf)
    keeps = threshold_keeps(err, conf, thresholds)
    assert thresholds[0.9] == 0.0 and keeps[0.9] == pytest.approx((1.0, err.mean()))
    curve = sparsification(err, conf)
    assert curve[0.9] < keeps[0.9][1]  # the row's 90 % are better than what its threshold keeps
    top = np.sort(conf)[::-1][: n // 2]
    assert keeps[0.5] == pytest.approx((0.5, err[conf >= top[-1]].mean()))  # no ties: the row itself
    assert keeps[0.5][1] == pytest.approx(curve[0.5])
    meter = RealDepthMeter()
    gt = torch.full((1, 1, 100, 100), 2.0)
    meter.update(gt * torch.from_numpy(1 + err).float().view(1, 1, 100, 100), gt, baseline_m=torch.tensor([0.1]),
                 confidence=torch.from_numpy(conf).float().view(1, 1, 100, 100), two_view=torch.tensor([True]))
    rows = {r["fraction"]: r for r in sparsification_rows(meter.compute())}
    assert rows[0.9]["confidence_min"] == 0.0 and rows[0.9]["threshold_kept"] == pytest.approx(1.0)
    assert rows[0.9]["threshold_abs_rel"] == pytest.approx(err.mean(), rel=1e-4)
    line = next(r for r in sparsification_table(list(rows.values())) if r.startswith("| 90 % |"))
    assert line.endswith(f"| 0.000 | 100 % | {err.mean():.3f} |")


def test_eval_of_single_view_reports_no_sparsification():
    """`mtl3d eval`'s single-view column: a geometric-depth network's confidence there is a flat cost volume's; its
    sparsification keys are NaN in metrics.json and `n/a` in report.md, the two-view column keeps its numbers."""
    from mtl3d_perception.data.datasets import SourceConfig, build_dataset
    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.train.eval_cli import render_report
    from mtl3d_perception.train.evaluate import evaluate

    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48), num_depth=8,
                                                       cvm_layers=1, geometric_depth=True))
    data = build_dataset([SourceConfig(split="val", num_scenes=1, frames_per_scene=2)], image_size=(64, 48))
    res = evaluate(model, data, batch_size=2, montage_batches=0)
    single, two = res["single_view"]["metrics"], res["two_view"]["metrics"]
    assert all(np.isnan(single[k]) for k in SPARSIFICATION_KEYS), {k: single[k] for k in SPARSIFICATION_KEYS}
    assert np.isfinite(single["depth/abs_rel"]) and single["depth/confidence_mean"] < 1e-6
    assert all(np.isfinite(two[k]) for k in SPARSIFICATION_KEYS)
    report = render_report({"checkpoint": "x", "input_size": [64, 48], "results": {"spec": {
        mode: {"metrics": r["metrics"], "num_samples": 2, "seconds_per_sample": 0.1} for mode, r in res.items()}}})
    row = next(line for line in report.splitlines() if line.startswith("| depth/conf_top50_ratio |"))
    assert row == f"| depth/conf_top50_ratio | {two['depth/conf_top50_ratio']:.4f} | n/a |"
    # the curve points are a table per confidence as replay's report has them, not 24 alphabetical metric rows
    assert "| depth/abs_rel_conf_top10 |" not in report and "| depth/conf_threshold_top50 |" not in report
    section = report[report.index("### Sparsification: the published depth confidence"):]
    half = (f"| 50 % | {two['depth/abs_rel_conf_top50']:.3f} | "
            f"{two['depth/abs_rel_conf_top50'] / two['depth/abs_rel_conf_top100']:.2f} | "
            f"{two['depth/conf_threshold_top50']:.3f} | {100 * two['depth/conf_threshold_kept_top50']:.0f} % | "
            f"{two['depth/abs_rel_conf_threshold_top50']:.3f} |")
    assert half in section.split("###")[1] and "single_view: no curve" in section.split("###")[1]
    assert "### Sparsification: the plane sweep's matching confidence" in report


def test_eval_report_lists_baseline_bins_in_bin_order():
    """report.md rows of one metric's baseline bins go from the shortest pairs up, as replay's report lists them."""
    from mtl3d_perception.train.eval_cli import render_report

    metrics = {"depth/abs_rel": 0.1, "depth/abs_rel_baseline_0.20-0.40m": 0.12, "depth/abs_rel_baseline_<0.05m": 0.2,
               "depth/abs_rel_baseline_0.05-0.10m": 0.15, "depth/abs_rel_baseline_single": 0.3, "depth/delta1": 90.0}
    report = render_report({"checkpoint": "x", "input_size": [64, 48], "results": {"spec": {
        "two_view": {"metrics": metrics, "num_samples": 2, "seconds_per_sample": 0.1}}}})
    rows = [line.split(" | ")[0][2:] for line in report.splitlines() if line.startswith("| depth/")]
    assert rows == ["depth/abs_rel", "depth/abs_rel_baseline_single", "depth/abs_rel_baseline_<0.05m",
                    "depth/abs_rel_baseline_0.05-0.10m", "depth/abs_rel_baseline_0.20-0.40m", "depth/delta1"]


class ModeDepthStub(torch.nn.Module):
    """Depth 2 m everywhere in two-view mode (``all_views``), 3 m in single-view mode."""

    def __init__(self) -> None:
        super().__init__()
        from mtl3d_perception.model import resolve_config

        self.config = resolve_config("tiny").replace(pretrained=False, input_size=(64, 48))

    def forward(self, images, K, poses, all_views: bool = False) -> dict[str, torch.Tensor]:
        B, V, _, H, W = images.shape
        return {"depth": torch.full((B, V, 1, H, W), 2.0) if all_views else torch.full((B, 1, H, W), 3.0)}


def test_eval_scale_ratio_is_each_modes_own():
    """The audit saw depth/scale_ratio_median 0.9489 in both columns of the shipped model's hololens eval. Each mode
    has its own meter and its own predictions: 0.948910 (two-view, image 12) and 0.948868 (single-view, image 73),
    equal to 4 digits by chance. Here the modes' depths differ by 3/2, and so do their scale ratios."""
    from mtl3d_perception.data.datasets import SourceConfig, build_dataset
    from mtl3d_perception.train.evaluate import evaluate

    data = build_dataset([SourceConfig(split="val", num_scenes=1, frames_per_scene=3)], image_size=(64, 48))
    res = evaluate(ModeDepthStub(), data, batch_size=3, montage_batches=0)
    two, single = res["two_view"]["metrics"], res["single_view"]["metrics"]
    assert single["depth/scale_ratio_median"] == pytest.approx(1.5 * two["depth/scale_ratio_median"], rel=1e-9)
    assert two["depth/abs_rel_median_scaled"] == pytest.approx(single["depth/abs_rel_median_scaled"], rel=1e-9)


def test_sparsification_memory_is_bounded_by_a_systematic_sample():
    """Long sequences (replay at GT resolution): past max_pixels every other pixel is dropped; the curve stays
    that of the whole sequence (here the error is a function of the confidence, so it is exact at the bound)."""
    rng = np.random.default_rng(0)
    full, bounded = RealDepthMeter(), RealDepthMeter(max_pixels=1000)
    for _ in range(5):
        conf = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
        gt = torch.full_like(conf, 2.0)
        pred = gt * (1.0 + 0.5 * (1.0 - conf))  # abs rel 0.5 (1 - confidence)
        full.update(pred, gt, None, None, conf)
        bounded.update(pred, gt, None, None, conf)
    assert sum(len(e) for e in full.errors) == 3000
    assert 500 <= sum(len(e) for e in bounded.errors) <= 1000
    a, b = full.compute(), bounded.compute()
    for f in SPARSIFICATION_FRACTIONS:
        x = int(round(f * 100))
        assert b[f"depth/abs_rel_conf_top{x}"] == pytest.approx(a[f"depth/abs_rel_conf_top{x}"], abs=0.01), x
        assert b[f"depth/conf_threshold_top{x}"] == pytest.approx(a[f"depth/conf_threshold_top{x}"], abs=0.03), x
    assert b["depth/abs_rel_median_scaled"] == a["depth/abs_rel_median_scaled"]  # only the curve is sampled
    # a soak trial: the kept pixels were strided views whose bases (every pixel of each frame; for the confidence a
    # torch tensor) stayed alive, so memory grew with the sequence: each kept array owns just its own pixels
    kept = bounded.errors + bounded.confidences
    assert all(k.base is None and k.flags.owndata for k in kept)
    assert sum(k.nbytes for k in kept) <= 1000 * 8


def test_smoothed_depth_normals_of_a_plane():
    H, W = 24, 32
    K = torch.tensor([[30.0, 0, (W - 1) / 2], [0, 30.0, (H - 1) / 2], [0, 0, 1]])[None]
    depth = torch.full((1, 1, H, W), 2.0)
    depth[..., :2, :] = float("nan")
    n = geometry.smoothed_depth_normals(depth, K)
    inner = n[0, :, 6:-4, 4:-4].reshape(3, -1)
    assert torch.allclose(inner, torch.tensor([0.0, 0.0, -1.0])[:, None].expand_as(inner), atol=1e-4)
    assert torch.isnan(n[0, :, 0]).all()


def test_soft_target_expectation_is_the_inverse_depth():
    depths = geometry.depth_candidates(0.3, 10.0, 16, like=torch.zeros(1))
    inv_c = 1.0 / depths
    inv = torch.tensor([0.5, 1.0, 2.7, 1 / 0.3]).view(4, 1, 1, 1)
    t = soft_target(inv, inv_c)
    assert torch.allclose(t.sum(1), torch.ones(4, 1, 1))
    assert torch.allclose((t * inv_c.view(1, -1, 1, 1)).sum(1, keepdim=True), inv, atol=1e-6)
    assert ((t > 0).sum(1) <= 2).all()


def test_cell_inverse_depth_ignores_invalid_pixels():
    depth = torch.tensor([[2.0, 2.0, 4.0, float("nan")], [2.0, 2.0, 4.0, float("nan")]]).view(1, 1, 2, 4)
    inv, mask = cell_inverse_depth(depth, (1, 2))
    assert inv[0, 0, 0].tolist() == pytest.approx([0.5, 0.25])
    assert mask[0, 0, 0].tolist() == [True, True]  # half the pixels valid is enough


def test_scale_aware_loss_is_zero_only_at_the_truth():
    gt = torch.rand(2, 1, 5, 5) + 1.0
    valid = torch.tensor([True, True])
    assert depth_scale_aware_loss(gt, gt, valid).item() < 1e-2  # sqrt(eps) floor
    far = depth_scale_aware_loss(gt * 1.3, gt, valid).item()
    bent = depth_scale_aware_loss(gt * torch.linspace(0.7, 1.3, 5), gt, valid).item()
    assert far > 0.05 and bent > 0.05  # both scale and structure errors cost


def test_metrics_json_is_strict_json():
    """Python's json wrote NaN bare, which JavaScript's JSON.parse (a viewer trial) and most tools refuse: undefined
    metrics are null, numpy scalars numbers, and a stamp in ns stays exact."""
    from mtl3d_perception.evaluation.json_report import dumps

    text = dumps({"nan": float("nan"), "f32": np.float32(1.5), "inf": np.float64(np.inf), "stamp": np.int64(2**60 + 1),
                  "rows": (np.array([1.0, np.nan]), [float("-inf")]), "flag": np.bool_(True)}, indent=None)
    assert json.loads(text) == {"nan": None, "f32": 1.5, "inf": None, "stamp": 2**60 + 1, "rows": [[1.0, None], [None]],
                                "flag": True}
    with pytest.raises(TypeError):
        dumps({"not JSON": object()})
