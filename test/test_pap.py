"""Seed 004: the pattern-affinitive propagation refiner and the pair-wise affinity loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtl3d_perception.data.batch import MultiViewBatch
from mtl3d_perception.model import build_model, list_refiners
from mtl3d_perception.model.pap import PAPRefiner, diffuse, row_normalised_affinity
from mtl3d_perception.train.loss_base import build_loss_term
from mtl3d_perception.train.pap_loss import pairwise_loss, task_values

TASK_CHANNELS = {"semantic": 8, "depth": 8, "normals": 8, "boundary": 8}
B, h, w = 2, 12, 16  # decoder features at stride 4 of a 64x48 input


def _feats(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(B, c, h, w, generator=g).requires_grad_() for t, c in TASK_CHANNELS.items()}


def test_registered_and_shapes_preserved():
    assert "pap" in list_refiners()
    torch.manual_seed(0)
    pap = PAPRefiner(TASK_CHANNELS, steps=3)
    feats = _feats()
    out = pap(feats)
    assert set(out) == set(feats)
    for t in feats:
        assert out[t].shape == feats[t].shape and torch.isfinite(out[t]).all()
        assert (out[t] - feats[t]).abs().max() > 0


def test_affinities_are_row_stochastic_at_one_eighth():
    pap = PAPRefiner(TASK_CHANNELS)
    M, M_hat, k = pap.affinities(_feats())
    n = (h // 2) * (w // 2)  # 1/8 of the input = 1/2 of the stride-4 features
    assert k == 2 and M.shape == (B, 4, n, n) and M_hat.shape == (B, 4, n, n)
    assert (M >= 0).all() and (M_hat >= 0).all()
    torch.testing.assert_close(M.sum(-1), torch.ones(B, 4, n))
    torch.testing.assert_close(M_hat.sum(-1), torch.ones(B, 4, n))
    assert torch.allclose(row_normalised_affinity(torch.zeros(1, 5, 3)), torch.full((1, 5, 5), 0.2))


def test_token_budget_bounds_memory():
    pap = PAPRefiner(TASK_CHANNELS, max_tokens=20)
    M, _, k = pap.affinities(_feats())
    assert M.shape[-1] <= 20 and k > 2


def test_zero_steps_is_identity():
    feats = _feats()
    h0 = torch.randn(2, 10, 4)
    M = row_normalised_affinity(torch.randn(2, 10, 3))
    assert torch.equal(diffuse(h0, M, 0, 0.05), h0)
    out = PAPRefiner(TASK_CHANNELS, steps=0)(feats)
    for t in feats:
        assert torch.equal(out[t], feats[t])


def test_diffusion_of_a_constant_is_a_fixed_point():
    """Row-stochastic M keeps constant features constant, so the refiner adds exactly nothing."""
    pap = PAPRefiner(TASK_CHANNELS, steps=4)
    feats = {t: torch.full((B, c, h, w), 0.7) for t, c in TASK_CHANNELS.items()}
    for t, y in pap(feats).items():
        torch.testing.assert_close(y, feats[t])


def test_gradients_reach_the_right_parameters():
    pap = PAPRefiner(TASK_CHANNELS, steps=2)
    feats = _feats()
    sum(y.square().mean() for y in pap(feats).values()).backward()
    for name, p in pap.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"
    for t in feats:
        assert feats[t].grad.abs().sum() > 0


def test_model_with_pap_refiner_runs_and_round_trips(tmp_path):
    from mtl3d_perception.model import load_checkpoint, save_checkpoint

    cfg = {"input_size": [64, 48], "pretrained": False, "num_depth": 8, "cvm_layers": 1,
           "refiner": "pap", "refiner_args": {"steps": 2}}
    model = build_model(cfg).eval()
    images = torch.rand(1, 2, 3, 48, 64)
    K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    poses = torch.eye(4).expand(1, 2, 4, 4).clone()
    poses[0, 1, 0, 3] = 0.1
    with torch.no_grad():
        out = model(images, K, poses)
    assert out["depth"].shape == (1, 1, 48, 64) and torch.isfinite(out["semantic"]).all()
    path = tmp_path / "pap.safetensors"
    save_checkpoint(model, path)
    with torch.no_grad():
        again = load_checkpoint(path).eval()(images, K, poses)
    torch.testing.assert_close(again["depth"], out["depth"])


# ------------------------------------------------------------------------------------------------ loss


def _batch_and_perfect_outputs() -> tuple[MultiViewBatch, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    V, H, W, K = 2, 24, 32, 5
    semantic = torch.randint(0, K, (B, V, H, W), generator=g)
    semantic[..., :3] = 255
    depth = 0.5 + 3 * torch.rand(B, V, 1, H, W, generator=g)
    depth[..., :2, :] = float("nan")
    normals = F.normalize(torch.randn(B, V, 3, H, W, generator=g), dim=2)
    boundary = (torch.rand(B, V, 1, H, W, generator=g) > 0.9).float()
    batch = MultiViewBatch(
        images=torch.rand(B, V, 3, H, W), K=torch.eye(3).expand(B, V, 3, 3), poses=torch.eye(4).expand(B, V, 4, 4),
        semantic=semantic, depth=depth, normals=normals, boundary=boundary,
        valid={t: torch.ones(B, V, dtype=torch.bool) for t in ("semantic", "depth", "normals", "boundary")},
    )
    outputs = {
        "semantic": 60.0 * F.one_hot(semantic.clamp_max(K - 1), K).permute(0, 1, 4, 2, 3).float(),
        "depth": torch.nan_to_num(depth, nan=1.0),
        "normals": normals.clone(),
        "boundary": 60.0 * (2 * boundary - 1),
    }
    return batch, outputs


def test_pairwise_loss_is_zero_for_perfect_predictions_and_grows_with_errors():
    batch, outputs = _batch_and_perfect_outputs()
    term = build_loss_term("pap_pairwise", num_pairs=300, seed=0)
    value, logs = term(batch, outputs)
    assert value < 1e-6, logs
    noisy = {t: v.clone() for t, v in outputs.items()}
    noisy["depth"] = noisy["depth"] * (1 + 0.2 * torch.rand_like(noisy["depth"]))
    noisy["normals"] = F.normalize(noisy["normals"] + 0.3 * torch.randn_like(noisy["normals"]), dim=2)
    noisy["semantic"] = torch.randn_like(noisy["semantic"])
    noisy["boundary"] = torch.randn_like(noisy["boundary"])
    value_noisy, logs_noisy = term(batch, noisy)
    for t in ("semantic", "depth", "normals", "boundary"):
        assert logs_noisy[f"pap_pairwise/{t}"] > 0.05, t


def test_pairwise_loss_ignores_invalid_pixels_and_images():
    batch, outputs = _batch_and_perfect_outputs()
    outputs["depth"] = outputs["depth"].clone()
    outputs["depth"][..., :2, :] = 50.0  # wrong only where the label is NaN
    term = build_loss_term("pap_pairwise", tasks=["depth"], seed=0)
    assert term(batch, outputs)[0] < 1e-6
    batch.valid["depth"][:] = False
    value, _ = term(batch, {"depth": outputs["depth"].requires_grad_()})
    assert value == 0
    value.backward()  # still in the graph


def test_pairwise_loss_gradient_reaches_predictions():
    values = torch.rand(2, 1, 8, 8, requires_grad=True)
    target = torch.rand(2, 1, 8, 8)
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    pairwise_loss(values, target, mask, 50).backward()
    assert values.grad.abs().sum() > 0
    v, t, m = task_values("semantic", torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 255), torch.ones(1, dtype=torch.bool))
    assert not m.any()


@pytest.mark.parametrize("steps", [1, 3])
def test_zero_initialised_mixing_is_finite_for_large_features(steps):
    feats = {t: 1e3 * torch.randn(B, c, h, w) for t, c in TASK_CHANNELS.items()}
    out = PAPRefiner(TASK_CHANNELS, steps=steps)(feats)
    assert all(torch.isfinite(y).all() for y in out.values())
