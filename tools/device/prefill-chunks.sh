#!/usr/bin/env bash
# On the GPU machine: Llama-3.1-8B-shaped bf16 at 32k inside --vram 8GB (RAM tier), prefill with several --prefill-chunk
# sizes; prints each run's first-token time and its I/O wait and compute seconds. Writes JSON lines to $OUT/prefill-chunks.jsonl.
set -uo pipefail
source .device/setup.sh > /dev/null
out="${OUT:-/tmp}"
model=/tmp/llama-3.1-8b
[ -f "$model/config.json" ] || node dist/src/cli/main.js make-test-model --preset llama-3.1-8b --dtype bf16 --out "$model" > /dev/null
node dist/src/bench/prompt.js "$model" 32000 /tmp/p32k.txt
for chunk in ${CHUNKS:-2048 4096 8192}; do
  node dist/src/cli/main.js run "$model" --prompt-file /tmp/p32k.txt --vram 8GB --ram 64GB --context 33k --temperature 0 --backend cuda --json --max-tokens 1 --prefill-chunk "$chunk" > /tmp/run.json 2> /tmp/run.err
  echo "chunk $chunk: exit $? $(tail -c 300 /tmp/run.err | tr '\n' ' ')"
  node -e 'const r = JSON.parse(require("fs").readFileSync("/tmp/run.json", "utf8")); console.log(JSON.stringify({ chunk: +process.argv[1], ttft_s: r.ttft_s, io_wait_s: r.io_wait_s, compute_s: r.compute_s, peak_vram_bytes: r.peak_vram_bytes, h2d_bytes: r.h2d_bytes }))' "$chunk" | tee -a "$out/prefill-chunks.jsonl"
done
