// The HTTP/1.1 server of `serve` (Boost.Beast): accepts connections, reads requests with
// limits, hands each whole request to v2_service::handle() on a worker pool (inference blocks),
// and writes the response. Keep-alive; optional TLS (https) with a PEM certificate and key.
//
// Limits against bad or slow clients, each answered in the protocol's error format when the
// connection still allows it, then the connection is closed and counted in the service's
// transport counters:
//  - header_timeout: the whole request header must arrive within it (slowloris), also the
//    longest a kept-alive connection may sit idle before its next request -> 408;
//  - body_timeout: the body must arrive within it -> 408;
//  - max_body_bytes: a larger declared or sent body -> 413 (the body is not read);
//  - max_header_bytes -> 431; unparsable HTTP -> 400;
//  - more than max_queued requests waiting for a worker -> 503;
//  - a client that disconnects before its response is written is counted, nothing else.
//
// Threads: io_threads run the sockets, `workers` run handle(), `long_workers` run deferred
// responses (http_response::deferred: text generation, streamed or not) so that long requests
// do not hold up short ones. A streamed body goes out with chunked transfer encoding, one
// chunk per response_stream::write. stop() (and the destructor) closes the listener and every
// connection and joins all threads; requests running in a worker finish first, deferred ones
// see response_stream::gone() and should stop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "serve/v2_service.h"

namespace gpugrid::serve {

struct http_server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;                      // 0: any free port
  size_t max_body_bytes = size_t{64} << 20;
  size_t max_header_bytes = 16 << 10;
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};
  int io_threads = 1;
  int workers = 4;
  int long_workers = 32;                     // deferred responses (generations) at once
  size_t max_queued = 256;
  size_t max_connections = 1024;
  std::string tls_cert, tls_key;             // both set: https
};

class http_server {
 public:
  // Binds and starts serving. Fails when the address cannot be bound or TLS files cannot be
  // loaded (the message names the flag and file). `service` must outlive the server.
  static expected<std::unique_ptr<http_server>> start(const http_server_options& options, v2_service* service);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  uint16_t port() const;
  std::string url() const;   // http://HOST:PORT or https://...
  void stop();

  struct impl;

 private:
  explicit http_server(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

}  // namespace gpugrid::serve
