#include "actors/job_flow.h"

#include <algorithm>
#include <mutex>
#include <random>

#include "actors/verification.h"
#include "ledger/ledger.h"
#include "actors/wire_convert.h"

namespace gpugrid::grid {

const char* to_string(flow_phase p) {
  switch (p) {
    case flow_phase::idle: return "idle";
    case flow_phase::bidding: return "bidding";
    case flow_phase::executing: return "executing";
    case flow_phase::tie_break: return "tie_break";
    case flow_phase::local_check: return "local_check";
    case flow_phase::paying: return "paying";
    case flow_phase::done: return "done";
  }
  return "?";
}

namespace {

// A seed per job from one generator seeded once (jobs run on threads of their own): a
// std::random_device for every job opened /dev/urandom each time, 1% of a batch client's CPU.
uint64_t fresh_seed() {
  static std::mutex mu;
  static std::mt19937_64 seeds{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return seeds();
}

flow_action act(action_kind k, size_t provider = 0) {
  flow_action a;
  a.kind = k;
  a.provider = provider;
  return a;
}

}  // namespace

job_flow::job_flow(flow_job job, flow_config config)
    : job_(job), config_(config), rng_(config.seed ? config.seed : fresh_seed()) {
  if (config_.redundancy < 1) config_.redundancy = 1;
}

size_t job_flow::min_results() const {
  size_t k = static_cast<size_t>(config_.redundancy);
  if (config_.min_results <= 0) return k;
  return std::min(k, static_cast<size_t>(config_.min_results));
}

std::string job_flow::who(size_t provider) const {
  return provider < candidates_.size() ? short_hex(candidates_[provider].key) : "the local engine";
}

const bid_reply* job_flow::bid_of(size_t provider) const {
  for (const auto& [i, b] : bids_)
    if (i == provider) return &b;
  return nullptr;
}

void job_flow::note(std::vector<flow_action>& out, std::string text) {
  flow_action a = act(action_kind::note);
  a.text = std::move(text);
  out.push_back(std::move(a));
}

void job_flow::fail(std::vector<flow_action>& out, status st) {
  cancel_open(out);
  final_ = std::move(st);
  phase_ = flow_phase::done;
  out.push_back(act(action_kind::finish));
}

void job_flow::finish_ok(std::vector<flow_action>& out) {
  final_ = pending_failure_;
  phase_ = flow_phase::done;
  out.push_back(act(action_kind::finish));
}

void job_flow::cancel_open(std::vector<flow_action>& out) {
  for (size_t a = 0; a < attempts_.size(); ++a) {
    if (!attempts_[a].open) continue;
    attempts_[a].open = false;
    flow_action c = act(action_kind::cancel, attempts_[a].provider);
    c.attempt = a;
    out.push_back(std::move(c));
  }
}

size_t job_flow::open_attempts() const {
  return static_cast<size_t>(std::count_if(attempts_.begin(), attempts_.end(), [](const attempt_rec& a) { return a.open; }));
}

std::vector<flow_action> job_flow::start(std::vector<flow_candidate> candidates,
                                         std::vector<std::pair<size_t, bid_reply>> standing) {
  std::vector<flow_action> out;
  if (phase_ != flow_phase::idle) return out;
  candidates_ = std::move(candidates);
  answered_.assign(candidates_.size(), false);
  used_provider_.assign(candidates_.size(), false);
  const size_t k = static_cast<size_t>(config_.redundancy);
  std::vector<size_t> cooling;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    if (!candidates_[i].trusted) continue;
    (candidates_[i].cooling ? cooling : asked_).push_back(i);
  }
  // One that timed out lately is asked only when there are too few others.
  if (asked_.size() < k) asked_.insert(asked_.end(), cooling.begin(), cooling.end());
  if (asked_.empty()) {
    fail(out, status(error_kind::no_provider, "no trusted provider is reachable"));
    return out;
  }
  std::vector<std::pair<size_t, bid_reply>> quotes;
  for (auto& [i, b] : standing)
    if (i < candidates_.size() && std::find(asked_.begin(), asked_.end(), i) != asked_.end()) quotes.push_back({i, b});
  if (quotes.size() >= k) {  // enough standing bids for this model: no bidding round
    used_quotes_ = true;
    bids_ = std::move(quotes);
    award(out);
    return out;
  }
  phase_ = flow_phase::bidding;
  for (size_t i : asked_) out.push_back(act(action_kind::request_bids, i));
  flow_action timer = act(action_kind::close_bids_after);
  timer.delay_ms = std::max<int64_t>(1, config_.bid_window_ms);
  out.push_back(std::move(timer));
  return out;
}

std::vector<flow_action> job_flow::on_bid(size_t provider, const bid_reply& bid) {
  std::vector<flow_action> out;
  if (phase_ != flow_phase::bidding || provider >= candidates_.size() || answered_[provider]) return out;
  if (std::find(asked_.begin(), asked_.end(), provider) == asked_.end()) return out;
  answered_[provider] = true;
  if (bid.accepted && bid.job == job_.job) {
    bids_.push_back({provider, bid});
  } else if (bid.accepted) {
    declines_.push_back(who(provider) + ": a bid for another job");
  } else {
    declines_.push_back(who(provider) + ": " + (bid.detail.empty() ? std::string(to_string(bid.reason)) : bid.detail));
  }
  bool all = std::all_of(asked_.begin(), asked_.end(), [&](size_t i) { return answered_[i]; });
  if (all) award(out);
  return out;
}

std::vector<flow_action> job_flow::on_bid_failed(size_t provider, const std::string& why) {
  std::vector<flow_action> out;
  if (phase_ != flow_phase::bidding || provider >= candidates_.size() || answered_[provider]) return out;
  if (std::find(asked_.begin(), asked_.end(), provider) == asked_.end()) return out;
  answered_[provider] = true;
  declines_.push_back(who(provider) + ": no bid (" + why + ")");
  bool all = std::all_of(asked_.begin(), asked_.end(), [&](size_t i) { return answered_[i]; });
  if (all) award(out);
  return out;
}

std::vector<flow_action> job_flow::on_bid_window_closed() {
  std::vector<flow_action> out;
  if (phase_ != flow_phase::bidding) return out;
  for (size_t i : asked_)
    if (!answered_[i]) {
      answered_[i] = true;
      declines_.push_back(who(i) + ": no bid within the bid window");
    }
  award(out);
  return out;
}

void job_flow::award(std::vector<flow_action>& out) {
  std::vector<bid_offer> offers;
  for (auto& [i, r] : bids_) {
    bid_offer o;
    o.provider = std::to_string(i);
    o.url = candidates_[i].url;
    o.price = r.price;
    o.eta_ms = r.eta_ms;
    o.model_cached = r.model_cached;
    o.reputation = candidates_[i].reputation;
    o.is_new = candidates_[i].is_new;
    o.network = network_of(candidates_[i].url);
    offers.push_back(o);
  }
  // Equal bids go to a random one of them (rank_bids keeps ties in order), spreading load.
  std::shuffle(offers.begin(), offers.end(), rng_);
  choice_options co;
  co.max_price = config_.max_price;
  co.min_reputation = reputation_book::threshold;
  const size_t k = static_cast<size_t>(config_.redundancy);
  // A redundant set is not all new identities, nor all from one network, when others bid.
  auto ranked = diversify(rank_bids(offers, co), k);
  for (const auto& o : ranked) ranked_.push_back(static_cast<size_t>(std::stoul(o.provider)));
  if (ranked_.empty()) {
    std::string why = "no acceptable bid";
    if (!declines_.empty()) {
      why.clear();
      for (size_t d = 0; d < declines_.size(); ++d) why += (d ? "; " : "") + declines_[d];
    }
    fail(out, status(error_kind::no_provider, "no provider could run the job: " + why));
    return;
  }
  if (ranked_.size() < min_results()) {
    std::string why;
    for (size_t d = 0; d < declines_.size(); ++d) why += (d ? "; " : "") + declines_[d];
    fail(out, status(error_kind::no_provider,
                     fmt::format("--redundancy {} needs {} providers; only {} bid{}{}{}", k, min_results(), ranked_.size(),
                                 min_results() < k ? "" : " (--min-redundancy N accepts fewer)",
                                 why.empty() ? "" : ": ", why)));
    return;
  }
  phase_ = flow_phase::executing;
  refill(out);
}

bool job_flow::launch_next(std::vector<flow_action>& out) {
  while (next_bid_ < ranked_.size()) {
    size_t pi = ranked_[next_bid_++];
    if (used_provider_[pi]) continue;
    used_provider_[pi] = true;
    const bid_reply* b = bid_of(pi);
    if (!b) continue;
    if (!bid_signature_ok(*b)) {
      note(out, fmt::format("provider {} sent a bid whose signature does not verify; skipped", who(pi)));
      flow_action r = act(action_kind::record_reputation, pi);
      r.rep = outcome::failed;
      out.push_back(std::move(r));
      continue;
    }
    attempt_rec a;
    a.provider = pi;
    a.bid = *b;
    attempts_.push_back(a);
    flow_action s = act(action_kind::send_job, pi);
    s.attempt = attempts_.size() - 1;
    s.bid = *b;
    s.send_model = !b->model_cached && config_.has_model_bytes;
    if (s.send_model) note(out, fmt::format("sending the model ({} bytes) to {}", job_.model_bytes, who(pi)));
    out.push_back(std::move(s));
    return true;
  }
  return false;
}

void job_flow::refill(std::vector<flow_action>& out) {
  const size_t k = static_cast<size_t>(config_.redundancy);
  while (results_.size() + open_attempts() < k && launch_next(out)) {
  }
  if (open_attempts() == 0) verify(out);
}

std::vector<flow_action> job_flow::on_result(size_t attempt, const execute_result_ptr& r) {
  std::vector<flow_action> out;
  if (attempt >= attempts_.size() || !attempts_[attempt].open || !r) return out;  // late: ignored
  if (phase_ != flow_phase::executing && phase_ != flow_phase::tie_break) return out;
  attempt_rec& a = attempts_[attempt];
  a.open = false;
  if (!r->ok && r->error_is_input) {
    fail(out, status(error_kind::invalid_input, r->error));
    return out;
  }
  if (!r->ok) {
    note(out, fmt::format("provider {} failed: {}; trying the next bid", who(a.provider), r->error));
    failures_.push_back(who(a.provider) + ": " + r->error);
    out.push_back(act(action_kind::drop_quote, a.provider));
    if (!used_quotes_) {  // a stale quote is the client's own doing
      flow_action rep = act(action_kind::record_reputation, a.provider);
      rep.rep = outcome::failed;
      out.push_back(std::move(rep));
    }
  } else {
    a.result = r;
    results_.push_back({attempt, r->outputs});
    flow_action q = act(action_kind::keep_quote, a.provider);
    q.bid = a.bid;
    out.push_back(std::move(q));
  }
  after_attempt(out);
  return out;
}

std::vector<flow_action> job_flow::on_exec_failed(size_t attempt, const std::string& why, bool timed_out) {
  std::vector<flow_action> out;
  if (attempt >= attempts_.size() || !attempts_[attempt].open) return out;
  if (phase_ != flow_phase::executing && phase_ != flow_phase::tie_break) return out;
  attempt_rec& a = attempts_[attempt];
  a.open = false;
  note(out, fmt::format("provider {} {}; trying the next bid", who(a.provider), timed_out ? "timed out" : "went away (" + why + ")"));
  failures_.push_back(who(a.provider) + ": " + (timed_out ? std::string("timed out") : why));
  flow_action rep = act(action_kind::record_reputation, a.provider);
  rep.rep = timed_out ? outcome::timed_out : outcome::failed;
  out.push_back(std::move(rep));
  out.push_back(act(action_kind::drop_quote, a.provider));
  if (timed_out) {  // it may still be running: tell it to stop
    flow_action c = act(action_kind::cancel, a.provider);
    c.attempt = attempt;
    out.push_back(std::move(c));
  }
  after_attempt(out);
  return out;
}

std::vector<flow_action> job_flow::on_unpaid(size_t attempt, const std::string& why) {
  std::vector<flow_action> out;
  if (attempt >= attempts_.size() || !attempts_[attempt].open) return out;
  if (phase_ != flow_phase::executing && phase_ != flow_phase::tie_break) return out;
  attempt_rec& a = attempts_[attempt];
  a.open = false;
  note(out, fmt::format("provider {}: {}; skipped", who(a.provider), why));
  failures_.push_back(who(a.provider) + ": " + why);
  after_attempt(out);
  return out;
}

std::vector<flow_action> job_flow::on_provider_gone(size_t provider) {
  std::vector<flow_action> out;
  if (provider >= candidates_.size()) return out;
  if (phase_ == flow_phase::bidding) return on_bid_failed(provider, "the provider went away");
  for (size_t a = 0; a < attempts_.size() && !finished(); ++a)
    if (attempts_[a].open && attempts_[a].provider == provider) {
      auto more = on_exec_failed(a, "disconnected", false);
      out.insert(out.end(), more.begin(), more.end());
    }
  return out;
}

void job_flow::after_attempt(std::vector<flow_action>& out) {
  if (phase_ == flow_phase::executing) {
    refill(out);
    return;
  }
  // tie_break: one more result, or the next bid, or the local engine
  if (open_attempts() > 0) return;
  verify(out);
}

void job_flow::verify(std::vector<flow_action>& out) {
  const size_t k = static_cast<size_t>(config_.redundancy);
  if (results_.empty()) {
    std::string why;
    for (size_t f = 0; f < failures_.size(); ++f) why += (f ? "; " : "") + failures_[f];
    fail(out, status(error_kind::no_provider,
                     "every provider that bid failed or timed out" + (why.empty() ? std::string() : ": " + why)));
    return;
  }
  if (phase_ == flow_phase::executing && results_.size() < k) {
    if (results_.size() >= min_results()) {
      note(out, fmt::format("--redundancy {}: only {} provider{} could run the job; the result is not cross-checked as asked", k,
                            results_.size(), results_.size() == 1 ? "" : "s"));
    } else {
      // Too few results: the job fails, but the providers whose results agree did the work asked.
      pending_failure_ = status(error_kind::no_provider,
                                fmt::format("--redundancy {} needs {} results; only {} provider{} returned one "
                                            "(--min-redundancy N accepts fewer)",
                                            k, min_results(), results_.size(), results_.size() == 1 ? "" : "s"));
    }
  }
  std::vector<std::vector<tensor>> outs;
  for (const auto& r : results_) outs.push_back(r.outputs);
  if (results_.size() >= 2) {
    if (method_ == "single") method_ = "redundant";
    verdict v = decide(outs);
    if (v.decided && pending_failure_.is_ok() && config_.has_local && local_ == local_purpose::none) {
      // Agreement among identities this client never verified proves little (one operator
      // can run several): the agreed result is checked here at the lowest of their rates.
      double rate = 1.0;
      for (size_t idx : v.agreeing)
        if (results_[idx].attempt != SIZE_MAX)
          rate = std::min(rate, candidates_[attempts_[results_[idx].attempt].provider].spot_check_rate);
      if (rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < rate) {
        local_ = local_purpose::check_majority;
        majority_ = v;
        phase_ = flow_phase::local_check;
        out.push_back(act(action_kind::run_local));
        return;
      }
    }
    if (v.decided || !pending_failure_.is_ok()) {
      conclude(out, v.agreeing, v.dissenting, v.decided);
      return;
    }
    // Disagreement: the client's own engine breaks the tie first (the next bid may come from
    // the same operator as one side), else another provider.
    if (phase_ != flow_phase::tie_break) note(out, "results disagree; running a tie-break");
    if (config_.has_local && local_ == local_purpose::none) {
      local_ = local_purpose::tie_break;
      phase_ = flow_phase::local_check;
      out.push_back(act(action_kind::run_local));
      return;
    }
    phase_ = flow_phase::tie_break;
    if (launch_next(out)) return;
    conclude(out, v.agreeing, v.dissenting, false);
    return;
  }
  // One result: spot-checked on the client's own engine at the provider's rate.
  const attempt_rec& a = attempts_[results_[0].attempt];
  double rate = candidates_[a.provider].spot_check_rate;
  if (pending_failure_.is_ok() && config_.has_local && rate > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) < rate) {
    local_ = local_purpose::spot_check;
    phase_ = flow_phase::local_check;
    out.push_back(act(action_kind::run_local));
    return;
  }
  conclude(out, {0}, {}, true);
}

std::vector<flow_action> job_flow::on_local_result(const expected<std::vector<tensor>>& mine) {
  std::vector<flow_action> out;
  if (phase_ != flow_phase::local_check) return out;
  if (local_ == local_purpose::spot_check) {
    if (!mine) {
      note(out, "skipped the spot check: the local engine cannot run the job (" + mine.error().message() + ")");
      conclude(out, {0}, {}, true);
      return out;
    }
    method_ = "spot-check";
    std::string why;
    if (!results_agree(results_[0].outputs, *mine, &why)) {
      note(out, "the provider's result disagrees with the local engine: " + why);
      conclude(out, {}, {0}, false);
    } else {
      conclude(out, {0}, {}, true);
    }
    return out;
  }
  if (local_ == local_purpose::check_majority) {
    if (!mine) {
      note(out, "skipped the check of the agreed result: the local engine cannot run the job (" + mine.error().message() + ")");
      conclude(out, majority_.agreeing, majority_.dissenting, true);
      return out;
    }
    std::string why;
    if (results_agree(results_[majority_.winner].outputs, *mine, &why)) {
      method_ = "redundant+local";
      conclude(out, majority_.agreeing, majority_.dissenting, true);
      return out;
    }
    // The providers agree with each other and not with this machine: those that agree with the
    // local engine (if any) stand, the rest are disputed.
    note(out, "the providers' agreed result disagrees with the local engine: " + why);
    method_ = "redundant+local";
    std::vector<size_t> agree, dissent;
    for (size_t i = 0; i < results_.size(); ++i) (results_agree(results_[i].outputs, *mine, nullptr) ? agree : dissent).push_back(i);
    conclude(out, agree, dissent, !agree.empty());
    return out;
  }
  // tie-break
  if (!mine) {
    // The local engine cannot settle it: the next bid may.
    note(out, "the local engine cannot break the tie (" + mine.error().message() + ")");
    phase_ = flow_phase::tie_break;
    if (launch_next(out)) return out;
    std::vector<std::vector<tensor>> outs;
    for (const auto& r : results_) outs.push_back(r.outputs);
    verdict v = decide(outs);
    conclude(out, v.agreeing, v.dissenting, false);
    return out;
  }
  results_.push_back({SIZE_MAX, *mine});
  method_ = "redundant+local";
  std::vector<std::vector<tensor>> outs;
  for (const auto& r : results_) outs.push_back(r.outputs);
  verdict v = decide(outs);
  conclude(out, v.agreeing, v.dissenting, v.decided);
  return out;
}

void job_flow::conclude(std::vector<flow_action>& out, std::vector<size_t> agreeing, std::vector<size_t> dissenting,
                        bool decided) {
  cancel_open(out);
  // Signed wrong results: a dispute each, and the provider's reputation falls.
  for (size_t idx : dissenting) {
    if (idx >= results_.size() || results_[idx].attempt == SIZE_MAX) continue;
    const attempt_rec& a = attempts_[results_[idx].attempt];
    flow_action rep = act(action_kind::record_reputation, a.provider);
    rep.rep = outcome::disagreed;
    out.push_back(std::move(rep));
    flow_action d = act(action_kind::dispute, a.provider);
    d.attempt = results_[idx].attempt;
    d.result = a.result;
    out.push_back(std::move(d));
    used_.push_back({a.provider, a.bid.price, false, false});
  }
  if (!decided) {
    final_ = pending_failure_.is_ok()
                 ? status(error_kind::verification, "results from different providers disagree beyond tolerance")
                 : pending_failure_;
    phase_ = flow_phase::done;
    out.push_back(act(action_kind::finish));
    return;
  }
  // Every provider whose result agrees is paid, when its receipt says what happened.
  const bool verified = method_ != "single" && pending_failure_.is_ok();
  for (size_t idx : agreeing) {
    if (idx >= results_.size() || results_[idx].attempt == SIZE_MAX) continue;  // the local engine
    const size_t at = results_[idx].attempt;
    const attempt_rec& a = attempts_[at];
    const auto& r = a.result;
    if (verified) {
      flow_action rep = act(action_kind::record_reputation, a.provider);
      rep.rep = outcome::agreed;
      out.push_back(std::move(rep));
    }
    flow_provider_used u{a.provider, a.bid.price, false, true};
    const ledger::receipt& rc = r->receipt;
    bool honest = rc.job_id == job_.job && rc.client_key == job_.client && rc.provider_key == r->provider &&
                  rc.provider_key == candidates_[a.provider].key && rc.model_hash == job_.model_hash &&
                  rc.input_digest == job_.input_digest && rc.output_digest == tensors_digest(r->outputs) &&
                  rc.price_micros == static_cast<int64_t>(a.bid.price * 1e6 + 0.5);
    if (honest && ledger::verify_provider_signature(rc).is_ok()) {
      flow_action p = act(action_kind::pay, a.provider);
      p.attempt = at;
      p.receipt = rc;
      out.push_back(std::move(p));
      paid_attempts_.push_back(at);
      ++receipts_open_;
      u.paid = true;
    } else {
      note(out, fmt::format("provider {} sent a receipt that does not match the job; not paid", who(a.provider)));
    }
    used_.push_back(u);
    if (outputs_.empty()) outputs_ = r->outputs;
    compute_ms_ = std::max(compute_ms_, r->compute_ms);
  }
  for (size_t idx : agreeing)
    if (outputs_.empty() && idx < results_.size()) outputs_ = results_[idx].outputs;
  agreeing_ = static_cast<int>(agreeing.size());
  if (receipts_open_ == 0) {
    finish_ok(out);
    return;
  }
  phase_ = flow_phase::paying;
}

std::vector<flow_action> job_flow::on_receipt_answer(size_t attempt, net::receipt_status answer) {
  std::vector<flow_action> out;
  if (phase_ != flow_phase::paying) return out;
  auto it = std::find(paid_attempts_.begin(), paid_attempts_.end(), attempt);
  if (it == paid_attempts_.end()) return out;
  paid_attempts_.erase(it);
  std::string w = who(attempts_[attempt].provider);
  if (answer == net::receipt_status::rejected) note(out, fmt::format("provider {} refused its receipt for good", w));
  if (answer == net::receipt_status::retry_later)
    note(out, fmt::format("provider {} has not recorded its receipt yet; it is kept and sent again later", w));
  if (--receipts_open_ == 0) finish_ok(out);
  return out;
}

std::vector<flow_action> job_flow::on_fatal(const status& st) {
  std::vector<flow_action> out;
  if (phase_ == flow_phase::done) return out;
  fail(out, st.is_ok() ? internal_error("the job failed") : st);
  return out;
}

}  // namespace gpugrid::grid
