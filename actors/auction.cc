#include "actors/auction.h"

#include <algorithm>
#include <cmath>

namespace gpugrid::grid {

double quote_price(const price_policy& p, double gflops, int busy_slots, int slots) {
  double load = slots > 0 ? static_cast<double>(busy_slots) / slots : 1.0;
  // The load surcharge applies to the floor too, so that tiny jobs also spread over idle providers.
  return std::max(p.minimum, p.price_per_gflop * std::max(gflops, 0.0)) * (1.0 + p.load_factor * load);
}

int64_t estimate_eta_ms(double gflops, double measured_gflops_per_s, int queued_jobs, double overhead_ms) {
  double per_job = overhead_ms + (measured_gflops_per_s > 0 ? 1000.0 * gflops / measured_gflops_per_s : 1000.0);
  return static_cast<int64_t>(std::ceil(per_job * (1 + std::max(queued_jobs, 0))));
}

// ETAs are compared with this much added to both: a few milliseconds of difference between
// two tiny jobs is network noise, not a reason to prefer one provider.
constexpr double kEtaSlackMs = 20.0;

std::vector<bid_offer> rank_bids(std::vector<bid_offer> bids, const choice_options& o) {
  std::vector<bid_offer> ok;
  for (auto& b : bids) {
    if (o.max_price >= 0 && b.price > o.max_price) continue;
    if (b.reputation < o.min_reputation) continue;
    if (!std::isfinite(b.price) || b.price < 0 || b.eta_ms < 0) continue;
    ok.push_back(b);
  }
  if (ok.empty()) return ok;
  double cheapest = ok[0].price, fastest = static_cast<double>(ok[0].eta_ms);
  for (auto& b : ok) { cheapest = std::min(cheapest, b.price); fastest = std::min(fastest, static_cast<double>(b.eta_ms)); }
  auto score = [&](const bid_offer& b) {
    double s = o.w_price * (cheapest > 0 ? b.price / cheapest : (b.price > 0 ? 2.0 : 1.0)) +
               o.w_eta * (static_cast<double>(b.eta_ms) + kEtaSlackMs) / (fastest + kEtaSlackMs) +
               o.w_distrust * (1.0 - b.reputation);
    if (b.model_cached) s -= o.cache_bonus;
    return s;
  };
  std::stable_sort(ok.begin(), ok.end(), [&](const bid_offer& a, const bid_offer& b) { return score(a) < score(b); });
  return ok;
}

}  // namespace gpugrid::grid
