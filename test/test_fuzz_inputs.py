"""Issue 15 item 7: seeded fuzzing of the message entry points (``benchmarks/fuzz_inputs.py``, a few hundred cases).

Runs in a fresh process under a 3 GB address-space cap, so a decompression bomb that got through would fail the
run, and its peak RSS is the fuzzing's own: image + camera_info into frames, TF into the compat buffer and
lookups, accepted frames through the pipeline. No exception may escape but the declared ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_inputs.py"


def test_fuzz_entry_points_no_escape_and_bounded_memory():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cases", "400", "--pipeline-cases", "8", "--seed", "1",
         "--address-space-gb", "3", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["escape_count"] == 0, result["escapes"]
    messages = result["outcomes"]["messages"]
    assert sum(messages.values()) == 400 and messages["accepted"] >= 50
    assert {"bad_input.encoding", "bad_input.intrinsics"} <= set(messages)
    tf = result["outcomes"]["tf"]
    assert tf["tf_rejected"] == result["tf_rejected"] > 0 and tf["tf_accepted"] > 0
    assert result["outcomes"]["pipeline"].get("pipeline_ok", 0) + sum(
        n for k, n in result["outcomes"]["pipeline"].items() if k.startswith("pipeline_refused")) == 8
    assert result["peak_rss_mb"] < 1500
