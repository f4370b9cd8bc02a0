"""The network's exposure band (``exposure_band``, session 15): a camera's automatic gain applied once more."""

from __future__ import annotations

import pytest
import torch

from mtl3d_perception.model import build_model, resolve_config
from mtl3d_perception.model.config import ConfigError, ModelConfig
from mtl3d_perception.model.network import MAX_EXPOSURE_GAIN, exposure_gain

BAND = (0.3, 0.5)


def _image(mean: float, seed: int = 0) -> torch.Tensor:
    """[1,3,48,64] RGB with the given mean intensity and no pixel near 0 or 1 (no clipping at the gains used here)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.2 * (torch.rand(1, 3, 48, 64, generator=g) - 0.5)
    return x * (mean / x.mean())


def test_images_inside_the_band_are_untouched():
    x = torch.cat([_image(0.3), _image(0.42, 1), _image(0.5, 2)])
    assert torch.equal(exposure_gain(x, BAND), x)


def test_dark_and_bright_images_are_brought_to_the_band_each_on_its_own():
    dark, bright, fine = _image(0.1), _image(0.75, 1), _image(0.4, 2)
    out = exposure_gain(torch.cat([dark, bright, fine]), BAND)
    means = out.mean((1, 2, 3))
    assert means[0].item() == pytest.approx(0.3, abs=1e-6)
    assert means[1].item() == pytest.approx(0.5, abs=1e-6)
    assert torch.equal(out[2:], fine)
    torch.testing.assert_close(out[0:1], dark * 3.0)  # a gain, not a curve: colours and contrast ratios kept


def test_gain_clips_to_the_unit_range():
    x = torch.full((1, 3, 8, 8), 0.12)
    x[..., 0] = 0.5  # one bright column: the gain of ~2.7 takes it past 1
    out = exposure_gain(x, (0.45, 0.5))
    assert out.max().item() == 1.0
    torch.testing.assert_close(out[..., 1:], x[..., 1:] * (0.45 / x.mean()))


def test_a_nearly_black_frame_is_not_amplified_past_the_gain_limit():
    x = torch.full((1, 3, 8, 8), 0.01)  # a lens cap, a dark corridor
    out = exposure_gain(x, BAND)
    torch.testing.assert_close(out, x * MAX_EXPOSURE_GAIN)
    assert torch.equal(exposure_gain(torch.zeros(1, 3, 8, 8), BAND), torch.zeros(1, 3, 8, 8))


def test_the_network_sees_the_gained_image():
    """With the band, an image and the same image 1.5x brighter, both below the band, give the same outputs (both
    are scaled to its lower end); without it they differ."""
    torch.manual_seed(0)
    config = resolve_config("tiny").replace(pretrained=False, input_size=(64, 48), num_depth=8)
    K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]]).repeat(1, 2, 1, 1)
    poses = torch.eye(4).repeat(1, 2, 1, 1)
    poses[0, 1, 0, 3] = 0.1
    dark = torch.stack([_image(0.1), _image(0.1, 1)], 1)  # [1, 2, 3, H, W]
    for band, same in ((BAND, True), (None, False)):
        model = build_model(config.replace(exposure_band=band)).eval()
        with torch.no_grad():
            a, b = model(dark, K, poses), model(dark * 1.5, K, poses)
        assert torch.allclose(a["depth"], b["depth"], atol=1e-5) is same, band


def test_band_validation_and_old_configs():
    with pytest.raises(ConfigError, match=r"exposure_band .* 0 < lo <= hi < 1 .*got \(0.5, 0.3\)"):
        ModelConfig(exposure_band=(0.5, 0.3))
    assert ModelConfig.from_dict({"name": "old"}).exposure_band is None  # checkpoints from before it: off
    assert ModelConfig.from_dict({"exposure_band": [0.3, 0.5]}).exposure_band == (0.3, 0.5)
