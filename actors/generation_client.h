// The client side of generation sessions: a completion back end (llm::completion_backend) that
// generates on the grid (issue 14, "the grid" and "verification for generation").
//
// complete(): opens a session with every trusted provider (GenOpen; one session id each),
// collects their bids (per 1000 prompt and generated tokens, with tokens/s), ranks them by
// the answer's cost and then speed, uploads the folder's files to the chosen provider when
// it lacks them, sends the prompt and streams the tokens to the sink. Every frame is checked:
// the next index in order, ids inside the vocabulary, finite log-probs, no more tokens than
// asked, a stream digest that matches the tokens; a provider that breaks any of these is cut
// off and disputed. (The provider's signatures over the digest and on its receipt are checked
// when they are used: as evidence in a dispute, and before a receipt is countersigned.) When the provider goes away or sends nothing for
// stall_timeout_ms, the client moves to the next bid and sends the prompt plus the tokens so
// far (completion_request::generated_ids), so the sink sees every index once. Every frame
// carries the provider's receipt for the tokens so far; each provider is paid, once, for the
// tokens it delivered (ledger::receipt_kind::generation). A bid with chain terms is paid with
// vouchers (options.payer): the prompt before any work, then the tokens as they arrive and the
// rest when its share is accepted; never a token that did not arrive.
//
// Verification: with redundancy 2 and greedy sampling a second provider generates the same
// answer and the token streams are compared; otherwise a share of answers (adaptive, as for
// jobs: reputation_book::spot_check_rate) is scored in one teacher-forced pass — by the local
// scorer when there is one, else by another provider that bid — and each step's log-prob of the
// chosen token is compared within logprob_tolerance. A provider whose tokens fail is disputed
// (a dispute receipt with its signed stream digest, reputation), is not paid, and complete()
// fails with error_kind::verification.
//
// Threads: complete() blocks the calling thread; the sink is called on it. The inbox is fed
// from the transport's threads. Completions may run at once on several threads (a server's
// requests): each waits only for the messages of the sessions it opened.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/atoms.h"
#include "actors/messages.h"
#include "actors/model_folder.h"
#include "actors/reputation.h"
#include "base/status.h"
#include "ledger/ledger.h"
#include "llm/generation.h"
#include "llm/tokenizer.h"
#include "net/messages.h"

namespace gpugrid::grid {

class receipt_outbox;
class job_payer;  // actors/payment.h

// Wei owed for `prompt` prompt tokens and `generated` generated tokens at a chain-paid bid's
// prices per 1000 tokens, rounded up to a whole wei (saturating at 2^128 - 1). Both sides
// compute payments with it: a session owes tokens_wei(prompt, tokens delivered).
unsigned __int128 tokens_wei(int64_t prompt, int64_t generated, const net::gen_chain_terms& t);

// One provider as the generation client reaches it.
struct gen_peer {
  key32 key{};
  std::string url;                                       // "" for the embedded provider
  provider_actor actor;                                  // takes receipt_atom; null: receipts stay here
  std::function<bool(const net::message&)> send;         // false: it could not be queued
  // Sends one file of the folder (tagged with the session); blocks until queued.
  std::function<status(const net::bytes16& session, const ledger::digest32& hash,
                        std::shared_ptr<const std::string> bytes)> upload;
};

// Messages from providers for the sessions a client has open, kept for the waiter (one
// completion) that opened each session. deliver() and peer_down() are called from any thread.
class generation_inbox {
 public:
  // Takes GenBid, GenTokens, BidDecline and JobError naming an open session; false otherwise.
  bool deliver(const key32& from, const net::message& m);
  // The connection to a provider was lost.
  void peer_down(const key32& from);

  struct event {
    net::bytes16 session{};
    key32 from{};
    std::optional<net::message> msg;  // empty: the provider went away
    uint64_t waiter = 0;
  };
  void open(const net::bytes16& session, const key32& provider, uint64_t waiter = 0);
  void close(const net::bytes16& session);
  // The next event of `waiter`'s sessions, or nullopt when `until` passes first.
  std::optional<event> wait(std::chrono::steady_clock::time_point until, uint64_t waiter = 0);

 private:
  struct open_session {
    key32 provider{};
    uint64_t waiter = 0;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<net::bytes16, open_session> open_;
  std::deque<event> events_;
};

struct generation_client_options {
  int redundancy = 1;
  double max_price_prompt = -1;       // per 1000 tokens; < 0: no limit
  double max_price_generated = -1;
  int bid_window_ms = 2000;           // bids are awaited this long at most
  int64_t stall_timeout_ms = 10000;   // no frame this long mid-answer: the next bid
  int64_t first_token_timeout_ms = 300000;  // uploads, model load and prefill
  double spot_check_rate = 0.1;       // floor of the adaptive rate; 0: no spot checks
  // Per step: |streamed - scored| <= tol * (1 + |scored| / 10). The same engine agrees to
  // ~1e-5, a GPU and a CPU to ~1e-3; another model or a cut context differs by far more.
  double logprob_tolerance = 0.01;
  reputation_book* reputation = nullptr;
  ledger::ledger_file* ledger = nullptr;
  receipt_outbox* outbox = nullptr;
  caf::actor_system* system = nullptr;  // for delivering receipts to provider actors
  // Scores an answer on this machine (teacher-forced log-probs); empty: ask another provider.
  std::function<expected<std::vector<float>>(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer)> local_score;
  std::function<void(const std::string&)> note;
  // Pays providers whose bids carry chain terms (actors/payment.h): the prompt's tokens with
  // GenPrompt, then the tokens received (GenPay) whenever pay_every_tokens of them are unpaid,
  // and the rest when the provider's share of the answer is accepted. A provider's credit
  // (generation_host_options::credit_tokens, 32) must be above pay_every_tokens, or it waits
  // for each payment. Null: bids with chain terms are passed over.
  job_payer* payer = nullptr;
  int64_t pay_every_tokens = 16;
};

// Who did what in the last completion (for --json).
struct generation_provider_use {
  std::string node;
  std::string url;
  double price_prompt = 0, price_generated = 0;   // per 1000 tokens, as bid
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double cost = 0;                                // what its receipt asks
  bool paid = false;
  bool verified = false;
  std::string settlement = "unsettled";           // "chain": paid with vouchers
  std::string paid_wei;                           // on a chain: what its vouchers added (decimal)
  std::string role;                               // "answer", "redundant", "score"
};

class generation_client : public llm::completion_backend {
 public:
  // `model` is the folder's manifest (read_folder_manifest); `tok` decodes the streamed ids;
  // `peers` lists the providers reachable now (called once per completion).
  generation_client(keypair self, folder_manifest model, std::shared_ptr<const llm::tokenizer> tok, int64_t vocab_size,
                    std::shared_ptr<generation_inbox> inbox, std::function<std::vector<gen_peer>()> peers,
                    generation_client_options options);

  expected<llm::completion_stats> complete(const llm::completion_request& request, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override;

  // Of the completion that finished last.
  std::vector<generation_provider_use> last_providers() const;
  std::string last_verification() const;  // "none", "spot-check", "redundant"

  struct segment;  // one provider's share of an answer (generation_client.cc)

 private:
  keypair self_;
  folder_manifest model_;
  std::shared_ptr<const llm::tokenizer> tok_;
  int64_t vocab_ = 0;
  std::shared_ptr<generation_inbox> inbox_;
  std::function<std::vector<gen_peer>()> peers_;
  generation_client_options options_;
  std::atomic<uint64_t> next_waiter_{1};
  mutable std::mutex mu_;  // guards the three below
  std::vector<generation_provider_use> last_used_;
  std::string last_verification_ = "none";
  std::map<ledger::digest32, std::shared_ptr<const std::string>> file_bytes_;  // read once
};

// Keeps the text of an answer back while it may still become a stop string, and cuts it at
// the first stop string. Not thread-safe.
class stop_text_filter {
 public:
  explicit stop_text_filter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // The text that can be shown now; sets stopped() once a stop string appeared.
  std::string push(const std::string& piece);
  // What is left at the end (nothing once stopped).
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace gpugrid::grid
