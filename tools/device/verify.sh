#!/usr/bin/env bash
# On the GPU machine, the first call of a session after CPU-only work: the CUDA tests and memcheck, the 32k prefill
# profiled (compute stream and host waits) and at three chunk sizes, and with KERNELS=1 the kernel bench (about 8
# minutes with it). Logs and results in $OUT.
set -uo pipefail
here="$(dirname "$0")"
bash "$here/cuda-tests.sh"
source .device/setup.sh > /dev/null
if [ "${KERNELS:-0}" = 1 ]; then
  timeout 200 node dist/bench/kernels.js --out "${OUT:-/tmp}" > "${OUT:-/tmp}/kernels.log" 2>&1
  echo "kernel bench: exit $?"; grep -E "vs_torch|vs_sdpa|vs_torch_copy|gemv_|_tile" "${OUT:-/tmp}/kernels.log"
fi
RUNS="${RUNS:-2048:kernel 8192:kernel}" timeout 200 bash "$here/profile-prefill.sh"
timeout 200 bash "$here/prefill-chunks.sh"
