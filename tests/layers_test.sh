#!/usr/bin/env bash
# The libraries' layers, as includes: a source file (tests aside) may include only headers of
# its own layer and the layers below it (CMakeLists.txt links them the same way). An include
# that goes up a layer (the engine naming a kernel, the ledger reaching for the network, ...)
# fails here, naming the file and the include.
# Usage: tests/layers_test.sh [gpugrid binary, unused] [source dir]
set -uo pipefail
src="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
declare -A allowed=(
  [base]="base"
  [engine]="base engine"
  [kernels]="base engine kernels"
  [ledger]="base ledger"
  [discovery]="base discovery"
  [llm]="base engine llm"
  [net]="base discovery engine ledger net schemas"
  [actors]="actors base discovery engine ledger llm net"
  [chain]="base chain ledger"
  [serve]="actors base engine llm net serve"
)
bad=0
for layer in "${!allowed[@]}"; do
  [ -d "$src/$layer" ] || continue
  while IFS= read -r -d '' f; do
    case "$f" in *_test.cc | */testing/*) continue ;; esac
    while IFS= read -r inc; do
      dir="${inc%%/*}"
      if [[ " ${allowed[$layer]} " != *" $dir "* ]]; then
        echo "${f#"$src"/}: includes \"$inc\", a layer above $layer"
        bad=$((bad + 1))
      fi
    done < <(sed -n 's/^#include "\([a-z_]*\/[^"]*\)".*/\1/p' "$f")
  done < <(find "$src/$layer" \( -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print0)
done
[ "$bad" -eq 0 ] || { echo "$bad include(s) across layers"; exit 1; }
echo "layers: ok"
