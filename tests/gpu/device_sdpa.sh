#!/usr/bin/env bash
# Device call 1: environment check + the full SDPA run (no wheels needed).
# Optionally stashes the first part of the split cutlass-dsl cu13 wheel in /tmp/whl
# (it stays there while the machine is warm) for device_fa4.sh.
# usage (repo root, on the GPU machine): bash tests/gpu/device_sdpa.sh OUTDIR
set -u
OUT=${1:-${OUT:-/tmp/out}}
mkdir -p "$OUT" /tmp/whl /tmp/res
[ -d .res ] && cp -n .res/* /tmp/res/ 2>/dev/null
if [ -d .whl1 ]; then cp .whl1/* /tmp/whl/ && ls -la /tmp/whl; fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch,sys;print(sys.version);print(torch.__version__,torch.version.cuda,torch.backends.cudnn.version(),torch.cuda.get_device_name(0),torch.cuda.get_device_capability(0))'
  python3 -m pip list 2>/dev/null | grep -i -E '^(torch|triton|einops|typing.extensions|cuda-bindings|cuda-python|protobuf|nvidia-cudnn|numpy) '
} 2>&1 | tee "$OUT/env.txt"
export PYTHONUNBUFFERED=1
timeout "${SDPA_TIME:-420}" python3 tests/gpu/runner.py --backend sdpa --jobs "${JOBS:-16}" \
  --timeout 120 --deadline "${SDPA_DEADLINE:-330}" --resume --out /tmp/res/sdpa_h100.jsonl \
  > "$OUT/sdpa_log.txt" 2>&1
echo "runner rc=$?"
cp /tmp/res/sdpa_h100.jsonl* "$OUT/" 2>/dev/null
tail -n 40 "$OUT/sdpa_log.txt"
