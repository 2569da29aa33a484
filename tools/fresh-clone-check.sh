#!/usr/bin/env bash
# What a new user meets: HEAD's files in an empty temp folder with nothing beside it, then the README's setup command,
# its first run command and its test command, each timed: their output, then one line per step. Exits non-zero if any
# fails.
# .ci/run calls it, so CI proves the same. FRESH_CLONE_KEEP=1 keeps the folder (its logs are in it).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/layerwise-fresh-XXXXXX")
[ "${FRESH_CLONE_KEEP:-}" = 1 ] || trap 'rm -rf "$work"' EXIT
mkdir "$work/layerwise"

# HEAD's tree (git archive works in shallow checkouts too); without git, the files as they are, less what builds make.
if git -C "$root" rev-parse --verify -q HEAD > /dev/null; then
  git -C "$root" archive HEAD | tar -x -C "$work/layerwise"
  [ -z "$(git -C "$root" status --porcelain)" ] || echo "note: uncommitted changes are not checked (HEAD only)"
else
  tar -C "$root" --exclude=./node_modules --exclude=./dist --exclude=./.device --exclude=./.git -cf - . | tar -x -C "$work/layerwise"
fi

# The first indented line after a README heading is that section's command.
command_after() { awk -v h="## $1" '$0 == h { on = 1; next } on && /^## / { exit } on && /^    [^ ]/ { sub(/^    /, ""); print; exit }' "$work/layerwise/README.md"; }
setup=$(command_after Setup)
run=$(command_after Run)
tests=$(command_after Tests)
for c in "$setup" "$run" "$tests"; do [ -n "$c" ] || { echo "README.md lacks a command under Setup, Run or Tests"; exit 2; }; done

failed=0
summary=""
step() {
  local name=$1 cmd=$2 start end rc line
  echo "== $name: $cmd"
  start=$(date +%s.%N)
  (cd "$work/layerwise" && bash -c "$cmd") 2>&1 | tee "$work/$name.log"
  rc=${PIPESTATUS[0]}
  end=$(date +%s.%N)
  line=$(printf '%-6s %-24s %7.1f s  %s' "$name" "$cmd" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)")")
  summary="$summary$line"$'\n'
  [ "$rc" = 0 ] || failed=1
  return "$rc"
}

echo "fresh copy of $root in $work/layerwise"
if step setup "$setup"; then
  # The demo's story: English from the bundled model, not random bytes.
  step run "$run" && { grep -q "Once upon a time" "$work/run.log" || { summary="${summary}run: no story in its output"$'\n'; failed=1; }; }
  step test "$tests"
fi
echo
echo "fresh-clone check ($work/layerwise):"
printf '%s' "$summary"
grep -hE '^# (tests|pass|fail|cancelled)' "$work/test.log" 2>/dev/null | sed 's/^/    /'
exit $failed
