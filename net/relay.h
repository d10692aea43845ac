// Relay circuits: how a provider that nobody can dial (behind NAT) still serves clients.
//
// A reachable node started with `offer --relay` keeps a relay_service. A provider behind NAT
// keeps an ordinary gpugrid connection to the relay and sends RelayAttach on it; the relay
// answers with the provider's relayed address, ws(s)://RELAY/relay/<node id>. A client dials
// that address like any peer URL: the relay (the HTTP upgrade of /relay/<node id>) holds the
// client's WebSocket as a pipe, sends RelayIncoming(token) to the provider on its attach
// connection, and the provider dials RELAY/relay/accept/<hex token>, playing the dialed side of
// the handshake there (transport::answer_circuit). From then on the relay copies binary
// WebSocket messages between the two pipes without reading them (up to 8 MiB on their way out
// per direction, then it reads on only as writes complete, so memory stays bounded): the
// gpugrid handshake, signatures and session MACs run end to end between client and provider,
// so the relay can neither read (under wss), forge, replay nor reorder frames unnoticed, and a
// client refuses any node but the one its relayed address names.
//
// Budgets (relay_options): circuits in all and per client address, attached providers, and
// bytes per second over all circuits (a token bucket: a circuit over budget is read later, not
// dropped). A circuit whose provider does not dial back within accept_timeout is closed.
// Refusals are counted and logged (the 1st, 2nd, 4th, 8th, ... of each kind, so a flood cannot
// flood the log) and cost other circuits nothing.
//
// relay_core is the bookkeeping as plain logic (no I/O, not thread-safe) so tests drive every
// transition; relay_service adds the pipes and a lock and is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "net/messages.h"
#include "net/transport.h"

namespace gpugrid::net {

struct relay_options {
  size_t max_circuits = 256;            // pending + open circuits, all clients together
  size_t max_circuits_per_source = 16;  // pending + open circuits per client IP address
  size_t max_attached = 256;            // providers attached at once
  double max_bytes_per_second = 0;      // all circuits, both directions; 0: unlimited
  int64_t accept_timeout_ms = 5000;     // for the provider to dial back a circuit
  // Called for the refusals that are logged (one line each); from any thread, must not block.
  std::function<void(const std::string&)> log;
  // Test doubles only: what to pass on in place of each message (client -> provider when
  // `upstream`): nothing (a drop), the message altered, several (duplicates, a held message
  // released late: reordering). Unset: each message as it came.
  std::function<std::vector<std::string>(std::string data, bool upstream)> tamper;
};

// "/relay/<node id>" -> the node id; "" when `path` is no relayed address.
std::string relayed_node_id(const std::string& path);
// The relayed address of `node_id` at the relay whose URL is `relay_url` ("ws://HOST:PORT").
std::string relayed_url(const std::string& relay_url, const std::string& node_id);
// "/relay/accept/<32 hex digits>" <-> token.
std::string accept_path(const bytes16& token);
std::optional<bytes16> parse_accept_path(const std::string& path);

struct relay_counters {
  size_t attached = 0, pending = 0, open = 0;
  int64_t opened = 0;               // circuits that reached their provider
  int64_t refused_unattached = 0;   // asked for a node not attached here
  int64_t refused_source = 0;       // at max_circuits_per_source
  int64_t refused_total = 0;        // at max_circuits
  int64_t refused_attach = 0;       // at max_attached
  int64_t expired = 0;              // the provider never dialed back
  int64_t bad_accept = 0;           // an accept with an unknown or expired token
  int64_t bytes = 0;                // passed on, both directions
};

class relay_core {
 public:
  explicit relay_core(relay_options o);

  // Provider `node_id` on connection `conn` takes circuits here. io error at max_attached.
  status attach(const std::string& node_id, uint64_t conn);
  // Every attachment made on `conn` ends (the connection closed or the provider detached).
  void detach(uint64_t conn);
  std::optional<uint64_t> attached_conn(const std::string& node_id) const;

  // May a client at `source_ip` ask for a circuit to `node_id`? invalid_input when the node is
  // not attached here, io at a cap. Logs the refusal.
  status admit(const std::string& node_id, const std::string& source_ip, int64_t now_ms);
  // Takes a circuit slot (admit's checks again): the circuit id and the token the provider must
  // dial back with.
  struct request_result {
    uint64_t circuit = 0;
    bytes16 token{};
    uint64_t provider_conn = 0;
  };
  expected<request_result> request(const std::string& node_id, const std::string& source_ip, int64_t now_ms);
  // Is `token` a pending circuit's? (Before the provider's upgrade.)
  bool pending_token(const bytes16& token, int64_t now_ms) const;
  // The provider dialed back: the circuit id; an unknown or expired token is refused.
  expected<uint64_t> accept(const bytes16& token, int64_t now_ms);
  // The circuit ended (either side closed, or it expired): its slot is free.
  void close(uint64_t circuit);
  // Pending circuits whose provider did not come within accept_timeout_ms: closed here, and
  // returned so the caller closes their client pipes.
  std::vector<uint64_t> expire(int64_t now_ms);
  // Bandwidth: counts `bytes` passed on and returns how long (ms) the sending side should wait
  // before its next message so that the total stays within max_bytes_per_second.
  int64_t pace(size_t bytes, int64_t now_ms);

  relay_counters counters() const;
  const relay_options& options() const { return opt_; }

 private:
  struct circuit {
    std::string node_id, source_ip;
    bytes16 token{};
    int64_t created_ms = 0;
    bool open = false;
  };
  status check(const std::string& node_id, const std::string& source_ip);
  void note(int64_t& counter, const std::string& line);

  relay_options opt_;
  std::map<std::string, uint64_t> attached_;   // node id -> its attach connection
  std::map<uint64_t, circuit> circuits_;
  std::map<bytes16, uint64_t> by_token_;
  std::map<std::string, size_t> per_source_;
  uint64_t next_circuit_ = 1;
  uint64_t token_counter_ = 0;
  double bucket_bytes_ = 0;      // bytes that may still pass without waiting (may go negative)
  int64_t bucket_ms_ = -1;
  relay_counters c_;
};

// The relay as a node runs it: relay_core plus the pipes of open circuits. Create it shared
// (hooks() keeps a weak reference), hand hooks() to the transport, feed it RelayAttach messages
// and closed connections, and call tick() about once a second.
class relay_service : public std::enable_shared_from_this<relay_service> {
 public:
  explicit relay_service(relay_options o);
  ~relay_service();

  pipe_hooks hooks();
  // This relay's own URL (ws://HOST:PORT as peers reach it); relayed addresses build on it.
  void set_public_url(const std::string& url);
  // A RelayAttach on `c` (an established peer connection): the answer to send back.
  relay_attach_ack on_attach(const connection_ptr& c, const relay_attach& a);
  void on_closed(const connection_ptr& c);
  void tick();
  // Closes every circuit (the node is stopping).
  void stop();
  relay_counters counters() const;

 private:
  struct live {
    pipe_ptr client, provider;
  };
  void on_client(const std::string& node_id, const std::string& ip, pipe_ptr p);
  void on_provider(const bytes16& token, pipe_ptr p);
  void splice(uint64_t circuit, pipe_ptr client, pipe_ptr provider);
  void end(uint64_t circuit);
  static int64_t now_ms();

  mutable std::mutex mu_;
  relay_core core_;
  std::string public_url_;
  std::map<uint64_t, connection_ptr> attach_conns_;
  std::map<uint64_t, live> live_;
  bool stopped_ = false;
};

}  // namespace gpugrid::net
