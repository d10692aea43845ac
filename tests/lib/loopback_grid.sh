# Shared set-up of the shell tests that run real `gpugrid offer` processes on loopback.
# Source it first thing, with the test's own arguments:
#   source "$2/tests/lib/loopback_grid.sh" "$@"     # $1 path/to/gpugrid, $2 path/to/source
# It defines bin (absolute), src, tmp (removed on exit, with every process in pids killed),
# a private config/data dir and HOME, failures and fail MSG (counts, prints "FAIL: MSG"),
# model and sample (the bundled digit classifier), and the helpers below.
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$2"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"

# node_id_of NAME: the node id provider NAME announced in its "listening" event (its log also
# names its peers, and those lines may come first).
node_id_of() { sed -n 's/.*"event":"listening".*"node_id":"\([^"]*\)".*/\1/p' "$tmp/$1.log" | head -1; }

# alive PID: the process exists and is not a zombie.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# start_provider NAME [ARGS...]: starts `gpugrid offer` on a free loopback port with data dir
# $tmp/NAME and waits (5 s at most) for its "listening" event; sets url_NAME, pid_NAME and
# port_NAME. Returns 1 (after a fail line) when it does not come up.
start_provider() {
  local name="$1"
  shift
  "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/$name" --json "$@" >"$tmp/$name.log" 2>"$tmp/$name.err" &
  local pid=$!
  pids+=("$pid")
  local url=""
  for _ in $(seq 1 100); do
    url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/$name.log" 2>/dev/null | head -1)"
    [ -n "$url" ] && break
    sleep 0.05
  done
  [ -n "$url" ] || { fail "provider $name did not start: $(cat "$tmp/$name.err")"; return 1; }
  printf -v "url_$name" '%s' "$url"
  printf -v "pid_$name" '%s' "$pid"
  printf -v "port_$name" '%s' "${url##*:}"
}

# start_serve [ARGS...]: starts `gpugrid serve` on a free loopback port (logs $tmp/serve.log and
# .err) and waits (10 s at most) for the URL it prints; sets serve_addr (host:port) and
# serve_pid. Returns 1 (after a fail line) when it does not come up.
start_serve() {
  "$bin" serve --listen 127.0.0.1:0 --json "$@" >"$tmp/serve.log" 2>"$tmp/serve.err" &
  serve_pid=$!
  pids+=("$serve_pid")
  serve_addr=""
  for _ in $(seq 1 200); do
    serve_addr="$(sed -n 's/.*"url":"http:\/\/\([^"]*\)".*/\1/p' "$tmp/serve.log" 2>/dev/null | head -1)"
    [ -n "$serve_addr" ] && break
    sleep 0.05
  done
  [ -n "$serve_addr" ] || { fail "serve did not start: $(cat "$tmp/serve.err")"; return 1; }
}

# metric NAME KEY: the value of one metric from provider NAME's GET /metrics (same port).
metric() {
  local port_var="port_$1"
  local body
  body="$(exec 3<>"/dev/tcp/127.0.0.1/${!port_var}" && printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3)"
  printf '%s\n' "$body" | tr -d '\r' | awk -v k="$2" '$1 == k { print $2 }'
}
