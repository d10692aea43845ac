#include "base/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace gpugrid {

namespace {

std::string errno_text() { return std::strerror(errno); }

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void secure_zero(void* p, size_t n) {
  volatile unsigned char* v = static_cast<volatile unsigned char*>(p);
  while (n--) *v++ = 0;
}

expected<secret_bytes> read_secret_file(const std::string& path, const std::string& what, size_t size,
                                        const std::string& size_hint) {
  fd_closer f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (f.fd < 0) return io_error("cannot open {} '{}': {}", what, path, errno_text());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return io_error("cannot stat {} '{}': {}", what, path, errno_text());
  if (!S_ISREG(st.st_mode)) return invalid_input("{} '{}' is not a regular file", what, path);
  if ((st.st_mode & 077) != 0)
    return invalid_input("{} '{}' has permissions {:04o}: group and others must have no access "
                         "(run: chmod 600 '{}')",
                         what, path, st.st_mode & 07777, path);
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) != size)
    return invalid_input("{} '{}' has {} bytes; {}", what, path, static_cast<int64_t>(st.st_size), size_hint);
  secret_bytes out(size);
  size_t got = 0;
  while (got < size) {
    ssize_t r = ::read(f.fd, out.data() + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      std::string why = r < 0 ? errno_text() : "short read";
      out.wipe();
      return io_error("cannot read {} '{}': {}", what, path, why);
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

status write_secret_file(const std::string& path, const std::string& what, const void* data, size_t n,
                         bool replace) {
  struct stat st {};
  if (!replace && ::lstat(path.c_str(), &st) == 0) return io_error("{} '{}' already exists", what, path);
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  fd_closer f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (f.fd < 0) return io_error("cannot create '{}': {}", tmp, errno_text());
  status s;
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (s.is_ok() && done < n) {
    ssize_t w = ::write(f.fd, p + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) s = io_error("cannot write '{}': {}", tmp, errno_text());
    else done += static_cast<size_t>(w);
  }
  if (s.is_ok() && ::fchmod(f.fd, 0600) != 0) s = io_error("cannot chmod '{}': {}", tmp, errno_text());
  if (s.is_ok() && ::fsync(f.fd) != 0) s = io_error("cannot fsync '{}': {}", tmp, errno_text());
  ::close(f.fd);
  f.fd = -1;
  if (s.is_ok() && !replace && ::link(tmp.c_str(), path.c_str()) != 0)  // no clobber
    s = io_error("cannot create {} '{}': {}", what, path, errno_text());
  else if (s.is_ok() && replace && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = io_error("cannot replace {} '{}': {}", what, path, errno_text());
  ::unlink(tmp.c_str());  // after link(), or on failure; after rename() it is already gone
  if (s.is_ok()) fsync_dir(parent_dir(path));
  return s;
}

expected<std::string> keep_old_secret_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::string();
    return io_error("cannot stat {} '{}': {}", what, path, errno_text());
  }
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::string keep = path + ".old-" + stamp;
  for (int n = 1; ::lstat(keep.c_str(), &st) == 0; ++n) keep = path + ".old-" + stamp + "-" + std::to_string(n);
  // link, not rename: until the new file is in place, `path` still holds the old one.
  if (::link(path.c_str(), keep.c_str()) != 0)
    return io_error("cannot keep the old {} as '{}': {}", what, keep, errno_text());
  return keep;
}

}  // namespace gpugrid
