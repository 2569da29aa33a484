#!/usr/bin/env bash
# On the GPU machine: the whole `layerwise bench`, split over calls of under 10 minutes each (PART=1, 2, 3), each
# writing its results JSON to $OUT. Merge them here afterwards and regenerate the report:
#   node dist/src/cli/main.js bench --report part1.json,part2.json,part3.json
# PART 1: Llama-3.1-8B at 8k / 32k / 100k (RAM tier), from disk every token (cold prefill), and the accelerate baseline.
# PART 2: batch 1/4/16/64, second question with --kv-cache, no VRAM limit, and the other dense models (32k).
# PART 3: the long contexts of other architectures (gpt-oss-20b, Gemma-3-12B, Qwen3-Next 8 layers).
# PART 4: Llama-3.1-8B at 32k only, RAM tier and from disk (the links again, without the rest of PART 1).
# BENCH_TIMEOUT: seconds the bench may run (560); a run cut short keeps its partial.json.
set -uo pipefail
source .device/setup.sh > /dev/null
export PATH="$PATH:/usr/local/cuda/bin"
out="${OUT:-/tmp}"
bench() { timeout "${BENCH_TIMEOUT:-560}" node dist/src/cli/main.js bench --out "$out" --docs /tmp/benchmarks.md "$@" 2>&1 | grep -v "^wrote llama" | tail -30; return "${PIPESTATUS[0]}"; }
case "${PART:-1}" in
  1) bench --presets llama-3.1-8b --contexts 8k,32k,100k --skip batch,kvcache,nolimit,long ;;
  2) bench --presets llama-3.1-8b,llama-3.2-1b,qwen3-8b --contexts 32k --skip disk,baseline,long ;;
  3) bench --presets llama-3.2-1b --contexts 8k --skip main,torch ;;
  4) bench --presets llama-3.1-8b --contexts 32k --skip batch,kvcache,nolimit,baseline,long ;;
  *) echo "PART is 1, 2, 3 or 4"; exit 2 ;;
esac
rc=$?
[ "$rc" = 0 ] && rm -f "$out/partial.json"
echo "bench part ${PART:-1}: exit $rc"
for f in "$out"/*.json; do
  case "$(basename "$f")" in part[0-9]-*) ;; *) mv "$f" "$out/part${PART:-1}-$(basename "$f")" ;; esac # earlier parts' stay
done
