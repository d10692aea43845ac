#!/usr/bin/env bash
# The command line's contract (DESIGN.md, "The command line"): help, version, suggestions, and
# one-line errors with exit code 2.
# Usage: tests/cli_test.sh path/to/gpugrid path/to/source
set -uo pipefail
bin="$1"
src="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Settings and data of this test only.
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run_cli ARGS... : sets $code, $out, $err.
run_cli() {
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
  code=$?
  out="$(cat "$tmp/out")"
  err="$(cat "$tmp/err")"
}

# expect_usage_error "WHAT" ARGS... : exit 2, nothing on stdout, exactly one line on stderr.
expect_usage_error() {
  local what="$1"
  shift
  run_cli "$@"
  [ "$code" -eq 2 ] || fail "$what: 'gpugrid $*' exited $code, not 2"
  [ -z "$out" ] || fail "$what: 'gpugrid $*' wrote to stdout: $out"
  [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "$what: 'gpugrid $*' should print one line on stderr, printed: $err"
  [[ "$err" == "gpugrid: "* ]] || fail "$what: 'gpugrid $*' error should start with 'gpugrid: ': $err"
}

commands="offer run serve generate chat peers inspect selftest bench ledger identity wallet config completion version help"

# --help lists every command, on stdout, exit 0.
run_cli --help
[ "$code" -eq 0 ] || fail "--help exited $code"
[ -z "$err" ] || fail "--help wrote to stderr: $err"
for c in $commands; do
  grep -qE "^  $c " "$tmp/out" || fail "--help does not list '$c'"
done

# --version, -V and `gpugrid version` print one line with a version number.
run_cli --version
[ "$code" -eq 0 ] || fail "--version exited $code"
[[ "$out" =~ ^gpugrid\ [0-9]+\.[0-9]+\.[0-9]+ ]] || fail "--version printed '$out'"
version="$out"
for args in "-V" "version"; do
  run_cli $args
  [ "$code" -eq 0 ] && [ "$out" == "$version" ] || fail "'gpugrid $args' printed '$out' (exit $code), not '$version'"
done

# help COMMAND and COMMAND --help show that command's flags.
run_cli help run
[ "$code" -eq 0 ] || fail "'help run' exited $code"
for flag in --output --output-dir --peer --local --redundancy --max-price --timeout --json --device --threads; do
  [[ "$out" == *"$flag"* ]] || fail "'help run' does not mention $flag"
done
help_run="$out"
run_cli run --help
[ "$code" -eq 0 ] && [ "$out" == "$help_run" ] || fail "'run --help' differs from 'help run'"
for c in $commands; do
  run_cli help "$c"
  [ "$code" -eq 0 ] && [ -n "$out" ] || fail "'help $c' exited $code"
done
run_cli help offer
for flag in --listen --peer --device --price --slots --max-model-mb --max-memory --data-dir --tls-cert --tls-key --json; do
  [[ "$out" == *"$flag"* ]] || fail "'help offer' does not mention $flag"
done
[[ "$out" != *"--fault"* ]] || fail "'help offer' still offers test-only fault injection"

# A mistyped command: one line with a suggestion, exit 2.
expect_usage_error "typo" rnu model.onnx
[ "$err" == "gpugrid: unknown command 'rnu'; did you mean 'run'?" ] || fail "typo message: $err"
expect_usage_error "typo" inspcet m.onnx
[[ "$err" == *"did you mean 'inspect'?"* ]] || fail "typo message: $err"
expect_usage_error "unknown command" xyzzy

# Unknown flags and bad values: one line, exit 2.
expect_usage_error "unknown flag" run m.onnx --redundency 2
[[ "$err" == *"did you mean '--redundancy'?"* ]] || fail "unknown flag message: $err"
expect_usage_error "unknown flag" --frobnicate
expect_usage_error "bad number" run m.onnx --redundancy two
expect_usage_error "bad number" bench m.onnx --iterations 0
expect_usage_error "bad device" run m.onnx --device gpu
expect_usage_error "bad peer" peers --peer http://example.com
expect_usage_error "no fault injection in the product" offer --fault stall
expect_usage_error "missing model" run
expect_usage_error "missing action" ledger
expect_usage_error "bad action" identity rotate
expect_usage_error "bad shell" completion tcsh
expect_usage_error "tls pair" offer --tls-cert "$src/CMakeLists.txt"
expect_usage_error "extra argument" inspect a.onnx b.onnx

# Commands whose code is not in this tree say so in one line (exit 2) and fake nothing; those
# whose cli/cmd_<name>.cc exists must not be the stand-in (a link-order accident).
for c in offer peers ledger identity run inspect selftest bench; do
  case "$c" in
    ledger|identity) args=(show) ;;
    run|inspect|bench) args=("$tmp/missing.onnx") ;;
    selftest) args=(--suite "$tmp/no-suite") ;;
    *) args=() ;;
  esac
  if [ -f "$src/cli/cmd_$c.cc" ] && [ "$c" = offer ]; then
    # A real provider serves until a signal: stop it after a moment; it must exit cleanly.
    timeout --preserve-status -s TERM 3 "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/offer" >"$tmp/out" 2>"$tmp/err" </dev/null
    code=$?
    err="$(cat "$tmp/err")"
    [ "$code" -eq 0 ] || fail "'offer' stopped by SIGTERM exited $code: $err"
    grep -q "^listening on ws://127.0.0.1:" "$tmp/out" || fail "'offer' did not print its URL: $(cat "$tmp/out")"
    [[ "$err" != *"is not built yet"* ]] || fail "'offer' is built (cli/cmd_offer.cc) but the stand-in answered: $err"
  elif [ -f "$src/cli/cmd_$c.cc" ]; then
    run_cli "$c" "${args[@]}"
    [[ "$err" != *"is not built yet"* ]] || fail "'$c' is built (cli/cmd_$c.cc) but the stand-in answered: $err"
  else
    expect_usage_error "not built" "$c" "${args[@]}"
    [[ "$err" == *"'$c' is not built yet"* ]] || fail "'$c' should say it is not built: $err"
  fi
done

# A malformed config file: commands that read settings exit 2 naming file, line and key;
# commands that do not read settings are unaffected.
mkdir -p "$XDG_CONFIG_HOME/gpugrid"
printf 'peers = ["ws://a:7447"]\n\nprice = "cheap"\n' >"$XDG_CONFIG_HOME/gpugrid/config.toml"
for c in run offer peers; do
  case "$c" in run) args=(m.onnx) ;; *) args=() ;; esac
  expect_usage_error "bad config" "$c" "${args[@]}"
  [ "$err" == "gpugrid: $XDG_CONFIG_HOME/gpugrid/config.toml:3: key 'price' must be a number" ] ||
    fail "bad config message for $c: $err"
done
printf 'price = 1\nslots = = 2\n' >"$XDG_CONFIG_HOME/gpugrid/config.toml"
expect_usage_error "config syntax" peers
[[ "$err" == "gpugrid: $XDG_CONFIG_HOME/gpugrid/config.toml:2: "* ]] || fail "config syntax message: $err"
run_cli completion bash
[ "$code" -eq 0 ] || fail "'completion bash' should not read the config (exited $code: $err)"
rm "$XDG_CONFIG_HOME/gpugrid/config.toml"

# --precision: fp32 or tf32, and tf32 only where this process runs the model itself.
expect_usage_error "bad precision" bench "$src/examples/digits/digits.onnx" --precision fp16
expect_usage_error "tf32 on the grid" run "$src/examples/digits/digits.onnx" "$src/examples/digits/sample_0.npy" --precision tf32
[[ "$err" == *"--precision tf32 applies to --local runs only"* ]] || fail "tf32 without --local: $err"
run_cli run --local "$src/examples/digits/digits.onnx" "$src/examples/digits/sample_0.npy" --precision tf32 -o "$tmp/tf32.npy"
[ "$code" -eq 0 ] || fail "run --local --precision tf32 exited $code: $err"

# bench --json: one object with the figures scripts read, one latency per timed run.
run_cli bench "$src/examples/digits/digits.onnx" "$src/examples/digits/batch.npy" --warmup 1 --iterations 4 --json
[ "$code" -eq 0 ] || fail "bench --json exited $code: $err"
printf '%s' "$out" | "${PY:-python3}" -c '
import json, sys
d = json.load(sys.stdin)
for k in ("median_ms", "p90_ms", "min_ms", "peak_bytes", "times_ms", "cpu_gemm", "threads"):
    assert k in d, "bench --json lacks " + k
assert len(d["times_ms"]) == 4, d["times_ms"]
assert min(d["times_ms"]) == d["min_ms"] and d["min_ms"] <= d["median_ms"] <= d["p90_ms"] <= d["max_ms"], d
' || fail "bench --json output: $out"
# bench --profile: time per op type and per node (slowest first), which add up to the same.
run_cli bench "$src/examples/digits/digits.onnx" --warmup 1 --iterations 3 --profile --json
[ "$code" -eq 0 ] || fail "bench --profile --json exited $code: $err"
printf '%s' "$out" | "${PY:-python3}" -c '
import json, sys
d = json.load(sys.stdin)
ops, nodes = d["op_ms"], d["node_ms"]
assert nodes and all(set(n) == {"op", "name", "shape", "ms"} for n in nodes), nodes
assert [n["ms"] for n in nodes] == sorted((n["ms"] for n in nodes), reverse=True), nodes
assert {n["op"] for n in nodes} == set(ops), (nodes, ops)
assert abs(sum(n["ms"] for n in nodes) - sum(ops.values())) <= 1e-6 + 1e-6 * sum(ops.values()), (nodes, ops)
' || fail "bench --profile --json output: $out"
run_cli bench "$src/examples/digits/digits.onnx" --warmup 1 --iterations 2 --profile
[[ "$out" == *"slowest nodes"*"/fc1/Gemm [1, 64]"* ]] || fail "bench --profile lists no slowest nodes: $out"


# ---- issue 16: the command line as people and scripts expect it ----
source "$src/tests/python_env.sh" "$src"
model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"
export COLUMNS=80

# Help: --peer takes one URL per use; no CLI11 clutter; wrapped to the terminal's width.
run_cli help run
[[ "$out" == *"--peer URL "* && "$out" != *"--peer URL ..."* ]] || fail "help shows '--peer URL ...' though one URL per --peer is taken"
expect_usage_error "two URLs after one --peer" peers --peer ws://a:1 ws://b:2
for c in $commands; do
  run_cli help "$c"
  [[ "$out" != *"Needs:"* && "$out" != *"Subcommands"* && "$out" != *"REQUIRED"* ]] || fail "'help $c' has CLI11 clutter: $out"
  for w in 60 100; do
    long="$(COLUMNS=$w "$bin" help "$c" | awk -v w=$w 'length($0) > w' | head -1)"
    [ -z "$long" ] || fail "'help $c' at COLUMNS=$w has a longer line: $long"
  done
done
expect_usage_error "selftest without --suite" selftest
[[ "$err" == *"give --suite DIR"* ]] || fail "selftest without --suite: $err"
run_cli completion --help
for sh in bash zsh fish; do [[ "$out" == *"$sh: gpugrid completion $sh >"* ]] || fail "'completion --help' has no install line for $sh"; done

# The man page: generated from the table, valid roff, written beside the binary for cmake --install.
run_cli help --man
[ "$code" -eq 0 ] || fail "help --man exited $code"
for c in $commands; do grep -q "^\.SS gpugrid $c" "$tmp/out" || fail "the man page lacks '$c'"; done
if command -v groff >/dev/null 2>&1; then
  warnings="$(groff -man -Tutf8 -ww -z "$tmp/out" 2>&1)"
  [ -z "$warnings" ] || fail "the man page has roff warnings: $warnings"
fi
builddir="$(dirname "$bin")"
if [ -f "$builddir/cmake_install.cmake" ]; then
  cmp -s "$builddir/gpugrid.1" "$tmp/out" || fail "$builddir/gpugrid.1 is missing or stale"
  grep -q 'share/man/man1' "$builddir/cmake_install.cmake" || fail "cmake --install does not install the man page"
fi

# -q silences notes (the embedded grid's), -v adds debug lines.
run_cli run "$model" "$sample" -o "$tmp/q.npy"
[ "$code" -eq 0 ] || fail "run on the embedded grid exited $code: $err"
[[ "$err" == *"gpugrid: no peers configured"* ]] || fail "run on the embedded grid printed no note on a non-terminal stderr: $err"
run_cli run "$model" "$sample" -o "$tmp/q.npy" -q
[ "$code" -eq 0 ] && [ -z "$err" ] || fail "run -q printed on stderr (exit $code): $err"
run_cli -q run --local "$model" "$sample" -o "$tmp/q.npy"
[ "$code" -eq 0 ] && [ -z "$err" ] || fail "gpugrid -q run printed on stderr (exit $code): $err"

# run --json carries the output values, equal to the .npy written by -o.
run_cli run --local "$model" "$sample" --json -o "$tmp/j.npy"
[ "$code" -eq 0 ] || fail "run --json exited $code: $err"
if [ -n "$PY" ]; then
  printf '%s' "$out" | "$PY" -c '
import json, sys, numpy as np
d = json.load(sys.stdin)
o = d["outputs"][0]
ref = np.load(sys.argv[1])
assert o["shape"] == list(ref.shape), (o["shape"], ref.shape)
assert o["file"] == sys.argv[1], o["file"]
np.testing.assert_allclose(np.array(o["values"], dtype=np.float64).reshape(ref.shape), ref, rtol=1e-6, atol=1e-6)
' "$tmp/j.npy" || fail "run --json values differ from -o's .npy: $out"
fi
expect_usage_error "--json with -o -" run --local "$model" "$sample" --json -o -
[[ "$err" == *"--json and -o - would both write to stdout"* ]] || fail "--json -o -: $err"

# --output-format, and no binary on a terminal.
if [ -n "$PY" ]; then
  "$bin" run --local "$model" "$sample" -o - --output-format npy 2>/dev/null | "$PY" -c '
import io, sys, numpy as np
a = np.load(io.BytesIO(sys.stdin.buffer.read()))
assert a.shape == np.load(sys.argv[1]).shape
' "$tmp/j.npy" || fail "-o - --output-format npy is not a .npy on stdout"
fi
"$bin" run --local "$model" "$sample" -o "$tmp/out.bin" --output-format pb 2>/dev/null
[ "$(head -c 6 "$tmp/out.bin" | od -An -c | tr -d ' ')" != '223NUMPY' ] && [ -s "$tmp/out.bin" ] || fail "--output-format pb wrote no TensorProto"
"$bin" run --local "$model" "$sample" -o "$tmp/out.weird" --output-format npy 2>/dev/null
[ "$(head -c 6 "$tmp/out.weird" | tail -c 5)" == "NUMPY" ] || fail "--output-format npy to a file without .npy did not write a .npy"
expect_usage_error "bad output format" run --local "$model" "$sample" -o - --output-format png
if command -v script >/dev/null 2>&1; then
  tty_out="$(script -qec "'$bin' run --local '$model' '$sample' -o -" /dev/null </dev/null)"
  tty_code=$?
  [ "$tty_code" -eq 2 ] || fail "-o - on a terminal exited $tty_code, not 2: $tty_out"
  [[ "$tty_out" == *"refusing to write binary output to a terminal"* ]] || fail "-o - on a terminal: $tty_out"
fi

# A .npy is recognised by its magic under any name and from a pipe.
cp "$sample" "$tmp/sample0.dat"
run_cli run --local "$model" "$tmp/sample0.dat" -o "$tmp/dat.npy"
[ "$code" -eq 0 ] || fail "a .npy named sample0.dat: $err"
"$bin" run --local "$model" <(cat "$sample") -o "$tmp/pipe.npy" >/dev/null 2>"$tmp/err"
[ $? -eq 0 ] || fail "a .npy through <(cat x.npy): $(cat "$tmp/err")"
cmp -s "$tmp/dat.npy" "$tmp/pipe.npy" && cmp -s "$tmp/dat.npy" "$tmp/j.npy" || fail "the same input under other names gave other outputs"

# NAME=FILE with a NAME the model lacks names the model's inputs.
expect_usage_error "no such input" run --local "$model" "foo=$sample"
[[ "$err" =~ "the model has no input named foo (inputs: "[^\)]+")" ]] || fail "unknown input name: $err"

# identity show reads only: no key, no folder made.
expect_usage_error "identity show on an empty data dir" identity show --data-dir "$tmp/newdir"
[[ "$err" == *"identity new"* ]] || fail "identity show without a key should say how to make one: $err"
[ ! -e "$tmp/newdir" ] || fail "identity show created $tmp/newdir"
run_cli identity new --data-dir "$tmp/newdir"
[ "$code" -eq 0 ] || fail "identity new exited $code: $err"
run_cli identity show --data-dir "$tmp/newdir" --json
[ "$code" -eq 0 ] || fail "identity show after new exited $code: $err"

# config path|show|set.
run_cli config path
[ "$code" -eq 0 ] && [ "$out" == "$XDG_CONFIG_HOME/gpugrid/config.toml" ] || fail "config path printed '$out' (exit $code)"
cfg="$XDG_CONFIG_HOME/gpugrid/config.toml"
run_cli config set price 0.002
[ "$code" -eq 0 ] && grep -qx 'price = 0.002' "$cfg" || fail "config set price: exit $code, $err, file: $(cat "$cfg" 2>&1)"
printf '# my comment\n' >>"$cfg"
run_cli config set peers "ws://a:1, ws://b:2"
run_cli config set price 0.003
[ "$(grep -c '^price' "$cfg")" -eq 1 ] && grep -q '^# my comment' "$cfg" || fail "config set should replace the key and keep comments: $(cat "$cfg")"
before="$(cat "$cfg")"
expect_usage_error "config set bad value" config set slots many
expect_usage_error "config set out of range" config set slots 0
expect_usage_error "config set unknown key" config set colour blue
[ "$(cat "$cfg")" == "$before" ] || fail "a refused config set changed the file"
run_cli config show --json
if [ -n "$PY" ]; then
  printf '%s' "$out" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
assert d["price"] == 0.003 and d["peers"] == ["ws://a:1", "ws://b:2"] and d["peers_from"] == "config", d
' || fail "config show --json: $out"
fi
GPUGRID_PEERS=ws://env:3 "$bin" config show >"$tmp/out" 2>&1
grep -q "ws://env:3 (from GPUGRID_PEERS)" "$tmp/out" || fail "config show does not say GPUGRID_PEERS wins: $(cat "$tmp/out")"
run_cli config set price ""
! grep -q '^price' "$cfg" || fail "config set price '' should remove the key"
rm -f "$cfg"

# One JSON convention: --json prints exactly one document on stdout.
json_doc() {  # json_doc WHAT: $out must be one JSON document
  [ -z "$PY" ] && return 0
  printf '%s' "$out" | "$PY" -m json.tool >/dev/null 2>&1 || fail "$1 --json is not one JSON document: $out"
}
run_cli version --json; json_doc version
run_cli config show --json; json_doc "config show"
run_cli config path --json; json_doc "config path"
run_cli identity show --data-dir "$tmp/newdir" --json; json_doc "identity show"
run_cli inspect "$model" --json; json_doc inspect
for a in show verify balance; do run_cli ledger "$a" --data-dir "$tmp/newdir" --json; json_doc "ledger $a"; done

# offer: event lines on stderr whatever it is (here a file), timestamped; the node id whole;
# /healthz beside /metrics; -q silences the events; a node dialing itself gets a hint.
"$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/prov" --device cpu >"$tmp/offer.out" 2>"$tmp/offer.err" </dev/null &
offer_pid=$!
url=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/^listening on //p' "$tmp/offer.out")"
  [ -n "$url" ] && break
  sleep 0.1
done
if [ -z "$url" ]; then
  fail "offer printed no URL: $(cat "$tmp/offer.err")"
else
  port="${url##*:}"
  health="$(curl -s "http://127.0.0.1:$port/healthz")"
  [ "$health" == "ok" ] || fail "GET /healthz answered '$health'"
  grep -q '^gpugrid_' <<<"$(curl -s "http://127.0.0.1:$port/metrics")" || fail "GET /metrics serves no metrics beside /healthz"
  # peers: one JSON document (the issue's json.tool case); the table shows the whole node id.
  run_cli peers --peer "$url" --data-dir "$tmp/client" --json
  json_doc peers
  [[ "$out" == "["* ]] || fail "peers --json is not one array: $out"
  run_cli peers --peer "$url" --data-dir "$tmp/client"
  printf '%s\n' "$out" | grep -qE '^gg[a-z2-7]{32} ' || fail "peers does not show the whole node id: $out"
  # Two jobs through the provider: receipts in both ledgers.
  for k in 1 2; do
    "$bin" run "$model" "$sample" --peer "$url" --data-dir "$tmp/client" -o "$tmp/grid$k.npy" 2>"$tmp/err" >/dev/null ||
      fail "run --peer $url: $(cat "$tmp/err")"
  done
  # The same data dir as the provider: connected to itself, with a hint.
  "$bin" run "$model" "$sample" --peer "$url" --data-dir "$tmp/prov" --timeout 1 -o "$tmp/self.npy" >/dev/null 2>"$tmp/err"
  grep -q "connected to itself.*another --data-dir" "$tmp/err" || fail "dialing itself gives no hint: $(cat "$tmp/err")"
fi
kill -TERM "$offer_pid" 2>/dev/null
wait "$offer_pid"
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z gpugrid: offering ' "$tmp/offer.err" ||
  fail "offer's stderr (a file) has no timestamped 'offering' line: $(cat "$tmp/offer.err")"
grep -qE 'Z gpugrid: job_done ' "$tmp/offer.err" || fail "offer's job events did not reach a non-terminal stderr: $(cat "$tmp/offer.err")"
grep -qE 'Z gpugrid: terminated: draining' "$tmp/offer.err" || fail "offer's draining line is missing: $(cat "$tmp/offer.err")"
# -q: nothing on stderr; --json: JSON Lines on stdout.
timeout --preserve-status -s TERM 2 "$bin" offer -q --json --listen 127.0.0.1:0 --data-dir "$tmp/prov" --device cpu >"$tmp/out" 2>"$tmp/err" </dev/null
[ ! -s "$tmp/err" ] || fail "offer -q printed on stderr: $(cat "$tmp/err")"
if [ -n "$PY" ]; then
  "$PY" -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no events"
for l in lines:
    e = json.loads(l)
    assert "event" in e and "time" in e, e
assert json.loads(lines[0])["event"] == "listening" and json.loads(lines[-1])["event"] == "stopped", lines
' "$tmp/out" || fail "offer --json is not JSON Lines with event and time: $(cat "$tmp/out")"
fi

# ledger show --limit/--since; node ids whole (34 characters) and columns aligned.
run_cli ledger show --data-dir "$tmp/client" --json
if [ -n "$PY" ]; then
  printf '%s' "$out" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert len(d) == 2, d' || fail "ledger show after two jobs: $out"
fi
for args in "--limit 1:1" "--since 1h:2" "--since 2000-01-01:2" "--since 2099-01-01T00:00:00Z:0" "--limit 5 --since 1d:2"; do
  flags="${args%:*}"
  want="${args##*:}"
  got="$("$bin" ledger show --data-dir "$tmp/client" --json $flags | grep -c '"job_id"')"
  [ "$got" -eq "$want" ] || fail "ledger show $flags listed $got receipts, not $want"
done
expect_usage_error "bad --since" ledger show --data-dir "$tmp/client" --since yesterday
expect_usage_error "--limit on verify" ledger verify --data-dir "$tmp/client" --limit 1
"$bin" ledger show --data-dir "$tmp/client" >"$tmp/table"
"$bin" ledger balance --data-dir "$tmp/client" >>"$tmp/table"
grep -qE ' gg[a-z2-7]{32}  ' "$tmp/table" || fail "ledger tables do not show whole node ids: $(cat "$tmp/table")"
awk 'NR == 1 { h = index($0, "provider") } NR > 1 && NF > 5 && !/node/ { if (index($0, " gg") + 1 != h) { print; exit 1 } }' \
  <(head -3 "$tmp/table") || fail "ledger show: the provider column is not under its header: $(head -3 "$tmp/table")"

if ((failures > 0)); then
  echo "$failures CLI check(s) failed" >&2
  exit 1
fi
echo "cli ok"
