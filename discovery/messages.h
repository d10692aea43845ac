// The DHT's two wire messages as plain structs (schemas/gpugrid.fbs: DhtQuery, DhtReply;
// net/codec.cc converts them). Sizes are bounded by the constants here; the codec refuses a
// frame over them and dht refuses a message over them however it arrived.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "discovery/record.h"

namespace gpugrid::discovery {

constexpr size_t kMaxNodesPerReply = 32;
constexpr size_t kMaxRecordsPerMessage = 64;

enum class query_kind : uint8_t {
  ping = 0,             // are you there? (the reply is empty)
  find_node = 1,        // the closest contacts to target
  find_providers = 2,   // records filed under target that pass the filter, and the closest contacts
  add_provider = 3,     // store these records (all the sender's own, all under target)
};
const char* to_string(query_kind k);

struct dht_query {
  uint64_t request_id = 0;
  query_kind kind = query_kind::ping;
  dht_key target{};
  std::string sender_address;          // where the sender takes queries; "": client mode
  // find_providers filter
  std::string device_class;            // "": any
  double max_price = -1;               // < 0: any
  uint32_t limit = 0;                  // records wanted (capped at kMaxRecordsPerMessage)
  // add_provider
  std::vector<provider_record> records;
};

struct dht_reply {
  uint64_t request_id = 0;
  std::vector<contact> nodes;          // closest to the target that the replier knows
  std::vector<provider_record> records;
  uint32_t stored = 0;                 // add_provider: how many records were kept
};

status validate(const dht_query& q);
status validate(const dht_reply& r);

}  // namespace gpugrid::discovery
