#include "discovery/routing_table.h"

#include <algorithm>

namespace gpugrid::discovery {

routing_table::routing_table(const node_id& self, size_t k, size_t max_failures)
    : self_(self), k_(k), max_failures_(max_failures == 0 ? 1 : max_failures) {}

int routing_table::bucket_index(const node_id& id) const {
  const int cpl = common_prefix_bits(self_, id);
  return cpl >= 256 ? -1 : cpl;
}

std::optional<contact> routing_table::seen(const contact& c, int64_t now_ms, int64_t stale_ms) {
  if (c.address.empty()) return std::nullopt;
  const int i = bucket_index(c.id);
  if (i < 0) return std::nullopt;
  bucket& b = buckets_[i];
  for (size_t j = 0; j < b.entries.size(); ++j) {
    if (b.entries[j].c.id != c.id) continue;
    entry e = b.entries[j];
    e.c.address = c.address;
    e.last_seen_ms = now_ms;
    e.failures = 0;
    b.entries.erase(b.entries.begin() + static_cast<ptrdiff_t>(j));
    b.entries.push_back(std::move(e));
    return std::nullopt;
  }
  if (b.entries.size() < k_) {
    b.entries.push_back(entry{c, now_ms, 0});
    ++size_;
    auto r = std::find_if(b.replacements.begin(), b.replacements.end(), [&](const contact& x) { return x.id == c.id; });
    if (r != b.replacements.end()) b.replacements.erase(r);
    return std::nullopt;
  }
  // Full: a failing oldest goes now; otherwise c waits as a replacement.
  if (b.entries.front().failures > 0) {
    b.entries.erase(b.entries.begin());
    b.entries.push_back(entry{c, now_ms, 0});
    return std::nullopt;
  }
  auto r = std::find_if(b.replacements.begin(), b.replacements.end(), [&](const contact& x) { return x.id == c.id; });
  if (r != b.replacements.end()) b.replacements.erase(r);
  b.replacements.push_back(c);
  if (b.replacements.size() > k_) b.replacements.erase(b.replacements.begin());
  if (now_ms - b.entries.front().last_seen_ms >= stale_ms) return b.entries.front().c;
  return std::nullopt;
}

void routing_table::failed(const node_id& id) {
  const int i = bucket_index(id);
  if (i < 0) return;
  bucket& b = buckets_[i];
  for (size_t j = 0; j < b.entries.size(); ++j) {
    if (b.entries[j].c.id != id) continue;
    if (++b.entries[j].failures >= max_failures_) {
      b.entries.erase(b.entries.begin() + static_cast<ptrdiff_t>(j));
      --size_;
      if (!b.replacements.empty()) {
        b.entries.push_back(entry{b.replacements.back(), 0, 0});
        b.replacements.pop_back();
        ++size_;
      }
    }
    return;
  }
  auto r = std::find_if(b.replacements.begin(), b.replacements.end(), [&](const contact& x) { return x.id == id; });
  if (r != b.replacements.end()) b.replacements.erase(r);
}

void routing_table::remove(const node_id& id) {
  const int i = bucket_index(id);
  if (i < 0) return;
  bucket& b = buckets_[i];
  auto e = std::find_if(b.entries.begin(), b.entries.end(), [&](const entry& x) { return x.c.id == id; });
  if (e != b.entries.end()) {
    b.entries.erase(e);
    --size_;
    if (!b.replacements.empty()) {
      b.entries.push_back(entry{b.replacements.back(), 0, 0});
      b.replacements.pop_back();
      ++size_;
    }
  }
}

std::vector<contact> routing_table::closest(const dht_key& target, size_t n) const {
  std::vector<const entry*> all;
  all.reserve(size_);
  for (const auto& b : buckets_)
    for (const auto& e : b.entries) all.push_back(&e);
  const size_t m = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<ptrdiff_t>(m), all.end(),
                    [&](const entry* a, const entry* b) { return closer(target, a->c.id, b->c.id); });
  std::vector<contact> out;
  out.reserve(m);
  for (size_t i = 0; i < m; ++i) out.push_back(all[i]->c);
  return out;
}

bool routing_table::contains(const node_id& id) const { return find(id).has_value(); }

std::optional<contact> routing_table::find(const node_id& id) const {
  const int i = bucket_index(id);
  if (i < 0) return std::nullopt;
  for (const auto& e : buckets_[i].entries)
    if (e.c.id == id) return e.c;
  return std::nullopt;
}

int routing_table::deepest_bucket() const {
  for (int i = 255; i >= 0; --i)
    if (!buckets_[i].entries.empty()) return i;
  return -1;
}

node_id routing_table::random_id_in_bucket(int i, const std::array<uint8_t, 32>& rnd) const {
  // Share bits [0, i) with self, differ at bit i, random below.
  node_id id = rnd;
  for (int bit = 0; bit <= i && bit < 256; ++bit) {
    const int byte = bit / 8, mask = 0x80 >> (bit % 8);
    const bool s = self_[byte] & mask;
    const bool want = bit < i ? s : !s;
    if (want) id[byte] |= mask; else id[byte] &= ~mask;
  }
  return id;
}

}  // namespace gpugrid::discovery
