#include "ledger/anchor_check.h"

#include <fmt/format.h>

namespace gpugrid::ledger {

const char* to_string(anchor_outcome o) {
  switch (o) {
    case anchor_outcome::unchecked: return "unchecked";
    case anchor_outcome::match: return "match";
    case anchor_outcome::mismatch: return "mismatch";
    case anchor_outcome::beyond_end: return "beyond_end";
  }
  return "unchecked";
}

anchor_checker::anchor_checker(std::vector<chain_anchor> anchors) {
  results_.reserve(anchors.size());
  for (auto& a : anchors) {
    by_sequence_.emplace(a.sequence, results_.size());
    results_.push_back(anchor_result{std::move(a), anchor_outcome::unchecked, {}});
  }
}

void anchor_checker::add(const entry& e) {
  ++entries_;
  auto [lo, hi] = by_sequence_.equal_range(e.index);
  if (lo == hi) return;
  const digest32 h = blake2b_256(e.raw);  // not the stored hash: the file may lie about it
  for (auto it = lo; it != hi; ++it) {
    anchor_result& r = results_[it->second];
    if (r.outcome != anchor_outcome::unchecked) continue;  // a duplicated index: the first entry counts
    r.local = h;
    r.outcome = h == r.anchor.head ? anchor_outcome::match : anchor_outcome::mismatch;
  }
}

anchor_report anchor_checker::finish() {
  anchor_report rep;
  rep.entries = entries_;
  for (size_t i = 0; i < results_.size(); ++i) {
    anchor_result& r = results_[i];
    if (r.outcome == anchor_outcome::unchecked) r.outcome = anchor_outcome::beyond_end;
    switch (r.outcome) {
      case anchor_outcome::match: ++rep.matched; break;
      case anchor_outcome::mismatch: ++rep.mismatched; break;
      default: ++rep.beyond_end; break;
    }
    if (r.outcome != anchor_outcome::match && rep.first_bad < 0) rep.first_bad = static_cast<long>(i);
  }
  rep.results = std::move(results_);
  results_.clear();
  by_sequence_.clear();
  return rep;
}

std::string anchor_report::failure() const {
  if (first_bad < 0) return {};
  const anchor_result& r = results[static_cast<size_t>(first_bad)];
  const chain_anchor& a = r.anchor;
  std::string where = fmt::format("the anchor in block {} (tx {})", a.block, a.tx);
  std::string seq = a.sequence == std::numeric_limits<uint64_t>::max() ? std::string("an impossible entry number")
                                                                       : fmt::format("entry {}", a.sequence);
  if (r.outcome == anchor_outcome::mismatch)
    return fmt::format("{} says entry {} hashes to {}, but the ledger's entry {} hashes to {}: the ledger was changed "
                       "after it was anchored ({} of {} anchors do not match)",
                       where, a.sequence, to_hex(a.head), a.sequence, to_hex(r.local), mismatched,
                       results.size());
  std::string end = entries == 0 ? std::string("the ledger is empty")
                                 : fmt::format("the ledger ends at entry {}", entries - 1);
  return fmt::format("{} is for {}, but {}: entries anchored on chain are missing (a lost or cut tail; {} of {} "
                     "anchors are beyond the end)",
                     where, seq, end, beyond_end, results.size());
}

anchor_report check_anchors(const std::vector<entry>& entries, std::vector<chain_anchor> anchors) {
  anchor_checker c(std::move(anchors));
  for (const auto& e : entries) c.add(e);
  return c.finish();
}

}  // namespace gpugrid::ledger
