#!/usr/bin/env bash
# Catch2 test names become ctest names: a ';' splits one into several (ctest lists are
# ';'-separated) and '[' or ',' starts a tag or a second pattern in Catch's filter, so such a
# test either runs nothing or runs the wrong cases. Fails naming each offending TEST_CASE.
set -uo pipefail
src="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
bad="$(cd "$src" && grep -rn --include='*_test.cc' -E 'TEST_CASE\("[^"]*[;[][^"]*"' . | grep -v '^\./build' || true)"
if [ -n "$bad" ]; then
  echo "test names with ';' or '[' (ctest and Catch's filter would split them):"
  echo "$bad"
  exit 1
fi
echo "test names: ok"
