# Sourced by the model tests (families_test.sh, real_models_test.sh, control_flow_test.sh): the
# Python test environment, a cache of the models a generator script writes, and the check of
# the models that must be refused.
#
# model_test_env BINARY SOURCE_DIR
#   Sets bin, src, models (SOURCE_DIR/tests/models), py (GPUGRID_PYTHON or SOURCE_DIR/.venv)
#   and versions (torch, onnx, onnxruntime, numpy). Exits 77 (skipped) when the environment or
#   one of those packages is missing, 1 when the binary is missing.
# cached_models NAME OVERRIDE SCRIPT [ARGS...]
#   Sets cache to a folder holding what `SCRIPT FOLDER ARGS...` writes: OVERRIDE when set, else
#   NAME beside the binary when that is a CMake build folder, else under TMPDIR. Regenerates
#   only when the script, its arguments or the package versions changed. Exits 1 when it fails.
model_test_env() {
  bin=$1
  src=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
  src=$(cd "$src" && pwd)
  models="$src/tests/models"
  py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
  if [ ! -x "$py" ]; then
    echo "skipped: no Python test environment at $py (run scripts/python_env.sh)"
    exit 77
  fi
  versions=$("$py" -c "import numpy, onnx, onnxruntime, torch; print('torch', torch.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)" 2>/dev/null)
  if [ -z "$versions" ]; then
    echo "skipped: $py lacks one of numpy, onnx, onnxruntime, torch (run scripts/python_env.sh; torch is Debian's python3-torch)"
    exit 77
  fi
  if [ ! -x "$bin" ] && ! command -v "$bin" >/dev/null 2>&1; then
    echo "FAIL: gpugrid binary $bin not found"
    exit 1
  fi
}

cached_models() {
  local name=$1 override=$2 script=$3
  shift 3
  if [ -n "$override" ]; then
    cache=$override
  elif [ -f "$(dirname "$bin")/CMakeCache.txt" ]; then
    cache="$(cd "$(dirname "$bin")" && pwd)/$name"
  else
    cache="${TMPDIR:-/tmp}/gpugrid-$name-$(id -u)"
  fi
  local hash tmp
  hash=$({ cat "$script"; echo "$*"; echo "$versions"; } | sha256sum | cut -d' ' -f1)
  if [ -f "$cache/manifest.json" ] && [ "$(cat "$cache/.stamp" 2>/dev/null)" = "$hash" ]; then
    echo "$name: using cached models in $cache ($versions)"
    return
  fi
  echo "$name: generating into $cache ($versions)"
  mkdir -p "$(dirname "$cache")"
  tmp="$cache.tmp.$$"
  rm -rf "$tmp"
  if ! "$py" -W ignore "$script" "$tmp" "$@" >"$tmp.log" 2>&1; then
    cat "$tmp.log"
    rm -rf "$tmp" "$tmp.log"
    echo "FAIL: $(basename "$script") failed"
    exit 1
  fi
  rm -f "$tmp.log"
  echo "$hash" > "$tmp/.stamp"
  rm -rf "$cache"
  mv "$tmp" "$cache"
}

# check_refusals BAD_DIR SCRATCH
#   Runs every model of BAD_DIR/expect.txt (lines: FILE<TAB>a fragment of the expected
#   message<TAB>input files, relative to BAD_DIR unless absolute) with `run --local` and checks
#   that it exits 2 with one line naming the fragment; prints ok/FAIL per model and sets fail=1
#   on any failure. Needs bin.
check_refusals() {
  local dir=$1 scratch=$2 file fragment inputs f rc lines label
  local -a names files
  while IFS=$'\t' read -r file fragment inputs; do
    [ -n "$file" ] || continue
    read -r -a names <<< "$inputs"
    files=()
    for f in "${names[@]}"; do [[ $f == /* ]] && files+=("$f") || files+=("$dir/$f"); done
    timeout 60 "$bin" run --local --device cpu "$dir/$file" "${files[@]}" --output-dir "$scratch/bad" >/dev/null \
      2>"$scratch/bad.err"
    rc=$?
    lines=$(wc -l < "$scratch/bad.err")
    label="$file${files[0]:+ $(basename "${files[0]}")}"
    if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$fragment" "$scratch/bad.err"; then
      echo "ok   $label refused: $(cat "$scratch/bad.err")"
    else
      echo "FAIL $label: exit $rc (want 2), $lines line(s), want '$fragment': $(head -c 300 "$scratch/bad.err")"
      fail=1
    fi
  done < "$dir/expect.txt"
}
