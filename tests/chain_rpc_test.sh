#!/usr/bin/env bash
# The chain JSON-RPC client over HTTPS: the dev chain (tests/tools/devchain.py) serves TLS with a
# throwaway self-signed certificate; `gpugrid wallet balance` works when the certificate is
# trusted (SSL_CERT_FILE) for both a host name and an IP address in it, and fails with one line
# (exit 1) when it is not trusted or names another host.
# Usage: chain_rpc_test.sh GPUGRID_BINARY SOURCE_DIR
# Exit: 0 pass; 1 fail; 77 skipped (no Python test environment with eth-tester, or no openssl).
set -uo pipefail
bin=${1:?usage: chain_rpc_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if ! "$py" -c "import eth_tester" >/dev/null 2>&1; then
  echo "skipped: $py lacks eth-tester (run scripts/python_env.sh)"
  exit 77
fi
command -v openssl >/dev/null || { echo "skipped: no openssl command"; exit 77; }

tmp=$(mktemp -d)
chain_pid=""
cleanup() {
  [ -n "$chain_pid" ] && kill "$chain_pid" 2>/dev/null && wait "$chain_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

make_cert() {  # make_cert NAME SAN
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/$1.key" -out "$tmp/$1.pem" -days 1 \
    -subj "/CN=$1" -addext "subjectAltName=$2" >/dev/null 2>&1 || fail "openssl could not make a certificate"
}
make_cert local "DNS:localhost,IP:127.0.0.1"
make_cert other "DNS:other.example"

"$py" "$src/tests/tools/devchain.py" --port 0 --ready "$tmp/ready" --tls-cert "$tmp/local.pem" --tls-key "$tmp/local.key" 2>"$tmp/chain.log" &
chain_pid=$!
for _ in $(seq 1 480); do [ -f "$tmp/ready" ] && break; kill -0 "$chain_pid" 2>/dev/null || break; sleep 0.25; done
[ -f "$tmp/ready" ] || { cat "$tmp/chain.log"; fail "the dev chain did not start"; }
url=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['url'])" "$tmp/ready")
port=${url##*:}
[[ "$url" == https://* ]] || fail "the dev chain did not serve https: $url"

for u in "https://localhost:$port" "https://127.0.0.1:$port/"; do
  out=$(SSL_CERT_FILE="$tmp/local.pem" "$bin" wallet balance --data-dir "$tmp/w" --chain-rpc "$u" 2>"$tmp/err") ||
    fail "balance over $u: $(cat "$tmp/err")"
  [[ "$out" == *" 0 (chain id "* ]] || fail "balance over $u printed '$out'"
done

SSL_CERT_FILE="$tmp/other.pem" "$bin" wallet balance --data-dir "$tmp/w" --chain-rpc "https://localhost:$port" --rpc-timeout 3 2>"$tmp/err"
rc=$?
[ $rc = 1 ] || fail "an untrusted certificate gave exit $rc: $(cat "$tmp/err")"
grep -q "TLS handshake" "$tmp/err" && [ "$(wc -l < "$tmp/err")" = 1 ] || fail "untrusted certificate: $(cat "$tmp/err")"
cat "$tmp/err"
echo "chain_rpc_test: ok"
