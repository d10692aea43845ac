// secp256k1 keys and recoverable ECDSA signatures (libsecp256k1), as Ethereum uses them.
//
// sign() is deterministic (RFC 6979) and always returns the low-s form; recover_signer()
// refuses high-s signatures (the malleable twin), as the payment-channel contract does, so a
// voucher the C++ side accepts is one the chain accepts. `v` is the recovery id (0 or 1);
// add 27 for the contract's ecrecover.
//
// A secret_key owns 32 bytes of key material, wiped on destruction (ordinary memory, not
// mlock'ed). Keys and the library context are safe to use from any thread.
#pragma once

#include <array>
#include <string>

#include "chain/address.h"
#include "chain/bytes.h"

namespace gpugrid::chain {

struct signature {
  hash32 r{};
  hash32 s{};
  uint8_t v = 0;  // recovery id, 0 or 1
};

class secret_key {
 public:
  // A fresh random key (libsodium's randombytes, retried until it is a valid scalar).
  static secret_key generate();
  // 32 bytes: a scalar in [1, n-1].
  static expected<secret_key> from_bytes(const uint8_t* p, size_t n, const std::string& what);

  secret_key(const secret_key&) = default;
  secret_key& operator=(const secret_key&) = default;
  ~secret_key();

  const std::array<uint8_t, 32>& raw() const { return key_; }
  // X || Y of the public point.
  const std::array<uint8_t, 64>& public_key() const { return public_key_; }
  const address& addr() const { return address_; }

  signature sign(const hash32& digest) const;

 private:
  secret_key() = default;
  std::array<uint8_t, 32> key_{};
  std::array<uint8_t, 64> public_key_{};
  address address_;
};

// The address whose key made `sig` over `digest`; fails on a malformed or high-s signature.
expected<address> recover_signer(const hash32& digest, const signature& sig);

}  // namespace gpugrid::chain
