#include "ledger/ledger.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace gpugrid::ledger {

namespace {

constexpr char entry_magic[8] = {'G', 'G', 'L', 'E', 'D', 'G', '1', '\0'};
constexpr size_t entry_size = 8 + 8 + 32 + receipt_size;
constexpr size_t record_size = 4 + entry_size + 32;

std::string entry_bytes(uint64_t index, const digest32& prev, const receipt& r) {
  std::string out(entry_magic, 8);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
  out.append(reinterpret_cast<const char*>(prev.data()), 32);
  out += r.canonical_bytes();
  return out;
}

expected<entry> parse_entry(const std::string& raw, const digest32& stored_hash, size_t position, const std::string& path) {
  std::string what = fmt::format("{}: entry {}", path, position);
  if (raw.size() != entry_size || std::memcmp(raw.data(), entry_magic, 8) != 0)
    return invalid_input("{} is not a ledger entry", what);
  entry e;
  e.raw = raw;
  e.hash = stored_hash;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(raw.data()) + 8;
  for (int i = 0; i < 8; ++i) e.index |= static_cast<uint64_t>(p[i]) << (8 * i);
  std::memcpy(e.prev_hash.data(), p + 8, 32);
  auto r = receipt::parse(raw.substr(48), what);
  if (!r) return r.error();
  e.rec = std::move(r).value();
  return e;
}

expected<std::vector<entry>> scan(const std::string& path, bool* torn, uint64_t* good_bytes) {
  std::vector<entry> out;
  *torn = false;
  *good_bytes = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return out;
    return io_error("cannot read ledger '{}': {}", path, std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  size_t pos = 0;
  while (pos < data.size()) {
    if (data.size() - pos < 4) { *torn = true; break; }
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len |= static_cast<uint32_t>(static_cast<uint8_t>(data[pos + i])) << (8 * i);
    if (len != entry_size) {
      // Either a torn length field at the very end, or damage: only the former is recoverable.
      if (data.size() - pos < record_size) { *torn = true; break; }
      return invalid_input("{}: entry {} has a bad length ({} bytes); the file is damaged", path, out.size(), len);
    }
    if (data.size() - pos < record_size) { *torn = true; break; }
    digest32 stored{};
    std::memcpy(stored.data(), data.data() + pos + 4 + entry_size, 32);
    auto e = parse_entry(data.substr(pos + 4, entry_size), stored, out.size(), path);
    if (!e) return e.error();
    out.push_back(std::move(e).value());
    pos += record_size;
    *good_bytes = pos;
  }
  return out;
}

status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return io_error("cannot open '{}': {}", dir, std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return io_error("cannot sync '{}': {}", dir, std::strerror(errno));
  return status::ok();
}

}  // namespace

expected<std::vector<entry>> read_entries(const std::string& path, bool* torn_tail) {
  uint64_t good = 0;
  bool torn = false;
  auto r = scan(path, &torn, &good);
  if (torn_tail) *torn_tail = torn;
  return r;
}

expected<std::unique_ptr<ledger_file>> ledger_file::open(const std::string& dir, std::string* recovered) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create '{}': {}", dir, ec.message());
  std::unique_ptr<ledger_file> l(new ledger_file());
  l->path_ = (std::filesystem::path(dir) / "ledger.log").string();
  bool torn = false;
  uint64_t good = 0;
  auto entries = scan(l->path_, &torn, &good);
  if (!entries) return entries.error();
  if (torn) {
    if (::truncate(l->path_.c_str(), static_cast<off_t>(good)) != 0)
      return io_error("cannot cut the torn last entry of '{}': {}", l->path_, std::strerror(errno));
    int fd = ::open(l->path_.c_str(), O_WRONLY);
    if (fd >= 0) { ::fsync(fd); ::close(fd); }
    if (recovered) *recovered = fmt::format("cut a torn last entry from {} (kept {} entries)", l->path_, entries->size());
  }
  l->entries_ = std::move(entries).value();
  return l;
}

ledger_file::~ledger_file() {
  if (fd_ >= 0) ::close(fd_);
}

head ledger_file::current_head() const {
  std::lock_guard<std::mutex> lock(mu_);
  head h;
  h.count = entries_.size();
  if (!entries_.empty()) h.hash = entries_.back().hash;
  return h;
}

std::vector<entry> ledger_file::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_;
}

expected<head> ledger_file::append(const receipt& r) {
  GG_RETURN_IF_ERROR(verify_receipt(r).with_context("refusing to record a receipt"));
  return append_verified(r);
}

expected<head> ledger_file::append_verified(const receipt& r) {
  std::lock_guard<std::mutex> lock(mu_);
  entry e;
  e.index = entries_.size();
  if (!entries_.empty()) e.prev_hash = entries_.back().hash;
  e.rec = r;
  e.raw = entry_bytes(e.index, e.prev_hash, r);
  e.hash = blake2b_256(e.raw);
  std::string record;
  uint32_t len = static_cast<uint32_t>(e.raw.size());
  for (int i = 0; i < 4; ++i) record.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  record += e.raw;
  record.append(reinterpret_cast<const char*>(e.hash.data()), 32);
  bool fresh = false;
  if (fd_ < 0) {
    fresh = !std::filesystem::exists(path_);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) return io_error("cannot open ledger '{}': {}", path_, std::strerror(errno));
  }
  // On a failed write or sync the file is closed, so that the next append reopens it (and a
  // torn record is cut when the ledger is next opened).
  auto fail = [&](const char* what) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    return io_error("cannot {} ledger '{}': {}", what, path_, std::strerror(err));
  };
  size_t done = 0;
  while (done < record.size()) {
    ssize_t n = ::write(fd_, record.data() + done, record.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd_) != 0) return fail("sync");
  if (fresh) GG_RETURN_IF_ERROR(fsync_dir(std::filesystem::path(path_).parent_path().string()));
  entries_.push_back(std::move(e));
  head h;
  h.count = entries_.size();
  h.hash = entries_.back().hash;
  return h;
}

status verify_entries(const std::vector<entry>& entries) {
  digest32 prev{};
  for (size_t i = 0; i < entries.size(); ++i) {
    const entry& e = entries[i];
    if (blake2b_256(e.raw) != e.hash)
      return invalid_input("entry {}: its contents do not match its hash (altered bytes)", i);
    if (e.index != i)
      return invalid_input("entry {}: it says it is entry {} (an entry was deleted, inserted or moved)", i, e.index);
    if (e.prev_hash != prev)
      return invalid_input("entry {}: it does not link to entry {} (an entry was deleted, replaced or moved)", i,
                           i == 0 ? std::string("(none)") : std::to_string(i - 1));
    status st = verify_receipt(e.rec);
    if (!st.is_ok()) return invalid_input("entry {}: {}", i, st.message());
    prev = e.hash;
  }
  return status::ok();
}

std::vector<balance_row> balances(const std::vector<entry>& entries) {
  std::map<key32, balance_row> rows;
  for (const entry& e : entries) {
    const receipt& r = e.rec;
    balance_row& p = rows[r.provider_key];
    balance_row& c = rows[r.client_key];
    p.node = r.provider_key;
    c.node = r.client_key;
    if (r.kind == receipt_kind::payment) {
      p.earned_micros += r.price_micros;
      c.paid_micros += r.price_micros;
      ++p.jobs;
      if (&p != &c) ++c.jobs;
    } else {
      ++p.disputes;
    }
  }
  std::vector<balance_row> out;
  for (auto& [k, v] : rows) out.push_back(v);
  return out;
}

}  // namespace gpugrid::ledger
