#!/usr/bin/env bash
# The device check: the GPU-only paths, in four stages, failing loudly (every figure has a pass/fail
# threshold, and any failure makes the exit status non-zero). Under 10 minutes on one GPU from a
# cold start. Every stage runs on the CPU too (tiny shapes, tree attention for training since
# FlexAttention has no backward there, vLLM's CPU build when installed), which is how CI knows the
# script works before a GPU is at hand:
#   bash scripts/gpu_check.sh                  # one GPU (cuda:0)
#   bash scripts/gpu_check.sh --device cpu     # the same stages on the CPU
#   bash scripts/gpu_check.sh --peak-tflops 312   # name the card's bf16 dense peak if not detected
#   bash scripts/gpu_check.sh --fail-fast      # stop at the first failed stage (default: run them all)
#   bash scripts/gpu_check.sh --stages 4,5     # only these stages (stage numbers: rerun what failed)
# Stages (docs/SCALING.md):
#   1. versions (torch, CUDA, vLLM, transformers) and the device;
#   2. the real CLI: `train` in bf16 with FlexAttention and the vLLM engine, 2 steps with a checkpoint
#      each, then the same command to step 3 (resume=auto), and the resume checked;
#   3. torchrun --nproc-per-node 1 through vLLM's external_launcher: sample -> sleep -> wake -> sync;
#   4. the 1.5B-shape step: packing, the FlexAttention compile sweep, the engine following an update,
#      FSDP2 update tokens/s and MFU;
#   5. asynchronous rollouts (trainer.async_level=1): a rollout worker process on its own GPU (cuda:1,
#      weights by NCCL broadcast) when there are two, else beside the trainer (weights by file; the
#      CPU: by gloo broadcast, in float32), 3 steps; the lag, the worker's timings and its engine's
#      log-probs (against the trainer's, exactly in float32) checked in the metrics.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
STEP_ARGS=()
FAIL_FAST=0
STAGES=1,2,3,4,5
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --peak-tflops) STEP_ARGS+=(--peak-tflops "$2"); shift 2 ;;
    --fail-fast) FAIL_FAST=1; shift ;;
    --stages) STAGES=$2; shift 2 ;;
    *) echo "gpu_check: unknown argument $1 (allowed: --device cuda|cpu, --peak-tflops N, --fail-fast, --stages 1,2,3,4,5)" >&2; exit 2 ;;
  esac
done
if [[ ! $STAGES =~ ^[1-5](,[1-5])*$ ]]; then
  echo "gpu_check: --stages: a comma-separated list of stage numbers 1-5, got '$STAGES'" >&2; exit 2
fi
wanted() { [[ ,$STAGES, == *,$1,* ]]; }  # wanted N: stage N was asked for
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
HAS_VLLM=$($PY -c 'import importlib.util; print(int(importlib.util.find_spec("vllm") is not None))')
if [[ $DEVICE == cpu ]]; then
  ATTENTION=tree; SHAPE=(--shape tiny --thinking 96 --check-thinking 48 --summary 8 --prompt 16 --rows 2 --steps 1
    --vllm-prompts 4 --vllm-samples 2 --vllm-tokens 32)
  ENGINE_KEYS=(engine.enforce_eager=true engine.kv_cache_gib=0.5)
else
  ATTENTION=flex; SHAPE=(--shape r1-1.5b); ENGINE_KEYS=(engine.gpu_memory_utilization=0.3)
fi
ENGINE=hf
[[ $HAS_VLLM == 1 ]] && ENGINE=vllm
FAILED=()
report() {
  if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "gpu_check: ${#FAILED[@]} stage(s) failed: ${FAILED[*]}"
    exit 1
  fi
}
stage() {  # stage NAME SECONDS COMMAND...: runs it with a time limit, records a failure
  local name=$1 limit=$2; shift 2
  echo "== $name"
  local t0=$SECONDS
  if timeout "$limit" "$@"; then echo "-- $name: PASS ($((SECONDS - t0)) s)"; else echo "-- $name: FAIL ($((SECONDS - t0)) s)"; FAILED+=("$name"); fi
  if [[ $FAIL_FAST == 1 ]]; then report; fi
}

wanted 1 && stage "1. versions and device" 60 $PY -u benchmarks/gpu_check.py versions --device "$DEVICE"

if wanted 2 || wanted 3 || wanted 5; then  # the model stages 2, 3 and 5 train or serve
  stage "2a. model (the embedded architecture, random weights)" 120 $PY -u benchmarks/gpu_check.py make-model --out "$OUT/model"
fi
TRAIN=($PY -u -m anytime_reasoner train model.path="$OUT/model" model.device="$DEVICE" model.dtype=bfloat16
  model.attention=$ATTENTION engine.backend=$ENGINE "${ENGINE_KEYS[@]}" rollout.max_budget=96 rollout.summary_max_tokens=8
  rollout.n=4 trainer.batch_size=4 ppo.ppo_mini_batch_size=4 trainer.save_every=1 trainer.val_every=0
  trainer.progress=false trainer.out="$OUT/run")
if wanted 2; then
  stage "2b. train: 2 steps, a checkpoint each ($ENGINE engine, $ATTENTION attention, bf16)" 300 "${TRAIN[@]}" trainer.steps=2
  stage "2c. the same command to step 3 (resume=auto)" 300 "${TRAIN[@]}" trainer.steps=3 trainer.resume=auto
  stage "2d. the resume" 60 $PY -u benchmarks/gpu_check.py resume --out "$OUT/run" --steps 3
fi

if ! wanted 3; then
  :
elif [[ $HAS_VLLM == 1 ]]; then
  stage "3. torchrun + vLLM external_launcher: sample, sleep, wake, sync" 300 \
    $PY -m torch.distributed.run --nproc-per-node 1 benchmarks/gpu_check.py launcher --model "$OUT/model" --device "$DEVICE"
elif [[ $DEVICE == cpu ]]; then
  echo "== 3. torchrun + vLLM external_launcher: skipped (vLLM is not installed; allowed on the CPU only)"
else
  echo "== 3. torchrun + vLLM external_launcher: FAIL (vLLM is not installed)"; FAILED+=("3. vLLM not installed")
fi

wanted 4 && stage "4. the 1.5B-shape step" 420 $PY -u benchmarks/gpu_check.py step --device "$DEVICE" "${SHAPE[@]}" "${STEP_ARGS[@]}"

if [[ $DEVICE == cpu ]]; then  # float32: 5b then checks the engine's log-probs against the trainer's exactly
  ASYNC=(trainer.weight_transfer=broadcast model.dtype=float32)
elif [[ $($PY -c 'import torch; print(torch.cuda.device_count())') -ge 2 ]]; then
  ASYNC=(trainer.rollout_device=cuda:1 trainer.weight_transfer=broadcast)
else
  ASYNC=(trainer.weight_transfer=file)
fi
if wanted 5; then
  stage "5a. async_level=1: ${ASYNC[*]}" 300 "${TRAIN[@]}" trainer.out="$OUT/async" trainer.steps=3 trainer.async_level=1 "${ASYNC[@]}"
  stage "5b. the lag and the worker in the metrics" 60 $PY -u benchmarks/gpu_check.py async --out "$OUT/async" --steps 3
fi

report
echo "gpu_check: every stage passed"
