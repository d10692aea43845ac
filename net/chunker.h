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
// Memory: only what has arrived is held, never the announced size: chunks in order are
// appended to the payload (its capacity grows with it), chunks ahead of the first gap wait in a
// side table until the gap fills. max_total_bytes bounds the announced transfers of one
// reassembler; a byte_budget shared by every reassembler of a node bounds the bytes they hold
// together (a chunk that would overrun it fails its transfer). The completed payload is the
// buffer itself (no copy); its bytes leave the budget when it is handed out.
//
// Not thread-safe: one reassembler per connection (or guard it with a mutex).
#pragma once

#include <atomic>
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

// Smallest chunk of a transfer with more than one chunk (bounds the chunk count).
constexpr uint32_t kMinChunkBytes = 1024;

// Bytes held across many owners (a node's uploads), against one limit. Thread-safe.
class byte_budget {
 public:
  explicit byte_budget(uint64_t limit) : limit_(limit) {}
  // Takes n bytes if they fit under the limit.
  bool take(uint64_t n);
  void give(uint64_t n);
  uint64_t used() const { return used_.load(); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

struct reassembler_options {
  uint64_t max_transfer_bytes = uint64_t{1} << 30;   // per transfer
  uint64_t max_total_bytes = uint64_t{2} << 30;      // all transfers at once
  size_t max_transfers = 8;
  uint32_t max_chunk_bytes = uint32_t{64} << 20;
  std::chrono::milliseconds stall_timeout{30000};
  std::shared_ptr<byte_budget> budget;               // shared by a node's reassemblers; null: none
};

struct completed_transfer {
  digest32 hash{};
  std::shared_ptr<const std::string> bytes;
};

class reassembler {
 public:
  using clock = std::chrono::steady_clock;
  explicit reassembler(reassembler_options o = {}) : o_(std::move(o)) {}
  ~reassembler();
  reassembler(const reassembler&) = delete;
  reassembler& operator=(const reassembler&) = delete;

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
  // Bytes received and held now (all transfers).
  uint64_t held_bytes() const { return held_; }
  // Fraction received of one transfer (0 when unknown).
  double progress(const digest32& hash) const;

 private:
  struct transfer {
    model_put plan;
    uint32_t count = 0;
    uint32_t received = 0;
    uint32_t next = 0;                    // chunks [0, next) are in `data`
    std::shared_ptr<std::string> data;    // the contiguous prefix, handed out when complete
    std::map<uint32_t, std::string> early;  // chunks past the first gap
    uint64_t held = 0;                    // bytes in data and early
    clock::time_point last;
  };
  reassembler_options o_;
  std::map<digest32, transfer> transfers_;
  uint64_t committed_ = 0;          // announced bytes of all transfers
  uint64_t held_ = 0;               // received bytes of all transfers
};

}  // namespace gpugrid::net
