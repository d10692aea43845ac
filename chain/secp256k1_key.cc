#include "chain/secp256k1_key.h"

#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace gpugrid::chain {

namespace {

// Created once, randomized for side-channel protection, then only read: thread-safe.
const secp256k1_context* context() {
  static const secp256k1_context* ctx = [] {
    secp256k1_context* c = secp256k1_context_create(SECP256K1_CONTEXT_SIGN | SECP256K1_CONTEXT_VERIFY);
    unsigned char seed[32];
    if (sodium_init() < 0) throw std::runtime_error("libsodium cannot start");
    randombytes_buf(seed, sizeof seed);
    if (!secp256k1_context_randomize(c, seed)) throw std::runtime_error("secp256k1 context randomization failed");
    sodium_memzero(seed, sizeof seed);
    return c;
  }();
  return ctx;
}

// secp256k1n / 2, big-endian.
constexpr std::array<uint8_t, 32> kHalfN = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                            0xff, 0xff, 0xff, 0xff, 0xff, 0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4,
                                            0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};

}  // namespace

secret_key::~secret_key() { sodium_memzero(key_.data(), key_.size()); }

secret_key secret_key::generate() {
  std::array<uint8_t, 32> raw{};
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot start");
  do {
    randombytes_buf(raw.data(), raw.size());
  } while (!secp256k1_ec_seckey_verify(context(), raw.data()));
  auto k = from_bytes(raw.data(), raw.size(), "fresh key");
  sodium_memzero(raw.data(), raw.size());
  return std::move(k).value();
}

expected<secret_key> secret_key::from_bytes(const uint8_t* p, size_t n, const std::string& what) {
  if (n != 32) return invalid_input("{}: a secp256k1 secret key is 32 bytes, not {}", what, n);
  if (!secp256k1_ec_seckey_verify(context(), p))
    return invalid_input("{}: not a valid secp256k1 secret key (zero or not below the group order)", what);
  secret_key k;
  std::memcpy(k.key_.data(), p, 32);
  secp256k1_pubkey pub;
  if (!secp256k1_ec_pubkey_create(context(), &pub, p)) return internal_error("{}: cannot derive the public key", what);
  unsigned char out[65];
  size_t len = sizeof out;
  secp256k1_ec_pubkey_serialize(context(), out, &len, &pub, SECP256K1_EC_UNCOMPRESSED);
  std::memcpy(k.public_key_.data(), out + 1, 64);
  k.address_ = address_of_public_key(k.public_key_);
  return k;
}

signature secret_key::sign(const hash32& digest) const {
  secp256k1_ecdsa_recoverable_signature sig;
  // Cannot fail for a verified key with the default nonce function.
  secp256k1_ecdsa_sign_recoverable(context(), &sig, digest.data(), key_.data(), nullptr, nullptr);
  unsigned char rs[64];
  int recid = 0;
  secp256k1_ecdsa_recoverable_signature_serialize_compact(context(), rs, &recid, &sig);
  signature out;
  std::memcpy(out.r.data(), rs, 32);
  std::memcpy(out.s.data(), rs + 32, 32);
  out.v = static_cast<uint8_t>(recid);
  return out;
}

expected<address> recover_signer(const hash32& digest, const signature& sig) {
  if (sig.v > 1) return invalid_input("signature: recovery id {} is not 0 or 1", sig.v);
  if (std::lexicographical_compare(kHalfN.begin(), kHalfN.end(), sig.s.begin(), sig.s.end()))
    return invalid_input("signature: s is in the upper half of the group order (malleable form)");
  unsigned char rs[64];
  std::memcpy(rs, sig.r.data(), 32);
  std::memcpy(rs + 32, sig.s.data(), 32);
  secp256k1_ecdsa_recoverable_signature rsig;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(context(), &rsig, rs, sig.v))
    return invalid_input("signature: r or s is out of range");
  secp256k1_pubkey pub;
  if (!secp256k1_ecdsa_recover(context(), &pub, &rsig, digest.data()))
    return invalid_input("signature: no public key recovers from it");
  unsigned char out[65];
  size_t len = sizeof out;
  secp256k1_ec_pubkey_serialize(context(), out, &len, &pub, SECP256K1_EC_UNCOMPRESSED);
  std::array<uint8_t, 64> xy{};
  std::memcpy(xy.data(), out + 1, 64);
  return address_of_public_key(xy);
}

}  // namespace gpugrid::chain
