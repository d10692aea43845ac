// A grid node on the network: the WebSocket transport, discovery (bootstrap, gossip,
// heartbeats, eviction), the provider service when offering, and proxies that make remote
// providers look like the in-process provider actor to the client (actors/client.h).
//
// One CAF actor owns the node's state; the transport's I/O threads feed it through
// net/actor_bridge.h. Discovery: every connection starts with both sides sending their
// PeerExchange; every gossip interval a node sends its list to a few random neighbours; a node
// keeps up to max_neighbors outbound connections for gossip, and a client dials every provider
// it learns of (up to max_providers) because it bids with them. Peers heard of only through
// gossip are evicted when nobody has seen them for peer_timeout.
//
// Provider service: BidRequest -> the provider actor -> a signed Bid or a BidDecline;
// ModelPut/ModelChunk -> reassembled and hash-checked per connection; Execute -> a worker of the
// provider actor (never the scheduler's threads) -> Result or JobError; Receipt -> the
// provider's ledger. Draining (SIGINT/SIGTERM) declines new bids and waits for running jobs.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/client.h"
#include "actors/generation_client.h"
#include "actors/peer_table.h"
#include "base/status.h"
#include "discovery/dht.h"
#include "net/identity.h"
#include "net/relay.h"
#include "net/transport.h"

namespace gpugrid::grid {

class provider_core;
class generation_host;

// The actor system settings the grid runs with: `threads` scheduler threads (the heavy work
// runs on detached workers and I/O threads), and workers that block on their queue when idle
// instead of CAF's default 50 us sleep-polling, which adds up to a sleep per message hop.
void configure_actor_system(caf::actor_system_config& cfg, int threads = 2);

// A node identity as the key pair that signs its bids, results and receipts.
keypair keypair_of(const net::identity& id);

struct node_options {
  std::vector<std::string> bootstrap;      // peer URLs to dial first
  std::string listen;                      // "HOST:PORT" to accept peers on; "" for a client
  std::string tls_cert, tls_key;           // wss:// when both are set
  std::shared_ptr<provider_core> provider; // set: this node offers its device
  std::string software = "gpugrid";
  int max_neighbors = 8;                   // outbound gossip connections kept
  size_t max_providers = 64;               // a client dials at most this many providers
  // Provider: bytes of model uploads held at once over all connections (arriving or awaiting
  // their Execute); 0: twice the provider's model size limit. Each connection may also have at
  // most one model's worth announced, and a finished upload waits at most 30 s for its Execute.
  int64_t max_upload_bytes = 0;
  std::chrono::milliseconds gossip_interval{500};
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds peer_timeout{15000};
  // Node events as one JSON object per line (peer_up, job_done, job_failed, ...); called on
  // an actor thread, must not block for long.
  std::function<void(const std::string&)> on_event;
  // Client: progress of model uploads (provider node id, bytes written so far, total), about
  // four times a second while one runs and once at the end; from an actor thread.
  std::function<void(const std::string& provider, uint64_t sent, uint64_t total)> on_upload_progress;
  // Client: the model `run` will send (BLAKE2b-256 of its bytes). When the peer table holds more
  // than dht_lookup_above peers (0: max_providers), settle() also looks up the model's
  // providers in the DHT, then providers in general if that finds fewer than 8, and dials them.
  std::optional<std::array<uint8_t, 32>> wanted_model;
  size_t dht_lookup_above = 0;
  bool session_mac = true;                 // MACs per frame instead of Ed25519 (bids, results
                                           // and receipts are signed inside either way)
  // Provider: hosts generation sessions (GenOpen, GenPrompt, Cancel; file uploads tagged with a
  // session id go to its folder store).
  std::shared_ptr<generation_host> generation;
  // Client: generation frames (GenBid, GenTokens, and BidDecline/JobError naming an open
  // session) go to this inbox, and so does the loss of a provider's connection.
  std::shared_ptr<grid::generation_inbox> inbox;
  // Reachability and relays (net/relay.h, README "Offering from behind NAT"). A node with a
  // listen address asks the peers it dials to dial it back; once one could, it is reachable;
  // once one could not (and none could), it is behind NAT and attaches to relays: via_relays,
  // else up to two peers that announce relay service. It then announces the relayed address of
  // the first relay that took it, and moves to another when that relay goes away.
  bool relay = false;                      // serve circuits for providers behind NAT
  net::relay_options relay_options;
  std::vector<std::string> via_relays;     // relay URLs to attach to when behind NAT
  bool dial_back = true;                   // ask peers to dial this node back
  // Client: a file (DATA_DIR/slow-dials.tsv) naming peers learned by gossip whose dial had not
  // answered when an earlier settle() returned (a stopped process whose kernel still accepts
  // the connection, a black-holed address). For 10 minutes settle() does not wait for them:
  // they are dialed in the background and used if they answer. Empty: nothing remembered.
  std::string slow_dials_file;
};

// What `peers` shows about one peer.
struct peer_view {
  peer_record record;
  bool connected = false;
  std::string node_id;
  double rtt_ms = -1;           // the last ping's round trip on a live connection, else the table's
};

class grid_node {
 public:
  // Starts the actor and the transport, listens when options.listen is set and dials the
  // bootstrap peers (asynchronously). Fails when the address cannot be bound or TLS files
  // cannot be loaded.
  static expected<std::unique_ptr<grid_node>> start(caf::actor_system& sys, const net::identity& self,
                                                    node_options options);
  ~grid_node();
  grid_node(const grid_node&) = delete;
  grid_node& operator=(const grid_node&) = delete;

  // The URL peers reach this node at ("" for a client).
  std::string url() const;
  std::string node_id() const;

  // Waits until discovery settles — every bootstrap dial answered or failed, each bootstrap
  // sent its peer list, and every provider learned of is connected or failed — or until
  // `limit` passes. Returns the bootstrap failures (one line each).
  std::vector<std::string> settle(std::chrono::milliseconds limit);
  // Looks up to `want` providers up in the DHT (discovery/dht.h) under `key` that pass `filter`
  // and dials them; waits at most `limit` for the lookup and the dials. Returns the verified
  // records found (cheapest first); empty when the DHT found none or has no contacts yet.
  std::vector<discovery::provider_record> find_providers(const discovery::dht_key& key,
                                                         const discovery::provider_filter& filter, size_t want,
                                                         std::chrono::milliseconds limit);
  // Connected providers, as actors that take the provider messages (actors/atoms.h).
  std::vector<provider_handle> providers();
  // Connected providers as generation peers: messages and file uploads go over their
  // connections (both block the caller while the send queue is full, so call them from a
  // client thread, never from an actor).
  std::vector<gen_peer> generation_peers();
  // Everyone this node knows of.
  std::vector<peer_view> peers();
  size_t known_peers() const;
  // Pings every connection; round trips show up in peers() once the pongs are back.
  void ping_all();

  // Provider: stop taking bids, wait up to `grace` for running jobs (or until `hurry` returns
  // true; it is polled every 10 ms), then hand back the rest: their clients get a JobError
  // (draining) and fail over at once. Returns the number of jobs handed back.
  int drain(std::chrono::milliseconds grace, const std::function<bool()>& hurry = nullptr);
  // Prometheus text for GET /metrics.
  std::string metrics_text() const;
  net::transport_metrics transport_metrics() const;
  // Reachability as found so far: "unknown", "reachable" or "behind_nat"; and the address peers
  // are told to reach this node at (the relayed address behind NAT; "" while none).
  std::string reachability() const;
  std::string announced_url() const;
  // The address this node takes DHT queries at and files its provider records under: its
  // relayed URL behind NAT; "" when it takes part as a client only.
  std::string dht_address() const;
  // This node's relay service, if it runs one (counters for tests and metrics).
  std::optional<net::relay_counters> relay_counters() const;
  // Closes every connection and stops the actor. Idempotent.
  void stop();

  struct impl;

 private:
  explicit grid_node(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

}  // namespace gpugrid::grid
