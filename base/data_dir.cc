#include "base/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace gpugrid {

expected<data_dir_lock> data_dir_lock::acquire(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create data dir '{}': {}", dir, ec.message());
  std::string path = (std::filesystem::path(dir) / "lock").string();
  data_dir_lock l;
  l.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (l.fd_ < 0) return io_error("cannot open '{}': {}", path, std::strerror(errno));
  int rc;
  while ((rc = ::flock(l.fd_, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {}
  if (rc != 0) {
    if (errno != EWOULDBLOCK) return io_error("cannot lock '{}': {}", path, std::strerror(errno));
    char buf[128] = {};
    ssize_t n = ::pread(l.fd_, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
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
