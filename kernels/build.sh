#!/usr/bin/env bash
# Compiles the CUDA C kernels to PTX (committed, so users need only a driver). PTX for compute_80 runs on Ampere and newer;
# the driver compiles it for the GPU at load time. Usage: kernels/build.sh [OUT_DIR]  (default: next to the sources)
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-.}"
for src in *.cu; do
  arch=compute_80
  [[ "$src" == *_sm90.cu ]] && arch=compute_90a # Hopper-only instructions (wgmma); loaded only on compute capability 9.0
  nvcc -ptx -arch="$arch" -O3 -std=c++17 -o "$out/${src%.cu}.ptx" "$src"
done
echo "built: $(cd "$out" && ls *.ptx | tr '\n' ' ')"
