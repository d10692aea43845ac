// Paying for jobs on a chain, as the grid's actors see it: two narrow interfaces that the
// command line fills with chain code (cli/chain_payment.h), so actors/ needs no chain library.
//
// Client: a bid that carries chain_terms is paid with a voucher sent WITH the job; the
// job_payer makes it (and persists its cumulative amount and nonce before it returns).
// Provider: payment_gate announces the terms in bids, checks a job's voucher before the job
// starts (one admission decision), and hands back the voucher that paid a job so the ledger
// entry carries it. Implementations are thread-safe; calls may block on the chain's endpoint.
//
// Generation sessions are paid per token with the same two interfaces: the client's job_payer
// signs each voucher with terms.price set to what it adds (the prompt's price with GenPrompt,
// then the tokens received, with GenPay); the provider's gate checks each with
// admit_session_voucher() and keeps the session's last one for its ledger entry
// (README "Generation on the grid", payment on a chain).
#pragma once

#include <mutex>
#include <optional>
#include <string>

#include "actors/messages.h"
#include "base/status.h"
#include "ledger/voucher_claim.h"

namespace gpugrid::grid {

class job_payer {
 public:
  virtual ~job_payer() = default;
  // A voucher that pays terms.price more than the last one on this wallet's channel with
  // terms.payee. Fails (one line) when this wallet cannot pay there: another chain or contract
  // than configured, no open channel with that provider, a deposit that does not cover it.
  virtual expected<ledger::voucher_claim> pay(const key32& provider, const ledger::chain_terms& terms) = 0;

  // Vouchers on a channel are cumulative, so a provider takes them only in the order they were
  // made (a later one refuses an earlier one as stale). Whoever pays and then sends (jobs and
  // generation sessions, on several threads) holds this across both.
  std::mutex& send_order() { return send_order_; }

 private:
  std::mutex send_order_;
};

class payment_gate {
 public:
  virtual ~payment_gate() = default;
  // The terms a bid at `price` (in the chain's token) announces.
  virtual ledger::chain_terms terms(double price) = 0;
  // Admission: OK when the job's voucher pays for it (then it is the channel's latest claim,
  // persisted before this returns). Otherwise the one-line reason the client is shown.
  virtual status admit(const execute_request& req) = 0;
  // The voucher that paid a job admitted in this process, for its ledger entry. For a
  // generation session: its last voucher, with `price` the sum of what all its vouchers added.
  virtual std::optional<ledger::voucher_claim> claim_for(const job_id& job) = 0;
  // A generation session's voucher: OK when it is good (the rules of admit()) and adds at least
  // `min_add` wei on its channel; then it is the channel's latest claim, persisted before this
  // returns, and the result is the wei it added. Otherwise the one-line reason.
  virtual expected<ledger::word32> admit_session_voucher(const job_id& session, const ledger::voucher_claim& v,
                                                         const ledger::word32& min_add) {
    (void)session, (void)v, (void)min_add;
    return status(error_kind::invalid_input, "this provider takes no vouchers for generation sessions");
  }
};

}  // namespace gpugrid::grid
