// A node's identity: an Ed25519 key pair (libsodium) kept in the data folder.
//
// The key file is DIR/identity.key: the 64-byte libsodium secret key (seed || public key), raw,
// mode 0600, written atomically (temporary file, fsync, rename). A key file of the wrong size,
// one whose public half does not match its seed, or one that group or others may read is
// refused with an error naming the file and the fix; it is never overwritten.
//
// The printable node id is "gg" + base32 (RFC 4648 alphabet, lower case, no padding) of the
// first 20 bytes of BLAKE2b-256(public key): 34 characters, e.g. "ggq3v...".
//
// An identity is an immutable value: copy it freely and use it from any thread. The secret key
// lives in ordinary memory (not mlock'ed); it is wiped when the identity is destroyed.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace gpugrid::net {

using key32 = std::array<uint8_t, 32>;
using sig64 = std::array<uint8_t, 64>;
using secret_key64 = std::array<uint8_t, 64>;

class identity {
 public:
  // A fresh random key pair (not saved).
  static identity generate();
  // The key pair of a 32-byte seed (deterministic: tests and benchmarks).
  static identity from_seed(const std::array<uint8_t, 32>& seed);
  // Checks that the public half matches the seed.
  static expected<identity> from_secret_key(const secret_key64& sk, const std::string& what);

  // Reads a key file; see the header comment for what is refused.
  static expected<identity> load(const std::string& path);
  // Writes the key file atomically with mode 0600; fails if `path` exists unless `replace`.
  status save(const std::string& path, bool replace = false) const;

  identity(const identity& other) = default;
  identity& operator=(const identity& other) = default;
  ~identity();

  const key32& public_key() const { return public_key_; }
  // The libsodium secret key (seed || public key), e.g. for ledger::sign_as_provider.
  const secret_key64& secret_key() const { return secret_key_; }
  std::string node_id() const;

  sig64 sign(const void* message, size_t n) const;
  sig64 sign(std::string_view message) const { return sign(message.data(), message.size()); }

 private:
  identity() = default;
  key32 public_key_{};
  secret_key64 secret_key_{};
};

bool verify_signature(const key32& key, const void* message, size_t n, const sig64& sig);
inline bool verify_signature(const key32& key, std::string_view message, const sig64& sig) {
  return verify_signature(key, message.data(), message.size(), sig);
}

// "gg" + base32 of BLAKE2b-256(key)[0..20).
std::string node_id_of(const key32& public_key);

// DIR/identity.key.
std::string identity_path(const std::string& data_dir);

// Loads DIR/identity.key, creating it (and DIR) when it does not exist; *created says which.
expected<identity> load_or_create_identity(const std::string& data_dir, bool* created = nullptr);

// Replaces DIR/identity.key with a fresh key. The old key, if any, is kept as
// DIR/identity.key.old-YYYYmmddTHHMMSSZ (its path goes to *old_path; empty if there was none).
// A key file that cannot be loaded is kept the same way, never lost.
expected<identity> rotate_identity(const std::string& data_dir, std::string* old_path = nullptr);

}  // namespace gpugrid::net
