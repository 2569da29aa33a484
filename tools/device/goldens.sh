#!/usr/bin/env bash
# On the GPU machine: writes the tiny test checkpoints that have no transformers fixtures yet and makes them with
# tools/golden/make_goldens.py into $OUT/golden, then copies them into test/fixtures/golden for the tests that follow.
# Usage: tools/device/goldens.sh PRESET:DTYPE [PRESET:DTYPE ...]   (after source .device/setup.sh)
set -euo pipefail
out="${OUT:-/tmp}"
models=$(mktemp -d)
dirs=()
for spec in "$@"; do
  preset=${spec%%:*} dtype=${spec##*:}
  node dist/src/cli/main.js make-test-model --preset "$preset" --dtype "$dtype" --out "$models/$preset-$dtype" > /dev/null
  dirs+=("$models/$preset-$dtype")
done
PYTHONUNBUFFERED=1 python3 tools/golden/make_goldens.py "$out/golden" "${dirs[@]}"
cp "$out"/golden/*.json test/fixtures/golden/
rm -rf "$models"
