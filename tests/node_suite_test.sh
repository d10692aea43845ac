#!/usr/bin/env bash
# Runs the ONNX backend node suite (regenerated from the onnx Python package) through
# `gpugrid selftest` and checks it against tests/node_suite_allowlist.txt: every listed case
# must still pass (the list only grows). Cases that newly pass are reported so the list can grow:
#   tests/node_suite_test.sh build/gpugrid . --update   rewrites the allowlist.
set -uo pipefail
gg=$1
src=$2
update=${3:-}
# shellcheck disable=SC1091
source "$src/tests/python_env.sh" "$src"
suite_root=${GPUGRID_NODE_SUITE:-$(dirname "$gg")/node-suite}
if [ ! -d "$suite_root/node" ]; then
  if [ -z "$PY" ]; then echo "skipped: no Python with numpy and onnx to generate the node suite"; exit 77; fi
  "$PY" "$src/tests/node_suite/generate.py" "$suite_root" >/dev/null 2>"$suite_root.log" || { cat "$suite_root.log"; exit 1; }
fi
out=$(mktemp)
"$gg" selftest --suite "$suite_root/node" --json > "$out"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then echo "selftest exited $rc"; cat "$out"; exit 1; fi
allow="$src/tests/node_suite_allowlist.txt"
passed=$(mktemp)
"${PY:-python3}" - "$out" "$passed" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for c in d["cases"]:
        if c["result"] == "passed":
            f.write(c["name"] + "\n")
fails = [c for c in d["cases"] if c["result"] == "failed"]
for c in fails:
    print(f"FAIL {c['name']}: {c.get('reason', '')}")
print(f"{d['passed']} passed, {d['failed']} failed, {d['skipped']} skipped")
PY
if [ "$update" = "--update" ]; then
  touch "$allow"
  sort -u "$passed" "$allow" | grep -v '^#' > "$allow.new"
  { echo "# ONNX node test cases that must pass (grows only). Regenerate with tests/node_suite_test.sh GPUGRID SRC --update"; cat "$allow.new"; } > "$allow"
  rm -f "$allow.new"
  echo "allowlist: $(grep -vc '^#' "$allow") cases"
fi
missing=$(grep -v '^#' "$allow" | sort | comm -23 - <(sort "$passed"))
newly=$(sort "$passed" | comm -23 - <(grep -v '^#' "$allow" | sort) | wc -l)
rm -f "$out" "$passed"
if [ -n "$missing" ]; then
  echo "allowlisted cases that no longer pass:"
  echo "$missing"
  exit 1
fi
echo "every allowlisted case passes ($newly more pass and could join the list)"
