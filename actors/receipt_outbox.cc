#include "actors/receipt_outbox.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/atoms.h"

namespace gpugrid::grid {

namespace {

// An exclusive flock on an open file, held for the object's life.
class lock_file {
 public:
  explicit lock_file(int fd) : fd_(fd) {
    if (fd_ < 0) { err_ = EBADF; return; }
    int rc;
    while ((rc = ::flock(fd_, LOCK_EX)) != 0 && errno == EINTR) {}
    if (rc != 0) { err_ = errno; fd_ = -1; }
  }
  ~lock_file() { if (fd_ >= 0) ::flock(fd_, LOCK_UN); }
  bool ok() const { return fd_ >= 0; }
  int error() const { return err_; }

 private:
  int fd_ = -1;
  int err_ = 0;
};

}  // namespace

expected<std::unique_ptr<receipt_outbox>> receipt_outbox::open(const std::string& dir, const key32* client) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create '{}': {}", dir, ec.message());
  std::unique_ptr<receipt_outbox> o(new receipt_outbox());
  o->path_ = (std::filesystem::path(dir) / "receipts.pending").string();
  o->lock_path_ = (std::filesystem::path(dir) / "receipts.lock").string();
  o->lock_fd_ = ::open(o->lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (o->lock_fd_ < 0) return io_error("cannot open '{}': {}", o->lock_path_, std::strerror(errno));
  if (client) {
    o->deferred_ = true;
    o->client_ = *client;
    o->mark_path_ = (std::filesystem::path(dir) / "receipts.mark").string();
    o->ledger_path_ = (std::filesystem::path(dir) / "ledger.log").string();
    std::lock_guard<std::mutex> lk(o->mu_);
    GG_RETURN_IF_ERROR(o->reconcile_locked());
  }
  return o;
}

receipt_outbox::~receipt_outbox() {
  if (deferred_ && unsynced_ > 0) (void)checkpoint();
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

int receipt_outbox::file_locked(bool create) const {
  // The file kept open is still the one at path_ unless a rewrite (here or in another process)
  // renamed a new one over it: then it has no name left.
  struct stat sb {};
  if (fd_ >= 0 && (::fstat(fd_, &sb) != 0 || sb.st_nlink == 0)) {
    ::close(fd_);
    fd_ = -1;
  }
  if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0 && errno == ENOENT && create) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
    if (fd_ >= 0) created_ = true;  // its folder entry is synced at the next checkpoint
    else if (errno == EEXIST) fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
  }
  return fd_;
}

namespace {

// The file's fixed-size slots as they are, unparsed: a slot is live when it holds a receipt (a
// removed one is zeros; bytes that do not parse count as removed). `whole` is the bytes in whole
// slots (a torn append leaves a partial one after).
struct slots {
  std::string raw;  // the whole slots read
  off_t whole = 0;
  bool cut = false;  // the file holds more slots than were read

  static constexpr size_t kSlot = ledger::receipt_size;
  size_t size() const { return raw.size() / kSlot; }
  const char* at(size_t i) const { return raw.data() + i * kSlot; }
  bool live(size_t i) const { return ledger::is_receipt_bytes(at(i)); }
  bool holds(size_t i, const std::array<uint8_t, 16>& job, const key32& provider) const {
    return live(i) && std::memcmp(at(i) + ledger::receipt_job_id_at, job.data(), job.size()) == 0 &&
           std::memcmp(at(i) + ledger::receipt_provider_at, provider.data(), provider.size()) == 0;
  }
  std::optional<size_t> find(const std::array<uint8_t, 16>& job, const key32& provider) const {
    for (size_t i = 0; i < size(); ++i)
      if (holds(i, job, provider)) return i;
    return std::nullopt;
  }
  size_t live_count() const {
    size_t n = 0;
    for (size_t i = 0; i < size(); ++i) n += live(i) ? 1 : 0;
    return n;
  }
  void clear(size_t i) { std::memset(raw.data() + i * kSlot, 0, kSlot); }
  void put(size_t i, const std::string& canonical) {
    if (i == size()) raw.append(kSlot, '\0');
    std::memcpy(raw.data() + i * kSlot, canonical.data(), kSlot);
  }
};

expected<slots> read_slots(int fd, const std::string& path) {
  slots out;
  // Read 64 slots per call (a file of a few dozen slots is one read).
  constexpr size_t kChunkSlots = 64;
  const size_t slot = slots::kSlot;
  std::string buf(kChunkSlots * slot, '\0');
  for (off_t off = 0;;) {
    size_t got = 0;
    while (got < buf.size()) {
      ssize_t n = ::pread(fd, buf.data() + got, buf.size() - got, off + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return io_error("cannot read '{}': {}", path, std::strerror(errno));
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    const size_t whole = got / slot * slot;
    out.raw.append(buf.data(), whole);
    out.whole = off + static_cast<off_t>(whole);
    if (out.size() > 4 * receipt_outbox::max_pending) {
      out.raw.resize(4 * receipt_outbox::max_pending * slot);
      out.whole = static_cast<off_t>(out.raw.size());
      out.cut = true;
      return out;
    }
    if (got < buf.size()) break;
    off += static_cast<off_t>(got);
  }
  return out;
}

status write_at(int fd, const std::string& bytes, off_t off, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, off + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return io_error("cannot write '{}': {}", path, std::strerror(n < 0 ? errno : ENOSPC));
    done += static_cast<size_t>(n);
  }
  return status::ok();
}

// receipts.mark: the ledger position as 8 bytes little-endian, then the same xor a constant
// (a torn or damaged mark does not pass for a position).
constexpr uint64_t kMarkCheck = 0x9e3779b97f4a7c15ull;

struct mark_read {
  bool present = false;
  bool valid = false;
  uint64_t at = 0;
};

mark_read read_mark(const std::string& path) {
  mark_read m;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    m.present = errno != ENOENT;  // unreadable: treated as damaged
    return m;
  }
  m.present = true;
  uint8_t b[16] = {};
  ssize_t n = ::pread(fd, b, sizeof b, 0);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof b)) return m;
  uint64_t at = 0, check = 0;
  for (int i = 0; i < 8; ++i) {
    at |= static_cast<uint64_t>(b[i]) << (8 * i);
    check |= static_cast<uint64_t>(b[8 + i]) << (8 * i);
  }
  m.valid = check == (at ^ kMarkCheck);
  m.at = at;
  return m;
}

void sync_parent(const std::string& path) {
  int d = ::open(std::filesystem::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d >= 0) {
    (void)::fsync(d);
    ::close(d);
  }
}

status write_mark(const std::string& path, uint64_t at, bool sync) {
  std::string bytes(16, '\0');
  const uint64_t check = at ^ kMarkCheck;
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<char>((at >> (8 * i)) & 0xff);
    bytes[8 + i] = static_cast<char>((check >> (8 * i)) & 0xff);
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot write '{}': {}", path, std::strerror(errno));
  status st = write_at(fd, bytes, 0, path);
  if (st.is_ok() && sync && ::fsync(fd) != 0) st = io_error("cannot sync '{}': {}", path, std::strerror(errno));
  ::close(fd);
  if (st.is_ok() && sync) sync_parent(path);
  return st;
}

class open_file {
 public:
  open_file(const std::string& path, int flags) : fd_(::open(path.c_str(), flags | O_CLOEXEC, 0600)) {}
  ~open_file() { if (fd_ >= 0) ::close(fd_); }
  int fd() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

expected<std::vector<ledger::receipt>> receipt_outbox::pending() const {
  std::lock_guard<std::mutex> lk(mu_);
  lock_file l(lock_fd_);
  if (!l.ok()) return io_error("cannot lock '{}': {}", lock_path_, std::strerror(l.error()));
  std::vector<ledger::receipt> out;
  const int fd = file_locked(false);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return io_error("cannot read '{}': {}", path_, std::strerror(errno));
  }
  GG_ASSIGN_OR_RETURN(slots got, read_slots(fd, path_));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!got.live(i)) continue;
    auto r = ledger::receipt::parse(std::string(got.at(i), slots::kSlot), path_);
    if (r) out.push_back(std::move(r).value());
  }
  return out;
}

status receipt_outbox::rewrite_locked(const std::string& bytes) {
  std::string tmp = path_ + ".tmp";
  {
    open_file f(tmp, O_WRONLY | O_CREAT | O_TRUNC);
    if (f.fd() < 0) return io_error("cannot write '{}': {}", tmp, std::strerror(errno));
    status st = write_at(f.fd(), bytes, 0, tmp);
    if (st.is_ok() && ::fsync(f.fd()) != 0) st = io_error("cannot sync '{}': {}", tmp, std::strerror(errno));
    if (!st.is_ok()) {
      ::unlink(tmp.c_str());
      return st;
    }
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return io_error("cannot replace '{}': {}", path_, std::strerror(errno));
  if (fd_ >= 0) ::close(fd_);  // the old file; the next call opens the new one
  fd_ = -1;
  sync_parent(path_);
  return status::ok();
}

status receipt_outbox::add(const ledger::receipt& r) {
  // Adds from several threads at once share one write (and, without a key, one fsync).
  return adds_.submit(&r, [this](const std::vector<const ledger::receipt*>& group) {
    return std::vector<status>(group.size(), add_all(group));
  });
}

status receipt_outbox::add_all(const std::vector<const ledger::receipt*>& rs) {
  if (rs.empty()) return status::ok();
  std::lock_guard<std::mutex> lk(mu_);
  status st = add_locked(rs, !deferred_);
  if (st.is_ok() && deferred_ && (unsynced_ += rs.size()) >= checkpoint_every) st = checkpoint_locked();
  return st;
}

status receipt_outbox::checkpoint() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!deferred_ || unsynced_ == 0) return status::ok();
  return checkpoint_locked();
}

expected<uint64_t> receipt_outbox::ledger_size() const {
  int fd = ::open(ledger_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return uint64_t{0};
    return io_error("cannot read '{}': {}", ledger_path_, std::strerror(errno));
  }
  int rc;
  while ((rc = ::flock(fd, LOCK_SH)) != 0 && errno == EINTR) {}
  struct stat sb {};
  const bool ok = ::fstat(fd, &sb) == 0;
  const int err = errno;
  if (rc == 0) ::flock(fd, LOCK_UN);
  ::close(fd);
  if (rc != 0 || !ok) return io_error("cannot read '{}': {}", ledger_path_, std::strerror(rc != 0 ? errno : err));
  return static_cast<uint64_t>(sb.st_size);
}

status receipt_outbox::checkpoint_locked() {
  // The ledger's size first: every receipt of an entry before it was added (written here, by
  // this or another process) before the entry was appended, so the sync below covers it.
  GG_ASSIGN_OR_RETURN(uint64_t size, ledger_size());
  const int fd = file_locked(false);
  if (fd < 0 && errno != ENOENT) return io_error("cannot open '{}': {}", path_, std::strerror(errno));
  if (fd >= 0) {
    if (::fsync(fd) != 0) return io_error("cannot sync '{}': {}", path_, std::strerror(errno));
    if (created_) sync_parent(path_);
    created_ = false;
  }
  GG_RETURN_IF_ERROR(write_mark(mark_path_, size, false));
  unsynced_ = 0;
  return status::ok();
}

status receipt_outbox::reconcile_locked() {
  const mark_read m = read_mark(mark_path_);
  GG_ASSIGN_OR_RETURN(uint64_t size, ledger_size());
  if (!m.present) return write_mark(mark_path_, size, true);  // first use: every earlier add was synced
  const uint64_t from = m.valid ? m.at : 0;  // a damaged mark: the whole ledger
  if (from >= size) return from > size ? write_mark(mark_path_, size, false) : status::ok();
  std::vector<ledger::receipt> found;
  auto collect = [&](const ledger::entry& e) {
    const ledger::receipt& r = e.rec;
    if (r.client_key == client_ && r.provider_key != client_ && r.kind != ledger::receipt_kind::dispute) found.push_back(r);
    return status::ok();
  };
  bool torn = false;
  uint64_t end = from;
  status st = ledger::for_each_entry_from(ledger_path_, from, collect, &torn, &end);
  if (!st.is_ok() || (torn && end == from)) {
    // The mark is not at a record's start (a crash tore the ledger's tail there and it was cut
    // back, then written on): from the record that ends after it.
    found.clear();
    uint64_t at = 0;
    GG_RETURN_IF_ERROR(ledger::for_each_entry(
        ledger_path_,
        [&](const ledger::entry& e) {
          const uint64_t next = at + (e.claim ? ledger::record_bytes_with_claim() : ledger::record_bytes());
          if (next > from) (void)collect(e);
          at = next;
          return status::ok();
        },
        &torn));
    end = at;
  }
  if (!found.empty()) {
    std::vector<const ledger::receipt*> group;
    for (const auto& r : found) group.push_back(&r);
    GG_RETURN_IF_ERROR(add_locked(group, true));
  }
  return write_mark(mark_path_, end, false);
}

status receipt_outbox::add_locked(const std::vector<const ledger::receipt*>& rs, bool sync) {
  lock_file l(lock_fd_);
  if (!l.ok()) return io_error("cannot lock '{}': {}", lock_path_, std::strerror(l.error()));
  const int fd = file_locked(true);
  if (fd < 0) return io_error("cannot open '{}': {}", path_, std::strerror(errno));
  GG_ASSIGN_OR_RETURN(slots got, read_slots(fd, path_));
  // Each receipt takes its job's old slot, or one after the last whole slot (a torn append
  // from a crash is overwritten).
  const size_t old_slots = got.size();
  size_t first_changed = old_slots;
  for (const ledger::receipt* r : rs) {
    const size_t i = got.find(r->job_id, r->provider_key).value_or(got.size());
    got.put(i, r->canonical_bytes());
    first_changed = std::min(first_changed, i);
  }
  const size_t live = got.live_count();
  // Full (the oldest go; they stay in the ledger), or mostly removed slots between receipts
  // that wait long (a provider that went away): the file is written anew with the receipts only.
  if (live > max_pending || got.cut || got.size() > 2 * live + 64) {
    std::string kept;
    for (size_t i = 0; i < got.size(); ++i)
      if (got.live(i)) kept.append(got.at(i), slots::kSlot);
    const size_t over = live > max_pending ? live - max_pending : 0;
    return rewrite_locked(kept.substr(over * slots::kSlot));
  }
  // One write from the first changed slot on (slots between that the group did not change are
  // written as they were read: a removed or unreadable one as zeros).
  for (size_t i = first_changed; i < got.size(); ++i)
    if (!got.live(i)) got.clear(i);
  const std::string bytes = got.raw.substr(first_changed * slots::kSlot);
  GG_RETURN_IF_ERROR(write_at(fd, bytes, static_cast<off_t>(first_changed * slots::kSlot), path_));
  const off_t end = static_cast<off_t>(got.raw.size());
  if (got.size() > old_slots && ::ftruncate(fd, end) != 0)
    return io_error("cannot cut '{}': {}", path_, std::strerror(errno));
  if (sync && ::fsync(fd) != 0) return io_error("cannot sync '{}': {}", path_, std::strerror(errno));
  return status::ok();
}

status receipt_outbox::remove(const std::array<uint8_t, 16>& job_id, const key32& provider) {
  std::lock_guard<std::mutex> lk(mu_);
  lock_file l(lock_fd_);
  if (!l.ok()) return io_error("cannot lock '{}': {}", lock_path_, std::strerror(l.error()));
  const int fd = file_locked(false);
  if (fd < 0) {
    if (errno == ENOENT) return status::ok();
    return io_error("cannot open '{}': {}", path_, std::strerror(errno));
  }
  GG_ASSIGN_OR_RETURN(slots got, read_slots(fd, path_));
  const std::optional<size_t> found = got.find(job_id, provider);
  if (!found) return status::ok();
  got.clear(*found);
  // Its slot is zeroed, and the file cut after the last receipt still pending. Not synced: a
  // removal a crash loses only sends that receipt again, which its provider answers as recorded.
  size_t keep = got.size();
  while (keep > 0 && !got.live(keep - 1)) --keep;
  if (keep <= *found) {
    if (::ftruncate(fd, static_cast<off_t>(keep * ledger::receipt_size)) != 0)
      return io_error("cannot cut '{}': {}", path_, std::strerror(errno));
    return status::ok();
  }
  return write_at(fd, std::string(ledger::receipt_size, '\0'), static_cast<off_t>(*found * ledger::receipt_size), path_);
}

net::receipt_status receipt_answer_of(const status& st) {
  if (st.is_ok()) return net::receipt_status::recorded;
  if (st.kind() == error_kind::invalid_input) return net::receipt_status::rejected;
  return net::receipt_status::retry_later;
}

int deliver_receipts(caf::actor_system& sys, const std::vector<std::pair<provider_actor, ledger::receipt>>& receipts,
                     receipt_outbox* outbox, std::chrono::milliseconds timeout,
                     const std::function<void(const std::string&)>& note) {
  if (receipts.empty()) return 0;
  caf::scoped_actor self{sys};
  std::vector<caf::response_handle<caf::blocking_actor, caf::detail::type_list<int32_t>, true>> pending;
  for (const auto& [actor, r] : receipts)
    pending.push_back(self->request(actor, timeout, receipt_atom::value, receipt_ptr(std::make_shared<const ledger::receipt>(r))));
  int recorded = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    const ledger::receipt& r = receipts[i].second;
    std::string who = short_hex(r.provider_key);
    auto answer = net::receipt_status::retry_later;
    pending[i].receive([&](int32_t code) { answer = static_cast<net::receipt_status>(code); },
                       [&](caf::error&) {});
    if (answer == net::receipt_status::recorded) ++recorded;
    if (answer == net::receipt_status::rejected) note(fmt::format("provider {} refused its receipt for good", who));
    if (answer == net::receipt_status::retry_later)
      note(fmt::format("provider {} has not recorded its receipt yet; it is kept and sent again later", who));
    if (outbox && answer != net::receipt_status::retry_later) {
      status st = outbox->remove(r.job_id, r.provider_key);
      if (!st.is_ok()) note("cannot update the receipt outbox: " + st.message());
    }
  }
  return recorded;
}

int redeliver_receipts(caf::actor_system& sys, const std::vector<provider_handle>& providers, receipt_outbox& outbox,
                       size_t limit, std::chrono::milliseconds timeout, const std::function<void(const std::string&)>& note,
                       const ledger::ledger_file* ledger) {
  auto list = outbox.pending();
  if (!list) {
    note("cannot read the receipt outbox: " + list.error().message());
    return 0;
  }
  std::vector<std::pair<provider_actor, ledger::receipt>> todo;
  for (const auto& r : *list) {
    if (todo.size() >= limit) break;
    if (ledger && !ledger->contains(r.job_id, r.provider_key)) continue;  // a crash came between add and append
    for (const auto& p : providers)
      if (p.key == r.provider_key && p.actor) { todo.push_back({p.actor, r}); break; }
  }
  if (todo.empty()) return 0;
  int n = deliver_receipts(sys, todo, &outbox, timeout, [](const std::string&) {});
  note(fmt::format("sent {} receipt{} again; {} recorded", todo.size(), todo.size() == 1 ? "" : "s", n));
  return n;
}

}  // namespace gpugrid::grid
