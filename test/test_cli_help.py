"""`mtl3d COMMAND --help` reads right and `mtl3d eval` shows progress (new-user audit, item 5)."""

from __future__ import annotations

import argparse
import io
import re
import sys

import pytest

from mtl3d_perception.cli import build_parser
from mtl3d_perception.cli import main as cli_main
from mtl3d_perception.model.config import available_presets
from mtl3d_perception.replay.options import ReplayOptions
from mtl3d_perception.runtime.config import parameter_specs


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings or flag == a.dest)


@pytest.mark.parametrize("name", [n for n, s in parameter_specs(ReplayOptions, "replay").items() if s.type is bool])
def test_replay_boolean_options_read_right_both_ways(name):
    """`--no-progress  no show a progress bar` was generated as 'no ' + the description; every boolean option is
    now a --NAME / --no-NAME pair (argparse.BooleanOptionalAction) whose help is its description and default."""
    parser = subparser("replay")
    flag = "--" + name.replace("_", "-")
    spec = parameter_specs(ReplayOptions, "replay")[name]
    action = option(parser, flag)
    assert action.option_strings == [flag, "--no-" + flag[2:]]
    help_text = parser.format_help()
    assert f"{spec.description}; default {spec.default}" in " ".join(help_text.split())
    assert "no show" not in help_text
    assert getattr(parser.parse_args(["bag", flag]), name) is True
    assert getattr(parser.parse_args(["bag", "--no-" + flag[2:]]), name) is False
    assert getattr(parser.parse_args(["bag"]), name) is spec.default


def test_replay_model_option_names_what_it_takes():
    """`--model TEXT` said nothing; it takes a checkpoint (or '' / 'preset:NAME', as its help says), spelt as
    `mtl3d demo --model CKPT` spells it."""
    parser = subparser("replay")
    assert option(parser, "--model").metavar == option(subparser("demo"), "--model").metavar == "CKPT"
    assert "--model CKPT, --model-path CKPT" in parser.format_help()


def test_eval_options_have_help_with_defaults():
    parser = subparser("eval")
    assert option(parser, "--batch-size").help == "samples per batch (default: 4)"
    assert option(parser, "--device").help == "torch device: auto, cpu, cuda, cuda:N (default: auto)"
    assert option(parser, "--modes").help == ("comma-separated, of: two_view, single_view "
                                              "(default: two_view,single_view)")
    assert parser.parse_args(["ckpt", "--data", "synthetic:test"]).progress is True


def test_info_lists_the_presets_that_exist():
    """The shipped model is the `cpu` preset, which the hand-written '(tiny, small, base)' left out."""
    assert {"base", "cpu", "small", "tiny"} <= set(available_presets())
    assert option(subparser("info"), "model").help.startswith(f"a preset name ({', '.join(available_presets())}), ")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mtl3d_perception.model import build_model, resolve_config, save_checkpoint

    model = build_model(resolve_config("tiny").replace(pretrained=False, input_size=(64, 48), num_depth=4, cvm_layers=1))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_eval_shows_progress_per_spec_on_a_terminal_only(checkpoint, tmp_path, monkeypatch):
    """`mtl3d eval` printed nothing during a 4.6-minute run; it now has a bar per data spec, as train and replay do,
    off with --no-progress or when stderr is not a terminal."""
    args = ["eval", str(checkpoint), "--data", "synthetic:test:1", "--max-batches", "1", "--batch-size", "2",
            "--modes", "single_view", "--montages", "0", "--device", "cpu"]
    runs = {}
    for name, stderr, extra in (("terminal", Terminal(), []), ("off", Terminal(), ["--no-progress"]),
                                ("pipe", io.StringIO(), [])):
        monkeypatch.setattr(sys, "stderr", stderr)
        assert cli_main([*args, *extra, "--out", str(tmp_path / name)]) == 0
        runs[name] = stderr.getvalue()
    # the bar counts the spec's 2 samples ("0/2" at least: a run faster than tqdm's refresh interval shows no more)
    assert "eval synthetic:test:1" in runs["terminal"] and re.search(r"\d/2 ", runs["terminal"]), runs["terminal"]
    assert runs["off"] == "" and runs["pipe"] == ""


@pytest.mark.parametrize(("argv", "usage", "error"), [
    (["replay", "bag", "--limit", "abc"], "usage: mtl3d replay [options] BAG",
     "mtl3d replay: error: argument --limit: invalid int value: 'abc'"),
    (["train"], "usage: mtl3d train [options] [KEY=VALUE ...]",
     "mtl3d train: error: the following arguments are required: --config"),
    (["frobnicate"], "usage: mtl3d [options] COMMAND", "mtl3d: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_three_lines_not_every_option(capsys, argv, usage, error):
    """An audit: a mistyped value printed replay's 20-line generated usage above the one line that says what is
    wrong. Now: the short usage, the error, where the options are; exit status 2 as argparse's."""
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    lines = capsys.readouterr().err.splitlines()
    command = " ".join(["mtl3d", *argv[:1]]) if argv[0] != "frobnicate" else "mtl3d"
    assert exc.value.code == 2 and len(lines) == 3, lines
    assert lines[0] == usage and lines[1].startswith(error) and lines[2] == f"(see '{command} --help')"


@pytest.mark.parametrize(("argv", "error"), [
    (["replay", "bag", "--start-ofset", "1"],
     "mtl3d replay: error: unrecognized arguments: --start-ofset 1 (--start-ofset: did you mean --start-offset?)"),
    (["replay", "bag", "--start_offset", "1"],
     "mtl3d replay: error: unrecognized arguments: --start_offset 1 (--start_offset: did you mean --start-offset?)"),
    (["eval", "ckpt", "--data", "x", "--wrld-frame", "map"],
     "mtl3d eval: error: unrecognized arguments: --wrld-frame map (--wrld-frame: did you mean --world-frame?)"),
])
def test_a_mistyped_flag_is_named_by_its_command_with_the_nearest_option(capsys, argv, error):
    """A user trial: an unknown replay flag printed the top level's usage ('mtl3d [options] COMMAND')."""
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and lines[0].startswith(f"usage: mtl3d {argv[0]} [options]") and lines[1] == error


def test_none_is_a_value_of_the_options_whose_default_is_none():
    """The help says "default none": `--playback-duration none` and `--limit none` parse to it."""
    args = build_parser().parse_args(["replay", "bag", "--playback-duration", "none", "--limit", "None"])
    assert args.playback_duration_s is None and args.limit is None
    args = build_parser().parse_args(["replay", "bag", "--playback-duration", "2.5", "--limit", "3"])
    assert args.playback_duration_s == 2.5 and args.limit == 3


def test_eval_takes_a_bags_world_frame_and_depth_camera_info():
    """A user trial: a bag posed in `map` could not be evaluated (no --world-frame), nor depth whose camera_info is
    not beside its topic."""
    args = build_parser().parse_args(["eval", "ckpt", "--data", "bag:b", "--world-frame", "map",
                                      "--depth-camera-info-topic", "/robot/depth/info"])
    assert (args.world_frame, args.depth_camera_info_topic) == ("map", "/robot/depth/info")


def test_model_errors_name_the_flag_and_info_takes_the_preset_spelling(capsys, tmp_path):
    """A user trial: `mtl3d replay --model MISSING` said "model_path ..." (the node's parameter, not the flag typed);
    `mtl3d info preset:tiny` (the spelling --model takes) was an unknown preset."""
    from helpers import render_frames

    from mtl3d_perception.data.bag import write_bag

    bag = write_bag(render_frames(1, 2, (64, 48)), tmp_path / "bag")
    assert cli_main(["replay", str(bag), "--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "ERROR: --model '" in err and "is not a file; expected a .safetensors checkpoint" in err
    assert cli_main(["info", "preset:tiny"]) == 0
    assert capsys.readouterr().out.startswith("model: tiny (tiny)")
