#include "serve/access.h"

#include <algorithm>

namespace gpugrid::serve {

status check_key(const std::string& key, const std::string& what) {
  if (key.size() < 16) return invalid_input("{}: an API key must be at least 16 characters", what);
  if (key.size() > 4096) return invalid_input("{}: an API key must be at most 4096 characters", what);
  for (unsigned char c : key)
    if (c <= 0x20 || c >= 0x7f) return invalid_input("{}: an API key must be printable ASCII without spaces", what);
  return status::ok();
}

expected<std::vector<std::string>> parse_key_file(const std::string& text, const std::string& what) {
  std::vector<std::string> keys;
  size_t start = 0;
  int line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    line = line.substr(first);
    GG_RETURN_IF_ERROR(check_key(line, fmt::format("{}:{}", what, line_no)));
    keys.push_back(line);
  }
  return keys;
}

namespace {
bool equal_constant_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}
}  // namespace

int key_ring::match(const std::string& authorization) const {
  const std::string prefix = "Bearer ";
  if (authorization.size() <= prefix.size()) return -1;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return -1;
  std::string key = authorization.substr(prefix.size());
  int found = -1;
  for (size_t i = 0; i < keys_.size(); ++i)
    if (equal_constant_time(key, keys_[i]) && found < 0) found = static_cast<int>(i);
  return found;
}

bool rate_limiter::take(int client, std::chrono::steady_clock::time_point now, double* retry_after_s) {
  if (rate_ <= 0) return true;
  std::lock_guard<std::mutex> l(mu_);
  bucket& b = buckets_[client];
  if (b.fresh) {
    b.tokens = burst_;
    b.at = now;
    b.fresh = false;
  }
  double elapsed = std::chrono::duration<double>(now - b.at).count();
  b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
  b.at = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return true;
  }
  if (retry_after_s) *retry_after_s = (1 - b.tokens) / rate_;
  return false;
}

bool is_loopback_host(const std::string& host) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  return h == "localhost" || h == "::1" || h.rfind("127.", 0) == 0;
}

}  // namespace gpugrid::serve
