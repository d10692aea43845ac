#!/usr/bin/env bash
# The committed completion scripts match the binary, and the bash one completes what it should.
# Usage: tests/completions_test.sh path/to/gpugrid path/to/source
set -euo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$(cd "$2" && pwd)"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# (a) Stale scripts: the committed files must be exactly what the binary prints.
for pair in "bash gpugrid.bash" "zsh _gpugrid" "fish gpugrid.fish"; do
  set -- $pair
  if ! diff -u "$src/completions/$2" <("$bin" completion "$1") >/dev/null; then
    fail "completions/$2 is stale: run completions/regenerate.sh $bin"
  fi
done

# (b) Drive the bash completion function the way bash does on <TAB>.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# complete_words "WORD..." : COMPREPLY for completing the last word (may be empty).
complete_words() {
  bash -c '
    source "$1"; shift
    COMP_WORDS=("$@")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMP_LINE="${COMP_WORDS[*]}"
    COMP_POINT=${#COMP_LINE}
    _gpugrid gpugrid "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf "%s\n" "${COMPREPLY[@]}"
  ' _ "$src/completions/gpugrid.bash" "$@"
}

# expect "WANTED" "NOT_WANTED" WORD... : every wanted word offered, no unwanted one.
expect() {
  local want="$1" unwanted="$2" got w
  shift 2
  got="$(cd "$tmp" && complete_words "$@" | sort | tr '\n' ' ')"
  for w in $want; do
    [[ " $got " == *" $w "* ]] || fail "'$*<TAB>' should offer '$w'; got: $got"
  done
  for w in $unwanted; do
    [[ " $got " != *" $w "* ]] || fail "'$*<TAB>' should not offer '$w'; got: $got"
  done
}

touch "$tmp/a.onnx" "$tmp/b.txt" "$tmp/x.npy" "$tmp/y.pb"
mkdir "$tmp/models"

expect "run" "offer peers" gpugrid r
expect "offer run peers inspect selftest bench ledger identity completion help" "" gpugrid ""
expect "--help --version" "--json" gpugrid --
expect "--redundancy" "--local --json" gpugrid run --re
expect "a.onnx models" "b.txt x.npy" gpugrid run ""
expect "x.npy y.pb" "b.txt a.onnx" gpugrid run a.onnx ""
expect "x.npy" "" gpugrid run --local a.onnx x.npy --threads 2 x
expect "a.onnx" "b.txt" gpugrid inspect ""
expect "a.onnx" "b.txt" gpugrid bench --iterations 5 ""
expect "show verify balance" "new" gpugrid ledger ""
expect "show new" "verify" gpugrid identity ""
expect "bash zsh fish" "" gpugrid completion ""
expect "run" "" gpugrid help ru
expect "auto cpu cuda" "" gpugrid run --device ""
expect "cpu cuda" "auto" gpugrid selftest --device ""
expect "cuda" "cpu" gpugrid bench --device = cu
expect "models" "a.onnx b.txt" gpugrid run a.onnx --output-dir ""
expect "models" "a.onnx" gpugrid offer --data-dir ""
expect "models" "a.onnx" gpugrid selftest --suite ""
expect "--data-dir --json" "show" gpugrid ledger show ""
expect "" "a.onnx" gpugrid run --redundancy ""
# With no .onnx file in sight, a model can be any file.
expect "b.txt" "" gpugrid run b

# Syntax of the zsh and fish scripts, where those shells are installed.
if command -v zsh >/dev/null 2>&1; then
  zsh -n "$src/completions/_gpugrid" || fail "completions/_gpugrid does not parse (zsh -n)"
else
  echo "skip: zsh is not installed; completions/_gpugrid not syntax-checked"
fi
if command -v fish >/dev/null 2>&1; then
  fish -n "$src/completions/gpugrid.fish" || fail "completions/gpugrid.fish does not parse (fish -n)"
  # And fish completes a command name and a flag from it.
  got="$(cd "$tmp" && HOME="$tmp" fish --no-config -c "source '$src/completions/gpugrid.fish'; complete -C 'gpugrid ru'; complete -C 'gpugrid run --re'; complete -C 'gpugrid run '" 2>&1 || true)"
  [[ "$got" == *run* ]] || fail "fish: 'gpugrid ru<TAB>' should offer run; got: $got"
  [[ "$got" == *--redundancy* ]] || fail "fish: 'gpugrid run --re<TAB>' should offer --redundancy; got: $got"
  [[ "$got" == *a.onnx* ]] || fail "fish: 'gpugrid run <TAB>' should offer a.onnx; got: $got"
else
  echo "skip: fish is not installed; completions/gpugrid.fish not syntax-checked"
fi

if (( failures > 0 )); then
  echo "$failures completion check(s) failed" >&2
  exit 1
fi
echo "completions ok"
