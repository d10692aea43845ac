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
[ $# -ge 1 ] || { echo "usage: llm_tokenizer_parity_test.sh GPUGRID_BINARY SOURCE_DIR" >&2; exit 2; }
source "${2:-$(dirname "$0")/..}/tests/lib/llm_parity.sh"
llm_parity "$1" "${2:-$(dirname "$0")/..}" tokenizers make_tokenizers.py GPUGRID_LLM_TOKENIZERS "tokenizer parity with the tokenizers package"
