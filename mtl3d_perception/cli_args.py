"""Argument types and checks shared by the ``mtl3d`` sub-commands: one rule and one message for each.

argparse ``type=`` callables raise ``argparse.ArgumentTypeError`` (argparse prints it as a usage error);
the checks raise ``ValueError``, which ``cli.main`` prints as ``ERROR: ...``. A library's
:class:`~mtl3d_perception.typed_config.SettingError` names a setting (``history_size``, ``rate_hz``); ``cli.main``
words it with the option whose ``dest`` is that name (:func:`option_for`), so an option that sets a library
setting takes the setting's name as its ``dest``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def _whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    expected = f"a whole number >= {minimum}" if maximum is None else f"a whole number in [{minimum}, {maximum}]"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def int_in_range(minimum: int, maximum: int):
    """An argparse type: a whole number in ``[minimum, maximum]`` (e.g. a thread count)."""
    def parse(text: str) -> int:
        return _whole_number(text, minimum, maximum)

    return parse


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (counts, batch sizes, frame gaps)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (e.g. how many pictures to write)."""
    return _whole_number(text, 0)


def size_wh(text: str) -> tuple[int, int]:
    """An argparse type: ``"WxH"`` -> ``(W, H)``, both >= 1 (an image or network size; what a size must be
    beyond that is its user's rule, e.g. ``iter_sequence``'s or a model config's multiple of 8)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 320x240, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1x1, got {text!r}")
    return w, h


def check_output_folder(path: str | Path) -> Path:
    """``path`` if it can be an output folder: a folder, or missing with no file where it or a parent goes.

    Raises:
        NotADirectoryError: ``path`` (or a parent) is a file; the message names it and what was expected.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output folder {path} is a file; expected a folder (created if missing)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"output folder {path} cannot be made: {parent} is a file, not a folder")
    return path


def output_folder(path: str | Path) -> Path:
    """``path`` checked by :func:`check_output_folder` and created with its parents if missing."""
    path = check_output_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def option_for(parser: argparse.ArgumentParser, dest: str, argv: Sequence[str]) -> str | None:
    """The option of ``parser`` that sets ``dest``, spelt as in ``argv`` (an alias such as ``--sync-slop`` or the full
    ``--sync-slop-s``; the last one typed), else its last spelling; None when no option sets ``dest``."""
    for action in parser._actions:  # argparse lists a parser's arguments nowhere public
        if action.dest == dest and action.option_strings:
            typed = [arg.split("=", 1)[0] for arg in argv if arg.split("=", 1)[0] in action.option_strings]
            return (typed or action.option_strings)[-1]
    return None
