#include "actors/model_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace gpugrid::grid {

namespace fs = std::filesystem;

namespace {

bool parse_hex32(const std::string& s, ledger::digest32* out) {
  if (s.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

}  // namespace

expected<std::unique_ptr<model_cache>> model_cache::open(const std::string& dir, int64_t max_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error("cannot create model cache '{}': {}", dir, ec.message());
  std::unique_ptr<model_cache> c(new model_cache());
  c->dir_ = dir;
  c->max_bytes_ = max_bytes;
  std::vector<std::pair<fs::file_time_type, item>> found;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    std::string name = e.path().filename().string();
    if (e.path().extension() != ".onnx") {
      if (name.rfind(".tmp-", 0) == 0) fs::remove(e.path(), ec);  // a write cut short by a crash
      continue;
    }
    ledger::digest32 h{};
    if (!parse_hex32(e.path().stem().string(), &h)) continue;
    found.push_back({e.last_write_time(ec), item{h, static_cast<int64_t>(e.file_size(ec)), 0}});
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (auto& [t, it] : found) {
    it.last_used = ++c->clock_;
    c->items_.push_back(it);
  }
  c->evict_for(0);
  return c;
}

std::string model_cache::file_for(const ledger::digest32& hash) const {
  return (fs::path(dir_) / (ledger::to_hex(hash) + ".onnx")).string();
}

bool model_cache::contains(const ledger::digest32& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& it : items_) if (it.hash == hash) return true;
  return false;
}

std::optional<std::string> model_cache::path_of(const ledger::digest32& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& it : items_) {
    if (it.hash != hash) continue;
    it.last_used = ++clock_;
    std::error_code ec;
    fs::last_write_time(file_for(hash), fs::file_time_type::clock::now(), ec);
    return file_for(hash);
  }
  return std::nullopt;
}

void model_cache::evict_for(int64_t incoming) {
  int64_t total = incoming;
  for (auto& it : items_) total += it.bytes;
  std::sort(items_.begin(), items_.end(), [](const item& a, const item& b) { return a.last_used < b.last_used; });
  while (total > max_bytes_ && !items_.empty()) {
    std::error_code ec;
    fs::remove(file_for(items_.front().hash), ec);
    total -= items_.front().bytes;
    items_.erase(items_.begin());
  }
}

status model_cache::put(const ledger::digest32& hash, const std::string& bytes) {
  if (ledger::blake2b_256(bytes) != hash)
    return invalid_input("model bytes do not match their hash {}", ledger::to_hex(hash).substr(0, 16));
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int64_t>(bytes.size()) > max_bytes_)
    return invalid_input("a {}-byte model is larger than the whole model cache ({} bytes)", bytes.size(), max_bytes_);
  for (auto& it : items_) {
    if (it.hash == hash) { it.last_used = ++clock_; return status::ok(); }
  }
  evict_for(static_cast<int64_t>(bytes.size()));
  std::string tmp = (fs::path(dir_) / (".tmp-" + ledger::to_hex(hash).substr(0, 16) + "-" + std::to_string(::getpid()))).string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return io_error("cannot write to model cache '{}': {}", dir_, std::strerror(errno));
    }
  }
  std::error_code ec;
  fs::rename(tmp, file_for(hash), ec);
  if (ec) return io_error("cannot store model in '{}': {}", dir_, ec.message());
  items_.push_back(item{hash, static_cast<int64_t>(bytes.size()), ++clock_});
  return status::ok();
}

int64_t model_cache::size_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t t = 0;
  for (auto& it : items_) t += it.bytes;
  return t;
}

size_t model_cache::count() {
  std::lock_guard<std::mutex> lock(mu_);
  return items_.size();
}


std::vector<ledger::digest32> model_cache::recent(size_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<item> by_use = items_;
  std::sort(by_use.begin(), by_use.end(), [](const item& a, const item& b) { return a.last_used < b.last_used; });
  if (by_use.size() > n) by_use.erase(by_use.begin(), by_use.end() - static_cast<std::ptrdiff_t>(n));
  std::vector<ledger::digest32> out;
  for (const auto& it : by_use) out.push_back(it.hash);
  return out;
}

}  // namespace gpugrid::grid
