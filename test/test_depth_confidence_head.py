"""The learned depth confidence (issue 18): ``ConfidenceHead``, its ``depth_error`` loss, and adding it to a model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl3d_perception.model import build_model, resolve_config, save_checkpoint
from mtl3d_perception.model.checkpoint import CheckpointError
from mtl3d_perception.model.config import ConfigError
from mtl3d_perception.model.heads import ERROR_SCALE, MATCHED, log_gradient
from mtl3d_perception.train.config import load_config
from mtl3d_perception.train.depth_error import DepthErrorLoss, expected_error_nll
from mtl3d_perception.train.trainer import build_model_from_config

W, H = 64, 48


def _model(**overrides):
    torch.manual_seed(0)
    cfg = resolve_config("cpu").replace(pretrained=False, input_size=(W, H), confidence_head=True, **overrides)
    return build_model(cfg)


def _inputs(baseline: float = 0.2):
    images = torch.rand(2, 2, 3, H, W)
    K = torch.tensor([[50.0, 0, (W - 1) / 2], [0, 50.0, (H - 1) / 2], [0, 0, 1.0]]).expand(2, 2, 3, 3)
    poses = torch.eye(4).repeat(2, 2, 1, 1)
    poses[:, 1, 0, 3] = baseline
    return images, K, poses


@pytest.mark.parametrize("depth_cues", [False, True])
def test_head_outputs_an_error_and_the_confidence_it_implies(depth_cues):
    model = _model(confidence_depth_cues=depth_cues).eval()
    cues = model.heads.confidence.local[0].in_channels - model.config.decoder_channels - model.config.num_depth
    assert cues == 4 + 2 * depth_cues
    images, K, poses = _inputs()
    with torch.no_grad():
        out = model(images, K, poses)
        single = model(images[:, :1], K[:, :1], poses[:, :1])
    err = out["depth_error"]
    assert err.shape == out["depth"].shape == (2, 1, H, W)
    assert (err > 0).all()
    matched = (out["depth_matching_confidence"] / MATCHED).clamp(max=1.0)
    expected = matched * torch.exp(-err / ERROR_SCALE)
    torch.testing.assert_close(out["depth_confidence"], expected)
    # nothing matched in single view: the matching factor keeps the published confidence at 0
    assert single["depth_confidence"].max().item() == 0.0


@pytest.mark.parametrize("depth_cues", [False, True])
def test_head_is_trained_alone_by_its_loss(depth_cues):
    """Its inputs are detached: the depth_error loss moves the head's weights and nothing else."""
    model = _model(confidence_depth_cues=depth_cues).train()
    images, K, poses = _inputs()
    out = model(images, K, poses)
    out["depth_error"].sum().backward()
    with_grad = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters()
                 if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"heads.confidence"}


def test_confidence_head_needs_the_geometric_depth():
    with pytest.raises(ConfigError, match="confidence_head needs geometric_depth"):
        resolve_config("cpu").replace(confidence_head=True, geometric_depth=False)


def test_depth_cues_need_the_confidence_head():
    with pytest.raises(ConfigError, match="confidence_depth_cues needs confidence_head"):
        resolve_config("cpu").replace(confidence_depth_cues=True)


def test_log_gradient_marks_depth_edges_only():
    """One right answer: a wall at 1 m beside one at 2 m: 0 on flat ground, log(2) / 2 on each side of the step."""
    inv = torch.ones(1, 1, 4, 6)
    inv[..., 3:] = 0.5
    grad = log_gradient(inv)
    expected = torch.zeros(1, 1, 4, 6)
    expected[..., 2:4] = 0.5 * math.log(2.0)
    torch.testing.assert_close(grad, expected)


def test_expected_error_nll_is_minimised_by_the_mean_error():
    """One right answer: a constant estimate trained on errors {0.05, 0.1, 0.45} converges to their mean 0.2."""
    error = torch.tensor([0.05, 0.1, 0.45]).view(1, 1, 1, 3)
    mask = torch.ones_like(error, dtype=torch.bool)
    log_s = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_s], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        expected_error_nll(log_s.exp().expand_as(error), error, mask).backward()
        opt.step()
    assert log_s.exp().item() == pytest.approx(0.2, rel=1e-3)
    with pytest.raises(ValueError, match="one shape"):
        expected_error_nll(error, error[..., :2], mask)


class _Batch:
    """The two fields the loss reads (``label``, ``valid``) of a MultiViewBatch with one view."""

    def __init__(self, depth, valid):
        self._depth, self.valid = depth, {"depth": valid}

    def label(self, task):
        assert task == "depth"
        return self._depth


def test_depth_error_loss_targets_the_actual_error_on_labelled_pixels():
    gt = torch.full((2, 1, 1, 4, 4), 2.0)
    gt[0, 0, 0, 0, 0] = float("nan")  # no label here
    pred = torch.full((2, 1, 4, 4), 2.5)  # abs rel 0.25 everywhere in sample 0
    pred[0, 0, 0, 0] = 100.0  # a wild value where there is no label: must not count
    pred[1] = 4.0  # abs rel 1.0 in the sample without labels: must not count either
    valid = torch.tensor([[True], [False]])  # the second sample has no depth labels at all
    est = torch.full((2, 1, 4, 4), 0.25, requires_grad=True)
    loss, logs = DepthErrorLoss()(_Batch(gt, valid), {"depth": pred, "depth_error": est})
    assert logs["depth_error/actual"] == pytest.approx(0.25)
    loss.backward()
    # at the minimiser (estimate == error) the gradient vanishes on every counted pixel
    assert est.grad.abs().max().item() < 1e-6
    assert (est.grad[1] == 0).all()
    with pytest.raises(ValueError, match="confidence_head: true"):
        DepthErrorLoss()(_Batch(gt, valid), {"depth": pred})


def _fine_tune(tmp_path, checkpoint, confidence_head: bool, extra: str = "", reinit: str = "", freeze: str = ""):
    path = tmp_path / "fine_tune.yaml"
    path.write_text(f"model: {{init_checkpoint: '{checkpoint}', reinit: [{reinit}], freeze: [{freeze}], "
                    f"overrides: {{confidence_head: {str(confidence_head).lower()}{extra}}}}}\n")
    return load_config(path)


def test_fine_tuning_config_adds_the_head_to_a_checkpoint(tmp_path, caplog):
    base = build_model(resolve_config("cpu").replace(pretrained=False, input_size=(W, H)))
    path = tmp_path / "base.safetensors"
    save_checkpoint(base, path)
    with caplog.at_level("INFO", logger="mtl3d_perception.train.trainer"):
        tuned = build_model_from_config(_fine_tune(tmp_path, path, True))
    assert "start from their initialisation: heads.confidence" in caplog.text
    assert tuned.config.confidence_head and tuned.heads.confidence is not None
    for name, value in base.state_dict().items():  # every existing weight carried over
        torch.testing.assert_close(tuned.state_dict()[name], value)
    # overrides that drop weights are refused, naming them
    with_head = tmp_path / "head.safetensors"
    save_checkpoint(tuned, with_head)
    with pytest.raises(CheckpointError, match="drop weights.*heads.confidence"):
        build_model_from_config(_fine_tune(tmp_path, with_head, False))


def test_reinit_trains_a_head_of_another_shape_from_scratch(tmp_path, caplog):
    """A head whose inputs change (a new cue) cannot take the checkpoint's weights: ``model.reinit`` names it, it
    starts from its initialisation and every other weight is carried over; without it the shapes are refused."""
    base = _model()
    path = tmp_path / "head.safetensors"
    save_checkpoint(base, path)
    support = ", confidence_depth_cues: true"  # two more cues: the head's first convolution changes shape
    with pytest.raises(CheckpointError, match="change the shapes.*model.reinit"):
        build_model_from_config(_fine_tune(tmp_path, path, True, support))
    with caplog.at_level("INFO", logger="mtl3d_perception.train.trainer"):
        tuned = build_model_from_config(_fine_tune(tmp_path, path, True, support, reinit="heads.confidence"))
    assert "start from their initialisation: heads.confidence" in caplog.text
    assert tuned.config.confidence_depth_cues
    fresh = _model(confidence_depth_cues=True).heads.confidence.state_dict()
    for name, value in tuned.state_dict().items():
        if name.startswith("heads.confidence."):  # the initialisation, not the checkpoint's head
            assert value.shape == fresh[name.removeprefix("heads.confidence.")].shape
        else:
            torch.testing.assert_close(value, base.state_dict()[name])
    # the same head's weights are re-initialised when named, even without a shape change
    again = build_model_from_config(_fine_tune(tmp_path, path, True, reinit="heads.confidence"))
    trained = base.heads.confidence.local[0].weight
    assert not torch.equal(again.heads.confidence.local[0].weight, trained)
    with pytest.raises(ConfigError, match=r"reinit names 'heads.confidance'.*parts of 'heads' are .*'heads.confidence'"):
        build_model_from_config(_fine_tune(tmp_path, path, True, reinit="heads.confidance"))
    # a part both re-initialised and frozen would never leave its initialisation; without a checkpoint reinit means nothing
    for freeze in ("heads.confidence", "heads", "heads.confidence, encoder"):
        with pytest.raises(ConfigError, match="model.freeze .* keeps fixed"):
            build_model_from_config(_fine_tune(tmp_path, path, True, reinit="heads.confidence", freeze=freeze))
    build_model_from_config(_fine_tune(tmp_path, path, True, reinit="heads.confidence", freeze="heads.confidences, encoder"))
    with pytest.raises(ConfigError, match="needs model.init_checkpoint"):
        build_model_from_config(_fine_tune(tmp_path, "", True, reinit="heads.confidence"))


@pytest.mark.parametrize("cues", [{}, {"confidence_depth_cues": True}])
def test_inference_copy_gives_the_same_error_and_confidence(cues):
    from mtl3d_perception.model.inference import prepare_for_inference

    model = _model(**cues).eval()
    with torch.no_grad():  # non-trivial running statistics, so folding them matters
        for m in model.heads.confidence.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.heads.confidence.out[-1].weight.normal_(std=0.3)
    fast = prepare_for_inference(model)
    images, K, poses = _inputs()
    with torch.no_grad():
        ref, out = model(images, K, poses), fast(images, K, poses)
    torch.testing.assert_close(out["depth_error"], ref["depth_error"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["depth_confidence"], ref["depth_confidence"], rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.heads.confidence.modules())  # all folded


HOLOLENS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hololens_000"
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default.safetensors"


def test_shipped_model_publishes_the_learned_confidence_through_the_pipeline():
    """The runtime path (node and replay share it): 0 on the single-view first frame, the head's confidence after."""
    if not HOLOLENS.is_dir():
        pytest.skip(f"{HOLOLENS} absent")
    from mtl3d_perception.data.sequence import PosedSequence
    from mtl3d_perception.model import load_checkpoint
    from mtl3d_perception.runtime import Frame, PerceptionPipeline

    model = load_checkpoint(SHIPPED)
    assert model.config.confidence_head and model.config.confidence_depth_cues, \
        "the shipped default has the learned confidence head with the depth cues (stages 7 and 9)"
    seq = PosedSequence(HOLOLENS)
    pipe = PerceptionPipeline(model)
    products = []
    for i in (300, 302):  # held-out end of the sequence, 2 frames apart as in the evaluation
        f = seq.frame(i, depth=False, semantic=False, normals=False)
        products.append(pipe.process(Frame(int(f.stamp * 1e9), "cam", f.rgb, f.K, f.T_world_cam)))
    first, second = products
    assert first.single_view and not second.single_view
    assert float(np.nanmax(first.depth_confidence)) == 0.0  # exactly: "confidence > 0" is "matched"
    conf = second.depth_confidence
    assert conf.shape == second.depth.shape and conf.dtype == np.float32
    assert 0.0 <= float(conf.min()) and float(conf.max()) <= 1.0
    # exp(-expected abs rel / 0.1): a typical 5-20 % expected error -> 0.13-0.6, spread over the image
    assert 0.1 < float(np.median(conf[conf > 0])) < 0.7
    assert float(np.quantile(conf, 0.9) - np.quantile(conf, 0.1)) > 0.05
