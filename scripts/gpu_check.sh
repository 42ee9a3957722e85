#!/usr/bin/env bash
# The CUDA checks no CPU machine can do, as one short script for a GPU machine (about 8 minutes on
# one H100/H200-class GPU): AMP fp16/bf16, channels-last, NCCL, the supernet/standalone ratios and
# training throughput on the GPU, and the GPU-only tests. Results go to ${OUT:-gpu-check}/.
#   bash scripts/gpu_check.sh            # needs the venv of README's "Install and test"
# Each step is independent: a failing one is recorded in summary.txt and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
[ -d .venv ] && . .venv/bin/activate
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-28s rc=%s %ss\n' "$name" "$rc" "$((SECONDS - start))" >> "$SUMMARY"
}

step info 60 python run.py info
step pytest-gpu 300 python -m pytest -q tests/test_data_lazy.py tests/test_supernet_train.py -k "gpu or cuda or bf16"
for s in nb201 nasnet resnet20; do
    step "bench-supernet-$s" 300 python run.py bench-supernet --space "$s" --device cuda --steps 30 \
        --json "$OUT/supernet-$s.json"
done
step bench-supernet-mbconv224 300 python run.py bench-supernet --space mbconv --device cuda --steps 30 \
    --json "$OUT/supernet-mbconv-imagenet.json"
for amp in bf16 fp16; do
    step "throughput-nb201-$amp" 300 python run.py bench-throughput --space nb201 --device cuda --amp "$amp" \
        --batch-size 256 --strategies uniform,sandwich,fair --json "$OUT/throughput-nb201-$amp.json"
done
step throughput-mbconv-bf16 300 python run.py bench-throughput --space mbconv --space-opts stem=cifar --device cuda \
    --amp bf16 --batch-size 256 --strategies uniform,sandwich --json "$OUT/throughput-mbconv-bf16.json"
# AMP fp16 with the grad scaler, channels-last, a kill-free resume, on the embedded data
step supernet-fp16 300 python run.py supernet --preset test-tiny --device cuda --amp fp16 --run-dir "$OUT/sn-fp16" \
    --max-steps 4
step supernet-fp16-resume 300 python run.py supernet --preset test-tiny --device cuda --amp fp16 \
    --run-dir "$OUT/sn-fp16" --resume auto
# NCCL: one rank per GPU (two ranks cannot share one GPU under NCCL)
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
step "ddp-nccl-$NGPU" 300 torchrun --standalone --nproc_per_node "$NGPU" run.py supernet --preset test-tiny \
    --device cuda --amp bf16 --run-dir "$OUT/sn-ddp"
step pipeline-cuda 600 python run.py pipeline --preset demo --device cuda --amp bf16 --run-dir "$OUT/demo-cuda"
cat "$SUMMARY"
