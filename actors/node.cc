#include "actors/node.h"
#include "actors/gossip.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/atoms.h"
#include "actors/generation_host.h"
#include "actors/provider.h"
#include "actors/wire_convert.h"
#include "base/json.h"
#include "discovery/dht.h"
#include "net/actor_bridge.h"
#include "net/chunker.h"

namespace gpugrid::grid {

namespace {

using tick_atom = caf::atom_constant<caf::atom("tick")>;
using gossip_atom = caf::atom_constant<caf::atom("gossip")>;
using dialed_atom = caf::atom_constant<caf::atom("dialed")>;
using pump_atom = caf::atom_constant<caf::atom("pump")>;
using rumor_atom = caf::atom_constant<caf::atom("rumor")>;
using progress_atom = caf::atom_constant<caf::atom("progress")>;
using dialback_atom = caf::atom_constant<caf::atom("dialback")>;
using relaylink_atom = caf::atom_constant<caf::atom("relaylink")>;
using redial_atom = caf::atom_constant<caf::atom("redial")>;

using upload_progress_fn = std::function<void(const std::string&, uint64_t, uint64_t)>;

// News (peers just learned of) is forwarded to every neighbour after this pause, batched, so
// that a join reaches the whole grid in a few hops instead of a few gossip rounds.
constexpr auto kRumorDelay = std::chrono::milliseconds(30);

// How long a bid's price holds (for its job, and for later jobs of the same client and model).
constexpr int64_t kBidValidMs = 30000;

// Peers per PeerExchange message (the codec refuses more than net::kMaxPeersPerExchange).
constexpr size_t kPeerPage = 1000;

// Outbound dials to peers learned of by gossip in flight at once.
constexpr size_t kMaxConcurrentDials = 16;

// How long drain() waits for the receipts of jobs it let finish.
constexpr auto kDrainReceiptWait = std::chrono::milliseconds(3000);

// How long settle() waits for dials to gossiped peers once a provider is connected.
constexpr auto kGossipDialWait = std::chrono::milliseconds(3000);
// A gossiped peer whose dial did not answer by then is not waited for again for this long
// (node_options::slow_dials_file), and at most this many such peers are remembered.
constexpr int64_t kSlowDialMemoryMs = 10 * 60 * 1000;
constexpr size_t kMaxSlowDials = 1024;
// A bootstrap peer that refuses a connection as overloaded is dialed again up to this many
// times, 100 ms apart and growing (settle() bounds the whole wait).
constexpr int kMaxOverloadRetries = 12;

// Uploads complete and not yet executed: per connection, and how long they are kept.
constexpr size_t kMaxParkedPerConnection = 2;
constexpr int64_t kParkedUploadMs = 30000;

int64_t now_ms() { return unix_ms(); }

// ------------------------------------------------------------------ remote provider proxy
//
// Looks like the provider actor (bid_atom, exec_atom, receipt_atom) but speaks the wire
// protocol over one connection. Outgoing frames go through an outbox so that a full send queue
// (a large model upload) pauses the upload instead of blocking or dropping.

// The proxy implements the provider protocol (actors/atoms.h) plus its own plumbing.
using remote_provider_actor =
    provider_actor::extend<caf::reacts_to<progress_atom>, caf::reacts_to<pump_atom>,
                           caf::reacts_to<net::wire_atom, net::inbound_ptr>,
                           caf::reacts_to<net::wire_down_atom, net::connection_ptr, std::string>>;

struct out_item {
  job_id job{};
  net::message msg;                                // sent as is when payload is null
  std::shared_ptr<const std::string> payload;      // a model upload: ModelPut, then chunks
  net::model_put plan;
  uint32_t next_chunk = 0;
  bool put_sent = false;
};

struct proxy_state {
  net::connection_ptr conn;
  std::map<job_id, caf::response_promise> bids;
  struct pending_exec {
    caf::response_promise rp;
    execute_request_ptr req;
    bool reuploaded = false;
  };
  std::map<job_id, pending_exec> execs;
  std::map<job_id, caf::response_promise> receipts;  // receipts sent, awaiting a ReceiptAck
  std::deque<out_item> outbox;
  bool pump_scheduled = false;
  bool down = false;
  // Upload progress: bytes of the current upload handed to the connection, and how many of
  // the connection's queued bytes were there when it started (those go out first).
  upload_progress_fn on_progress;
  uint64_t up_total = 0, up_enqueued = 0, up_queued_before = 0;
  bool progress_scheduled = false;
};

execute_result_ptr failed_result(const job_id& job, const key32& provider, std::string why, bool input = false) {
  auto r = std::make_shared<execute_result>();
  r->job = job;
  r->provider = provider;
  r->ok = false;
  r->error = std::move(why);
  r->error_is_input = input;
  return r;
}

bid_reply_ptr declined(const job_id& job, const key32& provider, decline_reason reason, std::string detail) {
  auto r = std::make_shared<bid_reply>();
  r->job = job;
  r->provider = provider;
  r->accepted = false;
  r->reason = reason;
  r->detail = std::move(detail);
  return r;
}

void fail_exec(proxy_state& st, const job_id& job, const std::string& why) {
  auto it = st.execs.find(job);
  if (it == st.execs.end()) return;
  it->second.rp.deliver(failed_result(job, st.conn->peer_key(), why));
  st.execs.erase(it);
}

// Sends what the outbox holds, in order, until it is empty or the send queue is full.
void pump(remote_provider_actor::stateful_pointer<proxy_state> self) {
  auto& st = self->state;
  while (!st.outbox.empty()) {
    out_item& it = st.outbox.front();
    net::send_result r = net::send_result::queued;
    if (it.payload) {
      if (!it.put_sent) {
        size_t before = st.conn->queued_bytes();
        r = st.conn->send(it.plan);
        if (r == net::send_result::queued) {
          it.put_sent = true;
          st.up_total = it.plan.total_bytes;
          st.up_enqueued = 0;
          st.up_queued_before = before;
          if (st.on_progress && !st.progress_scheduled) {
            st.progress_scheduled = true;
            self->delayed_send(self, std::chrono::milliseconds(250), progress_atom::value);
          }
        }
      }
      uint32_t count = net::chunk_count(it.plan.total_bytes, it.plan.chunk_bytes);
      while (r == net::send_result::queued && it.next_chunk < count) {
        auto chunk = net::chunk_at(it.plan, *it.payload, it.next_chunk);
        uint64_t n = chunk.data.size();
        r = st.conn->send(chunk);
        if (r == net::send_result::queued) {
          ++it.next_chunk;
          st.up_enqueued += n;
        }
      }
    } else {
      r = st.conn->send(it.msg);
    }
    if (r == net::send_result::queue_full) {
      if (!st.pump_scheduled) {
        st.pump_scheduled = true;
        self->delayed_send(self, std::chrono::milliseconds(2), pump_atom::value);
      }
      return;
    }
    if (r != net::send_result::queued) fail_exec(st, it.job, fmt::format("cannot send to the provider: {}", net::to_string(r)));
    st.outbox.pop_front();
  }
}

void enqueue_upload(proxy_state& st, const job_id& job, const digest32& hash, std::shared_ptr<const std::string> bytes) {
  out_item up;
  up.job = job;
  up.payload = std::move(bytes);
  up.plan = net::plan_transfer(hash, up.payload->size(), net::choose_chunk_bytes(st.conn->peer_hello().max_frame_bytes),
                               job);
  st.outbox.push_back(std::move(up));
}

void enqueue_execute(proxy_state& st, const execute_request& req) {
  out_item it;
  it.job = req.job;
  it.msg = to_wire_execute(req);
  st.outbox.push_back(std::move(it));
}

remote_provider_actor::behavior_type remote_provider(remote_provider_actor::stateful_pointer<proxy_state> self,
                                                     net::connection_ptr conn, upload_progress_fn on_progress) {
  self->state.conn = std::move(conn);
  self->state.on_progress = std::move(on_progress);
  return {
      [self](progress_atom) {
        auto& st = self->state;
        st.progress_scheduled = false;
        if (st.down || !st.on_progress || st.up_total == 0) return;
        // Written = handed over minus what still waits in the connection's queue.
        uint64_t waiting = st.conn->queued_bytes();
        uint64_t handed = st.up_queued_before + st.up_enqueued;
        uint64_t sent = handed > waiting ? std::min<uint64_t>(handed - waiting, st.up_enqueued) : 0;
        st.on_progress(st.conn->peer_id(), sent, st.up_total);
        if (sent >= st.up_total) {
          st.up_total = 0;
          return;
        }
        st.progress_scheduled = true;
        self->delayed_send(self, std::chrono::milliseconds(250), progress_atom::value);
      },
      [self](bid_atom, const bid_request_ptr& req) -> caf::result<bid_reply_ptr> {
        auto& st = self->state;
        const key32& who = st.conn->peer_key();
        if (st.down) return declined(req->job, who, decline_reason::internal, "the connection to the provider closed");
        auto r = st.conn->send(to_wire_bid_request(*req));
        if (r != net::send_result::queued)
          return declined(req->job, who, decline_reason::internal, fmt::format("cannot reach the provider: {}", net::to_string(r)));
        auto rp = self->make_response_promise();
        st.bids[req->job] = rp;
        return rp;
      },
      [self](exec_atom, const execute_request_ptr& req) -> caf::result<execute_result_ptr> {
        auto& st = self->state;
        if (st.down) return failed_result(req->job, st.conn->peer_key(), "the connection to the provider closed");
        auto rp = self->make_response_promise();
        st.execs[req->job] = {rp, req, false};
        if (req->model_bytes) enqueue_upload(st, req->job, req->model_hash, req->model_bytes);
        enqueue_execute(st, *req);
        pump(self);
        return rp;
      },
      [self](receipt_atom, const receipt_ptr& r) -> caf::result<int32_t> {
        auto& st = self->state;
        const auto later = static_cast<int32_t>(net::receipt_status::retry_later);
        if (st.down || st.conn->send(net::message(*r)) != net::send_result::queued) return later;
        // A version 1 provider sends no answer: the receipt was sent once, as such providers expect.
        if (st.conn->version() < net::kReceiptAckVersion) return static_cast<int32_t>(net::receipt_status::recorded);
        auto rp = self->make_response_promise();
        auto old = st.receipts.find(r->job_id);
        if (old != st.receipts.end()) old->second.deliver(later);
        st.receipts[r->job_id] = rp;
        return rp;
      },
      [self](info_atom) -> provider_info_ptr {
        provider_info i = info_from_hello(self->state.conn->peer_hello());
        i.key = self->state.conn->peer_key();
        return std::make_shared<const provider_info>(std::move(i));
      },
      [self](pump_atom) {
        self->state.pump_scheduled = false;
        pump(self);
      },
      [self](cancel_atom, const execute_request_ptr& req) {
        // The client gave up on the job (it timed out): the provider stops it at its next node.
        auto& st = self->state;
        auto it = st.execs.find(req->job);
        if (it == st.execs.end()) return;
        if (!st.down) (void)st.conn->send(net::message(net::cancel{req->job, "the client gave up on the job"}));
        it->second.rp.deliver(failed_result(req->job, st.conn->peer_key(), "cancelled"));
        st.execs.erase(it);
      },
      [self](net::wire_atom, const net::inbound_ptr& in) {
        auto& st = self->state;
        const key32& who = st.conn->peer_key();
        const net::message& m = in->msg();
        if (auto* b = std::get_if<net::bid>(&m)) {
          auto it = st.bids.find(b->job);
          if (it == st.bids.end()) return;
          if (!b->signature)
            it->second.deliver(declined(b->job, who, decline_reason::internal, "the bid is not signed"));
          else
            it->second.deliver(bid_reply_ptr(std::make_shared<const bid_reply>(from_wire_bid(*b, who))));
          st.bids.erase(it);
        } else if (auto* d = std::get_if<net::bid_decline>(&m)) {
          auto it = st.bids.find(d->job);
          if (it == st.bids.end()) return;
          it->second.deliver(bid_reply_ptr(std::make_shared<const bid_reply>(from_wire_decline(*d, who))));
          st.bids.erase(it);
        } else if (auto* res = std::get_if<net::result>(&m)) {
          auto it = st.execs.find(res->job);
          if (it == st.execs.end()) return;
          auto r = from_wire_result(*res, who);
          in->release();
          it->second.rp.deliver(r);
          st.execs.erase(it);
        } else if (auto* a = std::get_if<net::receipt_ack>(&m)) {
          auto it = st.receipts.find(a->job);
          if (it == st.receipts.end()) return;
          it->second.deliver(static_cast<int32_t>(a->status));
          st.receipts.erase(it);
        } else if (auto* e = std::get_if<net::job_error>(&m)) {
          auto it = st.execs.find(e->job);
          if (it == st.execs.end()) return;
          auto& pe = it->second;
          if (e->code == net::job_error_code::model_missing && !pe.reuploaded && pe.req->model_source) {
            pe.reuploaded = true;  // the provider lost the model since it bid: send it once
            enqueue_upload(st, pe.req->job, pe.req->model_hash, pe.req->model_source);
            enqueue_execute(st, *pe.req);
            pump(self);
            return;
          }
          pe.rp.deliver(failed_result(e->job, who, fmt::format("{}: {}", net::to_string(e->code), e->message),
                                      e->code == net::job_error_code::bad_input));
          st.execs.erase(it);
        }
      },
      [self](net::wire_down_atom, const net::connection_ptr&, const std::string& why) {
        auto& st = self->state;
        st.down = true;
        std::string text = why.empty() ? "the provider closed the connection" : "the connection to the provider was lost: " + why;
        for (auto& [job, rp] : st.bids) rp.deliver(declined(job, st.conn->peer_key(), decline_reason::internal, text));
        st.bids.clear();
        for (auto& [job, pe] : st.execs) pe.rp.deliver(failed_result(job, st.conn->peer_key(), text));
        st.execs.clear();
        for (auto& [job, rp] : st.receipts) rp.deliver(static_cast<int32_t>(net::receipt_status::retry_later));
        st.receipts.clear();
        st.outbox.clear();
        self->quit();
      },
  };
}

// ------------------------------------------------------------------ the node

struct conn_state {
  net::connection_ptr conn;
  remote_provider_actor proxy;       // client side: the remote provider's proxy
  bool is_provider = false;
  bool got_peers = false;            // it sent its PeerExchange
  std::string url;
  std::unique_ptr<net::reassembler> uploads;
  // Uploads complete and awaiting their Execute (at most kMaxParkedPerConnection, each for at
  // most kParkedUploadMs); their bytes count against the node's upload budget.
  struct parked_model {
    std::shared_ptr<const std::string> bytes;
    int64_t since_ms = 0;
  };
  std::map<digest32, parked_model> models;
  std::shared_ptr<net::byte_budget> budget;
  std::set<digest32> generation_files;   // transfers announced for a generation session

  conn_state() = default;
  conn_state(conn_state&&) = default;
  conn_state& operator=(conn_state&&) = default;
  ~conn_state() { unpark_all(); }

  void park(const digest32& hash, std::shared_ptr<const std::string> bytes, int64_t now) {
    unpark(hash);
    while (models.size() >= kMaxParkedPerConnection) unpark(oldest());
    uint64_t n = bytes->size();
    if (budget && !budget->take(n)) return;  // over the node's budget: the Execute asks again
    models[hash] = {std::move(bytes), now};
  }
  std::shared_ptr<const std::string> take(const digest32& hash) {
    auto it = models.find(hash);
    if (it == models.end()) return nullptr;
    auto b = it->second.bytes;
    unpark(hash);
    return b;
  }
  void expire_parked(int64_t now) {
    std::vector<digest32> old;
    for (const auto& [h, m] : models)
      if (now - m.since_ms > kParkedUploadMs) old.push_back(h);
    for (const auto& h : old) unpark(h);
  }

 private:
  digest32 oldest() const {
    auto best = models.begin();
    for (auto it = models.begin(); it != models.end(); ++it)
      if (it->second.since_ms < best->second.since_ms) best = it;
    return best->first;
  }
  void unpark(const digest32& hash) {
    auto it = models.find(hash);
    if (it == models.end()) return;
    if (budget) budget->give(it->second.bytes->size());
    models.erase(it);
  }
  void unpark_all() {
    while (!models.empty()) unpark(models.begin()->first);
  }
};

// Answers a client's countersigned receipt (it sends it again until recorded or rejected).
void send_receipt_ack(const net::connection_ptr& c, const job_id& job, net::receipt_status status, std::string detail) {
  if (c->version() < net::kReceiptAckVersion) return;  // a version 1 client would close on it
  net::receipt_ack a;
  a.job = job;
  a.status = status;
  a.detail = std::move(detail);
  (void)c->send(a);
}

// Tells a client that its job will not run here (or not any more), and why.
void send_job_error(const net::connection_ptr& c, const job_id& job, net::job_error_code code, std::string text) {
  net::job_error e;
  e.job = job;
  e.code = code;
  e.message = std::move(text);
  (void)c->send(e);
}

// True for a URL whose host means "every address" (0.0.0.0, ::): nobody can dial it as is.
bool wildcard_url(const std::string& url) {
  auto u = net::parse_ws_url(url);
  return !u || u->host == "0.0.0.0" || u->host == "::" || u->host.empty();
}

// `s` as the inside of a JSON string.
std::string json_escape(const std::string& s) {
  std::string d = json(s).dump();
  return d.substr(1, d.size() - 2);
}

std::string effective_url(const std::string& advertised, const std::string& remote_address) {
  if (advertised.empty()) return "";
  auto u = net::parse_ws_url(advertised);
  if (!u) return "";
  if (u->host == "0.0.0.0" || u->host == "::" || u->host.empty()) {
    // The peer listens on every address: reach it at the one it connected from.
    std::string ip = remote_address.substr(0, remote_address.rfind(':'));
    if (ip.empty()) return "";
    u->host = ip;
  }
  return u->str();
}

}  // namespace

struct grid_node::impl {
  impl(caf::actor_system& s, const net::identity& id, node_options o) : sys(s), self(id), opt(std::move(o)), table(id.public_key()) {}

  caf::actor_system& sys;
  net::identity self;
  node_options opt;
  std::shared_ptr<net::transport> transport;
  caf::actor actor;
  provider_actor local_provider;   // provider: this node's own provider
  std::string url;
  std::atomic<bool> stopped{false};
  std::shared_ptr<net::byte_budget> upload_budget;  // provider: bytes of uploads held, all connections

  mutable std::mutex mu;  // everything below
  peer_table table;
  std::map<uint64_t, conn_state> conns;
  std::set<std::string> dialing;                 // URLs being dialed
  std::map<std::string, int64_t> slow_dials;     // client: URL -> when its dial last went unanswered
  std::map<std::string, int> overload_retries;   // bootstrap URL -> redials after "overloaded"
  std::map<uint64_t, std::string> bootstrap_conns;  // connection id -> the bootstrap URL it was dialed at
  std::set<key32> attempted;                     // keys dialed once (until evicted)
  std::map<std::string, std::string> bootstrap;  // URL -> "" pending, "ok", or the failure
  std::map<job_id, double> quoted;               // provider: prices bid, by job (bounded)
  std::deque<job_id> quoted_order;
  // Provider: standing bids, by (client, model): the price holds for later jobs of that client
  // and model until it expires (bounded like `quoted`).
  struct standing_bid {
    double price = 0;
    int64_t expires_ms = 0;
  };
  std::map<std::pair<key32, digest32>, standing_bid> standing;
  std::deque<std::pair<key32, digest32>> standing_order;
  struct running_job {
    uint64_t conn = 0;                           // the client's connection
    std::shared_ptr<std::atomic<bool>> cancel;   // set when the client goes away
  };
  std::map<job_id, running_job> running;         // provider: jobs received and not yet answered
  std::set<job_id> handed_back;
  std::set<job_id> drain_receipts;               // answered while draining, receipt not yet recorded
  std::vector<gossip_entry> rumors;              // learned since the last rumor flush
  bool rumor_scheduled = false;
  std::mt19937_64 rng{std::random_device{}()};

  // -------- discovery at scale: the DHT (discovery/dht.h) over this node's connections.
  // Under mu. Messages for a peer we are not connected to wait (bounded) while it is dialed.
  std::unique_ptr<discovery::dht> dht;
  bool dht_bootstrapped = false;
  std::map<key32, std::vector<net::message>> dht_waiting;
  std::map<std::string, key32> dht_dials;                     // URL -> the node it was dialed for
  std::map<uint64_t, discovery::lookup_result> dht_results;   // finished lookups, by id (bounded)
  std::deque<digest32> dht_models;                            // provider: models served, newest last

  void dht_start() {
    const bool server = offering() && !url.empty() && !wildcard_url(url);
    // A provider announces the models already in its cache, not only those it serves from now.
    if (offering() && opt.provider->cache())
      for (const auto& h : opt.provider->cache()->recent(32)) dht_models.push_back(h);
    const net::identity id = self;
    dht = std::make_unique<discovery::dht>(
        discovery::contact{self.public_key(), server ? url : std::string()}, discovery::dht_config{},
        [id](discovery::provider_record& r) { discovery::sign_record(r, id.secret_key()); }, rng());
  }
  void dht_flush_locked() {
    if (!dht) return;
    for (auto& o : dht->take_outbox()) {
      net::message m = std::visit([](auto& x) { return net::message(std::move(x)); }, o.msg);
      net::connection_ptr c;
      for (const auto& [id, cs] : conns)
        if (cs.conn->peer_key() == o.to.id && cs.conn->is_open()) c = cs.conn;
      if (c) {
        (void)c->send(m);
        continue;
      }
      auto& q = dht_waiting[o.to.id];
      if (o.to.address.empty() || q.size() >= 16 || (q.empty() && dht_waiting.size() > 64) ||
          connected_to_locked(o.to.id)) {
        if (q.empty()) dht_waiting.erase(o.to.id);
        dht->on_unreachable(now_ms(), o.to.id);
        continue;
      }
      q.push_back(std::move(m));
      if (!dialing.count(o.to.address)) {
        dht_dials[o.to.address] = o.to.id;
        dial_locked(o.to.address, o.to.id);
      }
    }
    for (auto& r : dht->take_results()) {
      if (dht_results.size() >= 64) dht_results.erase(dht_results.begin());
      dht_results[r.id] = std::move(r);
    }
  }
  void dht_on_up_locked(const net::connection_ptr& c, const std::string& peer_url) {
    if (!dht) return;
    if (!peer_url.empty() && !wildcard_url(peer_url)) {
      dht->add_seeds({{c->peer_key(), peer_url}});
      if (c->peer_hello().role != net::node_role::client) dht->observe(now_ms(), {c->peer_key(), peer_url});
    }
    auto w = dht_waiting.find(c->peer_key());
    if (w != dht_waiting.end()) {
      for (auto& m : w->second) (void)c->send(m);
      dht_waiting.erase(w);
    }
    if (!dht_bootstrapped && !dht->client_mode() && dht->table().size() > 0) {
      dht_bootstrapped = true;
      dht->bootstrap(now_ms());
    }
    dht_flush_locked();
  }
  void dht_on_dial_failed_locked(const std::string& u) {
    auto d = dht_dials.find(u);
    if (d == dht_dials.end()) return;
    const key32 k = d->second;
    dht_dials.erase(d);
    dht_waiting.erase(k);
    if (dht) dht->on_unreachable(now_ms(), k);
    dht_flush_locked();
  }
  void dht_on_message_locked(const net::connection_ptr& c, const std::string& peer_url, const net::message& m) {
    if (!dht) return;
    if (auto* q = std::get_if<net::dht_query>(&m)) {
      net::dht_query query = *q;
      // A server is kept at the address its Hello gave (checked by this very connection).
      if (!query.sender_address.empty()) query.sender_address = peer_url;
      (void)dht->on_query(now_ms(), c->peer_key(), query);
    } else if (auto* r = std::get_if<net::dht_reply>(&m)) {
      (void)dht->on_reply(now_ms(), c->peer_key(), *r);
    }
    dht_flush_locked();
  }
  // Provider: what it announces, kept current (the dht republishes on its own schedule).
  void dht_announce_locked() {
    if (!dht || dht->client_mode() || !offering()) return;
    provider_info info = opt.provider->info();
    std::string cls = "cpu";
    for (const auto& d : info.devices) {
      net::device_info w = to_device_info(d, 0);
      if (w.kind == "cuda") {
        cls = fmt::format("cuda-sm{}{}-{}g", w.cc_major, w.cc_minor, (w.memory_bytes + (int64_t{1} << 29)) >> 30);
        break;
      }
    }
    const std::vector<std::string> addr{dht->self().address};
    std::vector<discovery::announcement> a{{discovery::providers_key(), addr, cls, info.price_per_gflop},
                                           {discovery::device_key(cls), addr, cls, info.price_per_gflop}};
    for (const auto& h : dht_models) a.push_back({discovery::model_key(h), addr, cls, info.price_per_gflop});
    (void)dht->set_announcements(now_ms(), a);
  }
  void dht_served_model_locked(const digest32& h) {
    auto it = std::find(dht_models.begin(), dht_models.end(), h);
    if (it != dht_models.end()) dht_models.erase(it);
    dht_models.push_back(h);
    if (dht_models.size() > 32) dht_models.pop_front();
  }
  // The address the DHT knows this provider by: where it can be dialed now (its relayed URL
  // behind NAT, the address a dial-back reached it at when it listens on 0.0.0.0), or none (it
  // then takes part as a client and announces nothing).
  std::string dht_url_locked() const {
    if (!offering()) return "";
    if (reach_state == reach::behind_nat) return announced;
    if (!url.empty() && !wildcard_url(url)) return url;
    return reach_state == reach::reachable ? reached_url : "";
  }
  void dht_readdress_locked() {
    if (!dht) return;
    std::string u = dht_url_locked();
    if (u == dht->self().address) return;
    dht->set_address(u);
    if (!dht_bootstrapped && !dht->client_mode() && dht->table().size() > 0) {
      dht_bootstrapped = true;
      dht->bootstrap(now_ms());
    }
    dht_announce_locked();
    dht_flush_locked();
  }
  void dht_tick_locked() {
    if (!dht) return;
    dht_announce_locked();
    dht->tick(now_ms());
    dht_flush_locked();
  }

  bool offering() const { return opt.provider != nullptr; }
  std::string metrics_text() const;

  // -------- reachability and relays (under mu; see node_options::relay)
  enum class reach { unknown, reachable, behind_nat };
  reach reach_state = reach::unknown;
  std::shared_ptr<net::relay_service> relay;     // offering --relay
  std::set<uint64_t> asked_dial_back;            // connections we asked to dial us back
  std::set<uint64_t> dialed_back_for;            // connections we dialed back (one each)
  int dial_backs_running = 0;
  struct relay_link {
    uint64_t conn = 0;                           // the attach connection; 0 while none
    bool dialing = false, attached = false;
  };
  std::map<std::string, relay_link> relay_links; // by relay URL
  std::string announced;                         // the relayed address announced now
  std::string reached_url;                       // where a dial-back reached us (our own may be 0.0.0.0)
  std::set<std::string> relay_peers;             // URLs of peers that announce relay service
  std::set<std::string> bad_relayed;             // relayed addresses whose relay refused us
  static constexpr int kMaxAnswering = 32;       // circuits being dialed back at once
  std::shared_ptr<std::atomic<int>> answering = std::make_shared<std::atomic<int>>(0);

  std::string reach_url_locked() const { return reach_state == reach::behind_nat ? announced : url; }
  // The URL our Hello advertises, under a lock of its own: the transport asks for it while a
  // dial made under `mu` builds its connection.
  mutable std::mutex hello_mu;
  std::string hello_url;
  void publish_url_locked() {
    std::lock_guard<std::mutex> g(hello_mu);
    hello_url = reach_url_locked();
  }
  net::node_status status_locked() const {
    return net::node_status{reach_state == reach::reachable, reach_url_locked(), relay != nullptr};
  }
  void announce_locked() {
    publish_url_locked();
    dht_readdress_locked();
    net::node_status st = status_locked();
    for (auto& [id, cs] : conns) (void)cs.conn->send(st);
  }
  void dial_relay_locked(const std::string& u) {
    relay_link& l = relay_links[u];
    if (l.dialing || l.conn || stopped) return;
    l.dialing = true;
    caf::actor a = actor;
    transport->connect(u, [a, u](expected<net::connection_ptr> c) {
      caf::anon_send(a, relaylink_atom::value, u, c ? *c : net::connection_ptr(), c ? std::string() : c.error().message());
    });
  }
  // Behind NAT: attach to the given relays, else to up to two that peers announced.
  void use_relays_locked() {
    if (reach_state != reach::behind_nat || !offering()) return;
    std::vector<std::string> want = opt.via_relays;
    if (want.empty())
      for (const auto& u : relay_peers)
        if (want.size() < 2) want.push_back(u);
    for (const auto& u : want) {
      auto it = relay_links.find(u);
      if (it != relay_links.end() && it->second.conn) {
        auto c = conns.find(it->second.conn);
        if (!it->second.attached && c != conns.end()) (void)c->second.conn->send(net::relay_attach{true});
      } else {
        dial_relay_locked(u);
      }
    }
  }
  // A relay link went away or refused us: announce another attached relay, if any.
  void reannounce_locked() {
    std::string next, next_relay;
    for (const auto& [u, l] : relay_links)
      if (l.attached) {
        std::string r = net::relayed_url(u, self.node_id());
        if (r == announced) return;  // still attached where we said
        if (next.empty()) next = r, next_relay = u;
      }
    if (next == announced) return;
    announced = next;
    publish_url_locked();
    if (!next.empty()) {
      event(fmt::format("{{\"event\":\"behind_nat\",\"relay\":\"{}\",\"url\":\"{}\"}}", next_relay, next));
      announce_locked();
    } else {
      event("{\"event\":\"relay_lost\",\"text\":\"no relay carries this node now; attaching to another\"}");
    }
  }
  void on_reach_message(caf::event_based_actor* self_actor, const net::connection_ptr& c, conn_state& cs,
                        const net::message& m);
  void on_dial_back_done(uint64_t conn, uint64_t nonce, const std::string& target, const std::string& error);
  void on_relay_link(const std::string& u, const net::connection_ptr& c, const std::string& error);

  // -------- under mu
  void dial_locked(const std::string& u, std::optional<key32> expect) {
    if (dialing.count(u) || stopped) return;
    dialing.insert(u);
    if (expect) attempted.insert(*expect);
    caf::actor a = actor;
    transport->connect(
        u, [a, u](expected<net::connection_ptr> c) {
          caf::anon_send(a, dialed_atom::value, u, c ? std::string() : c.error().message(), c ? (*c)->id() : uint64_t{0});
        },
        expect);
  }

  size_t outbound_count_locked() const {
    size_t n = 0;
    for (const auto& [id, cs] : conns) n += cs.conn->inbound() ? 0 : 1;
    return n;
  }
  size_t provider_count_locked() const {
    size_t n = 0;
    for (const auto& [id, cs] : conns) n += cs.is_provider ? 1 : 0;
    return n;
  }
  bool connected_elsewhere_locked(const net::connection_ptr& c) const {  // to c's peer, on another connection
    for (const auto& [id, cs] : conns)
      if (id != c->id() && cs.conn->peer_key() == c->peer_key()) return true;
    return false;
  }
  bool connected_to_locked(const key32& k) const {
    for (const auto& [id, cs] : conns)
      if (cs.conn->peer_key() == k) return true;
    return false;
  }

  // Dials peers learned of by gossip, within the node's connection budget (actors/gossip.h).
  void maybe_dial_locked(const std::vector<gossip_entry>& fresh) {
    dial_budget b;
    b.offering = offering();
    b.dialing = dialing.size();
    b.max_concurrent = kMaxConcurrentDials;
    b.outbound = offering() ? outbound_count_locked() : 0;
    b.max_neighbors = static_cast<size_t>(std::max(0, opt.max_neighbors));
    b.providers = offering() ? 0 : provider_count_locked();
    b.max_providers = opt.max_providers;
    auto skip = [this](const gossip_entry& e) {
      return connected_to_locked(e.key) || attempted.count(e.key) || bad_relayed.count(e.url);
    };
    for (const auto& e : choose_dials(fresh, b, skip)) dial_locked(e.url, e.key);
  }

  // What we tell a neighbour: the peers we reached ourselves and we, in pages well under the
  // codec's per-message limit.
  std::vector<net::peer_exchange> gossip_locked() const {
    std::vector<gossip_entry> all = table.gossip(now_ms(), opt.peer_timeout.count());
    std::string here = reach_url_locked();
    if (!here.empty() && !wildcard_url(here))  // ourselves, where we can be reached
      all.push_back({self.public_key(), here, now_ms(), offering()});
    return paged(all);
  }

  static std::vector<net::peer_exchange> paged(const std::vector<gossip_entry>& all) { return page_gossip(all, kPeerPage); }

  static void send_pages(const net::connection_ptr& c, const std::vector<net::peer_exchange>& pages) {
    for (const auto& px : pages) (void)c->send(px);
  }

  // Queues news for the neighbours; the actor flushes it after kRumorDelay.
  void spread_locked(caf::event_based_actor* self_actor, const std::vector<gossip_entry>& fresh) {
    if (fresh.empty()) return;
    rumors.insert(rumors.end(), fresh.begin(), fresh.end());
    if (!rumor_scheduled) {
      rumor_scheduled = true;
      self_actor->delayed_send(self_actor, kRumorDelay, rumor_atom::value);
    }
  }

  void on_rumor() {
    std::lock_guard<std::mutex> lk(mu);
    rumor_scheduled = false;
    if (rumors.empty()) return;
    auto pages = paged(rumors);
    rumors.clear();
    for (auto& [id, cs] : conns) send_pages(cs.conn, pages);
  }

  void event(const std::string& line) {
    if (opt.on_event) opt.on_event(line);
  }

  // -------- actor handlers
  void on_up(caf::event_based_actor* self_actor, const net::connection_ptr& c) {
    const net::hello& h = c->peer_hello();
    if (h.node_key == self.public_key()) {
      c->close(net::goodbye_reason::normal, "connected to itself");
      return;
    }
    std::lock_guard<std::mutex> lk(mu);
    conn_state cs;
    cs.conn = c;
    cs.is_provider = h.role != net::node_role::client;
    cs.url = effective_url(h.listen_url, c->remote_address());
    if (offering()) {
      net::reassembler_options ro;
      ro.max_transfer_bytes = static_cast<uint64_t>(opt.provider->max_model_bytes());
      ro.max_total_bytes = ro.max_transfer_bytes;
      ro.max_transfers = 2;
      ro.budget = upload_budget;
      cs.budget = upload_budget;
      cs.uploads = std::make_unique<net::reassembler>(ro);
    }
    if (!offering() && cs.is_provider) cs.proxy = self_actor->spawn(remote_provider, c, opt.on_upload_progress);
    const peer_record* before = table.find(h.node_key);
    bool is_new = before == nullptr || !before->reached;  // news once we reached it ourselves
    table.heard_from(h.node_key, cs.url, info_from_hello(h), cs.is_provider, now_ms());
    attempted.insert(h.node_key);
    if (is_new && !cs.url.empty()) spread_locked(self_actor, {{h.node_key, cs.url, now_ms(), cs.is_provider}});
    bool provider = cs.is_provider;
    const std::string peer_url = cs.url;
    conns[c->id()] = std::move(cs);
    dht_on_up_locked(c, peer_url);
    send_pages(c, gossip_locked());
    if (offering()) {
      if (reach_state != reach::unknown || relay) (void)c->send(status_locked());
      if (opt.dial_back && reach_state == reach::unknown && !c->inbound() && !url.empty() &&
          asked_dial_back.size() < 8 && asked_dial_back.insert(c->id()).second)
        (void)c->send(net::dial_back{c->id()});
    }
    if (provider || offering())
      event(fmt::format("{{\"event\":\"peer_up\",\"node_id\":\"{}\",\"role\":\"{}\"}}", c->peer_id(),
                        provider ? "provider" : "client"));
  }

  void on_down(const net::connection_ptr& c, const std::string& why) {
    remote_provider_actor proxy;
    {
      std::lock_guard<std::mutex> lk(mu);
      // A bootstrap peer that refused the connection as overloaded right after its handshake:
      // pending again, and dialed again shortly.
      if (auto bc = bootstrap_conns.find(c->id()); bc != bootstrap_conns.end()) {
        std::string u = bc->second;
        bootstrap_conns.erase(bc);
        auto b = bootstrap.find(u);
        if (b != bootstrap.end() && b->second == "ok" && why.find("overloaded") != std::string::npos &&
            !connected_elsewhere_locked(c) && redial_overloaded_locked(u))
          b->second.clear();
      }
      auto it = conns.find(c->id());
      if (it == conns.end()) return;
      proxy = it->second.proxy;
      conns.erase(it);
      asked_dial_back.erase(c->id());
      if (relay) relay->on_closed(c);
      for (auto& [u, l] : relay_links)
        if (l.conn == c->id()) {
          l.conn = 0;
          l.attached = false;
          event(fmt::format("{{\"event\":\"relay_down\",\"relay\":\"{}\",\"why\":\"{}\"}}", u,
                            json_escape(why.empty() ? "closed" : why)));
          reannounce_locked();
        }
      if (!connected_to_locked(c->peer_key())) table.lost(c->peer_key());
      // Its jobs stop at their next node: nobody is left to take the answer.
      for (auto& [job, rj] : running)
        if (rj.conn == c->id() && rj.cancel) rj.cancel->store(true);
    }
    if (opt.generation) opt.generation->on_disconnect(c->id());
    if (opt.inbox) opt.inbox->peer_down(c->peer_key());
    if (proxy) caf::anon_send(proxy, net::wire_down_atom::value, c, why);
  }

  // A bootstrap peer that is full for now (every slot taken, or this identity's share, as when
  // several runs share one data dir) is asked again shortly, while settle() waits: its state
  // stays pending. False when the retries are spent.
  bool redial_overloaded_locked(const std::string& u) {
    if (stopped) return false;
    int n = ++overload_retries[u];
    if (n > kMaxOverloadRetries) return false;
    caf::delayed_anon_send(actor, std::chrono::milliseconds(std::min(100 * n, 1000)), redial_atom::value, u);
    return true;
  }

  void on_dialed(const std::string& u, const std::string& error, uint64_t conn) {
    std::lock_guard<std::mutex> lk(mu);
    dialing.erase(u);
    if (error.empty()) slow_dials.erase(u);
    if (error.empty() && bootstrap.count(u)) bootstrap_conns[conn] = u;
    auto pending = bootstrap.find(u);
    if (pending != bootstrap.end() && pending->second.empty() &&
        error.find("the peer closed the connection: overloaded") != std::string::npos && redial_overloaded_locked(u))
      return;
    if (error.find("the relay refused the circuit") != std::string::npos) bad_relayed.insert(u);
    if (!error.empty()) dht_on_dial_failed_locked(u);
    else dht_dials.erase(u);
    auto b = bootstrap.find(u);
    if (b != bootstrap.end() && b->second.empty()) b->second = error.empty() ? "ok" : error;
  }

  void on_tick() {
    std::vector<net::connection_ptr> live;
    {
      std::lock_guard<std::mutex> lk(mu);
      int64_t now = now_ms();
      for (auto& [id, cs] : conns) {
        live.push_back(cs.conn);
        const peer_record* r = table.find(cs.conn->peer_key());
        int64_t rtt = cs.conn->rtt_us();
        table.record_rtt(cs.conn->peer_key(), rtt >= 0 ? (rtt + 999) / 1000 : (r ? r->rtt_ms : -1), now);
        if (cs.uploads) cs.uploads->expire();
        cs.expire_parked(now);
      }
      for (const key32& k : table.evict(now, opt.peer_timeout.count(), 3)) attempted.erase(k);
      if (relay) relay->tick();
      use_relays_locked();  // behind NAT: re-dial relays we lost
      dht_tick_locked();
      // Reconnect to bootstrap peers we lost, so a node that was cut off finds the grid again.
      if (conns.empty())
        for (auto& [u, state] : bootstrap) dial_locked(u, std::nullopt);
    }
    for (auto& c : live) c->ping();
    if (opt.generation) opt.generation->tick();
  }

  void on_gossip() {
    std::lock_guard<std::mutex> lk(mu);
    if (conns.empty()) return;
    std::vector<conn_state*> all;
    for (auto& [id, cs] : conns) all.push_back(&cs);
    std::shuffle(all.begin(), all.end(), rng);
    // Anti-entropy: the whole list to one random neighbour (news travels as rumors).
    send_pages(all.front()->conn, gossip_locked());
    // A provider with room for more neighbours dials a few it knows of.
    if (offering()) {
      std::vector<gossip_entry> known = table.gossip(now_ms(), opt.peer_timeout.count());
      std::shuffle(known.begin(), known.end(), rng);
      maybe_dial_locked(known);
    }
  }

  void on_message(caf::event_based_actor* self_actor, const net::inbound_ptr& in) {
    const net::connection_ptr& c = in->from();
    const net::message& m = in->msg();
    remote_provider_actor proxy;
    {
      std::lock_guard<std::mutex> lk(mu);
      auto it = conns.find(c->id());
      if (it == conns.end()) return;
      proxy = it->second.proxy;
      if (auto* px = std::get_if<net::peer_exchange>(&m)) {
        it->second.got_peers = true;
        std::vector<gossip_entry> entries;
        for (const auto& p : px->peers)
          if (p.node_key != self.public_key() && !wildcard_url(p.url))
            entries.push_back({p.node_key, p.url, p.last_seen_ms, p.role != net::node_role::client});
        // Hearsay is dialed (within the dial budget) but not passed on: a peer is news for
        // our neighbours only once we reached it (on_up).
        auto fresh = table.merge_gossip(entries, now_ms(), c->peer_key());
        maybe_dial_locked(fresh);
        return;
      }
      if (std::holds_alternative<net::dial_back>(m) || std::holds_alternative<net::dial_back_result>(m) ||
          std::holds_alternative<net::relay_attach>(m) || std::holds_alternative<net::relay_attach_ack>(m) ||
          std::holds_alternative<net::relay_incoming>(m) || std::holds_alternative<net::node_status>(m))
        return on_reach_message(self_actor, c, it->second, m);
      if (std::holds_alternative<net::dht_query>(m) || std::holds_alternative<net::dht_reply>(m))
        return dht_on_message_locked(c, it->second.url, m);
    }
    if (opt.inbox && opt.inbox->deliver(c->peer_key(), m)) return;
    if (std::holds_alternative<net::bid>(m) || std::holds_alternative<net::bid_decline>(m) ||
        std::holds_alternative<net::result>(m) || std::holds_alternative<net::job_error>(m) ||
        std::holds_alternative<net::model_need>(m) || std::holds_alternative<net::receipt_ack>(m)) {
      if (proxy) self_actor->send(proxy, net::wire_atom::value, in);
      return;
    }
    if (!offering()) return;  // a client serves nothing
    if (auto* cn = std::get_if<net::cancel>(&m)) {  // a job its client gave up on stops at its next node
      std::lock_guard<std::mutex> lk(mu);
      auto it = running.find(cn->job);
      if (it != running.end() && it->second.conn == c->id()) {
        if (it->second.cancel) it->second.cancel->store(true);
        return;
      }
    }
    if (opt.generation && (std::holds_alternative<net::gen_open>(m) || std::holds_alternative<net::gen_prompt>(m) ||
                           std::holds_alternative<net::gen_pay>(m) || std::holds_alternative<net::cancel>(m))) {
      net::connection_ptr conn = c;
      if (std::holds_alternative<net::gen_prompt>(m))
        event(fmt::format("{{\"event\":\"generation_prompt\",\"client\":\"{}\",\"tokens\":{}}}", c->peer_id(),
                          std::get<net::gen_prompt>(m).prompt_ids.size() + std::get<net::gen_prompt>(m).generated_ids.size()));
      (void)opt.generation->on_message(c->peer_key(), c->id(), m, [conn](const net::message& reply) {
        // Token frames are small: a full queue means the client stopped reading.
        return conn->send(reply) == net::send_result::queued;
      });
      return;
    }
    if (auto* br = std::get_if<net::bid_request>(&m)) return on_bid_request(c, *br);
    if (auto* put = std::get_if<net::model_put>(&m)) return on_model_put(c, *put);
    if (auto* ch = std::get_if<net::model_chunk>(&m)) return on_model_chunk(c, *ch);
    if (auto* ex = std::get_if<net::execute>(&m)) return on_execute(self_actor, in, *ex);
    if (auto* rc = std::get_if<ledger::receipt>(&m)) {
      auto r = std::make_shared<const ledger::receipt>(*rc);
      job_id job = r->job_id;
      if (r->client_key != c->peer_key())  // only the job's client countersigns
        return send_receipt_ack(c, job, net::receipt_status::rejected, "the receipt is not this client's");
      self_actor->request(local_provider, std::chrono::seconds(30), receipt_atom::value, receipt_ptr(r))
          .then(
              [this, c, job](int32_t code) {
                forget_receipt(job);
                send_receipt_ack(c, job, static_cast<net::receipt_status>(code), "");
              },
              [this, c, job](caf::error&) {
                forget_receipt(job);
                send_receipt_ack(c, job, net::receipt_status::retry_later, "no answer");
              });
      return;
    }
  }

  void forget_receipt(const job_id& job) {
    std::lock_guard<std::mutex> lk(mu);
    drain_receipts.erase(job);
  }

  void on_bid_request(const net::connection_ptr& c, const net::bid_request& br) {
    bid_reply r = opt.provider->bid(from_wire_bid_request(br, c->peer_key()));
    if (!r.accepted) {
      (void)c->send(to_wire_decline(r));
      return;
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!quoted.count(br.job)) quoted_order.push_back(br.job);
      quoted[br.job] = r.price;
      while (quoted_order.size() > 65536) {
        quoted.erase(quoted_order.front());
        quoted_order.pop_front();
      }
      auto key = std::make_pair(c->peer_key(), br.model_hash);
      if (!standing.count(key)) standing_order.push_back(key);
      standing[key] = {r.price, now_ms() + kBidValidMs};
      while (standing_order.size() > 65536) {
        standing.erase(standing_order.front());
        standing_order.pop_front();
      }
    }
    r.valid_ms = kBidValidMs;
    net::bid b = to_wire_bid(r);
    const auto& devices = opt.provider->devices();
    if (!devices.empty()) b.device = to_device_info(devices.front(), 0);
    net::sign_bid(b, self);
    (void)c->send(b);
  }

  void on_model_put(const net::connection_ptr& c, const net::model_put& put) {
    std::lock_guard<std::mutex> lk(mu);
    auto it = conns.find(c->id());
    if (it == conns.end() || !it->second.uploads) return;
    status st = it->second.uploads->begin(put);
    if (!st.is_ok() && put.job) send_job_error(c, *put.job, net::job_error_code::model_too_big, st.message());
    if (st.is_ok() && put.job && opt.generation && opt.generation->wants_file(*put.job, put.model_hash))
      it->second.generation_files.insert(put.model_hash);
  }

  void on_model_chunk(const net::connection_ptr& c, const net::model_chunk& ch) {
    std::shared_ptr<const std::string> generation_file;
    {
      std::lock_guard<std::mutex> lk(mu);
      auto it = conns.find(c->id());
      if (it == conns.end() || !it->second.uploads) return;
      auto done = it->second.uploads->add(ch);
      if (!done) {
        event(fmt::format("{{\"event\":\"upload_refused\",\"node_id\":\"{}\",\"why\":\"{}\"}}", c->peer_id(),
                          json_escape(done.error().message())));
        return;
      }
      if (!*done) return;
      if (it->second.generation_files.erase((*done)->hash)) generation_file = (*done)->bytes;
      else it->second.park((*done)->hash, (*done)->bytes, now_ms());
    }
    // A file of a generation session's folder: into the folder store (outside the lock: a
    // large file takes a while to write).
    if (generation_file) {
      status st = opt.generation->put_file(ch.model_hash, *generation_file);
      if (!st.is_ok())
        event(fmt::format("{{\"event\":\"upload_refused\",\"node_id\":\"{}\",\"why\":\"{}\"}}", c->peer_id(),
                          json_escape(st.message())));
    }
  }

  void on_execute(caf::event_based_actor* self_actor, const net::inbound_ptr& in, const net::execute& ex) {
    const net::connection_ptr c = in->from();
    auto reply_error = [&](net::job_error_code code, std::string text) { send_job_error(c, ex.job, code, std::move(text)); };
    auto req = std::make_shared<execute_request>();
    req->job = ex.job;
    req->client = c->peer_key();
    req->model_hash = ex.model_hash;
    req->input_digest = ex.input_digest;
    req->price = ex.price;
    req->started_ms = ex.started_ms;
    req->voucher = ex.voucher;
    for (const auto& w : ex.inputs) {
      auto t = from_wire_tensor(w);
      if (!t) return reply_error(net::job_error_code::bad_input, t.error().message());
      req->inputs.push_back(std::move(t).value());
    }
    in->release();
    {
      std::lock_guard<std::mutex> lk(mu);
      auto it = conns.find(c->id());
      if (it == conns.end()) return;
      if (auto bytes = it->second.take(ex.model_hash)) req->model_bytes = std::move(bytes);
      dht_served_model_locked(ex.model_hash);
      // The price must be what this provider bid for this job, or its standing bid to this
      // client for this model.
      double floor = -1;
      auto q = quoted.find(ex.job);
      if (q != quoted.end()) {
        floor = q->second;
      } else {
        auto st = standing.find({c->peer_key(), ex.model_hash});
        if (st != standing.end() && st->second.expires_ms > now_ms()) floor = st->second.price;
      }
      award_facts af;
      af.bid_price = floor;
      af.offered = ex.price;
      af.draining = opt.provider->draining();
      af.already_running = running.count(ex.job) > 0;
      af.queued = running.size();
      // Bids are cheap to collect while idle; executions beyond a bounded queue are refused, so a
      // client holding many bids cannot make this node queue without limit.
      af.queue_limit = static_cast<size_t>(opt.provider->queue_limit());
      award_decision d = admit_award(af);
      switch (d.why) {
        case award_refusal::none: break;
        case award_refusal::not_awarded:
        case award_refusal::underpaid: return reply_error(net::job_error_code::not_awarded, d.detail);
        case award_refusal::draining: return reply_error(net::job_error_code::draining, d.detail);
        case award_refusal::duplicate:
        case award_refusal::queue_full: return reply_error(net::job_error_code::busy, d.detail);
      }
      req->cancel = std::make_shared<std::atomic<bool>>(false);
      running[ex.job] = {c->id(), req->cancel};
    }
    job_id job = ex.job;
    std::string client = c->peer_id();
    self_actor->request(local_provider, caf::infinite, exec_atom::value, execute_request_ptr(req))
        .then(
            [this, c, job, client](const execute_result_ptr& r) { finish_job(c, job, client, r, ""); },
            [this, c, job, client](caf::error& e) { finish_job(c, job, client, nullptr, sys.render(e)); });
  }

  void finish_job(const net::connection_ptr& c, const job_id& job, const std::string& client,
                  const execute_result_ptr& r, const std::string& failure) {
    // The answer is queued before the job leaves `running`, so a drain that sees no running
    // job knows every answer is on its way (it then waits for the queues to empty).
    std::unique_lock<std::mutex> lk(mu);
    struct leave {
      std::unique_lock<std::mutex>& lk;
      grid_node::impl& p;
      const job_id& job;
      ~leave() {
        if (!lk.owns_lock()) lk.lock();
        p.running.erase(job);
      }
    } leave_running{lk, *this, job};
    if (handed_back.erase(job)) return;  // the client was told to go elsewhere
    if (r && r->ok && opt.provider->draining()) drain_receipts.insert(job);  // drain() waits for it
    lk.unlock();
    if (r && r->ok) {
      (void)c->send(to_wire_result(*r));
      event(fmt::format("{{\"event\":\"job_done\",\"job\":\"{}\",\"client\":\"{}\",\"compute_ms\":{:.3f},\"model_cached\":{}}}",
                        ledger::to_hex(job), client, r->compute_ms, r->model_was_cached ? "true" : "false"));
      return;
    }
    std::string text = r ? r->error : failure;
    auto code = net::job_error_code::internal;
    if (r && r->error_is_input) code = net::job_error_code::bad_input;
    else if (r && r->failure_kind == error_kind::no_provider) code = net::job_error_code::model_missing;
    else if (r && r->failure_kind == error_kind::unsupported_here) code = net::job_error_code::unsupported;
    else if (r && r->failure_kind == error_kind::usage) code = net::job_error_code::not_awarded;  // payment refused
    send_job_error(c, job, code, text);
    event(fmt::format("{{\"event\":\"job_failed\",\"job\":\"{}\",\"client\":\"{}\",\"why\":\"{}\"}}", ledger::to_hex(job),
                      client, json_escape(text)));
  }
};

// ------------------------------------------------------------------ grid_node

keypair keypair_of(const net::identity& id) {
  keypair k;
  k.public_key = id.public_key();
  k.secret_key = id.secret_key();
  return k;
}

void configure_actor_system(caf::actor_system_config& cfg, int threads) {
  cfg.set("scheduler.max-threads", threads);
  cfg.set("work-stealing.moderate-poll-attempts", 0);
}

namespace {

caf::behavior node_actor(caf::event_based_actor* self, std::shared_ptr<grid_node::impl> p) {
  self->delayed_send(self, p->opt.heartbeat_interval, tick_atom::value);
  self->delayed_send(self, p->opt.gossip_interval, gossip_atom::value);
  return {
      [self, p](net::wire_up_atom, const net::connection_ptr& c) { p->on_up(self, c); },
      [p](net::wire_down_atom, const net::connection_ptr& c, const std::string& why) { p->on_down(c, why); },
      [self, p](net::wire_atom, const net::inbound_ptr& in) { p->on_message(self, in); },
      [p](dialed_atom, const std::string& u, const std::string& error, uint64_t conn) { p->on_dialed(u, error, conn); },
      [p](redial_atom, const std::string& u) {
        std::lock_guard<std::mutex> lk(p->mu);
        p->dial_locked(u, std::nullopt);
      },
      [self, p](tick_atom) {
        p->on_tick();
        self->delayed_send(self, p->opt.heartbeat_interval, tick_atom::value);
      },
      [p](rumor_atom) { p->on_rumor(); },
      [p](dialback_atom, uint64_t conn, uint64_t nonce, const std::string& target, const std::string& error) {
        p->on_dial_back_done(conn, nonce, target, error);
      },
      [p](relaylink_atom, const std::string& u, const net::connection_ptr& c, const std::string& error) {
        p->on_relay_link(u, c, error);
      },
      [self, p](gossip_atom) {
        p->on_gossip();
        self->delayed_send(self, p->opt.gossip_interval, gossip_atom::value);
      },
  };
}

expected<std::pair<std::string, uint16_t>> split_listen(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return invalid_input("listen address '{}' is not HOST:PORT", s);
  std::string host = s.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(s.substr(colon + 1));
  } catch (...) {
    return invalid_input("listen address '{}' has no port number", s);
  }
  if (port < 0 || port > 65535) return invalid_input("listen port {} is out of range", port);
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, static_cast<uint16_t>(port));
}

}  // namespace

grid_node::grid_node(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

grid_node::~grid_node() { stop(); }

expected<std::unique_ptr<grid_node>> grid_node::start(caf::actor_system& sys, const net::identity& self,
                                                      node_options options) {
  auto p = std::make_shared<impl>(sys, self, std::move(options));
  if (p->offering()) {
    uint64_t limit = p->opt.max_upload_bytes > 0 ? static_cast<uint64_t>(p->opt.max_upload_bytes)
                                                 : 2 * static_cast<uint64_t>(p->opt.provider->max_model_bytes());
    p->upload_budget = std::make_shared<net::byte_budget>(limit);
  }
  if (p->offering()) p->local_provider = spawn_provider(sys, p->opt.provider);
  p->actor = sys.spawn(node_actor, p);

  net::transport_options to;
  to.session_mac = p->opt.session_mac;
  to.read_window = 8;
  to.tls_cert_file = p->opt.tls_cert;
  to.tls_key_file = p->opt.tls_key;
  to.max_frame_bytes = net::kDefaultMaxFrameBytes;
  // A peer address that never answers (or accepts and stays silent) frees its dial soon.
  to.connect_timeout = std::chrono::milliseconds(3000);
  to.handshake_timeout = std::chrono::milliseconds(5000);
  std::weak_ptr<impl> weak = p;
  to.hello_source = [weak]() {
    net::hello h;
    auto q = weak.lock();
    if (!q) return h;
    h.role = q->offering() ? net::node_role::provider : net::node_role::client;
    {
      std::lock_guard<std::mutex> lk(q->hello_mu);
      h.listen_url = q->hello_url;
    }
    h.software = q->opt.software;
    if (q->offering()) {
      provider_info info = q->opt.provider->info();
      for (size_t i = 0; i < info.devices.size(); ++i) h.devices.push_back(to_device_info(info.devices[i], static_cast<int>(i)));
      h.ledger.hash = info.ledger_head;
      h.ledger.count = info.ledger_count;
      h.price_per_gflop = info.price_per_gflop;
      h.slots = info.slots;
      h.max_model_bytes = static_cast<uint64_t>(q->opt.provider->max_model_bytes());
    }
    return h;
  };
  to.http_get = [weak](const std::string& path) -> std::optional<std::string> {
    auto q = weak.lock();
    if (!q || path != "/metrics") return std::nullopt;
    return q->metrics_text();
  };
  if (p->opt.relay && p->offering() && !p->opt.listen.empty()) {
    p->relay = std::make_shared<net::relay_service>(p->opt.relay_options);
    to.relay = p->relay->hooks();
  }
  auto t = net::transport::create(self, to, net::actor_handlers(p->actor));
  if (!t) {
    caf::anon_send_exit(p->actor, caf::exit_reason::user_shutdown);
    if (p->local_provider) caf::anon_send_exit(p->local_provider, caf::exit_reason::user_shutdown);
    return t.error();
  }
  p->transport = std::shared_ptr<net::transport>(std::move(t).value());
  std::unique_ptr<grid_node> node(new grid_node(p));
  if (!p->opt.listen.empty()) {
    auto hp = split_listen(p->opt.listen);
    if (!hp) return hp.error();
    auto port = p->transport->listen(hp->first, hp->second);
    if (!port) return port.error();
    p->url = p->transport->url();
    if (p->relay) p->relay->set_public_url(p->url);
    std::lock_guard<std::mutex> lk(p->mu);
    p->publish_url_locked();
  }
  {
    std::lock_guard<std::mutex> lk(p->mu);
    p->dht_start();
  }
  {
    std::lock_guard<std::mutex> lk(p->mu);
    for (const auto& u : p->opt.bootstrap) {
      auto parsed = net::parse_ws_url(u);
      if (!parsed) return parsed.error();
      if (p->bootstrap.count(u)) continue;
      p->bootstrap[u] = "";
      p->dial_locked(u, std::nullopt);
    }
    // Relays are dialed at once: they answer the dial-back question and are ready to attach.
    if (p->offering())
      for (const auto& u : p->opt.via_relays) {
        auto parsed = net::parse_ws_url(u);
        if (!parsed) return parsed.error().with_context("--via-relay");
        p->dial_relay_locked(u);
      }
  }
  return node;
}

std::string grid_node::url() const { return impl_->url; }
std::string grid_node::node_id() const { return impl_->self.node_id(); }

namespace {

// DATA_DIR/slow-dials.tsv: "UNIX_MS<TAB>URL" lines. Unreadable or malformed lines are skipped:
// the file only saves waiting, and losing it costs one wait.
std::map<std::string, int64_t> load_slow_dials(const std::string& path, int64_t now) {
  std::map<std::string, int64_t> out;
  std::ifstream in(path);
  std::string line;
  while (out.size() < kMaxSlowDials && std::getline(in, line)) {
    auto tab = line.find('\t');
    if (tab == std::string::npos || tab == 0 || tab + 1 >= line.size() || line.size() > 4096) continue;
    int64_t at = 0;
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + tab, at);
    if (ec != std::errc() || ptr != line.data() + tab) continue;
    if (at > now || now - at > kSlowDialMemoryMs) continue;
    out[line.substr(tab + 1)] = at;
  }
  return out;
}

void save_slow_dials(const std::string& path, const std::map<std::string, int64_t>& dials) {
  std::vector<std::pair<int64_t, std::string>> newest;
  for (const auto& [u, at] : dials) newest.push_back({at, u});
  std::sort(newest.rbegin(), newest.rend());
  if (newest.size() > kMaxSlowDials) newest.resize(kMaxSlowDials);
  std::string tmp = fmt::format("{}.{}.tmp", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [at, u] : newest) out << at << '\t' << u << '\n';
    if (!out.good()) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);  // atomic: concurrent runs never see half a file
  if (ec) std::filesystem::remove(tmp, ec);
}

}  // namespace

std::vector<std::string> grid_node::settle(std::chrono::milliseconds limit) {
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + limit;
  std::optional<std::vector<std::string>> large_grid_failures;
  const bool remember = !impl_->opt.slow_dials_file.empty();
  std::map<std::string, int64_t> slow_at_start;
  if (remember) {
    auto loaded = load_slow_dials(impl_->opt.slow_dials_file, now_ms());
    std::lock_guard<std::mutex> lk(impl_->mu);
    for (const auto& [u, at] : loaded) impl_->slow_dials.emplace(u, at);
    slow_at_start = impl_->slow_dials;
  }
  auto remember_unanswered = [&] {  // under mu
    if (!remember) return;
    int64_t now = now_ms();
    for (const auto& u : impl_->dialing)
      if (!impl_->bootstrap.count(u)) impl_->slow_dials[u] = now;
    if (impl_->slow_dials != slow_at_start) save_slow_dials(impl_->opt.slow_dials_file, impl_->slow_dials);
  };
  while (!large_grid_failures) {
    {
      std::lock_guard<std::mutex> lk(impl_->mu);
      bool pending = false;
      for (const auto& [u, state] : impl_->bootstrap) pending = pending || state.empty();
      for (const auto& [id, cs] : impl_->conns) pending = pending || !cs.got_peers;
      // Peers learned of by gossip get a short wait once some provider is there: an address
      // that never answers must not hold every run up until its dial times out. One that did
      // not answer an earlier run in time is not waited for at all while a provider is there.
      bool waited = std::chrono::steady_clock::now() - start >= kGossipDialWait;
      bool providers = impl_->provider_count_locked() > 0;
      bool fresh_dial = false;
      for (const auto& u : impl_->dialing) fresh_dial = fresh_dial || !impl_->slow_dials.count(u);
      if (!impl_->dialing.empty() && !providers) pending = true;
      if (fresh_dial && !waited) pending = true;
      if (!pending || std::chrono::steady_clock::now() >= deadline) {
        remember_unanswered();
        std::vector<std::string> failures;
        for (const auto& [u, state] : impl_->bootstrap)
          if (state.empty()) failures.push_back(fmt::format("{}: no answer within {} ms", u, limit.count()));
          else if (state != "ok") failures.push_back(state);
        const size_t above = impl_->opt.dht_lookup_above ? impl_->opt.dht_lookup_above : impl_->opt.max_providers;
        if (!impl_->opt.wanted_model || impl_->table.size() <= above) return failures;
        large_grid_failures = std::move(failures);
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // A large grid: the model's providers (then any) through the DHT, within what is left.
  auto left = [&] {
    return std::max(std::chrono::milliseconds(500), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                        deadline - std::chrono::steady_clock::now()));
  };
  auto found = find_providers(discovery::model_key(*impl_->opt.wanted_model), {}, 20, left());
  if (found.size() < 8) find_providers(discovery::providers_key(), {}, 20, left());
  return *large_grid_failures;
}

std::vector<discovery::provider_record> grid_node::find_providers(const discovery::dht_key& key,
                                                                 const discovery::provider_filter& filter, size_t want,
                                                                 std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (!impl_->dht) return {};
    id = impl_->dht->find_providers(now_ms(), key, filter, want);
    impl_->dht_flush_locked();
    if (id == 0) return {};
  }
  std::vector<discovery::provider_record> records;
  std::set<std::string> dialed;
  for (bool done = false; std::chrono::steady_clock::now() < deadline;) {
    {
      std::lock_guard<std::mutex> lk(impl_->mu);
      if (!done) {
        auto it = impl_->dht_results.find(id);
        if (it != impl_->dht_results.end()) {
          records = std::move(it->second.records);
          impl_->dht_results.erase(it);
          done = true;
          for (const auto& r : records) {
            if (r.provider == impl_->self.public_key() || impl_->connected_to_locked(r.provider)) continue;
            if (!net::parse_ws_url(r.addresses.front())) continue;
            dialed.insert(r.addresses.front());
            impl_->dial_locked(r.addresses.front(), r.provider);
          }
        }
      }
      if (done) {
        bool waiting = false;
        for (const auto& u : dialed) waiting = waiting || impl_->dialing.count(u);
        if (!waiting) break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return records;
}

std::vector<provider_handle> grid_node::providers() {
  std::vector<provider_handle> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  std::set<key32> seen;
  for (const auto& [id, cs] : impl_->conns) {
    if (!cs.proxy || !cs.conn->is_open() || !seen.insert(cs.conn->peer_key()).second) continue;
    out.push_back({cs.proxy, cs.conn->peer_key(), cs.url});
  }
  return out;
}

namespace {

// Sends, waiting (up to `limit`) while the connection's send queue is full.
net::send_result send_waiting(const net::connection_ptr& c, const net::message& m, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (true) {
    net::send_result r = c->send(m);
    if (r != net::send_result::queue_full || std::chrono::steady_clock::now() >= until) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace

std::vector<gen_peer> grid_node::generation_peers() {
  std::vector<gen_peer> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  for (auto& [id, cs] : impl_->conns) {
    if (!cs.is_provider) continue;
    gen_peer p;
    p.key = cs.conn->peer_key();
    p.url = cs.url;
    p.actor = cs.proxy;
    net::connection_ptr conn = cs.conn;
    p.send = [conn](const net::message& m) {
      return send_waiting(conn, m, std::chrono::seconds(30)) == net::send_result::queued;
    };
    p.upload = [conn](const net::bytes16& session, const digest32& hash, std::shared_ptr<const std::string> bytes) -> status {
      auto plan = net::plan_transfer(hash, bytes->size(), net::choose_chunk_bytes(conn->peer_hello().max_frame_bytes), session);
      auto r = send_waiting(conn, plan, std::chrono::seconds(60));
      uint32_t n = net::chunk_count(plan.total_bytes, plan.chunk_bytes);
      for (uint32_t i = 0; i < n && r == net::send_result::queued; ++i)
        r = send_waiting(conn, net::chunk_at(plan, *bytes, i), std::chrono::seconds(60));
      if (r != net::send_result::queued) return status(error_kind::io, fmt::format("cannot send the model: {}", net::to_string(r)));
      return status::ok();
    };
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<peer_view> grid_node::peers() {
  std::vector<peer_view> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  for (const auto& r : impl_->table.all()) {
    peer_view v;
    v.record = r;
    v.connected = impl_->connected_to_locked(r.key);
    v.node_id = net::node_id_of(r.key);
    v.rtt_ms = static_cast<double>(r.rtt_ms);
    for (const auto& [id, cs] : impl_->conns)
      if (cs.conn->peer_key() == r.key && cs.conn->rtt_us() >= 0) v.rtt_ms = cs.conn->rtt_us() / 1000.0;
    out.push_back(std::move(v));
  }
  return out;
}

size_t grid_node::known_peers() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->table.size();
}

void grid_node::ping_all() {
  for (auto& c : impl_->transport->connections()) c->ping();
}

int grid_node::drain(std::chrono::milliseconds grace, const std::function<bool()>& hurry) {
  auto& p = *impl_;
  if (!p.offering()) return 0;
  p.opt.provider->drain();
  if (p.opt.generation) p.opt.generation->stop();  // their clients fail over
  auto deadline = std::chrono::steady_clock::now() + grace;
  // Once nothing runs, the answers are queued: give them until the deadline to go out.
  auto flushed = [&] {
    while (std::chrono::steady_clock::now() < deadline && !(hurry && hurry())) {
      bool empty = true;
      for (auto& c : p.transport->connections()) empty = empty && (c->queued_bytes() == 0 || !c->is_open());
      if (empty) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(p.mu);
      if (p.running.empty()) {
        lk.unlock();
        flushed();
        // The clients of jobs answered while draining countersign them just after: wait a
        // little for those receipts so that the provider's ledger records the paid work.
        auto receipts_by = std::min(deadline, std::chrono::steady_clock::now() + kDrainReceiptWait);
        while (std::chrono::steady_clock::now() < receipts_by && !(hurry && hurry())) {
          {
            std::lock_guard<std::mutex> rl(p.mu);
            if (p.drain_receipts.empty()) break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return 0;
      }
      if (std::chrono::steady_clock::now() >= deadline || (hurry && hurry())) {
        int handed = 0;
        for (const auto& [job, rj] : p.running) {
          auto it = p.conns.find(rj.conn);
          p.handed_back.insert(job);
          if (rj.cancel) rj.cancel->store(true);
          if (it == p.conns.end()) continue;
          send_job_error(it->second.conn, job, net::job_error_code::draining,
                         "the provider is shutting down; run the job elsewhere");
          ++handed;
        }
        p.opt.provider->stop();
        return handed;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// -------- reachability and relays

void grid_node::impl::on_reach_message(caf::event_based_actor*, const net::connection_ptr& c, conn_state& cs,
                                       const net::message& m) {
  if (const auto* db = std::get_if<net::dial_back>(&m)) {
    // Dial the address the peer's Hello gave (never one the request names), once per
    // connection, four at a time, bounded by the transport's connect and handshake timeouts.
    std::string target = cs.url;
    if (!net::relayed_node_id(net::parse_ws_url(target) ? net::parse_ws_url(target)->path : "").empty())
      return;  // a relayed address says nothing about whether the node can be dialed: no verdict
    if (target.empty() || wildcard_url(target)) {
      (void)c->send(net::dial_back_result{db->nonce, false, target, "no listen address to dial"});
      return;
    }
    // Busy, or asked before on this connection: no answer (no verdict either way); the node
    // asks its other peers.
    if (dial_backs_running >= 4 || !dialed_back_for.insert(c->id()).second) return;
    if (dialed_back_for.size() > 4096) dialed_back_for.clear();
    ++dial_backs_running;
    caf::actor a = actor;
    uint64_t conn = c->id(), nonce = db->nonce;
    transport->connect(
        target,
        [a, conn, nonce, target](expected<net::connection_ptr> r) {
          if (r) (*r)->close(net::goodbye_reason::normal, "dial-back done");
          caf::anon_send(a, dialback_atom::value, conn, nonce, target, r ? std::string() : r.error().message());
        },
        c->peer_key());
    return;
  }
  if (const auto* r = std::get_if<net::dial_back_result>(&m)) {
    if (!asked_dial_back.count(c->id()) || r->nonce != c->id()) return;  // not asked: ignored
    asked_dial_back.erase(c->id());
    if (r->reachable) {
      if (reach_state == reach::reachable) return;
      bool was_behind = reach_state == reach::behind_nat;
      reach_state = reach::reachable;
      announced.clear();
      reached_url = r->url;
      dht_readdress_locked();
      // The address the peer reached us at (our own may be 0.0.0.0).
      event(fmt::format("{{\"event\":\"reachable\",\"url\":\"{}\",\"checked_by\":\"{}\"}}",
                        json_escape(r->url.empty() ? url : r->url), c->peer_id()));
      if (was_behind)
        for (auto& [u, l] : relay_links)
          if (auto lc = conns.find(l.conn); l.conn && l.attached && lc != conns.end())
            (void)lc->second.conn->send(net::relay_attach{false});
      announce_locked();
      return;
    }
    if (reach_state != reach::unknown) return;
    reach_state = reach::behind_nat;
    publish_url_locked();
    dht_readdress_locked();
    event(fmt::format("{{\"event\":\"unreachable\",\"url\":\"{}\",\"checked_by\":\"{}\",\"why\":\"{}\"}}",
                      json_escape(r->url.empty() ? url : r->url), c->peer_id(), json_escape(r->detail)));
    if (opt.via_relays.empty() && relay_peers.empty())
      event("{\"event\":\"note\",\"text\":\"behind NAT and no relay known: give --via-relay URL\"}");
    use_relays_locked();
    return;
  }
  if (const auto* a = std::get_if<net::relay_attach>(&m)) {
    net::relay_attach_ack ack;
    if (relay) ack = relay->on_attach(c, *a);
    else ack.detail = "this node is no relay";
    (void)c->send(ack);
    if (ack.accepted) event(fmt::format("{{\"event\":\"relay_attached\",\"node_id\":\"{}\"}}", c->peer_id()));
    return;
  }
  if (const auto* ack = std::get_if<net::relay_attach_ack>(&m)) {
    for (auto& [u, l] : relay_links) {
      if (l.conn != c->id()) continue;
      if (!ack->accepted) {
        event(fmt::format("{{\"event\":\"relay_refused\",\"relay\":\"{}\",\"why\":\"{}\"}}", u, json_escape(ack->detail)));
        return;
      }
      l.attached = true;
      if (announced.empty()) {
        // The relayed address is built on the URL we reached the relay at, which the relay
        // (listening on 0.0.0.0, say) may not know.
        announced = net::relayed_url(u, self.node_id());
        event(fmt::format("{{\"event\":\"behind_nat\",\"relay\":\"{}\",\"url\":\"{}\"}}", u, announced));
        announce_locked();
      }
      return;
    }
    return;
  }
  if (const auto* in = std::get_if<net::relay_incoming>(&m)) {
    for (auto& [u, l] : relay_links) {
      if (l.conn != c->id() || !l.attached) continue;
      std::string base = u;
      while (!base.empty() && base.back() == '/') base.pop_back();
      auto parsed = net::parse_ws_url(base);
      if (!parsed) return;
      parsed->path = net::accept_path(in->token);
      // A relay that sends circuit after circuit gets at most kMaxAnswering dials at once.
      if (answering->load() >= kMaxAnswering) return;
      ++*answering;
      transport->answer_circuit(parsed->str(), [n = answering](expected<net::connection_ptr>) { --*n; });
      return;
    }
    return;
  }
  if (const auto* st = std::get_if<net::node_status>(&m)) {
    if (st->relay && (st->reachable || !c->inbound()) && !cs.url.empty() && !wildcard_url(cs.url) && relay_peers.size() < 64) {
      relay_peers.insert(cs.url);
      use_relays_locked();
    }
    auto parsed = net::parse_ws_url(st->url);
    if (!st->url.empty() && parsed && !wildcard_url(st->url) && st->url != cs.url) {
      // The peer moved (behind NAT: its relayed address): reach it there from now on.
      cs.url = st->url;
      const net::hello& h = c->peer_hello();
      table.heard_from(h.node_key, cs.url, info_from_hello(h), cs.is_provider, now_ms());
    }
    return;
  }
}

void grid_node::impl::on_dial_back_done(uint64_t conn, uint64_t nonce, const std::string& target, const std::string& error) {
  std::lock_guard<std::mutex> lk(mu);
  --dial_backs_running;
  auto it = conns.find(conn);
  if (it == conns.end()) return;
  (void)it->second.conn->send(net::dial_back_result{nonce, error.empty(), target, error});
}

void grid_node::impl::on_relay_link(const std::string& u, const net::connection_ptr& c, const std::string& error) {
  std::lock_guard<std::mutex> lk(mu);
  relay_link& l = relay_links[u];
  l.dialing = false;
  if (!c) {
    event(fmt::format("{{\"event\":\"relay_unreachable\",\"relay\":\"{}\",\"why\":\"{}\"}}", u, json_escape(error)));
    return;
  }
  l.conn = c->id();
  if (reach_state == reach::behind_nat) (void)c->send(net::relay_attach{true});
}

std::string grid_node::reachability() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  switch (impl_->reach_state) {
    case impl::reach::reachable: return "reachable";
    case impl::reach::behind_nat: return "behind_nat";
    default: return "unknown";
  }
}

std::string grid_node::announced_url() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->reach_url_locked();
}

std::string grid_node::dht_address() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->dht ? impl_->dht->self().address : std::string();
}

std::optional<net::relay_counters> grid_node::relay_counters() const {
  if (!impl_->relay) return std::nullopt;
  return impl_->relay->counters();
}

// Jobs per execution on this provider, as a Prometheus histogram.
static std::string batch_size_histogram(const provider_counters& c) {
  std::string out =
      "# HELP gpugrid_batch_size Jobs per execution (1: run alone).\n# TYPE gpugrid_batch_size histogram\n";
  int64_t cumulative = 0;
  double sum = 0;
  for (size_t i = 0; i < kBatchSizeBuckets; ++i) {
    int64_t n = c.batch_sizes[i].load();
    cumulative += n;
    if (i + 1 < kBatchSizeBuckets) out += fmt::format("gpugrid_batch_size_bucket{{le=\"{}\"}} {}\n", kBatchSizeBounds[i], cumulative);
    else out += fmt::format("gpugrid_batch_size_bucket{{le=\"+Inf\"}} {}\n", cumulative);
  }
  // Singles count 1 each; merged executions carried batched_jobs together.
  sum = static_cast<double>(c.batch_sizes[0].load() + c.batched_jobs.load());
  out += fmt::format("gpugrid_batch_size_sum {}\ngpugrid_batch_size_count {}\n", sum, cumulative);
  return out;
}

std::string grid_node::impl::metrics_text() const {
  auto& p = *this;
  auto tm = p.transport ? p.transport->metrics() : net::transport_metrics{};
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, v);
  };
  size_t conns = 0, known = 0, running = 0, dht_contacts = 0, dht_records = 0;
  discovery::dht_stats dht_stats;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    conns = p.conns.size();
    known = p.table.size();
    running = p.running.size();
    if (p.dht) {
      dht_contacts = p.dht->table().size();
      dht_records = p.dht->stored_records();
      dht_stats = p.dht->stats();
    }
  }
  metric("gpugrid_dht_contacts", "gauge", "Contacts in the DHT routing table.", static_cast<double>(dht_contacts));
  metric("gpugrid_dht_records", "gauge", "Provider records this node stores for the DHT.", static_cast<double>(dht_records));
  metric("gpugrid_dht_queries_total", "counter", "DHT queries received.", static_cast<double>(dht_stats.queries_in));
  metric("gpugrid_dht_refused_total", "counter", "DHT messages and records refused (bad, unsigned, over a bound).",
         static_cast<double>(dht_stats.bad_messages + dht_stats.records_refused + dht_stats.bad_signatures));
  if (p.offering()) {
    const auto& c = p.opt.provider->counters();
    metric("gpugrid_jobs_total", "counter", "Jobs completed.", static_cast<double>(c.jobs.load()));
    metric("gpugrid_job_failures_total", "counter", "Jobs that failed here.", static_cast<double>(c.failures.load()));
    metric("gpugrid_bids_total", "counter", "Bid requests answered.", static_cast<double>(c.bids.load()));
    metric("gpugrid_bid_declines_total", "counter", "Bid requests declined.", static_cast<double>(c.declines.load()));
    metric("gpugrid_model_bytes_received_total", "counter", "Model bytes received from clients.",
           static_cast<double>(c.model_bytes_received.load()));
    metric("gpugrid_input_bytes_total", "counter", "Input tensor bytes received.", static_cast<double>(c.input_bytes.load()));
    metric("gpugrid_output_bytes_total", "counter", "Output tensor bytes sent.", static_cast<double>(c.output_bytes.load()));
    metric("gpugrid_jobs_running", "gauge", "Jobs executing now.", static_cast<double>(c.busy.load()));
    metric("gpugrid_queue_depth", "gauge", "Jobs accepted and waiting for a slot.", static_cast<double>(c.queued.load()));
    metric("gpugrid_jobs_in_flight", "gauge", "Jobs received and not yet answered.", static_cast<double>(running));
    metric("gpugrid_draining", "gauge", "1 while the provider shuts down.", p.opt.provider->draining() ? 1 : 0);
    metric("gpugrid_batched_executions_total", "counter", "Executions that merged several jobs (dynamic batching).",
           static_cast<double>(c.batched_executions.load()));
    metric("gpugrid_batched_jobs_total", "counter", "Jobs run inside merged executions.", static_cast<double>(c.batched_jobs.load()));
    metric("gpugrid_batch_fallbacks_total", "counter", "Merged executions that failed and were redone job by job.",
           static_cast<double>(c.batch_fallbacks.load()));
    out += batch_size_histogram(c);
    metric("gpugrid_upload_bytes_held", "gauge", "Bytes of model uploads held (arriving or awaiting their job).",
           static_cast<double>(p.upload_budget ? p.upload_budget->used() : 0));
  }
  if (p.relay) {
    auto rc = p.relay->counters();
    metric("gpugrid_relay_attached", "gauge", "Providers attached to this relay.", static_cast<double>(rc.attached));
    metric("gpugrid_relay_circuits", "gauge", "Relay circuits open or waiting for their provider.",
           static_cast<double>(rc.open + rc.pending));
    metric("gpugrid_relay_circuits_total", "counter", "Relay circuits that reached their provider.", static_cast<double>(rc.opened));
    metric("gpugrid_relay_refused_total", "counter", "Relay circuits refused (not attached, caps).",
           static_cast<double>(rc.refused_unattached + rc.refused_source + rc.refused_total + rc.bad_accept));
    metric("gpugrid_relay_bytes_total", "counter", "Bytes passed through relay circuits.", static_cast<double>(rc.bytes));
  }
  metric("gpugrid_connections", "gauge", "Open peer connections.", static_cast<double>(conns));
  metric("gpugrid_peers_known", "gauge", "Peers in the peer table.", static_cast<double>(known));
  metric("gpugrid_frames_in_total", "counter", "Frames received.", static_cast<double>(tm.frames_in));
  metric("gpugrid_frames_out_total", "counter", "Frames sent.", static_cast<double>(tm.frames_out));
  metric("gpugrid_bytes_in_total", "counter", "Bytes received in frames.", static_cast<double>(tm.bytes_in));
  metric("gpugrid_bytes_out_total", "counter", "Bytes sent in frames.", static_cast<double>(tm.bytes_out));
  metric("gpugrid_frames_rejected_total", "counter", "Connections closed for misbehaving (bad frames, signatures, replays, handshakes).",
         static_cast<double>(tm.misbehaving()));
  metric("gpugrid_connections_refused_total", "counter", "Connections refused at the connection limit.",
         static_cast<double>(tm.refused_overload));
  return out;
}

std::string grid_node::metrics_text() const { return impl_->metrics_text(); }

net::transport_metrics grid_node::transport_metrics() const {
  return impl_->transport ? impl_->transport->metrics() : net::transport_metrics{};
}

void grid_node::stop() {
  if (!impl_) return;
  auto& p = *impl_;
  if (p.stopped.exchange(true)) return;
  if (p.opt.provider) p.opt.provider->stop();
  if (p.opt.generation) p.opt.generation->stop();
  if (p.relay) p.relay->stop();
  if (p.transport) p.transport->stop();
  caf::anon_send_exit(p.actor, caf::exit_reason::user_shutdown);
  if (p.local_provider) caf::anon_send_exit(p.local_provider, caf::exit_reason::user_shutdown);
}

}  // namespace gpugrid::grid
