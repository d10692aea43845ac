// A Kademlia DHT for finding providers, written as a state machine without I/O.
//
// The same object runs inside `gpugrid offer`/`run` (actors/node.cc feeds it frames from the
// WebSocket transport) and inside the simulator (discovery/simulator.h, thousands of nodes in
// one process). It never reads a clock, a socket or a global random source:
//   inputs   on_query / on_reply (a message from a peer whose id the transport authenticated),
//            on_unreachable (a send failed or a connection went down), tick (time passes),
//            and the operations below, each with the current time in Unix milliseconds;
//   outputs  take_outbox() (messages to send, each to a contact), take_results() (finished
//            lookups), next_deadline() (when tick must be called next at the latest).
//
// Kademlia as in the paper and libp2p: XOR distance over 256-bit node ids, k-buckets (k = 20),
// iterative lookups with alpha = 3 requests in flight converging on the k closest nodes, provider
// records stored at the k closest nodes to their key with an expiry, republished by their
// provider, buckets refreshed by lookups of random ids, unanswered contacts evicted. Nodes with
// no address run in client mode: they query, never store and never enter routing tables.
//
// Bounds: every message (discovery/messages.h) and record (record.h) is validated; the store
// holds at most max_keys keys, max_records_per_key records per key, max_keys_per_source keys per
// provider; a record is accepted only from its own provider, signed, unexpired and living at
// most kMaxRecordTtlMs; lookups, requests in flight and shortlists are capped. A full key
// replaces its record that expires first when the new one expires later (fresh announcements
// rotate in), and a provider's newer record replaces its older one.
//
// Not thread-safe: one owner calls everything (the node's actor, or the simulator's loop).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>
#include <variant>
#include <vector>

#include "discovery/messages.h"
#include "discovery/routing_table.h"

namespace gpugrid::discovery {

struct dht_config {
  size_t k = 20;
  size_t alpha = 3;
  int64_t request_timeout_ms = 2000;
  // A lookup request unanswered this long stops counting against alpha, so one dead or lossy
  // contact does not stall a lookup for the whole timeout (its answer is still taken).
  int64_t slow_request_ms = 500;
  int64_t lookup_timeout_ms = 20000;
  int64_t record_ttl_ms = 15 * 60 * 1000;
  int64_t republish_ms = 5 * 60 * 1000;
  int64_t refresh_ms = 10 * 60 * 1000;
  int64_t stale_contact_ms = 60 * 1000;   // a full bucket pings its oldest when older than this
  size_t max_failures = 2;
  size_t max_keys = 4096;
  size_t max_records_per_key = 128;
  size_t max_keys_per_source = 64;
  size_t max_lookups = 64;
  size_t max_pending = 512;
  size_t max_announcements = 64;
};

// A find_providers filter.
struct provider_filter {
  std::string device_class;   // "": any
  double max_price = -1;      // < 0: any
  bool matches(const provider_record& r) const;
};

// What a provider announces under one key; the dht signs, stores and republishes it.
struct announcement {
  dht_key key{};
  std::vector<std::string> addresses;
  std::string device_class;
  double price = 0;
};

struct outgoing {
  contact to;
  std::variant<dht_query, dht_reply> msg;
};

enum class lookup_purpose : uint8_t { user, announce, refresh, bootstrap };

struct lookup_result {
  uint64_t id = 0;
  query_kind kind = query_kind::find_node;
  lookup_purpose purpose = lookup_purpose::user;
  dht_key target{};
  std::vector<provider_record> records;   // find_providers: verified, filtered, one per provider
  std::vector<contact> closest;           // the closest nodes that answered
  int64_t started_ms = 0, finished_ms = 0;
  size_t queried = 0, failed = 0;
  bool timed_out = false;
};

struct dht_stats {
  uint64_t queries_in = 0, replies_in = 0, queries_out = 0, replies_out = 0;
  uint64_t bad_messages = 0;        // failed validation, unknown request ids, replies from the wrong node
  uint64_t records_stored = 0, records_refused = 0, bad_signatures = 0;
  uint64_t request_timeouts = 0;
  uint64_t lookups_started = 0, lookups_dropped = 0;
  uint64_t stores_acked = 0;
};

class dht {
 public:
  // Signs a record in place with the node's identity (record.provider is set to self already).
  using record_signer = std::function<void(provider_record&)>;

  // `self.address` empty: client mode. `seed` drives refresh ids and jitter only.
  dht(const contact& self, dht_config cfg, record_signer signer, uint64_t seed);

  // ---- inputs ----
  // A query from `from` (id authenticated by the transport; address as the query claims it).
  // Bad input is counted and answered with nothing; returns the reason.
  status on_query(int64_t now, const node_id& from, const dht_query& q);
  status on_reply(int64_t now, const node_id& from, const dht_reply& r);
  // A send to `id` failed or its connection is gone: its requests fail now.
  void on_unreachable(int64_t now, const node_id& id);
  // Expires requests, lookups and records; starts republishes and bucket refreshes.
  void tick(int64_t now);

  // ---- operations ----
  // Contacts to start from (bootstrap peers, peers met on connections). They enter the routing
  // table only once they answer.
  void add_seeds(const std::vector<contact>& seeds);
  // A node with an address and a live connection: enters the routing table now.
  void observe(int64_t now, const contact& c);
  // Looks up our own id (fills the routing table). Returns the lookup id (0: none started).
  uint64_t bootstrap(int64_t now);
  uint64_t find_node(int64_t now, const dht_key& target);
  // Finds up to `want` providers under key passing filter; stops early once it has them.
  uint64_t find_providers(int64_t now, const dht_key& key, const provider_filter& f, size_t want);
  // Replaces what this node announces (server mode only); publishes new keys now and every
  // republish_ms. Fails on more than max_announcements or a bad address.
  status set_announcements(int64_t now, const std::vector<announcement>& a);

  // ---- outputs ----
  std::vector<outgoing> take_outbox();
  std::vector<lookup_result> take_results();
  int64_t next_deadline() const;

  // ---- inspection ----
  const routing_table& table() const { return table_; }
  const dht_stats& stats() const { return stats_; }
  size_t stored_records() const;
  size_t active_lookups() const { return lookups_.size(); }
  const contact& self() const { return self_; }
  bool client_mode() const { return self_.address.empty(); }
  // Where this node takes queries from now on ("" for client mode): a provider learns it once
  // its reachability is known (its relayed address behind NAT). Announcements made after this
  // carry whatever addresses the caller gives; the routing table is kept.
  void set_address(std::string address) { self_.address = std::move(address); }
  // Local records under key passing filter (unexpired).
  std::vector<provider_record> local_records(int64_t now, const dht_key& key, const provider_filter& f,
                                             size_t limit) const;

 private:
  enum class cand_state : uint8_t { fresh, waiting, answered, failed };
  struct candidate {
    contact c;
    cand_state state = cand_state::fresh;
    int64_t sent_ms = 0;
  };
  struct lookup {
    lookup_result res;
    provider_filter filter;
    size_t want = 0;
    int64_t deadline = 0;
    std::vector<candidate> shortlist;   // closest first
    std::map<node_id, provider_record> found;
    std::vector<provider_record> to_store;   // announce: stored at the closest on completion
  };
  struct pending {
    node_id to{};
    std::string address;
    uint64_t lookup = 0;    // 0: a ping or a store
    query_kind kind = query_kind::ping;
    int64_t deadline = 0;
  };
  struct stored {
    provider_record rec;
  };
  struct published {
    announcement a;
    int64_t next_ms = 0;
  };

  uint64_t start_lookup(int64_t now, query_kind kind, lookup_purpose purpose, const dht_key& target,
                        const provider_filter& f, size_t want);
  void step(int64_t now, uint64_t id);
  void finish(int64_t now, uint64_t id, bool timed_out);
  void merge(lookup& l, const std::vector<contact>& nodes);
  void send_query(int64_t now, const contact& to, dht_query q, uint64_t lookup);
  void fail_request(int64_t now, uint64_t request_id);
  void heard_from(int64_t now, const contact& c);
  bool accept_record(int64_t now, const provider_record& r);
  void expire_records(int64_t now);
  void publish(int64_t now, const announcement& a);
  void refresh(int64_t now);

  contact self_;
  dht_config cfg_;
  record_signer signer_;
  std::mt19937_64 rng_;
  routing_table table_;
  std::vector<contact> seeds_;
  uint64_t next_request_ = 1, next_lookup_ = 1;
  std::unordered_map<uint64_t, pending> pending_;
  std::map<uint64_t, lookup> lookups_;
  std::map<dht_key, std::vector<provider_record>> store_;
  std::map<node_id, size_t> keys_per_source_;
  std::vector<published> published_;
  std::array<int64_t, 256> bucket_refreshed_{};
  int64_t next_refresh_ms_ = 0, next_expiry_ms_ = 0, last_tick_ = 0;
  std::vector<outgoing> outbox_;
  std::vector<lookup_result> results_;
  dht_stats stats_;
};

}  // namespace gpugrid::discovery
