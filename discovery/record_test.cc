#include "discovery/record.h"

#include <catch2/catch.hpp>
#include <sodium.h>

using namespace gpugrid::discovery;

namespace {

struct keypair {
  node_id pk{};
  std::array<uint8_t, 64> sk{};
  explicit keypair(uint8_t n) {
    std::array<uint8_t, 32> seed{};
    seed[0] = n;
    REQUIRE(sodium_init() >= 0);
    crypto_sign_seed_keypair(pk.data(), sk.data(), seed.data());
  }
};

provider_record sample(const keypair& kp) {
  provider_record r;
  r.key = providers_key();
  r.provider = kp.pk;
  r.addresses = {"ws://10.0.0.1:7447"};
  r.device_class = "cuda-sm90-80g";
  r.price = 0.002;
  r.issued_ms = 1'000'000;
  r.expires_ms = 1'000'000 + 600'000;
  sign_record(r, kp.sk);
  return r;
}

}  // namespace

TEST_CASE("provider records verify only as their provider signed them", "[discovery]") {
  keypair a(1), b(2);
  provider_record r = sample(a);
  CHECK(verify_record(r));
  CHECK(validate(r).is_ok());

  auto changed = r;
  changed.price = 0.0001;
  CHECK_FALSE(verify_record(changed));
  changed = r;
  changed.addresses[0] = "ws://evil:1";
  CHECK_FALSE(verify_record(changed));
  changed = r;
  changed.key = device_key("cpu");
  CHECK_FALSE(verify_record(changed));
  // Another node cannot claim the record as its own, nor sign for a.
  changed = r;
  changed.provider = b.pk;
  CHECK_FALSE(verify_record(changed));
  provider_record forged = r;
  sign_record(forged, b.sk);
  CHECK_FALSE(verify_record(forged));
}

TEST_CASE("provider records are bounded", "[discovery]") {
  keypair a(1);
  provider_record r = sample(a);
  auto bad = r;
  bad.addresses.clear();
  CHECK_FALSE(validate(bad).is_ok());
  bad = r;
  bad.addresses.assign(kMaxAddresses + 1, "ws://x:1");
  CHECK_FALSE(validate(bad).is_ok());
  bad = r;
  bad.addresses[0] = std::string(kMaxAddressBytes + 1, 'x');
  CHECK_FALSE(validate(bad).is_ok());
  bad = r;
  bad.device_class = std::string(kMaxDeviceClassBytes + 1, 'x');
  CHECK_FALSE(validate(bad).is_ok());
  bad = r;
  bad.price = -1;
  CHECK_FALSE(validate(bad).is_ok());
  bad = r;
  bad.price = std::nan("");
  CHECK_FALSE(validate(bad).is_ok());
  bad = r;
  bad.expires_ms = bad.issued_ms + kMaxRecordTtlMs + 1;
  CHECK(validate(bad).message().find("lifetime") != std::string::npos);
  bad = r;
  bad.expires_ms = bad.issued_ms - 1;
  CHECK_FALSE(validate(bad).is_ok());
}

TEST_CASE("keys for models, device classes and providers are distinct", "[discovery]") {
  std::array<uint8_t, 32> h{};
  CHECK(model_key(h) != providers_key());
  CHECK(device_key("cpu") != device_key("cuda-sm90-80g"));
  CHECK(device_key("cpu") == device_key("cpu"));
  h[0] = 1;
  CHECK(model_key(h) != model_key(std::array<uint8_t, 32>{}));
}

TEST_CASE("XOR distance orders ids", "[discovery]") {
  node_id t{}, a{}, b{};
  a[31] = 1;
  b[0] = 0x80;
  CHECK(closer(t, a, b));
  CHECK_FALSE(closer(t, b, a));
  CHECK_FALSE(closer(t, a, a));
  CHECK(common_prefix_bits(t, a) == 255);
  CHECK(common_prefix_bits(t, b) == 0);
  CHECK(common_prefix_bits(t, t) == 256);
  CHECK(distance(a, b)[0] == 0x80);
}
