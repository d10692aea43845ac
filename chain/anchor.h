// Anchoring a ledger head on an EVM chain: the payment-channel contract's anchor(head, sequence)
// logs Anchored(sender, head, sequence) for about 23,500 gas and stores nothing. `head` is the
// hash of a ledger entry and `sequence` that entry's index (the last entry when anchored), so
// one anchor commits to the whole history before it (ledger/anchor_check.h checks a ledger
// against them).
//
// Three parts:
//  - the local record DATA_DIR/anchors.tsv (append-only; see below);
//  - send_anchor() / anchors_of(): one anchor transaction, and the anchors a wallet logged;
//  - anchorer: a background thread for `offer` that anchors every N entries and/or every
//    interval, retries a failed anchor later with a growing pause, and never blocks the caller.
// Failures are statuses with one-line messages (see rpc_client.h, tx_sender.h for the kinds).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "chain/rpc_client.h"
#include "chain/secp256k1_key.h"
#include "chain/tx_sender.h"

namespace gpugrid::chain {

// "90s", "10m", "2h", "1d" or a whole number of seconds; above 0 and at most a year.
expected<std::chrono::seconds> parse_duration(const std::string& text, const std::string& what);

// ---- the local record ----
// DATA_DIR/anchors.tsv, one line per event, tab-separated:
//   time_ms  state  sequence  head  tx  block  note
// state "sent": the endpoint took the transaction (written before its receipt is awaited, so
// a transaction whose receipt never comes is not lost); "mined": its receipt arrived (block
// set); "failed": the anchor did not happen (tx "-" when nothing was sent; note says why).
// Each line is one write under an exclusive flock, then fsync. A line cut short by a crash
// has no newline: the next append starts a fresh line, and readers skip lines that do not
// parse (counted in *skipped). Any thread; several processes may append to one file.
struct anchor_record {
  int64_t time_ms = 0;
  std::string state;          // sent | mined | failed
  uint64_t sequence = 0;
  hash32 head{};
  std::optional<hash32> tx;
  std::optional<u256> block;
  std::string note;
};

std::string anchors_path(const std::string& data_dir);
status append_anchor_record(const std::string& path, const anchor_record& r);
// A missing file is no records.
expected<std::vector<anchor_record>> read_anchor_records(const std::string& path, size_t* skipped = nullptr);
// The number of entries covered by the newest mined anchor (its sequence + 1); 0 when none.
uint64_t anchored_count(const std::vector<anchor_record>& records);

// ---- on chain ----
struct onchain_anchor {
  u256 block;
  hash32 tx{};
  u256 sequence;
  hash32 head{};
};

// Sends anchor(head, sequence) to `contract` through `sender` and waits for its receipt,
// recording "sent", then "mined" or "failed" in `record_path`. `log` (may be null) gets the
// "sent transaction" line; `sent` (may be empty) is called with the hash once it is recorded.
// Returns the mined record. A record that cannot be written is an io error naming the file,
// even when the anchor itself landed.
expected<anchor_record> send_anchor(tx_sender& sender, const address& contract, uint64_t sequence, const hash32& head,
                                    const std::string& record_path, std::FILE* log = nullptr,
                                    const std::function<void(const hash32&)>& sent = {});

// The Anchored events `who` logged through `contract`, oldest first, from `from_block` to
// the latest block, asked for in windows of `window` blocks (public endpoints limit the range
// of one eth_getLogs). A log of the wrong shape fails with invalid_input naming its tx.
expected<std::vector<onchain_anchor>> anchors_of(rpc_client& rpc, const address& contract, const address& who,
                                                 const u256& from_block = 0, const u256& window = 10000);

// ---- when to anchor ----
struct anchor_schedule {
  uint64_t every = 0;                   // entries; 0: not by count
  std::chrono::seconds interval{0};     // 0: not by time
  bool enabled() const { return every > 0 || interval.count() > 0; }
};

// The anchorer's decisions as a plain state machine (tested without a chain or threads).
class anchor_policy {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds first_retry{2};
  static constexpr std::chrono::seconds max_retry{600};

  anchor_policy(anchor_schedule s, uint64_t anchored, clock::time_point now);
  // Whether a ledger of `count` entries should be anchored now: there are entries beyond the
  // last anchor, no retry pause is running, and `every` entries have come since the last
  // anchor or `interval` has passed since it (or since the start).
  bool due(uint64_t count, clock::time_point now) const;
  void anchored(uint64_t count, clock::time_point now);
  // The pause before the next try doubles from first_retry up to max_retry.
  void failed(clock::time_point now);
  uint64_t anchored_count() const { return anchored_; }
  clock::time_point retry_at() const { return retry_at_; }

 private:
  anchor_schedule s_;
  uint64_t anchored_;
  clock::time_point last_;
  clock::time_point retry_at_;
  std::chrono::seconds pause_{first_retry};
};

// ---- the background anchorer ----
struct anchor_target {
  std::string rpc;                      // the endpoint's URL
  rpc_options rpc_opts;
  address contract;
  std::optional<u256> chain_id;         // none: whatever the endpoint serves
  gas_policy gas;
  confirm_policy confirm;
  // How to reach `rpc`; unset: make_beast_transport (tests swap in a fake chain).
  std::function<expected<std::unique_ptr<http_transport>>(const std::string& url)> transport;
};

struct anchor_event {
  std::string kind;                     // "anchor_sent", "anchored" or "anchor_failed"
  uint64_t sequence = 0;
  hash32 head{};
  std::optional<hash32> tx;
  std::optional<u256> block;
  std::string error;                    // anchor_failed
};

struct anchor_head {
  uint64_t count = 0;                   // entries in the ledger
  hash32 hash{};                        // of the last one
};

struct anchorer_options {
  anchor_target target;
  anchor_schedule schedule;
  std::string record_path;              // anchors.tsv
  // The ledger's head as this process knows it; called from the anchorer's thread, so it must be
  // thread-safe (ledger_file::current_head is). Entries another process appended are seen once
  // this process appends again (ledger.h): a later anchor covers them.
  std::function<anchor_head()> head;
  std::function<void(const anchor_event&)> on_event;  // called from the anchorer's thread
  std::chrono::milliseconds poll{500};  // how often head() is looked at
};

// Owns one thread with its own rpc_client and tx_sender. Nothing reaches the chain until an
// anchor is due, so an endpoint that is down at start costs nothing but a failed anchor later.
class anchorer {
 public:
  // Reads the record (what was anchored before a restart) and starts the thread.
  static expected<std::unique_ptr<anchorer>> start(anchorer_options o, const secret_key& key);
  // Stops the thread; when entries came after the last anchor, it first makes one more try
  // (bounded by the endpoint's timeouts and at most 30 s of waiting for the receipt).
  void stop();
  ~anchorer();
  anchorer(const anchorer&) = delete;
  anchorer& operator=(const anchorer&) = delete;

 private:
  anchorer(anchorer_options o, const secret_key& key, uint64_t anchored);
  void run();
  void attempt(const anchor_head& h);

  anchorer_options o_;
  secret_key key_;
  anchor_policy policy_;
  std::unique_ptr<rpc_client> rpc_;
  std::unique_ptr<tx_sender> sender_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace gpugrid::chain
