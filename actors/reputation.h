// Reputation per provider key, kept in the client's data dir (reputation.tsv).
//
// Scores start at `initial`. A verified agreement earns little (2% of the way to 1); a signed
// wrong result (a dispute) takes 90% of the score away, so one caught lie costs more than
// dozens of honest jobs earn and drops any provider below `threshold`, after which it gets no
// more bid requests. A timeout halves the score and puts the provider in cool-down for
// cooldown_ms: later runs use it only when nobody else is there. Only verified results
// (redundant or spot-checked) count as agreements, and a provider with few of them is checked
// often (spot_check_rate). Thread-safety: methods lock internally; save() writes atomically.
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
  int64_t last_timeout_ms = 0;   // unix ms of its last timeout (0: never)
};

class reputation_book {
 public:
  static constexpr double initial = 0.5;
  static constexpr double threshold = 0.2;
  static constexpr int64_t cooldown_ms = 10 * 60 * 1000;
  // Verified agreements before a provider no longer counts as new.
  static constexpr int64_t established_after = 5;

  // Loads <dir>/reputation.tsv if present (a damaged file is an error naming the line).
  static expected<reputation_book> load(const std::string& dir);
  reputation_book() = default;
  reputation_book(const reputation_book& o) : path_(o.path_), entries_(o.entries_) {}

  double score(const std::string& node_id) const;
  bool trusted(const std::string& node_id) const { return score(node_id) >= threshold; }
  void record(const std::string& node_id, outcome o, int64_t now_ms = 0);  // now_ms 0: the clock
  reputation_entry entry(const std::string& node_id) const;
  // Timed out within cooldown_ms of now_ms.
  bool cooling(const std::string& node_id, int64_t now_ms) const;
  // Fewer than established_after verified agreements.
  bool is_new(const std::string& node_id) const;
  // Probability of re-running one of its jobs on the client's own engine: 1 for a provider
  // never verified, then 1/sqrt(1 + verified agreements), never below `floor` (and 0 when
  // floor is 0: spot checks off).
  double spot_check_rate(const std::string& node_id, double floor) const;
  status save() const;

 private:
  std::string path_;
  mutable std::mutex mu_;
  mutable std::mutex save_mu_;  // one save at a time: they share the temporary file
  std::map<std::string, reputation_entry> entries_;
};

}  // namespace gpugrid::grid
