#!/usr/bin/env bash
# On the GPU machine: the 32k prefill of a Llama-3.1-8B-shaped bf16 checkpoint inside --vram 8GB, with the compute
# stream profiled (bench/profile-prefill.ts) for each of RUNS; JSON per chunk size and a log in $OUT.
set -uo pipefail
source .device/setup.sh > /dev/null
out="${OUT:-/tmp}"
model=/tmp/llama-3.1-8b
[ -f "$model/config.json" ] || node dist/src/cli/main.js make-test-model --preset llama-3.1-8b --dtype bf16 --out "$model" > /dev/null
[ -f /tmp/p32k.txt ] || node dist/src/bench/prompt.js "$model" 32000 /tmp/p32k.txt
# RUNS: chunk size:prefetch stream (own or shared with the copies compute needs next) pairs. PROFILE_ARGS: more flags
# for each run (say "--repeat 2 --links --ram auto", as the bench runs), and TAG names its files.
for run in ${RUNS:-2048:shared 8192:shared 8192:own}; do
  chunk="${run%%:*}" prefetch="${run#*:}" name="profile-prefill-$chunk-$prefetch${TAG:+-$TAG}"
  # shellcheck disable=SC2086
  timeout 120 node dist/bench/profile-prefill.js "$model" /tmp/p32k.txt --chunk "$chunk" --prefetch-stream "$prefetch" ${PROFILE_ARGS:-} --out "$out/$name.json" 2>&1 | tee "$out/$name.log" | grep -v "^[a-z_0-9]* *[0-9]* *[0-9.]* s .*us each" | head -80
  echo "profile chunk $chunk, prefetch stream $prefetch: exit ${PIPESTATUS[0]}"
done
