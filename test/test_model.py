"""CvM-MTL network: registry-wide shapes/units/gradients (timm's tests/test_models.py style), the
single-view and streaming equivalences, presets/config validation, encoders' weight loading."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from mtl3d_perception.model import (
    ConfigError,
    FrameFeatures,
    ModelConfig,
    available_presets,
    build_model,
    list_encoders,
    register_refiner,
    resolve_config,
)
from mtl3d_perception.model.config import TASKS
from mtl3d_perception.model.encoders import ViTSmall, build_encoder, efficientnet_lite0_classifier

PRESETS = ("tiny", "small", "base")
W, H = 64, 48  # tiny test input; multiples of 8, with an odd stride-8 grid height after padding (6)


def _model(preset: str, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = resolve_config(preset).replace(pretrained=False, **changes)
    return build_model(cfg)


def _inputs(B: int = 2, V: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(B, V, 3, H, W, generator=g)
    K = torch.tensor([[50.0, 0.0, (W - 1) / 2], [0.0, 50.0, (H - 1) / 2], [0.0, 0.0, 1.0]]).expand(B, V, 3, 3).clone()
    poses = torch.eye(4).expand(B, V, 4, 4).clone()
    for v in range(1, V):  # sideways and a little rotation about y
        a = 0.05 * v
        poses[:, v, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        poses[:, v, 0, 3] = 0.1 * v
    return images, K, poses


def _check_outputs(out: dict, cfg: ModelConfig, lead: tuple[int, ...]) -> None:
    assert set(TASKS) <= set(out)
    shapes = {"semantic": cfg.num_classes, "depth": 1, "normals": 3, "boundary": 1}
    for task, c in shapes.items():
        t = out[task]
        assert tuple(t.shape) == (*lead, c, H, W), task
        assert t.dtype == torch.float32, task
        assert torch.isfinite(t).all(), task
    depth = out["depth"]
    assert (depth >= cfg.depth_min * (1 - 1e-5)).all() and (depth <= cfg.depth_max * (1 + 1e-5)).all()
    norm = out["normals"].norm(dim=-3)
    torch.testing.assert_close(norm, torch.ones_like(norm), atol=1e-5, rtol=0)


def test_presets_are_listed():
    assert {"tiny", "small", "base"} <= set(available_presets())
    assert {"tiny_cnn", "efficientnet_lite0", "vit_small"} <= set(list_encoders())


@pytest.mark.parametrize("preset", PRESETS)
def test_forward_shapes_units_and_gradients(preset):
    model = _model(preset).train()
    B = 2 if preset == "tiny" else 1  # the big encoders are slow on CPU; B*V = 2 still trains BN
    images, K, poses = _inputs(B=B)
    out = model(images, K, poses, return_features=True)
    _check_outputs(out, model.config, (B,))
    feats = out["features"]
    assert feats["image"].shape == (B, model.config.fusion_channels, H // 8, W // 8)
    assert set(feats["tasks"]) == set(TASKS)
    loss = sum(out[t].float().mean() for t in TASKS) + out["depth"].log().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not no_grad, f"parameters without a (finite) gradient: {no_grad[:10]}"
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert len(zero) <= len(list(model.parameters())) // 20, f"many all-zero gradients: {zero[:10]}"


@pytest.mark.parametrize("name", ["tiny_cnn", "efficientnet_lite0", "vit_small"])
def test_encoder_feature_info_matches_outputs(name):
    enc = build_encoder(ModelConfig(encoder=name, pretrained=False)).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, H, W))
    assert len(feats) == len(enc.feature_info)
    for f, info in zip(feats, enc.feature_info):
        assert f.shape[1] == info["num_chs"]
        assert f.shape[-2:] == (math.ceil(H / info["reduction"]), math.ceil(W / info["reduction"]))


def test_baseline_without_cvm_has_same_heads():
    model = _model("tiny", use_cvm=False).eval()
    assert model.cvm is None
    images, K, poses = _inputs()
    with torch.no_grad():
        _check_outputs(model(images, K, poses), model.config, (2,))
        _check_outputs(model(images, K, poses, all_views=True), model.config, (2, 2))


@pytest.mark.parametrize("V", [2, 3])
def test_all_views_matches_each_view_as_reference(V):
    """View i of the all-views pass == the batch forward with view i moved to the front."""
    model = _model("tiny").eval()
    images, K, poses = _inputs(V=V)
    with torch.no_grad():
        allv = model(images, K, poses, all_views=True, return_features=True)
        _check_outputs(allv, model.config, (2, V))
        assert allv["features"]["image"].shape[:2] == (2, V)
        for i in range(V):
            order = [i] + [j for j in range(V) if j != i]
            ref = model(images[:, order], K[:, order], poses[:, order])
            for t in TASKS:
                torch.testing.assert_close(allv[t][:, i], ref[t], atol=1e-5, rtol=1e-5)


def test_single_view_equals_duplicated_reference():
    """Paper protocol: one image == the image twice with the identity relative pose == predict(f, f, K, I)."""
    model = _model("tiny").eval()
    images, K, poses = _inputs(V=1)
    with torch.no_grad():
        single = model(images, K, poses)
        dup = model(images.repeat(1, 2, 1, 1, 1), K.repeat(1, 2, 1, 1), poses.repeat(1, 2, 1, 1))
        f = model.encode(images[:, 0])
        streamed = model.predict(f, f, K[:, 0], torch.eye(4).expand(2, 4, 4))
        single_all = model(images, K, poses, all_views=True)
    for t in TASKS:
        torch.testing.assert_close(single[t], dup[t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(single[t], streamed[t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(single_all[t][:, 0], single[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("V", [2, 3])
def test_streaming_equals_batch_forward(V):
    model = _model("tiny").eval()
    images, K, poses = _inputs(V=V)
    from mtl3d_perception.geometry import relative_pose

    with torch.no_grad():
        batch = model(images, K, poses)
        frames = [model.encode(images[:, v]).to("cpu") for v in range(V)]  # cached per frame
        T = relative_pose(poses[:, 1:], poses[:, :1])
        src = frames[1] if V == 2 else frames[1:]
        streamed = model.predict(frames[0], src, K[:, 0], T[:, 0] if V == 2 else T)
    for t in TASKS:
        torch.testing.assert_close(streamed[t], batch[t], atol=1e-5, rtol=1e-5)
    assert isinstance(frames[0], FrameFeatures) and frames[0].size == (H, W)


def test_reference_is_matched_with_its_nearest_sources():
    """cvm_max_sources=2 (the paper's top-2 neighbours): with 4 views, the farthest source is ignored."""
    from mtl3d_perception.geometry import relative_pose
    from mtl3d_perception.model.cvm import nearest_views

    model = _model("tiny").eval()
    assert model.config.cvm_max_sources == 2
    images, K, poses = _inputs(V=4)
    poses[0, 1, 0, 3] = 2.0  # batch item 0: source 1 is far away; item 1: source 3 is the farthest
    with torch.no_grad():
        out = model(images, K, poses)
        for b, keep in ((0, [0, 2, 3]), (1, [0, 1, 2])):
            sub = model(images[b : b + 1, keep], K[b : b + 1, keep], poses[b : b + 1, keep])
            for t in TASKS:
                torch.testing.assert_close(out[t][b : b + 1], sub[t], atol=1e-5, rtol=1e-5)
        T = relative_pose(poses[:, :, None], poses[:, None, :])  # [B, V, V]: view i <- view j
        nb = nearest_views(T, 2)
    assert nb.shape == (2, 4, 2)
    assert sorted(nb[0, 0].tolist()) == [2, 3] and sorted(nb[1, 0].tolist()) == [1, 2]
    assert all(i not in nb[b, i].tolist() for b in range(2) for i in range(4))


def test_cvm_sees_the_source_view():
    """The reference prediction depends on the source image and on the pose (the CvM is wired in)."""
    model = _model("tiny").eval()
    images, K, poses = _inputs(V=2)
    other = images.clone()
    other[:, 1] = torch.rand_like(other[:, 1])
    poses2 = poses.clone()
    poses2[:, 1, 0, 3] += 0.3
    with torch.no_grad():
        a = model(images, K, poses)["depth"]
        b = model(other, K, poses)["depth"]
        c = model(images, K, poses2)["depth"]
    assert (a - b).abs().max() > 1e-6
    assert (a - c).abs().max() > 1e-6


def test_eval_is_deterministic():
    model = _model("tiny").eval()
    images, K, poses = _inputs()
    with torch.no_grad():
        a = model(images, K, poses)
        b = model(images, K, poses)
    for t in TASKS:
        assert torch.equal(a[t], b[t])


def test_bad_inputs_raise_with_the_shape():
    model = _model("tiny").eval()
    images, K, poses = _inputs()
    with pytest.raises(ValueError, match="multiples of 8"):
        model(images[..., :45, :], K, poses)
    with pytest.raises(ValueError, match=r"intrinsics must be \[B, V, 3, 3\]"):
        model(images, K[:, :1], poses)
    with pytest.raises(ValueError, match="poses"):
        model(images, K, poses[..., :3, :])


# --------------------------------------------------------------------------------------------------
# Config and presets
# --------------------------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ConfigError, match="'cvm_layer'"):
        ModelConfig.from_dict({"cvm_layer": 3})
    with pytest.raises(ConfigError, match="'num_depth' expects int"):
        ModelConfig.from_dict({"num_depth": "many"})
    with pytest.raises(ConfigError, match="unknown encoder 'resnet9'.*tiny_cnn"):
        build_model({"encoder": "resnet9"})
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        build_model("huge")
    path = tmp_path / "mine.yaml"
    path.write_text("encoder: tiny_cnn\nnum_depth: 8\nbogus: 1\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml.*'bogus'"):
        build_model(str(path))
    path.write_text("encoder: tiny_cnn\nnum_depth: 8\ninput_size: [64, 48]\n")
    cfg = resolve_config(path)
    assert cfg.num_depth == 8 and cfg.input_size == (64, 48) and cfg.name == "mine"
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_preset_yaml_files_are_the_shipped_ones():
    root = Path(__file__).resolve().parents[1]
    for name in PRESETS:
        assert (root / "config" / "model" / f"{name}.yaml").is_file()
    assert resolve_config("small").encoder == "efficientnet_lite0"
    assert resolve_config("base").encoder == "vit_small"


def test_small_cvm_parameter_budget():
    model = _model("small")
    n = sum(p.numel() for p in model.cvm.parameters())
    assert n <= 2_000_000, n


def test_refiner_registry():
    calls = []

    @register_refiner("_test_scale")
    class Scale(nn.Module):
        def __init__(self, task_channels, config, factor=1.0):
            super().__init__()
            self.factor = nn.Parameter(torch.tensor(float(factor)))
            assert set(task_channels) == set(TASKS)

        def forward(self, feats):
            calls.append(1)
            return {t: f * self.factor for t, f in feats.items()}

    model = _model("tiny", refiner="_test_scale", refiner_args={"factor": 2.0}).eval()
    images, K, poses = _inputs()
    with torch.no_grad():
        _check_outputs(model(images, K, poses), model.config, (2,))
    assert calls
    with pytest.raises(ConfigError, match="unknown refiner"):
        _model("tiny", refiner="_nope")


# --------------------------------------------------------------------------------------------------
# Encoder weights
# --------------------------------------------------------------------------------------------------


def _grace_hopper() -> torch.Tensor:
    """matplotlib's sample photo (Grace Hopper in US Navy uniform), centre-cropped to 224x224, [1,3,224,224] in [0,1]."""
    import cv2

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def test_efficientnet_lite0_imagenet_weights_are_used_right():
    """The shipped ImageNet weights, loaded strictly into our definition, classify a known photo:
    Grace Hopper -> ImageNet class 652 "military uniform" (the classic TF/Keras example); a random
    init does not, and the encoder's trunk equals the classifier's trunk."""
    from mtl3d_perception.model.encoders import LITE_MEAN, LITE_STD, EfficientNetLite0Encoder

    x = _grace_hopper()
    xn = (x - torch.tensor(LITE_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE_STD).view(1, 3, 1, 1)
    net = efficientnet_lite0_classifier(pretrained=True).eval()
    with torch.no_grad():
        prob = net(xn).softmax(1)[0]
    top5 = prob.topk(5).indices.tolist()
    assert top5[0] == 652, top5
    assert prob[652] > 0.25
    assert {834, 906, 457} & set(top5)  # suit, Windsor tie, bow tie
    torch.manual_seed(0)
    with torch.no_grad():
        rand = efficientnet_lite0_classifier(pretrained=False).eval()(xn).softmax(1)[0]
    assert rand[652] < 0.01
    enc = EfficientNetLite0Encoder(pretrained=True).eval()
    with torch.no_grad():
        feats = enc(xn)
        _, ref = net.trunk(xn, enc._TAPS)
    for a, b in zip(feats, ref):
        assert torch.equal(a, b)
    assert not hasattr(enc.net, "_fc")


def _dinov2_layout_state(seed: int, grid: int) -> dict[str, torch.Tensor]:
    """A random ViT-S/16 state dict in DINOv2's key layout (with mask_token and a pos_embed for ``grid``)."""
    g = torch.Generator().manual_seed(seed)
    dim, mlp = 384, 1536
    state = {
        "cls_token": torch.randn(1, 1, dim, generator=g),
        "pos_embed": torch.randn(1, 1 + grid * grid, dim, generator=g),
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16, generator=g) * 0.02,
        "patch_embed.proj.bias": torch.randn(dim, generator=g) * 0.02,
        "norm.weight": torch.rand(dim, generator=g),
        "norm.bias": torch.randn(dim, generator=g),
    }
    for i in range(12):
        p = f"blocks.{i}."
        for name, shape in (
            ("norm1.weight", (dim,)), ("norm1.bias", (dim,)), ("attn.qkv.weight", (3 * dim, dim)),
            ("attn.qkv.bias", (3 * dim,)), ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
            ("ls1.gamma", (dim,)), ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
            ("mlp.fc1.weight", (mlp, dim)), ("mlp.fc1.bias", (mlp,)), ("mlp.fc2.weight", (dim, mlp)),
            ("mlp.fc2.bias", (dim,)), ("ls2.gamma", (dim,)),
        ):
            state[p + name] = torch.randn(*shape, generator=g) * 0.02
    return state


def test_vit_small_loads_a_dinov2_layout_state_dict(tmp_path):
    from safetensors.torch import save_file

    state = _dinov2_layout_state(1, grid=14)
    pth = tmp_path / "dinov2_vits16.pth"
    torch.save(state, pth)
    model = build_model({"encoder": "vit_small", "encoder_weights": str(pth), "input_size": [64, 48]})
    own = model.encoder.state_dict()
    for k, v in state.items():
        if k != "mask_token":
            assert torch.equal(own[k], v), k
    # another grid is resampled; safetensors works too
    other = _dinov2_layout_state(2, grid=37)
    st = tmp_path / "dinov2_grid37.safetensors"
    save_file(other, str(st))
    enc = ViTSmall()
    from mtl3d_perception.model.encoders import load_state_dict_file

    enc.load_backbone(load_state_dict_file(st))
    assert torch.equal(enc.state_dict()["blocks.3.attn.qkv.weight"], other["blocks.3.attn.qkv.weight"])
    assert enc.pos_embed.shape == (1, 1 + 14 * 14, 384)
    # mismatches name the key and both shapes
    bad = dict(state)
    bad["blocks.0.mlp.fc1.weight"] = torch.zeros(10, 384)
    with pytest.raises(ConfigError, match=r"blocks\.0\.mlp\.fc1\.weight.*\(10, 384\).*\(1536, 384\)"):
        ViTSmall().load_backbone(bad)
    missing = {k: v for k, v in state.items() if k != "norm.bias"}
    with pytest.raises(ConfigError, match="norm.bias"):
        ViTSmall().load_backbone(missing)


@pytest.mark.slow
def test_torch_compile_tiny_matches_eager():
    model = _model("tiny").eval()
    images, K, poses = _inputs(B=1)
    compiled = torch.compile(model)
    with torch.no_grad():
        eager = model(images, K, poses)
        out = compiled(images, K, poses)
    for t in TASKS:
        torch.testing.assert_close(out[t], eager[t], atol=1e-4, rtol=1e-4)


def test_plane_sweep_peaks_at_the_true_depth():
    """Wiring of e(.): K resized to the feature grid, T_src_ref direction, candidates from the config.

    The source camera is the reference moved sideways by tx; a fronto-parallel plane at candidate
    depth z then shifts the source features by f_feat * tx / z pixels, so the correlation of random
    features peaks at that candidate.
    """
    from mtl3d_perception.geometry import depth_candidates, relative_pose
    from mtl3d_perception.model.cvm import plane_sweep

    cfg = ModelConfig(num_depth=16, depth_min=0.5, depth_max=8.0)
    Wi, Hi, f = 256, 128, 160.0  # input size and focal; feature grid 32x16, f_feat = 20
    K = torch.tensor([[[f, 0.0, (Wi - 1) / 2], [0.0, f, (Hi - 1) / 2], [0.0, 0.0, 1.0]]])
    k = 5
    z = float(depth_candidates(cfg.depth_min, cfg.depth_max, cfg.num_depth)[k])
    shift = 3  # feature pixels
    tx = shift * z / (f / 8)
    T_world_ref, T_world_src = torch.eye(4)[None], torch.eye(4)[None].clone()
    T_world_src[0, 0, 3] = tx
    T_src_ref = relative_pose(T_world_src, T_world_ref)
    ref = torch.randn(1, 32, Hi // 8, Wi // 8)
    src = torch.zeros_like(ref)
    src[..., : -shift] = ref[..., shift:]  # src(x') = ref(x' + shift)
    cost = plane_sweep(ref, src[:, None], K, T_src_ref[:, None], (Wi, Hi), cfg.depth_range, cfg.num_depth)
    best = cost[0, :, 2:-2, shift + 2 : -2].argmax(0)
    assert (best == k).float().mean() > 0.95


@pytest.mark.parametrize("dims", [(-1,), (-2,)], ids=["mirror-x", "mirror-y"])
def test_spatial_encoder_grid_is_centred_as_resize_intrinsics_assumes(dims):
    """s(.)'s feature pixel j is centred on input pixel 8j + 3.5 (DESIGN §4), which is what makes
    ``geometry.resize_intrinsics`` the exact K of the stride-8 grid in ``plane_sweep``.

    With mirror-symmetric kernels the encoder commutes with mirroring the image exactly when the grid
    is placed symmetrically in the image: c(j) + c(w-1-j) = W-1 with c(j) = 8j + c0 gives c0 = 3.5.
    (UniMatch's 7x7 stride-2 stem, centres at 2j, fails this by whole values.)
    """
    from mtl3d_perception.model.cvm import SpatialEncoder

    torch.manual_seed(0)
    enc = SpatialEncoder((8, 8, 8), 8)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)
        x = torch.rand(1, 3, H, W)
        torch.testing.assert_close(enc(x.flip(dims)), enc(x).flip(dims), atol=1e-4, rtol=1e-4)


def test_transformer_attends_within_windows():
    """One unshifted block mixes only inside a window (in both views); the shifted block crosses windows."""
    from mtl3d_perception.model.cvm import MultiViewTransformer

    torch.manual_seed(0)
    x = torch.randn(1, 2, 16, 8, 6)  # [B, V, C, h, w]: windows of 4x3, and a padded variant below
    y = x.clone()
    y[0, 0, :, 0, 0] += 1.0  # a change in the top-left window of view 0
    one = MultiViewTransformer(16, layers=1, heads=2, splits=2, ffn_expansion=2).eval()
    with torch.no_grad():
        d = (one(x) - one(y)).abs().amax(2)  # [B, V, h, w]
    assert d[0, :, :4, :3].amax() > 0 and d[0, 1, :4, :3].amax() > 0  # reaches the other view
    assert d[0, :, 4:, :].amax() == 0 and d[0, :, :, 3:].amax() == 0
    two = MultiViewTransformer(16, layers=2, heads=2, splits=2, ffn_expansion=2).eval()
    with torch.no_grad():
        d2 = (two(x) - two(y)).abs().amax(2)
    assert d2[0, 0, 4:, 3:].amax() > 0  # through the shifted windows
    # ...but not around the wrap of the roll: the far corner shares a rolled window with the
    # top-left rows/columns only through the Swin mask
    assert d2[0, :, 6:, 4:].amax() == 0
    # padded grid (h=7 -> 8): real pixels do not see the padding
    with torch.no_grad():
        a = two(x[..., :7, :])
    assert a.shape == (1, 2, 16, 7, 6) and torch.isfinite(a).all()


@pytest.mark.gpu
@pytest.mark.parametrize("preset", PRESETS)
def test_cuda_matches_cpu_and_runs_bf16(preset, monkeypatch):
    """On CUDA the cost volume runs the Triton kernels: fp32 outputs match the CPU reference path,
    and bf16 autocast gives finite outputs of the same shapes."""
    model = _model(preset).eval()
    images, K, poses = _inputs()
    # TF32 convolutions (cuDNN's default) would dominate the difference; compare true fp32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with torch.no_grad():
        cpu = model(images, K, poses)
        model.cuda()
        gpu = model(images.cuda(), K.cuda(), poses.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(images.cuda(), K.cuda(), poses.cuda())
    for t in TASKS:
        torch.testing.assert_close(gpu[t].cpu(), cpu[t], atol=2e-3, rtol=2e-3)
    _check_outputs({t: v.float().cpu() for t, v in bf16.items()}, model.config, (2,))
