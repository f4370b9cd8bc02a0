#!/usr/bin/env bash
# Issue 18's ablation under one budget: the paper's CvM alone vs CvM + the geometric depth vs no CvM.
#
#   bash benchmarks/depth_ablation.sh [STEPS] [OUT]        # default: 400 steps, runs/depth_ablation
#
# Each variant trains config/train/default.yaml (stage 1 of the default model: ImageNet encoder, the same data,
# pairs, seed and frozen stages; STEPS steps, an eighth of them warm-up, then cosine) with only the variant's
# overrides, then `mtl3d eval` scores it on the held-out HoloLens frames (80-100 %, two-view and single-view)
# and 2 held-out synthetic scenes (48 samples), each frame paired with the one 2 back (`--gap 2`, as the ablation
# was first recorded; `mtl3d eval`'s default is now the node's source rule). CvM + geometric depth has the shipped model's window aggregation
# of its sweep (`sweep_aggregation: 5`; the others have no such sweep). A variant already trained for STEPS is
# not retrained, one interrupted part-way resumes from its last checkpoint, and scores older than their
# checkpoint are redone; another STEPS into the same OUT is refused (a different budget needs its own folder).
# OUT is relative to the current directory. MTL3D names the `mtl3d` executable (default: this checkout's
# .venv/bin/mtl3d, from `make venv`). Needs ../shared/data/hololens_000 and the textures (../shared/data/textures
# or $MTL3D_TEXTURES: the photo-textured scenes the shipped model trained on). Each step's output goes to
# OUT/<variant>.log and OUT/eval_<variant>.log; prints a markdown table (models/README.md).
set -eu -o pipefail
steps=${1:-400}
out=$(realpath -m "${2:-runs/depth_ablation}")
cd "$(dirname "$0")/.."
mtl3d=${MTL3D:-$PWD/.venv/bin/mtl3d}
real=sequence:../shared/data/hololens_000:0.8:1.0
syn=synthetic:test:2
fail() { echo "depth_ablation: $*" >&2; exit 1; }
[[ $steps =~ ^[1-9][0-9]*$ ]] || fail "STEPS must be a positive integer, not '$steps'"
command -v "$mtl3d" > /dev/null || fail "no mtl3d at '$mtl3d': run make venv, or set MTL3D to the mtl3d executable"
[ -d ../shared/data/hololens_000 ] || fail "../shared/data/hololens_000 is missing"
[ -n "${MTL3D_TEXTURES:-}" ] || [ -d ../shared/data/textures ] ||
  fail "../shared/data/textures is missing (or set MTL3D_TEXTURES): the scenes would be procedurally textured"
mkdir -p "$out"
declare -A overrides=(
  [no_cvm]="model.overrides.use_cvm=false model.overrides.geometric_depth=false loss.extra={}"
  [paper_cvm]="model.overrides.geometric_depth=false loss.extra={}"
  [cvm_geometric]="model.overrides.sweep_aggregation=5"
)
variants=(no_cvm paper_cvm cvm_geometric)
for v in "${variants[@]}"; do
  ckpt=$out/$v/checkpoints/last.safetensors
  planned=$(awk '/^steps:/ {print $2}' "$out/$v/config.yaml" 2> /dev/null || true)
  [ -z "$planned" ] || [ "$planned" = "$steps" ] || fail "$out/$v was started for $planned steps, not $steps; use another OUT"
  done_steps=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' \
    "$out/$v/checkpoints/last.json" 2> /dev/null || echo 0)
  if [ "$done_steps" -lt "$steps" ]; then  # not trained yet, or interrupted: resume from its last checkpoint
    resume=()
    [ "$done_steps" -gt 0 ] && resume=(--resume)
    echo "$v: training ($done_steps of $steps steps done; log $out/$v.log)"
    # shellcheck disable=SC2086  # the overrides are separate KEY=VALUE words
    "$mtl3d" train --config config/train/default.yaml "${resume[@]}" out_dir="$out/$v" steps="$steps" \
      optim.warmup_steps=$((steps / 8)) ${overrides[$v]} >> "$out/$v.log" 2>&1
  fi
  if [ "$out/eval_$v/metrics.json" -nt "$ckpt" ]; then
    echo "$v: trained for $steps steps, scores up to date"
  else
    echo "$v: evaluating (log $out/eval_$v.log)"
    "$mtl3d" eval "$ckpt" --data "$real" --data "$syn" --gap 2 --out "$out/eval_$v" --no-progress > "$out/eval_$v.log" 2>&1
  fi
done
python3 - "$out" "$steps" "$real" "$syn" "${variants[@]}" <<'EOF'
import json
import sys

out, steps, real, syn, *variants = sys.argv[1:]
print(f"{steps} steps each (config/train/default.yaml, seed 0); real = {real}, synthetic = {syn}\n")
print("| variant | real two-view abs rel | real single-view abs rel | two-view gain | real δ1 two-view (%) "
      "| synthetic two-view abs rel | synthetic mIoU | synthetic odsF |")
print("|---|---|---|---|---|---|---|---|")
for v in variants:
    res = json.load(open(f"{out}/eval_{v}/metrics.json"))["results"]
    r2, r1 = res[real]["two_view"]["metrics"], res[real]["single_view"]["metrics"]
    s2 = res[syn]["two_view"]["metrics"]
    gain = 100 * (1 - r2["depth/abs_rel"] / r1["depth/abs_rel"])
    print(f"| {v} | {r2['depth/abs_rel']:.3f} | {r1['depth/abs_rel']:.3f} | {gain:+.1f} % | {r2['depth/delta1']:.1f} "
          f"| {s2['depth/abs_rel']:.3f} | {s2['semantic/miou']:.1f} | {s2['boundary/odsF']:.1f} |")
EOF
