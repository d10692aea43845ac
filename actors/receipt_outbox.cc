#include "actors/receipt_outbox.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <caf/all.hpp>

#include "actors/atoms.h"

namespace gpugrid::grid {

namespace {

class lock_file {
 public:
  explicit lock_file(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) { err_ = errno; return; }
    int rc;
    while ((rc = ::flock(fd_, LOCK_EX)) != 0 && errno == EINTR) {}
    if (rc != 0) { err_ = errno; ::close(fd_); fd_ = -1; }
  }
  ~lock_file() { if (fd_ >= 0) ::close(fd_); }
  bool ok() const { return fd_ >= 0; }
  int error() const { return err_; }

 private:
  int fd_ = -1;
  int err_ = 0;
};

bool same_job(const ledger::receipt& r, const std::array<uint8_t, 16>& job, const key32& provider) {
  return r.job_id == job && r.provider_key == provider;
}

}  // namespace

expected<std::unique_ptr<receipt_outbox>> receipt_outbox::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create '{}': {}", dir, ec.message());
  std::unique_ptr<receipt_outbox> o(new receipt_outbox());
  o->path_ = (std::filesystem::path(dir) / "receipts.pending").string();
  o->lock_path_ = (std::filesystem::path(dir) / "receipts.lock").string();
  return o;
}

expected<std::vector<ledger::receipt>> receipt_outbox::read_locked() const {
  std::vector<ledger::receipt> out;
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return io_error("cannot read '{}': {}", path_, std::strerror(errno));
  }
  std::string buf(ledger::receipt_size, '\0');
  for (;;) {
    size_t got = 0;
    while (got < buf.size()) {
      ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got < buf.size()) break;  // the end (a partial record cannot occur: writes are renames)
    auto r = ledger::receipt::parse(buf, path_);
    if (r) out.push_back(std::move(r).value());
    if (out.size() > 2 * max_pending) break;
  }
  ::close(fd);
  return out;
}

expected<std::vector<ledger::receipt>> receipt_outbox::pending() const {
  std::lock_guard<std::mutex> lk(mu_);
  lock_file l(lock_path_);
  if (!l.ok()) return io_error("cannot lock '{}': {}", lock_path_, std::strerror(l.error()));
  return read_locked();
}

template <typename F>
status receipt_outbox::change(F&& edit) {
  std::lock_guard<std::mutex> lk(mu_);
  lock_file l(lock_path_);
  if (!l.ok()) return io_error("cannot lock '{}': {}", lock_path_, std::strerror(l.error()));
  auto list = read_locked();
  if (!list) return list.error();
  if (!edit(*list)) return status::ok();
  if (list->size() > max_pending) list->erase(list->begin(), list->end() - static_cast<std::ptrdiff_t>(max_pending));
  if (list->empty()) {
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) return io_error("cannot remove '{}': {}", path_, std::strerror(errno));
    return status::ok();
  }
  std::string bytes;
  for (const auto& r : *list) bytes += r.canonical_bytes();
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot write '{}': {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(tmp.c_str());
      return io_error("cannot write '{}': {}", tmp, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return io_error("cannot sync '{}': {}", tmp, std::strerror(err));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return io_error("cannot replace '{}': {}", path_, std::strerror(errno));
  int dfd = ::open(std::filesystem::path(path_).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return status::ok();
}

status receipt_outbox::add(const ledger::receipt& r) {
  return change([&](std::vector<ledger::receipt>& list) {
    for (auto& x : list)
      if (same_job(x, r.job_id, r.provider_key)) { x = r; return true; }
    list.push_back(r);
    return true;
  });
}

status receipt_outbox::remove(const std::array<uint8_t, 16>& job_id, const key32& provider) {
  return change([&](std::vector<ledger::receipt>& list) {
    size_t before = list.size();
    list.erase(std::remove_if(list.begin(), list.end(), [&](const ledger::receipt& x) { return same_job(x, job_id, provider); }),
               list.end());
    return list.size() != before;
  });
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
                       size_t limit, std::chrono::milliseconds timeout, const std::function<void(const std::string&)>& note) {
  auto list = outbox.pending();
  if (!list) {
    note("cannot read the receipt outbox: " + list.error().message());
    return 0;
  }
  std::vector<std::pair<provider_actor, ledger::receipt>> todo;
  for (const auto& r : *list) {
    if (todo.size() >= limit) break;
    for (const auto& p : providers)
      if (p.key == r.provider_key && p.actor) { todo.push_back({p.actor, r}); break; }
  }
  if (todo.empty()) return 0;
  int n = deliver_receipts(sys, todo, &outbox, timeout, [](const std::string&) {});
  note(fmt::format("sent {} receipt{} again; {} recorded", todo.size(), todo.size() == 1 ? "" : "s", n));
  return n;
}

}  // namespace gpugrid::grid
