// Generation on the grid for `gpugrid generate` and `gpugrid chat`: providers found through
// the bootstrap peers, or, with none, an embedded local grid (an in-process provider reached
// through the same session protocol: bids, streamed frames, receipts, spot checks).
//
// The back end holds what a grid client needs for its lifetime (actor system, node, ledger,
// reputation, receipt outbox) and is used from one thread. Failures: invalid_input for a
// folder that cannot be read or sent, no_provider (exit 3) when nobody bids or every provider
// failed, verification (exit 4) when the answer's tokens fail a spot check or a redundant run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "actors/generation_client.h"
#include "actors/generation_host.h"
#include "actors/payment.h"
#include "base/status.h"
#include "llm/generation.h"
#include "net/identity.h"

namespace gpugrid::cli {

struct grid_generation_options {
  std::string model_dir;
  std::vector<std::string> peers;   // empty: the embedded local grid
  std::string data_dir;
  std::string device = "cpu";       // the embedded provider's and local scoring's device
  int threads = 0;
  int redundancy = 1;
  double max_price_prompt = -1;     // per 1000 tokens; < 0: no limit
  double max_price_generated = -1;
  double timeout_s = 300;           // first token (uploads, model load, prefill)
  double stall_timeout_s = 10;      // a provider silent this long mid-answer is left
  double spot_check_rate = 0.05;    // floor of the adaptive rate (K = 1)
  bool score_locally = true;        // spot checks score on this machine; false: another provider scores
};

// The grid back end. `note` gets one line for the user about where the tokens come from.
expected<std::unique_ptr<llm::completion_backend>> make_grid_completion_backend(const grid_generation_options& o,
                                                                              std::string* note);

// What `gpugrid offer` hosts generation sessions with: folders stored under
// <data_dir>/generation (files of at most max_model_bytes each), prices from --price (per 1000
// generated tokens: the price per GFLOP; per 1000 prompt tokens: a tenth of it), KV caches and
// loaded folders within max_memory_bytes (0: no limit), `slots` answers at once.
struct offer_generation_settings {
  std::string data_dir;
  double price_per_gflop = 0;
  int64_t max_model_bytes = int64_t{1} << 30;
  int64_t max_memory_bytes = 0;
  int slots = 1;
  std::string device = "cpu";
  int threads = 0;
  // Paid on a chain: bids announce its terms and each session is paid per token (null: credits).
  std::shared_ptr<grid::payment_gate> payment;
};
expected<std::shared_ptr<grid::generation_host>> make_offer_generation_host(const net::identity& id,
                                                                           const offer_generation_settings& s);

// Test seam: the gpugrid-faulty test binary wraps the engine loader of `offer` to misbehave.
using generation_loader_wrapper = std::function<grid::gen_engine_loader(grid::gen_engine_loader)>;
generation_loader_wrapper& offer_generation_wrapper();
// Test seam: the gpugrid-faulty test binary wraps each provider link of `generate` (for a
// client that stops paying: its GenPay frames are dropped).
using generation_peer_wrapper = std::function<grid::gen_peer(grid::gen_peer)>;
generation_peer_wrapper& client_generation_peer_wrapper();

}  // namespace gpugrid::cli
