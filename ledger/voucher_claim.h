// A payment voucher as the grid carries it: with a job (client -> provider), in ledger entries
// (so a crash loses no claim) and in bids (the terms a provider on a chain takes). Plain bytes
// in fixed layouts, so the ledger and the wire need no chain code; chain/voucher_check.h reads
// them as EIP-712 vouchers (chain/voucher.h) and checks them.
//
// voucher_claim::pack() layout (claim_size = 245 bytes, integers 32-byte big-endian):
//   chain id | contract (20) | channel | cumulative amount | nonce | r (32) | s (32) |
//   recovery id (1: 0 or 1) | price of this job in the chain's base unit (wei)
// chain_terms::pack() layout (terms_size = 104 bytes):
//   chain id | contract (20) | payee address (20) | price of the job in wei
// Values; any thread. unpack() fails with invalid_input naming `what` on a wrong size or a
// recovery id other than 0 or 1.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace gpugrid::ledger {

using word32 = std::array<uint8_t, 32>;   // a 256-bit unsigned integer, big-endian
using addr20 = std::array<uint8_t, 20>;

struct voucher_claim {
  word32 chain_id{};
  addr20 contract{};
  word32 channel{};
  word32 amount{};       // cumulative: everything owed on the channel so far
  word32 nonce{};
  word32 r{}, s{};
  uint8_t v = 0;         // recovery id
  word32 price{};        // what this voucher added for this job

  std::string pack() const;
  static expected<voucher_claim> unpack(const std::string& bytes, const std::string& what);
  bool operator==(const voucher_claim& o) const { return pack() == o.pack(); }
};
constexpr size_t claim_size = 32 + 20 + 32 * 3 + 32 * 2 + 1 + 32;

struct chain_terms {
  word32 chain_id{};
  addr20 contract{};
  addr20 payee{};        // the provider's wallet (the channel's provider)
  word32 price{};        // in wei

  std::string pack() const;
  static expected<chain_terms> unpack(const std::string& bytes, const std::string& what);
  bool operator==(const chain_terms& o) const { return pack() == o.pack(); }
};
constexpr size_t terms_size = 32 + 20 + 20 + 32;

// A big-endian word as a number, saturating at 2^128 - 1 (sums of job prices fit far below).
unsigned __int128 word_value(const word32& w);
word32 word_of(unsigned __int128 v);
// Decimal digits of v.
std::string decimal(unsigned __int128 v);

}  // namespace gpugrid::ledger
