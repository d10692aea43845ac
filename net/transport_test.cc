// The transport against a live server on 127.0.0.1: well-behaved peers, and every kind of
// misbehaving one (each is closed and counted, and the server keeps serving).
#include "net/transport.h"

#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <unistd.h>

#include "net/handshake.h"
#include "net/inbox.h"
#include "net/testing.h"

using namespace gpugrid;
using namespace gpugrid::net;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

transport_options fast_options() {
  transport_options o;
  o.connect_timeout = 1000ms;
  o.handshake_timeout = 400ms;
  o.idle_timeout = 4000ms;
  o.max_frame_bytes = 1 << 20;
  return o;
}

bid_request sample_request(uint8_t n) {
  bid_request r = std::get<bid_request>(testing::sample_messages()[6]);
  r.job[0] = n;
  return r;
}

// A server that answers every BidRequest with a Bid for the same job and queues everything
// else (and every event) in `in`.
struct server {
  inbox in;
  std::unique_ptr<transport> t;
  uint16_t port = 0;
  std::mutex mu;
  std::vector<std::string> refused;

  explicit server(transport_options o = fast_options(), bool answer = true) {
    o.local.listen_url = "ws://127.0.0.1:0";
    o.local.role = node_role::provider;
    transport_handlers h = in.handlers();
    if (answer) {
      auto queue = h.on_message;
      h.on_message = [queue](inbound_ptr m) {
        if (const auto* r = std::get_if<bid_request>(&m->msg())) {
          bid b;
          b.job = r->job;
          b.price = 0.5;
          (void)m->from()->send(b);
          return;
        }
        queue(std::move(m));
      };
    }
    h.on_refused = [this](const std::string&, const status& why) {
      std::lock_guard<std::mutex> lk(mu);
      refused.push_back(why.message());
    };
    auto made = transport::create(identity::generate(), o, std::move(h));
    REQUIRE(made.has_value());
    t = std::move(made).value();
    auto p = t->listen("127.0.0.1", 0);
    REQUIRE(p.has_value());
    port = *p;
  }
  std::string url() const { return t->url(); }
  transport_metrics m() const { return t->metrics(); }
  bool refused_with(const std::string& text) {
    std::lock_guard<std::mutex> lk(mu);
    for (auto& r : refused)
      if (r.find(text) != std::string::npos) return true;
    return false;
  }
};

// A well-behaved client: connects, asks for a bid, gets it.
void check_client_works(const std::string& url, transport_options o = fast_options()) {
  inbox in;
  auto t = transport::create(identity::generate(), o, in.handlers());
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(url);
  REQUIRE(c.has_value());
  REQUIRE((*c)->send(sample_request(77)) == send_result::queued);
  auto reply = in.next_message(3000ms);
  REQUIRE(reply != nullptr);
  REQUIRE(std::holds_alternative<bid>(reply->msg()));
  CHECK(std::get<bid>(reply->msg()).job[0] == 77);
}

// Waits until `pred` holds (metrics move on I/O threads).
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 3000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// A hand-driven peer (raw Beast) that can send anything at all.
class raw_peer {
 public:
  explicit raw_peer(uint16_t port) : port_(port) {}

  identity id = identity::generate();
  std::optional<handshake> hs;
  uint64_t tx_seq = 0;

  template <typename Start>
  beast::error_code run(Start start, std::chrono::milliseconds timeout = 2000ms) {
    bool done = false;
    beast::error_code result;
    start([&](beast::error_code ec, auto&&...) {
      done = true;
      result = ec;
    });
    ioc_.restart();
    ioc_.run_for(timeout);
    if (!done) {
      beast::get_lowest_layer(ws_).cancel();
      ioc_.restart();
      ioc_.run_for(500ms);
      return asio::error::timed_out;
    }
    return result;
  }

  bool tcp_connect() {
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port_);
    return !run([&](auto h) { beast::get_lowest_layer(ws_).async_connect(ep, h); });
  }
  bool ws_open() {
    if (!tcp_connect()) return false;
    bool ok = !run([&](auto h) { ws_.async_handshake("127.0.0.1", "/", h); });
    ws_.binary(true);
    return ok;
  }
  bool send_bytes(std::string_view bytes, bool text = false) {
    ws_.text(text);
    return !run([&](auto h) { ws_.async_write(asio::buffer(bytes.data(), bytes.size()), h); });
  }
  bool send_tcp(std::string_view bytes) {
    return !run([&](auto h) { asio::async_write(beast::get_lowest_layer(ws_).socket(), asio::buffer(bytes.data(), bytes.size()), h); });
  }
  expected<decoded_frame> read_frame() {
    buf_.clear();
    auto ec = run([&](auto h) { ws_.async_read(buf_, h); });
    if (ec) return status(error_kind::io, ec.message());
    auto d = decode(static_cast<const uint8_t*>(buf_.data().data()), buf_.size());
    return d;
  }
  frame make(const message& m, bool bind = true) {
    frame_header h;
    h.sequence = tx_seq++;
    if (bind && hs && hs->got_hello()) h.channel = hs->tx_channel();
    auto f = encode(m, id, h);
    REQUIRE(f.has_value());
    return *f;
  }
  bool send(const message& m) { return send_bytes(make(m).view()); }

  // The gpugrid handshake; `finish` false stops after our Hello and the server's Hello.
  bool gg_handshake(bool finish = true) {
    if (!ws_open()) return false;
    hs.emplace(id, true, hello{}, handshake_options{});
    if (!send(hs->local_hello())) return false;
    auto h = read_frame();
    if (!h) return false;
    goodbye_reason why;
    auto ack = hs->on_hello(*h, &why);
    if (!ack) return false;
    if (!finish) return true;
    if (!send(*ack)) return false;
    auto a = read_frame();
    return a && hs->on_hello_ack(*a, &why).is_ok();
  }

  // True when the server closes the connection within `limit` (frames are read and dropped).
  bool closed_within(std::chrono::milliseconds limit = 2500ms) {
    auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      buf_.clear();
      auto ec = run([&](auto h) { ws_.async_read(buf_, h); }, left);
      if (ec == asio::error::timed_out) return false;
      if (ec) return true;
    }
  }
  // For a peer that never completed the WebSocket handshake.
  bool tcp_closed_within(std::chrono::milliseconds limit = 2500ms) {
    char b[512];
    auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      auto ec = run([&](auto h) { beast::get_lowest_layer(ws_).socket().async_read_some(asio::buffer(b), h); }, left);
      if (ec == asio::error::timed_out) return false;
      if (ec) return true;
    }
  }
  void drop() {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

 private:
  uint16_t port_;
  asio::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_{ioc_};
  beast::flat_buffer buf_;
};

struct temp_dir {
  std::string path;
  temp_dir() {
    std::string tmpl = "/tmp/gg-tls-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

// A self-signed P-256 certificate for "localhost", written as PEM files.
void make_self_signed(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  REQUIRE(key != nullptr);
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  REQUIRE(X509_sign(x, key, EVP_sha256()) > 0);
  FILE* f = std::fopen(cert_path.c_str(), "w");
  REQUIRE(f != nullptr);
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "w");
  REQUIRE(f != nullptr);
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

}  // namespace

TEST_CASE("peer URLs", "[net][transport]") {
  auto u = parse_ws_url("ws://example.org");
  REQUIRE(u.has_value());
  CHECK(u->host == "example.org");
  CHECK(u->port == kDefaultPort);
  CHECK_FALSE(u->tls);
  CHECK(u->path == "/");
  u = parse_ws_url("wss://[2001:db8::1]:9000/grid");
  REQUIRE(u.has_value());
  CHECK(u->tls);
  CHECK(u->host == "2001:db8::1");
  CHECK(u->port == 9000);
  CHECK(u->path == "/grid");
  CHECK(u->str() == "wss://[2001:db8::1]:9000/grid");
  CHECK_FALSE(parse_ws_url("http://x").has_value());
  CHECK_FALSE(parse_ws_url("ws://x:0").has_value());
  CHECK_FALSE(parse_ws_url("ws://x:70000").has_value());
  CHECK_FALSE(parse_ws_url("ws://:7447").has_value());
  CHECK_FALSE(parse_ws_url("ws://x:12ab").has_value());
}

TEST_CASE("a client and a server talk over ws://", "[net][transport]") {
  server s;
  inbox in;
  transport_options co = fast_options();
  co.local.listen_url = "ws://client.example:1";
  auto t = transport::create(identity::from_seed(testing::pattern<32>(3)), co, in.handlers());
  REQUIRE(t.has_value());
  CHECK(s.url() == fmt::format("ws://127.0.0.1:{}", s.port));
  auto c = (*t)->connect_sync(s.url());
  REQUIRE(c.has_value());
  connection_ptr conn = *c;
  CHECK(conn->peer_key() == s.t->self().public_key());
  CHECK(conn->peer_id() == s.t->self().node_id());
  CHECK(conn->peer_hello().role == node_role::provider);
  CHECK(conn->peer_hello().max_frame_bytes == 1u << 20);
  CHECK(conn->version() == kProtocolVersion);
  CHECK_FALSE(conn->inbound());
  CHECK_FALSE(conn->session_mac());

  // The server saw the connection open, with our self-description.
  auto opened = s.in.next(2000ms);
  REQUIRE(opened.has_value());
  REQUIRE(opened->what == inbox::event::kind::opened);
  CHECK(opened->conn->peer_key() == (*t)->self().public_key());
  CHECK(opened->conn->peer_hello().listen_url == "ws://client.example:1");
  CHECK(opened->conn->inbound());

  for (uint8_t i = 0; i < 20; ++i) REQUIRE(conn->send(sample_request(i)) == send_result::queued);
  for (uint8_t i = 0; i < 20; ++i) {
    auto reply = in.next_message(2000ms);
    REQUIRE(reply != nullptr);
    REQUIRE(std::holds_alternative<bid>(reply->msg()));
    CHECK(std::get<bid>(reply->msg()).job[0] == i);
    CHECK(reply->frame().sender == s.t->self().public_key());
  }
  // Every other message type goes through too.
  auto samples = testing::sample_messages();
  for (size_t i = 3; i < samples.size(); ++i) {
    if (std::holds_alternative<ping>(samples[i]) || std::holds_alternative<pong>(samples[i]) ||
        std::holds_alternative<bid_request>(samples[i]))
      continue;
    REQUIRE(conn->send(samples[i]) == send_result::queued);
    auto got = s.in.next_message(2000ms);
    REQUIRE(got != nullptr);
    CHECK(got->msg().index() == samples[i].index());
  }
  CHECK(conn->send(samples[0]) == send_result::encode_failed);  // Hello is the transport's own

  conn->ping();
  CHECK(eventually([&] { return conn->rtt_us() >= 0; }));
  CHECK(s.m().established == 1);
  CHECK(s.m().misbehaving() == 0);

  conn->close();
  auto closed = s.in.next(2000ms);
  REQUIRE(closed.has_value());
  CHECK(closed->what == inbox::event::kind::closed);
  CHECK(closed->why.is_ok());
  CHECK(eventually([&] { return !conn->is_open(); }));
  CHECK(conn->send(sample_request(1)) == send_result::closed);
}

TEST_CASE("misbehaving peers are closed and counted, and the server keeps serving", "[net][transport]") {
  server s;
  int64_t seen = 0;
  auto misbehaved = [&] {
    return eventually([&] {
      int64_t now = s.m().misbehaving() + s.m().timeouts;
      if (now > seen) {
        seen = now;
        return true;
      }
      return false;
    });
  };

  {
    INFO("a TCP connection that never speaks");
    raw_peer p(s.port);
    REQUIRE(p.tcp_connect());
    CHECK(p.tcp_closed_within());
    CHECK(eventually([&] { return s.m().timeouts >= 1; }));
    misbehaved();
  }
  {
    INFO("plain HTTP instead of a WebSocket upgrade: answered 404 (GET /metrics lives on this port) and closed");
    raw_peer p(s.port);
    REQUIRE(p.tcp_connect());
    REQUIRE(p.send_tcp("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(p.tcp_closed_within());
    CHECK(eventually([&] { return s.m().http_requests >= 1; }));
  }
  {
    INFO("an HTTP request with a body where none belongs");
    raw_peer p(s.port);
    REQUIRE(p.tcp_connect());
    REQUIRE(p.send_tcp("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
    CHECK(p.tcp_closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("raw bytes instead of HTTP");
    raw_peer p(s.port);
    REQUIRE(p.tcp_connect());
    REQUIRE(p.send_tcp(std::string(300, '\xfe')));
    CHECK(p.tcp_closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("a WebSocket that never says Hello");
    raw_peer p(s.port);
    REQUIRE(p.ws_open());
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("garbage binary frame");
    raw_peer p(s.port);
    REQUIRE(p.ws_open());
    REQUIRE(p.send_bytes(std::string(100, '\x42')));
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("text frame");
    int64_t before = s.m().text_frames;
    raw_peer p(s.port);
    REQUIRE(p.ws_open());
    REQUIRE(p.send_bytes("{\"hello\": true}", /*text=*/true));
    CHECK(p.closed_within());
    CHECK(eventually([&] { return s.m().text_frames == before + 1; }));
    misbehaved();
  }
  {
    INFO("oversized frame");
    raw_peer p(s.port);
    REQUIRE(p.ws_open());
    p.send_bytes(std::string((1 << 20) + 1, 'x'));  // the server may close while we write
    CHECK(p.closed_within());
    CHECK(eventually([&] { return s.m().oversized == 1; }));
    misbehaved();
  }
  {
    INFO("a message before the handshake");
    raw_peer p(s.port);
    REQUIRE(p.ws_open());
    REQUIRE(p.send(sample_request(1)));
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("half a handshake: Hello, then silence");
    raw_peer p(s.port);
    REQUIRE(p.gg_handshake(/*finish=*/false));
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("truncated frame after the handshake");
    raw_peer p(s.port);
    REQUIRE(p.gg_handshake());
    frame f = p.make(sample_request(1));
    REQUIRE(p.send_bytes(f.view().substr(0, f.size() / 2)));
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("mis-tagged frame (wrong file identifier)");
    raw_peer p(s.port);
    REQUIRE(p.gg_handshake());
    std::string bytes(p.make(sample_request(1)).view());
    bytes[5] = 'Z';
    REQUIRE(p.send_bytes(bytes));
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("badly signed frame");
    int64_t before = s.m().bad_signatures;
    raw_peer p(s.port);
    REQUIRE(p.gg_handshake());
    std::string bytes(p.make(sample_request(1)).view());
    // Flip the first byte whose change the decoder blames on the signature.
    bool flipped = false;
    for (size_t i = 0; i < bytes.size() && !flipped; ++i) {
      std::string bad = bytes;
      bad[i] ^= 0x01;
      frame_error why;
      if (!decode(bad, {}, &why) && why == frame_error::bad_signature) {
        bytes = bad;
        flipped = true;
      }
    }
    REQUIRE(flipped);
    REQUIRE(p.send_bytes(bytes));
    CHECK(p.closed_within());
    CHECK(eventually([&] { return s.m().bad_signatures == before + 1; }));
    misbehaved();
  }
  {
    INFO("replayed frame");
    int64_t before = s.m().replays;
    raw_peer p(s.port);
    REQUIRE(p.gg_handshake());
    frame f = p.make(sample_request(1));
    REQUIRE(p.send_bytes(f.view()));
    REQUIRE(p.send_bytes(f.view()));
    CHECK(p.closed_within());
    CHECK(eventually([&] { return s.m().replays == before + 1; }));
    misbehaved();
  }
  {
    INFO("a frame recorded on one connection, replayed on another");
    int64_t before = s.m().replays;
    raw_peer a(s.port), b(s.port);
    b.id = a.id;  // the same node, two connections
    REQUIRE(a.gg_handshake());
    REQUIRE(b.gg_handshake());
    frame from_a = a.make(sample_request(1));  // sequence 2, bound to a's connection
    REQUIRE(b.send_bytes(from_a.view()));
    CHECK(b.closed_within());
    CHECK(eventually([&] { return s.m().replays == before + 1; }));
    misbehaved();
  }
  {
    INFO("a second Hello after the handshake");
    raw_peer p(s.port);
    REQUIRE(p.gg_handshake());
    REQUIRE(p.send(p.hs->local_hello()));
    CHECK(p.closed_within());
    CHECK(misbehaved());
  }
  {
    INFO("connection churn");
    for (int i = 0; i < 60; ++i) {
      raw_peer p(s.port);
      REQUIRE(p.tcp_connect());
      p.drop();
    }
    for (int i = 0; i < 15; ++i) {
      raw_peer p(s.port);
      REQUIRE(p.ws_open());
      p.drop();
    }
    for (int i = 0; i < 10; ++i) {
      raw_peer p(s.port);
      REQUIRE(p.gg_handshake());
      p.drop();
    }
    CHECK(eventually([&] { return s.t->connections().empty(); }));
  }
  CHECK(s.refused_with("handshake"));
  // After all that, a well-behaved client is served as usual.
  check_client_works(s.url());
  auto m = s.m();
  CHECK(m.bad_frames >= 3);
  CHECK(m.protocol_errors >= 2);
  CHECK(m.handshake_failed >= 5);
}

TEST_CASE("a protocol version mismatch is a clear error on both sides", "[net][transport]") {
  server s;
  transport_options co = fast_options();
  co.newest_version = kProtocolVersion + 2;
  co.oldest_version = kProtocolVersion + 1;
  auto t = transport::create(identity::generate(), co, {});
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(s.url());
  REQUIRE_FALSE(c.has_value());
  CHECK_THAT(c.error().message(), Catch::Contains("protocol version mismatch") && Catch::Contains(s.url()));
  CHECK(eventually([&] { return s.m().version_mismatch == 1; }));
  CHECK(eventually([&] { return s.refused_with("protocol version mismatch"); }));
  CHECK((*t)->metrics().version_mismatch == 1);
}

TEST_CASE("a client refuses a server with an unexpected key", "[net][transport]") {
  server s;
  auto t = transport::create(identity::generate(), fast_options(), {});
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(s.url(), identity::generate().public_key());
  REQUIRE_FALSE(c.has_value());
  CHECK_THAT(c.error().message(), Catch::Contains("not the expected"));
  auto ok = (*t)->connect_sync(s.url(), s.t->self().public_key());
  CHECK(ok.has_value());
}

TEST_CASE("a slow consumer slows the sender down instead of growing memory", "[net][transport]") {
  transport_options so = fast_options();
  so.read_window = 1;
  so.max_frame_bytes = 1 << 20;
  server s(so, /*answer=*/false);
  transport_options co = fast_options();
  co.send_queue_frames = 4;
  auto t = transport::create(identity::generate(), co, {});
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(s.url());
  REQUIRE(c.has_value());
  REQUIRE(s.in.next(2000ms)->what == inbox::event::kind::opened);

  model_chunk chunk;
  chunk.data = std::string(256 << 10, 'c');
  uint32_t sent = 0;
  bool hit_full = false;
  for (int i = 0; i < 400 && !hit_full; ++i) {
    chunk.index = sent;
    send_result r = (*c)->send(chunk);
    if (r == send_result::queue_full) hit_full = true;
    else if (r == send_result::queued) ++sent;
    else FAIL(to_string(r));
    if (!hit_full) std::this_thread::sleep_for(1ms);
  }
  CHECK(hit_full);
  CHECK((*c)->queued_frames() <= 4);
  CHECK((*t)->metrics().send_queue_full >= 1);
  // Nothing is lost and the order holds once the consumer takes its messages.
  for (uint32_t i = 0; i < sent; ++i) {
    auto m = s.in.next_message(3000ms);
    REQUIRE(m != nullptr);
    CHECK(std::get<model_chunk>(m->msg()).index == i);
    if (i == 0) CHECK(s.in.size() == 0);  // one unreleased message at a time
    m->release();
  }
  CHECK((*c)->wait_writable(1000ms));
  CHECK((*c)->send(chunk) == send_result::queued);
}

TEST_CASE("a frame larger than the peer accepts is refused at the sender", "[net][transport]") {
  server s;  // 1 MiB limit
  auto t = transport::create(identity::generate(), fast_options(), {});
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(s.url());
  REQUIRE(c.has_value());
  model_chunk big;
  big.data = std::string(2 << 20, 'b');
  CHECK((*c)->send(big) == send_result::too_large);
  CHECK((*c)->send(sample_request(3)) == send_result::queued);  // still usable
}

TEST_CASE("large frames and session MACs", "[net][transport]") {
  for (bool mac : {false, true}) {
    INFO("session_mac " << mac);
    transport_options o;
    o.session_mac = mac;
    o.handshake_timeout = 2000ms;
    server s(o, /*answer=*/false);
    inbox in;
    auto t = transport::create(identity::generate(), o, in.handlers());
    REQUIRE(t.has_value());
    auto c = (*t)->connect_sync(s.url());
    REQUIRE(c.has_value());
    CHECK((*c)->session_mac() == mac);
    execute e;
    e.inputs = {testing::sample_tensor("big", 5 << 20, 9)};  // 20 MiB
    REQUIRE((*c)->send(e) == send_result::queued);
    auto got = s.in.next_message(5000ms);
    REQUIRE(got != nullptr);
    CHECK(got->frame().authenticated_by_mac == mac);
    CHECK(std::get<execute>(got->msg()).inputs.at(0).data == e.inputs[0].data);
  }
}

TEST_CASE("wss:// with a self-signed certificate", "[net][transport]") {
  temp_dir dir;
  std::string cert = dir.path + "/cert.pem", key = dir.path + "/key.pem";
  make_self_signed(cert, key);
  transport_options o = fast_options();
  o.handshake_timeout = 2000ms;
  o.tls_cert_file = cert;
  o.tls_key_file = key;
  server s(o);
  CHECK(s.url().rfind("wss://127.0.0.1:", 0) == 0);
  check_client_works(s.url());
  {
    INFO("a plain ws:// client on a wss:// port");
    raw_peer p(s.port);
    REQUIRE(p.tcp_connect());
    REQUIRE(p.send_tcp("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"));
    CHECK(p.tcp_closed_within());
  }
  check_client_works(s.url());

  transport_options bad = o;
  bad.tls_cert_file = dir.path + "/missing.pem";
  auto t = transport::create(identity::generate(), bad, {});
  REQUIRE_FALSE(t.has_value());
  CHECK_THAT(t.error().message(), Catch::Contains("--tls-cert") && Catch::Contains("missing.pem"));
  bad = o;
  bad.tls_key_file.clear();
  CHECK_FALSE(transport::create(identity::generate(), bad, {}).has_value());
}

TEST_CASE("stopping a transport closes its connections with a reason", "[net][transport]") {
  auto s = std::make_unique<server>();
  inbox in;
  auto t = transport::create(identity::generate(), fast_options(), in.handlers());
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(s->url());
  REQUIRE(c.has_value());
  s->t->stop();
  bool saw_close = false;
  for (int i = 0; i < 5 && !saw_close; ++i) {
    auto e = in.next(2000ms);
    REQUIRE(e.has_value());
    if (e->what == inbox::event::kind::closed) {
      saw_close = true;
      CHECK_THAT(e->why.message(), Catch::Contains("shutting down"));
    }
  }
  CHECK(saw_close);
  CHECK((*c)->send(sample_request(1)) == send_result::closed);
  auto again = (*t)->connect_sync(s->url());
  CHECK_FALSE(again.has_value());
  s.reset();
  // Handles may outlive the transport.
  t->reset();
  CHECK((*c)->send(sample_request(1)) == send_result::closed);
}

TEST_CASE("idle connections live on keep-alive pings, and a silent peer is dropped", "[net][transport]") {
  transport_options o = fast_options();
  o.idle_timeout = 500ms;
  server s(o);
  inbox in;
  auto t = transport::create(identity::generate(), o, in.handlers());
  REQUIRE(t.has_value());
  auto c = (*t)->connect_sync(s.url());
  REQUIRE(c.has_value());

  raw_peer silent(s.port);
  REQUIRE(silent.gg_handshake());
  int64_t before = s.m().timeouts;
  // The raw peer reads nothing from here on, so it never answers the server's pings.
  std::this_thread::sleep_for(1300ms);
  CHECK(eventually([&] { return s.m().timeouts >= before + 1; }));
  CHECK((*c)->is_open());
  REQUIRE((*c)->send(sample_request(5)) == send_result::queued);
  auto reply = in.next_message(2000ms);
  REQUIRE(reply != nullptr);
  CHECK(std::holds_alternative<bid>(reply->msg()));
}

TEST_CASE("one identity cannot take every connection slot, and new peers and /metrics still get in", "[net][transport]") {
  transport_options so = fast_options();
  so.max_connections = 5;
  so.max_per_identity = 2;
  so.max_pending = 4;
  server s(so);
  inbox a_in;
  auto a = transport::create(identity::generate(), fast_options(), a_in.handlers());
  REQUIRE(a.has_value());
  std::vector<connection_ptr> held;
  for (int i = 0; i < 2; ++i) {
    auto c = (*a)->connect_sync(s.url());
    REQUIRE(c.has_value());
    held.push_back(*c);
  }
  // The third connection of the same identity is refused (it may see its handshake finish
  // first; the server closes it right away).
  auto third = (*a)->connect_sync(s.url());
  if (third.has_value()) CHECK(eventually([&] { return !(*third)->is_open(); }));
  CHECK(eventually([&] { return s.m().refused_identity == 1; }));
  for (auto& c : held) CHECK(c->is_open());

  // Other identities still get in, up to the total cap. (Each inbox outlives its transport.)
  std::vector<std::unique_ptr<inbox>> inboxes;
  std::vector<std::unique_ptr<transport>> others;
  std::vector<connection_ptr> other_conns;
  for (int i = 0; i < 3; ++i) {
    inboxes.push_back(std::make_unique<inbox>());
    auto t = transport::create(identity::generate(), fast_options(), inboxes.back()->handlers());
    REQUIRE(t.has_value());
    auto c = (*t)->connect_sync(s.url());
    REQUIRE(c.has_value());
    other_conns.push_back(*c);
    others.push_back(std::move(t).value());
  }
  auto refused_before = s.m().refused_overload;
  {
    inbox in;
    auto t = transport::create(identity::generate(), fast_options(), in.handlers());
    REQUIRE(t.has_value());
    auto c = (*t)->connect_sync(s.url());
    if (c.has_value()) CHECK(eventually([&] { return !(*c)->is_open(); }));
    CHECK(eventually([&] { return s.m().refused_overload > refused_before; }));
  }
  // Every established slot is taken, yet a plain HTTP GET (/metrics) is still answered.
  raw_peer p(s.port);
  auto http_before = s.m().http_requests;
  REQUIRE(p.tcp_connect());
  REQUIRE(p.send_tcp("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(p.tcp_closed_within());
  CHECK(eventually([&] { return s.m().http_requests > http_before; }));
}
