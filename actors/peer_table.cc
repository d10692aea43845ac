#include "actors/peer_table.h"

#include <algorithm>

namespace gpugrid::grid {

void peer_table::heard_from(const key32& key, const std::string& url, const provider_info& info, bool is_provider,
                            int64_t now_ms) {
  if (key == self_) return;
  auto found = peers_.find(key);
  if (found == peers_.end()) {
    // A peer we reached counts more than one we only heard of; the table never grows past its
    // bound unless every entry was reached directly (bounded by the connection limits).
    if (peers_.size() >= limits_.max_peers) make_room();
  } else if (!found->second.reached) {
    auto s = per_source_.find(found->second.source);
    if (s != per_source_.end() && s->second > 0 && --s->second == 0) per_source_.erase(s);
  }
  peer_record& p = peers_[key];
  p.key = key;
  p.reached = true;
  p.source = self_;
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

std::vector<gossip_entry> peer_table::merge_gossip(const std::vector<gossip_entry>& entries, int64_t now_ms,
                                                   const key32& source) {
  std::vector<gossip_entry> fresh;
  for (const auto& e : entries) {
    if (e.key == self_ || e.url.empty()) continue;
    // A gossiped time from the future is clamped: nobody can keep a dead peer alive by lying.
    int64_t seen = std::min(e.last_seen_ms, now_ms);
    auto it = peers_.find(e.key);
    if (it == peers_.end()) {
      size_t& mine = per_source_[source];
      if (mine >= limits_.max_per_source || peers_.size() >= limits_.max_peers) {
        if (mine == 0) per_source_.erase(source);
        continue;
      }
      ++mine;
      peer_record p;
      p.key = e.key;
      p.url = e.url;
      p.last_seen_ms = seen;
      p.is_provider = e.is_provider;
      p.source = source;
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
    if (p.reached && !p.url.empty() && now_ms - p.last_seen_ms <= max_age_ms) out.push_back({k, p.url, p.last_seen_ms, p.is_provider});
  return out;
}

std::vector<key32> peer_table::evict(int64_t now_ms, int64_t timeout_ms, int max_missed) {
  std::vector<key32> gone;
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (now_ms - it->second.last_seen_ms > timeout_ms || it->second.missed_pings > max_missed) {
      gone.push_back(it->first);
      auto next = std::next(it);
      erase(it);
      it = next;
    } else {
      ++it;
    }
  }
  return gone;
}

void peer_table::erase(std::map<key32, peer_record>::iterator it) {
  if (!it->second.reached) {
    auto s = per_source_.find(it->second.source);
    if (s != per_source_.end() && s->second > 0 && --s->second == 0) per_source_.erase(s);
  }
  peers_.erase(it);
}

bool peer_table::make_room() {
  auto oldest = peers_.end();
  for (auto it = peers_.begin(); it != peers_.end(); ++it)
    if (!it->second.reached && (oldest == peers_.end() || it->second.last_seen_ms < oldest->second.last_seen_ms)) oldest = it;
  if (oldest == peers_.end()) return false;
  erase(oldest);
  return true;
}

size_t peer_table::from_source(const key32& source) const {
  auto it = per_source_.find(source);
  return it == per_source_.end() ? 0 : it->second;
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
