#include "actors/peer_table.h"

#include <algorithm>

namespace gpugrid::grid {

void peer_table::heard_from(const key32& key, const std::string& url, const provider_info& info, bool is_provider,
                            int64_t now_ms) {
  if (key == self_) return;
  peer_record& p = peers_[key];
  p.key = key;
  if (!url.empty()) p.url = url;
  p.info = info;
  p.is_provider = is_provider;
  p.last_seen_ms = std::max(p.last_seen_ms, now_ms);
  p.missed_pings = 0;
  p.direct = true;
}

void peer_table::record_rtt(const key32& key, int64_t rtt_ms, int64_t now_ms) {
  auto it = peers_.find(key);
  if (it == peers_.end()) return;
  it->second.rtt_ms = rtt_ms;
  it->second.missed_pings = 0;
  it->second.last_seen_ms = std::max(it->second.last_seen_ms, now_ms);
}

void peer_table::missed_ping(const key32& key) {
  auto it = peers_.find(key);
  if (it != peers_.end()) ++it->second.missed_pings;
}

void peer_table::lost(const key32& key) {
  auto it = peers_.find(key);
  if (it != peers_.end()) it->second.direct = false;
}

std::vector<gossip_entry> peer_table::merge_gossip(const std::vector<gossip_entry>& entries, int64_t now_ms) {
  std::vector<gossip_entry> fresh;
  for (const auto& e : entries) {
    if (e.key == self_ || e.url.empty()) continue;
    // A gossiped time from the future is clamped: nobody can keep a dead peer alive by lying.
    int64_t seen = std::min(e.last_seen_ms, now_ms);
    auto it = peers_.find(e.key);
    if (it == peers_.end()) {
      peer_record p;
      p.key = e.key;
      p.url = e.url;
      p.last_seen_ms = seen;
      p.is_provider = e.is_provider;
      peers_[e.key] = p;
      fresh.push_back(e);
    } else if (!it->second.direct) {
      it->second.last_seen_ms = std::max(it->second.last_seen_ms, seen);
      if (it->second.url.empty()) it->second.url = e.url;
    }
  }
  return fresh;
}

std::vector<gossip_entry> peer_table::gossip(int64_t now_ms, int64_t max_age_ms) const {
  std::vector<gossip_entry> out;
  for (const auto& [k, p] : peers_)
    if (!p.url.empty() && now_ms - p.last_seen_ms <= max_age_ms) out.push_back({k, p.url, p.last_seen_ms, p.is_provider});
  return out;
}

std::vector<key32> peer_table::evict(int64_t now_ms, int64_t timeout_ms, int max_missed) {
  std::vector<key32> gone;
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (now_ms - it->second.last_seen_ms > timeout_ms || it->second.missed_pings > max_missed) {
      gone.push_back(it->first);
      it = peers_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

const peer_record* peer_table::find(const key32& key) const {
  auto it = peers_.find(key);
  return it == peers_.end() ? nullptr : &it->second;
}

std::vector<peer_record> peer_table::providers() const {
  std::vector<peer_record> out;
  for (const auto& [k, p] : peers_) if (p.is_provider) out.push_back(p);
  return out;
}

std::vector<peer_record> peer_table::all() const {
  std::vector<peer_record> out;
  for (const auto& [k, p] : peers_) out.push_back(p);
  return out;
}

}  // namespace gpugrid::grid
