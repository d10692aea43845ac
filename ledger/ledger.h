// A node's ledger: an append-only, hash-chained file of receipts in its data dir.
//
// File format (ledger.log): records of [u32 little-endian length][entry bytes][32-byte
// BLAKE2b of the entry bytes]. Entry bytes = "GGLEDG1\0" + u64 index + 32-byte hash of the
// previous entry (zeros for the first) + the receipt's canonical bytes; an entry for a job paid
// on a chain is "GGLEDG2\0" + the same + the voucher that paid it (ledger/voucher_claim.h, 245
// bytes), so the claim is in the hash chain and survives a crash. Files may mix both kinds;
// ledgers written before vouchers existed read and verify as before. The chain head is the
// hash of the last entry: anchoring it anywhere (see README) commits to the whole history.
//
// Uniqueness: a (job id, provider) pair appears at most once. append() refuses a second one and
// verify_entries() rejects a file that has one (a job run with --redundancy K leaves K receipts
// with the same job id, one per provider).
//
// Across processes: every append takes an exclusive flock on the file, first reads any entries
// other processes appended since (so indexes and links continue their chain), then writes, so
// several processes may share one ledger file.
//
// Durability: append() returns once its record is written and fsynced. Appends from several
// threads at once are committed in groups (up to 64 records in one write and one fsync: on a
// disk where a sync takes a quarter of a millisecond, one sync per record would bound a busy
// node's rate); each caller still returns only after the sync that covers its record. A write
// or sync that fails (disk full, file-size limit, I/O error) cuts the file back to its last
// whole entry before append() returns the error to every caller of the group; if even that
// fails, every later append retries the cut first and fails until it succeeds. A write cut
// short by a crash (the file ends inside a record, or a record of the last group's bytes has a
// bad length, does not match its hash or does not parse: a crash can lose any of the pages of
// a write that was never synced) is cut off from that record on when the ledger is next opened
// or appended to, with a note; the cut bytes are kept in ledger.log.cut. A damaged record
// before the last group's bytes is never cut: open() fails. Readers (for_each_entry, verify)
// cut nothing: they stop at a torn tail (a short record, or one within the last group's bytes
// with a bad length or that does not parse) and flag a mismatched hash before the last record
// as altered.
//
// Memory: the ledger keeps its head, its size and an index of 8 bytes per entry (a keyed hash of
// each entry's job id and provider), never the entries themselves; readers stream the file.
// Thread-safety: ledger_file's methods lock internally; the free functions are pure.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "base/group_commit.h"
#include "base/status.h"
#include "ledger/receipt.h"
#include "ledger/voucher_claim.h"

namespace gpugrid::ledger {

struct entry {
  uint64_t index = 0;
  digest32 prev_hash{};
  digest32 hash{};          // as stored in the file
  receipt rec;
  std::optional<voucher_claim> claim;  // the voucher that paid the job (GGLEDG2 entries)
  std::string raw;          // the entry bytes as stored
};

struct head {
  digest32 hash{};          // zeros when empty
  uint64_t count = 0;
};

// Bytes of one record in ledger.log without / with a voucher.
size_t record_bytes();
size_t record_bytes_with_claim();

// A set of 64-bit keys in 8 bytes each (a sorted array plus a small hash set of recent keys).
class key_index {
 public:
  bool contains(uint64_t key) const;
  void insert(uint64_t key);
  size_t size() const { return sorted_.size() + recent_.size(); }

 private:
  std::vector<uint64_t> sorted_;
  std::unordered_set<uint64_t> recent_;
};

class ledger_file {
 public:
  // Opens (creating when absent) <dir>/ledger.log. Cuts a torn last record (described in
  // *recovered when not null). Fails when the file cannot be read or an earlier record is malformed.
  static expected<std::unique_ptr<ledger_file>> open(const std::string& dir, std::string* recovered = nullptr);

  // Appends a receipt (both signatures must verify) and fsyncs. Returns the new head. Fails with
  // invalid_input when the (job id, provider) pair is in the ledger already, with io when the
  // entry could not be written (the file is then as before the call).
  expected<head> append(const receipt& r);
  // The same for a caller that has just checked both signatures itself (it verified the
  // other side's and made or byte-compared its own): two Ed25519 verifications fewer per job.
  // `claim` (may be null): the voucher that paid the job, kept in the entry.
  expected<head> append_verified(const receipt& r, const voucher_claim* claim = nullptr);
  // Several append_verified calls of one caller at once (a thread that records for many jobs):
  // written together with whatever other threads append meanwhile, in groups of up to
  // kMaxGroup. One result per request, in order.
  struct append_request {
    const receipt* r;
    const voucher_claim* claim;
  };
  std::vector<expected<head>> append_verified_all(const std::vector<append_request>& list);
  // Whether an entry for this job from this provider was appended by this or another process
  // (as of this process's last read of the file; an append reads the file first).
  bool contains(const std::array<uint8_t, 16>& job_id, const key32& provider) const;
  head current_head() const;

  const std::string& path() const { return path_; }
  // The most appends one write and fsync carries.
  static constexpr size_t kMaxGroup = 64;
  ~ledger_file();
  ledger_file(const ledger_file&) = delete;
  ledger_file& operator=(const ledger_file&) = delete;

 private:
  ledger_file() = default;
  status catch_up_locked(std::string* note);
  // Writes and syncs a group of appends; one result per request. Takes mu_, and releases it
  // around the write and the sync.
  std::vector<expected<head>> write_group(const std::vector<append_request>& group);
  uint64_t key_of(const std::array<uint8_t, 16>& job_id, const key32& provider) const;

  mutable std::mutex mu_;
  std::string path_;
  int fd_ = -1;
  uint64_t end_ = 0;        // bytes of whole records known to this process
  head head_;
  key_index ids_;
  std::array<uint8_t, 16> hash_key_{};  // random per process: the index's keyed hash
  group_commit<append_request, expected<head>> commits_{kMaxGroup};
};

// Streams a ledger file without changing it: calls fn for every whole entry, oldest first.
// A torn tail (see above) stops the scan and sets *torn_tail; an earlier malformed record fails.
// A status returned by fn stops the scan and is returned.
status for_each_entry(const std::string& path, const std::function<status(const entry&)>& fn, bool* torn_tail);

// The same from byte `offset` of the file (a record's start), for a reader that already has
// what comes before: *end is set to the end of the last whole entry read (error messages count
// entries from `offset`). A malformed record at `offset` (it is not a record's start) fails, or
// is a torn tail when within the last group's bytes.
status for_each_entry_from(const std::string& path, uint64_t offset, const std::function<status(const entry&)>& fn,
                           bool* torn_tail, uint64_t* end);

// Reads every entry into memory (for the ledger commands and tests).
expected<std::vector<entry>> read_entries(const std::string& path, bool* torn_tail);

// Checks entries one by one, in order: every link, signature and (job id, provider) pair.
class chain_checker {
 public:
  // On failure the status names the bad entry.
  status add(const entry& e);
  uint64_t count() const { return count_; }

 private:
  uint64_t count_ = 0;
  digest32 prev_{};
  std::unordered_set<std::string> seen_;
};
status verify_entries(const std::vector<entry>& entries);

struct balance_row {
  key32 node{};
  int64_t earned_micros = 0;  // as provider
  int64_t paid_micros = 0;    // as client
  int64_t jobs = 0;
  int64_t disputes = 0;
  // Jobs paid with vouchers on a chain, and their prices in the chain's base unit (wei); the
  // rest of earned/paid is unsettled credits.
  int64_t settled_jobs = 0;
  int64_t settled_earned_micros = 0, settled_paid_micros = 0;   // the credit figures of those jobs
  unsigned __int128 earned_wei = 0, paid_wei = 0;
};
// Balances accumulated entry by entry.
class balance_sheet {
 public:
  void add(const entry& e);
  std::vector<balance_row> rows() const;

 private:
  std::map<key32, balance_row> rows_;
};
std::vector<balance_row> balances(const std::vector<entry>& entries);

}  // namespace gpugrid::ledger
