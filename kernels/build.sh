#!/usr/bin/env bash
# Compiles the CUDA C kernels to PTX (committed, so users need only a driver). PTX for compute_80 runs on Ampere and newer;
# the driver compiles it for the GPU at load time. Usage: kernels/build.sh [OUT_DIR]  (default: next to the sources)
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-.}"
for src in *.cu; do
  nvcc -ptx -arch=compute_80 -O3 -std=c++17 -o "$out/${src%.cu}.ptx" "$src"
done
echo "built: $(cd "$out" && ls *.ptx | tr '\n' ' ')"
