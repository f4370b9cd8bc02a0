"""The `mtl3d` command: one sub-command per job, each owned by the module that does the work.

Every sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them.
The library's errors are caught once, here, and printed as ``ERROR: ...`` with exit status 1; a setting's error
(``typed_config.SettingError``) names the option the user typed for it (``cli_args.option_for``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import NoReturn

from mtl3d_perception import __version__
from mtl3d_perception.cli_args import option_for
from mtl3d_perception.typed_config import SettingError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("mtl3d_perception.data.synthetic_cli", "render a synthetic posed RGB-D sequence folder"),
    "bag": ("mtl3d_perception.data.bag_cli", "write a posed RGB-D sequence folder as a rosbag2 (.mcap/.db3)"),
    "info": ("mtl3d_perception.model.info", "print a preset's or checkpoint's config, parameters and FLOPs"),
    "train": ("mtl3d_perception.train.train_cli", "train the CvM-MTL network from a config file"),
    "eval": ("mtl3d_perception.train.eval_cli", "evaluate a checkpoint: metrics.json, report.md, montages"),
    "replay": ("mtl3d_perception.replay", "run the perception pipeline over a rosbag2 and evaluate it"),
    "demo": ("mtl3d_perception.demo", "synthetic bag -> replay with the shipped model -> report"),
}


DESCRIPTION = ("3D-aware multi-task dense perception (CvM-MTL): make synthetic sequences and bags, train and "
               "evaluate the network, replay rosbags without ROS.")


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors print a one-line usage (``mtl3d replay [options] BAG``) instead of
    every option (replay's generated options fill 20 lines above the error), then the error and where the options
    are listed; exit status 2, as argparse's."""

    def error(self, message: str) -> NoReturn:
        positionals = [{"*": "[{} ...]", "?": "[{}]", "+": "{} [...]"}.get(a.nargs, "{}").format(a.metavar or a.dest)
                       for a in self._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
        commands = [a.metavar for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        usage = " ".join([self.prog, "[options]", *commands, *positionals])
        self.exit(2, f"usage: {usage}\n{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def unrecognized(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """argparse's "unrecognized arguments: ..." with the nearest option of ``parser`` for each mistyped flag
    (``--start-ofset`` -> ``--start-offset``, ``--start_offset`` -> ``--start-offset``)."""
    flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    hints = []
    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name.startswith("-"):
            near = difflib.get_close_matches(name.replace("_", "-"), flags, n=1, cutoff=0.75)
            if near:
                hints.append(f"{name}: did you mean {near[0]}?")
    return f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else "")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="mtl3d", description=DESCRIPTION,
                           epilog="Run 'mtl3d COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"mtl3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _parser=p)  # _parser: main words a SettingError with this parser's options
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:  # a sub-command whose optional dependency is missing
            p.set_defaults(_missing=str(exc))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # the command's usage and options, not the top level's (argparse reports them at the top)
        args._parser.error(unrecognized(args._parser, unknown))
    if getattr(args, "_missing", None):
        print(f"ERROR: mtl3d {args.command} is unavailable: {args._missing}", file=sys.stderr)
        return 1
    module = importlib.import_module(args._module)
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # a reader gone (`| head`) surfaces here, not as a warning at the interpreter's exit
        return code
    except BrokenPipeError:  # the reader closed the pipe: stop quietly, as cat does (Python's signal docs, "Note on
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # SIGPIPE"; an install trial: an ERROR line)
        return 141  # 128 + SIGPIPE, as a shell reports a program the closed pipe stopped
    except SettingError as exc:  # "--history-size must be ...", not the setting's own name "history_size"
        option = option_for(args._parser, exc.name, argv)
        print(f"ERROR: {exc.named(option) if option else exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as exc:  # OSError: missing files, permissions, a file where a folder goes
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; each command closes what it writes (replay's bag)
        print(f"mtl3d {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
