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

std::string network_of(const std::string& url) {
  std::string host = url;
  auto scheme = host.find("://");
  if (scheme != std::string::npos) host = host.substr(scheme + 3);
  host = host.substr(0, host.find('/'));
  if (!host.empty() && host[0] == '[') {  // [v6]:port
    host = host.substr(1, host.find(']') - 1);
    std::string out;
    int groups = 0;
    for (size_t i = 0; i < host.size() && groups < 3; ++i) {
      if (host[i] == ':') ++groups;
      if (groups < 3) out += host[i];
    }
    return out;
  }
  host = host.substr(0, host.rfind(':') == std::string::npos ? host.size() : host.rfind(':'));
  int dots = static_cast<int>(std::count(host.begin(), host.end(), '.'));
  bool numeric = !host.empty() && host.find_first_not_of("0123456789.") == std::string::npos;
  if (numeric && dots == 3) return host.substr(0, host.rfind('.'));
  return host;
}

std::vector<bid_offer> diversify(std::vector<bid_offer> b, size_t k) {
  k = std::min(k, b.size());
  if (k < 2) return b;
  auto move_into_set = [&](size_t from, size_t to) {  // the member at `to` drops out of the set
    bid_offer x = b[from];
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(from));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(to), x);
  };
  // Not all new: the best established bid outside takes the last place.
  bool all_new = std::all_of(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(k), [](const bid_offer& o) { return o.is_new; });
  if (all_new)
    for (size_t j = k; j < b.size(); ++j)
      if (!b[j].is_new) {
        move_into_set(j, k - 1);
        break;
      }
  // Not all in one network: the best bid from elsewhere replaces the worst member whose leaving
  // keeps an established provider in the set.
  const std::string net = b[0].network;
  bool one_net = std::all_of(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(k),
                             [&](const bid_offer& o) { return o.network == net; });
  if (one_net)
    for (size_t j = k; j < b.size(); ++j) {
      if (b[j].network == net) continue;
      size_t established = 0;
      for (size_t i = 0; i < k; ++i) established += b[i].is_new ? 0 : 1;
      size_t victim = k - 1;
      while (victim > 0 && !b[victim].is_new && established == 1 && b[j].is_new) --victim;
      std::swap(b[victim], b[j]);
      break;
    }
  return b;
}

}  // namespace gpugrid::grid
