#include "base/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

namespace gpugrid {

namespace {

// The holder named in a lock file ("gpugrid offer, pid 123"): 0 when none is named.
long holder_pid(const std::string& holder) {
  auto at = holder.rfind("pid ");
  return at == std::string::npos ? 0 : std::strtol(holder.c_str() + at + 4, nullptr, 10);
}

// A holder that has died but whose threads are still being torn down (its main thread a zombie,
// another still in an fsync) keeps the lock for a moment longer: worth waiting for, unlike a
// live holder.
bool holder_is_exiting(long pid) {
  if (pid <= 0) return false;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  if (!status) return true;
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("State:", 0) == 0) {
      auto c = line.find_first_not_of(" \t", 6);
      return c != std::string::npos && (line[c] == 'Z' || line[c] == 'X');
    }
  return false;
}

std::string read_holder(int fd) {
  char buf[128] = {};
  ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
  return holder;
}

}  // namespace

expected<data_dir_lock> data_dir_lock::acquire(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create data dir '{}': {}", dir, ec.message());
  std::string path = (std::filesystem::path(dir) / "lock").string();
  data_dir_lock l;
  l.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (l.fd_ < 0) return io_error("cannot open '{}': {}", path, std::strerror(errno));
  int rc, err = 0;
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    while ((rc = ::flock(l.fd_, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {}
    err = rc == 0 ? 0 : errno;
    if (rc == 0 || err != EWOULDBLOCK) break;
    if (!holder_is_exiting(holder_pid(read_holder(l.fd_))) || std::chrono::steady_clock::now() > give_up) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (rc != 0) {
    if (err != EWOULDBLOCK) return io_error("cannot lock '{}': {}", path, std::strerror(err));
    std::string holder = read_holder(l.fd_);
    return invalid_input("data dir '{}' is in use by another process{}; {} needs it to itself", dir,
                         holder.empty() ? std::string() : " (" + holder + ")", what);
  }
  l.held_ = true;
  // Say who holds it, for the error a second process prints.
  std::string holder = fmt::format("{}, pid {}\n", what, ::getpid());
  if (::ftruncate(l.fd_, 0) == 0) (void)!::pwrite(l.fd_, holder.data(), holder.size(), 0);
  return l;
}

data_dir_lock& data_dir_lock::operator=(data_dir_lock&& o) noexcept {
  if (this != &o) {
    this->~data_dir_lock();
    fd_ = o.fd_;
    held_ = o.held_;
    o.fd_ = -1;
    o.held_ = false;
  }
  return *this;
}

data_dir_lock::~data_dir_lock() {
  if (fd_ < 0) return;
  if (held_) (void)!::ftruncate(fd_, 0);
  ::close(fd_);
  fd_ = -1;
  held_ = false;
}

}  // namespace gpugrid
