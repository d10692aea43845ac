#include "net/chunker.h"

#include <algorithm>
#include <cstring>

#include "net/hash.h"

namespace gpugrid::net {

uint32_t choose_chunk_bytes(uint64_t max_frame_bytes, uint32_t preferred) {
  uint64_t c = preferred == 0 ? kDefaultChunkBytes : preferred;
  if (max_frame_bytes > 0) c = std::min<uint64_t>(c, max_frame_bytes > 2 * kChunkFrameOverhead ? max_frame_bytes - kChunkFrameOverhead : 1024);
  return static_cast<uint32_t>(std::max<uint64_t>(c, 1024));
}

uint32_t chunk_count(uint64_t total_bytes, uint32_t chunk_bytes) {
  if (chunk_bytes == 0) return 0;
  return static_cast<uint32_t>((total_bytes + chunk_bytes - 1) / chunk_bytes);
}

model_put plan_transfer(const digest32& hash, uint64_t total_bytes, uint32_t chunk_bytes, std::optional<job_id> job) {
  model_put p;
  p.model_hash = hash;
  p.total_bytes = total_bytes;
  p.chunk_bytes = chunk_bytes;
  p.job = job;
  return p;
}

model_chunk chunk_at(const model_put& plan, const std::string& payload, uint32_t index) {
  model_chunk c;
  c.model_hash = plan.model_hash;
  c.index = index;
  uint64_t begin = uint64_t{index} * plan.chunk_bytes;
  if (begin < payload.size()) c.data = payload.substr(begin, plan.chunk_bytes);
  return c;
}

bool byte_budget::take(uint64_t n) {
  uint64_t cur = used_.load();
  do {
    if (n > limit_ || cur > limit_ - n) return false;
  } while (!used_.compare_exchange_weak(cur, cur + n));
  return true;
}

void byte_budget::give(uint64_t n) { used_.fetch_sub(std::min(n, used_.load())); }

reassembler::~reassembler() {
  if (o_.budget) o_.budget->give(held_);
}

status reassembler::begin(const model_put& put, clock::time_point now) {
  std::string h = to_hex(put.model_hash).substr(0, 16);
  if (put.chunk_bytes == 0 || put.chunk_bytes > o_.max_chunk_bytes)
    return invalid_input("model {}: chunk size {} is outside 1..{}", h, put.chunk_bytes, o_.max_chunk_bytes);
  if (put.total_bytes > o_.max_transfer_bytes)
    return invalid_input("model {}: {} bytes exceed the limit of {}", h, put.total_bytes, o_.max_transfer_bytes);
  if (put.chunk_bytes < kMinChunkBytes && put.total_bytes > put.chunk_bytes)
    return invalid_input("model {}: chunk size {} is below {} for a transfer of {} bytes", h, put.chunk_bytes,
                         kMinChunkBytes, put.total_bytes);
  auto it = transfers_.find(put.model_hash);
  if (it != transfers_.end()) {
    if (it->second.plan.total_bytes == put.total_bytes && it->second.plan.chunk_bytes == put.chunk_bytes) {
      it->second.last = now;
      return status::ok();
    }
    drop(put.model_hash);
  }
  if (transfers_.size() >= o_.max_transfers)
    return invalid_input("model {}: {} transfers already in progress", h, transfers_.size());
  if (committed_ + put.total_bytes > o_.max_total_bytes)
    return invalid_input("model {}: {} more bytes would exceed the limit of {} in flight", h, put.total_bytes,
                         o_.max_total_bytes);
  transfer t;
  t.plan = put;
  t.count = chunk_count(put.total_bytes, put.chunk_bytes);
  t.data = std::make_shared<std::string>();
  t.last = now;
  committed_ += put.total_bytes;
  transfers_.emplace(put.model_hash, std::move(t));
  return status::ok();
}

expected<std::optional<completed_transfer>> reassembler::add(const model_chunk& chunk, clock::time_point now) {
  std::string h = to_hex(chunk.model_hash).substr(0, 16);
  auto it = transfers_.find(chunk.model_hash);
  if (it == transfers_.end()) return invalid_input("model {}: chunk {} for a transfer that was not announced", h, chunk.index);
  transfer& t = it->second;
  auto reject = [&](status s) {
    drop(chunk.model_hash);
    return s;
  };
  if (chunk.index >= t.count) return reject(invalid_input("model {}: chunk index {} is past the last chunk {}", h, chunk.index, t.count - 1));
  uint64_t begin = uint64_t{chunk.index} * t.plan.chunk_bytes;
  uint64_t expect = std::min<uint64_t>(t.plan.chunk_bytes, t.plan.total_bytes - begin);
  if (chunk.data.size() != expect)
    return reject(invalid_input("model {}: chunk {} has {} bytes, expected {}", h, chunk.index, chunk.data.size(), expect));
  if (chunk.index < t.next || t.early.count(chunk.index))
    return reject(invalid_input("model {}: chunk {} sent twice", h, chunk.index));
  if (o_.budget && !o_.budget->take(chunk.data.size()))
    return reject(invalid_input("model {}: this node holds {} bytes of uploads already (limit {})", h,
                                o_.budget->used(), o_.budget->limit()));
  t.held += chunk.data.size();
  held_ += chunk.data.size();
  try {
    if (chunk.index == t.next) {
      t.data->append(chunk.data);
      ++t.next;
      for (auto e = t.early.begin(); e != t.early.end() && e->first == t.next; e = t.early.erase(e)) {
        t.data->append(e->second);
        ++t.next;
      }
    } else {
      t.early.emplace(chunk.index, chunk.data);
    }
  } catch (const std::bad_alloc&) {
    return reject(io_error("model {}: out of memory at chunk {}", h, chunk.index));
  }
  ++t.received;
  t.last = now;
  if (t.received < t.count) return std::optional<completed_transfer>();

  digest32 got = blake2b_256(t.data->data(), t.data->size());
  if (got != t.plan.model_hash)
    return reject(invalid_input("model {}: the bytes received hash to {}, not the announced hash", h, to_hex(got).substr(0, 16)));
  completed_transfer done;
  done.hash = t.plan.model_hash;
  done.bytes = std::move(t.data);
  drop(chunk.model_hash);
  return std::optional<completed_transfer>(std::move(done));
}

std::vector<digest32> reassembler::expire(clock::time_point now) {
  std::vector<digest32> gone;
  for (auto& [hash, t] : transfers_)
    if (now - t.last > o_.stall_timeout) gone.push_back(hash);
  for (const auto& h : gone) drop(h);
  return gone;
}

void reassembler::drop(const digest32& hash) {
  auto it = transfers_.find(hash);
  if (it == transfers_.end()) return;
  committed_ -= it->second.plan.total_bytes;
  held_ -= it->second.held;
  if (o_.budget) o_.budget->give(it->second.held);
  transfers_.erase(it);
}

double reassembler::progress(const digest32& hash) const {
  auto it = transfers_.find(hash);
  if (it == transfers_.end() || it->second.count == 0) return 0;
  return static_cast<double>(it->second.received) / it->second.count;
}

}  // namespace gpugrid::net
