#include "chain/http_transport.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>

#include <optional>

namespace gpugrid::chain {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

expected<parsed_url> parse_http_url(const std::string& url) {
  parsed_url u;
  std::string rest;
  if (url.rfind("http://", 0) == 0) rest = url.substr(7);
  else if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    rest = url.substr(8);
  } else {
    return invalid_input("chain RPC URL '{}' is not http:// or https://", url);
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  u.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.find('@') != std::string::npos)
    return invalid_input("chain RPC URL '{}': user:password@ is not supported (put a key in the path)", url);
  size_t colon = authority.rfind(':');
  bool bracketed = !authority.empty() && authority[0] == '[';
  if (colon != std::string::npos && (!bracketed || authority.find(']') < colon)) {
    u.host = authority.substr(0, colon);
    u.port = authority.substr(colon + 1);
  } else {
    u.host = authority;
    u.port = u.tls ? "443" : "80";
  }
  if (bracketed && u.host.size() > 2 && u.host.back() == ']') u.host = u.host.substr(1, u.host.size() - 2);
  bool port_ok = !u.port.empty() && u.port.size() <= 5 && u.port.find_first_not_of("0123456789") == std::string::npos &&
                 std::stoi(u.port) > 0 && std::stoi(u.port) <= 65535;
  if (u.host.empty() || !port_ok) return invalid_input("chain RPC URL '{}' has no valid host and port", url);
  return u;
}

namespace {

constexpr size_t kMaxBody = 16u << 20;

class beast_transport final : public http_transport {
 public:
  beast_transport(std::string url, parsed_url u) : url_(std::move(url)), u_(std::move(u)) {}

  const std::string& url() const override { return url_; }

  expected<std::string> post(const std::string& body, std::chrono::milliseconds timeout) override {
    asio::io_context ioc;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto fail = [&](const std::string& what, const beast::error_code& ec) -> status {
      std::string why = ec == beast::error::timeout || ec == asio::error::operation_aborted
                            ? fmt::format("no answer within {} ms", timeout.count())
                            : ec.message();
      return io_error("chain RPC {}: {} failed: {}", url_, what, why);
    };

    // Resolve with the same deadline (the resolver has no timer of its own).
    tcp::resolver resolver(ioc);
    beast::error_code ec = asio::error::would_block;
    tcp::resolver::results_type endpoints;
    resolver.async_resolve(u_.host, u_.port, [&](const beast::error_code& e, tcp::resolver::results_type r) {
      ec = e;
      endpoints = std::move(r);
    });
    ioc.run_until(deadline);
    if (ec == asio::error::would_block) {
      resolver.cancel();
      ioc.restart();
      ioc.run();
      return fail("resolving " + u_.host, beast::error::timeout);
    }
    if (ec) return fail("resolving " + u_.host, ec);
    ioc.restart();

    http::request<http::string_body> req{http::verb::post, u_.target, 11};
    req.set(http::field::host, u_.host);
    req.set(http::field::user_agent, "gpugrid");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();

    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxBody);
    beast::flat_buffer buffer;

    if (u_.tls) {
      asio::ssl::context ctx(asio::ssl::context::tls_client);
      ctx.set_default_verify_paths();
      ctx.set_verify_mode(asio::ssl::verify_peer);
      beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
      if (!SSL_set_tlsext_host_name(stream.native_handle(), u_.host.c_str()))
        return io_error("chain RPC {}: cannot set the TLS server name", url_);
      stream.set_verify_callback(asio::ssl::host_name_verification(u_.host));
      auto r = exchange(ioc, stream, beast::get_lowest_layer(stream), endpoints, deadline, req, parser, buffer, fail);
      beast::error_code ignored;
      beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
      return r;
    }
    beast::tcp_stream stream(ioc);
    auto r = exchange(ioc, stream, stream, endpoints, deadline, req, parser, buffer, fail);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return r;
  }

 private:
  // Runs one async operation to completion; the tcp_stream's expiry turns a stall into
  // error::timeout.
  template <typename Start>
  static beast::error_code run_op(asio::io_context& ioc, Start start) {
    beast::error_code ec = asio::error::would_block;
    start([&ec](const beast::error_code& e, auto&&...) { ec = e; });
    ioc.restart();
    ioc.run();
    return ec;
  }

  template <typename Stream, typename Fail>
  expected<std::string> exchange(asio::io_context& ioc, Stream& stream, beast::tcp_stream& tcp_layer,
                                 const tcp::resolver::results_type& endpoints,
                                 std::chrono::steady_clock::time_point deadline,
                                 http::request<http::string_body>& req,
                                 http::response_parser<http::string_body>& parser, beast::flat_buffer& buffer,
                                 Fail& fail) {
    tcp_layer.expires_at(deadline);
    beast::error_code ec = run_op(ioc, [&](auto h) { tcp_layer.async_connect(endpoints, h); });
    if (ec) return fail("connecting", ec);
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
      ec = run_op(ioc, [&](auto h) { stream.async_handshake(asio::ssl::stream_base::client, h); });
      if (ec) return fail("the TLS handshake", ec);
    }
    ec = run_op(ioc, [&](auto h) { http::async_write(stream, req, h); });
    if (ec) return fail("sending", ec);
    ec = run_op(ioc, [&](auto h) { http::async_read(stream, buffer, parser, h); });
    if (ec == http::error::body_limit) return io_error("chain RPC {}: the answer is larger than 16 MiB", url_);
    if (ec) return fail("reading the answer", ec);
    auto& res = parser.get();
    unsigned code = res.result_int();
    if (code < 200 || code >= 300) {
      std::string snippet = res.body().substr(0, 120);
      return io_error("chain RPC {}: HTTP {} {}", url_, code, snippet);
    }
    return std::move(res.body());
  }

  std::string url_;
  parsed_url u_;
};

}  // namespace

expected<std::unique_ptr<http_transport>> make_beast_transport(const std::string& url) {
  GG_ASSIGN_OR_RETURN(parsed_url u, parse_http_url(url));
  return std::unique_ptr<http_transport>(new beast_transport(url, std::move(u)));
}

}  // namespace gpugrid::chain
