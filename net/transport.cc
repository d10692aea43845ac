#include "net/transport.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <condition_variable>
#include <cstring>
#include <cstdio>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "net/handshake.h"
#include "net/tls_context.h"

namespace gpugrid::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = beast::error_code;
using exec_t = asio::any_io_executor;  // a strand, per connection
using ms = std::chrono::milliseconds;

namespace {

constexpr size_t kWriteBufferBytes = size_t{128} << 10;  // Beast's masking buffer (client side)
constexpr size_t kKeepReadBuffer = size_t{4} << 20;      // shrink the read buffer above this after small frames

int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A WebSocket close reason carries at most 123 bytes.
std::string close_text(const std::string& s) { return s.size() <= 120 ? s : s.substr(0, 117) + "..."; }

}  // namespace

// ------------------------------------------------------------------ shared state

struct counters {
  std::atomic<int64_t> accepted{0}, dialed{0}, established{0}, closed{0}, refused_overload{0}, refused_pending{0},
      refused_address{0}, refused_identity{0}, handshake_failed{0},
      version_mismatch{0}, auth_failed{0}, timeouts{0}, oversized{0}, text_frames{0}, bad_frames{0}, bad_signatures{0},
      replays{0}, protocol_errors{0}, frames_in{0}, frames_out{0}, bytes_in{0}, bytes_out{0}, send_queue_full{0},
      http_requests{0};
};

class session_base;

struct transport::impl {
  impl(const identity& id, transport_options o, transport_handlers h)
      : self(id), opt(std::move(o)), handlers(std::move(h)), ioc(std::max(1, opt.io_threads)) {}

  identity self;
  transport_options opt;
  transport_handlers handlers;
  counters m;
  std::optional<ssl::context> server_tls;
  ssl::context client_tls{ssl::context::tls_client};
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  std::optional<exec_t> accept_strand;
  std::optional<tcp::acceptor> acceptor;
  std::string url;

  mutable std::mutex mu;
  std::condition_variable changed;
  std::map<uint64_t, std::weak_ptr<session_base>> sessions;
  std::atomic<uint64_t> next_id{1};
  bool stopped = false;  // under mu: no more posting into the io_context
  std::atomic<bool> stopped_flag{false};  // the same, readable without the lock

  std::weak_ptr<impl> weak_self;

  hello hello_for_connection() const {
    hello h = opt.hello_source ? opt.hello_source() : opt.local;
    h.max_frame_bytes = opt.max_frame_bytes;
    return h;
  }
  void do_accept();
  void register_session(const std::shared_ptr<session_base>& s);
  void unregister(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu);
    sessions.erase(id);
    changed.notify_all();
  }
};

// ------------------------------------------------------------------ session logic

class session_base : public connection, public relay_pipe, public std::enable_shared_from_this<session_base> {
 public:
  session_base(std::shared_ptr<transport::impl> t, exec_t strand, bool is_inbound, std::optional<key32> expect)
      : t_(std::move(t)),
        strand_(std::move(strand)),
        inbound_(is_inbound),
        id_(t_->next_id++),
        handshake_timer_(strand_),
        close_timer_(strand_),
        pace_timer_(strand_) {
    handshake_options ho;
    ho.session_mac = t_->opt.session_mac;
    ho.expected_peer = expect;
    ho.newest_version = t_->opt.newest_version;
    ho.oldest_version = t_->opt.oldest_version;
    hs_.emplace(t_->self, !is_inbound, t_->hello_for_connection(), ho);  // fresh challenge and keys
    tx_version_ = ho.newest_version;
  }

  const exec_t& strand() const { return strand_; }
  bool established() const { return established_.load(std::memory_order_acquire); }
  // The remote IP of an inbound connection, fixed at accept ("" for outbound ones).
  const std::string& accepted_ip() const { return accepted_ip_; }

  // -------- connection interface
  uint64_t id() const override { return id_; }
  bool inbound() const override { return inbound_; }
  bool is_pipe() const { return pipe_mode_.load(std::memory_order_acquire); }
  const key32& peer_key() const override { return peer_hello().node_key; }
  const hello& peer_hello() const override {
    static const hello none;
    return established_.load(std::memory_order_acquire) ? hs_->peer_hello() : none;
  }
  const std::string& remote_address() const override { return remote_; }

  // -------- pipe interface (relay circuits)
  void start(std::function<void(std::string)> on_data, std::function<void(const status&)> on_close) override {
    auto self = shared_from_this();
    post([self, on_data = std::move(on_data), on_close = std::move(on_close)]() mutable {
      self->pipe_on_data_ = std::move(on_data);
      self->pipe_on_close_ = std::move(on_close);
      if (self->phase_ == phase::done) {
        auto cb = std::move(self->pipe_on_close_);
        self->pipe_on_close_ = nullptr;
        if (cb) cb(status(error_kind::io, "the circuit closed"));
        return;
      }
      self->maybe_read();
    });
  }
  void resume(ms delay) override {
    auto self = shared_from_this();
    if (delay.count() <= 0) {
      post([self] {
        if (self->unreleased_ > 0) --self->unreleased_;
        self->maybe_read();
      });
      return;
    }
    post([self, delay] {
      self->pace_timer_.expires_after(delay);
      self->pace_timer_.async_wait([self](error_code ec) {
        if (ec) return;
        if (self->unreleased_ > 0) --self->unreleased_;
        self->maybe_read();
      });
    });
  }
  bool write(std::string data, std::function<void()> written) override {
    bool kick = false;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      if (tx_closed_ || finished_) return false;
      frame f = frame::copy_of(data.data(), data.size());
      queue_bytes_ += f.size();
      queue_.push_back(std::move(f));
      pipe_written_.push_back(std::move(written));
      kick = !write_posted_;
      write_posted_ = true;
    }
    if (kick) {
      auto self = shared_from_this();
      post([self] { self->pump(); });
    }
    return true;
  }
  void close() override { close(goodbye_reason::normal, ""); }
  uint16_t version() const override { return established_.load(std::memory_order_acquire) ? hs_->version() : 0; }
  bool session_mac() const override { return established_.load(std::memory_order_acquire) && hs_->tx_key().has_value(); }

  send_result send(const message& m) override {
    if (!established_.load(std::memory_order_acquire)) return send_result::closed;
    if (std::holds_alternative<hello>(m) || std::holds_alternative<hello_ack>(m)) return send_result::encode_failed;
    return enqueue(m, /*bounded=*/true);
  }

  bool wait_writable(ms timeout) override {
    std::unique_lock<std::mutex> lk(q_mu_);
    return q_cv_.wait_for(lk, timeout, [&] { return tx_closed_ || has_room_locked(); }) && !tx_closed_;
  }
  size_t queued_frames() const override {
    std::lock_guard<std::mutex> lk(q_mu_);
    return queue_.size();
  }
  size_t queued_bytes() const override {
    std::lock_guard<std::mutex> lk(q_mu_);
    return queue_bytes_;
  }

  void close(goodbye_reason reason, const std::string& text) override {
    auto self = shared_from_this();
    post([self, reason, text] { self->close_gracefully(reason, text, status::ok()); });
  }
  bool is_open() const override {
    std::lock_guard<std::mutex> lk(q_mu_);
    return established_.load() && !tx_closed_;
  }
  void ping() override {
    if (!established_.load()) return;
    uint64_t nonce = static_cast<uint64_t>(steady_us());
    ping_sent_us_.store(static_cast<int64_t>(nonce));
    (void)enqueue(net::ping{nonce}, true);
  }
  int64_t rtt_us() const override { return rtt_us_.load(); }

  // -------- used by the transport
  // Runs `fn` on this connection's strand unless the transport has stopped.
  // (After stop() nothing runs the io_context any more; a handler queued then would only keep
  // this session alive until the transport's state goes away.)
  template <typename Fn>
  void post(Fn&& fn) {
    if (t_->stopped_flag.load(std::memory_order_acquire)) return;
    asio::post(strand_, std::forward<Fn>(fn));
  }
  void shutdown_gracefully() {
    close_gracefully(goodbye_reason::shutting_down, "the node is shutting down", status::ok());
  }
  void shutdown_now() { finish(status(error_kind::io, "the transport stopped")); }
  void set_connect_callback(std::function<void(expected<connection_ptr>)> cb, std::string url) {
    connect_cb_ = std::move(cb);
    url_ = std::move(url);
  }
  // Refuse a peer whose node id is not this one (a relayed address names the node it reaches).
  void set_expected_id(std::string id) { expect_id_ = std::move(id); }

 protected:
  // -------- what a concrete stream provides (all on the strand)
  virtual void io_read() = 0;                          // -> on_read
  virtual void io_write(const frame& f) = 0;           // -> on_write
  virtual void io_close(websocket::close_reason cr) = 0;  // -> on_close_done
  virtual void io_hard_close() = 0;
  virtual bool io_got_binary() const = 0;

  beast::flat_buffer rx_buf_;
  std::shared_ptr<transport::impl> t_;
  exec_t strand_;
  std::string remote_;
  std::string accepted_ip_;  // inbound: set once at accept, before any other thread sees it

  // The WebSocket is open: start the Hello/HelloAck exchange.
  void on_ws_open() {
    phase_ = phase::handshaking;
    handshake_timer_.expires_after(t_->opt.handshake_timeout);
    handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->phase_ != phase::handshaking) return;
      self->t_->m.timeouts++;
      self->t_->m.handshake_failed++;
      self->fail(goodbye_reason::timeout,
                 status(error_kind::io, fmt::format("no handshake within {} ms", self->t_->opt.handshake_timeout.count())));
    });
    (void)enqueue(hs_->local_hello(), /*bounded=*/false);
    maybe_read();
  }

  // The WebSocket is open as a relay pipe: no handshake here; the hook starts it.
  void on_pipe_open(const std::string& path) {
    pipe_mode_.store(true, std::memory_order_release);
    phase_ = phase::open;
    unreleased_ = 0;
    auto self = shared_from_this();
    if (t_->opt.relay.opened) t_->opt.relay.opened(path, accepted_ip_, std::static_pointer_cast<relay_pipe>(self));
    else close_gracefully(goodbye_reason::normal, "", status::ok(), false);
  }

  // A plain HTTP request (not a peer) was answered: close without counting a refused peer.
  void mark_http_served() { http_served_ = true; }
  void finish_http() { finish(status::ok()); }

  // A relay refused the circuit (its HTTP answer to the upgrade says why).
  void on_circuit_refused(const std::string& why) {
    t_->m.handshake_failed++;
    finish(status(error_kind::io, fmt::format("the relay refused the circuit: {}", why)));
  }

  // Setup (TCP, TLS, WebSocket) failed before the connection opened.
  void on_setup_error(const char* step, error_code ec) {
    if (ec == beast::error::timeout) t_->m.timeouts++;
    if (ec != asio::error::operation_aborted) t_->m.handshake_failed++;
    finish(status(error_kind::io, fmt::format("{} failed: {}", step, ec.message())));
  }

  void on_read(error_code ec, size_t n) {
    reading_ = false;
    if (ec) {
      on_read_error(ec);
      return;
    }
    if (phase_ != phase::handshaking && phase_ != phase::open) {  // closing: drain and ignore
      rx_buf_.consume(rx_buf_.size());
      return;
    }
    t_->m.frames_in++;
    t_->m.bytes_in += static_cast<int64_t>(n);
    if (pipe_mode_) {
      auto buf = rx_buf_.data();
      std::string data(static_cast<const char*>(buf.data()), buf.size());
      rx_buf_.consume(rx_buf_.size());
      if (rx_buf_.capacity() > kKeepReadBuffer) rx_buf_.shrink_to_fit();
      if (!io_got_binary()) {
        t_->m.text_frames++;
        close_gracefully(goodbye_reason::protocol_error, "text frame on a relay circuit",
                         invalid_input("text frame on a relay circuit"), false, websocket::close_code::policy_error);
        return;
      }
      ++unreleased_;
      if (pipe_on_data_) pipe_on_data_(std::move(data));
      return;
    }
    if (!io_got_binary()) {
      rx_buf_.consume(rx_buf_.size());
      t_->m.text_frames++;
      fail(goodbye_reason::protocol_error, invalid_input("text frame (gpugrid speaks binary frames only)"));
      return;
    }
    frame_error fe = frame_error::none;
    decode_options o;
    o.max_frame_bytes = t_->opt.max_frame_bytes;
    o.session = rx_key_ ? &*rx_key_ : nullptr;
    auto buf = rx_buf_.data();
    auto d = decode(static_cast<const uint8_t*>(buf.data()), buf.size(), o, &fe);
    size_t frame_size = buf.size();
    rx_buf_.consume(rx_buf_.size());
    if (frame_size < (size_t{1} << 20) && rx_buf_.capacity() > kKeepReadBuffer) rx_buf_.shrink_to_fit();
    if (!d) {
      switch (fe) {
        case frame_error::oversized: t_->m.oversized++; break;
        case frame_error::bad_signature:
        case frame_error::bad_mac: t_->m.bad_signatures++; break;
        default: t_->m.bad_frames++; break;
      }
      if (phase_ == phase::handshaking) t_->m.handshake_failed++;
      fail(goodbye_reason::protocol_error, d.error().with_context(fmt::format("frame {}", rx_seq_)));
      return;
    }
    decoded_frame& f = *d;
    if (f.sequence != rx_seq_) {
      t_->m.replays++;
      if (phase_ == phase::handshaking) t_->m.handshake_failed++;
      fail(goodbye_reason::protocol_error,
           invalid_input("frame has sequence number {}, expected {} (replayed, dropped or reordered)", f.sequence, rx_seq_));
      return;
    }
    ++rx_seq_;
    if (f.sequence > 0 && (!f.channel || *f.channel != hs_->rx_channel())) {
      t_->m.replays++;
      if (phase_ == phase::handshaking) t_->m.handshake_failed++;
      fail(goodbye_reason::protocol_error, invalid_input("frame {} is bound to another connection", f.sequence));
      return;
    }
    if (const auto* bye = std::get_if<goodbye>(&f.msg)) {
      peer_goodbye_ = *bye;
      close_gracefully(goodbye_reason::normal, "", status::ok(), /*send_goodbye=*/false);
      return;
    }
    if (phase_ == phase::handshaking) {
      on_handshake_frame(f);
      return;
    }
    if (f.sender != hs_->peer_key()) {
      t_->m.replays++;
      fail(goodbye_reason::auth_failed, invalid_input("frame from {} on the connection with {}", node_id_of(f.sender),
                                                      node_id_of(hs_->peer_key())));
      return;
    }
    if (f.protocol_version != hs_->version()) {
      t_->m.protocol_errors++;
      fail(goodbye_reason::version_mismatch,
           invalid_input("frame speaks protocol version {}, the connection agreed on {}", f.protocol_version, hs_->version()));
      return;
    }
    if (std::holds_alternative<hello>(f.msg) || std::holds_alternative<hello_ack>(f.msg)) {
      t_->m.protocol_errors++;
      fail(goodbye_reason::protocol_error, invalid_input("{} after the handshake", message_name(f.msg)));
      return;
    }
    if (const auto* p = std::get_if<net::ping>(&f.msg)) {
      (void)enqueue(pong{p->nonce}, /*bounded=*/true);  // dropped when the queue is full
      maybe_read();
      return;
    }
    if (const auto* p = std::get_if<pong>(&f.msg)) {
      if (static_cast<int64_t>(p->nonce) == ping_sent_us_.load()) rtt_us_.store(steady_us() - ping_sent_us_.load());
      maybe_read();
      return;
    }
    deliver(std::move(f));
  }

  void on_write(error_code ec, size_t n) {
    writing_ = false;
    std::function<void()> written;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      if (!queue_.empty()) {
        queue_bytes_ -= queue_.front().size();
        queue_.pop_front();
      }
      if (!pipe_written_.empty()) {
        written = std::move(pipe_written_.front());
        pipe_written_.pop_front();
      }
    }
    q_cv_.notify_all();
    if (written) written();
    if (ec) {
      if (phase_ != phase::done) finish(close_reason_ ? *close_reason_ : status(error_kind::io, fmt::format("write failed: {}", ec.message())));
      return;
    }
    t_->m.frames_out++;
    t_->m.bytes_out += static_cast<int64_t>(n);
    if (close_now_) {
      start_ws_close();
      return;
    }
    pump();
  }

  void on_close_done(error_code) {
    finish(close_reason_ ? *close_reason_ : status::ok());
  }

 private:
  enum class phase { setup, handshaking, open, closing, done };

  bool has_room_locked() const {
    return queue_bytes_ == 0 ||
           (queue_.size() < t_->opt.send_queue_frames && queue_bytes_ < t_->opt.send_queue_bytes);
  }

  // Encodes on the calling thread (sequence numbers stay in queue order) and queues.
  send_result enqueue(const message& m, bool bounded) {
    std::lock_guard<std::mutex> enc(enc_mu_);
    frame_header h;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      if (tx_closed_ || finished_) return send_result::closed;
      if (bounded && queue_bytes_ > 0 &&
          (queue_.size() >= t_->opt.send_queue_frames ||
           queue_bytes_ + encoded_size_estimate(m) > t_->opt.send_queue_bytes)) {
        t_->m.send_queue_full++;
        return send_result::queue_full;
      }
    }
    h.sequence = tx_seq_;
    h.channel = tx_channel_;
    h.protocol_version = tx_version_;
    expected<frame> f = (tx_key_ && tx_seq_ >= 2) ? encode_mac(m, t_->self.public_key(), *tx_key_, h)
                                                  : encode(m, t_->self, h);
    if (!f) return send_result::encode_failed;
    if (peer_max_frame_ && f->size() > peer_max_frame_) return send_result::too_large;
    bool kick = false;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      if (finished_) return send_result::closed;
      ++tx_seq_;
      queue_bytes_ += f->size();
      queue_.push_back(std::move(*f));
      kick = !write_posted_;
      write_posted_ = true;
    }
    if (kick) {
      auto self = shared_from_this();
      post([self] { self->pump(); });
    }
    return send_result::queued;
  }

  void pump() {
    if (writing_ || phase_ == phase::done) return;
    frame f;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      if (queue_.empty()) {
        write_posted_ = false;
        if (close_after_drain_) close_now_ = true;
      } else {
        f = queue_.front();
      }
    }
    if (f.empty()) {
      if (close_now_) start_ws_close();
      return;
    }
    writing_ = true;
    io_write(f);
  }

  void maybe_read() {
    if (reading_ || (phase_ != phase::handshaking && phase_ != phase::open)) return;
    if (pipe_mode_ && (unreleased_ > 0 || !pipe_on_data_)) return;  // one message at a time
    if (phase_ == phase::open && unreleased_ >= std::max<size_t>(1, t_->opt.read_window)) return;
    reading_ = true;
    io_read();
  }

  void on_handshake_frame(decoded_frame& f) {
    goodbye_reason reason = goodbye_reason::protocol_error;
    if (!hs_->got_hello()) {
      if (const auto* h = std::get_if<hello>(&f.msg)) {
        // Bind what we send from now on (a Goodbye too, should the Hello be refused).
        std::lock_guard<std::mutex> enc(enc_mu_);
        tx_channel_.emplace();
        std::memcpy(tx_channel_->data(), h->challenge.data(), tx_channel_->size());
      }
      auto ack = hs_->on_hello(f, &reason);
      if (!ack) {
        count_handshake_failure(reason);
        fail(reason, ack.error().with_context("handshake"));
        return;
      }
      {
        std::lock_guard<std::mutex> enc(enc_mu_);
        tx_channel_ = hs_->tx_channel();
        tx_key_ = hs_->tx_key();
        tx_version_ = hs_->version();
        peer_max_frame_ = hs_->peer_hello().max_frame_bytes;
      }
      rx_key_ = hs_->rx_key();
      (void)enqueue(*ack, /*bounded=*/false);
      maybe_read();
      return;
    }
    status s = hs_->on_hello_ack(f, &reason);
    if (!s.is_ok()) {
      count_handshake_failure(reason);
      fail(reason, s.with_context("handshake"));
      return;
    }
    if (expect_id_ && node_id_of(hs_->peer_key()) != *expect_id_) {
      t_->m.auth_failed++;
      t_->m.handshake_failed++;
      fail(goodbye_reason::auth_failed,
           invalid_input("the relayed address names node {} but {} answered", *expect_id_, node_id_of(hs_->peer_key())));
      return;
    }
    if (auto refused = admit_established(hs_->peer_hello().node_key); !refused.empty()) {
      t_->m.refused_overload++;
      fail(goodbye_reason::overloaded, status(error_kind::io, refused));
      return;
    }
    phase_ = phase::open;
    handshake_timer_.cancel();
    t_->m.established++;
    auto self = shared_from_this();
    if (t_->handlers.on_open) t_->handlers.on_open(self);
    if (connect_cb_) {
      auto cb = std::move(connect_cb_);
      connect_cb_ = nullptr;
      cb(connection_ptr(self));
    }
    maybe_read();
  }

  // The caps on established connections (total and per node key), checked and taken under
  // the transport's lock so two handshakes finishing at once cannot both pass. Returns why the
  // connection is refused, or "".
  std::string admit_established(const key32& key) {
    std::lock_guard<std::mutex> lk(t_->mu);
    size_t total = 0, same = 0;
    for (const auto& [id, w] : t_->sessions) {
      auto s = w.lock();
      if (!s || s.get() == this || !s->established()) continue;
      ++total;
      if (s->peer_key() == key) ++same;
    }
    if (same >= t_->opt.max_per_identity) {
      t_->m.refused_identity++;
      return fmt::format("node {} already holds {} connections here (limit {})", node_id_of(key), same,
                         t_->opt.max_per_identity);
    }
    if (total >= t_->opt.max_connections)
      return fmt::format("{} connections are open here (limit {})", total, t_->opt.max_connections);
    established_.store(true, std::memory_order_release);
    return "";
  }

  void count_handshake_failure(goodbye_reason r) {
    t_->m.handshake_failed++;
    if (r == goodbye_reason::version_mismatch) t_->m.version_mismatch++;
    else if (r == goodbye_reason::auth_failed) t_->m.auth_failed++;
    else t_->m.protocol_errors++;
  }

  void deliver(decoded_frame&& f) {
    ++unreleased_;
    std::weak_ptr<session_base> weak = shared_from_this();
    auto release = [weak] {
      if (auto s = weak.lock()) s->post([s] {
          if (s->unreleased_ > 0) --s->unreleased_;
          s->maybe_read();
        });
    };
    auto in = std::make_shared<net::inbound>(connection_ptr(shared_from_this()), std::move(f), std::move(release));
    if (t_->handlers.on_message) t_->handlers.on_message(std::move(in));
    maybe_read();
  }

  void on_read_error(error_code ec) {
    if (phase_ == phase::done) return;
    if (ec == websocket::error::message_too_big) {
      t_->m.oversized++;
      if (phase_ == phase::handshaking) t_->m.handshake_failed++;
      finish(invalid_input("frame larger than the limit of {} bytes", t_->opt.max_frame_bytes));
      return;
    }
    if (ec == beast::error::timeout) {
      t_->m.timeouts++;
      if (phase_ == phase::handshaking) t_->m.handshake_failed++;
      finish(status(error_kind::io, "the peer went silent (idle timeout)"));
      return;
    }
    if (close_reason_) {
      finish(*close_reason_);
      return;
    }
    if (ec == websocket::error::closed) {
      finish(peer_closed_status());
      return;
    }
    if (ec.category() == websocket::make_error_code(websocket::error::closed).category()) {
      t_->m.bad_frames++;  // WebSocket protocol garbage (bad opcode, unmasked client frame, ...)
      if (phase_ == phase::handshaking) t_->m.handshake_failed++;
      finish(invalid_input("WebSocket protocol error: {}", ec.message()));
      return;
    }
    if (phase_ == phase::handshaking) t_->m.handshake_failed++;
    finish(status(error_kind::io, fmt::format("connection lost: {}", ec.message())));
  }

  status peer_closed_status() const {
    if (peer_goodbye_ && peer_goodbye_->reason != goodbye_reason::normal) {
      std::string text = fmt::format("the peer closed the connection: {}", to_string(peer_goodbye_->reason));
      if (!peer_goodbye_->message.empty()) text += ": " + peer_goodbye_->message;
      return status(peer_goodbye_->reason == goodbye_reason::version_mismatch ? error_kind::invalid_input : error_kind::io,
                    text);
    }
    return status::ok();
  }

  // Misbehaviour: drop what is queued, send Goodbye and close with a policy-violation code.
  void fail(goodbye_reason reason, status why) {
    if (phase_ == phase::done || phase_ == phase::closing) return;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      // Keep the frame being written (if any); drop the rest.
      while (queue_.size() > (writing_ ? 1u : 0u)) {
        queue_bytes_ -= queue_.back().size();
        queue_.pop_back();
      }
    }
    q_cv_.notify_all();
    close_gracefully(reason, why.message(), why, /*send_goodbye=*/true, websocket::close_code::policy_error);
  }

  void close_gracefully(goodbye_reason reason, const std::string& text, status why, bool send_goodbye = true,
                        websocket::close_code code = websocket::close_code::normal) {
    if (phase_ == phase::done || phase_ == phase::closing) return;
    if (phase_ == phase::setup) {
      finish(why);
      return;
    }
    if (!close_reason_) close_reason_ = why.is_ok() ? peer_closed_status() : why;
    close_code_ = websocket::close_reason(code, close_text(text.empty() ? to_string(reason) : text));
    bool was_open = phase_ == phase::open || phase_ == phase::handshaking;
    phase_ = phase::closing;
    handshake_timer_.cancel();
    if (send_goodbye && was_open && !pipe_mode_) (void)enqueue(goodbye{reason, text}, /*bounded=*/false);
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      tx_closed_ = true;
      close_after_drain_ = true;
      if (queue_.empty() && !writing_) close_now_ = true;
    }
    q_cv_.notify_all();
    // Whatever happens, the connection is gone after the handshake timeout.
    close_timer_.expires_after(t_->opt.handshake_timeout);
    close_timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec) self->finish(self->close_reason_ ? *self->close_reason_ : status::ok());
    });
    if (close_now_) start_ws_close();
    else pump();
  }

  void start_ws_close() {
    if (ws_close_started_ || phase_ == phase::done) return;
    ws_close_started_ = true;
    io_close(close_code_);
  }

  void finish(status why) {
    if (phase_ == phase::done) return;
    bool was_established = established_.load();
    phase_ = phase::done;
    handshake_timer_.cancel();
    close_timer_.cancel();
    pace_timer_.cancel();
    io_hard_close();
    std::deque<std::function<void()>> written;
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      finished_ = true;
      tx_closed_ = true;
      queue_.clear();
      queue_bytes_ = 0;
      written.swap(pipe_written_);
    }
    q_cv_.notify_all();
    for (auto& w : written)
      if (w) w();
    t_->m.closed++;
    auto self = shared_from_this();
    if (pipe_mode_) {
      auto cb = std::move(pipe_on_close_);
      pipe_on_close_ = nullptr;
      pipe_on_data_ = nullptr;
      if (cb) cb(why);
    } else if (was_established) {
      if (t_->handlers.on_close) t_->handlers.on_close(self, why);
    } else if (connect_cb_) {
      auto cb = std::move(connect_cb_);
      connect_cb_ = nullptr;
      status s = why.is_ok() ? status(error_kind::io, "the peer closed the connection during the handshake") : why;
      cb(s.with_context(url_));
    } else if (inbound_ && t_->handlers.on_refused && !http_served_) {
      t_->handlers.on_refused(remote_, why.is_ok() ? status(error_kind::io, "closed during the handshake") : why);
    }
    t_->unregister(id_);
  }

  const bool inbound_;
  const uint64_t id_;
  std::optional<std::string> expect_id_;
  std::atomic<bool> pipe_mode_{false};
  std::function<void(std::string)> pipe_on_data_;          // strand only
  std::function<void(const status&)> pipe_on_close_;       // strand only
  std::optional<handshake> hs_;
  std::atomic<bool> established_{false};
  std::atomic<int64_t> rtt_us_{-1}, ping_sent_us_{0};
  std::function<void(expected<connection_ptr>)> connect_cb_;
  std::string url_;

  // Strand-only state.
  phase phase_ = phase::setup;
  asio::steady_timer handshake_timer_, close_timer_, pace_timer_;
  uint64_t rx_seq_ = 0;
  std::optional<session_key> rx_key_;
  size_t unreleased_ = 0;
  bool reading_ = false, writing_ = false, ws_close_started_ = false, close_now_ = false;
  bool http_served_ = false;  // a plain HTTP request was answered: not a refused peer
  std::optional<status> close_reason_;
  std::optional<goodbye> peer_goodbye_;
  websocket::close_reason close_code_;

  // Encoder state (enc_mu_): senders of one connection encode one at a time, in sequence order.
  std::mutex enc_mu_;
  uint64_t tx_seq_ = 0;
  std::optional<bytes16> tx_channel_;
  std::optional<session_key> tx_key_;
  uint16_t tx_version_ = kProtocolVersion;
  uint64_t peer_max_frame_ = 0;

  // Send queue (q_mu_).
  mutable std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<frame> queue_;
  size_t queue_bytes_ = 0;
  bool write_posted_ = false, tx_closed_ = false, finished_ = false, close_after_drain_ = false;
  std::deque<std::function<void()>> pipe_written_;  // pipes: one callback per queued message

  friend struct transport::impl;
};

// ------------------------------------------------------------------ streams

template <bool Tls>
class session final : public session_base {
 public:
  using next_layer = std::conditional_t<Tls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;
  using ws_t = websocket::stream<next_layer>;

  // Inbound: an accepted socket.
  session(std::shared_ptr<transport::impl> t, tcp::socket socket, std::string ip)
      : session_base(t, socket.get_executor(), true, std::nullopt),
        ws_(make_stream(*t, std::move(socket))),
        resolver_(strand_) {
    accepted_ip_ = std::move(ip);
  }
  // Outbound.
  // answer: the dialed side of the handshake (a relay circuit; see transport::answer_circuit).
  session(std::shared_ptr<transport::impl> t, exec_t strand, std::optional<key32> expect, bool answer = false)
      : session_base(t, strand, answer, expect), ws_(make_stream(*t, strand)), resolver_(strand_) {}

  void start_server() {
    error_code ec;
    auto ep = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true), ec);
    if constexpr (Tls) {
      beast::get_lowest_layer(ws_).expires_after(t_->opt.handshake_timeout);
      ws_.next_layer().async_handshake(ssl::stream_base::server, [self = me()](error_code ec) {
        if (ec) return self->on_setup_error("TLS handshake", ec);
        self->ws_accept();
      });
    } else {
      ws_accept();
    }
  }

  void start_client(const ws_url& u) {
    host_ = u.host;
    host_header_ = (u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host) + ":" + std::to_string(u.port);
    path_ = u.path;
    resolver_.async_resolve(u.host, std::to_string(u.port),
                            [self = me()](error_code ec, tcp::resolver::results_type results) {
                              if (ec) return self->on_setup_error("resolving the host", ec);
                              self->connect(results);
                            });
  }

 protected:
  void io_read() override {
    ws_.async_read(rx_buf_, [self = me()](error_code ec, size_t n) { self->on_read(ec, n); });
  }
  void io_write(const frame& f) override {
    ws_.async_write(asio::buffer(f.data(), f.size()),
                    [self = me(), f](error_code ec, size_t n) { self->on_write(ec, n); });
  }
  void io_close(websocket::close_reason cr) override {
    ws_.async_close(cr, [self = me()](error_code ec) { self->on_close_done(ec); });
  }
  void io_hard_close() override {
    error_code ec;
    resolver_.cancel();
    beast::get_lowest_layer(ws_).cancel();
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).close();
  }
  bool io_got_binary() const override { return ws_.got_binary(); }

 private:
  std::shared_ptr<session> me() { return std::static_pointer_cast<session>(shared_from_this()); }

  static ws_t make_stream(transport::impl& t, tcp::socket socket) {
    if constexpr (Tls) return ws_t(std::move(socket), *t.server_tls);
    else return ws_t(std::move(socket));
  }
  static ws_t make_stream(transport::impl& t, exec_t strand) {
    if constexpr (Tls) return ws_t(strand, t.client_tls);
    else return ws_t(strand);
  }

  void set_ws_options(beast::role_type role) {
    websocket::stream_base::timeout to{};
    to.handshake_timeout = t_->opt.handshake_timeout;
    to.idle_timeout = t_->opt.idle_timeout;
    to.keep_alive_pings = true;
    ws_.set_option(to);
    ws_.read_message_max(t_->opt.max_frame_bytes);
    ws_.auto_fragment(false);
    ws_.write_buffer_bytes(kWriteBufferBytes);
    ws_.binary(true);
    if (role == beast::role_type::server)
      ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
        res.set(beast::http::field::server, "gpugrid");
      }));
    else
      ws_.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
        req.set(beast::http::field::user_agent, "gpugrid");
      }));
  }

  // Reads the HTTP request first: a WebSocket upgrade becomes a peer connection, a plain GET is
  // answered from options.http_get (metrics) and closed.
  void ws_accept() {
    beast::get_lowest_layer(ws_).expires_after(t_->opt.handshake_timeout);
    http_parser_.emplace();
    http_parser_->header_limit(16 * 1024);
    http_parser_->body_limit(0);
    beast::http::async_read(ws_.next_layer(), http_buf_, *http_parser_, [self = me()](error_code ec, size_t) {
      if (ec) return self->on_setup_error("reading the HTTP request", ec);
      auto req = self->http_parser_->release();
      self->http_parser_.reset();
      std::string target(req.target());
      if (websocket::is_upgrade(req) && target.rfind("/relay/", 0) == 0) {
        status admitted = self->t_->opt.relay.admit ? self->t_->opt.relay.admit(target, self->accepted_ip_)
                                                    : invalid_input("this node is no relay");
        if (!admitted.is_ok()) return self->refuse_upgrade(req, admitted);
        beast::get_lowest_layer(self->ws_).expires_never();
        self->set_ws_options(beast::role_type::server);
        self->ws_.async_accept(req, [self, target](error_code ec2) {
          if (ec2) return self->on_setup_error("WebSocket handshake", ec2);
          self->on_pipe_open(target);
        });
        return;
      }
      if (websocket::is_upgrade(req)) {
        beast::get_lowest_layer(self->ws_).expires_never();  // the WebSocket's own timeouts take over
        self->set_ws_options(beast::role_type::server);
        self->ws_.async_accept(req, [self](error_code ec2) {
          if (ec2) return self->on_setup_error("WebSocket handshake", ec2);
          self->on_ws_open();
        });
        return;
      }
      self->serve_http(req);
    });
  }

  // A relay circuit that cannot be had: HTTP 404 (or 503 for a cap) with the reason as the body.
  void refuse_upgrade(const beast::http::request<beast::http::empty_body>& req, const status& why) {
    namespace http = beast::http;
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(false);
    res->set(http::field::server, "gpugrid");
    res->result(why.kind() == error_kind::io ? http::status::service_unavailable : http::status::not_found);
    res->set(http::field::content_type, "text/plain; charset=utf-8");
    res->body() = why.message();
    res->prepare_payload();
    mark_http_served();
    t_->m.http_requests++;
    http::async_write(ws_.next_layer(), *res, [self = me(), res](error_code, size_t) { self->finish_http(); });
  }

  void serve_http(const beast::http::request<beast::http::empty_body>& req) {
    namespace http = beast::http;
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(false);
    res->set(http::field::server, "gpugrid");
    std::string target(req.target());
    std::string path = target.substr(0, target.find('?'));
    std::optional<std::string> body;
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res->result(http::status::method_not_allowed);
      body = "only GET is served here\n";
    } else if (path == "/healthz") {  // liveness for load balancers and supervisors
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; charset=utf-8");
      body = "ok\n";
    } else if (t_->opt.http_get && (body = t_->opt.http_get(path))) {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    } else {
      res->result(http::status::not_found);
      body = "not found; peers speak WebSocket here, GET /metrics serves metrics and GET /healthz liveness\n";
    }
    res->body() = req.method() == http::verb::head ? std::string() : std::move(*body);
    res->prepare_payload();
    mark_http_served();
    t_->m.http_requests++;
    http::async_write(ws_.next_layer(), *res, [self = me(), res](error_code, size_t) {
      self->finish_http();
    });
  }

  std::optional<beast::http::request_parser<beast::http::empty_body>> http_parser_;
  beast::flat_buffer http_buf_;

  void connect(const tcp::resolver::results_type& results) {
    beast::get_lowest_layer(ws_).expires_after(t_->opt.connect_timeout);
    beast::get_lowest_layer(ws_).async_connect(
        results, [self = me()](error_code ec, const tcp::resolver::results_type::endpoint_type& ep) {
          if (ec) return self->on_setup_error("connecting", ec);
          self->remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
          error_code ignored;
          beast::get_lowest_layer(self->ws_).socket().set_option(tcp::no_delay(true), ignored);
          self->after_connect();
        });
  }

  void after_connect() {
    if constexpr (Tls) {
      if (!SSL_set_tlsext_host_name(ws_.next_layer().native_handle(), host_.c_str())) {
        // Not fatal: SNI only helps servers with several certificates (and IPs take none).
      }
      beast::get_lowest_layer(ws_).expires_after(t_->opt.handshake_timeout);
      ws_.next_layer().async_handshake(ssl::stream_base::client, [self = me()](error_code ec) {
        if (ec) return self->on_setup_error("TLS handshake", ec);
        self->ws_handshake();
      });
    } else {
      ws_handshake();
    }
  }

  void ws_handshake() {
    beast::get_lowest_layer(ws_).expires_never();
    set_ws_options(beast::role_type::client);
    ws_.async_handshake(upgrade_response_, host_header_, path_, [self = me()](error_code ec) {
      if (ec) {
        const std::string& body = self->upgrade_response_.body();
        if (ec == websocket::error::upgrade_declined && !body.empty() && body.size() < 512 &&
            self->path_.rfind("/relay/", 0) == 0) {
          return self->on_circuit_refused(body);
        }
        return self->on_setup_error("WebSocket handshake", ec);
      }
      self->on_ws_open();
    });
  }

  ws_t ws_;
  tcp::resolver resolver_;
  std::string host_, host_header_, path_;
  websocket::response_type upgrade_response_;
};

// ------------------------------------------------------------------ transport

void transport::impl::do_accept() {
  acceptor->async_accept(asio::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
    if (ec) {
      // EMFILE and friends: back off a little instead of spinning.
      auto timer = std::make_shared<asio::steady_timer>(*accept_strand, ms(50));
      timer->async_wait([this, timer](error_code) {
        if (acceptor->is_open()) do_accept();
      });
      return;
    }
    m.accepted++;
    error_code ep_ec;
    auto ep = socket.remote_endpoint(ep_ec);
    std::string ip = ep_ec ? std::string() : ep.address().to_string();
    bool refuse = false;
    {
      // Pending connections (handshake or plain HTTP) have their own budget, so established
      // peers at max_connections never lock out new peers or /metrics.
      std::lock_guard<std::mutex> lk(mu);
      size_t pending = 0, from_ip = 0;
      for (const auto& [id, w] : sessions) {
        auto s = w.lock();
        if (!s) continue;
        if (s->inbound() && !s->established() && !s->is_pipe()) ++pending;
        if (!ip.empty() && s->accepted_ip() == ip) ++from_ip;
      }
      if (pending >= opt.max_pending) {
        m.refused_pending++;
        refuse = true;
      } else if (from_ip >= opt.max_per_address) {
        m.refused_address++;
        refuse = true;
      }
    }
    if (refuse) {
      m.refused_overload++;
      error_code ignored;
      socket.close(ignored);
    } else {
      std::shared_ptr<session_base> s;
      auto self_ptr = weak_self.lock();
      if (server_tls) {
        auto p = std::make_shared<session<true>>(self_ptr, std::move(socket), ip);
        s = p;
        register_session(s);
        asio::dispatch(p->strand(), [p] { p->start_server(); });
      } else {
        auto p = std::make_shared<session<false>>(self_ptr, std::move(socket), ip);
        s = p;
        register_session(s);
        asio::dispatch(p->strand(), [p] { p->start_server(); });
      }
    }
    do_accept();
  });
}

void transport::impl::register_session(const std::shared_ptr<session_base>& s) {
  std::lock_guard<std::mutex> lk(mu);
  sessions[s->id()] = s;
}

int64_t transport_metrics::misbehaving() const {
  return oversized + text_frames + bad_frames + bad_signatures + replays + protocol_errors + handshake_failed;
}

const char* to_string(send_result r) {
  switch (r) {
    case send_result::queued: return "queued";
    case send_result::queue_full: return "send queue full";
    case send_result::closed: return "connection closed";
    case send_result::too_large: return "frame larger than the peer accepts";
    case send_result::encode_failed: return "message cannot be encoded";
  }
  return "unknown";
}

inbound::inbound(connection_ptr from, decoded_frame f, std::function<void()> on_release)
    : from_(std::move(from)), frame_(std::move(f)), on_release_(std::move(on_release)) {}

inbound::~inbound() { release(); }

void inbound::release() {
  if (released_.exchange(true)) return;
  if (on_release_) on_release_();
}

std::string ws_url::str() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return fmt::format("{}://{}:{}{}", tls ? "wss" : "ws", h, port, path == "/" ? "" : path);
}

expected<ws_url> parse_ws_url(const std::string& url) {
  ws_url u;
  std::string rest;
  if (url.rfind("ws://", 0) == 0) {
    rest = url.substr(5);
  } else if (url.rfind("wss://", 0) == 0) {
    u.tls = true;
    rest = url.substr(6);
  } else {
    return invalid_input("peer URL '{}' must start with ws:// or wss://", url);
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) u.path = rest.substr(slash);
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return invalid_input("peer URL '{}': unterminated [IPv6] address", url);
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return invalid_input("peer URL '{}': junk after the address", url);
      port = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return invalid_input("peer URL '{}' has no host", url);
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) == 0 ||
        std::stoul(port) > 65535)
      return invalid_input("peer URL '{}': port '{}' is not a number from 1 to 65535", url, port);
    u.port = static_cast<uint16_t>(std::stoul(port));
  }
  return u;
}

transport::transport(std::shared_ptr<impl> p) : impl_(std::move(p)) {}

transport::~transport() { stop(); }

expected<std::unique_ptr<transport>> transport::create(const identity& self, transport_options options,
                                                         transport_handlers handlers) {
  auto p = std::make_shared<impl>(self, std::move(options), std::move(handlers));
  p->weak_self = p;
  p->client_tls.set_verify_mode(ssl::verify_none);  // peers prove their node key in the handshake
  const std::string& cert = p->opt.tls_cert_file;
  const std::string& key = p->opt.tls_key_file;
  if (cert.empty() != key.empty()) return status(error_kind::usage, "--tls-cert and --tls-key must be given together");
  if (!cert.empty()) {
    p->server_tls.emplace(ssl::context::tls_server);
    GG_RETURN_IF_ERROR(configure_server_tls(*p->server_tls, cert, key));
  }
  p->accept_strand.emplace(asio::make_strand(p->ioc));
  p->work.emplace(p->ioc.get_executor());
  for (int i = 0; i < std::max(1, p->opt.io_threads); ++i) {
    p->threads.emplace_back([raw = p.get()] {
      for (;;) {
        try {
          raw->ioc.run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "gpugrid: I/O thread: unexpected exception: %s\n", e.what());
        }
      }
    });
  }
  return std::unique_ptr<transport>(new transport(std::move(p)));
}

expected<uint16_t> transport::listen(const std::string& host_in, uint16_t port) {
  impl& p = *impl_;
  if (p.acceptor) return status(error_kind::usage, "this transport is already listening");
  std::string host = host_in.empty() ? "0.0.0.0" : host_in;
  error_code ec;
  tcp::endpoint ep;
  auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, port);
  } else {
    tcp::resolver r(p.ioc);
    auto results = r.resolve(host, std::to_string(port), ec);
    if (ec || results.empty()) return io_error("cannot listen on {}:{}: {}", host, port, ec ? ec.message() : "no address");
    ep = results.begin()->endpoint();
  }
  auto fail = [&](const char* what) { return io_error("cannot listen on {}:{}: {}: {}", host, port, what, ec.message()); };
  p.acceptor.emplace(*p.accept_strand);
  p.acceptor->open(ep.protocol(), ec);
  if (ec) return fail("open");
  p.acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  p.acceptor->bind(ep, ec);
  if (ec) return fail("bind");
  p.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  uint16_t bound = p.acceptor->local_endpoint(ec).port();
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    p.url = fmt::format("{}://{}:{}", p.server_tls ? "wss" : "ws", h, bound);
    if (p.stopped) return io_error("the transport has stopped");
    asio::post(*p.accept_strand, [raw = &p] { raw->do_accept(); });
  }
  return bound;
}

std::string transport::url() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->url;
}

namespace {

// The dialing side of a connection, for connect() (a peer) and answer_circuit() (the circuit a
// relay holds for us, where this side answers the handshake: `answer`).
void dial(const std::shared_ptr<transport::impl>& t, const std::string& url,
          std::function<void(expected<connection_ptr>)> done, std::optional<key32> expect, bool answer) {
  transport::impl& p = *t;
  auto u = parse_ws_url(url);
  if (!u) {
    done(u.error());
    return;
  }
  {
    std::lock_guard<std::mutex> lk(p.mu);
    if (p.stopped) {
      done(status(error_kind::io, fmt::format("{}: the transport has stopped", url)));
      return;
    }
  }
  p.m.dialed++;
  exec_t strand = asio::make_strand(p.ioc);
  std::string relayed_id;
  if (u->path.rfind("/relay/", 0) == 0 && u->path.rfind("/relay/accept/", 0) != 0) relayed_id = u->path.substr(7);
  auto start = [&](auto s) {
    s->set_connect_callback(std::move(done), url);
    if (!relayed_id.empty()) s->set_expected_id(relayed_id);
    p.register_session(s);
    s->post([s, u = *u] { s->start_client(u); });
  };
  if (u->tls) start(std::make_shared<session<true>>(t, strand, expect, answer));
  else start(std::make_shared<session<false>>(t, strand, expect, answer));
}

}  // namespace

void transport::connect(const std::string& url, std::function<void(expected<connection_ptr>)> done,
                        std::optional<key32> expect) {
  dial(impl_, url, std::move(done), expect, false);
}

void transport::answer_circuit(const std::string& url, std::function<void(expected<connection_ptr>)> done) {
  dial(impl_, url, std::move(done), std::nullopt, true);
}

expected<connection_ptr> transport::connect_sync(const std::string& url, std::optional<key32> expect) {
  auto promise = std::make_shared<std::promise<expected<connection_ptr>>>();
  auto future = promise->get_future();
  connect(url, [promise](expected<connection_ptr> r) { promise->set_value(std::move(r)); }, expect);
  auto limit = impl_->opt.connect_timeout + 3 * impl_->opt.handshake_timeout + ms(1000);
  if (future.wait_for(limit) != std::future_status::ready)
    return status(error_kind::io, fmt::format("{}: no connection within {} ms", url, limit.count()));
  return future.get();
}

std::vector<connection_ptr> transport::connections() const {
  std::vector<connection_ptr> out;
  std::lock_guard<std::mutex> lk(impl_->mu);
  for (auto& [id, weak] : impl_->sessions)
    if (auto s = weak.lock())
      if (s->is_open()) out.push_back(s);
  return out;
}

transport_metrics transport::metrics() const {
  const counters& c = impl_->m;
  transport_metrics m;
  m.accepted = c.accepted;
  m.dialed = c.dialed;
  m.established = c.established;
  m.closed = c.closed;
  m.refused_overload = c.refused_overload;
  m.refused_pending = c.refused_pending;
  m.refused_address = c.refused_address;
  m.refused_identity = c.refused_identity;
  m.handshake_failed = c.handshake_failed;
  m.version_mismatch = c.version_mismatch;
  m.auth_failed = c.auth_failed;
  m.timeouts = c.timeouts;
  m.oversized = c.oversized;
  m.text_frames = c.text_frames;
  m.bad_frames = c.bad_frames;
  m.bad_signatures = c.bad_signatures;
  m.replays = c.replays;
  m.protocol_errors = c.protocol_errors;
  m.frames_in = c.frames_in;
  m.frames_out = c.frames_out;
  m.bytes_in = c.bytes_in;
  m.bytes_out = c.bytes_out;
  m.send_queue_full = c.send_queue_full;
  m.http_requests = c.http_requests;
  return m;
}

const identity& transport::self() const { return impl_->self; }

void transport::stop(ms grace) {
  impl& p = *impl_;
  std::vector<std::shared_ptr<session_base>> live;
  {
    std::lock_guard<std::mutex> lk(p.mu);
    if (p.stopped || p.threads.empty()) return;
    for (auto& [id, weak] : p.sessions)
      if (auto s = weak.lock()) live.push_back(s);
    if (p.acceptor)
      asio::post(*p.accept_strand, [raw = &p] {
        error_code ec;
        raw->acceptor->close(ec);
      });
  }
  for (auto& s : live) s->post([s] { s->shutdown_gracefully(); });
  live.clear();
  auto drain = [&](ms limit) {
    std::unique_lock<std::mutex> lk(p.mu);
    p.changed.wait_for(lk, limit, [&] { return p.sessions.empty(); });
    for (auto& [id, weak] : p.sessions)
      if (auto s = weak.lock()) live.push_back(s);
  };
  drain(grace);
  for (auto& s : live) s->post([s] { s->shutdown_now(); });
  live.clear();
  drain(ms(500));
  live.clear();
  {
    std::lock_guard<std::mutex> lk(p.mu);
    p.stopped = true;
    p.stopped_flag = true;
  }
  p.work.reset();
  // Everything is closed, so run() returns once the aborted handlers have run; a stuck handler
  // (a user callback that blocks) is cut off after a deadline.
  auto deadline = std::chrono::steady_clock::now() + ms(2000);
  while (!p.ioc.stopped() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(ms(2));
  p.ioc.stop();
  for (auto& t : p.threads)
    if (t.joinable()) t.join();
  p.threads.clear();
}

}  // namespace gpugrid::net
