// Receipts: what a paid job leaves behind, signed by both sides.
//
// A receipt's canonical bytes are a fixed little-endian layout (see receipt.cc), so every node
// hashes and signs exactly the same bytes. The provider signs the body when it returns the
// result; the client countersigns the body plus the provider's signature on acceptance.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace gpugrid::ledger {

using key32 = std::array<uint8_t, 32>;
using digest32 = std::array<uint8_t, 32>;
using sig64 = std::array<uint8_t, 64>;

enum class receipt_kind : uint8_t {
  payment = 1,  // an accepted result: the client owes the provider `price`
  dispute = 2,  // a result that lost verification: evidence, no payment
  // Tokens of a generation session: the client owes `price` for them. input_digest holds the
  // token terms (token_terms below) instead of an input digest; output_digest is the digest of
  // the token stream the provider signed (net::gen_stream_digest).
  generation = 3,
};
const char* to_string(receipt_kind k);  // "payment", "dispute", "generation"

// The token counts and per-1000-token prices of a generation receipt, as four little-endian
// int64 in the receipt's input_digest field (so a receipt keeps its fixed size).
struct token_terms {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t prompt_micros_per_1k = 0;     // price per 1000 prompt tokens, millionths of a credit
  int64_t generated_micros_per_1k = 0;
  digest32 pack() const;
  static token_terms unpack(const digest32& d);
  // The price of these tokens: counts times prices, rounded to the nearest micro-credit.
  int64_t price_micros() const;
};

struct receipt {
  receipt_kind kind = receipt_kind::payment;
  std::array<uint8_t, 16> job_id{};
  key32 client_key{};
  key32 provider_key{};
  digest32 model_hash{};
  digest32 input_digest{};
  digest32 output_digest{};    // for a dispute: the provider's (wrong) signed digest
  int64_t price_micros = 0;    // price in millionths of a credit
  int64_t started_ms = 0;      // Unix time, milliseconds
  int64_t finished_ms = 0;
  sig64 provider_sig{};        // payment: over body_bytes(); dispute: over result_statement()
  sig64 client_sig{};          // over body_bytes() + provider_sig

  // The signed part: everything but the two signatures.
  std::string body_bytes() const;
  // body_bytes() + provider_sig + client_sig.
  std::string canonical_bytes() const;
  static expected<receipt> parse(const std::string& canonical, const std::string& what);
};

// Fixed size of canonical_bytes().
constexpr size_t receipt_size = 8 + 1 + 16 + 32 * 5 + 8 * 3 + 64 * 2;
// Where the job id and the provider key sit in canonical_bytes() (for readers that look
// receipts up in place).
constexpr size_t receipt_job_id_at = 8 + 1;
constexpr size_t receipt_provider_at = 8 + 1 + 16 + 32;
// Whether receipt_size bytes would parse as a receipt (its magic and a known kind).
bool is_receipt_bytes(const char* bytes);

digest32 blake2b_256(const std::string& bytes);
bool verify_signature(const key32& key, const std::string& message, const sig64& sig);
std::string to_hex(const uint8_t* data, size_t n);
template <size_t N> std::string to_hex(const std::array<uint8_t, N>& a) { return to_hex(a.data(), N); }

// What a provider signs when it returns a result: binds its key to the job and output digest.
// A wrong result with this signature is evidence (kept in a dispute receipt).
std::string result_statement(const std::array<uint8_t, 16>& job_id, const digest32& output_digest);

// Signs a receipt as the provider / as the client with a libsodium Ed25519 secret key (64 bytes).
void sign_as_provider(receipt& r, const std::array<uint8_t, 64>& secret_key);
void sign_as_client(receipt& r, const std::array<uint8_t, 64>& secret_key);
// Checks both signatures; names the one that fails.
status verify_receipt(const receipt& r);
// Checks the provider's signature only (what a client checks before it countersigns).
status verify_provider_signature(const receipt& r);
// Checks the client's countersignature only (what a provider checks on a receipt it issued).
status verify_client_signature(const receipt& r);
// Whether the provider's signature on `r` is the one `secret_key` makes: what a provider checks
// on a receipt it issued. Ed25519 signatures are deterministic, so signing again and comparing
// is as sound as verifying and costs a third as much.
bool provider_signature_is(const receipt& r, const std::array<uint8_t, 64>& secret_key);

}  // namespace gpugrid::ledger
