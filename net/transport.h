// The WebSocket transport: a server and client for peers, one binary WebSocket message per frame.
//
// A transport owns its I/O threads (Boost.Asio/Beast, kept out of this header), the listening
// socket and every connection. Each connection runs on its own strand. A connection becomes
// visible to the caller only after the handshake (net/handshake.h) has proved the peer's node
// key; from then on every inbound frame has passed the size limit, the FlatBuffers verifiers,
// the signature or session-MAC check, the sequence number (0, 1, 2, ... per direction: replays,
// drops and reordering are refused) and the channel binding (a frame recorded on one connection
// is refused on any other) before a handler sees it.
//
// A peer that misbehaves — garbage, a text frame, an oversized frame, a bad signature, a replay,
// a message before the handshake, a half handshake, silence past the timeouts — is disconnected
// and counted in transport_metrics; the transport keeps serving everyone else.
//
// Flow control both ways:
//  - receiving: a connection reads its next frame only after the consumer has released the last
//    one (inbound::release() or dropping the inbound_ptr), up to read_window frames at once; a
//    slow consumer slows its peer down through TCP instead of growing memory here.
//  - sending: each connection has a bounded queue (frames and bytes). send() never blocks and
//    never grows memory past the bound: it returns queue_full and the caller decides (retry after
//    wait_writable(), drop, or close).
//
// Threads: handlers run on I/O threads (the connection's strand: never two at once for one
// connection) and must not block. Every method of transport and connection is thread-safe,
// except that connect_sync() and wait_writable() block and must not be called from a handler.
// Destroying the transport closes every connection (on_close runs for each) and joins its
// threads; connection and inbound handles may outlive it (their sends then report closed).
//
// TLS (wss://): a server with tls_cert_file/tls_key_file serves wss. Clients accept any server
// certificate, self-signed included: peers are authenticated by node key in the handshake, not
// by certificate authorities. TLS adds privacy against passive listeners.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "net/codec.h"
#include "net/identity.h"
#include "net/messages.h"

namespace gpugrid::net {

constexpr uint16_t kDefaultPort = 7447;

// A WebSocket that carries somebody else's gpugrid frames opaquely: a relay (net/relay.h) reads
// binary messages from one pipe and writes them to another. No gpugrid handshake or frame check
// runs at this end; the two far ends run them with each other, end to end.
//
// Flow control: one message is read at a time; the next only after resume(). Writes queue
// without bound here, so the relay bounds what it has handed to a pipe and not yet seen written
// (the `written` callbacks), pausing the reading side past that.
// Threads: handlers run on the pipe's I/O strand and must not block; methods are thread-safe.
class relay_pipe {
 public:
  virtual ~relay_pipe() = default;
  virtual uint64_t id() const = 0;
  virtual const std::string& remote_address() const = 0;  // "ip:port"
  // Sets the handlers and reads the first message. on_close runs once (ok: orderly close).
  virtual void start(std::function<void(std::string data)> on_data,
                     std::function<void(const status& why)> on_close) = 0;
  // Reads the next message, at once or after `delay` (bandwidth pacing).
  virtual void resume(std::chrono::milliseconds delay = std::chrono::milliseconds(0)) = 0;
  // Queues one binary message; `written` runs once it went out or the pipe closed. False (and
  // `written` never runs) when the pipe is closed.
  virtual bool write(std::string data, std::function<void()> written) = 0;
  virtual void close() = 0;
};
using pipe_ptr = std::shared_ptr<relay_pipe>;

// Requests for paths under /relay/ are relay circuits, not peer connections.
struct pipe_hooks {
  // Before the WebSocket upgrade: ok, or why not (answered with HTTP 404 and the text; 503 when
  // the error kind is io: a cap or budget). Unset: every /relay/ request gets 404.
  std::function<status(const std::string& path, const std::string& remote_ip)> admit;
  // After the upgrade, on the pipe's strand; the hook must start() or close() the pipe.
  std::function<void(const std::string& path, const std::string& remote_ip, pipe_ptr)> opened;
};

struct transport_options {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;   // larger inbound frames close the connection (1009)
  size_t send_queue_frames = 256;                   // per connection
  size_t send_queue_bytes = size_t{256} << 20;      // per connection; an empty queue takes any one frame
  size_t read_window = 1;                           // unreleased inbound frames per connection
  // Connection caps. Established connections beyond max_connections are refused, and so are
  // more than max_per_identity with one node key; connections still in their handshake (or a
  // plain HTTP GET such as /metrics) have a budget of their own, max_pending, so idle peers
  // holding every slot never lock new peers or /metrics out. One IP address may hold at most
  // max_per_address inbound connections in any state.
  size_t max_connections = 1024;
  size_t max_per_identity = 4;
  size_t max_pending = 64;
  size_t max_per_address = 128;
  std::chrono::milliseconds connect_timeout{10000}; // TCP connect (and TLS handshake, client side)
  std::chrono::milliseconds handshake_timeout{10000};  // TLS + WebSocket + Hello/HelloAck
  std::chrono::milliseconds idle_timeout{60000};    // silence; keep-alive pings go out at half of it
  int io_threads = 1;
  bool session_mac = false;         // offer session MACs instead of signing every frame (codec.h)
  std::string tls_cert_file;        // PEM certificate chain: the server speaks wss://
  std::string tls_key_file;         // PEM private key
  hello local;                      // what this node says about itself (role, URL, devices, prices)
  std::function<hello()> hello_source;  // if set, called per connection instead of `local`
  // Plain HTTP GET on the same port (a request that is not a WebSocket upgrade): returns the
  // response body (text/plain) for a path, or nullopt for 404. Unset: every such request is
  // answered 404. Called on an I/O thread; must not block.
  std::function<std::optional<std::string>(const std::string& path)> http_get;
  pipe_hooks relay;                                 // relay circuits (net/relay.h)
  uint16_t newest_version = kProtocolVersion;      // the versions offered (tests play old/new peers)
  uint16_t oldest_version = kMinProtocolVersion;
};

enum class send_result : uint8_t {
  queued,        // accepted; will be written in order
  queue_full,    // the connection's send queue is at its bound: try again later
  closed,        // the connection is closing or closed
  too_large,     // the encoded frame exceeds the peer's frame limit
  encode_failed, // the message cannot be encoded (see codec.h); nothing was queued
};
const char* to_string(send_result r);

// Counters since the transport started (a snapshot: plain numbers).
struct transport_metrics {
  int64_t accepted = 0;            // inbound TCP connections
  int64_t dialed = 0;              // outbound connection attempts
  int64_t established = 0;         // handshakes completed
  int64_t closed = 0;              // connections fully closed (any reason)
  int64_t refused_overload = 0;    // refused at any connection cap (the three below included)
  int64_t refused_pending = 0;     // at max_pending
  int64_t refused_address = 0;     // at max_per_address
  int64_t refused_identity = 0;    // at max_per_identity
  int64_t handshake_failed = 0;    // TLS/WebSocket/Hello failures, including the ones below
  int64_t version_mismatch = 0;
  int64_t auth_failed = 0;         // bad HelloAck proof, wrong peer key
  int64_t timeouts = 0;            // connect, handshake or idle
  int64_t oversized = 0;           // frames over max_frame_bytes
  int64_t text_frames = 0;
  int64_t bad_frames = 0;          // not a flatbuffer, bad envelope/body, unknown or bad message
  int64_t bad_signatures = 0;      // bad Ed25519 signature or session MAC
  int64_t replays = 0;             // wrong sequence number, channel binding or sender
  int64_t protocol_errors = 0;     // a message out of place (before the handshake, a 2nd Hello)
  int64_t frames_in = 0, frames_out = 0;
  int64_t bytes_in = 0, bytes_out = 0;
  int64_t send_queue_full = 0;
  int64_t http_requests = 0;       // plain HTTP GETs answered (e.g. /metrics)
  // Every connection closed for misbehaving: oversized + text + bad frames + signatures + replays
  // + protocol errors + handshake failures.
  int64_t misbehaving() const;
};

class connection;
using connection_ptr = std::shared_ptr<connection>;

// One established connection. Obtained from on_open or connect(); cheap to copy around.
class connection {
 public:
  virtual ~connection() = default;

  virtual uint64_t id() const = 0;
  virtual bool inbound() const = 0;                 // the peer dialed us
  virtual const key32& peer_key() const = 0;
  std::string peer_id() const { return node_id_of(peer_key()); }
  virtual const hello& peer_hello() const = 0;      // what the peer said about itself
  virtual const std::string& remote_address() const = 0;  // "ip:port"
  virtual uint16_t version() const = 0;             // the agreed protocol version
  virtual bool session_mac() const = 0;             // frames carry MACs, not signatures

  // Encodes `m` on the calling thread (signature or MAC included) and queues it. Never blocks.
  virtual send_result send(const message& m) = 0;
  // Blocks until the send queue has room for a frame or `timeout` passes; false if it did not
  // or the connection closed. Not from an I/O thread.
  virtual bool wait_writable(std::chrono::milliseconds timeout) = 0;
  virtual size_t queued_frames() const = 0;
  virtual size_t queued_bytes() const = 0;

  // Sends Goodbye(reason, text) after what is queued, then closes. Idempotent.
  virtual void close(goodbye_reason reason = goodbye_reason::normal, const std::string& text = "") = 0;
  virtual bool is_open() const = 0;

  // Sends a Ping; the Pong's round trip shows up in rtt_us() (-1 until one came back).
  virtual void ping() = 0;
  virtual int64_t rtt_us() const = 0;
};

// One received message. Reading on its connection resumes when it is released.
class inbound {
 public:
  inbound(connection_ptr from, decoded_frame f, std::function<void()> on_release);
  ~inbound();
  inbound(const inbound&) = delete;
  inbound& operator=(const inbound&) = delete;

  const connection_ptr& from() const { return from_; }
  const decoded_frame& frame() const { return frame_; }
  const message& msg() const { return frame_.msg; }
  // Lets the connection read its next frame; idempotent, also done by the destructor. Call it
  // as soon as the message is taken (copied or handled) if you keep the object longer.
  void release();

 private:
  connection_ptr from_;
  decoded_frame frame_;
  std::function<void()> on_release_;
  std::atomic<bool> released_{false};
};
using inbound_ptr = std::shared_ptr<inbound>;

struct transport_handlers {
  std::function<void(const connection_ptr&)> on_open;   // handshake done (inbound and outbound)
  std::function<void(inbound_ptr)> on_message;          // every message except Ping/Pong/Goodbye
  // Once per connection that was opened; `why` is ok for an orderly close by either side.
  std::function<void(const connection_ptr&, const status& why)> on_close;
  // An inbound connection that failed before its handshake completed (garbage, timeout,
  // version mismatch, ...): for logging. `remote` is "ip:port".
  std::function<void(const std::string& remote, const status& why)> on_refused;
};

struct ws_url {
  bool tls = false;
  std::string host;      // without brackets for IPv6
  uint16_t port = kDefaultPort;
  std::string path = "/";
  std::string str() const;
};
// ws://HOST[:PORT][/PATH] or wss://...; the port defaults to 7447.
expected<ws_url> parse_ws_url(const std::string& url);

class transport {
 public:
  // Fails when the TLS certificate or key cannot be loaded (the message names the file).
  static expected<std::unique_ptr<transport>> create(const identity& self, transport_options options,
                                                      transport_handlers handlers);
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  // Listens on host:port (port 0: an ephemeral port); returns the bound port. Once per transport.
  expected<uint16_t> listen(const std::string& host, uint16_t port);
  // "ws://HOST:PORT" (or wss) of the listening socket; empty when not listening.
  std::string url() const;

  // Dials a peer; `done` runs once on an I/O thread with the established connection or the
  // reason it failed (names the URL). `expect`: refuse any other node key.
  void connect(const std::string& url, std::function<void(expected<connection_ptr>)> done,
               std::optional<key32> expect = std::nullopt);
  // Relayed addresses: a URL whose path is /relay/<node id> reaches that node through the relay
  // at its host; the connection is refused unless the far end proves that very node id.
  //
  // Dials a relay's circuit endpoint (RELAY/relay/accept/<token>) and plays the dialed side of
  // the handshake there: the client at the circuit's other end dialed us. The connection is
  // reported as inbound, with the relay's address as its remote address.
  void answer_circuit(const std::string& url, std::function<void(expected<connection_ptr>)> done);
  // connect() and wait. Not from an I/O thread.
  expected<connection_ptr> connect_sync(const std::string& url, std::optional<key32> expect = std::nullopt);

  std::vector<connection_ptr> connections() const;
  transport_metrics metrics() const;
  const identity& self() const;
  // Closes everything and joins the I/O threads (waits up to `grace` for Goodbyes to go out).
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(1000));

  struct impl;

 private:
  explicit transport(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

}  // namespace gpugrid::net
