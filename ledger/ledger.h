// A node's ledger: an append-only, hash-chained file of receipts in its data dir.
//
// File format (ledger.log): records of [u32 little-endian length][entry bytes][32-byte
// BLAKE2b of the entry bytes]. Entry bytes = "GGLEDG1\0" + u64 index + 32-byte hash of the
// previous entry (zeros for the first) + the receipt's canonical bytes. The chain head is the
// hash of the last entry: anchoring it anywhere (see README) commits to the whole history.
//
// Durability: append() writes one record and fsyncs before it returns. A record cut short by a
// crash (the file ends inside it) is detected on open and cut off; nothing earlier is lost.
// A complete record whose hash does not match is damage, never cut silently: verify() names it.
// Thread-safety: one ledger object per file per process; its methods lock internally.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "ledger/receipt.h"

namespace gpugrid::ledger {

struct entry {
  uint64_t index = 0;
  digest32 prev_hash{};
  digest32 hash{};          // as stored in the file
  receipt rec;
  std::string raw;          // the entry bytes as stored
};

struct head {
  digest32 hash{};          // zeros when empty
  uint64_t count = 0;
};

class ledger_file {
 public:
  // Opens (creating when absent) <dir>/ledger.log. Cuts a torn last record (reported in
  // *recovered when not null). Fails when the file cannot be read or a record is malformed.
  static expected<std::unique_ptr<ledger_file>> open(const std::string& dir, std::string* recovered = nullptr);

  // Appends a receipt (both signatures must verify) and fsyncs. Returns the new head.
  expected<head> append(const receipt& r);
  // The same for a caller that has just checked both signatures itself (it verified the
  // other side's and made or byte-compared its own): two Ed25519 verifications fewer per job.
  expected<head> append_verified(const receipt& r);
  head current_head() const;
  // Every entry as read at open plus those appended since, oldest first.
  std::vector<entry> entries() const;

  const std::string& path() const { return path_; }
  ~ledger_file();

 private:
  ledger_file() = default;
  mutable std::mutex mu_;
  std::string path_;
  std::vector<entry> entries_;
  int fd_ = -1;  // the file, opened for appending on the first append and kept open
};

// Reads a ledger file without changing it (no torn-record repair): for `ledger show|verify`.
expected<std::vector<entry>> read_entries(const std::string& path, bool* torn_tail);

// Checks every link and signature. On failure the status names the first bad entry.
status verify_entries(const std::vector<entry>& entries);

struct balance_row {
  key32 node{};
  int64_t earned_micros = 0;  // as provider
  int64_t paid_micros = 0;    // as client
  int64_t jobs = 0;
  int64_t disputes = 0;
};
std::vector<balance_row> balances(const std::vector<entry>& entries);

}  // namespace gpugrid::ledger
