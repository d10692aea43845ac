# Ledger checks shared by the shell tests that run real processes (ledger_reliability_test.sh,
# reliability_test.sh). Source it after setting bin (the gpugrid binary), tmp (a scratch
# folder) and fail MSG (counts a failure).

# jobs_of DIR [PROVIDER_NODE_ID]: the sorted payment job ids in a ledger (of one provider).
jobs_of() {
  "$bin" ledger show --data-dir "$1" --json 2>/dev/null | tr '{' '\n' | grep '"kind":"payment"' |
    { if [ -n "${2:-}" ]; then grep "\"provider\":\"$2\""; else cat; fi; } |
    grep -o '"job_id":"[0-9a-f]*"' | sort
}
# count TEXT: its lines (0 for empty text).
count() { if [ -z "$1" ]; then echo 0; else echo "$1" | wc -l; fi; }
# verify DIR WHAT: `ledger verify` on DIR, a failure naming WHAT and the reason.
verify() { "$bin" ledger verify --data-dir "$1" >/dev/null 2>"$tmp/verify.err" || fail "$2: ledger verify failed: $(cat "$tmp/verify.err")"; }
# node_id DIR: the node id of DIR's identity.
node_id() { "$bin" identity show --data-dir "$1" --json | sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p'; }
