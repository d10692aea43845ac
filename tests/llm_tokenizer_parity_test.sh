#!/usr/bin/env bash
# Tokenizer parity with the `tokenizers` Python package: tests/llm/make_tokenizers.py trains
# small tokenizers of every supported kind (byte-level BPE GPT-2 and Llama-3 style,
# SentencePiece BPE with byte fallback, Unigram) on a multi-script corpus and writes their
# tokenizer.json and expected ids; the "[.llm_parity]" Catch2 case requires identical ids,
# identical decoding and streamed decoding equal to the whole.
#
# Usage: llm_tokenizer_parity_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with tokenizers: run scripts/python_env.sh).
# Environment: GPUGRID_PYTHON  Python to use (default SOURCE_DIR/.venv/bin/python)
set -uo pipefail

bin=${1:?usage: llm_tokenizer_parity_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
tests_bin="$(dirname "$bin")/tests/gpugrid_tests"

if [ ! -x "$py" ] || ! "$py" -c "import tokenizers" >/dev/null 2>&1; then
  echo "skipped: no Python with the tokenizers package at $py (run scripts/python_env.sh)"
  exit 77
fi
if [ ! -x "$tests_bin" ]; then
  echo "skipped: no unit-test binary at $tests_bin"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" "$src/tests/llm/make_tokenizers.py" "$work" || { echo "FAIL: make_tokenizers.py"; exit 1; }
GPUGRID_LLM_TOKENIZERS="$work" "$tests_bin" "tokenizer parity with the tokenizers package"
