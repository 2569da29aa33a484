#!/usr/bin/env bash
# Here, before a device run: builds dist/, packs node and the production node_modules into .device/ (git-ignored).
# Carry it with: run(..., carry: [".device", "dist"]); the bundled models/ travel with the working tree.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
npx tsc -p .
mkdir -p .device
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
[ -f .device/node.xz ] || xz -T2 -c "$(command -v node)" > .device/node.xz
prod=$(mktemp -d)
cp package.json package-lock.json "$prod/"
(cd "$prod" && npm ci --omit=dev --ignore-scripts --silent)
tar -C "$prod" -cf - node_modules | xz -T2 -3 > .device/node_modules.tar.xz
rm -rf "$prod"
cp tools/device/setup.sh .device/setup.sh
du -sh .device dist
