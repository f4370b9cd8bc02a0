"""Safetensors checkpoints: bitwise round trip, and every broken-file case fails by name, never unpickling."""

from __future__ import annotations

import json
import os
import pickle
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mtl3d_perception.model import (
    CheckpointError,
    build_model,
    load_checkpoint,
    read_checkpoint_metadata,
    resolve_config,
    save_checkpoint,
)
from mtl3d_perception.model.config import TASKS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model whose BN statistics moved (one train-mode pass), saved once."""
    torch.manual_seed(0)
    model = build_model(resolve_config("tiny").replace(input_size=(64, 48), num_depth=8))
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 2, 3, 48, 64), torch.eye(3).expand(2, 2, 3, 3) * 40 + _cxcy(), torch.eye(4).expand(2, 2, 4, 4))
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path, trained_on="synthetic:seed0", metrics={"depth_rmse": 0.5}, step=12)
    return model, path


def _cxcy() -> torch.Tensor:
    K = torch.zeros(3, 3)
    K[0, 2], K[1, 2], K[2, 2] = 31.5, 23.5, -39.0  # + 40*I gives a valid K
    return K


def _rewrite(src, dst, *, tensors=None, metadata=None):
    state = load_file(str(src)) if tensors is None else tensors
    if metadata is None:
        with safe_open(str(src), "pt") as f:
            metadata = f.metadata()
    save_file(state, str(dst), metadata=metadata)
    return dst


def test_round_trip_is_bitwise(trained):
    model, path = trained
    loaded = load_checkpoint(path)
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert loaded.config == model.config.replace(pretrained=False)
    images = torch.rand(1, 2, 3, 48, 64)
    K = (torch.eye(3) * 40 + _cxcy()).expand(1, 2, 3, 3)
    poses = torch.eye(4).expand(1, 2, 4, 4)
    with torch.no_grad():
        x, y = model(images, K, poses), loaded(images, K, poses)
    for t in TASKS:
        assert torch.equal(x[t], y[t])


def test_metadata(trained):
    model, path = trained
    meta = read_checkpoint_metadata(path)
    assert meta["classes"] == list(model.config.classes)
    assert meta["palette"] == [list(c) for c in model.config.palette]
    assert meta["input_size"] == [64, 48]
    assert meta["depth_range"] == [model.config.depth_min, model.config.depth_max]
    assert meta["trained_on"] == "synthetic:seed0"
    assert meta["metrics"] == {"depth_rmse": 0.5}
    assert meta["step"] == 12
    assert meta["config"]["encoder"] == "tiny_cnn"
    with safe_open(str(path), "pt") as f:  # plain JSON strings, readable by any safetensors reader
        assert json.loads(f.metadata()["config"])["num_depth"] == 8


def test_checkpoint_is_readable_by_other_users(trained, tmp_path):
    """Written with the mode of any file the process makes (umask 022 -> 0644), not safetensors' private 0600: a
    node running as another user reads the weights a training run wrote."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(trained[0], tmp_path / "shared.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_truncated_file(trained, tmp_path):
    _, path = trained
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 4):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(bad.name)):
            load_checkpoint(bad)


def test_wrong_key(trained, tmp_path):
    _, path = trained
    state = load_file(str(path))
    state["heads.skip.0.weight_renamed"] = state.pop("heads.skip.0.weight")
    bad = _rewrite(path, tmp_path / "wrong_key.safetensors", tensors=state)
    with pytest.raises(CheckpointError, match=r"missing keys \['heads\.skip\.0\.weight'\].*weight_renamed"):
        load_checkpoint(bad)


def test_wrong_shape(trained, tmp_path):
    _, path = trained
    state = load_file(str(path))
    key = "heads.fuse.0.weight"
    shape = tuple(state[key].shape)
    state[key] = torch.zeros(3, 5, 1, 1)
    bad = _rewrite(path, tmp_path / "wrong_shape.safetensors", tensors=state)
    with pytest.raises(CheckpointError, match=rf"{key}.*\(3, 5, 1, 1\).*{str(shape).replace('(', '[(]').replace(')', '[)]')}"):
        load_checkpoint(bad)


def test_config_that_does_not_match_the_weights(trained, tmp_path):
    _, path = trained
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["config"])
    cfg["num_depth"] = 16  # the fusion conv then expects other input channels
    meta["config"] = json.dumps(cfg)
    bad = _rewrite(path, tmp_path / "mismatch.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=r"heads\.fuse\.0\.weight.*shape"):
        load_checkpoint(bad)
    cfg["warp_factor"] = 9
    meta["config"] = json.dumps(cfg)
    bad = _rewrite(path, tmp_path / "unknown.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="'warp_factor'"):
        load_checkpoint(bad)


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/mtl3d_unpickled_marker", "w"))


def test_not_a_safetensors_file_is_never_unpickled(tmp_path):
    import os

    marker = "/tmp/mtl3d_unpickled_marker"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": _Boom()}))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(evil)
    pth = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(1)}, pth)
    with pytest.raises(CheckpointError):
        load_checkpoint(pth)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        read_checkpoint_metadata(text)
    assert not os.path.exists(marker)


def test_missing_metadata(trained, tmp_path):
    _, path = trained
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(path)), str(bare))
    with pytest.raises(CheckpointError, match="lacks 'config'"):
        load_checkpoint(bare)
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    del meta["classes"]
    bad = _rewrite(path, tmp_path / "noclasses.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="lacks 'classes'"):
        read_checkpoint_metadata(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_checkpoint_of_every_preset_architecture_loads(tmp_path):
    """Registry-wide: small and base rebuild without fetching their encoder weights again."""
    for preset in ("small", "base"):
        torch.manual_seed(0)
        model = build_model(resolve_config(preset).replace(pretrained=False))
        path = save_checkpoint(model, tmp_path / f"{preset}.safetensors")
        loaded = load_checkpoint(path)
        assert loaded.config.encoder == model.config.encoder
        k = next(iter(model.state_dict()))
        assert torch.equal(loaded.state_dict()[k], model.state_dict()[k])


def test_mtl3d_info_on_preset_and_checkpoint(trained, capsys):
    from mtl3d_perception.cli import main

    _, path = trained
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "depth_rmse: 0.5" in text and "synthetic:seed0" in text and "training run: " in text
    for part in ("encoder", "cvm", "heads", "total"):
        assert f"  {part}" in text
    assert main(["info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == sum(info["parameters"][p] for p in ("encoder", "cvm", "heads"))
    assert info["flops"]["cvm"] > 0 and info["config"]["encoder"] == "tiny_cnn"
    # a preset shows its own config (the cpu preset loads ImageNet weights), a checkpoint says why it has pretrained False
    assert main(["info", "cpu"]) == 0
    assert "  pretrained: True\n" in capsys.readouterr().out
    assert main(["info", str(path)]) == 0
    assert "  pretrained: False (a checkpoint holds every weight" in capsys.readouterr().out
    assert main(["info", "no_such_preset"]) == 1


def test_info_lists_each_training_source_on_one_line():
    """A trainer's ``trained_on`` (SourceConfig dicts) reads as one line per source, not a dumped list."""
    from mtl3d_perception.model.info import format_trained_on

    sources = [
        {"kind": "synthetic", "path": "", "split": "train", "num_scenes": 64, "frames_per_scene": 40, "start": 0,
         "end": 1.0, "tasks": ["semantic", "depth"], "repeat": 1, "generator": 3, "textures": "photo"},
        {"kind": "sequence", "path": "../shared/data/hololens_000", "split": "train", "start": 0, "end": 0.8,
         "tasks": ["depth"], "repeat": 4},
    ]
    assert format_trained_on(sources) == [
        "trained on (2 sources):",
        "  - synthetic train split, 64 scenes x 40 frames, generator v3, photo textures, tasks semantic/depth",
        "  - sequence ../shared/data/hololens_000, frames 0-0.8, tasks depth, x4",
    ]
    unlabelled = {**sources[1], "tasks": [], "repeat": 16}
    assert format_trained_on([unlabelled])[1] == "  - sequence ../shared/data/hololens_000, frames 0-0.8, no labels, x16"
    staged = {**unlabelled, "stages": "4, 5, 8, 11, 14"}  # the shipped model's metadata says which stage used a source
    assert format_trained_on([staged])[1] == ("  - stages 4, 5, 8, 11, 14: sequence ../shared/data/hololens_000, "
                                              "frames 0-0.8, no labels, x16")
    assert format_trained_on([{**unlabelled, "stages": [13, 14]}])[1].startswith("  - stages 13, 14: sequence")
    assert format_trained_on([{**unlabelled, "stages": "1"}])[1].startswith("  - stage 1: sequence")
    assert format_trained_on("synthetic:seed0") == ["trained on: synthetic:seed0"]
    assert format_trained_on(None) == ["trained on: not stored"]


def test_info_lists_only_the_tasks_a_run_supervised(trained, tmp_path, capsys):
    """A source's ``tasks`` are the labels it offers; `mtl3d info` listed them even where the run's loss weight was 0
    (a semantic-head run read "tasks semantic/depth/normals/boundary"). The stored ``train_config``'s weights now
    decide; staged sources (earlier runs, their weights not stored) and files without a config read as stored."""
    from mtl3d_perception.cli import main

    model, _ = trained
    source = {"kind": "synthetic", "path": "", "split": "train", "num_scenes": 4, "frames_per_scene": 8, "start": 0,
              "end": 1.0, "tasks": list(TASKS), "repeat": 1}
    weights = dict.fromkeys(TASKS, 0.0) | {"semantic": 1.0}
    config = {"out_dir": "runs/x", "steps": 10, "seed": 0, "model": {}, "loss": {"weights": weights}}
    path = save_checkpoint(model, tmp_path / "semantic.safetensors", trained_on=[source], train_config=config, step=10)
    assert main(["info", str(path)]) == 0
    assert "  - synthetic train split, 4 scenes x 8 frames, tasks semantic\n" in capsys.readouterr().out

    from mtl3d_perception.model.info import format_trained_on, task_weights

    assert task_weights(config) == weights and task_weights(None) is None and task_weights({"loss": {}}) is None
    frozen = dict.fromkeys(TASKS, 0.0)  # a confidence-head run: every task weight 0
    assert format_trained_on([source], weights=frozen)[1].endswith("no task supervised (task loss weights 0)")
    assert format_trained_on([{**source, "tasks": []}], weights=frozen)[1].endswith("no labels")
    assert format_trained_on([{**source, "stages": "1"}], weights=weights)[1].endswith("tasks " + "/".join(TASKS))
    assert format_trained_on([source])[1].endswith("tasks " + "/".join(TASKS))  # no train_config stored


def test_info_names_the_training_run():
    """The shipped model's stage reads from its run's output folder (models/README.md), printed by `mtl3d info`."""
    from mtl3d_perception.model.info import training_run

    config = {"out_dir": "runs/default_stage12", "steps": 500, "seed": 12,
              "model": {"init_checkpoint": "runs/default_stage11/checkpoints/last.safetensors"}}
    assert training_run(config, 500) == ("out_dir runs/default_stage12, step 500 of 500, seed 12, "
                                         "from runs/default_stage11/checkpoints/last.safetensors")
    assert training_run({**config, "model": {"init_checkpoint": ""}}) == \
        "out_dir runs/default_stage12, 500 steps, seed 12, from the preset"
    assert training_run(None) == "not stored"
    reinit = {**config, "model": {**config["model"], "reinit": ["heads.confidence"]}}
    assert training_run(reinit, 500).endswith("from runs/default_stage11/checkpoints/last.safetensors, "
                                              "heads.confidence from scratch")


def test_info_names_the_losses_optimiser_and_frozen_parts():
    """A researcher trial: `mtl3d info` showed the data and steps of a run, not its losses, optimiser or freezing."""
    from mtl3d_perception.model.info import training_recipe

    config = {"loss": {"depth_kind": "silog", "silog_lambda": 0.85, "weights": {"semantic": 1.0, "depth": 0.5},
                       "all_views": False, "extra": {"photometric": {"weight": 0.2, "smoothness": 0.001}}},
              "optim": {"lr": 3e-4, "encoder_lr_ratio": 0.2, "weight_decay": 1e-4, "warmup_steps": 30,
                        "schedule": "cosine", "grad_clip": 10.0},
              "data": {"batch_size": 8, "num_views": 2}, "model": {"freeze": ["encoder"], "reinit": []}}
    assert training_recipe(config) == [
        "losses: depth silog (lambda 0.85); task weights semantic 1, depth 0.5; the reference view only",
        "  + photometric x0.2 (smoothness 0.001)",
        "optimiser: AdamW lr 0.0003 (encoder x0.2), weight decay 0.0001, 30 warm-up steps then cosine, grad clip 10; "
        "batch 8 x 2 views",
        "frozen: encoder"]
    assert training_recipe(config, [{"step": 5, "steps": 9, "steps_before": 9}])[-1] == "resumed at step 5"
    assert training_recipe(None) == []


def test_the_shipped_model_has_a_name_that_works_from_any_folder(tmp_path, monkeypatch, capsys):
    """An install trial: from a folder outside the checkout, `mtl3d eval models/default.safetensors` (the README's form)
    and `mtl3d info default` could not find the shipped model. ``default`` names it for the mtl3d commands and
    ``model_path``; a file called ``default`` in the working directory still wins."""
    from mtl3d_perception import cli
    from mtl3d_perception.model.checkpoint import checkpoint_argument, default_model_path

    monkeypatch.chdir(tmp_path)
    assert checkpoint_argument("default") == str(default_model_path())
    assert checkpoint_argument("runs/x.safetensors") == "runs/x.safetensors"
    assert cli.main(["info", "default"]) == 0
    assert f"model: {default_model_path()}" in capsys.readouterr().out
    (tmp_path / "default").mkdir()  # a review: a folder of that name hid the shipped model
    assert checkpoint_argument("default") == str(default_model_path())
    (tmp_path / "default").rmdir()
    (tmp_path / "default").write_text("")
    assert checkpoint_argument("default") == "default"
    assert checkpoint_argument("") == str(default_model_path())


def test_a_stray_models_folder_beside_an_installed_package_is_not_a_checkout(tmp_path):
    """An install trial: any ``models/`` or ``config/`` folder in site-packages shadowed the shipped files, as the
    folder above the package counted as the source checkout; it counts only with package.xml and setup.py there."""
    from mtl3d_perception.resources import checkout_root

    package = tmp_path / "site-packages" / "mtl3d_perception"
    package.mkdir(parents=True)
    (package.parent / "models").mkdir()
    assert checkout_root(package) is None
    (package.parent / "package.xml").write_text("<package/>")
    assert checkout_root(package) is None
    (package.parent / "setup.py").write_text("")
    assert checkout_root(package) == package.parent
    assert checkout_root() is not None  # this test runs in the checkout


def test_an_install_outside_sys_prefix_finds_its_shipped_files(tmp_path, monkeypatch):
    """An install trial: `pip install --user` and `pip install --prefix P` put setup.py's data_files in
    ~/.local/share/mtl3d_perception and P/share/mtl3d_perception (Debian's system Python: /usr/local, its sys.prefix
    /usr), where only <sys.prefix>/share was looked at: 'no default checkpoint found', and the suggested preset:tiny
    failed as well. The distribution's RECORD says where pip wrote them."""
    from mtl3d_perception import resources
    from mtl3d_perception.model.checkpoint import default_model_path
    from mtl3d_perception.model.config import preset_dirs

    site = tmp_path / "prefix" / "lib" / "python3.11" / "site-packages"
    share = tmp_path / "prefix" / "share" / "mtl3d_perception"
    (share / "models").mkdir(parents=True)
    (share / "config" / "model").mkdir(parents=True)
    (share / "package.xml").write_text("<package/>")
    (share / "models" / "default.safetensors").write_bytes(b"")
    info = site / "mtl3d_perception-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtl3d_perception\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("mtl3d_perception/__init__.py,,\n"
                                 "../../../share/mtl3d_perception/package.xml,,\n"
                                 "../../../share/mtl3d_perception/models/default.safetensors,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(resources, "checkout_root", lambda package_dir=None: None)  # as installed, no checkout
    assert resources.installed_share() == share.resolve()
    assert default_model_path() == share.resolve() / "models" / "default.safetensors"
    assert share.resolve() / "config" / "model" in preset_dirs()
    # what messages point installed users to: the installed file, or the repository's path where none is
    assert resources.shipped_file("package.xml") == str(share.resolve() / "package.xml")
    assert resources.shipped_file("docs", "no_such.md") == "docs/no_such.md"
