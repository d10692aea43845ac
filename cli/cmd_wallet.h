// gpugrid wallet: the secp256k1 wallet and the payment channels on an EVM chain (chain/).
// Its flags and handler, for the one entry in the command table (cli/command_table.cc).
#pragma once

#include <string>

#include "cli/command_table.h"

namespace gpugrid::cli {

struct wallet_options {
  std::string action;        // show | new | balance | deposit | withdraw | channels | voucher | redeem
  std::string chain_rpc;
  std::string contract;
  std::string chain_id;
  std::string max_fee_gwei;
  int confirmations = -1;    // < 0: chain.toml, else 1
  std::string provider;
  std::string amount;
  std::string channel;
  std::string nonce;
  std::string voucher;       // FILE or - (redeem)
  std::string who;           // --address (balance, channels)
  long long timeout_s = 7 * 24 * 3600;
  double rpc_timeout_s = 10;
  double wait_s = 120;       // for a sent transaction's receipt
  std::string data_dir;
  bool json = false;
};

// Flags are bound into wallet_flags' own options (one dispatch at a time: the table's rule).
void wallet_flags(CLI::App& sub, parsed_options& o);
int run_wallet(const invocation& inv);
int wallet_command(const wallet_options& o, std::FILE* out, std::FILE* err);

}  // namespace gpugrid::cli
