#pragma once

// Owner-only secret key files (the node identity key, the wallet key): read with
// O_NOFOLLOW after checking the file is regular, has no group/other permission bits
// and has the exact size; written through an O_EXCL 0600 temp file, fsync, then
// rename (replace) or link (no clobber), and an fsync of the directory.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace gpugrid {

// Zero memory in a way the compiler may not drop.
void secure_zero(void* p, size_t n);

// Bytes that are zeroed when they go away. Move-only.
class secret_bytes {
 public:
  secret_bytes() = default;
  explicit secret_bytes(size_t n) : b_(n) {}
  secret_bytes(const secret_bytes&) = delete;
  secret_bytes& operator=(const secret_bytes&) = delete;
  secret_bytes(secret_bytes&& o) noexcept : b_(std::move(o.b_)) { o.b_.clear(); }
  secret_bytes& operator=(secret_bytes&& o) noexcept {
    if (this != &o) {
      wipe();
      b_ = std::move(o.b_);
      o.b_.clear();
    }
    return *this;
  }
  ~secret_bytes() { wipe(); }

  uint8_t* data() { return b_.data(); }
  const uint8_t* data() const { return b_.data(); }
  size_t size() const { return b_.size(); }
  void wipe() { secure_zero(b_.data(), b_.size()); }

 private:
  std::vector<uint8_t> b_;
};

// Reads the file at `path`, which must be a regular file (not a symlink) with no
// group/other permission bits and exactly `size` bytes. `what` names the file in
// messages ("key file", "wallet key file"); `size_hint` follows the byte count when
// the size is wrong ("an Ed25519 key file has exactly 64").
expected<secret_bytes> read_secret_file(const std::string& path, const std::string& what, size_t size,
                                        const std::string& size_hint);

// Writes `n` bytes to `path` with mode 0600. With replace, an existing file is
// atomically replaced; without, an existing file is an error and is never clobbered.
status write_secret_file(const std::string& path, const std::string& what, const void* data, size_t n,
                         bool replace);

// Before a secret file is replaced: keeps the current one as a hard link "PATH.old-<UTC time>"
// (with "-N" added when that name is taken; never overwrites). Returns the kept path, or "" when
// there is no file at `path`. `what` names the file in errors ("key file").
expected<std::string> keep_old_secret_file(const std::string& path, const std::string& what);

}  // namespace gpugrid
