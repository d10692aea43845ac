#!/usr/bin/env bash
# The generation engine (llm/generator) on tiny random-weight decoders in the genai, optimum
# and merged layouts (tests/llm/make_tiny_decoder.py): batches of prompts of different lengths
# decode as each alone, a continuation (prompt + generated ids) samples as the whole answer,
# score() gives the streamed logprobs and the greedy arg-max, KV bytes, cancel, context limit.
# Runs the hidden "[.llm_generator]" Catch2 case.
#
# Usage: llm_generator_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with onnx and tokenizers: run scripts/python_env.sh).
# Environment: GPUGRID_PYTHON  Python to use (default SOURCE_DIR/.venv/bin/python)
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: llm_generator_test.sh GPUGRID_BINARY SOURCE_DIR" >&2; exit 2; }
source "${2:-$(dirname "$0")/..}/tests/lib/llm_parity.sh"
llm_parity "$1" "${2:-$(dirname "$0")/..}" tokenizers make_tiny_decoder.py GPUGRID_LLM_DECODERS "[.llm_generator]"
