#!/usr/bin/env bash
# Rewrites the committed completion scripts from the binary's own command table.
# Usage: completions/regenerate.sh [path/to/gpugrid]   (default: build/gpugrid)
# tests/completions_test.sh fails when these files are stale; run this after changing a
# command or flag in cli/command_table.cc.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../build/gpugrid}"
if [ ! -x "$bin" ]; then
  echo "regenerate.sh: no gpugrid binary at '$bin' (build it, or pass its path)" >&2
  exit 2
fi
"$bin" completion bash > "$here/gpugrid.bash"
"$bin" completion zsh > "$here/_gpugrid"
"$bin" completion fish > "$here/gpugrid.fish"
echo "regenerated $here/gpugrid.bash, _gpugrid, gpugrid.fish"
