"""Which frames of an evaluated recording a checkpoint was trained on (its ``trained_on`` metadata).

``mtl3d train`` stores each training source in the checkpoint (``trained_on``: kind, path, ``start``/``end``/
``stride``, the bag's topics; a fine-tune's init checkpoint's sources follow, tagged ``init``). Scoring those frames
measures recall, not what a new building gives, so ``mtl3d eval`` says when a ``--data`` range overlaps one of them
(a new-user trial: a fine-tune on frames 0-80 % of a bag scored on 50-100 % of it without a word).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mtl3d_perception.data.datasets import FRAME_KINDS, frame_range
from mtl3d_perception.topics import base_image_topic

RECORDED_KINDS = FRAME_KINDS  # kinds whose frames are indexed the same way in training and eval
FOLDER_SAMPLES = 64  # files of a recording folder whose middle bytes go into its fingerprint (a few ms of reading)


def recording(path: str | Path) -> Path:
    """A recording's folder, absolute: a bag's ``.mcap``/``.db3`` file stands for its folder. Training stores it
    beside each source's ``path`` as typed (``trained_on[i]["recording"]``): a relative path read from another folder
    named another recording (a trial: a false note, and a missed overlap)."""
    p = Path(path).expanduser().resolve()
    return p.parent if p.is_file() and p.suffix in (".mcap", ".db3") else p


def fingerprint(kind: str, path: str | Path, like: str | None = None) -> str | None:
    """A recording's identity from its content, not its path (a trial: a bag moved or renamed after training lost its
    overlap note, and another recording written to the same path got a false one): for a bag its first and last log
    times, message count (rosbag2's metadata) and its storage files' sizes and middle bytes; for a recording folder
    (sequence, TUM, ScanNet, 7-Scenes) the name and size of every file under it, relative to it, and the middle bytes
    of up to :data:`FOLDER_SAMPLES` of them spread over the sorted names (fixed-size frames, e.g. ``.npy`` depth, of
    another recording have the same names and sizes; ``kind:v2:hash``). None where it cannot be read (absent,
    unreadable). ``like``: a fingerprint a checkpoint recorded, whose scheme this one follows (a folder's before
    session 29, ``kind:hash``, had no sampled bytes), so a comparison with it is like for like.
    """
    p = Path(path).expanduser()
    try:
        if kind == "bag":
            from mtl3d_perception.data.bag import open_reader

            reader = open_reader(p)
            try:
                identity = f"{reader.start_time} {reader.end_time} {reader.message_count}"
            finally:
                reader.close()
            # and a sample of each storage file's bytes (names may change, content not): a recording of the same
            # length and stamps (a simulator's, a re-run) is another one
            files = [p] if p.is_file() else [f for f in p.iterdir() if f.suffix in (".mcap", ".db3")]
            identity += " " + " ".join(sorted(_sample(f) for f in files))
        elif p.is_dir():
            files = sorted(Path(root, name) for root, _, names in os.walk(p) for name in names)
            entries = [f"{f.relative_to(p)} {f.stat().st_size}" for f in files]
            step = max(1, -(-len(files) // FOLDER_SAMPLES))  # ceil: at most FOLDER_SAMPLES files read
            if like is not None and like.count(":") == 1:  # recorded before the sampled bytes
                return f"{kind}:{hashlib.sha256(chr(10).join(sorted(entries)).encode()).hexdigest()[:16]}"
            identity = "\n".join(entries + [_sample(f, 4096) for f in files[::step]])
            return f"{kind}:v2:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        else:
            return None
    except (OSError, ValueError, RuntimeError):  # BagError, rosbags ReaderError: not readable as such
        return None
    return f"{kind}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def _sample(path: Path, size: int = 1 << 16) -> str:
    """A file's size and the sha256 of ``size`` bytes from its middle: its identity without reading it whole."""
    n = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, n // 2 - size // 2))
        return f"{n}:{hashlib.sha256(f.read(size)).hexdigest()[:16]}"


def with_identity(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``trained_on`` entry with its recording's absolute path (``recording``) and content ``fingerprint``, where
    the recording can be read now (the trainer's sources; a fine-tune's init entries from before these fields, whose
    relative paths resolve from the folder trained in)."""
    if entry.get("kind") not in RECORDED_KINDS or not entry.get("path"):
        return entry
    out = dict(entry)
    if not out.get("recording") and Path(entry["path"]).expanduser().exists():
        out["recording"] = str(recording(entry["path"]))
    if not out.get("fingerprint") and (fp := fingerprint(entry["kind"], out.get("recording") or entry["path"])):
        out["fingerprint"] = fp
    return out


def _same_recording(entry: dict[str, Any], source: Any) -> bool:
    """By content where both fingerprints are known, else by the absolute path (checkpoints from before
    ``fingerprint``; before ``recording``, the path as typed, resolved from the current folder)."""
    if entry.get("fingerprint") and (now := fingerprint(source.kind, source.path, like=entry["fingerprint"])):
        return entry["fingerprint"] == now
    return Path(entry.get("recording") or recording(entry["path"])) == recording(source.path)


def _describe(entry: dict[str, Any], lo: int, hi: int) -> str:
    stride = int(entry.get("stride", 1) or 1)
    where = f"{entry['kind']} {entry['path']} frames {lo}-{hi - 1}{f' every {stride}' if stride > 1 else ''}"
    return f"before fine-tuning ({entry['init']}): {where}" if entry.get("init") else where


def training_overlap(trained_on: Any, source: Any, indices: list[int], num_frames: int) -> list[dict[str, Any]]:
    """The training sources of a checkpoint that share frames with an evaluated range.

    Args:
        trained_on: the checkpoint's ``trained_on`` metadata (a list of source dicts; anything else has no ranges).
        source: the evaluated ``SourceConfig`` (``kind``, ``path`` and, for a bag, ``image_topic``).
        indices: the recording's frame indices that are scored (``FramesDataset.indices`` at the scored samples).
        num_frames: the recording's frame count (what fractions in a ``trained_on`` range are of).

    Returns:
        one ``{"trained_on": i, "source": description, "frames": scored training frames, "scored": len(indices)}``
        per overlapping range of frames (``i`` the first entry of ``trained_on`` with it); later entries with the
        same range (the stages of one model) are listed in its ``"also"`` (a trial: the shipped model printed three
        notes that looked alike).
    """
    if source.kind not in RECORDED_KINDS or not isinstance(trained_on, list):
        return []
    out: list[dict[str, Any]] = []
    by_range: dict[tuple[int, int, int], dict[str, Any]] = {}
    for i, entry in enumerate(trained_on):
        if not isinstance(entry, dict) or entry.get("kind") != source.kind or not entry.get("path"):
            continue
        if not _same_recording(entry, source):
            continue
        trained_topic = entry.get("image_topic", source.image_topic)
        if source.kind == "bag" and base_image_topic(trained_topic) != base_image_topic(source.image_topic):
            continue  # another camera of the same bag (a transport's topic is its camera's: a trial, /compressed)
        try:
            lo, hi = frame_range(SimpleNamespace(start=entry.get("start", 0), end=entry.get("end", 1.0),
                                                 path=entry["path"]), num_frames)
        except (ValueError, TypeError):  # a range that does not fit this recording: not the frames trained on
            continue
        stride = int(entry.get("stride", 1) or 1)
        if (lo, hi, stride) in by_range:
            by_range[(lo, hi, stride)].setdefault("also", []).append(i)
            continue
        trained = set(range(lo, hi, stride))
        frames = sum(int(j) in trained for j in indices)
        if frames:
            by_range[(lo, hi, stride)] = {"trained_on": i, "source": _describe(entry, lo, hi), "frames": frames,
                                          "scored": len(indices)}
            out.append(by_range[(lo, hi, stride)])
    return out


def overlap_note(spec: str, overlap: dict[str, Any]) -> str:
    """One line for stderr and report.md: which ``--data`` spec, how many of its scored frames are training frames."""
    return (f"--data {spec}: {overlap['frames']} of its {overlap['scored']} scored frames are training frames of this "
            f"checkpoint (trained_on[{overlap['trained_on']}]: {overlap['source']}"
            + (f"; also trained_on{overlap['also']}, the same frames" if overlap.get("also") else "")
            + "); their metrics measure what it was trained on, not held-out data")
