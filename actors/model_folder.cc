#include "actors/model_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <fmt/format.h>

#include "net/hash.h"

namespace gpugrid::grid {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxFiles = 256;

bool plain_name(const std::string& n) {
  if (n.empty() || n.size() > 255 || n[0] == '.') return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

expected<ledger::digest32> hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return status(error_kind::invalid_input, path + ": cannot be read");
  net::blake2b_hasher h;
  std::vector<char> buf(size_t{1} << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return status(error_kind::invalid_input, path + ": read error");
  return h.finish();
}

}  // namespace

ledger::digest32 manifest_hash(std::vector<net::gen_file> files) {
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  net::blake2b_hasher h;
  h.update(std::string_view("GGMANI1\0", 8));
  for (const auto& f : files) {
    h.update(f.name);
    h.update(std::string_view("\0", 1));
    h.update(f.hash.data(), f.hash.size());
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(f.size >> (8 * i));
    h.update(le, 8);
  }
  return h.finish();
}

expected<folder_manifest> read_folder_manifest(const std::string& dir, int64_t max_file_bytes) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return status(error_kind::invalid_input, dir + ": not a folder");
  folder_manifest m;
  m.dir = dir;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (!it->is_regular_file(ec)) continue;
    if (!plain_name(name))
      return status(error_kind::invalid_input,
                    fmt::format("{}: the grid carries only file names of letters, digits, '.', '_' and '-'", it->path().string()));
    auto size = static_cast<int64_t>(it->file_size(ec));
    if (size > max_file_bytes)
      return status(error_kind::invalid_input, fmt::format("{}: {} bytes is over the {} bytes a provider takes per file",
                                                           it->path().string(), size, max_file_bytes));
    auto h = hash_file(it->path().string());
    if (!h) return h.error();
    m.files.push_back({name, *h, static_cast<uint64_t>(size)});
    m.total_bytes += size;
    if (m.files.size() > kMaxFiles) return status(error_kind::invalid_input, fmt::format("{}: more than {} files", dir, kMaxFiles));
  }
  if (ec) return status(error_kind::invalid_input, fmt::format("{}: {}", dir, ec.message()));
  if (m.files.empty()) return status(error_kind::invalid_input, dir + ": the folder has no files");
  std::sort(m.files.begin(), m.files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  m.hash = manifest_hash(m.files);
  return m;
}

expected<std::unique_ptr<folder_store>> folder_store::open(const std::string& dir, int64_t max_bytes) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "folders", ec);
  if (ec) return status(error_kind::io, fmt::format("{}: cannot create: {}", dir, ec.message()));
  auto cache = model_cache::open((fs::path(dir) / "files").string(), max_bytes);
  if (!cache) return cache.error();
  std::unique_ptr<folder_store> s(new folder_store());
  s->dir_ = dir;
  s->files_ = std::move(cache).value();
  return s;
}

std::unique_ptr<folder_store> folder_store::local_only() { return std::unique_ptr<folder_store>(new folder_store()); }

void folder_store::add_local(const ledger::digest32& manifest, const std::string& path) {
  std::lock_guard<std::mutex> lk(mu_);
  local_[manifest] = path;
}

bool folder_store::has_file(const ledger::digest32& hash) { return files_ && files_->contains(hash); }

bool folder_store::has_all(const ledger::digest32& manifest, const std::vector<net::gen_file>& files) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (local_.count(manifest)) return true;
  }
  if (!files_) return false;
  for (const auto& f : files)
    if (!files_->contains(f.hash)) return false;
  return true;
}

status folder_store::put_file(const ledger::digest32& hash, const std::string& bytes) {
  if (!files_) return status(error_kind::invalid_input, "this provider takes no model files");
  return files_->put(hash, bytes);
}

expected<std::string> folder_store::folder(const ledger::digest32& manifest, const std::vector<net::gen_file>& files) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = local_.find(manifest);
    if (it != local_.end()) return it->second;
  }
  if (manifest_hash(files) != manifest) return status(error_kind::invalid_input, "the file list does not match its manifest hash");
  if (!files_) return status(error_kind::no_provider, "the model folder is not here");
  std::lock_guard<std::mutex> lk(mu_);
  fs::path out = fs::path(dir_) / "folders" / net::to_hex(manifest);
  std::error_code ec;
  if (fs::is_directory(out, ec)) return out.string();  // assembled before (renamed in whole)
  fs::path tmp = out;
  tmp += ".tmp";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return status(error_kind::io, fmt::format("{}: {}", tmp.string(), ec.message()));
  for (const auto& f : files) {
    auto src = files_->path_of(f.hash);
    if (!src) return status(error_kind::no_provider, fmt::format("the model file {} is not here", f.name));
    fs::create_hard_link(*src, tmp / f.name, ec);
    if (ec) {
      ec.clear();
      fs::copy_file(*src, tmp / f.name, fs::copy_options::overwrite_existing, ec);
      if (ec) return status(error_kind::io, fmt::format("{}: {}", (tmp / f.name).string(), ec.message()));
    }
  }
  fs::remove_all(out, ec);
  fs::rename(tmp, out, ec);
  if (ec) return status(error_kind::io, fmt::format("{}: {}", out.string(), ec.message()));
  return out.string();
}

}  // namespace gpugrid::grid
