"""Seed 002: the FiLM-conditioned joint pairwise task mapping, its consistency loss and regulariser."""

from __future__ import annotations

import torch

from mtl3d_perception.train.cross_task import (
    CrossTaskLoss,
    CrossTaskTerm,
    TaskPairMapping,
    cosine_distance,
    encode_label,
    task_pair_matrix,
)
from mtl3d_perception.train.loss_base import build_loss_term, registered_losses

N, K, H, W, C = 3, 5, 32, 24, 16
DEPTH_RANGE = (0.3, 10.0)


def _labels(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, K, (N, H, W), generator=g)
    semantic[:, :2] = 255  # some ignored pixels
    depth = 0.5 + 4 * torch.rand(N, 1, H, W, generator=g)
    depth[:, :, :, :3] = float("nan")
    normals = torch.nn.functional.normalize(torch.randn(N, 3, H, W, generator=g), dim=1)
    boundary = (torch.rand(N, 1, H, W, generator=g) > 0.8).float()
    return {"semantic": semantic, "depth": depth, "normals": normals, "boundary": boundary}


def _preds(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "semantic": torch.randn(N, K, H, W, generator=g).requires_grad_(),
        "depth": (0.5 + 4 * torch.rand(N, 1, H, W, generator=g)).requires_grad_(),
        "normals": torch.nn.functional.normalize(torch.randn(N, 3, H, W, generator=g), dim=1).requires_grad_(),
        "boundary": torch.randn(N, 1, H, W, generator=g).requires_grad_(),
    }


def test_task_pair_matrix_is_asymmetric_one_hot():
    A = task_pair_matrix(0, 2, 4).reshape(4, 4)
    B = task_pair_matrix(2, 0, 4).reshape(4, 4)
    assert A.sum() == 1 and A[0, 2] == 1 and B[2, 0] == 1
    assert not torch.equal(A, B) and A.diagonal().sum() == 0


def test_mapping_is_conditioned_on_the_pair():
    torch.manual_seed(0)
    m = TaskPairMapping({"semantic": K, "depth": 1, "normals": 3}, C)
    x = torch.randn(2, 1, H, W)
    e1, e2 = m("depth", "semantic", x), m("depth", "normals", x)
    assert e1.shape == (2, C, H // 8, W // 8)
    assert (e1 - e2).abs().max() > 1e-4  # one shared trunk, different FiLM codes


def test_gradients_reach_the_right_parameters():
    torch.manual_seed(0)
    loss = CrossTaskLoss(C, K, DEPTH_RANGE)
    preds, labels = _preds(), _labels()
    # sample 0: only semantic labelled; sample 1: depth + normals; sample 2: everything labelled
    valid = {
        "semantic": torch.tensor([True, False, True]),
        "depth": torch.tensor([False, True, True]),
        "normals": torch.tensor([False, True, True]),
        "boundary": torch.tensor([False, False, True]),
    }
    feat = torch.randn(N, C, H // 8, W // 8, requires_grad=True)
    out = loss(preds, labels, valid, feat)
    out["total"].backward()
    assert out["consistency"] > 0 and out["regulariser"] > 0
    for name, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient for {name}"
    # the FiLM auxiliary network (a_theta) and the shared trunk learn
    assert loss.mapping.films[0].scale.weight.grad.abs().sum() > 0
    assert loss.mapping.convs[0].weight.grad.abs().sum() > 0
    # predictions of unlabelled tasks are supervised; those of labelled tasks are not used
    assert preds["depth"].grad[0].abs().sum() > 0 and preds["semantic"].grad[1].abs().sum() > 0
    assert preds["depth"].grad[1:].abs().sum() == 0  # labelled in samples 1 and 2
    assert preds["semantic"].grad[[0, 2]].abs().sum() == 0
    # the regulariser does not pull the encoder towards the mapping (detached by default)
    assert feat.grad is None


def test_image_feature_gets_gradient_when_not_detached():
    loss = CrossTaskLoss(C, K, DEPTH_RANGE, detach_image_feature=False)
    valid = {t: torch.tensor([True, False, False]) for t in ("semantic", "depth", "normals", "boundary")}
    valid["depth"] = torch.tensor([False, True, True])
    feat = torch.randn(N, C, H // 8, W // 8, requires_grad=True)
    loss(_preds(), _labels(), valid, feat)["total"].backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0


def test_fully_labelled_batch_gives_zero_unless_labelled_pairs_are_included():
    valid = {t: torch.ones(N, dtype=torch.bool) for t in ("semantic", "depth", "normals", "boundary")}
    feat = torch.randn(N, C, H // 8, W // 8)
    assert CrossTaskLoss(C, K, DEPTH_RANGE)(_preds(), _labels(), valid, feat)["total"] == 0
    assert CrossTaskLoss(C, K, DEPTH_RANGE, include_labelled=True)(_preds(), _labels(), valid, feat)["total"] > 0


def test_regulariser_penalises_a_collapsed_mapping():
    """A constant mapping is perfectly 'consistent' (L_ct = 0); only the regulariser exposes it."""
    torch.manual_seed(0)
    loss = CrossTaskLoss(C, K, DEPTH_RANGE, tasks=("semantic", "depth"))
    labels = _labels()
    valid = {"semantic": torch.ones(N, dtype=torch.bool), "depth": torch.zeros(N, dtype=torch.bool)}
    with torch.no_grad():
        # Predictions that match the labels, and an image feature the faithful mapping tracks:
        # the embedding of the labelled task (what a mapping aligned with f(x) produces).
        x_t, _ = encode_label("semantic", labels["semantic"], K, DEPTH_RANGE)
        preds = {"semantic": 10.0 * x_t, "depth": torch.where(labels["depth"].isnan(), 1.0, labels["depth"])}
        feat = loss.mapping("semantic", "depth", x_t)
        faithful = loss(preds, labels, valid, feat)
        # Collapse: every input goes to the same point of the joint space.
        for layer in (loss.mapping.head,):
            layer.weight.zero_()
            layer.bias.copy_(torch.linspace(-1, 1, C))
        collapsed = loss(preds, labels, valid, feat)
    assert collapsed["consistency"] < 1e-6  # trivially consistent
    assert collapsed["regulariser"] > faithful["regulariser"] + 0.2
    assert collapsed["total"] > faithful["total"]


def test_cosine_distance_masks_unlabelled_cells():
    a, b = torch.randn(2, C, 4, 4), torch.randn(2, C, 4, 4)
    w = torch.zeros(2, 1, 4, 4)
    w[:, :, 0, 0] = 1
    b2 = b.clone()
    b2[:, :, 1:] = a[:, :, 1:]
    assert torch.allclose(cosine_distance(a, b, w), cosine_distance(a, b2, w))
    assert torch.allclose(cosine_distance(a, a), torch.zeros(2), atol=1e-6)


def test_registered_term_on_a_multiview_batch():
    from mtl3d_perception.data.batch import MultiViewBatch

    assert "cross_task" in registered_losses()
    term = build_loss_term("cross_task", feature_channels=C, num_classes=K)
    assert isinstance(term, CrossTaskTerm) and term.needs_features
    B, V = 2, 2
    labels = _labels()
    batch = MultiViewBatch(
        images=torch.rand(B, V, 3, H, W), K=torch.eye(3).expand(B, V, 3, 3), poses=torch.eye(4).expand(B, V, 4, 4),
        semantic=labels["semantic"][:1].expand(B, V, H, W), depth=labels["depth"][:1].expand(B, V, 1, H, W),
        normals=labels["normals"][:1].expand(B, V, 3, H, W), boundary=labels["boundary"][:1].expand(B, V, 1, H, W),
        valid={"semantic": torch.tensor([[True, True], [False, False]]), "depth": torch.tensor([[False, False], [True, True]]),
               "normals": torch.ones(B, V, dtype=torch.bool), "boundary": torch.zeros(B, V, dtype=torch.bool)},
    )
    preds = _preds()
    outputs = {t: p[:B] for t, p in preds.items()}  # reference view only
    outputs["features"] = {"image": torch.randn(B, C, H // 8, W // 8), "tasks": {}}
    value, logs = term(batch, outputs)
    assert value > 0 and {"cross_task", "cross_task/consistency", "cross_task/regulariser"} <= set(logs)
    value.backward()
    assert preds["boundary"].grad.abs().sum() > 0  # boundary is unlabelled everywhere
