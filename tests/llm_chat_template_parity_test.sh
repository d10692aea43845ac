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
[ $# -ge 1 ] || { echo "usage: llm_chat_template_parity_test.sh GPUGRID_BINARY SOURCE_DIR" >&2; exit 2; }
source "${2:-$(dirname "$0")/..}/tests/lib/llm_parity.sh"
llm_parity "$1" "${2:-$(dirname "$0")/..}" jinja2 make_chat_templates.py GPUGRID_LLM_TEMPLATES "chat template parity with jinja2 as transformers uses it"
