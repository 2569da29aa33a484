#!/usr/bin/env bash
# On the GPU machine: the 32k prefill of a Llama-3.1-8B-shaped bf16 checkpoint inside --vram 8GB, with the compute
# stream profiled (bench/profile-prefill.ts) for each of RUNS; JSON per chunk size and a log in $OUT.
set -uo pipefail
source .device/setup.sh > /dev/null
out="${OUT:-/tmp}"
model=/tmp/llama-3.1-8b
[ -f "$model/config.json" ] || node dist/src/cli/main.js make-test-model --preset llama-3.1-8b --dtype bf16 --out "$model" > /dev/null
[ -f /tmp/p32k.txt ] || node dist/src/bench/prompt.js "$model" 32000 /tmp/p32k.txt
# RUNS: chunk size:small-upload path pairs.
for run in ${RUNS:-2048:kernel 2048:copy-engine 8192:kernel}; do
  chunk="${run%%:*}" uploads="${run#*:}"
  timeout 120 node dist/bench/profile-prefill.js "$model" /tmp/p32k.txt --chunk "$chunk" --small-uploads "$uploads" --out "$out/profile-prefill-$chunk-$uploads.json" 2>&1 | tee "$out/profile-prefill-$chunk-$uploads.log" | head -24
  echo "profile chunk $chunk, small uploads by $uploads: exit ${PIPESTATUS[0]}"
done
