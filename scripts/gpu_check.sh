#!/usr/bin/env bash
# One-GPU check of the scale-out path (docs/SCALING.md): a randomly initialised model of the
# DeepSeek-R1-Distill-Qwen-1.5B shape (nothing downloaded) runs packed vs unpacked log-probs with
# FlexAttention, then FSDP2 training steps with bf16 compute on packed rows of the recipe's length;
# prints update tokens/s, MFU against the card's bf16 peak and peak memory. Under 8 minutes.
#   bash scripts/gpu_check.sh                    # defaults: cuda:0, 3 rows of ~10k tokens
#   bash scripts/gpu_check.sh --peak-tflops 312  # name the card's bf16 dense peak if not detected
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 python benchmarks/gpu_check.py "$@"
