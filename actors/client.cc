#include "actors/client.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <set>

#include <caf/all.hpp>

#include "actors/atoms.h"
#include "actors/auction.h"
#include "actors/payment.h"
#include "actors/receipt_outbox.h"
#include "actors/verification.h"
#include "net/codec.h"
#include "net/identity.h"

namespace gpugrid::grid {

std::string node_hex(const key32& key) { return net::node_id_of(key); }

namespace {

using clock_type = std::chrono::steady_clock;

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct attempt {
  size_t bid_index;
  execute_result_ptr result;
  std::string failure;
  bool timed_out = false;
};

// A remote bid must carry the provider's signature over what it offered; an in-process
// provider's bid carries none.
bool bid_signature_ok(const bid_reply& r) {
  if (!r.signature) return true;
  net::bid b;
  b.job = r.job;
  b.price = r.price;
  b.eta_ms = r.eta_ms;
  b.model_cached = r.model_cached;
  b.valid_ms = r.valid_ms;
  b.signature = r.signature;
  b.terms = r.terms;
  return net::verify_bid(b, r.provider);
}

}  // namespace

void quote_book::put(const bid_reply& b, const digest32& model, int64_t now_ms) {
  if (!b.accepted || b.valid_ms <= 0) return;
  std::lock_guard<std::mutex> lk(mu_);
  quotes_[{b.provider, model}] = {b, now_ms + b.valid_ms / 2};
}

std::optional<quote_book::quote> quote_book::get(const key32& provider, const digest32& model, int64_t now_ms) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = quotes_.find({provider, model});
  if (it == quotes_.end() || it->second.expires_ms <= now_ms) return std::nullopt;
  return it->second;
}

void quote_book::mark_cached(const key32& provider, const digest32& model) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = quotes_.find({provider, model});
  if (it != quotes_.end()) it->second.bid.model_cached = true;
}

void quote_book::drop(const key32& provider, const digest32& model) {
  std::lock_guard<std::mutex> lk(mu_);
  quotes_.erase({provider, model});
}

void quote_book::drop_model(const digest32& model) {
  std::lock_guard<std::mutex> lk(mu_);
  for (auto it = quotes_.begin(); it != quotes_.end();) it = it->first.second == model ? quotes_.erase(it) : std::next(it);
}

size_t quote_book::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return quotes_.size();
}

namespace {

expected<job_outcome> run_job_once(caf::actor_system& sys, const std::vector<provider_handle>& providers,
                                   const job_spec& job, const client_options& options, const keypair& client,
                                   reputation_book* reputation, ledger::ledger_file* ledger, const local_runner& local,
                                   const std::function<void(const std::string&)>& note, bool* used_quotes);

}  // namespace

expected<job_outcome> run_job(caf::actor_system& sys, const std::vector<provider_handle>& providers,
                              const job_spec& job, const client_options& options, const keypair& client,
                              reputation_book* reputation, ledger::ledger_file* ledger, const local_runner& local,
                              const std::function<void(const std::string&)>& note) {
  // Receipts of earlier jobs that their providers have not recorded yet go first.
  if (options.outbox) (void)redeliver_receipts(sys, providers, *options.outbox, 16, std::chrono::seconds(5), note);
  bool used_quotes = false;
  auto r = run_job_once(sys, providers, job, options, client, reputation, ledger, local, note, &used_quotes);
  if (used_quotes && !r && r.error().kind() == error_kind::no_provider) {
    // The standing bids did not hold (a provider restarted or went away): bid afresh.
    options.quotes->drop_model(job.model_hash);
    return run_job_once(sys, providers, job, options, client, reputation, ledger, local, note, &used_quotes);
  }
  return r;
}

namespace {

expected<job_outcome> run_job_once(caf::actor_system& sys, const std::vector<provider_handle>& providers,
                                   const job_spec& job, const client_options& options, const keypair& client,
                                   reputation_book* reputation, ledger::ledger_file* ledger, const local_runner& local,
                                   const std::function<void(const std::string&)>& note, bool* used_quotes) {
  auto t_start = clock_type::now();
  *used_quotes = false;
  job_outcome res;
  caf::scoped_actor self{sys};

  // 1. Bid requests to every trusted provider, replies collected within the window.
  auto req = std::make_shared<bid_request>();
  req->job = new_job_id();
  req->client = client.public_key;
  req->model_hash = job.model_hash;
  req->model_bytes = job.model_bytes ? static_cast<int64_t>(job.model_bytes->size()) : 0;
  req->gflops = job.gflops;
  for (const auto& t : job.inputs) req->input_bytes += static_cast<int64_t>(t.bytes());
  req->max_price = options.max_price;
  bid_request_ptr req_ptr = req;

  std::vector<size_t> asked, cooling;
  for (size_t i = 0; i < providers.size(); ++i) {
    if (reputation && !reputation->trusted(node_hex(providers[i].key))) continue;
    // One that timed out lately is asked only when nobody else is there.
    if (reputation && reputation->cooling(node_hex(providers[i].key), unix_ms())) cooling.push_back(i);
    else asked.push_back(i);
  }
  if (asked.size() < static_cast<size_t>(std::max(1, options.redundancy))) asked.insert(asked.end(), cooling.begin(), cooling.end());
  if (asked.empty()) return status(error_kind::no_provider, "no trusted provider is reachable");
  std::vector<std::pair<size_t, bid_reply>> replies;
  std::vector<std::string> declines;
  const size_t k_wanted = static_cast<size_t>(std::max(1, options.redundancy));
  if (options.quotes) {  // standing bids for this model, enough of them: no bidding round
    int64_t now = unix_ms();
    for (size_t i : asked)
      if (auto q = options.quotes->get(providers[i].key, job.model_hash, now)) replies.push_back({i, q->bid});
    if (replies.size() >= k_wanted) *used_quotes = true;
    else replies.clear();
  }
  auto window = std::chrono::milliseconds(std::max(1, options.bid_window_ms));
  std::vector<caf::response_handle<caf::blocking_actor, caf::message, true>> pending;
  if (!*used_quotes)
    for (size_t i : asked) pending.push_back(self->request(providers[i].actor, window, bid_atom::value, req_ptr));
  for (size_t k = 0; k < pending.size(); ++k) {
    size_t i = asked[k];
    pending[k].receive(
        [&](const bid_reply_ptr& r) {
          if (r->accepted) replies.push_back({i, *r});
          else declines.push_back(fmt::format("{}: {}", short_hex(providers[i].key), r->detail.empty() ? to_string(r->reason) : r->detail));
        },
        [&](caf::error& e) { declines.push_back(fmt::format("{}: no bid ({})", short_hex(providers[i].key), sys.render(e))); });
  }
  std::vector<bid_offer> offers;
  for (auto& [i, r] : replies) {
    bid_offer o;
    o.provider = std::to_string(i);
    o.url = providers[i].url;
    o.price = r.price;
    o.eta_ms = r.eta_ms;
    o.model_cached = r.model_cached;
    o.reputation = reputation ? reputation->score(node_hex(providers[i].key)) : 0.5;
    o.is_new = reputation ? reputation->is_new(node_hex(providers[i].key)) : true;
    o.network = network_of(providers[i].url);
    offers.push_back(o);
  }
  // Equal bids go to a random one of them (rank_bids keeps ties in order), spreading load.
  {
    thread_local std::mt19937_64 rng(std::random_device{}());
    std::shuffle(offers.begin(), offers.end(), rng);
  }
  choice_options co;
  co.max_price = options.max_price;
  co.min_reputation = reputation_book::threshold;
  // A redundant set is not all new identities, nor all from one network, when others bid.
  auto ranked = diversify(rank_bids(offers, co), k_wanted);
  auto t_bids = clock_type::now();
  res.queue_ms = ms_between(t_start, t_bids);
  if (ranked.empty()) {
    std::string why = declines.empty() ? "no acceptable bid" : fmt::format("{}", fmt::join(declines, "; "));
    return status(error_kind::no_provider, "no provider could run the job: " + why);
  }
  auto reply_of = [&](size_t provider_index) -> const bid_reply& {
    for (auto& [i, r] : replies) if (i == provider_index) return r;
    return replies.front().second;
  };

  // 2. Execution on K distinct providers, each failing over to the next bid.
  size_t next_bid = 0;
  std::vector<attempt> done;
  std::set<size_t> used;
  // Payment on a chain: the voucher for a provider's bid, made just before the job is sent.
  std::map<size_t, ledger::voucher_claim> vouchers;
  auto pay_for = [&](size_t pi) {
    const bid_reply& b = reply_of(pi);
    if (!b.terms) return true;
    if (!options.payer) {
      note(fmt::format("provider {} is paid on a chain and this client has none configured; skipped",
                       short_hex(providers[pi].key)));
      return false;
    }
    auto v = options.payer->pay(providers[pi].key, *b.terms);
    if (!v) {
      note(fmt::format("cannot pay provider {}: {}; skipped", short_hex(providers[pi].key), v.error().message()));
      return false;
    }
    vouchers[pi] = *v;
    return true;
  };
  auto make_exec = [&](size_t provider_index) {
    auto ex = std::make_shared<execute_request>();
    ex->job = req->job;
    ex->client = client.public_key;
    ex->model_hash = job.model_hash;
    if (!reply_of(provider_index).model_cached) ex->model_bytes = job.model_bytes;
    ex->model_source = job.model_bytes;
    ex->inputs = job.inputs;
    ex->input_digest = tensors_digest(job.inputs);
    ex->price = reply_of(provider_index).price;
    ex->started_ms = unix_ms();
    if (auto v = vouchers.find(provider_index); v != vouchers.end()) ex->voucher = v->second;
    return execute_request_ptr(ex);
  };
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  status input_error = status::ok();
  while (done.size() < k_wanted && next_bid < ranked.size() && input_error.is_ok()) {
    // Launch as many attempts as are still missing, in parallel.
    std::vector<size_t> batch;
    while (batch.size() + done.size() < k_wanted && next_bid < ranked.size()) {
      size_t pi = static_cast<size_t>(std::stoul(ranked[next_bid++].provider));
      if (used.count(pi)) continue;
      used.insert(pi);
      if (!bid_signature_ok(reply_of(pi))) {
        note(fmt::format("provider {} sent a bid whose signature does not verify; skipped", short_hex(providers[pi].key)));
        if (reputation) reputation->record(node_hex(providers[pi].key), outcome::failed);
        continue;
      }
      if (!pay_for(pi)) continue;
      batch.push_back(pi);
    }
    std::vector<caf::response_handle<caf::blocking_actor, caf::message, true>> running;
    for (size_t pi : batch) {
      if (!reply_of(pi).model_cached && job.model_bytes)
        note(fmt::format("sending the model ({} bytes) to {}", job.model_bytes->size(), short_hex(providers[pi].key)));
      running.push_back(self->request(providers[pi].actor, timeout, exec_atom::value, make_exec(pi)));
    }
    for (size_t b = 0; b < batch.size(); ++b) {
      size_t pi = batch[b];
      std::string who = node_hex(providers[pi].key);
      running[b].receive(
          [&](const execute_result_ptr& r) {
            if (r->ok) {
              done.push_back({pi, r, "", false});
              if (options.quotes) {
                if (!*used_quotes) {
                  bid_reply standing = reply_of(pi);
                  standing.signature.reset();  // checked once, above
                  options.quotes->put(standing, job.model_hash, unix_ms());
                }
                options.quotes->mark_cached(providers[pi].key, job.model_hash);
              }
            } else if (r->error_is_input) {
              input_error = status(error_kind::invalid_input, r->error);
            } else {
              note(fmt::format("provider {} failed: {}; trying the next bid", short_hex(providers[pi].key), r->error));
              if (options.quotes) options.quotes->drop(providers[pi].key, job.model_hash);
              if (reputation && !*used_quotes) reputation->record(who, outcome::failed);  // a stale quote is ours
            }
          },
          [&](caf::error& e) {
            bool timed_out = e == caf::sec::request_timeout;
            note(fmt::format("provider {} {}; trying the next bid", short_hex(providers[pi].key),
                             timed_out ? "timed out" : "went away (" + sys.render(e) + ")"));
            if (reputation) reputation->record(who, timed_out ? outcome::timed_out : outcome::failed);
            if (options.quotes) options.quotes->drop(providers[pi].key, job.model_hash);
          });
    }
  }
  if (!input_error.is_ok()) return input_error;
  if (done.empty()) return status(error_kind::no_provider, "every provider that bid failed or timed out");
  if (done.size() < k_wanted)
    note(fmt::format("--redundancy {}: only {} provider{} could run the job; the result is not cross-checked as asked",
                     k_wanted, done.size(), done.size() == 1 ? "" : "s"));
  auto t_exec = clock_type::now();

  // 3. Verification: a strict majority of agreeing results, with a tie-break when needed.
  std::vector<std::vector<tensor>> results;
  for (auto& a : done) results.push_back(a.result->outputs);
  verdict v;
  res.method = "single";
  if (results.size() >= 2) {
    res.method = "redundant";
    v = decide(results);
    while (!v.decided && (next_bid < ranked.size() || local)) {
      note("results disagree; running a tie-break");
      bool ran = false;
      while (next_bid < ranked.size() && !ran) {
        size_t pi = static_cast<size_t>(std::stoul(ranked[next_bid++].provider));
        if (used.count(pi)) continue;
        used.insert(pi);
        if (!bid_signature_ok(reply_of(pi))) continue;
        if (!pay_for(pi)) continue;
        self->request(providers[pi].actor, timeout, exec_atom::value, make_exec(pi))
            .receive([&](const execute_result_ptr& r) { if (r->ok) { done.push_back({pi, r, "", false}); results.push_back(r->outputs); ran = true; } },
                     [&](caf::error&) {});
      }
      if (!ran && local) {
        auto mine = local(job.inputs);
        if (!mine) return mine.error();
        results.push_back(*mine);
        done.push_back({SIZE_MAX, nullptr, "", false});
        res.method = "redundant+local";
        v = decide(results);
        break;
      }
      v = decide(results);
    }
  } else {
    v.decided = true;
    v.winner = 0;
    v.agreeing = {0};
    thread_local std::mt19937_64 rng(std::random_device{}());
    // Adaptive: every job of a provider never verified, fewer as its verified record grows.
    double rate = reputation ? reputation->spot_check_rate(node_hex(done[0].result->provider), options.spot_check_rate)
                             : options.spot_check_rate;
    if (local && rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < rate) {
      auto mine = local(job.inputs);
      std::string why;
      if (!mine) {
        note("skipped the spot check: the local engine cannot run the job (" + mine.error().message() + ")");
      } else if (res.method = "spot-check"; !results_agree(results[0], *mine, &why)) {
        v.decided = false;
        v.dissenting = {0};
        v.agreeing.clear();
        note("the provider's result disagrees with the local engine: " + why);
      } else {
        v.agreeing = {0};
      }
    }
  }

  // 4. Reputation, receipts and evidence.
  for (size_t idx : v.dissenting) {
    if (idx >= done.size() || !done[idx].result) continue;
    const auto& r = done[idx].result;
    std::string who = node_hex(r->provider);
    if (reputation) reputation->record(who, outcome::disagreed);
    ledger::receipt d;
    d.kind = ledger::receipt_kind::dispute;
    d.job_id = r->job;
    d.client_key = client.public_key;
    d.provider_key = r->provider;
    d.model_hash = job.model_hash;
    d.input_digest = tensors_digest(job.inputs);
    d.output_digest = r->output_digest;
    d.started_ms = r->receipt.started_ms;
    d.finished_ms = r->receipt.finished_ms;
    d.provider_sig = r->result_sig;
    ledger::sign_as_client(d, client.secret_key);
    if (ledger && ledger::verify_receipt(d).is_ok()) (void)ledger->append(d);
    res.providers.push_back({who, done[idx].bid_index < providers.size() ? providers[done[idx].bid_index].url : "",
                                 reply_of(done[idx].bid_index).price, false, false, false, {}});
  }
  if (!v.decided) {
    if (reputation) (void)reputation->save();
    return status(error_kind::verification, "results from different providers disagree beyond tolerance");
  }
  // Every provider whose result agrees is paid: its receipt is checked, countersigned, recorded
  // here, kept in the outbox and sent back until the provider records it.
  std::vector<std::pair<caf::actor, ledger::receipt>> receipts;
  for (size_t idx : v.agreeing) {
    if (idx >= done.size() || !done[idx].result) continue;  // the local engine
    const auto& r = done[idx].result;
    std::string who = node_hex(r->provider);
    if (reputation && res.method != "single") reputation->record(who, outcome::agreed);  // verified results only
    provider_used u{who, providers[done[idx].bid_index].url, reply_of(done[idx].bid_index).price, false, true, false, {}};
    // Check the provider's receipt says what happened.
    ledger::receipt rc = r->receipt;
    bool honest = rc.job_id == req->job && rc.client_key == client.public_key && rc.provider_key == r->provider &&
                  rc.model_hash == job.model_hash && rc.input_digest == tensors_digest(job.inputs) &&
                  rc.output_digest == tensors_digest(r->outputs) &&
                  rc.price_micros == static_cast<int64_t>(reply_of(done[idx].bid_index).price * 1e6 + 0.5);
    if (honest && ledger::verify_provider_signature(rc).is_ok()) {
      ledger::sign_as_client(rc, client.secret_key);
      auto paid_with = vouchers.find(done[idx].bid_index);
      const ledger::voucher_claim* claim = paid_with == vouchers.end() ? nullptr : &paid_with->second;
      if (claim) {
        u.settled = true;
        u.paid_wei = ledger::decimal(ledger::word_value(claim->price));
      }
      if (ledger) {
        // The provider's signature was verified above and the client's was just made.
        auto h = ledger->append_verified(rc, claim);
        if (!h) return h.error();
      }
      if (options.outbox) {
        status st = options.outbox->add(rc);
        if (!st.is_ok()) note("cannot keep the receipt for redelivery: " + st.message());
      }
      receipts.push_back({providers[done[idx].bid_index].actor, rc});
      u.paid = true;
    } else {
      note(fmt::format("provider {} sent a receipt that does not match the job; not paid", short_hex(r->provider)));
    }
    res.providers.push_back(u);
    if (res.outputs.empty()) res.outputs = r->outputs;
    res.compute_ms = std::max(res.compute_ms, r->compute_ms);
  }
  (void)deliver_receipts(sys, receipts, options.outbox, std::chrono::seconds(10), note);
  if (res.outputs.empty()) res.outputs = results[v.winner];
  res.agreeing = static_cast<int>(v.agreeing.size());
  if (reputation) (void)reputation->save();
  auto t_end = clock_type::now();
  res.total_ms = ms_between(t_start, t_end);
  res.transfer_ms = std::max(0.0, ms_between(t_bids, t_exec) - res.compute_ms);
  return res;
}

}  // namespace

}  // namespace gpugrid::grid
