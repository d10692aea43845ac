#!/usr/bin/env bash
# The payment-channel contract (contracts/payment_channel.vy):
#  1. the committed compiled output (contracts/payment_channel.json) matches the source, compiled
#     again with the pinned vyper;
#  2. its own tests on py-evm through eth-tester (tests/tools/contract_test.py): redeem, double
#     redeem, overdraw, wrong signer, cross-channel/chain/contract replay, withdraw before and
#     after the timeout, the anchor event, EIP-712 digest against eth-account's.
# Usage: chain_contract_test.sh GPUGRID_BINARY SOURCE_DIR
# Exit: 0 pass; 1 fail; 77 skipped (no Python test environment with vyper and eth-tester:
# run scripts/python_env.sh).
set -uo pipefail
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if ! "$py" -c "import vyper, eth_tester, eth_account" >/dev/null 2>&1; then
  echo "skipped: $py lacks vyper/eth-tester/eth-account (run scripts/python_env.sh)"
  exit 77
fi
"$py" "$src/contracts/compile.py" --check || exit 1
"$py" "$src/tests/tools/contract_test.py" || exit 1
echo "chain_contract_test: ok"
