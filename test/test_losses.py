"""Task losses: minimal for perfect predictions, growing with corruption, respecting validity masks;
the loss-term registry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mtl3d_perception.data.batch import TASKS, MultiViewBatch
from mtl3d_perception.train.loss_base import LossTerm, build_loss_term, register_loss, registered_losses
from mtl3d_perception.train.losses import MultiTaskLoss, depth_silog_loss

B, V, K, H, W = 2, 2, 5, 6, 8


def make_batch(seed: int = 0) -> MultiViewBatch:
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(B, V, 3, H, W, generator=g), dim=2)
    normals[:, :, 2] = -normals[:, :, 2].abs()  # towards the camera
    semantic = torch.randint(0, K, (B, V, H, W), generator=g)
    semantic[:, :, 0, 0] = 255
    depth = 0.5 + 4 * torch.rand(B, V, 1, H, W, generator=g)
    depth[:, :, :, 1, 1] = float("nan")
    boundary = (torch.rand(B, V, 1, H, W, generator=g) < 0.2).float()
    return MultiViewBatch(images=torch.rand(B, V, 3, H, W, generator=g), K=torch.eye(3).expand(B, V, 3, 3),
                          poses=torch.eye(4).expand(B, V, 4, 4), semantic=semantic, depth=depth, normals=normals,
                          boundary=boundary, valid={t: torch.ones(B, V, dtype=torch.bool) for t in TASKS})


def perfect_outputs(batch: MultiViewBatch, all_views: bool = True) -> dict[str, torch.Tensor]:
    sem = torch.nn.functional.one_hot(batch.semantic.clamp_max(K - 1), K).permute(0, 1, 4, 2, 3).float() * 30.0
    out = {"semantic": sem, "depth": torch.nan_to_num(batch.depth, nan=1.0),
           "normals": torch.nan_to_num(batch.normals, nan=0.0), "boundary": (batch.boundary * 2 - 1) * 30.0}
    return out if all_views else {k: v[:, 0] for k, v in out.items()}


def corrupt(out: dict[str, torch.Tensor], level: float, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    res = {}
    for k, v in out.items():
        noise = torch.randn(v.shape, generator=g)
        if k == "depth":
            res[k] = (v * torch.exp(level * noise)).clamp_min(1e-3)
        elif k == "normals":
            res[k] = torch.nn.functional.normalize(v + level * noise, dim=2)
        else:
            res[k] = v + 30.0 * level * noise
    return res


def single_term(task: str, **kw) -> MultiTaskLoss:
    return MultiTaskLoss({t: float(t == task) for t in TASKS}, all_views=True, **kw)


@pytest.mark.parametrize("task,kind", [("semantic", "l1"), ("depth", "l1"), ("depth", "silog"),
                                       ("normals", "l1"), ("boundary", "l1")])
def test_loss_minimal_for_perfect_and_grows_with_corruption(task, kind):
    batch = make_batch()
    crit = single_term(task, depth_kind=kind)
    perfect = perfect_outputs(batch)
    values = [float(crit(batch, perfect)[0])]
    for level in (0.1, 0.4, 1.0):
        values.append(float(crit(batch, corrupt(perfect, level))[0]))
    assert values[0] < 1e-6, values
    assert all(a < b for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("task", TASKS)
def test_masked_task_contributes_nothing_even_with_nan_labels(task):
    batch = make_batch()
    batch.valid[task][:] = False
    label = batch.label(task)
    if label.is_floating_point():
        label.fill_(float("nan"))
    outputs = {k: v.requires_grad_() for k, v in corrupt(perfect_outputs(batch), 0.5).items()}
    crit = MultiTaskLoss(dict.fromkeys(TASKS, 1.0))
    total, logs = crit(batch, outputs)
    assert logs[f"loss/{task}"] == 0.0
    total.backward()
    assert torch.isfinite(outputs[task].grad).all() and outputs[task].grad.abs().sum() == 0
    others = sum(logs[f"loss/{t}"] for t in TASKS if t != task)
    assert math.isclose(float(total.detach()), others, rel_tol=1e-5)


@pytest.mark.parametrize("task", ["depth", "normals", "boundary"])
def test_invalid_view_is_ignored(task):
    """Invalidating view 1 of every sample gives the loss of view 0 alone, whatever view 1 predicts."""
    batch = make_batch()
    out = corrupt(perfect_outputs(batch), 0.3)
    crit = single_term(task)
    batch.valid[task][:, 1] = False
    a = float(crit(batch, out)[0])
    out[task][:, 1] = out[task][:, 1] * 3.0 + 1.0
    b = float(crit(batch, out)[0])
    ref_only = MultiTaskLoss({t: float(t == task) for t in TASKS}, all_views=False)
    c = float(ref_only(batch, {k: v[:, 0] for k, v in out.items()})[0])
    assert a == pytest.approx(b, rel=1e-6) and a == pytest.approx(c, rel=1e-6)


def test_reference_only_outputs_pair_with_view_zero():
    batch = make_batch()
    crit = MultiTaskLoss(dict.fromkeys(TASKS, 1.0), all_views=False)
    loss, _ = crit(batch, perfect_outputs(batch, all_views=False))
    assert float(loss) < 1e-6


@pytest.mark.parametrize("task", TASKS)
def test_reference_only_terms_ignore_other_views_of_all_view_outputs(task):
    """``all_views=False`` supervises view 0 even when another term (cross_view) makes the trainer
    call the model with ``all_views=True``: the sources' predictions do not enter the task loss."""
    batch = make_batch()
    out = perfect_outputs(batch)
    out[task][:, 1:] = corrupt(out, 1.0)[task][:, 1:]
    ref_only = MultiTaskLoss({t: float(t == task) for t in TASKS}, all_views=False)
    assert float(ref_only(batch, out)[0]) < 1e-6
    assert float(single_term(task)(batch, out)[0]) > 1e-2  # every view, as configured


def test_silog_is_scale_tolerant_but_minimal_only_at_the_truth():
    g = torch.Generator().manual_seed(0)  # unseeded, the noise was too small in about 1 run in 5
    depth = 1 + torch.rand(1, 1, 4, 4, generator=g)
    valid = torch.ones(1, dtype=torch.bool)
    exact = float(depth_silog_loss(depth, depth, valid, lam=0.85))
    scaled = float(depth_silog_loss(2 * depth, depth, valid, lam=0.85))
    noisy = float(depth_silog_loss(depth * torch.exp(0.3 * torch.randn(1, 1, 4, 4, generator=g)), depth, valid, lam=0.85))
    assert exact == pytest.approx(0.0, abs=1e-9) and 0 < scaled < noisy * 10
    assert float(depth_silog_loss(2 * depth, depth, valid, lam=1.0)) == pytest.approx(0.0, abs=1e-9)


def test_registered_extra_term_with_features():
    @register_loss("test_feature_norm")
    class FeatureNorm(LossTerm):
        needs_features = True

        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(scale))

        def forward(self, batch, outputs):
            value = self.scale * outputs["features"]["image"].pow(2).mean()
            return value, {"feature_norm": float(value.detach())}

    assert "test_feature_norm" in registered_losses()
    batch = make_batch()
    crit = MultiTaskLoss({"depth": 1.0}, extra={"test_feature_norm": {"weight": 0.5, "scale": 2.0}})
    assert crit.needs_features and crit.needs_all_views
    assert any(p is crit.terms["test_feature_norm"].scale for p in crit.parameters())
    out = perfect_outputs(batch) | {"features": {"image": torch.ones(B, 4, 2, 2)}}
    total, logs = crit(batch, out)
    assert logs["loss/feature_norm"] == pytest.approx(2.0) and float(total.detach()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="test_feature_norm"):
        register_loss("test_feature_norm")(type("Other", (LossTerm,), {}))


def test_unknown_terms_and_arguments_are_named():
    with pytest.raises(ValueError, match="unknown loss term 'nope'"):
        build_loss_term("nope")
    with pytest.raises(ValueError, match="depth"):
        build_loss_term("depth", colour=3)
    with pytest.raises(ValueError, match="kind"):
        build_loss_term("depth", kind="l3")


def _model_and_batch(label_regime: str):
    from mtl3d_perception.data.batch import collate
    from mtl3d_perception.data.datasets import SourceConfig, build_dataset
    from mtl3d_perception.model import build_model, resolve_config

    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48), num_depth=8, cvm_layers=1))
    data = build_dataset([SourceConfig(split="val", num_scenes=1, frames_per_scene=4)], image_size=(64, 48),
                         label_regime=label_regime)
    return model, collate([data[(0, 0)], data[(2, 0)]])  # (index, draw): a training sample, label regime applied


EXTRA = {"cross_view": {"weight": 0.5}, "cross_task": {"weight": 0.5}, "pap_pairwise": {"weight": 0.2, "seed": 0}}


def _losses(model, crit, batch, bf16: bool):
    from mtl3d_perception.train.trainer import TrainModule

    model.zero_grad(set_to_none=True)
    crit.terms["pap_pairwise"].generator.manual_seed(0)  # the same pixel pairs in both precisions
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        total, logs, _ = TrainModule(model, crit)(batch)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return total, logs, grads


def test_bf16_autocast_keeps_every_term_finite_and_close_to_fp32():
    """AMP (bf16 autocast, testable on CPU) with a real network and every registered term: float32
    losses, finite gradients, values within bf16 rounding of the float32 run."""
    model, batch = _model_and_batch("one")  # one label per sample: the cross-task term is active
    crit = MultiTaskLoss(dict.fromkeys(TASKS, 1.0), extra=EXTRA)
    total32, logs32, _ = _losses(model, crit, batch, bf16=False)
    total16, logs16, grads = _losses(model, crit, batch, bf16=True)
    assert total16.dtype == torch.float32 and torch.isfinite(total16)
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert logs32["loss/cross_task/consistency"] > 0
    for key, value in logs32.items():
        assert logs16[key] == pytest.approx(value, rel=0.05, abs=0.02), key


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_batch_without_any_label_gives_finite_loss_and_gradients(bf16):
    """Every task invalid (flags off, labels NaN / 255): task terms are 0, nothing is NaN."""
    model, batch = _model_and_batch("full")
    for task in TASKS:
        batch.valid[task][:] = False
        label = batch.label(task)
        label.fill_(float("nan") if label.is_floating_point() else 255)
    crit = MultiTaskLoss(dict.fromkeys(TASKS, 1.0), extra=EXTRA)
    total, logs, grads = _losses(model, crit, batch, bf16)
    assert torch.isfinite(total) and all(torch.isfinite(g).all() for g in grads)
    assert all(logs[f"loss/{t}"] == 0.0 for t in TASKS) and logs["loss/pap_pairwise"] == 0.0
