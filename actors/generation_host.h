// The provider side of generation sessions (issue 14, "the grid").
//
// A client opens a session (GenOpen: the model folder's manifest and the answer's size); the
// host bids per 1000 prompt and per 1000 generated tokens with its measured tokens/s, or
// declines. The client sends the folder's missing files (uploads tagged with the session id),
// then GenPrompt; the host loads the folder (once per manifest, kept while memory allows),
// reserves the answer's KV-cache bytes against its memory budget and generates on a worker
// thread (at most `slots` at once; later prompts wait their turn in arrival order), streaming
// GenTokens frames; the last one carries the finish reason, the signed
// digest of the stream and a receipt for the tokens (ledger::receipt_kind::generation).
// A session holds its KV-cache bytes from its bid (when the folder is loaded) or its first
// prompt until it closes. A Cancel with the session id stops the worker at its next step and
// closes the session; a session idle for idle_timeout_ms is evicted and its memory released,
// and idle sessions are evicted (least recently used first) when a new one needs the memory;
// a connection that goes cancels its sessions. Paid on a chain (options.payment), a prompt's
// voucher is checked by its worker before any work, and GenPay vouchers by one payment thread
// in arrival order while their answer runs; a GenPay for an answer that has ended (the rest of
// what it delivered) is checked on the caller's thread, after that session's queued ones
// (waiting at most 2 s for them), so that it is filed before the session's receipt arrives. GenPrompt with score_only answers with the teacher-forced log-probs of
// the given answer tokens (a client's spot check of another provider).
//
// Threads: on_message, put_file, on_disconnect and tick may be called from any thread (they
// lock); replies are made from the caller's thread or a worker, through the reply function the
// session was opened with (it must be thread-safe and must not block for long). Destruction
// stops every worker and waits for it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/generation_client.h"
#include "actors/messages.h"
#include "actors/model_folder.h"
#include "actors/payment.h"
#include "base/status.h"
#include "llm/generation.h"
#include "net/identity.h"
#include "net/messages.h"

namespace gpugrid::grid {

// A generation model as the grid drives it: implemented over llm::generator for the product
// (actors/generation_engine.cc), by fakes in tests and by the faulty test double.
class gen_engine {
 public:
  virtual ~gen_engine() = default;
  virtual expected<llm::completion_stats> complete(const llm::completion_request& request, const llm::token_sink& sink,
                                                   const llm::cancel_check& cancelled) = 0;
  // Teacher-forced: the log-softmax of each answer token after prompt + the answer before it.
  virtual expected<std::vector<float>> score(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer) = 0;
  virtual int64_t kv_bytes_per_token() const = 0;
  virtual int64_t context_length() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual double tokens_per_s() const = 0;     // decode rate of the last answer (0: none yet)
};
using gen_engine_loader = std::function<expected<std::shared_ptr<gen_engine>>(const std::string& dir)>;

struct generation_host_options {
  double price_prompt = 0;          // credits per 1000 prompt tokens
  double price_generated = 0;       // credits per 1000 generated tokens
  // Loaded folders (their file bytes) plus the KV-cache bytes of open sessions (each session
  // reserves kv_bytes_per_token * (prompt + max new tokens)); 0: no limit.
  int64_t max_memory_bytes = 0;
  int64_t idle_timeout_ms = 120000;  // a session unused this long is evicted
  int slots = 1;                     // answers generated at once; more prompts wait their turn
  size_t max_sessions = 256;
  int64_t bid_valid_ms = 30000;
  // Tokens go out as they come, except that a model faster than one token per frame_interval_us
  // has its tokens batched (up to max_tokens_per_frame) into one frame per interval: a frame
  // costs two Ed25519 signatures, more than a tiny model's decode step.
  int64_t frame_interval_us = 2000;
  int max_tokens_per_frame = 64;
  std::function<int64_t()> clock;    // unix ms; empty: the system clock
  std::function<void(const std::string&)> log;
  // Paid on a chain: bids announce the gate's terms (wei per 1000 prompt and generated tokens),
  // a prompt must come with a voucher that pays its prompt tokens, and the answer runs at most
  // credit_tokens generated tokens ahead of what the session's vouchers (GenPay) have paid.
  // When the client falls further behind, the worker sends what it has and waits up to
  // payment_wait_ms for a voucher, then stops with a JobError (not_awarded, "payment: ...").
  // Null: unsettled credits.
  std::shared_ptr<payment_gate> payment;
  int64_t credit_tokens = 32;
  int64_t payment_wait_ms = 5000;
};

struct generation_host_counters {
  std::atomic<int64_t> bids{0}, declines{0}, answers{0}, tokens{0}, cancels{0}, evictions{0}, files{0};
  std::atomic<int64_t> vouchers{0}, payment_refusals{0}, payment_cutoffs{0};
};

class generation_host {
 public:
  // Sends one message to the session's client; false when it could not be queued (the
  // session's work is then cancelled).
  using reply_fn = std::function<bool(const net::message&)>;

  generation_host(const net::identity& id, std::shared_ptr<folder_store> store, gen_engine_loader loader,
                  generation_host_options options);
  ~generation_host();
  generation_host(const generation_host&) = delete;
  generation_host& operator=(const generation_host&) = delete;

  // Takes GenOpen, GenPrompt, GenPay and a Cancel naming one of its sessions. Returns false for any
  // other message (it is someone else's). `conn` names the client's connection.
  bool on_message(const key32& client, uint64_t conn, const net::message& m, const reply_fn& reply);
  // A file upload tagged with `session` is wanted when it is one of that session's files.
  bool wants_file(const net::bytes16& session, const ledger::digest32& hash);
  status put_file(const ledger::digest32& hash, const std::string& bytes);
  void on_disconnect(uint64_t conn);
  // Evicts sessions idle past the timeout and reaps finished workers.
  void tick();
  // Cancels all work and refuses new sessions (the provider is shutting down).
  void stop();

  size_t sessions() const;
  int64_t reserved_bytes() const;   // KV reservations plus loaded folders
  size_t running() const;
  const generation_host_counters& counters() const { return counters_; }
  const key32& key() const { return key_; }

  struct session;

 private:
  int64_t now() const;
  void on_open(const key32& client, uint64_t conn, const net::gen_open& m, const reply_fn& reply);
  void on_prompt(const key32& client, const net::gen_prompt& m, const reply_fn& reply);
  void on_pay(const key32& client, const net::gen_pay& m, const reply_fn& reply);
  // Checks the vouchers of GenPay frames in arrival order, off the caller's thread (a check
  // may read the chain and writes the claim to disk).
  void payment_loop();
  struct pending_pay;
  void settle_pay(const pending_pay& next, const std::shared_ptr<session>& s);
  // The prompt's payment, on the worker: OK, or the reason it is refused.
  status admit_prompt(session& s, const net::gen_prompt& p);
  void run(std::shared_ptr<session> s, net::gen_prompt p, reply_fn reply);
  void finish_run(const std::shared_ptr<session>& s);
  // Starts waiting prompts, oldest first, while a slot is free; under mu_.
  void start_waiting_locked();
  expected<std::shared_ptr<gen_engine>> engine_for(const ledger::digest32& manifest, const std::vector<net::gen_file>& files,
                                                   int64_t folder_bytes);
  // Frees room for `bytes` (evicting idle sessions, then unused engines); under mu_.
  bool make_room_locked(int64_t bytes);
  void close_locked(const net::bytes16& id);

  net::identity id_;
  key32 key_{};
  std::array<uint8_t, 64> secret_{};
  std::shared_ptr<folder_store> store_;
  gen_engine_loader loader_;
  generation_host_options options_;
  generation_host_counters counters_;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::condition_variable paid_cv_;     // a session's paid amount rose (under mu_)
  std::map<net::bytes16, std::shared_ptr<session>> sessions_;
  struct loaded {
    std::shared_ptr<gen_engine> engine;
    int64_t bytes = 0;
    int64_t last_used = 0;
    int users = 0;
  };
  std::map<ledger::digest32, loaded> engines_;
  std::mutex load_mu_;                 // one folder loads at a time
  int64_t reserved_ = 0;               // KV reservations of open sessions
  int64_t engine_bytes_ = 0;
  size_t running_ = 0;
  std::vector<std::thread> workers_;
  // Prompts that came while every slot was busy, in arrival order (their sessions are taken
  // and keep their memory); one whose session is cancelled or closed meanwhile never runs.
  struct waiting_prompt {
    std::shared_ptr<session> s;
    net::gen_prompt p;
    reply_fn reply;
  };
  std::deque<waiting_prompt> waiting_;
  struct pending_pay {
    key32 client{};
    net::gen_pay pay;
    reply_fn reply;
  };
  std::deque<pending_pay> pays_;        // under mu_
  net::bytes16 paying_{};               // the session whose voucher the payment thread checks
  // Sessions closed lately and their clients: the rest of an answer may be paid after its
  // session closed, by its own client only (at most 4096 remembered).
  std::map<net::bytes16, key32> closed_;
  std::deque<net::bytes16> closed_order_;
  std::condition_variable pays_cv_;
  std::thread payment_thread_;          // runs payment_loop() when options.payment is set
  std::vector<std::thread::id> finished_;
  bool stopping_ = false;
};

// A host in this process as a client's gen_peer (the embedded grid, tests): messages go to the
// host on the caller's thread, replies straight into the inbox. `conn` names the link for the
// host's on_disconnect. Setting *cut makes the link behave as a connection that was lost: sends
// fail and replies are dropped (the caller also tells the inbox, see generation_inbox::peer_down).
gen_peer in_process_peer(std::shared_ptr<generation_host> host, std::shared_ptr<generation_inbox> inbox, const key32& client,
                         uint64_t conn, std::shared_ptr<std::atomic<bool>> cut = nullptr);

}  // namespace gpugrid::grid
