// Reputation per provider key, kept in the client's data dir (reputation.tsv).
//
// Scores start at `initial` and move toward 1 on agreement and toward 0 on disagreement or
// timeout (exponential moving average, so old behaviour fades). Providers below `threshold`
// get no more bid requests. Thread-safety: methods lock internally; save() writes atomically.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "base/status.h"

namespace gpugrid::grid {

enum class outcome { agreed, disagreed, timed_out, failed };

struct reputation_entry {
  double score = 0.5;
  int64_t agreed = 0, disagreed = 0, timed_out = 0, failed = 0;
};

class reputation_book {
 public:
  static constexpr double initial = 0.5;
  static constexpr double threshold = 0.2;

  // Loads <dir>/reputation.tsv if present (a damaged file is an error naming the line).
  static expected<reputation_book> load(const std::string& dir);
  reputation_book() = default;
  reputation_book(const reputation_book& o) : path_(o.path_), entries_(o.entries_) {}

  double score(const std::string& node_id) const;
  bool trusted(const std::string& node_id) const { return score(node_id) >= threshold; }
  void record(const std::string& node_id, outcome o);
  reputation_entry entry(const std::string& node_id) const;
  status save() const;

 private:
  std::string path_;
  mutable std::mutex mu_;
  std::map<std::string, reputation_entry> entries_;
};

}  // namespace gpugrid::grid
