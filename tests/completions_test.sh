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
expect "offer run peers inspect selftest bench ledger identity config completion version help" "" gpugrid ""
expect "--help --version -V -q --quiet -v --verbose" "--json" gpugrid -
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
# NAME=FILE: files after the '=' (bash splits the word there), and in one word.
expect "x.npy y.pb" "a.onnx b.txt" gpugrid run a.onnx input =
expect "x.npy" "y.pb" gpugrid run a.onnx input = x
expect "input=x.npy" "" gpugrid run a.onnx input=x
expect "x.npy y.pb" "" gpugrid run a.onnx input = x.npy ""
# --peer: ws://, wss:// and the configured peers (from `gpugrid config show`).
mkdir -p "$tmp/bin" "$tmp/config"
ln -s "$bin" "$tmp/bin/gpugrid"
export XDG_CONFIG_HOME="$tmp/config" HOME="$tmp"
expect "ws:// wss://" "a.onnx" gpugrid run --peer ""
GPUGRID_PEERS="ws://cfg.example:7447" PATH="$tmp/bin:$PATH" expect "ws://cfg.example:7447 ws://" "" gpugrid peers --peer ""
expect "show path set" "" gpugrid config ""
expect "price peers" "" gpugrid config set ""
mkdir -p "$tmp/my dir"
touch "$tmp/my dir/m.onnx"

# zsh and fish: real shells completing real command lines.
if command -v zsh >/dev/null 2>&1; then
  zsh -n "$src/completions/_gpugrid" || fail "completions/_gpugrid does not parse (zsh -n)"
  # An interactive zsh on a pseudo-terminal (zpty), with compadd wrapped to print every
  # candidate; TAB after the line, and the candidates come back one per line.
  cat >"$tmp/capture.zsh" <<'ZSH'
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT= ; fpath=('$1' \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'zstyle ":completion:*" list-grouped false; zstyle ":completion:*" insert-tab false'
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  typeset -a __hits; builtin compadd -A __hits "$@"; local r=$?
  local h; for h in $__hits; do print -r -- "<<""HIT>>$h"; done
  builtin compadd "$@"; return $r
}'
zpty -w z 'comppostfuncs=( __done ); __done () { print -r -- "<<""DONE>>"; exit }'
zpty -n -w z "$2"$'\t'
out=""
while zpty -r z chunk; do  # the caller's timeout bounds this
  out+="$chunk"
  [[ "$out" == *"<<DONE>>"* ]] && break
done
zpty -d z
print -r -- "$out" | tr -d '\r' | sed -n 's/.*<<HIT>>//p' | sort -u
ZSH
  zexpect() {  # zexpect "WANTED" "NOT_WANTED" LINE
    local got w
    got="$(cd "$tmp" && PATH="$tmp/bin:$PATH" timeout 20 zsh -f "$tmp/capture.zsh" "$src/completions" "$3" | tr '\n' '|')"
    local IFS='|'
    for w in $1; do [[ "|$got" == *"|$w|"* ]] || fail "zsh: '$3<TAB>' should offer '$w'; got: $got"; done
    for w in $2; do [[ "|$got" != *"|$w|"* ]] || fail "zsh: '$3<TAB>' should not offer '$w'; got: $got"; done
  }
  zexpect "run" "offer" "gpugrid r"
  zexpect "a.onnx|models" "b.txt" "gpugrid run "
  zexpect "x.npy|y.pb" "b.txt" "gpugrid run a.onnx "
  zexpect "--redundancy" "" "gpugrid run --re"
  zexpect "a.onnx" "b.txt" "gpugrid run ~/"
  zexpect "m.onnx" "" "gpugrid run my\ dir/"
  zexpect "x.npy|y.pb" "a.onnx" "gpugrid run a.onnx input="
  zexpect "ws://|wss://" "" "gpugrid run --peer "
  GPUGRID_PEERS="ws://cfg.example:7447" zexpect "ws://cfg.example:7447" "" "gpugrid run --peer "
else
  echo "skip: zsh is not installed; completions/_gpugrid not tested"
fi
if command -v fish >/dev/null 2>&1; then
  fish -n "$src/completions/gpugrid.fish" || fail "completions/gpugrid.fish does not parse (fish -n)"
  fexpect() {  # fexpect "WANTED" "NOT_WANTED" LINE
    local got w
    got="$(cd "$tmp" && PATH="$tmp/bin:$PATH" fish --no-config -c "source '$src/completions/gpugrid.fish'; complete -C \$argv[1]" "$3" 2>&1 |
      cut -f1 | tr '\n' '|')"
    local IFS='|'
    for w in $1; do [[ "|$got" == *"|$w|"* ]] || fail "fish: '$3<TAB>' should offer '$w'; got: $got"; done
    for w in $2; do [[ "|$got" != *"|$w|"* ]] || fail "fish: '$3<TAB>' should not offer '$w'; got: $got"; done
  }
  fexpect "run" "offer" "gpugrid ru"
  fexpect "--redundancy" "" "gpugrid run --re"
  fexpect "a.onnx|models/" "" "gpugrid run "
  fexpect "x.npy|y.pb" "" "gpugrid run a.onnx "
  fexpect "~/a.onnx" "" "gpugrid run ~/"
  fexpect "my dir/m.onnx" "" "gpugrid run my\ dir/"
  fexpect "my dir/m.onnx" "" "gpugrid run 'my dir/"
  fexpect "input=x.npy" "" "gpugrid run a.onnx input=x"
  fexpect "ws://|wss://" "" "gpugrid run --peer "
  GPUGRID_PEERS="ws://cfg.example:7447" fexpect "ws://cfg.example:7447" "" "gpugrid run --peer "
  fexpect "show|path|set" "" "gpugrid config "
else
  echo "skip: fish is not installed; completions/gpugrid.fish not tested"
fi

if (( failures > 0 )); then
  echo "$failures completion check(s) failed" >&2
  exit 1
fi
echo "completions ok"
