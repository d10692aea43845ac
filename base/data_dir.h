// A lock on a node's data dir (identity, ledger, model cache, reputation): one `offer` per
// data dir.
//
// The lock is an exclusive flock on <dir>/lock, held for the life of the data_dir_lock object
// and released by the kernel when the process dies (a crash leaves no stale lock). `offer` and
// `identity new` take it: a second one on the same data dir fails at once with a one-line error
// naming the holder's pid — unless that holder is dying (a killed process whose threads are still
// being torn down keeps its files a moment longer), which is waited for, up to 5 s. `run`s do not take it: they may share a data dir with each other and
// with an `offer`, because every file they write is safe to share — ledger appends lock the
// ledger and continue its chain (ledger/ledger.h), the receipt outbox locks its own file, and the
// identity and reputation files are replaced atomically.
// Thread-safety: the object is movable, not copyable; acquire() may be called from any thread.
#pragma once

#include <string>

#include "base/status.h"

namespace gpugrid {

class data_dir_lock {
 public:
  // Creates the dir when absent and takes the lock (waiting only for a dying holder). Fails with invalid_input
  // (exit 2) when another process holds it; `what` names this use ("gpugrid offer") for the
  // message a later process prints.
  static expected<data_dir_lock> acquire(const std::string& dir, const std::string& what);

  data_dir_lock(data_dir_lock&& o) noexcept : fd_(o.fd_), held_(o.held_) { o.fd_ = -1; o.held_ = false; }
  data_dir_lock& operator=(data_dir_lock&& o) noexcept;
  data_dir_lock(const data_dir_lock&) = delete;
  data_dir_lock& operator=(const data_dir_lock&) = delete;
  ~data_dir_lock();

 private:
  data_dir_lock() = default;
  int fd_ = -1;
  bool held_ = false;  // the lock is taken (only then does it own the holder text)
};

}  // namespace gpugrid
