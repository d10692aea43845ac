// The Open Inference Protocol v2 (KServe / Triton HTTP) in front of a model repository and an
// inference backend, as a function from one HTTP request to its response. The HTTP server
// (serve/http_server.h) feeds it; tests call handle() directly.
//
// Routes: GET /v2/health/live, /v2/health/ready, /v2 (server metadata), /v2/models/NAME
// (metadata), /v2/models/NAME/ready, POST /v2/models/NAME/infer (JSON tensors and the binary
// tensor data extension), POST /v2/repository/index, GET /healthz, GET /metrics
// (Prometheus text). "/versions/V" after NAME is accepted for version "1" (each file is one
// version). Errors are {"error": "..."} with 400 (bad request), 401 (missing or wrong API
// key), 404 (unknown model or route), 405, 429 (rate limit; Retry-After), 500, 502
// (providers disagree), 503 (model not loadable, no provider).
//
// Access: when keys are required every route but the health checks needs
// "Authorization: Bearer KEY"; each key (and anonymous loopback use) has its own token bucket.
//
// Thread-safety: handle() may be called from many threads at once; the backend must allow that.
#pragma once

#include <atomic>
#include <functional>
#include <string_view>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "engine/tensor.h"
#include "serve/access.h"
#include "serve/model_repository.h"

namespace gpugrid::serve {

struct http_request {
  std::string method;                              // "GET", "POST", ...
  std::string target;                              // path and query
  std::map<std::string, std::string> headers;      // names in lower case
  std::string body;
  // Set by the HTTP layer when the client hung up while the request waited or ran: a request
  // not yet started on the backend is then dropped (nothing runs, nothing is paid), and one
  // running is stopped through the backend (see infer_backend).
  std::shared_ptr<std::atomic<bool>> cancelled;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class response_stream;

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Long work (text generation): when set, the HTTP server runs it on its pool for long requests
  // (so that it does not hold a worker that short requests wait for) and sends what it returns
  // in place of this response; or, when it called stream.begin(), finishes the streamed body it
  // wrote and ignores what it returns. Tests call it with a stream of their own.
  std::function<http_response(response_stream& stream)> deferred;
};

// A response body written while it is made (server-sent events), with chunked transfer
// encoding. begin() and write() are called by one thread at a time (the one that runs the
// deferred response, or one it waits for); gone() from any thread.
class response_stream {
 public:
  virtual ~response_stream() = default;
  // Sends the status line and headers of `head` (its body is ignored). false: the client is gone.
  virtual bool begin(const http_response& head) = 0;
  // Sends `data` as one chunk (nothing for empty data) and waits until it is written.
  // false: the client is gone or the write timed out; the producer should stop.
  virtual bool write(std::string_view data) = 0;
  // True once the client hung up, a write failed, or the server is stopping.
  virtual bool gone() const = 0;
};

http_response error_response(int status, const std::string& message);

struct infer_outcome {
  std::vector<tensor> outputs;            // in the model's output order
  double cost = 0;                        // credits paid
  std::vector<std::string> providers;     // node ids, "local" or "embedded"
};

// Runs one inference. Called from many threads at once. Failures: invalid_input -> 400,
// no_provider -> 503, verification -> 502, anything else -> 500.
// `cancelled` (may be null) becomes true when the request's client hangs up: a backend that
// can stop should then stop (on the grid: cancel the job at its provider, pay nothing for work
// not delivered) and fail; the service answers such a request 499 whatever the backend returns.
class infer_backend {
 public:
  virtual ~infer_backend() = default;
  virtual expected<infer_outcome> infer(const model_entry& model, std::vector<tensor> inputs,
                                        const std::atomic<bool>* cancelled) = 0;
  virtual std::string describe() const = 0;   // "local engine", "embedded grid", "grid (3 providers)"
};

// The routes under /v1 (the OpenAI-compatible API, serve/openai_service.h). Gets each /v1
// request after the access checks, and writes the error bodies of /v1 routes, also those that
// the access checks and the HTTP layer answer (401, 413, 429, 503).
class route_handler {
 public:
  virtual ~route_handler() = default;
  virtual http_response handle(const http_request& request, const std::vector<std::string>& path) = 0;
  virtual http_response error(int status, const std::string& message) const = 0;
  // Prometheus lines appended to /metrics.
  virtual std::string metrics_text() const { return {}; }
};

struct service_options {
  key_ring keys;
  bool require_keys = false;
  double rate_limit = 0;        // requests per second per key (0: none)
  double rate_burst = 0;        // bucket size (0: same as the rate)
  std::string version;          // of the server, for /v2
  route_handler* v1 = nullptr;  // /v1/...: 404 when null; must outlive the service
};

// Counters the HTTP layer adds to (it sees what never reaches handle()).
struct transport_counters {
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> too_large{0};          // bodies over the limit (413)
  std::atomic<int64_t> timeouts{0};           // header/body read timeouts (slow clients)
  std::atomic<int64_t> bad_requests{0};       // unparsable HTTP
  std::atomic<int64_t> disconnects{0};        // clients gone before their response was written
  std::atomic<int64_t> overloaded{0};         // refused: too many requests queued
};

class v2_service {
 public:
  // `repo` and `backend` must outlive the service.
  v2_service(model_repository* repo, infer_backend* backend, service_options options);

  http_response handle(const http_request& request);
  // The error response for a request to `target` (the /v1 handler's format under /v1).
  http_response error_for(const std::string& target, int status, const std::string& message) const;
  std::string metrics_text() const;
  transport_counters& transport() { return transport_; }

 private:
  http_response route(const http_request& r, const std::string& path);
  http_response infer(const http_request& r, const std::shared_ptr<const model_entry>& m);
  http_response model_metadata(const model_entry& m) const;
  http_response repository_index();

  model_repository* repo_;
  infer_backend* backend_;
  service_options options_;
  rate_limiter limiter_;
  transport_counters transport_;

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> responses_;   // (route, status) -> count
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> inferences_ok_{0}, inferences_failed_{0};
  std::atomic<int64_t> auth_failures_{0}, rate_limited_{0}, cancelled_{0};
  std::vector<double> latency_bounds_ms_;
  std::vector<int64_t> latency_buckets_;     // guarded by mu_
  double latency_sum_ms_ = 0;                // guarded by mu_
  double cost_total_ = 0;                    // guarded by mu_
};

}  // namespace gpugrid::serve
