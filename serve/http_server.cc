#include "serve/http_server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <future>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>

#include "net/tls_context.h"

namespace gpugrid::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

struct http_server::impl {
  explicit impl(const http_server_options& o, v2_service* s)
      : opt(o), service(s), workers(std::max(1, o.workers)), long_pool(std::max(1, o.long_workers)) {}
  http_server_options opt;
  v2_service* service;
  std::atomic<size_t> queued{0};
  std::atomic<size_t> open_connections{0};
  std::atomic<bool> stopped{false};
  uint16_t port = 0;
  std::string host;
  std::optional<ssl::context> tls;
  asio::thread_pool workers;
  asio::thread_pool long_pool;   // deferred responses (generation), see http_response::deferred
  // Declared after everything a session touches: destroying the context destroys the sessions
  // its pending handlers still hold.
  asio::io_context ioc;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;

  void accept();
};

namespace {

template <class Stream>
class http_session : public std::enable_shared_from_this<http_session<Stream>> {
 public:
  template <class... Args>
  http_session(http_server::impl* server, Args&&... args)
      : server_(server), stream_(std::forward<Args>(args)...), deadline_(stream_.get_executor()) {}
  ~http_session() { --server_->open_connections; }

  void start() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      read_request();
    } else {
      arm(server_->opt.header_timeout);
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](const error_code& ec) {
        self->disarm();
        if (ec) {
          if (self->timed_out_) ++self->server_->service->transport().timeouts;
          return;
        }
        self->read_request();
      });
    }
  }

 private:
  auto& socket() { return beast::get_lowest_layer(stream_).socket(); }

  void arm(std::chrono::milliseconds d) {
    uint64_t gen = ++gen_;
    timed_out_ = false;
    deadline_.expires_after(d);
    deadline_.async_wait([self = this->shared_from_this(), gen](const error_code& ec) {
      if (ec || gen != self->gen_) return;
      self->timed_out_ = true;
      error_code ignored;
      self->socket().cancel(ignored);
    });
  }
  void disarm() {
    ++gen_;
    deadline_.cancel();
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_->opt.max_header_bytes));
    parser_->body_limit(server_->opt.max_body_bytes);
    arm(server_->opt.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](const error_code& ec, size_t) { self->on_header(ec); });
  }

  // The error response in the format of the route the request went to (OpenAI's under /v1).
  http_response error_for(int status, const std::string& message) {
    std::string target = parser_ ? std::string(parser_->get().target()) : std::string();
    return server_->service->error_for(target, status, message);
  }

  // Closes quietly when nothing of a request came; answers otherwise.
  void read_failed(const error_code& ec, bool in_body) {
    auto& counters = server_->service->transport();
    if (timed_out_) {
      // An idle kept-alive connection that sent nothing is simply closed.
      if (!in_body && buffer_.size() == 0 && !parser_->got_some()) return close();
      ++counters.timeouts;
      return send(error_for(408, in_body ? "the request body was not received in time"
                                         : "the request header was not received in time"), true);
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted || ec == ssl::error::stream_truncated)
      return close();
    if (ec == http::error::body_limit) {
      ++counters.too_large;
      return send(error_for(413, fmt::format("the request body is over the limit of {} bytes", server_->opt.max_body_bytes)), true);
    }
    if (ec == http::error::header_limit) {
      ++counters.bad_requests;
      return send(error_for(431, "the request header is too large"), true);
    }
    ++counters.bad_requests;
    send(error_for(400, "malformed HTTP request: " + ec.message()), true);
  }

  void on_header(const error_code& ec) {
    disarm();
    if (ec) return read_failed(ec, false);
    auto& counters = server_->service->transport();
    auto length = parser_->content_length();
    if (length && *length > server_->opt.max_body_bytes) {
      ++counters.too_large;
      return send(error_for(413, fmt::format("the request body ({} bytes) is over the limit of {} bytes", *length,
                                             server_->opt.max_body_bytes)), true);
    }
    auto expect = parser_->get()[http::field::expect];
    if (!parser_->is_done() && beast::iequals(expect, "100-continue")) {
      auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      arm(server_->opt.write_timeout);
      asio::async_write(stream_, asio::buffer(*cont), [self = this->shared_from_this(), cont](const error_code& e, size_t) {
        self->disarm();
        if (e) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    arm(server_->opt.body_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](const error_code& ec, size_t) { self->on_body(ec); });
  }

  void on_body(const error_code& ec) {
    disarm();
    if (ec) return read_failed(ec, true);
    auto& msg = parser_->get();
    auto req = std::make_shared<http_request>();
    req->method = std::string(msg.method_string());
    req->target = std::string(msg.target());
    for (const auto& f : msg) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req->headers[name] = std::string(f.value());
    }
    req->body = std::move(msg.body());
    keep_alive_ = msg.keep_alive();
    if (server_->queued.load() >= server_->opt.max_queued) {
      ++server_->service->transport().overloaded;
      auto r = error_for(503, "the server is busy; try again");
      r.headers.emplace_back("Retry-After", "1");
      return send(std::move(r), false);
    }
    req->cancelled = std::make_shared<std::atomic<bool>>(false);
    watch_hangup(req->cancelled);
    ++server_->queued;
    asio::post(server_->workers, [self = this->shared_from_this(), req] {
      http_response r;
      try {
        r = self->server_->service->handle(*req);
      } catch (const std::bad_alloc&) {
        r = error_response(500, "out of memory");
      } catch (const std::exception& e) {
        r = error_response(500, std::string("internal error: ") + e.what());
      }
      --self->server_->queued;
      if (r.deferred) {
        asio::post(self->server_->long_pool, [self, req, fn = std::move(r.deferred)] { self->run_deferred(req, fn); });
        return;
      }
      asio::post(self->stream_.get_executor(), [self, r = std::move(r)]() mutable { self->send(std::move(r), false); });
    });
  }

  // The response_stream of one deferred response: each write is posted to the session's strand
  // and waited for (the write timeout bounds the wait).
  class chunk_stream : public response_stream {
   public:
    chunk_stream(std::shared_ptr<http_session> s, std::shared_ptr<std::atomic<bool>> hung_up)
        : s_(std::move(s)), hung_up_(std::move(hung_up)) {}
    bool begin(const http_response& head) override {
      if (begun_) return !failed_;
      begun_ = true;
      http::response<http::empty_body> res;
      res.version(11);
      res.result(static_cast<unsigned>(head.status));
      res.set(http::field::server, "gpugrid");
      res.set(http::field::content_type, head.content_type);
      res.set(http::field::cache_control, "no-cache");
      for (const auto& [k, v] : head.headers) res.set(k, v);
      res.keep_alive(s_->keep_alive_);
      res.chunked(true);
      std::ostringstream os;
      os << res.base();
      return send_raw(os.str());
    }
    bool write(std::string_view data) override {
      if (!begun_ || failed_) return false;
      if (data.empty()) return !gone();
      return send_raw(fmt::format("{:x}\r\n", data.size()) + std::string(data) + "\r\n");
    }
    bool gone() const override { return failed_ || (hung_up_ && hung_up_->load()) || s_->server_->stopped.load(); }
    bool finish() { return begun_ && !failed_ && send_raw("0\r\n\r\n"); }
    bool begun() const { return begun_; }

   private:
    bool send_raw(std::string bytes) {
      if (failed_) return false;
      auto buf = std::make_shared<std::string>(std::move(bytes));
      auto done = std::make_shared<std::promise<error_code>>();
      auto result = done->get_future();
      auto s = s_;
      asio::post(s->stream_.get_executor(), [s, buf, done] {
        s->arm(s->server_->opt.write_timeout);
        asio::async_write(s->stream_, asio::buffer(*buf), [s, buf, done](const error_code& ec, size_t) {
          s->disarm();
          done->set_value(ec);
        });
      });
      if (result.get()) {
        failed_ = true;
        ++s_->server_->service->transport().disconnects;
      }
      return !failed_;
    }
    std::shared_ptr<http_session> s_;
    std::shared_ptr<std::atomic<bool>> hung_up_;
    std::atomic<bool> begun_{false};
    std::atomic<bool> failed_{false};
  };

  // On a thread of the long pool: runs a deferred response, then sends what it returned, or
  // ends the body it streamed.
  void run_deferred(std::shared_ptr<http_request> req, const std::function<http_response(response_stream&)>& fn) {
    auto self = this->shared_from_this();
    chunk_stream stream(self, req->cancelled);
    http_response r;
    try {
      r = fn(stream);
    } catch (const std::bad_alloc&) {
      r = error_for(500, "out of memory");
    } catch (const std::exception& e) {
      r = error_for(500, std::string("internal error: ") + e.what());
    }
    if (!stream.begun()) {
      asio::post(stream_.get_executor(), [self, r = std::move(r)]() mutable { self->send(std::move(r), false); });
      return;
    }
    bool ok = stream.finish();
    asio::post(stream_.get_executor(), [self, ok] {
      error_code ignored;
      self->socket().cancel(ignored);   // ends watch_hangup's wait
      if (!ok || !self->keep_alive_) return self->close();
      self->read_request();
    });
  }

  // While the request waits or runs, notices a client that hangs up (EOF on the socket).
  void watch_hangup(std::shared_ptr<std::atomic<bool>> flag) {
    socket().async_wait(tcp::socket::wait_read, [self = this->shared_from_this(), flag](const error_code& ec) {
      if (ec) return;
      char c;
      ssize_t n = ::recv(self->socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) *flag = true;
    });
  }

  void send(http_response r, bool close_after) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->result(static_cast<unsigned>(r.status));
    res->set(http::field::server, "gpugrid");
    res->set(http::field::content_type, r.content_type);
    for (const auto& [k, v] : r.headers) res->set(k, v);
    res->keep_alive(keep_alive_ && !close_after);
    res->body() = std::move(r.body);
    res->prepare_payload();
    arm(server_->opt.write_timeout);
    http::async_write(stream_, *res, [self = this->shared_from_this(), res](const error_code& ec, size_t) {
      self->disarm();
      error_code ignored;
      self->socket().cancel(ignored);   // ends watch_hangup's wait, which would hold the session
      if (ec) {
        ++self->server_->service->transport().disconnects;
        return;
      }
      if (!res->keep_alive()) return self->close();
      self->read_request();
    });
  }

  void close() {
    error_code ignored;
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      socket().shutdown(tcp::socket::shutdown_send, ignored);
      socket().cancel(ignored);   // nothing may keep the session (and its descriptor) alive now
    } else {
      arm(std::chrono::milliseconds(2000));
      stream_.async_shutdown([self = this->shared_from_this()](const error_code&) { self->disarm(); });
    }
  }

  http_server::impl* server_;
  Stream stream_;
  asio::steady_timer deadline_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  uint64_t gen_ = 0;
  bool timed_out_ = false;
  bool keep_alive_ = true;
};

}  // namespace

void http_server::impl::accept() {
  acceptor->async_accept(asio::make_strand(ioc), [this](const error_code& ec, tcp::socket socket) {
    if (stopped) return;
    if (!ec) {
      ++service->transport().connections;
      if (open_connections.load() >= opt.max_connections) {
        error_code ignored;
        socket.close(ignored);
      } else {
        ++open_connections;
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);   // streamed chunks go out as written
        if (tls) std::make_shared<http_session<beast::ssl_stream<beast::tcp_stream>>>(this, std::move(socket), *tls)->start();
        else std::make_shared<http_session<beast::tcp_stream>>(this, std::move(socket))->start();
      }
    }
    accept();
  });
}

http_server::http_server(std::shared_ptr<impl> p) : impl_(std::move(p)) {}
http_server::~http_server() { stop(); }

expected<std::unique_ptr<http_server>> http_server::start(const http_server_options& options, v2_service* service) {
  auto p = std::make_shared<impl>(options, service);
  if (options.tls_cert.empty() != options.tls_key.empty())
    return status(error_kind::usage, "--tls-cert and --tls-key must be given together");
  if (!options.tls_cert.empty()) {
    p->tls.emplace(ssl::context::tls_server);
    GG_RETURN_IF_ERROR(net::configure_server_tls(*p->tls, options.tls_cert, options.tls_key));
  }
  error_code ec;
  std::string host = options.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "localhost") host = host.empty() ? "0.0.0.0" : "127.0.0.1";
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return invalid_input("--listen: '{}' is not an IP address", options.host);
  tcp::endpoint ep(addr, options.port);
  p->acceptor.emplace(p->ioc);
  p->acceptor->open(ep.protocol(), ec);
  if (!ec) p->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) p->acceptor->bind(ep, ec);
  if (!ec) p->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return io_error("cannot listen on {}:{}: {}", options.host, options.port, ec.message());
  p->port = p->acceptor->local_endpoint().port();
  p->host = addr.is_v6() ? "[" + host + "]" : host;
  p->accept();
  for (int i = 0; i < std::max(1, options.io_threads); ++i) {
    p->threads.emplace_back([raw = p.get()] {
      for (;;) {
        try {
          raw->ioc.run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "gpugrid: serve I/O thread: unexpected exception: %s\n", e.what());
        }
      }
    });
  }
  return std::unique_ptr<http_server>(new http_server(std::move(p)));
}

uint16_t http_server::port() const { return impl_->port; }

std::string http_server::url() const {
  return fmt::format("{}://{}:{}", impl_->tls ? "https" : "http", impl_->host, impl_->port);
}

void http_server::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  asio::post(impl_->ioc, [p = impl_.get()] {
    error_code ignored;
    p->acceptor->close(ignored);
  });
  impl_->workers.join();   // running requests finish
  impl_->long_pool.join(); // generations see stream.gone() and stop
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
}

}  // namespace gpugrid::serve
