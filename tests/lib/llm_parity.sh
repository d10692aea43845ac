# Shared runner of the llm/ parity tests: a committed Python script writes the cases with the
# reference package, and a hidden Catch2 case compares the C++ side with them.
#   llm_parity BIN SRC MODULE GENERATOR ENV_VAR CATCH_TEST
# BIN is the gpugrid binary (the unit-test binary sits beside it in tests/), SRC the source
# tree, MODULE the Python package the generator needs, GENERATOR the script under tests/llm/,
# ENV_VAR the variable that tells the Catch2 case where the cases are.
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with MODULE: run scripts/python_env.sh).
# Environment: GPUGRID_PYTHON  Python to use (default SRC/.venv/bin/python)
llm_parity() {
  local bin=$1 src module=$3 generator=$4 env_var=$5 test_name=$6
  src=$(cd "$2" && pwd)
  local py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
  local tests_bin
  tests_bin="$(dirname "$bin")/tests/gpugrid_tests"
  if [ ! -x "$py" ] || ! "$py" -c "import $module" >/dev/null 2>&1; then
    echo "skipped: no Python with the $module package at $py (run scripts/python_env.sh)"
    exit 77
  fi
  if [ ! -x "$tests_bin" ]; then
    echo "skipped: no unit-test binary at $tests_bin"
    exit 77
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$py" "$src/tests/llm/$generator" "$work" || { echo "FAIL: $generator"; exit 1; }
  env "$env_var=$work" "$tests_bin" "$test_name"
}
