"""Crash-safe training checkpoints: a weights file and a training-state file committed together.

Layout of ``<out_dir>/checkpoints/``:

- ``step-NNNNNNNN.safetensors``: the model at step N (``model.save_checkpoint``, with ``step`` in its metadata;
  ``step-NNNNNNNN-K.*`` when step N is saved again, e.g. after a resume: committed files are never rewritten);
- ``step-NNNNNNNN.state.pt``: optimiser, scheduler, loss terms, step and RNG at step N (tensors and plain values,
  loaded with ``weights_only=True``);
- ``last.json``: the manifest naming the committed pair and its step. Replacing it is the one commit point;
- ``last.safetensors``: a hard link to the committed weights, for the node, ``mtl3d eval`` and copying.

:func:`commit` writes both files under temporary names, fsyncs them, renames them to their step names, fsyncs the
folder, and only then atomically replaces ``last.json`` (then refreshes ``last.safetensors`` and deletes older steps).
A kill at any instant therefore leaves ``last.json`` naming either the previous complete pair or the new one, never a
mix (the failure the issue reported: weights of step 10 beside state of step 15). The sequence is the usual
write-temp / fsync / rename / fsync-directory recipe (see e.g. SQLite's "atomic commit" document and
``man 2 rename``); no library does it for a pair of files.

:func:`load_state_file` reads a state file safely and turns every failure into one line naming the file and the
reason; it never suggests ``weights_only=False`` (a hostile file would execute code).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MANIFEST = "last.json"
LAST_WEIGHTS = "last.safetensors"
LEGACY_STATE = "last.state.pt"  # checkpoints written before the manifest existed: last.safetensors + last.state.pt
MANIFEST_FORMAT = "mtl3d_perception.checkpoint_pair/1"


class CheckpointPairError(ValueError):
    """A checkpoint folder or training-state file that cannot be resumed from; the message names the file."""


@dataclass(frozen=True)
class CheckpointPair:
    """The committed weights and state files of one step."""

    weights: Path
    state: Path
    step: int


def step_names(step: int, ckpt_dir: Path | None = None) -> tuple[str, str]:
    """(weights, state) file names of ``step``: ``step-NNNNNNNN``, or with ``-K`` added (the smallest K free in
    ``ckpt_dir``) when that step was saved before, so a committed file is never overwritten in place."""
    stem, k = f"step-{step:08d}", 0
    while ckpt_dir is not None and any((ckpt_dir / f"{stem}{suffix}").exists() for suffix in (".safetensors", ".state.pt")):
        k += 1
        stem = f"step-{step:08d}-{k}"
    return f"{stem}.safetensors", f"{stem}.state.pt"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(ckpt_dir: str | Path, step: int, write_weights: Callable[[Path], Any],
           write_state: Callable[[Path], Any]) -> CheckpointPair:
    """Write and commit the pair of ``step`` (see the module docstring for the order of operations).

    Args:
        ckpt_dir: the checkpoint folder (created).
        step: the training step both files hold.
        write_weights: writes the ``.safetensors`` weights to the path it is given.
        write_state: writes the state file to the path it is given.

    Returns:
        The committed pair.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    weights_name, state_name = step_names(step, ckpt_dir)
    pair = CheckpointPair(ckpt_dir / weights_name, ckpt_dir / state_name, int(step))
    for final, write in ((pair.weights, write_weights), (pair.state, write_state)):
        tmp = final.with_name(final.name + ".tmp")
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    manifest_tmp = ckpt_dir / (MANIFEST + ".tmp")
    manifest_tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "step": pair.step, "weights": weights_name,
                                        "state": state_name}) + "\n")
    _fsync_file(manifest_tmp)
    os.replace(manifest_tmp, ckpt_dir / MANIFEST)  # the commit point
    _fsync_dir(ckpt_dir)
    _refresh_last_weights(ckpt_dir, pair.weights)
    _remove_uncommitted(ckpt_dir, keep={weights_name, state_name})
    return pair


def _refresh_last_weights(ckpt_dir: Path, weights: Path) -> None:
    """Point ``last.safetensors`` at ``weights`` atomically (hard link; a copy where links are not supported)."""
    tmp = ckpt_dir / (LAST_WEIGHTS + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(weights, tmp)
    except OSError:
        import shutil

        shutil.copyfile(weights, tmp)
    os.replace(tmp, ckpt_dir / LAST_WEIGHTS)


def _remove_uncommitted(ckpt_dir: Path, keep: set[str]) -> None:
    """Delete older steps' files and temporaries left by an interrupted write."""
    for path in ckpt_dir.iterdir():
        name = path.name
        if name not in keep and (name.startswith("step-") or name.endswith(".tmp") or name == LEGACY_STATE):
            path.unlink(missing_ok=True)


def find_committed(ckpt_dir: str | Path) -> CheckpointPair:
    """The pair to resume from: the one ``last.json`` names, else a legacy ``last.safetensors`` + ``last.state.pt``.

    Raises:
        FileNotFoundError: nothing to resume from in ``ckpt_dir``.
        CheckpointPairError: the manifest is unreadable, or names files that are missing.
    """
    ckpt_dir = Path(ckpt_dir)
    manifest = ckpt_dir / MANIFEST
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            pair = CheckpointPair(ckpt_dir / str(data["weights"]), ckpt_dir / str(data["state"]), int(data["step"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointPairError(f"{manifest}: not a checkpoint manifest ({type(exc).__name__}: {exc})") from None
        for path in (pair.weights, pair.state):
            if not path.is_file():
                raise CheckpointPairError(f"{manifest} names {path.name}, which is missing from {ckpt_dir}")
        return pair
    weights, state = ckpt_dir / LAST_WEIGHTS, ckpt_dir / LEGACY_STATE
    if weights.is_file() and state.is_file():
        return CheckpointPair(weights, state, -1)  # step read from the files themselves
    raise FileNotFoundError(f"nothing to resume in {ckpt_dir}: no {MANIFEST} (nor {LAST_WEIGHTS} + {LEGACY_STATE})")


def load_state_file(path: str | Path, expected_format: str) -> dict[str, Any]:
    """Read a training-state file (``weights_only=True``: tensors and plain values only, nothing is unpickled).

    Raises:
        FileNotFoundError: no such file.
        CheckpointPairError: one line naming the file and why it cannot be used (truncated, not a torch file,
            holds objects other than tensors and plain values, not a training state of ``expected_format``).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointPairError(f"{path}: is a directory, expected a training state file (.state.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"training state file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False: never repeat that for a file we could not vouch for
        raise CheckpointPairError(f"{path}: refused: it holds objects other than tensors and plain values "
                                  "(not a training state written by mtl3d train)") from None
    except EOFError:
        raise CheckpointPairError(f"{path}: truncated (ends early); not a complete training state file") from None
    except (RuntimeError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first:
            first = type(exc).__name__
        raise CheckpointPairError(f"{path}: not a readable training state file ({first})") from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointPairError(f"{path}: not a training state file (format {got!r}, expected {expected_format!r})")
    return state
