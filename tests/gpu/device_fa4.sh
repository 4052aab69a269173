#!/usr/bin/env bash
# Device call 2: install FlashAttention-4 from carried wheels, smoke test, full FA4 run.
# Wheels: .whl2/ holds flash-attn-4 and its needs plus the second part of the split
# nvidia-cutlass-dsl-libs-cu13 wheel; the first part is already in /tmp/whl (from
# device_sdpa.sh, same warm machine) or in .whl1/ when carried in this call.
# usage (repo root, on the GPU machine): bash tests/gpu/device_fa4.sh OUTDIR
# FA4_SET=fa4-sm90 FA4_OUT=fa4_sm90_h200.jsonl runs the SM90 plane set of cases.py instead.
set -u
OUT=${1:-${OUT:-/tmp/out}}
CU13=nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
SHA=50191a381d8cc1393373ae0bc879b0aefa9a256c23c22d4fa1c2fe3dfe57bc90
mkdir -p "$OUT" /tmp/whl /tmp/res
[ -d .res ] && cp -n .res/* /tmp/res/ 2>/dev/null
for d in .whl1 .whl2 .whl; do [ -d $d ] && cp $d/* /tmp/whl/; done
if [ ! -f /tmp/whl/$CU13 ]; then
  cat /tmp/whl/cu13.part.* > /tmp/whl/$CU13 || exit 3
fi
echo "$SHA  /tmp/whl/$CU13" | sha256sum -c || { ls -la /tmp/whl; exit 4; }
rm -f /tmp/whl/cu13.part.*
if [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site /tmp/whl/*.whl || exit 5
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages
export PYTHONUNBUFFERED=1
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=${FA4_CACHE:-0}
export FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4_cache
python3 -c 'import flash_attn.cute, cutlass; print("fa4 import ok", cutlass.__version__)' 2>&1 | tail -5 | tee "$OUT/fa4_smoke.txt"
[ "${SKIP_SMOKE:-0}" = 1 ] || timeout 150 python3 tests/gpu/run_case.py --id flash-attn-4-bf16-b2-sq128-skv128-h4x4-d128x128-none-train \
  2>&1 | tail -c 3000 | tee -a "$OUT/fa4_smoke.txt"
[ "${SMOKE_ONLY:-0}" = 1 ] && exit 0
RES=${FA4_OUT:-fa4_h100.jsonl}
timeout "${FA4_TIME:-450}" python3 tests/gpu/runner.py --backend "${FA4_SET:-fa4}" --jobs "${JOBS:-14}" \
  --timeout "${CASE_TIMEOUT:-180}" --deadline "${FA4_DEADLINE:-260}" --resume \
  --out /tmp/res/$RES > "$OUT/fa4_log.txt" 2>&1
echo "runner rc=$?"
cp /tmp/res/$RES* "$OUT/" 2>/dev/null
tail -n 40 "$OUT/fa4_log.txt"
