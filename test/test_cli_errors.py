"""Issue 15 item 4 (and the load-time half of item 5): every bad file ends in one line naming it and the reason,
exit status 1, no traceback, never advice to unpickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtl3d_perception.cli import main as cli_main
from mtl3d_perception.data.bag import write_bag
from mtl3d_perception.data.sequence import write_sequence
from mtl3d_perception.data.synthetic import iter_sequence
from mtl3d_perception.model import build_model, save_checkpoint
from mtl3d_perception.model.checkpoint import CheckpointError, load_checkpoint
from mtl3d_perception.model.config import resolve_config
from mtl3d_perception.replay import ReplayOptions
from mtl3d_perception.runtime.config import RuntimeConfig
from mtl3d_perception.runtime.loading import load_model
from mtl3d_perception.typed_config import SettingError

CASES = Path(__file__).resolve().parents[1] / ".." / "shared" / "cases"


def one_line_error(capsys, argv: list[str]) -> str:
    rc = cli_main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 1, (rc, captured.out[-500:], err)
    assert len(err.splitlines()) == 1 and err.startswith("ERROR: "), err
    assert "Traceback" not in err and "weights_only" not in err
    return err


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory) -> Path:
    model = build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48)))
    with torch.no_grad():
        next(model.parameters()).view(-1)[3] = float("inf")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "nan.safetensors")


def test_corrupt_db3_replay_is_one_line(capsys, tmp_path):
    bag = CASES / "corrupt_db3"
    if not bag.is_dir():
        pytest.skip("../shared/cases/corrupt_db3 absent")
    err = one_line_error(capsys, ["replay", str(bag), "--model", "preset:tiny", "--device", "cpu",
                                  "--out", str(tmp_path / "out"), "--no-progress", "--montage-frames", "0"])
    assert "corrupt_db3.db3" in err and "corrupt" in err and "database disk image is malformed" in err


def test_info_on_a_pickle_is_one_line(capsys, tmp_path):
    pth = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    err = one_line_error(capsys, ["info", str(pth)])
    assert str(pth) in err and "pickle" in err and "utf-8" not in err.lower()


def test_info_on_a_binary_yaml_or_directory_is_one_line(capsys, tmp_path):
    binary = tmp_path / "weird.model"
    binary.write_bytes(b"\x80\x81\xff" * 10)
    err = one_line_error(capsys, ["info", str(binary)])
    assert str(binary) in err and "not a model YAML" in err
    err = one_line_error(capsys, ["info", str(tmp_path)])
    assert str(tmp_path) in err and "is a directory" in err and "unknown model preset" not in err


def test_info_refuses_an_empty_file_a_missing_yaml_and_a_training_config(capsys, tmp_path):
    """`mtl3d info EMPTY` printed a made-up `tiny_cnn` model with exit 0 (an empty YAML read as all defaults)."""
    for empty in (tmp_path / "emptyfile", tmp_path / "empty.yaml"):
        empty.write_text("")
        err = one_line_error(capsys, ["info", str(empty)])
        assert err == (f"ERROR: {empty}: the model config is empty; expected a YAML mapping of model settings "
                       "(see config/model/)")
    err = one_line_error(capsys, ["info", str(tmp_path / "nope.yaml")])
    assert err.startswith(f"ERROR: model config not found: {tmp_path / 'nope.yaml'}; expected a preset name (")
    assert "Errno" not in err
    err = one_line_error(capsys, ["info", "config/train/default.yaml"])
    assert err.startswith("ERROR: config/train/default.yaml: a training config (keys data, loss, model, optim, "
                          "out_dir, steps), not a model config")


@pytest.mark.parametrize(("line", "expected"), [
    ("image_std: [0, 0, 0]", "image_std must be three finite numbers > 0 (the input is divided by it), got (0.0, 0.0, 0.0)"),
    ("cvm_heads: 0", "cvm_heads 0: expected >= 1"),  # was a ZeroDivisionError traceback
    ("decoder_channels: 0", "decoder_channels 0: expected >= 1"),  # was torch's wording
])
def test_model_configs_that_cannot_build_a_network_are_refused(capsys, tmp_path, line, expected):
    path = tmp_path / "m.yaml"
    path.write_text(f"encoder: tiny_cnn\n{line}\n")
    assert one_line_error(capsys, ["info", str(path)]) == f"ERROR: {path}: {expected}"


def test_demo_thread_count_is_bounded(capsys, tmp_path):
    """`mtl3d demo --num-threads 100000` aborted inside torch (exit 134) after creating --out."""
    with pytest.raises(SystemExit):
        cli_main(["demo", "--num-threads", "100000", "--out", str(tmp_path / "d")])
    assert "argument --num-threads: expected a whole number in [1, 256], got 100000" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_non_finite_checkpoint_is_refused_at_load(capsys, nan_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match=r"holds 1 NaN or inf value\(s\)"):
        load_checkpoint(nan_checkpoint)
    err = one_line_error(capsys, ["info", str(nan_checkpoint)])
    assert str(nan_checkpoint) in err and "non-finite" in err
    bag = CASES / "png_chunk_bomb"
    if bag.is_dir():  # replay refuses the model before reading a frame (it used to replay it with exit 0)
        err = one_line_error(capsys, ["replay", str(bag), "--model", str(nan_checkpoint), "--device", "cpu",
                                      "--out", str(tmp_path / "out"), "--no-progress"])
        assert str(nan_checkpoint) in err and "non-finite" in err
    # the node's path: load_model raises a ValueError whose text is the one line the node logs as fatal
    with pytest.raises(ValueError, match="non-finite") as info:
        load_model(str(nan_checkpoint))
    assert len(str(info.value).splitlines()) == 1


def test_bad_model_files_for_the_node_and_replay(capsys, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="garbage.safetensors: not a readable safetensors checkpoint") as info:
        load_model(str(garbage))
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load_model(str(tmp_path))
    err = one_line_error(capsys, ["info", str(garbage)])
    assert str(garbage) in err


@pytest.mark.parametrize("command", [["eval", "no.safetensors", "--data", "synthetic:test"], ["replay", "no_bag"]])
def test_bad_device_is_one_line_naming_what_is_expected(capsys, tmp_path, command):
    """``--device tpu`` used to end with torch's 'Expected one of cpu, cuda, ipu, xpu, ...'; the node's rule
    (runtime.params.device_problem) now names it, before any file is read."""
    err = one_line_error(capsys, [*command, "--device", "tpu", "--out", str(tmp_path / "out")])
    assert err == "ERROR: --device must be one of auto, cpu, cuda, cuda:N (N: a GPU index), got 'tpu'"


# ------------------------------------------------------------------ user mistakes a new user made (session 7 trial)


def test_text_that_is_not_yaml_is_one_line_naming_the_file_or_key(capsys, tmp_path):
    """A Markdown file given as a training config or a model, or an override whose value is not YAML: one line naming
    the file (or the key) and where the YAML broke, not a yaml.ScannerError traceback."""
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nrun it: `mtl3d train --config a.yaml`, then: look\n")
    err = one_line_error(capsys, ["train", "--config", str(notes)])
    assert f"{notes}: not valid YAML" in err and "line 3" in err
    err = one_line_error(capsys, ["info", str(notes)])
    assert f"{notes}: not valid YAML" in err
    smoke = Path(__file__).resolve().parents[1] / "config" / "train" / "smoke.yaml"
    err = one_line_error(capsys, ["train", "--config", str(smoke), "data.train.0.tasks=["])
    assert "override 'data.train.0.tasks': not valid YAML" in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    err = one_line_error(capsys, ["train", "--config", str(empty)])  # not a full default training run
    assert f"{empty}: the training config is empty" in err
    err = one_line_error(capsys, ["train", "--config", str(tmp_path)])
    assert "is a directory; expected a YAML file" in err


@pytest.mark.parametrize(("override", "expected"), [
    ("steps=0", "config key 'steps' expects an int >= 1, got 0"),  # wrote an untrained checkpoint and exited 0
    ("steps=-1", "config key 'steps' expects an int >= 1, got -1"),
    ("optim.lr=-1", "config key 'optim.lr' expects a finite number > 0, got -1.0"),  # was torch's own wording
    ("optim.lr=.nan", "config key 'optim.lr' expects a finite number > 0, got nan"),
    ("data.batch_size=0", "config key 'data.batch_size' expects an int >= 1, got 0"),
    ("optim.min_lr_ratio=2", "config key 'optim.min_lr_ratio' expects a number in [0, 1], got 2.0"),
    ("eval_every=-5", "config key 'eval_every' expects an int >= 0 (0 disables), got -5"),
    # a user audit: each of these trained with exit 0 (a negative loss, a misspelt task dropped, lr rising)
    ("loss.weights={semantic: -1.0}",
     "config key 'loss.weights.semantic' expects a finite number >= 0 (0 switches the task off), got -1.0"),
    ("loss.weights={normal: 1.0}",
     "config key 'loss.weights.normal' expects a task name (semantic, depth, normals, boundary), got 'normal'"),
    ("loss.silog_lambda=5", "config key 'loss.silog_lambda' expects a number in [0, 1], got 5.0"),
    ("optim.poly_power=-1", "config key 'optim.poly_power' expects a finite number > 0, got -1.0"),
    ("data.augment.hflip=5", "config key 'data.augment.hflip' expects a probability in [0, 1], got 5.0"),
    ("data.augment.contrast=100",
     "config key 'data.augment.contrast' expects a number in [0, 1) (a factor in 1 +- it), got 100.0"),
    ("data.augment.camera.jpeg_prob=2", "config key 'data.augment.camera.jpeg_prob' expects a number in [0, 1], got 2.0"),
    ("data.train.0.min_baseline=-1", "config section 'data.train.0': source min_baseline -1.0, max_baseline 0.5: "
                                     "expected 0 <= min_baseline < max_baseline (metres)"),
    ("data.image_size=[0,0]", "config key 'data.image_size' expects [W, H], each a multiple of 8 (the network's stride), e.g. [160, 120], got (0, 0)"),
    ("data.train.0.max_rotation_deg=-5",
     "config section 'data.train.0': source max_rotation_deg -5.0: expected a number in (0, 180]"),
])
def test_train_refuses_settings_that_cannot_train(capsys, tmp_path, override, expected):
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", override])
    assert err == f"ERROR: {expected}"
    assert not out.exists()


def test_train_refuses_more_views_than_a_scene_has_frames(capsys, tmp_path):
    """An audit: data.num_views 4 on 2-frame scenes trained on samples repeating their frames (self-pairs)."""
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "data.num_views=4",
                                  "data.train=[{kind: synthetic, split: train, num_scenes: 2, frames_per_scene: 2}]"])
    assert err == ("ERROR: data.num_views 4 needs that many frames per sample, but data.train.0 (synthetic) has 2 per "
                   "scene; lower data.num_views to 2 or give data.train.0 more frames per scene "
                   "(data.train.0.frames_per_scene)")
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "data.num_views=6",
                                  "eval_every=5"])
    assert err.startswith("ERROR: data.num_views 6 needs that many frames per sample, but data.val.0 (synthetic) has 4")


PHOTOMETRIC = "loss.extra={photometric: {weight: 1.0}}"


def test_train_refuses_one_view_for_a_term_that_compares_views(capsys, tmp_path):
    """A new-user trial: data.num_views=1 with the photometric term trained with reprojection 0.0 and kept_fraction
    0.0 at every step (the smoothness alone), and the pose check then blamed the recording."""
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "data.num_views=1",
                                  PHOTOMETRIC])
    assert err == ("ERROR: data.num_views 1 leaves a loss term nothing to compare: loss.extra.photometric needs "
                   "data.num_views >= 2 (it warps source views into the reference view; with fewer it is 0 at every "
                   "step); set data.num_views=2, or drop the term from loss.extra")
    assert not out.exists()
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "data.num_views=1",
                                  "loss.extra={cross_view: {weight: 0.5}}"])
    assert "loss.extra.cross_view needs data.num_views >= 2" in err


def test_too_short_a_range_is_not_fixed_by_switching_a_term_off(capsys, tmp_path):
    """The same trial: a 5-frame recording's 1-frame validation range was refused with "lower data.num_views or give
    it more frames", and lowering num_views switched the photometric term off without a word. Where a term in use
    needs the views, the error offers the other ways out (a longer range, another source, eval_every=0)."""
    out = tmp_path / "run"
    short_val = "data.val=[{kind: synthetic, split: val, num_scenes: 1, frames_per_scene: 1}]"
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "eval_every=5",
                                  short_val, PHOTOMETRIC])
    assert err == ("ERROR: data.num_views 2 needs that many frames per sample, but data.val.0 (synthetic) has 1 per "
                   "scene; give data.val.0 more frames per scene (data.val.0.frames_per_scene), or validate on another "
                   "source (data.val), or skip validation: eval_every=0 (lowering data.num_views to 1 would switch off "
                   "loss.extra.photometric (needs 2))")
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "eval_every=5",
                                  short_val])  # no term needs two views: lowering num_views is a way out
    assert err.endswith("has 1 per scene; lower data.num_views to 1 or give data.val.0 more frames per scene "
                        "(data.val.0.frames_per_scene)")


def test_train_refuses_a_run_that_would_learn_nothing(capsys, tmp_path):
    """An audit: every source with tasks: [] and no unsupervised term trained with every loss 0 and exit 0."""
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "data.train.0.tasks=[]"])
    assert err.startswith("ERROR: nothing to learn: no data.train source gives labels for a task with a loss weight > 0")
    assert "add an unsupervised term (loss.extra.photometric)" in err and not out.exists()
    # a trial: depth_error (it learns from depth labels) with none held counted as something to learn: loss 0
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "data.train.0.tasks=[]",
                                  "loss.extra={depth_error: {weight: 1.0}}", "model.overrides.confidence_head=true"])
    assert err.startswith("ERROR: nothing to learn: ") and "no term with a weight > 0 that has its labels" in err


def test_train_names_an_output_folder_that_is_a_file(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = one_line_error(capsys, ["train", "--config", "config/train/smoke.yaml", f"out_dir={afile}"])
    assert err == f"ERROR: output folder {afile} is a file; expected a folder (created if missing)"  # was Errno 20


def test_train_into_an_earlier_run_needs_resume(capsys, tmp_path):
    """A second run into an out_dir deleted the first's checkpoints and mixed its TensorBoard logs, and a fine-tune
    from out_dir/checkpoints/last.safetensors into the same out_dir overwrote its own starting weights: refused."""
    out = tmp_path / "run"
    argv = ["train", "--config", "config/train/smoke.yaml", f"out_dir={out}", "steps=1"]
    assert cli_main(argv) == 0
    capsys.readouterr()
    weights = out / "checkpoints" / "last.safetensors"
    before = weights.read_bytes()
    for extra in ([], [f"model.init_checkpoint={weights}", "model.overrides={}"]):
        err = one_line_error(capsys, [*argv, *extra])
        assert err == (f"ERROR: out_dir {out} already holds a training run ({out / 'checkpoints' / 'last.json'}); "
                       "continue it with --resume, or pass another out_dir=DIR")
    assert weights.read_bytes() == before
    assert cli_main([*argv[:-1], "steps=2", "--resume"]) == 0  # continuing it is what --resume is for
    capsys.readouterr()
    # a resumed run keeps its recipe: the new lr was ignored (the optimiser's) yet recorded, a new source was trained
    # on while info listed only it; a steps= at or below the run's step trained nothing and exited 0
    err = one_line_error(capsys, [*argv[:-1], "steps=3", "optim.lr=0.05", "--resume"])
    assert err.startswith(f"ERROR: --resume continues the run in {out}, but optim.lr 0.002 -> 0.05: a resumed run keeps")
    assert f"start a new run from it: model.init_checkpoint={weights} out_dir=NEW" in err
    err = one_line_error(capsys, [*argv[:-1], "steps=3", "data.train.0.num_scenes=3", "--resume"])
    assert "but data.train.0.num_scenes " in err and "a resumed run keeps its data" in err  # the key, not both lists
    err = one_line_error(capsys, [*argv[:-1], "steps=1", "--resume"])
    assert err == (f"ERROR: --resume: the run in {out} is at step 2, so steps=1 leaves nothing to train; pass steps=N "
                   "with N > 2 to continue it")
    # a fine-tune into a new out_dir from it, with smoke.yaml's overrides (which set pretrained: false): a TypeError
    # ('multiple values for keyword argument pretrained') before
    assert cli_main(["train", "--config", "config/train/smoke.yaml", f"out_dir={tmp_path / 'tuned'}", "steps=1",
                     f"model.init_checkpoint={weights}"]) == 0


def test_eval_removes_an_earlier_evaluations_montages(capsys, tmp_path):
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48))),
                           tmp_path / "m.safetensors")
    out = tmp_path / "e"
    base = ["eval", str(ckpt), "--data", "synthetic:test:1", "--max-batches", "1", "--montages", "1", "--out", str(out)]
    assert cli_main(base) == 0
    assert {p.name for p in out.glob("montage_*.png")} == {"montage_synthetic-test_two_view_0.png",
                                                             "montage_synthetic-test_single_view_0.png"}
    (out / "notes.txt").write_text("mine")
    assert cli_main([*base, "--modes", "two_view"]) == 0
    capsys.readouterr()
    assert {p.name for p in out.glob("montage_*.png")} == {"montage_synthetic-test_two_view_0.png"}
    assert (out / "notes.txt").read_text() == "mine"  # only the montages are the evaluation's own


def test_eval_refuses_options_that_evaluate_nothing(capsys, tmp_path):
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48))),
                           tmp_path / "m.safetensors")
    for option, value in (("--max-batches", "0"), ("--gap", "0"), ("--batch-size", "0")):
        with pytest.raises(SystemExit):  # argparse: usage + the reason, exit status 2
            cli_main(["eval", str(ckpt), "--data", "synthetic:test:1", option, value])
        assert f"argument {option}: expected a whole number >= 1, got 0" in capsys.readouterr().err
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", "synthetic:test:0", "--out", str(tmp_path / "e")])
    assert "num_scenes 0: expected >= 1" in err
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", "sequence:/no/such/seq:0.8", "--out", str(tmp_path / "e")])
    assert "'/no/such/seq:0.8' does not exist; a frame range is written sequence:/path:START:END" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", "synthetic:test:1", "--out", str(afile)])
    assert f"output folder {afile} is a file; expected a folder" in err
    err = one_line_error(capsys, ["synth", "--frames", "2", "--size", "32x24", "--out", str(afile / "seq")])
    assert f"output folder {afile / 'seq'} cannot be made: {afile} is a file, not a folder" in err


# ------------------------------------------------------------------ a new user's trial (session 15)


@pytest.fixture(scope="module")
def tiny_sequence(tmp_path_factory) -> Path:
    return write_sequence(tmp_path_factory.mktemp("seq") / "seq", iter_sequence(0, 2, (16, 12)))


@pytest.mark.parametrize(("argv", "expected"), [
    (["replay", "BAG", "--history-size", "0"], "--history-size must be in [1, 256], got 0"),
    (["replay", "BAG", "--sync-slop", "-1"], "--sync-slop must be in [0.0, 1.0], got -1.0"),  # the alias, as typed
    (["replay", "BAG", "--sync-slop-s=-1"], "--sync-slop-s must be in [0.0, 1.0], got -1.0"),
    (["replay", "BAG", "--limit", "0"], "--limit must be >= 1, got 0"),
    (["replay", "BAG", "--montage-frames", "-1"], "--montage-frames must be >= 0, got -1"),
    (["replay", "BAG", "--world-frame", "/map"], "--world-frame '/map': tf2 frame ids cannot start with a '/'; use 'map'"),
    (["replay", "BAG", "--node-name", ""],  # wrote topics named //depth/image into the output bag
     "--node-name '' is not a ROS node name: letters, digits and underscores, not starting with a digit"),
    (["replay", "BAG", "--node-name", "a b/c"],
     "--node-name 'a b/c' is not a ROS node name: letters, digits and underscores, not starting with a digit"),
    (["replay", "BAG", "--max-speed-mps", "0"],  # every frame ran single-view, blamed on pose jumps
     "--max-speed-mps must be in [0.01, 1000.0], got 0.0"),
    (["replay", "BAG", "--max-pair-age-s", "0"],
     "--max-pair-age-s must be in [0.01, 60.0], got 0.0"),
    (["bag", "SEQ", "--rate", "0"], "--rate must be a finite number > 0, got 0.0"),
    (["bag", "SEQ", "--rate", "1e12"], "--rate must be at most 1e+09 Hz (frames stamped 1 ns apart), got 1e+12"),
    (["synth", "--rate", "0"], "--rate must be a finite number > 0, got 0.0"),
])
def test_setting_errors_name_the_flag_that_was_typed(capsys, tmp_path, tiny_sequence, argv, expected):
    """A setting out of range is named by the flag the user typed (``cli.main`` words every sub-command's
    SettingError), not by the setting's internal name (``history_size``, ``sync_slop_s``, ``rate_hz``)."""
    bag = write_bag(tiny_sequence, tmp_path / "bag") if argv[1] == "BAG" else None
    argv = [str({"BAG": bag, "SEQ": tiny_sequence}.get(a, a)) for a in argv]
    err = one_line_error(capsys, [*argv, "--out", str(tmp_path / "out")])
    assert err == f"ERROR: {expected}"
    assert not (tmp_path / "out").exists()


def test_a_rate_that_stamps_past_the_last_ros_time_is_an_error_not_a_traceback(capsys, tmp_path, tiny_sequence):
    """A trial: `mtl3d bag --rate 1e-9` (and stamps in nanoseconds) ended in a struct.error traceback; the bag's
    stamps must fit builtin_interfaces/Time (sec an int32)."""
    err = one_line_error(capsys, ["bag", str(tiny_sequence), "--rate", "1e-9", "--out", str(tmp_path / "out")])
    assert err.startswith("ERROR: ") and "past the last ROS time" in err and err.endswith("--rate is too small")
    assert not (tmp_path / "out").exists()


def test_node_parameters_keep_their_names_in_the_same_errors():
    """The node replies with the parameter's name (ROS users set parameters, not flags): one rule, two wordings."""
    with pytest.raises(SettingError, match=r"^history_size must be in \[1, 256\], got 0$") as info:
        RuntimeConfig().replace(history_size=0)
    assert info.value.named("--history-size") == "--history-size must be in [1, 256], got 0"
    with pytest.raises(SettingError, match=r"^sync_slop_s must be in \[0.0, 1.0\], got -1.0$"):
        RuntimeConfig(sync_slop_s=-1.0)
    with pytest.raises(SettingError, match=r"^limit must be >= 1, got 0$"):
        ReplayOptions(limit=0)


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--speed", "-1", "--speed must be a finite number > 0, got -1.0"),  # used to render the path backwards
    ("--speed", "0", "--speed must be a finite number > 0, got 0.0"),
    ("--speed", "nan", "--speed must be a finite number > 0, got nan"),
    ("--rate", "inf", "--rate must be a finite number > 0, got inf"),
    ("--rate", "1e12", "--rate must be at most 1e+09 Hz (frames stamped 1 ns apart), got 1e+12"),  # equal stamps
    ("--seed", "-1", "--seed must be a whole number >= 0, got -1"),  # was numpy's 'expected non-negative integer'
    ("--size", "1x1", "--size must be at least 2x2 and at most 16777216 pixels, got 1x1"),
    ("--size", "100000x100000", "--size must be at least 2x2 and at most 16777216 pixels, got 100000x100000"),
])
def test_synth_refuses_bad_numbers_before_writing(capsys, tmp_path, flag, value, expected):
    err = one_line_error(capsys, ["synth", "--frames", "2", "--size", "32x24", flag, value, "--out", str(tmp_path / "s")])
    assert err == f"ERROR: {expected}"
    assert not (tmp_path / "s").exists()  # refused before the output folder is made


def test_a_misspelt_data_path_names_the_spec_and_what_was_expected(capsys, tmp_path):
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48))),
                           tmp_path / "m.safetensors")
    missing = tmp_path / "hololens_00"
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", f"sequence:{missing}", "--out", str(tmp_path / "e")])
    assert err == (f"ERROR: --data sequence:{missing}: {missing} does not exist (expected a posed RGB-D sequence "
                   "folder, docs/sequence_format.md)")
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", f"bag:{missing}", "--out", str(tmp_path / "e")])
    assert err.startswith(f"ERROR: --data bag:{missing}: {missing}: no such bag (expected a rosbag2 folder")
    assert not (tmp_path / "e").exists()  # the data is opened before the output folder is made


def test_eval_makes_no_output_folder_when_a_later_data_spec_fails(capsys, tmp_path):
    """Every --data is opened before --out is created: a typo in the second spec leaves no empty report folder."""
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48))),
                           tmp_path / "m.safetensors")
    missing = tmp_path / "nope"
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", "synthetic:test:1", "--data", f"sequence:{missing}",
                                  "--out", str(tmp_path / "e")])
    assert err.startswith(f"ERROR: --data sequence:{missing}: {missing} does not exist")
    assert not (tmp_path / "e").exists()
    seq = write_sequence(tmp_path / "seq", iter_sequence(0, 3, (16, 12)))
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", f"sequence:{seq}", "--gap", "100", "--out",
                                  str(tmp_path / "e")])  # ran, pairing frames with themselves, "the frame 100 back"
    assert err == (f"ERROR: --gap 100: --data sequence:{seq} has 3 frames, so no frame has one 100 back; expected a "
                   "gap below 3")
    assert not (tmp_path / "e").exists()
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", "synthetic:test:1", "--modes", "two_veiw",
                                  "--out", str(tmp_path / "e")])
    assert err == "ERROR: unknown evaluation mode(s) ['two_veiw']; expected two_view, single_view"
    assert not (tmp_path / "e").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("mtl3d ")


def test_ctrl_c_is_one_line_and_replay_keeps_what_it_wrote(capsys, tmp_path, tiny_sequence, monkeypatch):
    """A soak trial: Ctrl-C in `mtl3d replay` printed a KeyboardInterrupt traceback, though the output bag and report
    were written. One line, exit status 130 (128 + SIGINT), and the partial outputs stay."""
    from mtl3d_perception.runtime.pipeline import PerceptionPipeline

    bag = write_bag(tiny_sequence, tmp_path / "bag")
    calls = {"n": 0}
    process = PerceptionPipeline.process

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return process(self, *args, **kwargs)

    monkeypatch.setattr(PerceptionPipeline, "process", interrupted)
    out = tmp_path / "out"
    rc = cli_main(["replay", str(bag), "--model", "preset:tiny", "--device", "cpu", "--out", str(out),
                   "--no-progress", "--montage-frames", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 130 and err.splitlines()[-1] == "mtl3d replay: interrupted" and "Traceback" not in err, err
    assert (out / "report.md").is_file() and (out / "output.mcap").is_file()


def test_load_model_refuses_a_device_as_runtime_config_does():
    """A Python-API trial: load_model("default", device="gpu") ended in torch's list of every device type and
    device="cuda" on a CPU-only torch in a bare AssertionError; both now get the runtime's one device rule."""
    with pytest.raises(SettingError, match="device must be one of auto, cpu, cuda, cuda:N"):
        load_model("preset:tiny", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="device 'cuda' requested but CUDA is not available"):
            load_model("preset:tiny", device="cuda")
    model, _ = load_model("preset:tiny", device="auto")
    assert next(model.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(("flags", "expected"), [
    (["--intrinsics", "100,100,20,20"], "--intrinsics applies to tum: specs only"),
    (["--tum-camera", "fr1"], "--tum-camera applies to tum: specs only"),
    (["--depth-topic", "/camera/depth/image_rect_raw"], "--depth-topic applies to bag: specs only"),
    (["--world-frame", "map"], "--world-frame applies to bag: specs only"),
])
def test_eval_refuses_a_spec_flag_no_data_spec_reads(capsys, tmp_path, tiny_sequence, flags, expected):
    """A trial: --intrinsics and --tum-camera on a sequence: spec were ignored without a word (the same numbers
    three times); every flag that only one spec kind reads is refused, naming the flag and the kinds it applies to."""
    ckpt = save_checkpoint(build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48))),
                           tmp_path / "m.safetensors")
    err = one_line_error(capsys, ["eval", str(ckpt), "--data", f"sequence:{tiny_sequence}", *flags,
                                  "--out", str(tmp_path / "e")])
    assert err == (f"ERROR: {expected}, and --data sequence:{tiny_sequence} has none (kinds: sequence); leave it "
                   "out, or give such a spec")
    assert not (tmp_path / "e").exists()


def test_a_source_field_of_another_kind_is_refused():
    """The same in a training config: a TUM camera or a bag topic on a sequence source changed nothing."""
    from mtl3d_perception.data.datasets import SourceConfig

    with pytest.raises(ValueError, match=r"source intrinsics \(1, 1, 0, 0\) applies to tum sources only, not to a "
                                         r"sequence source; leave it out"):
        SourceConfig(kind="sequence", path="x", intrinsics=(1, 1, 0, 0))
    with pytest.raises(ValueError, match="source world_frame 'map' applies to bag sources only, not to a scannet"):
        SourceConfig(kind="scannet", path="x", world_frame="map")
    assert SourceConfig(kind="tum", path="x", camera="fr1").camera == "fr1"
    # a review: a synthetic source's scene counts on a recording were ignored as well
    with pytest.raises(ValueError, match="source num_scenes 64 applies to synthetic sources only, not to a bag source"):
        SourceConfig(kind="bag", path="x", num_scenes=64)
    assert SourceConfig(kind="synthetic", split="val", num_scenes=64).num_scenes == 64
    # a trial: a frame range on synthetic scenes, a stride on NYUv2's images, a zoom out: accepted, changing nothing
    with pytest.raises(ValueError, match="source start 0.5 applies to sequence and bag and tum and scannet and "
                                         "seven_scenes and nyuv2 sources only, not to a synthetic source"):
        SourceConfig(kind="synthetic", start=0.5)
    with pytest.raises(ValueError, match="source stride 3 applies to sequence and bag"):
        SourceConfig(kind="nyuv2", path="x", stride=3)
    assert SourceConfig(kind="nyuv2", path="x", start=10, end=20).end == 20
    from mtl3d_perception.data.augment import AugmentConfig

    with pytest.raises(ValueError, match=r"'data.augment.scale' expects \[low, high\] with 1 <= low <= high"):
        AugmentConfig(scale=(0.6, 0.8))


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    """An install trial: `mtl3d info default | head -1` printed 'ERROR: [Errno 32] Broken pipe' (BrokenPipeError is an
    OSError, reported as a bad file) and exited 1. A closed pipe stops the command without a word, 128 + SIGPIPE."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mtl3d_perception.cli", "info", "preset:tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the command writes its first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Broken pipe" not in err and "ERROR" not in err and "Traceback" not in err, err
