#include "actors/gossip.h"

#include <algorithm>

namespace gpugrid::grid {

std::vector<gossip_entry> choose_dials(const std::vector<gossip_entry>& fresh, const dial_budget& b,
                                       const std::function<bool(const gossip_entry&)>& skip) {
  std::vector<gossip_entry> out;
  for (const auto& e : fresh) {
    size_t dialing = b.dialing + out.size();
    if (dialing >= b.max_concurrent) break;
    if (skip && skip(e)) continue;
    if (b.offering) {
      if (b.outbound + dialing >= b.max_neighbors) break;
    } else {
      if (!e.is_provider) continue;
      if (b.providers + dialing >= b.max_providers) break;
    }
    out.push_back(e);
  }
  return out;
}

std::vector<net::peer_exchange> page_gossip(const std::vector<gossip_entry>& all, size_t page_size) {
  page_size = std::max<size_t>(1, page_size);
  std::vector<net::peer_exchange> pages;
  for (size_t i = 0; i < all.size() || pages.empty(); i += page_size) {
    net::peer_exchange px;
    for (size_t j = i; j < std::min(all.size(), i + page_size); ++j) {
      const gossip_entry& g = all[j];
      net::peer_info pi;
      pi.node_key = g.key;
      pi.url = g.url;
      pi.last_seen_ms = g.last_seen_ms;
      pi.role = g.is_provider ? net::node_role::provider : net::node_role::client;
      px.peers.push_back(std::move(pi));
    }
    pages.push_back(std::move(px));
    if (all.empty()) break;
  }
  return pages;
}

}  // namespace gpugrid::grid
