// Kademlia k-buckets: the contacts a node keeps, by XOR distance from its own id.
//
// Bucket i holds contacts whose id shares exactly i leading bits with ours, at most k of them,
// least recently seen first; a full bucket keeps newcomers in a small replacement cache instead
// of dropping a live old contact (old contacts that still answer are the most likely to stay,
// and an attacker cannot flush a bucket with fresh ids). Only contacts with an address (nodes
// that take queries) are kept. A contact that fails `max_failures` requests in a row is removed
// and the newest replacement takes its place.
//
// Not thread-safe: owned by one dht.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "discovery/record.h"

namespace gpugrid::discovery {

class routing_table {
 public:
  routing_table(const node_id& self, size_t k, size_t max_failures);

  // `c` was heard from directly (a query from it, or its reply). Returns a contact the caller
  // should ping when c found its bucket full and the bucket's oldest has not been heard from
  // recently (`stale_ms`); if that ping fails, failed() evicts it and c moves in.
  std::optional<contact> seen(const contact& c, int64_t now_ms, int64_t stale_ms);
  // A request to `id` went unanswered or its connection is gone.
  void failed(const node_id& id);
  void remove(const node_id& id);

  // Up to n contacts closest to target, closest first.
  std::vector<contact> closest(const dht_key& target, size_t n) const;
  bool contains(const node_id& id) const;
  std::optional<contact> find(const node_id& id) const;
  size_t size() const { return size_; }
  // The highest bucket index holding a contact (-1 when empty).
  int deepest_bucket() const;
  size_t bucket_size(int i) const { return buckets_[i].entries.size(); }
  // A random id in bucket i (bits below the prefix from `random_bytes`).
  node_id random_id_in_bucket(int i, const std::array<uint8_t, 32>& random_bytes) const;
  int bucket_index(const node_id& id) const;
  const node_id& self() const { return self_; }

 private:
  struct entry {
    contact c;
    int64_t last_seen_ms = 0;
    size_t failures = 0;
  };
  struct bucket {
    std::vector<entry> entries;         // least recently seen first
    std::vector<contact> replacements;  // newest last, at most k
  };
  node_id self_;
  size_t k_, max_failures_;
  size_t size_ = 0;
  std::array<bucket, 256> buckets_;
};

}  // namespace gpugrid::discovery
