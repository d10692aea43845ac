// The client side of one job as a state machine: bidding, award, execution with failover,
// tie-breaks, redundancy, spot checks, reputation, disputes and receipts. It takes events (the
// job starts, a bid arrives, the bid window closes, a result or an error comes back, an attempt
// times out, a provider disconnects, the local engine answers, a receipt is acknowledged) and
// returns the actions to perform (ask for bids, send the job to a provider, cancel an attempt,
// run the local engine, update reputation, record a dispute, pay, note, finish). It does no I/O,
// has no clock and knows no actors: the driver (actors/client.cc) performs the actions, keeps
// the timers and feeds the events in, so every transition can be tested on its own.
//
// Phases: bidding -> executing -> (tie_break) -> (local_check) -> paying -> done.
//
// Redundancy: with --redundancy K the job needs K results. When fewer than
// flow_config::min_results providers bid acceptably, the job fails before anything runs (exit 3,
// the error lists every decline); when attempts fail so that fewer results than min_results
// remain, the job fails after paying the providers whose results agree among themselves (they
// did the work asked of them). min_results defaults to K: no silent downgrade. Between
// min_results and K results, the job goes on and a note says the result is less cross-checked.
//
// Late answers: a result or error for an attempt that already timed out, failed or was
// cancelled is ignored, as is a bid that arrives after the window closed.
//
// Payment hook: every send_job action carries the bid it was made from (flow_action::bid), so a
// driver can attach a payment (a voucher for that bid's price) at send time.
//
// Thread-safety: none; one driver thread owns an instance.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "actors/auction.h"
#include "actors/messages.h"
#include "actors/reputation.h"
#include "actors/verification.h"
#include "base/status.h"
#include "net/messages.h"

namespace gpugrid::grid {

// What the flow knows about a provider it may ask (the driver snapshots it from the reputation
// book at start).
struct flow_candidate {
  key32 key{};
  std::string url;                 // "" for an in-process provider
  bool trusted = true;             // reputation at or above the threshold
  bool cooling = false;            // timed out lately: asked only when nobody else is there
  double reputation = reputation_book::initial;
  bool is_new = true;
  double spot_check_rate = 0;      // probability of a local re-run when it runs the job alone
};

struct flow_config {
  int redundancy = 1;              // K
  int min_results = 0;             // fewest results accepted; 0: K (see above)
  double max_price = -1;           // < 0: no limit
  int64_t bid_window_ms = 250;
  bool has_local = false;          // the client's own engine can run the job (spot checks, tie-breaks)
  bool has_model_bytes = true;     // the driver can send the model to a provider that lacks it
  uint64_t seed = 0;               // ties between equal bids and spot-check draws; 0: random
};

// The job as the flow sees it (no tensors: digests only).
struct flow_job {
  job_id job{};
  key32 client{};
  digest32 model_hash{};
  int64_t model_bytes = 0;
  digest32 input_digest{};
};

enum class flow_phase { idle, bidding, executing, tie_break, local_check, paying, done };
const char* to_string(flow_phase p);

enum class action_kind {
  request_bids,       // ask `provider` for a bid (the driver's bid_request for this job)
  close_bids_after,   // start the bid window timer: on_bid_window_closed() after delay_ms
  send_job,           // run the job on `provider` as attempt `attempt`, at bid.price; send the model when send_model
  cancel,             // attempt `attempt` on `provider` is abandoned: tell the provider to stop
  run_local,          // run the job on the client's own engine; answer with on_local_result()
  record_reputation,  // reputation of `provider` gets `rep`
  keep_quote,         // remember `bid` from `provider` as a standing quote (the model is cached there now)
  drop_quote,         // forget any standing quote of `provider` for this model
  dispute,            // record `result` (a signed wrong result of `provider`) as a dispute
  pay,                // countersign and record `receipt` (checked here), send it to `provider`; answer with on_receipt_answer()
  note,               // tell the user `text`
  finish,             // the job is over: see job_flow::result()
};

struct flow_action {
  action_kind kind = action_kind::note;
  size_t provider = 0;             // index into the candidates given to start()
  size_t attempt = 0;              // send_job, cancel, pay
  bid_reply bid;                   // send_job, keep_quote: the bid the action comes from
  bool send_model = false;         // send_job
  int64_t delay_ms = 0;            // close_bids_after
  outcome rep = outcome::agreed;   // record_reputation
  execute_result_ptr result;     // dispute
  ledger::receipt receipt;         // pay: the provider-signed receipt, fields and signature checked
  std::string text;                // note
};

// What the flow concluded (filled in as it goes; complete at finish).
struct flow_provider_used {
  size_t provider = 0;
  double price = 0;
  bool paid = false;
  bool agreed = true;
};

class job_flow {
 public:
  job_flow(flow_job job, flow_config config);

  // Starts the job. `standing` are quotes the driver holds (provider index, bid): when there are
  // at least K of them, no bidding round is held and a failure is not held against the
  // provider (the quote may be stale).
  std::vector<flow_action> start(std::vector<flow_candidate> candidates,
                                 std::vector<std::pair<size_t, bid_reply>> standing = {});
  std::vector<flow_action> on_bid(size_t provider, const bid_reply& bid);
  std::vector<flow_action> on_bid_failed(size_t provider, const std::string& why);
  std::vector<flow_action> on_bid_window_closed();
  std::vector<flow_action> on_result(size_t attempt, const execute_result_ptr& result);
  // The attempt failed without a result: the provider declined or erred (timed_out false), or
  // its time ran out (timed_out true).
  std::vector<flow_action> on_exec_failed(size_t attempt, const std::string& why, bool timed_out);
  // The provider went away: its bid (while bidding) and its open attempts fail.
  std::vector<flow_action> on_provider_gone(size_t provider);
  // The driver could not pay for an attempt it was asked to send (no payer for a bid with chain
  // terms, or the payer refused): the attempt is closed unsent, nothing is held against the
  // provider, and the next bid is tried.
  std::vector<flow_action> on_unpaid(size_t attempt, const std::string& why);
  std::vector<flow_action> on_local_result(const expected<std::vector<tensor>>& outputs);
  std::vector<flow_action> on_receipt_answer(size_t attempt, net::receipt_status answer);
  // The driver could not perform an action (the ledger cannot be written): the job fails.
  std::vector<flow_action> on_fatal(const status& st);

  flow_phase phase() const { return phase_; }
  bool finished() const { return phase_ == flow_phase::done; }
  bool used_quotes() const { return used_quotes_; }
  // At finish: OK, or the failure (no_provider, verification, invalid_input, ...).
  const status& result() const { return final_; }
  // At a successful finish: the accepted outputs, the providers involved (dissenters first),
  // how many results agreed, and the method ("single", "redundant", "redundant+local",
  // "spot-check").
  const std::vector<tensor>& outputs() const { return outputs_; }
  const std::vector<flow_provider_used>& providers_used() const { return used_; }
  int agreeing() const { return agreeing_; }
  const std::string& method() const { return method_; }
  double compute_ms() const { return compute_ms_; }
  // The bids that were made, by provider index (for the driver's send-time hooks).
  const bid_reply* bid_of(size_t provider) const;

 private:
  struct attempt_rec {
    size_t provider = 0;
    bid_reply bid;
    bool open = true;
    execute_result_ptr result;   // set when it succeeded
  };
  struct result_rec {
    size_t attempt = SIZE_MAX;     // SIZE_MAX: the local engine
    std::vector<tensor> outputs;
  };

  void award(std::vector<flow_action>& out);
  bool launch_next(std::vector<flow_action>& out);  // one more attempt from the ranked bids
  void refill(std::vector<flow_action>& out);
  void after_attempt(std::vector<flow_action>& out);
  void verify(std::vector<flow_action>& out);
  void conclude(std::vector<flow_action>& out, std::vector<size_t> agreeing, std::vector<size_t> dissenting, bool decided);
  void fail(std::vector<flow_action>& out, status st);
  void finish_ok(std::vector<flow_action>& out);
  void note(std::vector<flow_action>& out, std::string text);
  void cancel_open(std::vector<flow_action>& out);
  size_t open_attempts() const;
  size_t min_results() const;
  std::string who(size_t provider) const;

  flow_job job_;
  flow_config config_;
  std::mt19937_64 rng_;
  flow_phase phase_ = flow_phase::idle;
  std::vector<flow_candidate> candidates_;
  std::vector<size_t> asked_;
  std::vector<bool> answered_;                       // by provider index, while bidding
  std::vector<std::pair<size_t, bid_reply>> bids_;   // accepted bids
  std::vector<std::string> declines_;
  std::vector<size_t> ranked_;                       // provider indices, best first
  size_t next_bid_ = 0;
  std::vector<bool> used_provider_;
  std::vector<attempt_rec> attempts_;
  std::vector<std::string> failures_;                // why attempts failed, for the final error
  std::vector<result_rec> results_;
  bool used_quotes_ = false;
  // spot_check: one result checked here; check_majority: an agreeing redundant set whose
  // members are all unverified, checked here (colluding new identities agree with each other);
  // tie_break: the client's own engine settles a disagreement before any other provider does.
  enum class local_purpose { none, spot_check, check_majority, tie_break } local_ = local_purpose::none;
  verdict majority_;  // check_majority: the verdict being checked
  status pending_failure_ = status::ok();            // reported after the paying phase
  size_t receipts_open_ = 0;
  std::vector<size_t> paid_attempts_;

  status final_ = status::ok();
  std::vector<tensor> outputs_;
  std::vector<flow_provider_used> used_;
  int agreeing_ = 0;
  std::string method_ = "single";
  double compute_ms_ = 0;
};

}  // namespace gpugrid::grid
