#include "chain/secp256k1_key.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

TEST_CASE("secp256k1 keys, addresses and signatures match eth-keys", "[chain]") {
  for (const auto& v : testing::vectors()["keys"]) {
    bytes raw = testing::hex(v["secret"]);
    auto k = secret_key::from_bytes(raw.data(), raw.size(), "key");
    REQUIRE(k);
    CHECK(to_hex(k->public_key(), false) == v["public"].get<std::string>());
    CHECK(k->addr().checksummed() == v["address"].get<std::string>());
    hash32 digest = hash_from_hex(v["digest"].get<std::string>(), "d").value();
    signature sig = k->sign(digest);
    CHECK(to_hex(sig.r, false) == v["r"].get<std::string>());
    CHECK(to_hex(sig.s, false) == v["s"].get<std::string>());
    CHECK(int(sig.v) == v["v"].get<int>());
    CHECK(recover_signer(digest, sig).value() == k->addr());
  }
}

TEST_CASE("recovery refuses forged and malleable signatures", "[chain]") {
  secret_key k = secret_key::generate();
  hash32 digest{};
  digest[0] = 1;
  signature sig = k.sign(digest);
  hash32 other = digest;
  other[31] ^= 1;
  auto wrong = recover_signer(other, sig);
  CHECK((!wrong || !(*wrong == k.addr())));
  signature bad_v = sig;
  bad_v.v = 2;
  CHECK(!recover_signer(digest, bad_v));
  // The high-s twin: s' = n - s, v flipped. It is a valid ECDSA signature, but refused.
  u256 n("0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141");
  signature twin = sig;
  twin.s = to_word(n - from_be(sig.s.data(), 32));
  twin.v ^= 1;
  CHECK(!recover_signer(digest, twin));
  signature zero{};
  CHECK(!recover_signer(digest, zero));
}

TEST_CASE("secret keys out of range are refused", "[chain]") {
  uint8_t zero[32] = {};
  CHECK(!secret_key::from_bytes(zero, 32, "key"));
  bytes n = testing::hex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
  CHECK(!secret_key::from_bytes(n.data(), 32, "key"));
  CHECK(!secret_key::from_bytes(n.data(), 31, "key"));
  CHECK(!(secret_key::generate().addr() == secret_key::generate().addr()));
}
