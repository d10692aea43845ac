#include "ledger/ledger.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace gpugrid::ledger {

namespace {

constexpr char entry_magic[8] = {'G', 'G', 'L', 'E', 'D', 'G', '1', '\0'};
constexpr char entry_magic2[8] = {'G', 'G', 'L', 'E', 'D', 'G', '2', '\0'};
constexpr size_t entry_size = 8 + 8 + 32 + receipt_size;
constexpr size_t entry_size2 = entry_size + claim_size;
constexpr size_t record_size = 4 + entry_size + 32;
constexpr size_t record_size2 = 4 + entry_size2 + 32;
constexpr size_t records_per_read = 256;
// An append writes the records of up to kMaxGroup callers at once, then fsyncs once: the most
// bytes of the file that one crash can leave damaged.
constexpr uint64_t kGroupWindow = ledger_file::kMaxGroup * record_size2;

std::string entry_bytes(uint64_t index, const digest32& prev, const receipt& r, const voucher_claim* claim) {
  std::string out(claim ? entry_magic2 : entry_magic, 8);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
  out.append(reinterpret_cast<const char*>(prev.data()), 32);
  out += r.canonical_bytes();
  if (claim) out += claim->pack();
  return out;
}

expected<entry> parse_entry(const std::string& raw, const digest32& stored_hash, uint64_t position, const std::string& path) {
  std::string what = fmt::format("{}: entry {}", path, position);
  const bool v1 = raw.size() == entry_size && std::memcmp(raw.data(), entry_magic, 8) == 0;
  const bool v2 = raw.size() == entry_size2 && std::memcmp(raw.data(), entry_magic2, 8) == 0;
  if (!v1 && !v2) return invalid_input("{} is not a ledger entry", what);
  entry e;
  e.raw = raw;
  e.hash = stored_hash;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(raw.data()) + 8;
  for (int i = 0; i < 8; ++i) e.index |= static_cast<uint64_t>(p[i]) << (8 * i);
  std::memcpy(e.prev_hash.data(), p + 8, 32);
  auto r = receipt::parse(raw.substr(48, receipt_size), what);
  if (!r) return r.error();
  e.rec = std::move(r).value();
  if (v2) {
    auto c = voucher_claim::unpack(raw.substr(48 + receipt_size), what + " voucher");
    if (!c) return c.error();
    e.claim = *c;
  }
  return e;
}

// Reads exactly n bytes at offset (fewer only when the file ends first).
expected<size_t> read_at(int fd, char* out, size_t n, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return io_error("cannot read ledger '{}': {}", path, std::strerror(errno));
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

struct scan_state {
  uint64_t good_end = 0;  // end of the last whole record
  uint64_t next_index = 0;
  bool torn = false;
};

// Streams the records of fd from st->good_end on, calling fn for each whole entry. Records
// have one of two lengths (entries without and with a voucher). The file's tail is torn from
// the first record that is short, or that starts within its last kGroupWindow bytes and has a
// bad length or does not parse (one write of a group of records and its single fsync can leave
// any of the group's pages unwritten after a crash, and none of that group was reported
// recorded), or that is the last and does not match its hash; a bad length earlier is damage
// (an error), and a hash mismatch earlier is left to verify. With group_tail (the ledger's own
// open and catch-up, which must go on appending), a record within the window that does not
// match its hash is torn as well, with everything after it.
status scan_fd(int fd, const std::string& path, scan_state* st, const std::function<status(const entry&)>& fn,
               bool group_tail = false) {
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) return io_error("cannot read ledger '{}': {}", path, std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(sb.st_size);
  st->torn = false;
  std::string buf;
  uint64_t pos = st->good_end;
  while (pos < size) {
    uint64_t remaining = size - pos;
    if (remaining < record_size) { st->torn = true; break; }
    size_t n = static_cast<size_t>(std::min<uint64_t>(remaining, records_per_read * record_size2));
    buf.resize(n);
    auto got = read_at(fd, buf.data(), buf.size(), pos, path);
    if (!got) return got.error();
    if (*got < buf.size()) { st->torn = true; break; }  // the file shrank while it was read
    size_t off = 0;
    while (off + 4 <= n) {
      const char* p = buf.data() + off;
      uint32_t len = 0;
      for (int i = 0; i < 4; ++i) len |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
      const uint64_t at = pos + off;
      const bool in_window = size - at <= kGroupWindow, in_group = group_tail && in_window;
      if (len != entry_size && len != entry_size2) {
        // A length written by a crashed append can only be in the last group's bytes.
        if (in_window) { st->torn = true; return status::ok(); }
        return invalid_input("{}: entry {} has a bad length ({} bytes); the file is damaged", path, st->next_index, len);
      }
      const size_t rec = 4 + len + 32;
      if (at + rec > size) { st->torn = true; return status::ok(); }
      if (off + rec > n) break;  // read on from here
      const bool last = at + rec == size;
      digest32 stored{};
      std::memcpy(stored.data(), p + 4 + len, 32);
      std::string raw(p + 4, len);
      if ((last || in_group) && blake2b_256(raw) != stored) { st->torn = true; return status::ok(); }
      auto e = parse_entry(raw, stored, st->next_index, path);
      if (!e && in_window) { st->torn = true; return status::ok(); }
      if (!e) return e.error();
      GG_RETURN_IF_ERROR(fn(*e));
      off += rec;
      st->good_end = at + rec;
      ++st->next_index;
    }
    if (off == 0) return internal_error("{}: cannot advance while reading entry {}", path, st->next_index);
    pos += off;
  }
  return status::ok();
}

status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open '{}': {}", dir, std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return io_error("cannot sync '{}': {}", dir, std::strerror(errno));
  return status::ok();
}

// Cuts the file back to good_end, keeping the cut bytes (at most one record) in <path>.cut.
status cut_tail(int fd, const std::string& path, uint64_t good_end, uint64_t entries, std::string* note) {
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) return io_error("cannot read ledger '{}': {}", path, std::strerror(errno));
  uint64_t size = static_cast<uint64_t>(sb.st_size);
  if (size <= good_end) return status::ok();
  std::string tail(static_cast<size_t>(std::min<uint64_t>(size - good_end, kGroupWindow)), '\0');
  auto got = read_at(fd, tail.data(), tail.size(), good_end, path);
  std::string kept;
  if (got) {
    tail.resize(*got);
    int cf = ::open((path + ".cut").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (cf >= 0) {
      if (::write(cf, tail.data(), tail.size()) == static_cast<ssize_t>(tail.size())) kept = fmt::format(", kept in {}.cut", path);
      ::close(cf);
    }
  }
  if (::ftruncate(fd, static_cast<off_t>(good_end)) != 0 || ::fsync(fd) != 0)
    return io_error("cannot cut the torn last entry of '{}': {}", path, std::strerror(errno));
  if (note)
    *note = fmt::format("cut a torn last write ({} bytes{}) from {}; kept {} entries", size - good_end, kept, path, entries);
  return status::ok();
}

// An exclusive flock held for the object's life.
class file_lock {
 public:
  explicit file_lock(int fd) : fd_(fd) {
    int rc;
    while ((rc = ::flock(fd_, LOCK_EX)) != 0 && errno == EINTR) {}
    ok_ = rc == 0;
    if (!ok_) err_ = errno;
  }
  ~file_lock() { if (ok_) ::flock(fd_, LOCK_UN); }
  bool ok() const { return ok_; }
  int error() const { return err_; }

 private:
  int fd_;
  bool ok_ = false;
  int err_ = 0;
};

std::string pair_bytes(const std::array<uint8_t, 16>& job_id, const key32& provider) {
  std::string k(reinterpret_cast<const char*>(job_id.data()), 16);
  k.append(reinterpret_cast<const char*>(provider.data()), 32);
  return k;
}

}  // namespace

size_t record_bytes() { return record_size; }
size_t record_bytes_with_claim() { return record_size2; }

bool key_index::contains(uint64_t key) const {
  return recent_.count(key) != 0 || std::binary_search(sorted_.begin(), sorted_.end(), key);
}

void key_index::insert(uint64_t key) {
  recent_.insert(key);
  if (recent_.size() < 4096) return;
  size_t mid = sorted_.size();
  sorted_.insert(sorted_.end(), recent_.begin(), recent_.end());
  std::sort(sorted_.begin() + static_cast<std::ptrdiff_t>(mid), sorted_.end());
  std::inplace_merge(sorted_.begin(), sorted_.begin() + static_cast<std::ptrdiff_t>(mid), sorted_.end());
  recent_.clear();
}

status for_each_entry(const std::string& path, const std::function<status(const entry&)>& fn, bool* torn_tail) {
  return for_each_entry_from(path, 0, fn, torn_tail, nullptr);
}

status for_each_entry_from(const std::string& path, uint64_t offset, const std::function<status(const entry&)>& fn,
                           bool* torn_tail, uint64_t* end) {
  if (torn_tail) *torn_tail = false;
  if (end) *end = offset;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return status::ok();
    return io_error("cannot read ledger '{}': {}", path, std::strerror(errno));
  }
  scan_state st;
  st.good_end = offset;
  status s = scan_fd(fd, path, &st, fn);
  ::close(fd);
  if (torn_tail) *torn_tail = st.torn;
  if (end) *end = st.good_end;
  return s;
}

expected<std::vector<entry>> read_entries(const std::string& path, bool* torn_tail) {
  std::vector<entry> out;
  GG_RETURN_IF_ERROR(for_each_entry(path, [&](const entry& e) { out.push_back(e); return status::ok(); }, torn_tail));
  return out;
}

uint64_t ledger_file::key_of(const std::array<uint8_t, 16>& job_id, const key32& provider) const {
  std::string k = pair_bytes(job_id, provider);
  uint64_t out = 0;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&out), reinterpret_cast<const unsigned char*>(k.data()), k.size(),
                   hash_key_.data());
  return out;
}

expected<std::unique_ptr<ledger_file>> ledger_file::open(const std::string& dir, std::string* recovered) {
  if (sodium_init() < 0) return internal_error("libsodium cannot start");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create '{}': {}", dir, ec.message());
  std::unique_ptr<ledger_file> l(new ledger_file());
  randombytes_buf(l->hash_key_.data(), l->hash_key_.size());
  l->path_ = (std::filesystem::path(dir) / "ledger.log").string();
  bool fresh = !std::filesystem::exists(l->path_, ec);
  l->fd_ = ::open(l->path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (l->fd_ < 0) return io_error("cannot open ledger '{}': {}", l->path_, std::strerror(errno));
  if (fresh) GG_RETURN_IF_ERROR(fsync_dir(dir));
  std::lock_guard<std::mutex> lock(l->mu_);
  file_lock fl(l->fd_);
  if (!fl.ok()) return io_error("cannot lock ledger '{}': {}", l->path_, std::strerror(fl.error()));
  GG_RETURN_IF_ERROR(l->catch_up_locked(recovered));
  return l;
}

ledger_file::~ledger_file() {
  if (fd_ >= 0) ::close(fd_);
}

status ledger_file::catch_up_locked(std::string* note) {
  struct stat sb {};
  if (::fstat(fd_, &sb) != 0) return io_error("cannot read ledger '{}': {}", path_, std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(sb.st_size);
  if (size == end_) return status::ok();
  if (size < end_)
    return io_error("ledger '{}' shrank from {} to {} bytes while this process used it; it was cut by another program",
                    path_, end_, size);
  scan_state st;
  st.good_end = end_;
  st.next_index = head_.count;
  GG_RETURN_IF_ERROR(scan_fd(fd_, path_, &st, [&](const entry& e) {
    head_.hash = e.hash;
    ++head_.count;
    ids_.insert(key_of(e.rec.job_id, e.rec.provider_key));
    return status::ok();
  }, /*group_tail=*/true));
  end_ = st.good_end;
  // Under the lock nobody else is writing: a torn tail is a write that failed or crashed.
  if (st.torn) GG_RETURN_IF_ERROR(cut_tail(fd_, path_, end_, head_.count, note));
  return status::ok();
}

head ledger_file::current_head() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_;
}

bool ledger_file::contains(const std::array<uint8_t, 16>& job_id, const key32& provider) const {
  std::lock_guard<std::mutex> lock(mu_);
  return ids_.contains(key_of(job_id, provider));
}

expected<head> ledger_file::append(const receipt& r) {
  GG_RETURN_IF_ERROR(verify_receipt(r).with_context("refusing to record a receipt"));
  return append_verified(r);
}

expected<head> ledger_file::append_verified(const receipt& r, const voucher_claim* claim) {
  return commits_.submit(append_request{&r, claim}, [this](const std::vector<append_request>& group) {
    return write_group(group);
  });
}

std::vector<expected<head>> ledger_file::append_verified_all(const std::vector<append_request>& list) {
  if (list.empty()) return {};
  return commits_.submit_all(list, [this](const std::vector<append_request>& group) { return write_group(group); });
}

std::vector<expected<head>> ledger_file::write_group(const std::vector<append_request>& group) {
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<expected<head>> out(group.size(), expected<head>(internal_error("the entry was not written")));
  file_lock fl(fd_);
  if (!fl.ok()) {
    std::fill(out.begin(), out.end(), expected<head>(io_error("cannot lock ledger '{}': {}", path_, std::strerror(fl.error()))));
    return out;
  }
  std::string note;
  status caught = catch_up_locked(&note);
  if (!caught.is_ok()) {
    std::fill(out.begin(), out.end(), expected<head>(caught));
    return out;
  }
  // Chain the group's entries after the head; a (job, provider) pair in the ledger or earlier
  // in the group is refused on its own.
  head h = head_;
  std::string records;
  std::vector<uint64_t> keys;
  std::vector<std::pair<size_t, head>> members;  // which requests were written, with their heads
  for (size_t i = 0; i < group.size(); ++i) {
    const receipt& r = *group[i].r;
    const uint64_t key = key_of(r.job_id, r.provider_key);
    // A 64-bit keyed hash: a false match has odds of about (entries / 2^64) per append.
    if (ids_.contains(key) || std::find(keys.begin(), keys.end(), key) != keys.end()) {
      out[i] = invalid_input("job {} from provider {} is in the ledger already", to_hex(r.job_id),
                             to_hex(r.provider_key).substr(0, 16));
      continue;
    }
    entry e;
    e.index = h.count;
    e.prev_hash = h.hash;
    e.raw = entry_bytes(e.index, e.prev_hash, r, group[i].claim);
    e.hash = blake2b_256(e.raw);
    uint32_t len = static_cast<uint32_t>(e.raw.size());
    for (int b = 0; b < 4; ++b) records.push_back(static_cast<char>((len >> (8 * b)) & 0xff));
    records += e.raw;
    records.append(reinterpret_cast<const char*>(e.hash.data()), 32);
    h.hash = e.hash;
    ++h.count;
    keys.push_back(key);
    members.emplace_back(i, h);
  }
  if (members.empty()) return out;
  // The write and the sync run without the mutex (readers of the head and the index go on;
  // appenders queue for the next group); the flock keeps other processes out.
  const uint64_t at = end_;
  lock.unlock();
  status io = status::ok();
  size_t written = 0;
  while (written < records.size() && io.is_ok()) {
    ssize_t n = ::pwrite(fd_, records.data() + written, records.size() - written, static_cast<off_t>(at + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) io = io_error("cannot write ledger '{}': {}; the entry was not recorded", path_, std::strerror(n < 0 ? errno : ENOSPC));
    else written += static_cast<size_t>(n);
  }
  if (io.is_ok() && ::fsync(fd_) != 0)
    io = io_error("cannot sync ledger '{}': {}; the entry was not recorded", path_, std::strerror(errno));
  // Any failure cuts the file back to its last whole entry; if that cut fails too, the next
  // append (or open) finds the torn tail and cuts it before writing.
  if (!io.is_ok() && ::ftruncate(fd_, static_cast<off_t>(at)) == 0) (void)::fsync(fd_);
  lock.lock();
  if (io.is_ok()) {
    end_ = at + records.size();
    head_ = h;
    for (uint64_t k : keys) ids_.insert(k);
  }
  for (const auto& [i, ph] : members) out[i] = io.is_ok() ? expected<head>(ph) : expected<head>(io);
  return out;
}

status chain_checker::add(const entry& e) {
  const uint64_t i = count_;
  if (blake2b_256(e.raw) != e.hash) return invalid_input("entry {}: its contents do not match its hash (altered bytes)", i);
  if (e.index != i)
    return invalid_input("entry {}: it says it is entry {} (an entry was deleted, inserted or moved)", i, e.index);
  if (e.prev_hash != prev_)
    return invalid_input("entry {}: it does not link to entry {} (an entry was deleted, replaced or moved)", i,
                         i == 0 ? std::string("(none)") : std::to_string(i - 1));
  status st = verify_receipt(e.rec);
  if (!st.is_ok()) return invalid_input("entry {}: {}", i, st.message());
  if (!seen_.insert(pair_bytes(e.rec.job_id, e.rec.provider_key)).second)
    return invalid_input("entry {}: job {} from provider {} is in the ledger twice (a receipt counted twice)", i,
                         to_hex(e.rec.job_id), to_hex(e.rec.provider_key).substr(0, 16));
  prev_ = e.hash;
  ++count_;
  return status::ok();
}

status verify_entries(const std::vector<entry>& entries) {
  chain_checker c;
  for (const entry& e : entries) GG_RETURN_IF_ERROR(c.add(e));
  return status::ok();
}

void balance_sheet::add(const entry& e) {
  const receipt& r = e.rec;
  balance_row& p = rows_[r.provider_key];
  balance_row& c = rows_[r.client_key];
  p.node = r.provider_key;
  c.node = r.client_key;
  if (r.kind == receipt_kind::payment || r.kind == receipt_kind::generation) {
    p.earned_micros += r.price_micros;
    c.paid_micros += r.price_micros;
    ++p.jobs;
    if (&p != &c) ++c.jobs;
    if (e.claim) {
      unsigned __int128 wei = word_value(e.claim->price);
      p.earned_wei += wei;
      c.paid_wei += wei;
      p.settled_earned_micros += r.price_micros;
      c.settled_paid_micros += r.price_micros;
      ++p.settled_jobs;
      if (&p != &c) ++c.settled_jobs;
    }
  } else {
    ++p.disputes;
  }
}

std::vector<balance_row> balance_sheet::rows() const {
  std::vector<balance_row> out;
  for (const auto& [k, v] : rows_) out.push_back(v);
  return out;
}

std::vector<balance_row> balances(const std::vector<entry>& entries) {
  balance_sheet s;
  for (const entry& e : entries) s.add(e);
  return s.rows();
}

}  // namespace gpugrid::ledger
