#!/usr/bin/env bash
# On the GPU machine, the first call of a session after CPU-only work: the CUDA tests and memcheck, the kernel bench,
# and the 32k prefill at three chunk sizes (about 6 minutes). Logs and results in $OUT.
set -uo pipefail
here="$(dirname "$0")"
bash "$here/cuda-tests.sh"
source .device/setup.sh > /dev/null
timeout 200 node dist/bench/kernels.js --out "${OUT:-/tmp}" > "${OUT:-/tmp}/kernels.log" 2>&1
echo "kernel bench: exit $?"; grep -E "vs_torch|vs_sdpa|vs_torch_copy|gemv_|_tile" "${OUT:-/tmp}/kernels.log"
timeout 240 bash "$here/prefill-chunks.sh"
