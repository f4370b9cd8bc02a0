#!/usr/bin/env bash
# Every GPU check the project owes, in steps that each fit a 10-minute call on a lent GPU machine.
#
#   bash benchmarks/gpu_suite.sh [STEP ...]          # default: all steps, in this order
#   steps: env tests sanitize train kernels cost_volume model node
#
# Runs with the machine's own python3 (PyTorch with CUDA and Triton; no network needed) and this
# checkout on PYTHONPATH: the GPU checks need nothing beyond numpy, PyYAML, safetensors, opencv,
# scipy, matplotlib, tqdm, pytest and hypothesis (no rclpy, no rosbags). Each step's output goes to
# $OUT/<step>.txt (OUT: the device tool's output folder; default gpu_out/). Copy the tables into
# benchmarks/RESULTS.md with the machine, date, command and commit.
#
#   env          versions, GPU name, clocks
#   tests        every Triton test on CUDA (the canary-guarded comparisons of each autotune config run
#                the compiled kernels there) and the `gpu`-marked tests (realistic sizes, torch.compile
#                on CUDA, the model in fp32 and bf16, the pipeline on CUDA)
#   sanitize     compute-sanitizer memcheck over the kernels' tail and adversarial-geometry tests
#   train        the smoke training config on CUDA with bf16 autocast (the trainer's GPU path)
#   kernels      static registers/spills per autotune config (also runs without a GPU)
#   cost_volume  benchmarks/cost_volume.py, fp32 then fp16 features (issue 3's targets)
#   model        benchmarks/model.py on CUDA, presets cpu (shipped), small, base, every variant (issue 4's targets)
#   node         benchmarks/node_latency.py, small at 320x240 and the shipped model (160x120) in bf16 and fp32,
#                pipeline only (issue 6)
set -u -o pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
py=${PYTHON:-python3}
status=0

step() {  # step NAME COMMAND...: run, keep the output, remember a failure, go on
    local name=$1
    shift
    echo "=== $name: $* ($(date -u +%FT%TZ))" | tee -a "$out/$name.txt"
    "$@" 2>&1 | tee -a "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "=== $name exit $rc" | tee -a "$out/$name.txt"
    [ "$rc" = 0 ] || status=1
}

run_step() {
    case $1 in
    env)
        step env "$py" -c "import platform, torch, triton; print(platform.python_version(), torch.__version__, \
triton.__version__, torch.version.cuda, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
        step env nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
        step env git log -1 --format='commit %h %cI %s'
        ;;
    tests)
        step tests "$py" -m pytest -q -p no:cacheprovider test/test_cost_volume_triton.py
        step tests "$py" -m pytest -q -p no:cacheprovider -m gpu test/test_model.py test/test_runtime_pipeline.py
        ;;
    sanitize)
        step sanitize compute-sanitizer --tool memcheck --error-exitcode 1 "$py" -m pytest -q -p no:cacheprovider \
            test/test_cost_volume_triton.py -k "every or adversarial or tail"
        ;;
    train)
        step train "$py" -m mtl3d_perception.cli train --config config/train/smoke.yaml device=cuda amp=bf16 \
            out_dir="$(mktemp -d /tmp/mtl3d_gpu_smoke.XXXXXX)" steps=60  # a fresh run each time the step runs
        ;;
    kernels) step kernels "$py" benchmarks/kernel_resources.py ;;
    cost_volume)
        step cost_volume "$py" benchmarks/cost_volume.py --device cuda --dtype fp32
        step cost_volume "$py" benchmarks/cost_volume.py --device cuda --dtype fp16
        ;;
    model) step model "$py" benchmarks/model.py --device cuda --presets cpu small base ;;  # cpu: the shipped one
    node)
        for precision in bf16 fp32; do
            # issue 6's target (small, 320x240), then the shipped model; each exits non-zero when CUDA cannot run
            step node "$py" benchmarks/node_latency.py --preset small --size 320x240 --device cuda \
                --precision "$precision" --frames 60 --no-node
            step node "$py" benchmarks/node_latency.py --checkpoint models/default.safetensors --device cuda \
                --precision "$precision" --frames 60 --no-node
        done
        ;;
    *)
        echo "unknown step '$1'; expected one of: env tests sanitize train kernels cost_volume model node" >&2
        exit 2
        ;;
    esac
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(env tests sanitize train kernels cost_volume model node)
for s in "${steps[@]}"; do run_step "$s"; done
exit $status
