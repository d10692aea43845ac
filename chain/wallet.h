// The wallet: this node's secp256k1 key in the data folder, and where its chain is.
//
// Key file DIR/wallet.key: the 32-byte secret key as 64 hex digits and a newline (the form
// other Ethereum tools import), mode 0600, written atomically (temporary file, fsync, link or
// rename). Refused, never overwritten: a file of another size or content, one that is not a
// valid key, one that group or others may read.
//
// Chain settings, first found wins: the command-line flag, the environment (GPUGRID_CHAIN_RPC,
// GPUGRID_CHAIN_CONTRACT, GPUGRID_CHAIN_ID), DIR/chain.toml, then the [chain] table of
// config.toml (base/settings.h), with the same keys as chain.toml:
//   rpc = "https://..."          # any EVM chain's JSON-RPC endpoint
//   contract = "0x..."           # the payment-channel contract on that chain
//   chain_id = 137               # optional: refuse an endpoint that serves another chain
//   max_fee_gwei = 500           # optional: the gas price limit
//   confirmations = 2            # optional: blocks to wait for after a transaction is mined
//   from_block = 12345678        # optional: the contract's deployment block (where log scans start)
//   anchor_every = 100           # optional: offer anchors its ledger head every N entries
//   anchor_interval = "1h"       # optional: ... and/or this often (90s, 10m, 2h, 1d)
// Unknown keys and malformed values are errors naming the file and key.
//
// Functions touch only the files named; any thread (not concurrently on one folder).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "chain/address.h"
#include "chain/secp256k1_key.h"

namespace gpugrid::chain {

std::string wallet_key_path(const std::string& data_dir);

expected<secret_key> load_wallet_key(const std::string& path);
// Fails if `path` exists unless `replace`.
status save_wallet_key(const secret_key& key, const std::string& path, bool replace = false);
// Loads DIR/wallet.key, creating it (and DIR) when it does not exist.
expected<secret_key> load_or_create_wallet_key(const std::string& data_dir, bool* created = nullptr);
// A fresh key in DIR/wallet.key; the old file is kept as DIR/wallet.key.old-YYYYmmddTHHMMSSZ.
expected<secret_key> rotate_wallet_key(const std::string& data_dir, std::string* old_path = nullptr);

struct chain_settings {
  std::string rpc;
  std::optional<address> contract;
  std::optional<u256> chain_id;
  std::optional<u256> max_fee_gwei;
  std::optional<unsigned> confirmations;
  std::optional<u256> from_block;
  std::optional<uint64_t> anchor_every;
  std::optional<std::chrono::seconds> anchor_interval;
  std::string source;  // DIR/chain.toml when it was read
};

// config.toml's [chain], DIR/chain.toml and the environment (GPUGRID_CHAIN_*), later ones
// winning. A missing file is no settings.
expected<chain_settings> load_chain_settings(const std::string& data_dir);

}  // namespace gpugrid::chain
