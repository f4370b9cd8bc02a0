"""The shipped default model on held-out real frames (issue 18): bounds set from its measured metrics.

Eight frames spread over the last 20 % of ../shared/data/hololens_000 (never seen in training), at the
model's size, two-view (source 2 frames back, the recorded poses) and single-view. The bounds sit between
the shipped model's measurement on these 8 frames and a random-weight model's, so retraining has room and
a model that stopped using the geometry (or a random one) fails.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mtl3d_perception.data.datasets import build_dataset, parse_data_spec
from mtl3d_perception.data.textures import texture_library
from mtl3d_perception.model import build_model, load_checkpoint
from mtl3d_perception.train.evaluate import evaluate

HOLOLENS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hololens_000"
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default.safetensors"

# Measured on these 8 frames (2026-11-30 / 12-01; models/README.md has the full held-out range):
#   shipped (sha 69d55c3e7408, session 15: + exposure_band (0.3, 0.5), a no-op on these frames): two-view abs rel
#     0.138, delta1 82.8 %; single-view 0.179
#   session 14 (sha 6b49c0d1e284: the alignment's shrinkage 0.1): two-view abs rel 0.138, delta1 82.9 %,
#     confidence top-50 % ratio 0.65; single-view 0.179
#   session 13 (sha 6c020d5d2ff9: stage 14's weights with `prior_scale_alignment: true`, shrinkage 0.2): two-view abs rel
#     0.137, delta1 83.1 %, confidence top-50 % ratio 0.64; single-view 0.179
#   stage 14 (sha 7f00115f581c: the whole network on generator v3's scenes + the unlabelled HoloLens
#     frames for 2000 steps, stage 12's confidence head): two-view abs rel 0.138, delta1 82.5 %, confidence
#     top-50 % ratio 0.60; single-view 0.179
#   stage 13 (sha 83cbf689b50b): stage 12's depth and confidence bit for bit, a retrained semantic head
#   stage 12 (sha 23013c440afb: stage 11 = the whole network on session 9's scenes, stage 12 = its
#     confidence head adapted): two-view abs rel 0.142, delta1 80.3 %, confidence top-50 % ratio 0.60; single-view 0.172
#   stage 10 (sha 94302b4f2eb4): stage 9's depth and confidence bit for bit, a retrained semantic head
#   stage 9 (sha 37902629f913: the sweep's window aggregation, stage 8, + a confidence head on it):
#     two-view abs rel 0.143, delta1 79.5 %, confidence top-50 % ratio 0.61; single-view abs rel 0.170 (its
#     confidence ranks nothing: no ratio)
#   stage 7 (sha 2ac6fb277d3d: stage 5 + the retrained confidence head): 0.150, 77.5 %, 0.65; single-view 0.171
#   stage 6 (sha ea42f4c791ab, the first confidence head, same depth): confidence ratio 0.65
#   stage 5 (sha 980d860f81d4, same depth): confidence ratio 0.72 (prior/geometry agreement)
#   stage 4 (sha 432b46443c81): 0.155, 76.8 %, 0.74; single-view 0.173
#   stage 3 (sha 9ce5125c487c): 0.159, 77.2 %, 0.73; single-view 0.175
#   stage 2 (sha faed41078e86): 0.163, 76.1 %, 0.72 (0.86 with the matching confidence alone); single-view 0.185
#     (stage 1: 0.171, 73.7 %, 0.87; 0.219)
#   random weights: two-view 0.698, delta1 0.8 %; single-view 0.824
#   the previous default (tiny, paper CvM): two-view 0.239, delta1 58.5 %, no confidence; single-view 0.247
BOUNDS = {
    "two_view": {"depth/abs_rel": 0.18, "depth/delta1": 72.0, "depth/conf_top50_ratio": 0.75},
    "single_view": {"depth/abs_rel": 0.23},
}


class _Gained(torch.utils.data.Dataset):
    """A dataset whose images are multiplied by ``gain``: the same frames from a camera with a shorter exposure."""

    def __init__(self, dataset, gain: float):
        self.dataset, self.gain = dataset, gain

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        batch = self.dataset[key]
        return dataclasses.replace(batch, images=batch.images * self.gain)


def _metrics(model, gain: float = 1.0) -> dict[str, dict[str, float]]:
    spec = f"sequence:{HOLOLENS}:0.8:1.0"
    dataset = build_dataset([parse_data_spec(spec)], image_size=tuple(model.config.input_size), num_views=2)
    if gain != 1.0:
        dataset = _Gained(dataset, gain)
    res = evaluate(model, dataset, batch_size=4, max_batches=2, montage_batches=0)
    return {mode: r["metrics"] for mode, r in res.items()}


def _passes(m: dict[str, dict[str, float]]) -> list[str]:
    """The bounds ``m`` fails (empty when it passes them all)."""
    fails = []
    two, single = m["two_view"], m["single_view"]
    if not two["depth/abs_rel"] <= BOUNDS["two_view"]["depth/abs_rel"]:
        fails.append(f"two-view abs rel {two['depth/abs_rel']:.3f}")
    if not two["depth/delta1"] >= BOUNDS["two_view"]["depth/delta1"]:
        fails.append(f"two-view delta1 {two['depth/delta1']:.1f}")
    if not two.get("depth/conf_top50_ratio", 1.0) <= BOUNDS["two_view"]["depth/conf_top50_ratio"]:
        fails.append(f"confidence top-50 % ratio {two.get('depth/conf_top50_ratio')}")
    if not single["depth/abs_rel"] <= BOUNDS["single_view"]["depth/abs_rel"]:
        fails.append(f"single-view abs rel {single['depth/abs_rel']:.3f}")
    if not two["depth/abs_rel"] < single["depth/abs_rel"]:
        fails.append("two-view is not better than single-view")
    return fails


@pytest.fixture(scope="module")
def shipped():
    if not HOLOLENS.is_dir():
        pytest.skip(f"{HOLOLENS} absent")
    return load_checkpoint(SHIPPED)


def test_shipped_model_meets_its_real_frame_bounds(shipped):
    m = _metrics(shipped)
    assert _passes(m) == [], m


def test_a_random_model_fails_the_bounds(shipped):
    torch.manual_seed(0)
    random = build_model(shipped.config.replace(pretrained=False)).eval()
    assert _passes(_metrics(random)) != []


# An under-exposed camera (session 15): the same 8 frames at a quarter of their brightness (mean intensity 0.08
# instead of 0.33). Shipped (sha 69d55c3e7408, exposure_band (0.3, 0.5)): two-view 0.1415 vs 0.1384, single-view
# 0.1798 vs 0.1786 (2 % / 1 % worse); the same weights without the band: 0.1531 / 0.1957 (11 % / 10 % worse).
DARK_GAIN, DARK_SLACK = 0.25, 1.05


def test_shipped_model_keeps_its_depth_on_a_dark_camera(shipped):
    normal, dark = _metrics(shipped), _metrics(shipped, DARK_GAIN)
    for mode in ("two_view", "single_view"):
        assert dark[mode]["depth/abs_rel"] <= DARK_SLACK * normal[mode]["depth/abs_rel"], (mode, dark, normal)
    off = build_model(shipped.config.replace(exposure_band=None, pretrained=False)).eval()
    off.load_state_dict(shipped.state_dict())
    dark_off = _metrics(off, DARK_GAIN)
    assert dark_off["two_view"]["depth/abs_rel"] > DARK_SLACK * normal["two_view"]["depth/abs_rel"], dark_off


# Semantics and depth on the first 12 two-view samples of held-out synthetic scenes (synthetic:test:2, textured, generator v3;
# 2026-12-01): shipped (stage 14's weights, sha 7f00115f581c and, with the alignment, 6c020d5d2ff9) mIoU 55.2, pixel accuracy 96.2; stage 13 (sha 83cbf689b50b: the
# semantic head retrained on scenes with made beds and dressed windows) 54.3, 95.5; stage 12 (sha 23013c440afb) 47.1,
# 94.9; random weights 0.2, 1.2.
# (On generator v2's scenes: stage 12 53.6 / 93.9, stage 9 49.8 / 91.9, random 1.4 / 13.0.)
# The bounds catch a broken or untrained semantic head, not the loss of a stage's gain (stage 12 clears them too).
SEMANTIC_BOUNDS = {"semantic/miou": 45.0, "semantic/pixel_acc": 85.0}
# Depth on the same samples: shipped (stage 14's weights with the prior's scale alignment, shrinkage 0.1, session 14)
# abs rel 0.098; with session 13's shrinkage 0.2 0.107; without the alignment 0.121 (its prior's scale is a room's, not
# the geometry's: scale ratio 1.08); random weights 0.605. The bound fails a model whose unmatched pixels lost the
# geometry's scale, or took it only half-way (0.2).
SYNTHETIC_DEPTH_BOUND = {"depth/abs_rel": 0.104}


def _synthetic_metrics(model) -> dict[str, float]:
    dataset = build_dataset([parse_data_spec("synthetic:test:2")], image_size=tuple(model.config.input_size), num_views=2)
    return evaluate(model, dataset, batch_size=4, max_batches=3, montage_batches=0, modes=("two_view",))["two_view"]["metrics"]


def test_shipped_model_meets_its_synthetic_bounds_and_a_random_model_does_not():
    if texture_library() is None:
        pytest.skip("no texture folder (../shared/data/textures or $MTL3D_TEXTURES): the scenes would be procedurally "
                    "textured, not the ones the bounds were set on")
    shipped = load_checkpoint(SHIPPED)
    m = _synthetic_metrics(shipped)
    assert all(m[k] >= v for k, v in SEMANTIC_BOUNDS.items()), m
    assert all(m[k] <= v for k, v in SYNTHETIC_DEPTH_BOUND.items()), m
    torch.manual_seed(0)
    random = _synthetic_metrics(build_model(shipped.config.replace(pretrained=False)).eval())
    assert not all(random[k] >= v for k, v in SEMANTIC_BOUNDS.items()), random
    assert not all(random[k] <= v for k, v in SYNTHETIC_DEPTH_BOUND.items()), random
