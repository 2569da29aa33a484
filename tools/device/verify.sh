#!/usr/bin/env bash
# On the GPU machine, the first call of a session after CPU-only work: the CUDA tests and memcheck, the 32k prefill
# profiled (compute stream and host waits; alone, then as the bench runs it, twice in one process) and at three chunk
# sizes, and with KERNELS=1 the kernel bench (about 8 minutes with it). Logs and results in $OUT.
set -uo pipefail
here="$(dirname "$0")"
bash "$here/cuda-tests.sh"
source .device/setup.sh > /dev/null
if [ "${KERNELS:-0}" = 1 ]; then
  timeout 200 node dist/bench/kernels.js --out "${OUT:-/tmp}" > "${OUT:-/tmp}/kernels.log" 2>&1
  echo "kernel bench: exit $?"; grep -E "vs_torch|vs_sdpa|vs_torch_copy|gemv_|_tile" "${OUT:-/tmp}/kernels.log"
fi
RUNS="${RUNS:-8192:shared}" timeout 200 bash "$here/profile-prefill.sh"
# As the bench runs: its link measurements first, half the free RAM, two prompts in one process.
RUNS=8192:shared TAG=bench PROFILE_ARGS="--repeat 2 --links --ram auto --context 32080" timeout 200 bash "$here/profile-prefill.sh"
timeout 200 bash "$here/prefill-chunks.sh"
# The default chunk with a few decoded tokens: first token, decode s/token and host->GPU bytes a token (the decode share).
timeout 120 node dist/src/cli/main.js run /tmp/llama-3.1-8b --prompt-file /tmp/p32k.txt --vram 8GB --ram 64GB --context 33k --temperature 0 --backend cuda --json --max-tokens 16 > /tmp/decode.json 2> /tmp/decode.err
echo "default chunk, 16 tokens: exit $? $(tail -c 300 /tmp/decode.err | tr '\n' ' ')"
node -e 'const r = JSON.parse(require("fs").readFileSync("/tmp/decode.json", "utf8")); console.log(JSON.stringify({ tokens: r.tokens, ttft_s: r.ttft_s, decode_s_per_token: r.decode_s_per_token, decode_h2d_bytes_per_token: r.decode_h2d_bytes_per_token, peak_vram_bytes: r.peak_vram_bytes }))' | tee -a "${OUT:-/tmp}/decode-default-chunk.jsonl"
