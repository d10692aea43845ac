// Discovery's vocabulary: node ids and keys in the DHT's 256-bit XOR space, contacts, and the
// signed provider records that providers announce and clients look up.
//
// A node id is the node's Ed25519 public key (net/identity.h). A key is where records are
// filed: BLAKE2b-256 of a domain-separated name, so that a model hash, a device class and the
// general "providers" key never collide (model_key, device_key, providers_key).
//
// A provider record says "node P serves at these addresses, with this device class and price,
// until expires_ms", filed under one key and signed by P (Ed25519 over record_statement), so no
// node can announce for another or change what another announced. Bounds (kMax*) are checked by
// validate() wherever a record comes in: from the wire, from a store request, from a reply.
//
// Everything here is a plain value and thread-compatible; functions never throw.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace gpugrid::discovery {

using node_id = std::array<uint8_t, 32>;
using dht_key = std::array<uint8_t, 32>;
using signature = std::array<uint8_t, 64>;

constexpr size_t kMaxAddresses = 4;          // per record and per contact
constexpr size_t kMaxAddressBytes = 256;
constexpr size_t kMaxDeviceClassBytes = 64;
// A record may not claim to live longer than this (a node cannot pin a slot forever).
constexpr int64_t kMaxRecordTtlMs = 60 * 60 * 1000;

// Where a node is reached. An empty address: a node in client mode (it queries but is not
// queried, and is never added to routing tables).
struct contact {
  node_id id{};
  std::string address;
  bool operator==(const contact& o) const { return id == o.id && address == o.address; }
};

struct provider_record {
  dht_key key{};
  node_id provider{};
  std::vector<std::string> addresses;
  std::string device_class;      // e.g. "cuda-sm90-80g", "cpu"
  double price = 0;              // credits per GFLOP
  int64_t issued_ms = 0;         // Unix ms; a later record from the same provider replaces an earlier
  int64_t expires_ms = 0;
  signature sig{};
};

// What the signature covers: "GGPRV1\0\0" || key || provider || issued || expires || price
// (little-endian) || device class and each address, each as a u32 length and its bytes.
std::string record_statement(const provider_record& r);

// Signs with a libsodium Ed25519 secret key (seed || public key); r.provider must be its public half.
void sign_record(provider_record& r, const std::array<uint8_t, 64>& secret_key);
bool verify_record(const provider_record& r);

// Sizes, counts, finiteness, price >= 0 and issued <= expires <= issued + kMaxRecordTtlMs.
// Does not check the signature or the clock.
status validate(const provider_record& r);
status validate(const contact& c);

// What a client searches by.
dht_key model_key(const std::array<uint8_t, 32>& model_hash);
dht_key device_key(std::string_view device_class);
dht_key providers_key();

// XOR distance and its order.
dht_key distance(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b);
// True when a is closer to target than b (ties broken by the id bytes, so the order is total).
bool closer(const std::array<uint8_t, 32>& target, const std::array<uint8_t, 32>& a,
            const std::array<uint8_t, 32>& b);
// Number of leading bits a and b share (256 when equal).
int common_prefix_bits(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b);

// A hex prefix for logs.
std::string short_hex(const std::array<uint8_t, 32>& v, size_t bytes = 6);

}  // namespace gpugrid::discovery
