#include "serve/model_repository.h"

#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <filesystem>

#include "engine/onnx_loader.h"

namespace gpugrid::serve {

namespace {

std::atomic<uint64_t> g_generation{0};

bool read_file(const std::string& path, int64_t limit, std::string* out) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    out->append(buf, n);
    if (static_cast<int64_t>(out->size()) > limit) break;
  }
  bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
}

std::shared_ptr<const model_entry> load_entry(const std::string& name, const std::string& path, int64_t size,
                                              int64_t mtime_ns, int64_t max_bytes) {
  auto e = std::make_shared<model_entry>();
  e->name = name;
  e->path = path;
  e->size = size;
  e->mtime_ns = mtime_ns;
  e->generation = ++g_generation;
  if (size > max_bytes) {
    e->error = fmt::format("model '{}' is {} bytes, over the limit of {}", name, size, max_bytes);
    return e;
  }
  auto bytes = std::make_shared<std::string>();
  if (!read_file(path, max_bytes, bytes.get())) {
    e->error = fmt::format("cannot read model file '{}'", path);
    return e;
  }
  auto g = load_model_from_bytes(*bytes, name);
  if (!g) {
    e->error = g.error().message();
    return e;
  }
  e->bytes = std::move(bytes);
  e->model = std::move(g).value();
  return e;
}

}  // namespace

std::string model_name_for(const std::string& file_name) {
  const std::string ext = ".onnx";
  if (file_name.size() <= ext.size() || file_name.compare(file_name.size() - ext.size(), ext.size(), ext) != 0) return "";
  std::string name = file_name.substr(0, file_name.size() - ext.size());
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return "";
  }
  if (name[0] == '.') return "";
  return name;
}

model_repository::model_repository(std::string dir, std::chrono::milliseconds interval, int64_t max_model_bytes)
    : dir_(std::move(dir)), interval_(interval), max_model_bytes_(max_model_bytes) {}

status model_repository::refresh(bool force) {
  std::lock_guard<std::mutex> scan(scan_mu_);
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!force && scanned_ && now - last_scan_ < interval_) return status::ok();
  }
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec);
  if (ec) return io_error("cannot read the model folder '{}': {}", dir_, ec.message());
  std::map<std::string, std::shared_ptr<const model_entry>> next;
  int64_t reloaded = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::string file = it->path().filename().string();
    std::string name = model_name_for(file);
    if (name.empty()) continue;
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    std::shared_ptr<const model_entry> old = find(name);
    if (old && old->size == st.st_size && old->mtime_ns == mtime_ns) {
      next[name] = old;
      continue;
    }
    next[name] = load_entry(name, it->path().string(), st.st_size, mtime_ns, max_model_bytes_);
    if (old) ++reloaded;
  }
  std::lock_guard<std::mutex> l(mu_);
  models_ = std::move(next);
  reloads_ += reloaded;
  last_scan_ = now;
  scanned_ = true;
  return status::ok();
}

std::shared_ptr<const model_entry> model_repository::find(const std::string& name) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const model_entry>> model_repository::list() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::shared_ptr<const model_entry>> out;
  for (const auto& [n, e] : models_) out.push_back(e);
  return out;
}

int64_t model_repository::reloads() const {
  std::lock_guard<std::mutex> l(mu_);
  return reloads_;
}

}  // namespace gpugrid::serve
