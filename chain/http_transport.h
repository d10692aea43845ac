// One HTTP(S) POST at a time to a JSON-RPC endpoint, with Boost.Beast.
//
// The URL is http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]; HTTPS verifies the
// server's certificate against the system's trust store and its host name (SNI set). Every
// post opens a new connection (simple and robust against proxies and half-closed idle
// connections; JSON-RPC calls here are few). A post fails with kind io and a one-line message
// when the endpoint cannot be reached, does not answer within the timeout, answers with a
// non-2xx status, or sends a body over 16 MiB.
//
// http_transport is an interface so that tests can swap in a fake. beast_transport is not
// thread-safe: one post at a time per object.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "base/status.h"

namespace gpugrid::chain {

class http_transport {
 public:
  virtual ~http_transport() = default;
  // Sends `body` (application/json) and returns the response body.
  virtual expected<std::string> post(const std::string& body, std::chrono::milliseconds timeout) = 0;
  // The endpoint as given, for messages.
  virtual const std::string& url() const = 0;
};

struct parsed_url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  // path and query, at least "/"
};

// Refuses anything but http:// and https:// with a host.
expected<parsed_url> parse_http_url(const std::string& url);

// Fails (invalid_input) on a malformed URL; connects only when post() is called.
expected<std::unique_ptr<http_transport>> make_beast_transport(const std::string& url);

}  // namespace gpugrid::chain
