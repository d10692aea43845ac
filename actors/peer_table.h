// What a node knows about the grid: peers by key, with where to reach them, what they offer,
// how fast they answer and when they were last heard from. Discovery fills it from bootstrap
// peers and gossip (peer exchange); heartbeats refresh it; silent peers are evicted.
//
// Hostile gossip is contained by three rules: the table is bounded (max_peers), one gossiping
// peer can introduce at most max_per_source peers that nobody has reached yet, and a node only
// passes on (gossip()) peers it has itself completed a handshake with ("reached"), so a list of
// fake addresses stops at the first node that hears it. When the table is full, a peer reached
// directly takes the place of the oldest unreached one; unreached newcomers are dropped.
// Plain logic with an explicit clock, so tests drive time. Not thread-safe: one actor owns it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "actors/messages.h"

namespace gpugrid::grid {

struct peer_record {
  key32 key{};
  std::string url;
  provider_info info;           // devices, price, slots, ledger head (from its Hello)
  bool is_provider = false;
  int64_t last_seen_ms = 0;     // last message from it (or, for gossip, when the gossiper saw it)
  int64_t rtt_ms = -1;          // last measured ping round trip
  int missed_pings = 0;
  bool direct = false;          // a live connection to it now
  bool reached = false;         // we completed a handshake with it at least once
  key32 source{};               // who told us of it (our own key once reached)
};

struct gossip_entry {
  key32 key{};
  std::string url;
  int64_t last_seen_ms = 0;
  bool is_provider = true;
};

struct peer_table_limits {
  size_t max_peers = 4096;        // everyone the table holds
  size_t max_per_source = 256;    // unreached peers one gossiper may introduce
};

class peer_table {
 public:
  explicit peer_table(key32 self, peer_table_limits limits = {}) : self_(self), limits_(limits) {}

  // A peer we talked to directly (handshake done): its own Hello is authoritative.
  void heard_from(const key32& key, const std::string& url, const provider_info& info, bool is_provider, int64_t now_ms);
  void record_rtt(const key32& key, int64_t rtt_ms, int64_t now_ms);
  void missed_ping(const key32& key);
  // Our direct connection to it closed: from now on only gossip keeps it alive.
  void lost(const key32& key);
  // Peers `source` told us about; returns the ones that were new and kept (to connect to).
  std::vector<gossip_entry> merge_gossip(const std::vector<gossip_entry>& entries, int64_t now_ms,
                                         const key32& source = key32{});
  // What we tell others: the peers we reached ourselves and heard from within max_age_ms
  // (ourselves excluded).
  std::vector<gossip_entry> gossip(int64_t now_ms, int64_t max_age_ms) const;
  // Drops peers silent for longer than timeout_ms or with too many missed pings; returns them.
  std::vector<key32> evict(int64_t now_ms, int64_t timeout_ms, int max_missed);

  const peer_record* find(const key32& key) const;
  std::vector<peer_record> providers() const;
  std::vector<peer_record> all() const;
  size_t size() const { return peers_.size(); }
  // Unreached peers introduced by `source`.
  size_t from_source(const key32& source) const;

 private:
  void erase(std::map<key32, peer_record>::iterator it);
  bool make_room();  // drops the oldest unreached peer; false when every peer is reached

  key32 self_;
  peer_table_limits limits_;
  std::map<key32, peer_record> peers_;
  std::map<key32, size_t> per_source_;  // unreached peers by who introduced them
};

}  // namespace gpugrid::grid
