"""Which source view helps the model most: its depth abs rel under each source-selection rule, on a real sequence.

    python benchmarks/source_rule.py models/default.safetensors --data sequence:../shared/data/hololens_000 \
        --ranges 0.6:0.8,0.8:1.0 --baselines 0.05,0.10,0.15,0.20 --rotations 5,10,15 --history 4,8,16

For every reference frame in ``--ranges`` (fractions of the sequence) the model predicts depth once with each
earlier frame 1..``--max-back`` frames back as its source (and once single-view); each rule of the grid
(``min_baseline_m`` x ``min_rotation_deg`` x ``history_size``; ``history_size`` at most ``--max-back``) is then
applied with the runtime's own ``source_selection.select_source`` to the frames before the reference (every frame in
the history; the age and pose-jump limits lifted, so only the rule's geometry is compared: keyframe sequences have no
real stamps), and the abs rel of the pairs it picks is pooled over every
labelled pixel, as ``mtl3d eval`` pools. Printed per range: single view, each fixed gap (with its median baseline),
then each rule (abs rel, the median baseline of its pairs, how many references fell back to ``farthest``).
Choose on one range, report the other: session 12 chose the runtime's defaults (``PairingConfig``) on the
design frames 0.6-0.8 of ``hololens_000`` (benchmarks/RESULTS.md). Bad arguments end with one ``ERROR:`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys

import numpy as np
import torch

from mtl3d_perception.cli_args import positive_int
from mtl3d_perception.data.batch import collate
from mtl3d_perception.data.datasets import build_dataset, parse_data_spec
from mtl3d_perception.model import load_checkpoint
from mtl3d_perception.source_selection import PairingConfig, select_source

POSED_KINDS = ("sequence", "tum", "scannet", "seven_scenes", "bag")


def _floats(text: str) -> list[float]:
    """An argparse type: comma-separated numbers >= 0."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers >= 1."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def _ranges(text: str) -> list[tuple[float, float]]:
    """An argparse type: comma-separated ``start:end`` fractions with 0 <= start < end <= 1."""
    out = []
    for part in text.split(","):
        try:
            lo, hi = (float(x) for x in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected START:END fractions, got {part!r} in {text!r}") from None
        if not 0.0 <= lo < hi <= 1.0:
            raise argparse.ArgumentTypeError(f"expected 0 <= START < END <= 1, got {part!r}")
        out.append((lo, hi))
    return out


@torch.no_grad()
def pair_errors(model: torch.nn.Module, spec: str, refs: list[int], max_back: int, batch_size: int = 8,
                ) -> dict[tuple[int, int], tuple[float, int, np.ndarray, np.ndarray]]:
    """(reference, frames back) -> (sum of abs rel over labelled pixels, their count, T_world_ref, T_world_src).

    Frames back 0 is single view (the source pose is the reference's). ``refs`` must be >= ``max_back`` so that
    every source is an earlier frame of the sequence.
    """
    source = parse_data_spec(spec)
    out: dict[tuple[int, int], tuple[float, int, np.ndarray, np.ndarray]] = {}
    for back in range(max_back + 1):
        ds = build_dataset([dataclasses.replace(source, neighbour="gap", eval_gap=max(1, back))],
                           image_size=tuple(model.config.input_size), num_views=2)
        for k in range(0, len(refs), batch_size):
            chunk = refs[k:k + batch_size]
            b = collate([ds[i] for i in chunk])
            views = slice(0, 1) if back == 0 else slice(0, 2)
            depth = model(b.images[:, views], b.K[:, views], b.poses[:, views])["depth"]
            gt = b.depth[:, 0]
            for j, ref in enumerate(chunk):
                ok = torch.isfinite(gt[j]) & (gt[j] > 0)
                rel = ((depth[j][ok] - gt[j][ok]).abs() / gt[j][ok]).double()
                out[ref, back] = (float(rel.sum()), int(ok.sum()), b.poses[j, 0].double().numpy(),
                                  b.poses[j, views.stop - 1].double().numpy())
    return out


def rule_choice(errors: dict, ref: int, config: PairingConfig) -> tuple[int, str]:
    """Frames back that ``select_source`` picks for ``ref`` from its ``history_size`` earlier frames (0: none)."""
    backs = list(range(min(config.history_size, max(b for _, b in errors)), 0, -1))  # oldest first
    candidates = [errors[ref, b][3] for b in backs]
    ages = [float(b) for b in backs]  # nominal 1 s a frame: the age limit is lifted below
    choice = select_source(errors[ref, 0][2], candidates, ages,
                           dataclasses.replace(config, max_pair_age_s=float(len(backs) + 1), max_speed_mps=1e9,
                                               max_angular_speed_dps=1e9))
    return (0, choice.reason) if choice.index is None else (backs[choice.index], choice.reason)


def _pooled(errors: dict, picks: dict[int, int]) -> float:
    total = sum(errors[r, b][0] for r, b in picks.items())
    return total / max(1, sum(errors[r, b][1] for r, b in picks.items()))


def _baseline_cm(errors: dict, picks: dict[int, int]) -> float:
    return 100 * float(np.median([np.linalg.norm(errors[r, b][2][:3, 3] - errors[r, b][3][:3, 3])
                                  for r, b in picks.items()]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help=f"a posed sequence SPEC, KIND:/path with KIND one of "
                                                      f"{', '.join(POSED_KINDS)} (no frame range: use --ranges)")
    parser.add_argument("--ranges", type=_ranges, default=_ranges("0.6:0.8,0.8:1.0"),
                        help="comma-separated START:END fractions of the sequence (default: 0.6:0.8,0.8:1.0)")
    parser.add_argument("--max-back", type=positive_int, default=16, help="farthest source, frames back (default 16)")
    parser.add_argument("--baselines", type=_floats, default=_floats("0.05,0.10,0.15,0.20"), help="min_baseline_m values")
    parser.add_argument("--rotations", type=_floats, default=_floats("5,10,15"), help="min_rotation_deg values")
    parser.add_argument("--history", type=_ints, default=_ints("4,8,16"), help="history_size values")
    args = parser.parse_args(argv)
    kind = args.data.partition(":")[0]
    if kind not in POSED_KINDS:
        print(f"ERROR: --data {args.data!r}: expected a posed sequence, KIND:/path with KIND one of "
              f"{', '.join(POSED_KINDS)}", file=sys.stderr)
        return 2
    if max(args.history) > args.max_back:
        print(f"ERROR: --history {max(args.history)} needs --max-back >= {max(args.history)} (got {args.max_back}): the "
              "frames a rule may pick must have been predicted", file=sys.stderr)
        return 2
    try:
        source = parse_data_spec(args.data)
        if (source.start, source.end) != (0, 1.0):
            print(f"ERROR: --data {args.data!r} has a frame range; give the whole sequence and choose frames with "
                  "--ranges (the sources of the first references lie before a range)", file=sys.stderr)
            return 2
        model = load_checkpoint(args.checkpoint).eval()
        n = len(build_dataset([source], image_size=tuple(model.config.input_size), num_views=2))
    except (OSError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    sets = {f"{lo:.2f}-{hi:.2f}": [r for r in range(max(args.max_back, int(round(lo * n))), int(round(hi * n)))]
            for lo, hi in args.ranges}
    refs = sorted({r for rs in sets.values() for r in rs})
    if not refs:
        print(f"ERROR: no reference frame in {args.ranges} of {n} frames has {args.max_back} earlier ones",
              file=sys.stderr)
        return 2
    try:
        errors = pair_errors(model, args.data, refs, args.max_back)
    except (OSError, ValueError) as exc:  # an unreadable frame of the sequence
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if sum(errors[r, 0][1] for r in refs) == 0:
        print(f"ERROR: {args.data}: no labelled depth pixel in the reference frames; the rules need depth ground truth",
              file=sys.stderr)
        return 2
    for name, rs in sets.items():
        print(f"## {args.data} frames {name} ({len(rs)} references)")
        print(f"single view: {_pooled(errors, dict.fromkeys(rs, 0)):.4f}")
        print("fixed gap: " + "  ".join(
            f"{b}: {_pooled(errors, dict.fromkeys(rs, b)):.4f} ({_baseline_cm(errors, dict.fromkeys(rs, b)):.0f} cm)"
            for b in range(1, args.max_back + 1)))
        print("| min_baseline_m | min_rotation_deg | history_size | abs rel | median baseline (cm) | farthest |")
        print("|---|---|---|---|---|---|")
        for base, rot, size in itertools.product(args.baselines, args.rotations, args.history):
            config = PairingConfig(min_baseline_m=base, min_rotation_deg=rot, history_size=size)
            chosen = {r: rule_choice(errors, r, config) for r in rs}
            picks = {r: c[0] for r, c in chosen.items()}
            fallback = sum(c[1] == "farthest" for c in chosen.values())
            print(f"| {base:.2f} | {rot:g} | {size} | {_pooled(errors, picks):.4f} | {_baseline_cm(errors, picks):.0f} "
                  f"| {fallback} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
