#!/usr/bin/env bash
# The checks a lent CUDA GPU runs, in order of importance, each under its own time limit so one slow stage
# cannot take the others down with it:
#   1. the CUDA kernel tests (tests/test_kernels.py -m cuda): Triton attention vs the reference on the GPU
#   2. the attention benchmark (bench/suite/test_attention_bench.py): TFLOP/s and speed relative to SDPA flash,
#      plus a compiled shakespeare training step per backend in tokens/s
#   3. a compiled `shakespeare` training run with the Triton kernel: val loss over wall time (log.jsonl)
#
#   bash bench/gpu_check.sh RESULTS_DIR [DATA_DIR]        (DATA_DIR holds tinyshakespeare/input.txt; default data)
#
# The training run gets what is left of ~560 s (TRAIN_TIMEOUT overrides): a lent GPU comes with minutes, not hours.
#
# Writes env.txt, kernels-tests.txt, attention-bench.txt, attention.json, train-BACKEND.txt, train-BACKEND-log.jsonl
# and loss-BACKEND.png into RESULTS_DIR. Runs on any python3 that has torch, triton, pytest and pytest-benchmark.
set -u
out=${1:?usage: bash bench/gpu_check.sh RESULTS_DIR [DATA_DIR]}
data=${2:-data}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$out"
start=$(date +%s)
stage() { echo "== $1 (t+$(( $(date +%s) - start ))s)"; }

stage env
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton',
triton.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"
  nproc; } 2>&1 | tee "$out/env.txt"

stage "kernel tests"
timeout 200 python3 -m pytest -m cuda tests/test_kernels.py -q -p no:cacheprovider --durations=5 2>&1 \
  | tee "$out/kernels-tests.txt"

stage "attention benchmark"
timeout 200 python3 -m pytest bench/suite/test_attention_bench.py -q -p no:cacheprovider -k "speed or not naive" \
  --benchmark-json "$out/attention.json" --benchmark-columns=mean,stddev,rounds 2>&1 | tee "$out/attention-bench.txt"

train() {  # attention backend: a compiled shakespeare run for what is left of ~560 s
  stage "shakespeare training (compiled, bf16, $1 attention)"
  rm -rf /tmp/gpu-train
  local left=$(( 560 - ($(date +%s) - start) )); (( left < 60 )) && left=60
  timeout -k 30 "${TRAIN_TIMEOUT:-$left}" python3 -m gpt.train --preset shakespeare --attention "$1" \
    --data-dir "$data" --out-dir /tmp/gpu-train 2>&1 | tr '\r' '\n' | awk '/tok_s/ { if (++n % 25) next } { print }' \
    | tee "$out/train-$1.txt"
  cp /tmp/gpu-train/loss.png "$out/loss-$1.png" 2>/dev/null  # (written only by a run that reached max_iters)
  cp /tmp/gpu-train/log.jsonl "$out/train-$1-log.jsonl" 2>/dev/null
  (( $(wc -l < /tmp/gpu-train/log.jsonl) > 1 ))  # at least one evaluation after training began
}
train triton 2>/dev/null || train sdpa  # sdpa only if the Triton run failed before its second evaluation
stage done
