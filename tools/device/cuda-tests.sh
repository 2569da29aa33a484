#!/usr/bin/env bash
# On the GPU machine (tools/device/prepare.sh packs what it needs): the CUDA tests, then compute-sanitizer over the op tests.
# Expects .device/ from tools/device/prepare.sh; writes logs to $OUT.
set -uo pipefail
source .device/setup.sh > /dev/null
export PATH="$PATH:/usr/local/cuda/bin" LAYERWISE_TEST_CUDA=1
out="${OUT:-/tmp}"
# The fuzz tests are CPU-only parsers, and fast-check (a dev dependency) does not travel.
node --test --test-concurrency=1 dist/test/backend/ $(ls dist/test/arch/*.test.js | grep -v fuzz) dist/test/engine/streaming.test.js dist/test/engine/decode-kept-layers.test.js dist/test/engine/non-finite.test.js dist/test/cli/interrupt.test.js dist/test/server/server-input.test.js dist/test/server/serve-sigint.test.js dist/test/cli/plan.test.js > "$out/cuda-tests.log" 2>&1
echo "cuda tests: exit $?"; grep -E "^# (tests|pass|fail)|^not ok|^    not ok|error:" "$out/cuda-tests.log" | head -40
for t in ops moe-ops sampling-ops; do
  timeout 240 compute-sanitizer --tool memcheck --target-processes all --print-limit 20 node dist/test/backend/$t.test.js > "$out/memcheck-$t.log" 2>&1
  echo "memcheck $t: exit $?"; grep -E "ERROR SUMMARY|^# (pass|fail)" "$out/memcheck-$t.log" | tail -3
done
