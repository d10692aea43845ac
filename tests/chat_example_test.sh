#!/usr/bin/env bash
# The bundled chat model (examples/chat): the folder loads; `gpugrid generate` decodes the same
# greedy tokens as onnxruntime did when examples/chat/train.py exported it (its
# expected_greedy.json: prompt token ids, answer ids, and each step's top-1 minus top-2 logit);
# `gpugrid chat` takes turns (the second answer is the one onnxruntime gave with the first turn
# in the history); generate without --local (the quick start's command) answers the same; a copy
# of the folder without its tokenizer is refused with exit 2.
# Greedy tokens are compared up to the first step whose top-two logits are within 0.01 of each
# other (where float rounding may pick either), which for the committed model is the whole answer.
# Usage: tests/chat_example_test.sh path/to/gpugrid path/to/source   (needs python3 for JSON)
set -uo pipefail
bin=$1
src=$(cd "$2" && pwd)
dir="$src/examples/chat"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
command -v python3 >/dev/null || { echo "skipped: no python3 to read JSON"; exit 77; }
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

greedy=(--temperature 0 --repetition-penalty 1 --max-tokens 32)
ncases=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["cases"]))' "$dir/expected_greedy.json")
[ "$ncases" -ge 4 ] || fail "expected_greedy.json has $ncases cases, not at least 4"

# check_case I JSON_FILE: generate's --json output against case I.
check_case() {
  python3 - "$dir/expected_greedy.json" "$1" "$2" <<'EOF'
import json, sys
exp = json.load(open(sys.argv[1]))["cases"][int(sys.argv[2])]
got = json.load(open(sys.argv[3]))
want = exp["greedy_ids"]
sure = next((i for i, m in enumerate(exp["margins"]) if m < 0.01), len(want))
ids = got["token_ids"]  # with the EOS that stopped it, as greedy_ids
problems = []
if got["prompt_tokens"] != len(exp["prompt_ids"]):
    problems.append(f"prompt of {got['prompt_tokens']} tokens, not {len(exp['prompt_ids'])}")
if ids[:sure] != want[:sure]:
    problems.append(f"greedy ids {ids} differ from onnxruntime's {want} (compared up to {sure})")
if sure == len(want) and got["text"] != exp["greedy_text"]:
    problems.append(f"text {got['text']!r}, not {exp['greedy_text']!r}")
if not got["text"].strip():
    problems.append("an empty answer")
if problems:
    print(f"case {sys.argv[2]} ({exp['messages'][-1]['content']!r}): " + "; ".join(problems))
    sys.exit(1)
EOF
}

# Single-turn cases: the user's message as --prompt.
for i in $(seq 0 $((ncases - 1))); do
  nmsg=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["cases"][int(sys.argv[2])]["messages"]))' "$dir/expected_greedy.json" "$i")
  [ "$nmsg" -eq 1 ] || continue
  prompt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cases"][int(sys.argv[2])]["messages"][0]["content"])' "$dir/expected_greedy.json" "$i")
  "$bin" generate "$dir" --local --prompt "$prompt" "${greedy[@]}" --json >"$tmp/gen$i.json" 2>"$tmp/err" </dev/null ||
    { fail "generate --local case $i exited $?: $(cat "$tmp/err")"; continue; }
  check_case "$i" "$tmp/gen$i.json" || fail "generate --local"
done

# The quick start's command (no --local: the embedded grid where there is one) answers the same.
prompt0=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cases"][0]["messages"][0]["content"])' "$dir/expected_greedy.json")
if "$bin" generate "$dir" --prompt "$prompt0" "${greedy[@]}" --json >"$tmp/grid.json" 2>"$tmp/err" </dev/null; then
  check_case 0 "$tmp/grid.json" || fail "generate without --local"
else
  fail "generate without --local exited $?: $(cat "$tmp/err")"
fi

# chat: two turns on stdin; the case with three messages is the second turn after case 0's answer.
python3 - "$dir/expected_greedy.json" "$tmp" <<'EOF' || fail "could not write the chat input"
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
two = next(c for c in cases if len(c["messages"]) == 3)
first = cases[0]
assert two["messages"][0] == first["messages"][0]
with open(sys.argv[2] + "/chat_in", "w") as f:
    f.write(two["messages"][0]["content"] + "\n" + two["messages"][2]["content"] + "\n/exit\n")
sure = all(m >= 0.01 for m in first["margins"] + two["margins"])
with open(sys.argv[2] + "/chat_want", "w") as f:
    f.write(first["greedy_text"] + "\n" + two["greedy_text"] + "\n" if sure else "")
EOF
if "$bin" chat "$dir" --local "${greedy[@]}" <"$tmp/chat_in" >"$tmp/chat_out" 2>"$tmp/err"; then
  if [ -s "$tmp/chat_want" ]; then
    cmp -s "$tmp/chat_out" "$tmp/chat_want" ||
      fail "chat answered: $(cat "$tmp/chat_out") -- onnxruntime: $(cat "$tmp/chat_want")"
  else
    [ "$(wc -l <"$tmp/chat_out")" -ge 2 ] || fail "chat gave fewer than two answers: $(cat "$tmp/chat_out")"
  fi
else
  fail "chat exited $?: $(cat "$tmp/err")"
fi

# A copy of the folder without tokenizer.json: exit 2, one line naming the file.
mkdir "$tmp/broken"
cp "$dir"/*.json "$dir/model.onnx" "$tmp/broken/"
rm "$tmp/broken/tokenizer.json"
"$bin" generate "$tmp/broken" --local --prompt hi >"$tmp/out" 2>"$tmp/err" </dev/null
code=$?
[ "$code" -eq 2 ] || fail "a folder without tokenizer.json: exit $code, not 2"
[ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "tokenizer.json" "$tmp/err" ||
  fail "a folder without tokenizer.json: stderr should be one line naming it: $(cat "$tmp/err")"

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "chat example: $ncases greedy cases match onnxruntime; chat takes turns"
