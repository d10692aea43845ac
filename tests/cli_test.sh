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

commands="offer run peers inspect selftest bench ledger identity completion help"

# --help lists every command, on stdout, exit 0.
run_cli --help
[ "$code" -eq 0 ] || fail "--help exited $code"
[ -z "$err" ] || fail "--help wrote to stderr: $err"
for c in $commands; do
  grep -qE "^  $c " "$tmp/out" || fail "--help does not list '$c'"
done

# --version prints one line with a version number.
run_cli --version
[ "$code" -eq 0 ] || fail "--version exited $code"
[[ "$out" =~ ^gpugrid\ [0-9]+\.[0-9]+\.[0-9]+ ]] || fail "--version printed '$out'"

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

if ((failures > 0)); then
  echo "$failures CLI check(s) failed" >&2
  exit 1
fi
echo "cli ok"
