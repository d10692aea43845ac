// The gossip side of discovery as plain functions: which gossiped peers a node dials now, and
// how what it tells a neighbour is cut into PeerExchange pages. The peer table
// (actors/peer_table.h) decides what is known and may be passed on; the DHT
// (discovery/dht.h) answers lookups; the node (actors/node.cc) only connects them to its
// connections and timers.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "actors/peer_table.h"
#include "net/messages.h"

namespace gpugrid::grid {

// The node's connection budget when gossip brings news.
struct dial_budget {
  bool offering = false;          // a provider keeps neighbours of any kind; a client only providers
  size_t dialing = 0;             // dials in flight
  size_t max_concurrent = 16;     // dials in flight at most (addresses that never answer cannot hold up discovery)
  size_t outbound = 0;            // provider: connections it dialed
  size_t max_neighbors = 8;       // provider: outbound connections wanted
  size_t providers = 0;           // client: provider connections
  size_t max_providers = 64;      // client: provider connections wanted
};

// The fresh entries to dial now, in order, within the budget; `skip` says which to leave
// alone (connected already, tried already, a relay that refused).
std::vector<gossip_entry> choose_dials(const std::vector<gossip_entry>& fresh, const dial_budget& b,
                                       const std::function<bool(const gossip_entry&)>& skip);

// Entries as PeerExchange messages of at most page_size peers each (at least one message,
// empty when there is nothing to tell).
std::vector<net::peer_exchange> page_gossip(const std::vector<gossip_entry>& all, size_t page_size);

}  // namespace gpugrid::grid
