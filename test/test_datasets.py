"""Datasets, augmentation geometry, label regimes, NYUv2 .mat loading and the MultiViewBatch."""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest
import torch

from mtl3d_perception import geometry
from mtl3d_perception.classes import IGNORE_INDEX, class_index
from mtl3d_perception.data.augment import (
    AugmentConfig,
    CameraEffectsConfig,
    augment_views,
    camera_effects,
    flip_view,
)
from mtl3d_perception.data.batch import TASKS, MultiViewBatch, ViewSample, collate
from mtl3d_perception.data.datasets import (
    SYNTHETIC_SEED_BASE,
    SourceConfig,
    apply_label_regime,
    build_dataset,
    nyu_label_mapping,
    parse_data_spec,
)
from mtl3d_perception.train.config import load_config

SIZE = (64, 48)


def synthetic(split="train", n=2, frames=6, augment=None, regime="full", **kw):
    cfg = SourceConfig(kind="synthetic", split=split, num_scenes=n, frames_per_scene=frames, **kw)
    return build_dataset([cfg], image_size=SIZE, num_views=2, augment=augment, label_regime=regime)


def test_synthetic_sample_shapes_and_labels():
    b = synthetic()[3]
    assert b.images.shape == (1, 2, 3, 48, 64) and b.images.dtype == torch.float32
    assert b.K.shape == (1, 2, 3, 3) and b.poses.shape == (1, 2, 4, 4)
    assert b.semantic.shape == (1, 2, 48, 64) and b.semantic.dtype == torch.long
    assert b.depth.shape == (1, 2, 1, 48, 64) and b.normals.shape == (1, 2, 3, 48, 64)
    assert b.boundary.shape == (1, 2, 1, 48, 64)
    assert all(b.valid[t].all() for t in TASKS)
    assert b.meta[0]["frames"][0] == 3 and b.meta[0]["frames"][1] == 1  # eval gap 2, an earlier frame
    assert not torch.equal(b.poses[0, 0], b.poses[0, 1])


def test_synthetic_splits_use_disjoint_scenes_and_keys_are_reproducible():
    seeds = {s: {synthetic(s, n=2, frames=2)[i].meta[0]["scene"] for i in range(4)} for s in SYNTHETIC_SEED_BASE}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["val"] & seeds["test"])
    ds = synthetic(augment=AugmentConfig())
    a, b, c = ds[(2, 5)], ds[(2, 5)], ds[(2, 6)]
    assert torch.equal(a.images, b.images) and torch.equal(a.K, b.K)
    assert not torch.equal(a.images, c.images)


def _agreement(views: list[ViewSample]) -> float:
    """Median relative disagreement of view 0's depth seen from view 1 (small when K and poses are right)."""
    T_b_a = geometry.relative_pose(views[1].T_world_cam, views[0].T_world_cam)
    z_pred, z_b = geometry.depth_in_other_view(views[0].depth, views[0].K, T_b_a, views[1].depth, views[1].K)
    ok = np.isfinite(z_pred) & np.isfinite(z_b)
    assert ok.mean() > 0.3
    return float(np.median(np.abs(z_pred[ok] - z_b[ok]) / z_b[ok]))


def _raw_views(seed=3):
    from mtl3d_perception.data.synthetic import SyntheticScene, default_intrinsics

    scene = SyntheticScene(seed)
    path = scene.camera_path(4)
    K = default_intrinsics(80, 60)
    views = []
    for j in (3, 1):
        r = scene.render(path[j], K, (80, 60))
        views.append(ViewSample(rgb=r["rgb"], K=K, T_world_cam=path[j], depth=r["depth"], normals=r["normals"],
                                semantic=r["semantic"], boundary=r["boundary"].astype(np.float32)))
    return views


def test_augmentation_keeps_views_geometrically_consistent():
    views = _raw_views()
    base = _agreement(views)
    assert base < 0.01
    cfg = AugmentConfig(scale=(1.2, 1.4), hflip=1.0)
    aug = augment_views(views, SIZE, cfg, np.random.default_rng(0))
    assert aug[0].hw == (48, 64) and aug[1].hw == (48, 64)
    geometry.check_rigid(aug[0].T_world_cam)
    assert _agreement(aug) < 0.02
    # A wrong pose (not flipped with the images) breaks the agreement: the check has teeth.
    broken = [dataclasses.replace(a, T_world_cam=v.T_world_cam) for a, v in zip(aug, views)]
    assert _agreement(broken) > 3 * _agreement(aug)


def test_flip_mirrors_normals_consistently_with_depth():
    v = _raw_views()[0]
    f = flip_view(v)
    derived = geometry.normals_from_depth(f.depth, f.K)
    ok = np.isfinite(derived).all(-1)
    cos = (derived[ok] * f.normals[ok]).sum(-1)
    assert np.median(cos) > 0.99
    assert np.array_equal(f.semantic, v.semantic[:, ::-1])


@pytest.mark.parametrize("regime", ["full", "random", "one"])
def test_label_regimes(regime):
    rng = np.random.default_rng(0)
    counts = [sum(apply_label_regime(dict.fromkeys(TASKS, True), regime, rng).values()) for _ in range(50)]
    if regime == "full":
        assert set(counts) == {4}
    elif regime == "one":
        assert set(counts) == {1}
    else:
        assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    # Only available tasks can be kept.
    kept = apply_label_regime({"depth": True}, regime, rng)
    assert kept["depth"] and not kept["semantic"]


def test_label_regime_is_fixed_per_sample_across_epochs():
    ds = synthetic(regime="one")
    for i in range(4):
        flags = [tuple(bool(ds[(i, epoch)].valid[t][0, 0]) for t in TASKS) for epoch in (0, 1)]
        assert flags[0] == flags[1] and sum(flags[0]) == 1
    assert all(ds[0].valid[t].all() for t in TASKS)  # evaluation samples keep every label


def test_collate_to_and_single_view():
    ds = synthetic()
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch.batch_size == 3 and batch.num_views == 2 and len(batch.meta) == 3
    moved = batch.to("cpu")
    assert torch.equal(moved.images, batch.images)
    single = batch.single_view()
    assert torch.equal(single.images[:, 1], batch.images[:, 0])
    assert torch.equal(geometry.relative_pose(single.poses[:, 1], single.poses[:, 0]),
                       geometry.relative_pose(single.poses[:, 0], single.poses[:, 0]))
    with pytest.raises(ValueError, match="disagree"):
        MultiViewBatch.collate([ds[0], build_dataset([SourceConfig(num_scenes=1, frames_per_scene=2)],
                                                     image_size=(32, 24))[0]])


@pytest.fixture
def sequence_dir(tmp_path):
    from helpers import render_frames

    from mtl3d_perception.data.sequence import write_sequence

    return write_sequence(tmp_path / "seq", render_frames(5, 10, (64, 48)))


def test_sequence_source_range_neighbours_and_labels(sequence_dir):
    cfg = SourceConfig(kind="sequence", path=str(sequence_dir), start=0.8, end=1.0, max_gap=4)
    ds = build_dataset([cfg], image_size=SIZE, augment=AugmentConfig())
    assert len(ds) == 2
    for key in [0, 1, (0, 3), (1, 4)]:
        frames = ds[key].meta[0]["frames"]
        assert all(8 <= f < 10 for f in frames)  # held-out frames pair only among themselves
    b = ds[1]
    assert all(b.valid[t].all() for t in TASKS)  # semantic present -> boundaries too; normals from depth
    depth_only = build_dataset([dataclasses.replace(cfg, tasks=("depth",))], image_size=SIZE)[1]
    assert depth_only.valid["depth"].all() and not depth_only.valid["semantic"].any()
    assert not depth_only.valid["normals"].any() and torch.isnan(depth_only.normals).all()
    base = build_dataset([dataclasses.replace(cfg, start=0, neighbour="baseline", min_baseline=0.1,
                                              max_baseline=0.3)], image_size=SIZE)
    frames = base[5].meta[0]["frames"]
    poses = np.loadtxt(sequence_dir / "poses.txt").reshape(-1, 4, 4)
    assert 0.1 <= np.linalg.norm(poses[frames[0], :3, 3] - poses[frames[1], :3, 3]) <= 0.3


def test_a_sequence_without_semantic_labels_says_where_it_looked(sequence_dir):
    """The training warning for a weighted task without labels did not name what it had looked for."""
    shutil.rmtree(sequence_dir / "semantic")
    ds = build_dataset([SourceConfig(kind="sequence", path=str(sequence_dir))], image_size=SIZE).sources[0]
    assert ds.labelled_tasks == ("depth", "normals")
    assert ds.label_sources(["semantic", "boundary"]) == f"semantic, boundary: {sequence_dir / 'semantic'}/ (absent)"
    assert ds.label_sources(["depth"]) == f"depth: {sequence_dir / 'depth'}/"


def test_frame_indices_past_the_sequence_are_refused(sequence_dir):
    """`sequence:seq:0:100` on 10 frames was clamped to 0:10 without a word (its report still said 0:100)."""
    cfg = SourceConfig(kind="sequence", path=str(sequence_dir), start=0, end=100)
    with pytest.raises(ValueError, match=re.escape(f"frame range bound 100 is outside {sequence_dir}'s 10 frames; "
                                                   "expected an index in [-10, 10]")):
        build_dataset([cfg], image_size=SIZE)
    assert len(build_dataset([dataclasses.replace(cfg, end=10)], image_size=SIZE)) == 10
    assert len(build_dataset([dataclasses.replace(cfg, start=-3, end=10)], image_size=SIZE)) == 3
    with pytest.raises(ValueError, match=r"empty frame range \[-3, 5\) of .* \(10 frames\): frames 7 to 5"):
        build_dataset([dataclasses.replace(cfg, start=-3, end=5)], image_size=SIZE)


def test_a_range_mixing_a_fraction_and_an_index_says_so(sequence_dir):
    """A user trial: `sequence:seq:0.9:1` (1 meant as the end) said only "empty frame range"."""
    cfg = parse_data_spec(f"sequence:{sequence_dir}:0.9:1")
    with pytest.raises(ValueError, match=re.escape("frames 9 to 1; 0.9 is a fraction (it has a dot) but 1 a frame "
                                                   "index (the fraction is 1.0): write both bounds the same way")):
        build_dataset([cfg], image_size=SIZE)
    assert len(build_dataset([parse_data_spec(f"sequence:{sequence_dir}:0.9:1.0")], image_size=SIZE)) == 1
    assert len(build_dataset([parse_data_spec(f"sequence:{sequence_dir}:2:0.5")], image_size=SIZE)) == 3  # a valid mix


def test_hololens_frames(hololens_dir):
    cfg = parse_data_spec(f"sequence:{hololens_dir}:0.8:1.0")
    ds = build_dataset([dataclasses.replace(cfg, tasks=("depth",))], image_size=(160, 120))
    b = ds[0]
    assert b.images.shape == (1, 2, 3, 120, 160) and b.valid["depth"].all() and not b.valid["semantic"].any()
    d = b.depth[torch.isfinite(b.depth)]
    assert 0.3 < float(d.median()) < 5.0


def test_hololens_normals_from_depth_follow_the_surfaces(hololens_dir):
    """The HoloLens depth is in whole millimetres and upsampled 2x by repetition: normals derived from it by raw
    differences faced the camera at 99 % of pixels (floors and table tops included); the reference normals do not."""
    cfg = parse_data_spec(f"sequence:{hololens_dir}:0.4:0.42")
    b = build_dataset([dataclasses.replace(cfg, tasks=("depth", "normals"))], image_size=(160, 120))[0]
    n = b.normals[0, 0]
    ok = torch.isfinite(n).all(0)
    assert ok.float().mean() > 0.4
    facing = (n[2][ok] < -0.996).float().mean()  # within 5 deg of the optical axis
    assert facing < 0.2, float(facing)


def write_nyu_mat(path, n=3, W=20, H=15):
    """A tiny file in nyu_depth_v2_labeled.mat's HDF5 layout: images [N,3,W,H], depths/labels [N,W,H]."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (n, H, W, 3), dtype=np.uint8)
    depth = (1 + rng.random((n, H, W))).astype(np.float32)
    labels = np.zeros((n, H, W), np.uint16)
    labels[:, :5] = 21  # wall (raw id 21)
    labels[:, 5:10, : W // 2] = 157  # bed
    labels[:, 10:, :] = 11  # floor; rows 5:10 right half stay 0 = unlabelled
    with h5py.File(path, "w") as f:
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["depths"] = depth.transpose(0, 2, 1)
        f["labels"] = labels.transpose(0, 2, 1)
        f["names"] = np.array([b"wall", b"floor"])
    return rgb, depth, labels


def test_nyuv2_mat(tmp_path):
    rgb, depth, labels = write_nyu_mat(tmp_path / "nyu.mat")
    src = parse_data_spec(f"nyuv2:{tmp_path / 'nyu.mat'}:1:3")
    assert (src.start, src.end) == (1, 3)
    ds = build_dataset([src], image_size=(20, 15))
    assert len(ds) == 2
    b = ds[0]  # file index 1
    assert np.array_equal((b.images[0, 0].permute(1, 2, 0) * 255).round().byte().numpy(), rgb[1])
    assert torch.allclose(b.depth[0, 0, 0], torch.from_numpy(depth[1]))
    sem = b.semantic[0, 0].numpy()
    assert (sem[:5] == class_index("wall")).all() and (sem[10:] == class_index("floor")).all()
    assert (sem[5:10, :10] == class_index("bed")).all() and (sem[5:10, 10:] == IGNORE_INDEX).all()
    assert torch.equal(b.images[0, 0], b.images[0, 1]) and torch.equal(b.poses[0, 0], b.poses[0, 1])
    assert all(b.valid[t].all() for t in TASKS)
    assert torch.isnan(b.boundary[0, 0, 0, 5:10, 10:]).all()  # unlabelled -> boundary unknown


def test_nyuv2_missing_file_names_it_and_what_was_expected(tmp_path):
    """"NYUv2 file not found: PATH" did not say what should be there; a folder read as "not found" too."""
    expected = " (expected the labelled .mat file, nyu_depth_v2_labeled.mat)"
    missing = tmp_path / "nyu.mat"
    for path, problem in ((missing, "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(FileNotFoundError, match=f"^{re.escape(f'NYUv2 file {path} {problem}{expected}')}$"):
            build_dataset([parse_data_spec(f"nyuv2:{path}")], image_size=(20, 15))


def test_nyu_mapping_table():
    lut = nyu_label_mapping("894")
    assert lut[0] == IGNORE_INDEX
    for raw, name in [(21, "wall"), (11, "floor"), (157, "bed"), (83, "sofa"), (4, "ceiling"), (28, "wall"),
                      (59, "window"), (64, "painting"), (85, "books"), (5, "chair"), (19, "table")]:
        assert lut[raw] == class_index(name), (raw, name)
    lut40 = nyu_label_mapping("40")
    assert lut40[25] == class_index("tv") and lut40[3] == class_index("furniture")


def test_data_spec_parsing():
    assert parse_data_spec("synthetic:test").split == "test"
    assert parse_data_spec("synthetic:val:3").num_scenes == 3
    s = parse_data_spec("sequence:/a/b:0.8:1.0")
    assert (s.path, s.start, s.end) == ("/a/b", 0.8, 1.0)
    assert parse_data_spec("sequence:/a/b").path == "/a/b"
    with pytest.raises(ValueError, match="data spec"):
        parse_data_spec("kitti:/x")
    with pytest.raises(ValueError, match="split"):
        parse_data_spec("synthetic:dev")
    # a fraction past the sequence's end was clamped silently (0.8:1.2 scored the frames of 0.8:1.0)
    with pytest.raises(ValueError, match=r"^data spec 'sequence:/a/b:0.8:1.2': frame range end 1.2: a fraction \(a "
                                         r"number with a dot\) must lie in \[0, 1\]"):
        parse_data_spec("sequence:/a/b:0.8:1.2")
    with pytest.raises(ValueError, match=r"frame range start -0.1"):
        parse_data_spec("sequence:/a/b:-0.1:0.5")
    assert parse_data_spec("sequence:/a/b:-20:-1").start == -20  # indices may count from the end
    with pytest.raises(ValueError, match=r"^data spec 'synthetic:test:0': source num_scenes 0: expected >= 1"):
        parse_data_spec("synthetic:test:0")


def _no_effects(**on) -> CameraEffectsConfig:
    off = dict(exposure_stops=0.0, exposure_view_stops=0.0, white_balance=0.0, white_balance_view=0.0,
               vignetting=0.0, read_noise=0.0, shot_noise=0.0, blur_prob=0.0, jpeg_prob=0.0)
    return CameraEffectsConfig(**{**off, **on})


def test_camera_effects_change_pixels_within_bounds_and_leave_labels_exact():
    views = _raw_views()
    rgbs = [v.rgb for v in views]
    # all strengths 0: the identity up to the gamma round trip
    same = camera_effects(rgbs, _no_effects(), np.random.default_rng(0))
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(same, rgbs))
    # exposure alone: a uniform gain within 2**(+/-(e + e_view)) in linear light, per view
    e, ev = 0.5, 0.15
    lin = [(x.astype(float) / 255) ** 2.2 for x in rgbs]
    for seed in range(5):
        out = camera_effects(rgbs, _no_effects(exposure_stops=e, exposure_view_stops=ev), np.random.default_rng(seed))
        for x, y in zip(lin, out):
            ok = (x > 0.05) & (x < 0.5)  # neither dark (quantised) nor clipped after the gain
            ratio = np.median(((y.astype(float) / 255) ** 2.2)[ok] / x[ok])
            assert 2 ** -(e + ev) - 0.03 <= ratio <= 2 ** (e + ev) + 0.03
    # vignetting darkens the corners, not the centre
    out = camera_effects(rgbs, _no_effects(vignetting=0.4), np.random.default_rng(1))[0].astype(int)
    assert np.abs(out[30, 40] - rgbs[0][30, 40]).max() <= 1 and (out[0, 0] <= rgbs[0][0, 0]).all()
    # everything on (the defaults): pixels change, modestly; shapes and types kept
    cfg = CameraEffectsConfig()
    for seed in range(4):
        out = camera_effects(rgbs, cfg, np.random.default_rng(seed))
        for x, y in zip(rgbs, out):
            assert y.shape == x.shape and y.dtype == np.uint8
            diff = np.abs(y.astype(int) - x)
            assert 0.5 < diff.mean() < 60
    with pytest.raises(ValueError, match="jpeg_quality"):
        camera_effects(rgbs, CameraEffectsConfig(jpeg_quality=(90, 40)), np.random.default_rng(0))
    # through augment_views: labels, K and poses are those of the same augmentation without camera effects
    base = AugmentConfig(camera=_no_effects())
    a = augment_views(views, SIZE, AugmentConfig(), np.random.default_rng(3), kind="synthetic")
    b = augment_views(views, SIZE, base, np.random.default_rng(3), kind="synthetic")
    for va, vb in zip(a, b):
        for key in ("depth", "normals", "semantic", "boundary", "K", "T_world_cam"):
            np.testing.assert_array_equal(getattr(va, key), getattr(vb, key))
        assert not np.array_equal(va.rgb, vb.rgb)
    # per view: the two views do not get the same noise / exposure
    assert not np.array_equal(a[0].rgb.astype(int) - b[0].rgb, a[1].rgb.astype(int) - b[1].rgb)


def test_camera_effects_apply_to_the_configured_source_kinds_only():
    views = _raw_views()
    cfg = AugmentConfig()  # camera effects on synthetic sources (the default)
    seq = augment_views(views, SIZE, cfg, np.random.default_rng(3), kind="sequence")
    plain = augment_views(views, SIZE, dataclasses.replace(cfg, camera=CameraEffectsConfig(enabled=False)),
                          np.random.default_rng(3), kind="synthetic")
    for a, b in zip(seq, plain):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    ds = synthetic(augment=cfg)
    assert ds.sources[0].cfg.kind in cfg.camera.kinds
    assert load_config("config/train/default.yaml").data.augment.camera.enabled


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("world_frame", "/odom", "source world_frame '/odom': tf2 frame ids cannot start with a '/'; use 'odom'"),
    ("image_topic", "/robot/front/image_raw/", "source image_topic '/robot/front/image_raw/' is not a ROS topic name"),
    ("depth_topic", "/robot//depth", "source depth_topic '/robot//depth' is not a ROS topic name"),
])
def test_bag_source_frame_and_topics_are_checked_up_front(field, value, expected):
    """A user trial: `world_frame=/odom` surfaced tf2's raw exception text for every image; malformed topics read as
    "not in the bag"."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        SourceConfig(kind="bag", path="b", **{field: value})


def test_training_views_are_zooms_of_the_view_the_runtime_gives_the_network():
    """A new-user trial (``aspect_crop.py``): on a 16:9 camera (640x360) for the 160x120 network, training samples were
    aspect-keeping crops of at most the central 75 % of the width (fx/fy 1.0), while validation, ``mtl3d eval``,
    replay and the node stretch the whole frame (fx/fy 0.75): the network was tuned on a geometry it never ran on.
    The zoom and crop now happen within the stretched frame: without zoom a sample is exactly the runtime's view."""
    W, H = 640, 360
    columns = np.tile((np.arange(W)[None, :, None] // 3).astype(np.uint8), (H, 1, 3))  # colour encodes the column
    view = ViewSample(rgb=columns, K=np.array([[500.0, 0, 319.5], [0, 500, 179.5], [0, 0, 1]]), T_world_cam=np.eye(4))
    runtime = augment_views([view], (160, 120), AugmentConfig(), None)[0]
    plain = AugmentConfig(hflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    unzoomed = augment_views([view], (160, 120), dataclasses.replace(plain, scale=(1.0, 1.0)),
                             np.random.default_rng(0))[0]
    assert np.array_equal(unzoomed.rgb, runtime.rgb) and np.allclose(unzoomed.K, runtime.K)
    assert runtime.K[0, 0] / runtime.K[1, 1] == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    for _ in range(5):
        sample = augment_views([view], (160, 120), plain, rng)[0]
        assert sample.K[0, 0] / sample.K[1, 1] == pytest.approx(0.75, abs=0.01)  # stretched as at run time (was 1.0)
        seen = (int(sample.rgb[0, -1, 0]) - int(sample.rgb[0, 0, 0])) * 3  # columns of the camera the sample spans
        assert seen >= W / 1.3 - 12  # zoom <= 1.3 (was 393-534 of 640: the central 75 % at most)
        # K stays exact: the column a pixel shows is where K puts that pixel's ray
        u = 100
        x_cam = (u - sample.K[0, 2]) / sample.K[0, 0]
        assert int(sample.rgb[0, u, 0]) * 3 == pytest.approx(x_cam * 500 + 319.5, abs=6)
