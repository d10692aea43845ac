// Access control for `serve`: bearer-token API keys and a token-bucket rate limit per key.
//
// Keys come from the config file ([serve] api_keys) and/or a key file (one key per line;
// blank lines and lines starting with '#' are ignored). A key is at least 16 characters of
// printable ASCII without spaces. Keys are compared in constant time.
//
// Thread-safety: key_ring is immutable after construction; rate_limiter locks internally.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"

namespace gpugrid::serve {

// Parses a key file's text; `what` names it in errors ("keys.txt:3: ...").
expected<std::vector<std::string>> parse_key_file(const std::string& text, const std::string& what);
status check_key(const std::string& key, const std::string& what);

class key_ring {
 public:
  key_ring() = default;
  explicit key_ring(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }
  // The index of the key an Authorization header value ("Bearer KEY") carries, or -1.
  int match(const std::string& authorization) const;

 private:
  std::vector<std::string> keys_;
};

// A token bucket per client (key index, or -1 for unauthenticated loopback use):
// `rate` requests per second on average, bursts of up to `burst`. rate <= 0: unlimited.
class rate_limiter {
 public:
  rate_limiter(double rate, double burst) : rate_(rate), burst_(burst > 0 ? burst : rate) {}
  // Takes one token; false (and the seconds until one is back) when the bucket is empty.
  bool take(int client, std::chrono::steady_clock::time_point now, double* retry_after_s);

 private:
  struct bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at{};
    bool fresh = true;
  };
  double rate_, burst_;
  std::mutex mu_;
  std::map<int, bucket> buckets_;
};

// True for a listen host that only this machine can reach (127.0.0.0/8, ::1, localhost).
bool is_loopback_host(const std::string& host);

}  // namespace gpugrid::serve
