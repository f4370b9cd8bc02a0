"""benchmarks/source_rule.py: the abs rel of each source-selection rule's pairs, and its one-line errors."""

from __future__ import annotations

import re

import pytest
from helpers import SHIPPED_MODEL, run_benchmark

SHIPPED = SHIPPED_MODEL


def _run(*args: str):
    return run_benchmark("source_rule.py", *args)


def test_rules_pick_their_pairs_on_real_frames(hololens_dir):
    res = _run(str(SHIPPED), "--data", f"sequence:{hololens_dir}", "--ranges", "0.95:1.0", "--max-back", "3",
               "--baselines", "0,10", "--rotations", "180", "--history", "3")
    assert res.returncode == 0, res.stderr
    refs = int(re.search(r"\((\d+) references\)", res.stdout).group(1))
    assert refs == 19  # frames 354-372 of 373
    gaps = {int(g): float(v) for g, v in re.findall(r"(\d+): ([0-9.]+) \(\d+ cm\)", res.stdout)}
    assert set(gaps) == {1, 2, 3}
    single = float(re.search(r"single view: ([0-9.]+)", res.stdout).group(1))
    rows = {float(b): (float(v), int(n)) for b, v, n in
            re.findall(r"\| ([0-9.]+) \| 180 \| 3 \| ([0-9.]+) \| \d+ \| (\d+) \|", res.stdout)}
    # min_baseline 0: the most recent earlier frame, i.e. gap 1, and never a fallback
    assert rows[0.0] == (gaps[1], 0)
    # 10 m is never reached: every reference falls back to the widest of its 3 earlier frames
    assert rows[10.0][1] == refs
    assert min(gaps.values()) <= rows[10.0][0] <= max(gaps.values())
    assert all(v < single for v in gaps.values())  # two views beat one on these frames (0.15 vs 0.20 held out)


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "synthetic:test:1"], "expected a posed sequence"),
    (["--data", "sequence:x", "--ranges", "0.8:0.6"], "expected 0 <= START < END <= 1, got '0.8:0.6'"),
    (["--data", "sequence:x", "--history", "0"], "expected whole numbers >= 1, got '0'"),
    (["--data", "sequence:x", "--baselines", "-1"], "expected finite numbers >= 0, got '-1'"),
    (["--data", "sequence:x", "--history", "8", "--max-back", "4"], "--history 8 needs --max-back >= 8 (got 4)"),
    (["--data", "sequence:x:0.5:1.0"], "has a frame range; give the whole sequence and choose frames with --ranges"),
])
def test_bad_arguments_end_with_one_line(args, message):
    res = _run(str(SHIPPED), *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_a_missing_sequence_is_one_error_line(tmp_path):
    res = _run(str(SHIPPED), "--data", f"sequence:{tmp_path / 'none'}")
    assert res.returncode == 2 and res.stderr.startswith("ERROR: ") and "Traceback" not in res.stderr


def test_a_sequence_without_depth_is_one_error_line(hololens_dir, tmp_path):
    seq = tmp_path / "no_depth"
    seq.mkdir()
    for name in ("images", "poses.txt", "K.txt"):  # linked in place, never copied
        (seq / name).symlink_to(hololens_dir / name)
    res = _run(str(SHIPPED), "--data", f"sequence:{seq}", "--ranges", "0.97:1.0", "--max-back", "1", "--history", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"ERROR: sequence:{seq}: no labelled depth pixel in the reference frames; the rules " \
                                 "need depth ground truth"
