// A simulated network for the DHT: thousands of real `dht` objects (discovery/dht.h) in one
// process, driven by a discrete-event loop with per-link delay, message loss and churn.
//
// Every node is a provider in server mode with a fresh Ed25519 identity; it announces itself
// under the general providers key, its device class and the 1-3 models it has cached (drawn
// from a Zipf-like popularity), and records are signed and verified for real. Churn replaces a
// node by a new one (new identity, new models, joining through 3 random live nodes); what the
// old one stored and announced stays until it expires. Clients look up providers by model, by
// device class under a price cap, or in general: half of them are fresh client-mode nodes
// that start from 3 random live nodes (a `gpugrid run` starting cold), half are server nodes
// with a warm routing table. A dead node never answers (its requests time out), which is the
// slow case for a real transport too.
//
// Single-threaded and deterministic for a given seed. Message sizes are discovery's wire
// estimate (estimate_wire_bytes), which tracks the codec's frames.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "discovery/dht.h"

namespace gpugrid::discovery {

struct sim_config {
  size_t nodes = 1000;
  size_t models = 300;                  // distinct models; each provider caches 1-3
  int64_t join_window_ms = 60 * 1000;   // nodes join spread over this window
  int64_t warmup_ms = 10 * 60 * 1000;   // after the join window, before measuring
  int64_t measure_ms = 10 * 60 * 1000;
  int64_t min_access_ms = 5, max_access_ms = 60;  // per-node access delay; a link is the sum of two
  double loss = 0.01;                   // per message
  double churn_per_min = 0.01;          // share of nodes replaced per minute (0.01: mean lifetime 100 min)
  double lookups_per_sec = 5;           // client lookups started, over the whole network
  size_t want = 20;                     // providers a client asks for
  uint64_t seed = 1;
  dht_config dht;
};

struct sim_report {
  size_t nodes = 0;
  double measured_min = 0;
  uint64_t lookups = 0, lookups_cold = 0, lookups_timed_out = 0;
  double lookup_ms_p50 = 0, lookup_ms_p90 = 0, lookup_ms_p99 = 0;
  double cold_ms_p50 = 0, warm_ms_p50 = 0;
  double queried_mean = 0;              // queries a lookup sent
  double findable = 0;                  // mean over lookups: live matching providers found / min(want, live matching)
  double full_answers = 0;              // share of lookups that found min(want, live matching) live providers
  double stale_share = 0;               // returned records whose provider was already gone
  double msgs_per_node_min = 0, bytes_per_node_min = 0;
  double stored_records_mean = 0, table_size_mean = 0;
  uint64_t churned = 0;
  double wall_s = 0;
  std::string to_text() const;
};

// Runs the whole simulation. `progress` (optional) gets a line now and then.
sim_report run_simulation(const sim_config& cfg, const std::function<void(const std::string&)>& progress = nullptr);

// The bytes a message takes on the wire inside a MAC'd envelope (net/codec.h): an estimate of
// the FlatBuffers layout, within a few percent of the codec's frames.
size_t estimate_wire_bytes(const dht_query& q);
size_t estimate_wire_bytes(const dht_reply& r);

}  // namespace gpugrid::discovery
