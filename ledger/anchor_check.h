// Checking a ledger against the heads it anchored on a chain (README "Anchoring the ledger").
//
// An anchor says: the ledger's entry number `sequence` (0-based, the entry's own index) hashes
// to `head` (BLAKE2b-256 of its entry bytes, the value the next entry links to). Since every
// entry links to the one before it, a matching anchor proves that no entry up to `sequence`
// was changed, removed, inserted or reordered since it was anchored, whatever the file says
// about itself: a rewritten ledger whose links were all recomputed still fails here.
//
// anchor_checker is fed the ledger's entries in file order (as for_each_entry streams them) and
// keeps only the anchors, never the entries. It hashes each entry's bytes itself rather than
// trusting the hash stored in the file. Pure logic, no network; not thread-safe (one checker
// per scan).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "ledger/ledger.h"

namespace gpugrid::ledger {

// One Anchored event as read from the chain, in chain order.
struct chain_anchor {
  std::string block;          // block number, decimal (for messages)
  std::string tx;             // transaction hash, 0x-hex (for messages)
  // The anchored entry's index; anchors whose sequence does not fit 64 bits carry the largest
  // value (they can only be beyond the ledger's end).
  uint64_t sequence = std::numeric_limits<uint64_t>::max();
  digest32 head{};
};

enum class anchor_outcome {
  unchecked,    // the scan has not reached the entry (yet)
  match,        // the entry exists and hashes to the anchored head
  mismatch,     // the entry exists and hashes to something else: the ledger was changed
  beyond_end,   // the ledger has no entry with that index: its tail was lost or cut
};
const char* to_string(anchor_outcome o);  // "unchecked", "match", "mismatch", "beyond_end"

struct anchor_result {
  chain_anchor anchor;
  anchor_outcome outcome = anchor_outcome::unchecked;
  digest32 local{};           // mismatch: what the ledger's entry hashes to
};

struct anchor_report {
  std::vector<anchor_result> results;  // in the order the anchors were given (chain order)
  uint64_t entries = 0;                // entries seen
  size_t matched = 0, mismatched = 0, beyond_end = 0;
  // The first anchor, in chain order, that failed (index into results); -1 when none did.
  long first_bad = -1;
  bool ok() const { return first_bad < 0; }
  // One line naming the first bad anchor (block, tx, sequence) and what is wrong with the
  // ledger there; empty when ok().
  std::string failure() const;
};

class anchor_checker {
 public:
  explicit anchor_checker(std::vector<chain_anchor> anchors);
  // The next entry of the ledger, in file order.
  void add(const entry& e);
  // After the last entry: every anchor whose entry never came is beyond the end.
  anchor_report finish();

 private:
  std::vector<anchor_result> results_;
  std::multimap<uint64_t, size_t> by_sequence_;
  uint64_t entries_ = 0;
};

// Checks `entries` against `anchors` in one go (tests and small ledgers).
anchor_report check_anchors(const std::vector<entry>& entries, std::vector<chain_anchor> anchors);

}  // namespace gpugrid::ledger
