#!/usr/bin/env bash
# The CUDA checks no CPU machine can do, as one script for a GPU machine (about 8 minutes on one
# H100/H200-class GPU with 16 cores): AMP parity (fp32/bf16/fp16 + grad scaler), training
# throughput and MFU of the MBConv subnets through the supernet and standalone against timm's
# efficientnet_b0 (eager and torch.compile), the input path by worker count, resume on CUDA,
# NCCL, the GPU-only tests and the demo pipeline on CUDA.
#   bash scripts/gpu_check.sh            # in the venv of README's "Install and test"
# Each step is independent: its exit status and seconds go to summary.txt and the next one runs.
# Steps that would start after GPU_CHECK_SECONDS (default 420) are skipped and marked so. The
# GPU timings run alone; the CPU-side checks then run beside the demo pipeline.
# Results: ${OUT:-gpu-check}/summary.txt, bench-gpu.json and logs.tar.gz (every log and JSON).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
WORK="${GPU_CHECK_WORK:-$(mktemp -d)}"
DEADLINE="${GPU_CHECK_SECONDS:-420}"
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
[ -d .venv ] && . .venv/bin/activate
SUMMARY="$OUT/summary.txt"
JSON="$OUT/bench-gpu.json"
: > "$SUMMARY"

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    if ((SECONDS + 20 > DEADLINE)); then
        printf '%-26s skipped (past the %ss budget)\n' "$name" "$DEADLINE" >> "$SUMMARY"
        return
    fi
    ((SECONDS + limit > DEADLINE + 60)) && limit=$((DEADLINE + 60 - SECONDS))
    local start=$SECONDS
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    printf '%-26s rc=%s %ss\n' "$name" "$rc" "$((SECONDS - start))" >> "$SUMMARY"
}

resume_check() {  # the same fp16 run uninterrupted, and stopped at step 5 then resumed
    local tiny=(python run.py supernet --preset test-tiny --device cuda --quiet --amp fp16)
    "${tiny[@]}" --run-dir "$WORK/rs-ref" || return
    "${tiny[@]}" --run-dir "$WORK/rs-part" --max-steps 5 || return
    "${tiny[@]}" --run-dir "$WORK/rs-part" --resume auto || return
    python - "$WORK/rs-ref/supernet/last.pt" "$WORK/rs-part/supernet/last.pt" <<'EOF'
import json, sys
import torch
a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in sys.argv[1:])
ma, mb = a["model"], b["model"]
diff = max((ma[k].double() - mb[k].double()).abs().max().item() for k in ma if ma[k].is_floating_point())
same = ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
print(json.dumps({"bit_exact": same, "max_abs_diff": diff, "steps": [a["step"], b["step"]]}))
EOF
}

step info 60 python run.py info
step amp-parity 120 python run.py bench-gpu --parts amp --json "$JSON"
step throughput-eager 150 python run.py bench-gpu --parts throughput --batch-size 256 --steps 20 --json "$JSON"
step throughput-compiled 200 python run.py bench-gpu --parts throughput --compile --batch-size 256 --steps 20 \
    --networks b0_supernet,b0_standalone,timm_efficientnet_b0,largest_standalone --json "$JSON"

# CPU-side checks beside the demo pipeline (which needs about one core and little GPU).
pipeline_limit=$((DEADLINE + 60 - SECONDS))
(
    start=$SECONDS
    timeout "$pipeline_limit" python run.py pipeline --preset demo --device cuda --amp bf16 --quiet \
        --run-dir "$WORK/demo-cuda" > "$WORK/pipeline-cuda.log" 2>&1
    printf '%-26s rc=%s %ss\n' pipeline-cuda "$?" "$((SECONDS - start))" > "$WORK/pipeline.rc"
) &
step pytest-gpu 120 python -m pytest -q -p no:cacheprovider tests/test_data_lazy.py tests/test_supernet_train.py tests/test_retrain.py \
    -k "gpu or cuda or bf16"
export -f resume_check
export WORK
step resume-cuda-fp16 150 bash -c resume_check
step ddp-nccl-1 90 torchrun --standalone --nproc_per_node 1 run.py supernet --preset test-tiny --device cuda \
    --amp bf16 --quiet --run-dir "$WORK/sn-ddp"
step input-path 150 python run.py bench-gpu --parts data --workers 1,4,8,14 --images 1500 --json "$JSON"
wait
cat "$WORK/pipeline.rc" >> "$SUMMARY" 2>/dev/null || echo "pipeline-cuda              no result" >> "$SUMMARY"
cp "$WORK/demo-cuda/report.json" "$WORK/demo-cuda-report.json" 2>/dev/null
cp "$JSON" "$SUMMARY" "$WORK/" 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='tb' --exclude='*.png' .
cat "$SUMMARY"
