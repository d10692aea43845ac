// The grid's job messages as plain C++ structs. Actors exchange them inside a process; the
// wire layer (net/) converts them to and from FlatBuffers for peers on the network, so no
// other part of the program sees generated code.
#pragma once

#include <atomic>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/tensor.h"
#include "ledger/receipt.h"
#include "ledger/voucher_claim.h"

namespace gpugrid::grid {

using key32 = ledger::key32;
using digest32 = ledger::digest32;
using sig64 = ledger::sig64;
using job_id = std::array<uint8_t, 16>;

// A node's signing key pair (libsodium Ed25519: 32-byte public, 64-byte secret).
struct keypair {
  key32 public_key{};
  std::array<uint8_t, 64> secret_key{};
  static keypair generate();
};

struct device_summary {
  std::string name;             // "NVIDIA H100 80GB HBM3" or "CPU (16 threads)"
  std::string kind;             // "cuda" | "cpu"
  int64_t memory_bytes = 0;
  int cc_major = 0, cc_minor = 0;
  double gflops = 0;            // measured throughput
};

struct provider_info {
  key32 key{};
  std::string url;              // "" for an in-process provider
  std::vector<device_summary> devices;
  double price_per_gflop = 0;
  int slots = 1;
  ledger::digest32 ledger_head{};
  uint64_t ledger_count = 0;
};

struct bid_request {
  job_id job{};
  key32 client{};
  digest32 model_hash{};
  int64_t model_bytes = 0;
  double gflops = 0;            // the model's estimated work for one run
  int64_t input_bytes = 0;
  double max_price = -1;        // < 0: no limit
};

enum class decline_reason : uint8_t { none = 0, busy, unsupported, too_big, too_cheap, draining, internal };
const char* to_string(decline_reason r);

struct bid_reply {
  job_id job{};
  key32 provider{};
  bool accepted = false;
  double price = 0;
  int64_t eta_ms = 0;
  bool model_cached = false;
  decline_reason reason = decline_reason::none;
  std::string detail;
  // A remote provider's bid signature (net::bid_statement); checked only for the bids the client
  // picks, so a large auction costs one verification per award instead of one per bid.
  std::optional<sig64> signature;
  int64_t valid_ms = 0;
  // A provider paid on a chain: where and what to pay (actors/payment.h). None: credits.
  std::optional<ledger::chain_terms> terms;
  // Jobs the provider runs or queues at once (provider_core::queue_limit); more are refused
  // busy. 0: not said (a provider of an earlier version).
  int32_t capacity = 0;
};

struct execute_request {
  job_id job{};
  key32 client{};
  digest32 model_hash{};
  std::shared_ptr<const std::string> model_bytes;  // set only when the provider lacks the model
  std::shared_ptr<const std::string> model_source; // the client's copy, for a provider that lost it
  std::vector<tensor> inputs;                      // in the model's input order
  digest32 input_digest{};
  double price = 0;                                // the awarded price
  int64_t started_ms = 0;
  std::optional<ledger::voucher_claim> voucher;    // the payment, for a bid with chain terms
  // Provider side: set (by the node) when the client went away or the job was handed back;
  // the run stops at the next node. Null: never cancelled.
  std::shared_ptr<std::atomic<bool>> cancel;
};

struct execute_result {
  job_id job{};
  key32 provider{};
  bool ok = false;
  std::string error;
  bool error_is_input = false;      // the job itself is bad (wrong shape...): no failover
  error_kind failure_kind = error_kind::ok;  // what kind of failure, when !ok
  std::vector<tensor> outputs;
  digest32 output_digest{};
  sig64 result_sig{};               // provider's signature over ledger::result_statement
  ledger::receipt receipt;          // payment receipt signed by the provider
  double compute_ms = 0;
  bool model_was_cached = false;
};

// Messages between actors travel as shared pointers to immutable structs.
using bid_request_ptr = std::shared_ptr<const bid_request>;
using bid_reply_ptr = std::shared_ptr<const bid_reply>;
using execute_request_ptr = std::shared_ptr<const execute_request>;
using execute_result_ptr = std::shared_ptr<const execute_result>;
using provider_info_ptr = std::shared_ptr<const provider_info>;
using receipt_ptr = std::shared_ptr<const ledger::receipt>;

// Digests bind receipts to the exact tensors: BLAKE2b-256 over each tensor's dtype code,
// rank, dims and bytes, in order.
digest32 tensors_digest(const std::vector<tensor>& tensors);
job_id new_job_id();
int64_t unix_ms();
std::string short_hex(const key32& key);  // the node id ("gg" + 32), as every message shows it

}  // namespace gpugrid::grid
