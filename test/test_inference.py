"""The inference path (``model.inference``, the correlation cost volume, the pipeline) gives the reference outputs.

The reference path is the shipped model as trained: BatchNorm layers, the chunked grid_sample cost volume
(``cost_volume_backend: reference``). The inference path folds BatchNorm, takes the correlation cost volume and
the pipeline's postprocessing. On real HoloLens frames (two-view with the recorded poses, and single-view), depth,
semantics, normals, boundary and the confidence must agree to 1e-4 of each output's scale.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from mtl3d_perception.geometry import relative_pose, resize_intrinsics
from mtl3d_perception.model import build_model, load_checkpoint, resolve_config
from mtl3d_perception.model.inference import InferenceOnlyError, fold_batchnorm, prepare_for_inference
from mtl3d_perception.runtime import Frame, PerceptionPipeline, RuntimeConfig

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default.safetensors"
REL_TOL = 1e-4
# (reference frame, source frame) of ../shared/data/hololens_000: two-view pairs 3-4 frames apart, one single view
PAIRS = ((10, 7), (40, 36), (5, 5))


def _reference_path(model):
    """``model`` as trained, with the reference (grid_sample) cost volume."""
    cfg = model.config.replace(cost_volume_backend="reference")
    model.config = model.cvm.config = cfg
    return model.eval()


def _assert_close(got: torch.Tensor, want: torch.Tensor, name: str, rel_tol: float = REL_TOL) -> None:
    """|got - want| <= rel_tol x the output's scale: its largest magnitude, at least 1 (confidence is in [0, 1], ~0
    in single view)."""
    scale = max(want.abs().max().item(), 1.0)
    err = (got.float() - want.float()).abs().max().item()
    assert err <= rel_tol * scale, f"{name}: max |difference| {err:.3g} > {rel_tol} x {scale:.3g}"


@pytest.fixture(scope="module")
def real_pairs():
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hololens_000"
    if not (root / "poses.txt").is_file():
        pytest.skip(f"{root} absent")
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} absent")
    images = sorted((root / "images").iterdir())
    poses = np.loadtxt(root / "poses.txt").reshape(-1, 4, 4)
    K_cam = np.loadtxt(root / "K.txt")
    rgb = {i: np.ascontiguousarray(cv2.imread(str(images[i]))[..., ::-1]) for pair in PAIRS for i in pair}
    return rgb, poses, K_cam


def test_prepared_model_gives_the_reference_outputs_on_real_frames(real_pairs):
    rgb, poses, K_cam = real_pairs
    reference = _reference_path(load_checkpoint(SHIPPED))
    prepared = prepare_for_inference(load_checkpoint(SHIPPED))
    W, H = reference.config.input_size
    K = torch.tensor(resize_intrinsics(K_cam, rgb[PAIRS[0][0]].shape[1::-1], (W, H)), dtype=torch.float32)[None]

    def image(i):
        small = cv2.resize(rgb[i], (W, H), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0

    with torch.inference_mode():
        for ref, src in PAIRS:
            T = torch.tensor(relative_pose(poses[src], poses[ref]), dtype=torch.float32)[None]
            if ref == src:
                T = torch.eye(4)[None]
            want = reference.predict(reference.encode(image(ref)), reference.encode(image(src)), K, T)
            got = prepared.predict(prepared.encode(image(ref)), prepared.encode(image(src)), K, T)
            assert set(got) == set(want)
            for name in want:
                _assert_close(got[name], want[name], f"{name} ({ref}, {src})")
            labels_agree = (got["semantic"].argmax(1) == want["semantic"].argmax(1)).double().mean().item()
            assert labels_agree > 0.999, f"semantic labels agree on {labels_agree:.4%} of pixels"
            if ref != src:  # the test pairs are real two-view pairs: the geometry is used
                assert want["depth_confidence"].mean() > 0.05


def test_pipeline_products_are_the_reference_outputs(real_pairs):
    """Products (postprocessing included) of the pipeline equal the reference model's outputs."""
    rgb, poses, K_cam = real_pairs
    reference = _reference_path(load_checkpoint(SHIPPED))
    W, H = reference.config.input_size
    pipe = PerceptionPipeline(load_checkpoint(SHIPPED), RuntimeConfig(device="cpu").replace(min_baseline_m=0.01))
    ref, src = PAIRS[1]
    size = rgb[ref].shape[1::-1]
    pipe.process(Frame(1_000_000_000, "cam", rgb[src], K_cam, poses[src]))
    products = pipe.process(Frame(1_100_000_000, "cam", rgb[ref], K_cam, poses[ref]))
    assert not products.single_view
    K = torch.tensor(resize_intrinsics(K_cam, size, (W, H)), dtype=torch.float32)[None]
    T = torch.tensor(relative_pose(poses[src], poses[ref]), dtype=torch.float32)[None]
    with torch.inference_mode():
        want = reference.predict(reference.encode(pipe.preprocess(Frame(0, "cam", rgb[ref], K_cam))[1]),
                                 reference.encode(pipe.preprocess(Frame(0, "cam", rgb[src], K_cam))[1]), K, T)
    ok = np.isfinite(products.depth)
    assert ok.mean() > 0.99
    _assert_close(torch.from_numpy(products.depth[ok]), want["depth"][0, 0][torch.from_numpy(ok)], "depth")
    # the prior/geometry agreement factor multiplies relative inverse-depth differences by up to 1/0.2 = 5
    _assert_close(torch.from_numpy(products.depth_confidence), want["depth_confidence"][0, 0], "depth_confidence",
                  rel_tol=5 * REL_TOL)
    _assert_close(torch.from_numpy(products.normals[ok]), want["normals"][0].permute(1, 2, 0)[torch.from_numpy(ok)],
                  "normals")
    labels = want["semantic"][0].argmax(0).numpy()
    assert (products.semantic == labels).mean() > 0.999


def test_folding_keeps_the_original_and_refuses_training():
    torch.manual_seed(0)
    model = build_model(resolve_config("cpu").replace(pretrained=False, input_size=(64, 48))).eval()
    for m in model.modules():  # non-trivial running statistics, so a wrong fold would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    prepared = prepare_for_inference(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    # every BatchNorm that follows a convolution is folded; the neck's (after a sum of projections) stays
    assert sum(isinstance(m, nn.BatchNorm2d) for m in prepared.modules()) == 1
    assert not prepared.training and not any(p.requires_grad for p in prepared.parameters())
    with pytest.raises(InferenceOnlyError, match="prepared for inference"):
        prepared.train()
    prepared.eval()  # eval stays allowed
    assert prepared.heads.fused_decoders is not None and model.heads.fused_decoders is None
    images = torch.rand(2, 3, 48, 64)
    K = torch.tensor([[[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]])
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = -0.1
    with torch.inference_mode():
        want_f, got_f = model.encode(images), prepared.encode(images)
        want = model.predict(want_f.select(slice(0, 1)), want_f.select(slice(1, 2)), K, T)
        got = prepared.predict(got_f.select(slice(0, 1)), got_f.select(slice(1, 2)), K, T)
    for a, b in zip(want_f.image, got_f.image):
        _assert_close(b, a, "encoder level")
    for name in want:
        _assert_close(got[name], want[name], name)
    assert fold_batchnorm(prepared) == 0  # folding twice folds nothing more


def test_fold_needs_eval_mode():
    model = build_model(resolve_config("tiny").replace(pretrained=False))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model.train())
