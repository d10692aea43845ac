#include "net/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "base/secret_file.h"
#include "base/settings.h"
#include "net/hash.h"

namespace gpugrid::net {

namespace {

constexpr const char* kKeyFileName = "identity.key";

std::string errno_text() { return std::strerror(errno); }

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
  GG_ASSIGN_OR_RETURN(secret_bytes file,
                      read_secret_file(path, "key file", 64, "an Ed25519 key file has exactly 64"));
  secret_key64 sk{};
  std::memcpy(sk.data(), file.data(), sk.size());
  file.wipe();
  auto id = from_secret_key(sk, "key file '" + path + "'");
  sodium_memzero(sk.data(), sk.size());
  return id;
}

status identity::save(const std::string& path, bool replace) const {
  return write_secret_file(path, "key file", secret_key_.data(), secret_key_.size(), replace);
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
  auto kept = keep_old_secret_file(path, "key file");
  if (!kept) return kept.error();
  if (old_path) *old_path = *kept;
  GG_RETURN_IF_ERROR(fresh.save(path, /*replace=*/!kept->empty()));
  return fresh;
}

}  // namespace gpugrid::net
