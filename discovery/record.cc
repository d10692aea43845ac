#include "discovery/record.h"

#include <cmath>
#include <cstring>

#include <sodium.h>

namespace gpugrid::discovery {
namespace {

template <typename T>
void put_le(std::string& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, arm64)
  out.append(reinterpret_cast<const char*>(b), sizeof(T));
}

void put_bytes(std::string& out, std::string_view s) {
  put_le<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

dht_key named_key(std::string_view domain, const void* data, size_t n) {
  dht_key k{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, k.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(domain.data()), domain.size());
  crypto_generichash_update(&st, static_cast<const unsigned char*>(data), n);
  crypto_generichash_final(&st, k.data(), k.size());
  return k;
}

}  // namespace

std::string record_statement(const provider_record& r) {
  std::string s("GGPRV1\0\0", 8);
  s.reserve(8 + 64 + 24 + 8 + r.device_class.size() + 64);
  s.append(reinterpret_cast<const char*>(r.key.data()), r.key.size());
  s.append(reinterpret_cast<const char*>(r.provider.data()), r.provider.size());
  put_le<int64_t>(s, r.issued_ms);
  put_le<int64_t>(s, r.expires_ms);
  put_le<double>(s, r.price);
  put_bytes(s, r.device_class);
  put_le<uint32_t>(s, static_cast<uint32_t>(r.addresses.size()));
  for (const auto& a : r.addresses) put_bytes(s, a);
  return s;
}

void sign_record(provider_record& r, const std::array<uint8_t, 64>& secret_key) {
  const std::string st = record_statement(r);
  crypto_sign_detached(r.sig.data(), nullptr, reinterpret_cast<const unsigned char*>(st.data()), st.size(),
                       secret_key.data());
}

bool verify_record(const provider_record& r) {
  const std::string st = record_statement(r);
  return crypto_sign_verify_detached(r.sig.data(), reinterpret_cast<const unsigned char*>(st.data()), st.size(),
                                     r.provider.data()) == 0;
}

status validate(const contact& c) {
  if (c.address.size() > kMaxAddressBytes)
    return invalid_input("contact address of {} bytes (at most {})", c.address.size(), kMaxAddressBytes);
  return status::ok();
}

status validate(const provider_record& r) {
  if (r.addresses.empty()) return invalid_input("provider record without an address");
  if (r.addresses.size() > kMaxAddresses)
    return invalid_input("provider record with {} addresses (at most {})", r.addresses.size(), kMaxAddresses);
  for (const auto& a : r.addresses) {
    if (a.empty() || a.size() > kMaxAddressBytes)
      return invalid_input("provider record address of {} bytes (1 to {})", a.size(), kMaxAddressBytes);
  }
  if (r.device_class.size() > kMaxDeviceClassBytes)
    return invalid_input("provider record device class of {} bytes (at most {})", r.device_class.size(),
                         kMaxDeviceClassBytes);
  if (!std::isfinite(r.price) || r.price < 0) return invalid_input("provider record price {} is not a price", r.price);
  if (r.issued_ms <= 0 || r.expires_ms < r.issued_ms || r.expires_ms - r.issued_ms > kMaxRecordTtlMs)
    return invalid_input("provider record lifetime {}..{} ms (at most {} ms)", r.issued_ms, r.expires_ms,
                         kMaxRecordTtlMs);
  return status::ok();
}

dht_key model_key(const std::array<uint8_t, 32>& model_hash) {
  return named_key("gpugrid-dht-model", model_hash.data(), model_hash.size());
}
dht_key device_key(std::string_view device_class) {
  return named_key("gpugrid-dht-device", device_class.data(), device_class.size());
}
dht_key providers_key() { return named_key("gpugrid-dht-providers", nullptr, 0); }

dht_key distance(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b) {
  dht_key d{};
  for (size_t i = 0; i < d.size(); ++i) d[i] = a[i] ^ b[i];
  return d;
}

bool closer(const std::array<uint8_t, 32>& t, const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b) {
  for (size_t i = 0; i < t.size(); ++i) {
    const uint8_t da = a[i] ^ t[i], db = b[i] ^ t[i];
    if (da != db) return da < db;
  }
  return false;
}

int common_prefix_bits(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    const uint8_t x = a[i] ^ b[i];
    if (x) return static_cast<int>(i * 8) + __builtin_clz(static_cast<unsigned>(x)) - 24;
  }
  return 256;
}

std::string short_hex(const std::array<uint8_t, 32>& v, size_t bytes) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes && i < v.size(); ++i) {
    s += hex[v[i] >> 4];
    s += hex[v[i] & 15];
  }
  return s;
}

}  // namespace gpugrid::discovery
