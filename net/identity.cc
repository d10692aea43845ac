#include "net/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "base/settings.h"
#include "net/hash.h"

namespace gpugrid::net {

namespace {

constexpr const char* kKeyFileName = "identity.key";

std::string errno_text() { return std::strerror(errno); }

struct fd_closer {
  int fd = -1;
  ~fd_closer() { if (fd >= 0) ::close(fd); }
};

status write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write '{}': {}", path, errno_text());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return status::ok();
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

std::string utc_stamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

identity::~identity() { sodium_memzero(secret_key_.data(), secret_key_.size()); }

identity identity::generate() {
  ensure_sodium();
  identity id;
  crypto_sign_keypair(id.public_key_.data(), id.secret_key_.data());
  return id;
}

identity identity::from_seed(const std::array<uint8_t, 32>& seed) {
  ensure_sodium();
  identity id;
  crypto_sign_seed_keypair(id.public_key_.data(), id.secret_key_.data(), seed.data());
  return id;
}

expected<identity> identity::from_secret_key(const secret_key64& sk, const std::string& what) {
  std::array<uint8_t, 32> seed{};
  std::memcpy(seed.data(), sk.data(), 32);
  identity id = from_seed(seed);
  sodium_memzero(seed.data(), seed.size());
  if (sodium_memcmp(id.secret_key_.data(), sk.data(), sk.size()) != 0)
    return invalid_input("{}: corrupt key (the public half does not match the seed)", what);
  return id;
}

expected<identity> identity::load(const std::string& path) {
  fd_closer f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (f.fd < 0) return io_error("cannot open key file '{}': {}", path, errno_text());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return io_error("cannot stat key file '{}': {}", path, errno_text());
  if (!S_ISREG(st.st_mode)) return invalid_input("key file '{}' is not a regular file", path);
  if ((st.st_mode & 077) != 0)
    return invalid_input("key file '{}' has permissions {:04o}: group and others must have no access "
                         "(run: chmod 600 '{}')",
                         path, st.st_mode & 07777, path);
  if (st.st_size != 64)
    return invalid_input("key file '{}' has {} bytes; an Ed25519 key file has exactly 64", path,
                         static_cast<int64_t>(st.st_size));
  secret_key64 sk{};
  size_t got = 0;
  while (got < sk.size()) {
    ssize_t r = ::read(f.fd, sk.data() + got, sk.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      sodium_memzero(sk.data(), sk.size());
      return io_error("cannot read key file '{}': {}", path, r < 0 ? errno_text() : "short read");
    }
    got += static_cast<size_t>(r);
  }
  auto id = from_secret_key(sk, "key file '" + path + "'");
  sodium_memzero(sk.data(), sk.size());
  return id;
}

status identity::save(const std::string& path, bool replace) const {
  struct stat st {};
  if (!replace && ::lstat(path.c_str(), &st) == 0) return io_error("key file '{}' already exists", path);
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  fd_closer f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (f.fd < 0) return io_error("cannot create '{}': {}", tmp, errno_text());
  status s = write_all(f.fd, secret_key_.data(), secret_key_.size(), tmp);
  if (s.is_ok() && ::fchmod(f.fd, 0600) != 0) s = io_error("cannot chmod '{}': {}", tmp, errno_text());
  if (s.is_ok() && ::fsync(f.fd) != 0) s = io_error("cannot fsync '{}': {}", tmp, errno_text());
  ::close(f.fd);
  f.fd = -1;
  if (s.is_ok() && !replace && ::link(tmp.c_str(), path.c_str()) != 0)  // no clobber
    s = io_error("cannot create key file '{}': {}", path, errno_text());
  else if (s.is_ok() && replace && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = io_error("cannot replace key file '{}': {}", path, errno_text());
  ::unlink(tmp.c_str());  // after link(), or on failure; after rename() it is already gone
  if (s.is_ok()) fsync_dir(parent_dir(path));
  return s;
}

std::string identity::node_id() const { return node_id_of(public_key_); }

sig64 identity::sign(const void* message, size_t n) const {
  sig64 sig{};
  crypto_sign_detached(sig.data(), nullptr, static_cast<const unsigned char*>(message), n, secret_key_.data());
  return sig;
}

bool verify_signature(const key32& key, const void* message, size_t n, const sig64& sig) {
  ensure_sodium();
  return crypto_sign_verify_detached(sig.data(), static_cast<const unsigned char*>(message), n, key.data()) == 0;
}

std::string node_id_of(const key32& public_key) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  digest32 h = blake2b_256(public_key.data(), public_key.size());
  std::string id = "gg";
  // 20 bytes = 160 bits = 32 groups of 5 bits.
  uint64_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < 20; ++i) {
    acc = (acc << 8) | h[i];
    bits += 8;
    while (bits >= 5) {
      id.push_back(alphabet[(acc >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  return id;
}

std::string identity_path(const std::string& data_dir) { return data_dir + "/" + kKeyFileName; }

expected<identity> load_or_create_identity(const std::string& data_dir, bool* created) {
  if (created) *created = false;
  std::string path = identity_path(data_dir);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return identity::load(path);
  if (errno != ENOENT) return io_error("cannot stat key file '{}': {}", path, errno_text());
  GG_RETURN_IF_ERROR(ensure_data_dir(data_dir));
  identity id = identity::generate();
  status s = id.save(path, /*replace=*/false);
  if (!s.is_ok()) {
    // Another process may have created it first: use that one.
    if (::lstat(path.c_str(), &st) == 0) return identity::load(path);
    return s;
  }
  if (created) *created = true;
  return id;
}

expected<identity> rotate_identity(const std::string& data_dir, std::string* old_path) {
  if (old_path) old_path->clear();
  GG_RETURN_IF_ERROR(ensure_data_dir(data_dir));
  std::string path = identity_path(data_dir);
  identity fresh = identity::generate();
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    std::string keep = path + ".old-" + utc_stamp();
    for (int n = 1; ::lstat(keep.c_str(), &st) == 0; ++n) keep = path + ".old-" + utc_stamp() + "-" + std::to_string(n);
    // link, not rename: until the new key is in place, identity.key still holds the old one.
    if (::link(path.c_str(), keep.c_str()) != 0)
      return io_error("cannot keep the old key as '{}': {}", keep, errno_text());
    if (old_path) *old_path = keep;
    GG_RETURN_IF_ERROR(fresh.save(path, /*replace=*/true));
    return fresh;
  }
  if (errno != ENOENT) return io_error("cannot stat key file '{}': {}", path, errno_text());
  GG_RETURN_IF_ERROR(fresh.save(path, /*replace=*/false));
  return fresh;
}

}  // namespace gpugrid::net
