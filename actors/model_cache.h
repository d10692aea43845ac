// A provider's content-addressed model cache on disk, bounded in size, least recently used
// models evicted first, kept across restarts.
//
// Layout: <dir>/<64 hex digits of BLAKE2b-256>.onnx. A model is written to a temporary file,
// its hash checked, then renamed into place, so a crash never leaves a half model under a
// valid name. Recency is the file's modification time (touched on use).
// Thread-safety: all methods lock internally.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "ledger/receipt.h"

namespace gpugrid::grid {

class model_cache {
 public:
  // Opens (creating) the folder and indexes what is there; files that are not cache entries
  // are left alone.
  static expected<std::unique_ptr<model_cache>> open(const std::string& dir, int64_t max_bytes);

  bool contains(const ledger::digest32& hash);
  // The path of a cached model, marking it as just used; nullopt when absent.
  std::optional<std::string> path_of(const ledger::digest32& hash);
  // Stores model bytes under their hash; fails when the bytes do not hash to `hash` or the
  // model alone is larger than the cache. Evicts least recently used models to make room.
  status put(const ledger::digest32& hash, const std::string& bytes);

  // The folder (for keeping it out of messages sent to peers).
  const std::string& dir() const { return dir_; }
  int64_t size_bytes();
  size_t count();
  // Up to n cached models, the most recently used last.
  std::vector<ledger::digest32> recent(size_t n);

 private:
  struct item {
    ledger::digest32 hash;
    int64_t bytes;
    int64_t last_used;  // monotonically increasing use stamp
  };
  model_cache() = default;
  std::string file_for(const ledger::digest32& hash) const;
  void evict_for(int64_t incoming);

  std::mutex mu_;
  std::string dir_;
  int64_t max_bytes_ = 0;
  int64_t clock_ = 0;
  std::vector<item> items_;
};

}  // namespace gpugrid::grid
