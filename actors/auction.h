// The economics of one job: how a provider prices a bid, and how a client ranks the bids
// it collected. Plain logic, no I/O, so the choices can be tested exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpugrid::grid {

// Provider side: the price of a job of `gflops`, raised with load.
struct price_policy {
  double price_per_gflop = 0.001;   // credits per GFLOP at idle
  double load_factor = 1.0;         // price multiplier grows by load_factor * busy/slots
  double minimum = 0.0001;          // no job is cheaper than this
};
double quote_price(const price_policy& p, double gflops, int busy_slots, int slots);
// Estimated completion time: queue ahead plus the job itself at the measured rate.
int64_t estimate_eta_ms(double gflops, double measured_gflops_per_s, int queued_jobs, double per_job_overhead_ms = 2.0);

struct bid_offer {
  std::string provider;        // node id
  std::string url;
  double price = 0;
  int64_t eta_ms = 0;
  bool model_cached = false;
  double reputation = 0.5;
  bool is_new = false;         // few verified results yet (reputation_book::is_new)
  std::string network;         // network_of(url)
};

// The network a provider URL's host is in, for keeping a redundant set apart: the /24 of an
// IPv4 address, the /48 of an IPv6 one, a host name as is; "" for no URL.
std::string network_of(const std::string& url);

// Reorders ranked bids so that the first k, the redundant set, are neither all new providers
// nor all in one network when other bids allow it; otherwise keeps the rank order. With k < 2
// the bids come back as they are.
std::vector<bid_offer> diversify(std::vector<bid_offer> ranked, size_t k);

struct choice_options {
  double max_price = -1;       // < 0: no limit
  double min_reputation = 0.2;
  // Weights of the score (lower is better): price relative to the cheapest, ETA relative to
  // the fastest, distrust, and a bonus for a cached model (no upload).
  double w_price = 1.0, w_eta = 1.0, w_distrust = 1.0, cache_bonus = 0.25;
};

// Bids that pass max_price and min_reputation, best first. Ties keep the offers' order.
std::vector<bid_offer> rank_bids(std::vector<bid_offer> bids, const choice_options& o);

}  // namespace gpugrid::grid
