#!/usr/bin/env bash
# On the GPU machine: a Llama-3.1-8B-shaped bf16 checkpoint at 32k context inside --vram 8GB (RAM tier), then with --ram 0.
# Writes JSON lines to $OUT/e2e.jsonl.
set -uo pipefail
source .device/setup.sh > /dev/null
out="${OUT:-/tmp}"
model=/tmp/llama-3.1-8b
lw() { node dist/src/cli/main.js "$@"; }
[ -f "$model/config.json" ] || { /usr/bin/time -f "make-test-model %e s" node dist/src/cli/main.js make-test-model --preset llama-3.1-8b --dtype bf16 --out "$model"; }
node dist/src/bench/prompt.js "$model" 32000 /tmp/p32k.txt
for args in "--ram 64GB --max-tokens 16" "--ram 0 --max-tokens 3"; do
  echo "== run $args"
  lw run "$model" --prompt-file /tmp/p32k.txt --vram 8GB --context 33k --temperature 0 --backend cuda --json $args > /tmp/run.json 2> /tmp/run.err
  echo "exit $?"; tail -3 /tmp/run.err; cat /tmp/run.json | tee -a "$out/e2e.jsonl"
done
