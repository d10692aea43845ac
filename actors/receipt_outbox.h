// The client's outbox of countersigned receipts: each paid job's receipt is kept here from the
// moment the client records it until its provider answers that it recorded it (or refuses it
// for good), and is sent again on later jobs and later runs until then. A provider that crashed
// before its ledger append therefore still gets every receipt that the client's ledger holds.
//
// File: <dir>/receipts.pending, slots of ledger::receipt_size bytes, each a pending receipt's
// canonical bytes or zeros (a removed one). Every change rereads it under an exclusive flock on
// <dir>/receipts.lock, so runs that share a data dir see each other's changes. An add writes
// into the file (the receipt's old slot, or one after the last whole slot, so that an append a
// crash tore is overwritten); adds from several threads at once share one write. A removal
// zeroes its slot, or cuts the file when no receipt follows, without an fsync (a removal a
// crash loses only sends that receipt again).
// At most max_pending receipts are kept; past that the oldest are dropped (they remain in the
// client's ledger, as evidence for settlement), by rewriting the file (temporary file, fsync,
// rename), as is also done when most of its slots are removed ones.
//
// Durability. Opened with the client's key (what the client commands do), the outbox keeps a
// mark in <dir>/receipts.mark: a position in the ledger (<dir>/ledger.log) such that every
// receipt of this client before it is in the synced outbox, or was answered. Adds are then not
// synced one by one: the client adds a receipt before it appends it to its ledger, and a
// checkpoint (every checkpoint_every adds, and when the object is closed) reads the ledger's
// size, syncs the outbox and moves the mark there. Opening reconciles: the client's receipts in
// the ledger after the mark (those a crash may have cut from the outbox) are added again (a
// receipt its provider already has is answered as recorded, and removed), and the mark moves
// to the ledger's end. A receipt that a crash left in the outbox without its ledger entry is
// never sent (redeliver_receipts asks the ledger). Opened without a key (tests, tools), every
// add is synced before it returns.
// Thread-safety: one object may be used from several threads (calls serialize on the lock).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/client.h"
#include "base/group_commit.h"
#include "base/status.h"
#include "ledger/ledger.h"
#include "ledger/receipt.h"
#include "net/messages.h"

namespace gpugrid::grid {

class receipt_outbox {
 public:
  static constexpr size_t max_pending = 4096;
  static constexpr size_t checkpoint_every = 256;

  // Creates the dir when absent and opens its lock file. With `client`, reconciles with the
  // ledger in the dir as described above (creating the mark on first use).
  static expected<std::unique_ptr<receipt_outbox>> open(const std::string& dir, const key32* client = nullptr);
  ~receipt_outbox();
  receipt_outbox(const receipt_outbox&) = delete;
  receipt_outbox& operator=(const receipt_outbox&) = delete;

  // Adds a receipt (a second add of the same job and provider replaces it).
  status add(const ledger::receipt& r);
  // Adds several receipts with one write (a caller that records for many jobs at once).
  status add_all(const std::vector<const ledger::receipt*>& rs);
  // Removes the receipt of this job from this provider, when present.
  status remove(const std::array<uint8_t, 16>& job_id, const key32& provider);
  // Every pending receipt, oldest first.
  expected<std::vector<ledger::receipt>> pending() const;
  // Syncs the adds made so far and moves the mark (nothing to do without a key).
  status checkpoint();

 private:
  receipt_outbox() = default;
  // Writes `bytes` (whole receipts) as the whole file (temporary file, fsync, rename); under
  // the lock.
  status rewrite_locked(const std::string& bytes);
  // Adds receipts (a group of add() calls) with one write (and one fsync when `sync`); under mu_.
  status add_locked(const std::vector<const ledger::receipt*>& rs, bool sync);
  // Under mu_ (they take no flock: the mark only ever claims what a sync covered).
  status checkpoint_locked();
  status reconcile_locked();
  // The ledger's size, read under a shared flock on it (no append is half written then).
  expected<uint64_t> ledger_size() const;

  // The pending file, open (reopened when a rewrite replaced it); under the lock.
  int file_locked(bool create) const;

  std::string path_, lock_path_, mark_path_, ledger_path_;
  bool deferred_ = false;  // opened with a key: adds are synced at checkpoints
  key32 client_{};
  size_t unsynced_ = 0;    // adds since the last checkpoint; under mu_
  int lock_fd_ = -1;       // receipts.lock, open for the object's life
  mutable int fd_ = -1;    // receipts.pending, or -1
  mutable bool created_ = false;  // this object created it since the last checkpoint
  mutable std::mutex mu_;  // the files (with the flock for other processes)
  group_commit<const ledger::receipt*, status> adds_{64};
};

// What a provider answered (net::receipt_status as an int, the reply to receipt_atom).
net::receipt_status receipt_answer_of(const status& st);

// Sends receipts to their providers (in parallel; at most timeout each) and settles the outbox
// (may be null): removes those recorded or refused for good, keeps the rest for a later try.
// Returns how many were recorded.
int deliver_receipts(caf::actor_system& sys, const std::vector<std::pair<provider_actor, ledger::receipt>>& receipts,
                     receipt_outbox* outbox, std::chrono::milliseconds timeout,
                     const std::function<void(const std::string&)>& note);

// Sends the outbox's pending receipts to those of `providers` they are for (at most `limit`).
// With `ledger`, only receipts the ledger holds are sent (see Durability above).
int redeliver_receipts(caf::actor_system& sys, const std::vector<provider_handle>& providers, receipt_outbox& outbox,
                       size_t limit, std::chrono::milliseconds timeout, const std::function<void(const std::string&)>& note,
                       const ledger::ledger_file* ledger = nullptr);

}  // namespace gpugrid::grid
