#!/usr/bin/env bash
# Chat-template parity: tests/llm/make_chat_templates.py renders the templates of ChatML/Qwen2,
# Qwen2.5, Llama-3, Llama-3.1, Phi-3, Gemma, Mistral and a feature-coverage template over several
# conversations with jinja2 set up as transformers' apply_chat_template sets it up; the
# "[.llm_parity]" Catch2 case requires the C++ renderer to give the same text, or to fail where
# the template raises.
#
# Usage: llm_chat_template_parity_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with jinja2: run scripts/python_env.sh).
# Environment: GPUGRID_PYTHON  Python to use (default SOURCE_DIR/.venv/bin/python)
set -uo pipefail

bin=${1:?usage: llm_chat_template_parity_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
tests_bin="$(dirname "$bin")/tests/gpugrid_tests"

if [ ! -x "$py" ] || ! "$py" -c "import jinja2" >/dev/null 2>&1; then
  echo "skipped: no Python with jinja2 at $py (run scripts/python_env.sh)"
  exit 77
fi
if [ ! -x "$tests_bin" ]; then
  echo "skipped: no unit-test binary at $tests_bin"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" "$src/tests/llm/make_chat_templates.py" "$work" || { echo "FAIL: make_chat_templates.py"; exit 1; }
GPUGRID_LLM_TEMPLATES="$work" "$tests_bin" "chat template parity with jinja2 as transformers uses it"
