// Chunked, content-addressed transfers (models) below the frame limit.
//
// Sender: plan_transfer() picks a chunk size that fits the peer's frame limit, ModelPut announces
// the transfer (hash, total size, chunk size) and chunk_at() cuts ModelChunk i out of the
// payload. Receiver: a reassembler collects the chunks of several transfers at once, in any
// order, and hands back the payload only when every chunk is there and the BLAKE2b-256 of the
// bytes equals the announced hash. A transfer that lies — a size over the cap, a chunk of the
// wrong size or index, a chunk for a transfer never announced, a duplicate, a final hash that
// does not match — is dropped with a status naming the problem, its memory freed. A transfer
// that receives nothing for stall_timeout is dropped by expire().
//
// Memory: a transfer's buffer is allocated on its first chunk, so announcing a transfer costs
// nothing until data arrives; max_total_bytes bounds all announced transfers together. The
// completed payload is that buffer (no copy).
//
// Not thread-safe: one reassembler per connection (or guard it with a mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "net/messages.h"

namespace gpugrid::net {

constexpr uint32_t kDefaultChunkBytes = uint32_t{4} << 20;
// Envelope + body + ModelChunk fields around the data, with room to spare.
constexpr uint32_t kChunkFrameOverhead = 4096;

// Chunk size for a peer that accepts frames of up to max_frame_bytes (0: unknown, use the
// default): min(preferred, max_frame_bytes - overhead), at least 1 KiB.
uint32_t choose_chunk_bytes(uint64_t max_frame_bytes, uint32_t preferred = kDefaultChunkBytes);

uint32_t chunk_count(uint64_t total_bytes, uint32_t chunk_bytes);

model_put plan_transfer(const digest32& hash, uint64_t total_bytes, uint32_t chunk_bytes,
                        std::optional<job_id> job = std::nullopt);
// Chunk `index` of `payload` (copies that slice). index must be < chunk_count.
model_chunk chunk_at(const model_put& plan, const std::string& payload, uint32_t index);

struct reassembler_options {
  uint64_t max_transfer_bytes = uint64_t{1} << 30;   // per transfer
  uint64_t max_total_bytes = uint64_t{2} << 30;      // all transfers at once
  size_t max_transfers = 8;
  uint32_t max_chunk_bytes = uint32_t{64} << 20;
  std::chrono::milliseconds stall_timeout{30000};
};

struct completed_transfer {
  digest32 hash{};
  std::shared_ptr<const std::string> bytes;
};

class reassembler {
 public:
  using clock = std::chrono::steady_clock;
  explicit reassembler(reassembler_options o = {}) : o_(o) {}

  // Announces a transfer. Re-announcing one in progress with the same plan is a no-op; with a
  // different plan it restarts it.
  status begin(const model_put& put, clock::time_point now = clock::now());
  // Adds a chunk. Returns the payload when this chunk completed the transfer (hash checked),
  // nullopt while chunks are missing, or the error (the transfer is then dropped).
  expected<std::optional<completed_transfer>> add(const model_chunk& chunk, clock::time_point now = clock::now());
  // Drops transfers idle for longer than stall_timeout; returns their hashes.
  std::vector<digest32> expire(clock::time_point now = clock::now());
  void drop(const digest32& hash);

  bool in_progress(const digest32& hash) const { return transfers_.count(hash) != 0; }
  size_t transfers() const { return transfers_.size(); }
  uint64_t committed_bytes() const { return committed_; }
  // Fraction received of one transfer (0 when unknown).
  double progress(const digest32& hash) const;

 private:
  struct transfer {
    model_put plan;
    uint32_t count = 0;
    uint32_t received = 0;
    std::vector<bool> have;
    std::shared_ptr<std::string> data;   // allocated on the first chunk, handed out when complete
    clock::time_point last;
  };
  reassembler_options o_;
  std::map<digest32, transfer> transfers_;
  uint64_t committed_ = 0;          // announced bytes of all transfers
};

}  // namespace gpugrid::net
