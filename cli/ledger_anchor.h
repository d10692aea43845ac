// The chain side of `gpugrid ledger` and `gpugrid offer` (README "Anchoring the ledger"):
// `ledger anchor` (anchor the head now), `ledger verify --chain` (the ledger against the heads
// this wallet anchored), `ledger show --anchors` (the local record DATA_DIR/anchors.tsv), and
// the background anchorer that `offer --anchor-every/--anchor-interval` starts.
//
// Where the chain is: --chain-rpc/--contract, else GPUGRID_CHAIN_RPC/GPUGRID_CHAIN_CONTRACT/
// GPUGRID_CHAIN_ID, else DATA_DIR/chain.toml (chain/wallet.h). Errors are one line on `err`.
// Exit codes: 0 ok; 1 the ledger fails a check (a link, a signature or an anchor), or a
// transaction failed; 2 bad usage, input or configuration; 5 (verify --chain) the chain could
// not be read, so nothing was checked against it.
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "base/json.h"
#include "chain/anchor.h"
#include "cli/commands.h"
#include "ledger/ledger.h"

namespace gpugrid::cli {

constexpr int kExitChainUnreadable = 5;

int ledger_anchor_now(const ledger_options& o, const std::string& dir, std::FILE* out, std::FILE* err);
int ledger_verify_chain(const ledger_options& o, const std::string& dir, std::FILE* out, std::FILE* err);
int ledger_show_anchors(const ledger_options& o, const std::string& dir, std::FILE* out, std::FILE* err);

// For offer: the anchorer when anchoring is asked for (flags, else chain.toml), else null.
// Fails with usage when it is asked for without a chain endpoint and contract, or a value is
// malformed. Events ("anchor_sent", "anchored", "anchor_failed") go to `emit` from the
// anchorer's thread.
expected<std::unique_ptr<chain::anchorer>> start_offer_anchorer(const offer_options& o, const std::string& dir,
                                                                std::shared_ptr<ledger::ledger_file> book,
                                                                std::function<void(json)> emit);

}  // namespace gpugrid::cli
