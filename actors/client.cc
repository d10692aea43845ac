#include "actors/client.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <random>
#include <set>

#include <caf/all.hpp>

#include "actors/atoms.h"
#include "actors/auction.h"
#include "actors/job_flow.h"
#include "actors/payment.h"
#include "actors/pay_recorder.h"
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


// ------------------------------------------------------------------ the job's driver
//
// An actor that performs what the job's state machine (actors/job_flow.h) asks for: requests
// to provider actors, the bid window timer, the local engine, reputation, the ledger and the
// receipt outbox; every answer goes back into the machine as an event. It runs on the actor
// system's scheduler, and what blocks (the local engine, ledger and outbox appends with their
// fsyncs) it hands to the thread that called run_job, which waits for the job anyway: a job
// costs no thread of its own. A paid receipt goes to the client's pay recorder instead when it
// has one (actors/pay_recorder.h: one thread records the receipts of many jobs at once). While
// such a step is out, the actor takes no other message, a provider's down message included
// (CAF holds them all behind an awaited response), so the machine sees its events in the same
// order as if the step had run in place. A client that pays on a chain runs the job on a
// thread of its own instead (a detached actor, every step in place): its payment must reach the
// provider's queue in order with the job, under the payer's lock.

namespace client_detail {

struct job_report {
  status st = status::ok();
  job_outcome outcome;
  bool used_quotes = false;
  std::vector<std::pair<job_id, key32>> settled;  // receipts answered for good: out of the outbox
};
using job_report_ptr = std::shared_ptr<const job_report>;

// A step that may block, run on the job's calling thread.
struct blocking_step {
  std::function<void()> run;
};
using blocking_step_ptr = std::shared_ptr<blocking_step>;

}  // namespace client_detail
}  // namespace gpugrid::grid

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::client_detail::job_report_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::client_detail::blocking_step_ptr)

namespace gpugrid::grid {
namespace {

using client_detail::blocking_step;
using client_detail::blocking_step_ptr;
using client_detail::job_report;
using client_detail::job_report_ptr;
using job_start_atom = caf::atom_constant<caf::atom("job_start")>;
using job_done_atom = caf::atom_constant<caf::atom("job_done")>;
using blocking_atom = caf::atom_constant<caf::atom("blocking")>;
using bid_window_atom = caf::atom_constant<caf::atom("bid_window")>;
using cancel_check_atom = caf::atom_constant<caf::atom("cancel_chk")>;
constexpr auto kCancelCheck = std::chrono::milliseconds(10);

constexpr auto kReceiptTimeout = std::chrono::seconds(10);

// Everything the driver uses; the references stay valid because run_job waits for the job.
struct job_driver {
  job_driver(const std::vector<provider_handle>& p, const job_spec& j, const client_options& o, const keypair& c,
             reputation_book* r, ledger::ledger_file* l, const local_runner& lr,
             const std::function<void(const std::string&)>& n, flow_job fj, flow_config fc)
      : providers(p), job(j), options(o), client(c), reputation(r), ledger(l), local(lr), note(n), flow(fj, fc) {}
  const std::vector<provider_handle>& providers;
  const job_spec& job;
  const client_options& options;
  const keypair& client;
  reputation_book* reputation;
  ledger::ledger_file* ledger;
  const local_runner& local;
  const std::function<void(const std::string&)>& note;
  job_flow flow;
  bid_request_ptr bid_req;
  std::map<size_t, std::pair<std::shared_ptr<std::atomic<bool>>, execute_request_ptr>> cancels;  // by attempt
  std::map<size_t, ledger::voucher_claim> vouchers;  // by provider: the chain payment sent with its job
  caf::actor caller;        // the thread waiting in run_job: the report goes there
  bool hand_off = false;    // blocking steps run on the caller (else in place)
  bool awaiting = false;    // a blocking step is out; `todo` waits for it
  std::deque<flow_action> todo;        // actions not performed yet, next first
  std::vector<std::pair<job_id, key32>> settled;
  bool over = false;
  clock_type::time_point t_start = clock_type::now(), t_bids, t_exec;
  bool bids_timed = false, exec_timed = false;
  bool got_result = false;   // a provider's result came back: a cancel no longer stops the job
};
using driver_ptr = std::shared_ptr<job_driver>;

execute_request_ptr make_exec(const job_driver& d, const flow_action& a, std::shared_ptr<std::atomic<bool>> cancel) {
  auto ex = std::make_shared<execute_request>();
  ex->job = d.bid_req->job;
  ex->client = d.client.public_key;
  ex->model_hash = d.job.model_hash;
  if (a.send_model) ex->model_bytes = d.job.model_bytes;
  ex->model_source = d.job.model_bytes;
  ex->inputs = d.job.inputs;
  ex->input_digest = tensors_digest(d.job.inputs);
  ex->price = a.bid.price;  // the price of the bid this attempt was awarded from (a.bid)
  ex->started_ms = unix_ms();
  ex->cancel = std::move(cancel);
  if (auto v = d.vouchers.find(a.provider); v != d.vouchers.end()) ex->voucher = v->second;
  return ex;
}

void finish(caf::event_based_actor* self, const driver_ptr& d) {
  d->over = true;
  d->todo.clear();
  auto rep = std::make_shared<job_report>();
  rep->used_quotes = d->flow.used_quotes();
  rep->st = d->flow.result();
  rep->settled = std::move(d->settled);
  job_outcome& res = rep->outcome;
  auto now = clock_type::now();
  if (!d->bids_timed) d->t_bids = now;
  if (!d->exec_timed) d->t_exec = now;
  res.outputs = d->flow.outputs();
  for (const auto& u : d->flow.providers_used()) {
    const provider_handle& p = d->providers[u.provider];
    provider_used used{node_hex(p.key), p.url, u.price, u.paid, u.agreed, false, {}};
    if (auto v = d->vouchers.find(u.provider); v != d->vouchers.end() && u.paid) {
      used.settled = true;
      used.paid_wei = ledger::decimal(ledger::word_value(v->second.price));
    }
    res.providers.push_back(std::move(used));
  }
  res.agreeing = d->flow.agreeing();
  res.method = d->flow.method();
  res.compute_ms = d->flow.compute_ms();
  res.queue_ms = ms_between(d->t_start, d->t_bids);
  res.total_ms = ms_between(d->t_start, now);
  res.transfer_ms = std::max(0.0, ms_between(d->t_bids, d->t_exec) - res.compute_ms);
  self->send(d->caller, job_done_atom::value, job_report_ptr(rep));
  self->quit();
}

void perform(caf::event_based_actor* self, const driver_ptr& d, std::vector<flow_action> actions);

// The actor that ran a step the job waited for is gone: the job ends.
void step_lost(caf::event_based_actor* self, const driver_ptr& d, const char* who, const caf::error& e) {
  d->awaiting = false;
  perform(self, d, d->flow.on_fatal(internal_error("{} went away ({})", who, self->system().render(e))));
}

// Runs `work` where it may block, then `then` on the actor (see the job's driver above).
void run_blocking(caf::event_based_actor* self, const driver_ptr& d, std::function<void()> work,
                  std::function<void()> then) {
  if (!d->hand_off) {
    work();
    then();
    return;
  }
  d->awaiting = true;
  auto step = std::make_shared<blocking_step>();
  step->run = std::move(work);
  self->request(d->caller, caf::infinite, blocking_atom::value, blocking_step_ptr(step))
      .await(
          [self, d, then = std::move(then)](bool ran) {
            d->awaiting = false;
            if (!ran) {
              perform(self, d, d->flow.on_fatal(internal_error("a step of the job failed on the calling thread")));
              return;
            }
            then();
            perform(self, d, {});  // what was queued behind the step
          },
          [self, d](caf::error& e) { step_lost(self, d, "the job's caller", e); });
}

void act(caf::event_based_actor* self, const driver_ptr& d, const flow_action& a) {
  const provider_handle* p = a.provider < d->providers.size() ? &d->providers[a.provider] : nullptr;
  switch (a.kind) {
    case action_kind::request_bids: {
      size_t i = a.provider;
      self->request(p->actor, std::chrono::milliseconds(std::max(1, d->options.bid_window_ms)), bid_atom::value, d->bid_req)
          .then([self, d, i](const bid_reply_ptr& r) { perform(self, d, d->flow.on_bid(i, *r)); },
                [self, d, i](caf::error& e) { perform(self, d, d->flow.on_bid_failed(i, self->system().render(e))); });
      break;
    }
    case action_kind::close_bids_after:
      self->delayed_send(self, std::chrono::milliseconds(a.delay_ms), bid_window_atom::value);
      break;
    case action_kind::send_job: {
      // A bid with chain terms is paid with a voucher that travels with the job.
      size_t at = a.attempt;
      std::unique_lock<std::mutex> in_order;  // the voucher, then the job into the provider's queue
      if (a.bid.terms) {
        std::string why;
        if (!d->options.payer) {
          why = "it is paid on a chain and this client has none configured";
        } else {
          in_order = std::unique_lock<std::mutex>(d->options.payer->send_order());
          if (auto v = d->options.payer->pay(p->key, *a.bid.terms); !v) why = "cannot pay it: " + v.error().message();
          else d->vouchers[a.provider] = *v;
        }
        if (!why.empty()) {
          if (in_order) in_order.unlock();
          perform(self, d, d->flow.on_unpaid(at, why));
          break;
        }
      }
      auto cancel = std::make_shared<std::atomic<bool>>(false);
      execute_request_ptr ex = make_exec(*d, a, cancel);
      d->cancels[at] = {cancel, ex};
      auto timeout = std::chrono::milliseconds(static_cast<int64_t>(d->options.timeout_s * 1000));
      self->request(p->actor, timeout, exec_atom::value, ex)
          .then([self, d, at](const execute_result_ptr& r) {
                  d->got_result = true;
                  perform(self, d, d->flow.on_result(at, r));
                },
                [self, d, at](caf::error& e) {
                  bool timed_out = e == caf::sec::request_timeout;
                  perform(self, d, d->flow.on_exec_failed(at, self->system().render(e), timed_out));
                });
      break;
    }
    case action_kind::cancel: {
      // An in-process provider stops at its next node; a remote one's proxy tells it.
      auto it = d->cancels.find(a.attempt);
      if (it != d->cancels.end()) {
        it->second.first->store(true);
        self->send(p->actor, cancel_atom::value, it->second.second);
      }
      break;
    }
    case action_kind::run_local: {
      auto mine = std::make_shared<expected<std::vector<tensor>>>(status(error_kind::internal, "no local engine"));
      run_blocking(
          self, d, [d, mine] { if (d->local) *mine = d->local(d->job.inputs); },
          [self, d, mine] { perform(self, d, d->flow.on_local_result(*mine)); });
      break;
    }
    case action_kind::record_reputation:
      if (d->reputation) d->reputation->record(node_hex(p->key), a.rep);
      break;
    case action_kind::keep_quote:
      if (d->options.quotes) {
        if (!d->flow.used_quotes()) {
          bid_reply standing = a.bid;
          standing.signature.reset();  // checked once, before the award
          d->options.quotes->put(standing, d->job.model_hash, unix_ms());
        }
        d->options.quotes->mark_cached(p->key, d->job.model_hash);
      }
      break;
    case action_kind::drop_quote:
      if (d->options.quotes) d->options.quotes->drop(p->key, d->job.model_hash);
      break;
    case action_kind::dispute: {
      const auto& r = a.result;
      ledger::receipt rc;
      rc.kind = ledger::receipt_kind::dispute;
      rc.job_id = r->job;
      rc.client_key = d->client.public_key;
      rc.provider_key = r->provider;
      rc.model_hash = d->job.model_hash;
      rc.input_digest = tensors_digest(d->job.inputs);
      rc.output_digest = r->output_digest;
      rc.started_ms = r->receipt.started_ms;
      rc.finished_ms = r->receipt.finished_ms;
      rc.provider_sig = r->result_sig;
      ledger::sign_as_client(rc, d->client.secret_key);
      if (d->ledger && ledger::verify_receipt(rc).is_ok())
        run_blocking(self, d, [d, rc] { (void)d->ledger->append(rc); }, [] {});
      break;
    }
    case action_kind::pay: {
      // The provider's signature and the receipt's fields were checked by the flow.
      auto rc = std::make_shared<ledger::receipt>(a.receipt);
      ledger::sign_as_client(*rc, d->client.secret_key);
      const ledger::voucher_claim* voucher = nullptr;
      if (auto v = d->vouchers.find(a.provider); v != d->vouchers.end()) voucher = &v->second;
      auto recorded = std::make_shared<status>(status::ok());
      auto send = [self, d, p, at = a.attempt, rc, recorded] {
        if (!recorded->is_ok()) {
          perform(self, d, d->flow.on_fatal(*recorded));
          return;
        }
        auto settle = [self, d, at, job = rc->job_id, provider = rc->provider_key](net::receipt_status answer) {
          if (d->options.outbox && answer != net::receipt_status::retry_later) d->settled.push_back({job, provider});
          perform(self, d, d->flow.on_receipt_answer(at, answer));
        };
        self->request(p->actor, kReceiptTimeout, receipt_atom::value, receipt_ptr(std::const_pointer_cast<const ledger::receipt>(rc)))
            .then([settle](int32_t code) { settle(static_cast<net::receipt_status>(code)); },
                  [settle](caf::error&) { settle(net::receipt_status::retry_later); });
      };
      if (d->options.recorder && d->hand_off) {
        // With the receipts of other jobs, on the recorder's thread (actors/pay_recorder.h).
        auto asked = std::make_shared<pay_record>();
        asked->receipt = *rc;
        if (voucher) asked->claim = *voucher;
        d->awaiting = true;
        self->request(d->options.recorder->actor(), caf::infinite, pay_record_atom::value, pay_record_ptr(asked))
            .await(
                [self, d, recorded, send = std::move(send)](const pay_answer_ptr& st) {
                  d->awaiting = false;
                  *recorded = st ? *st : internal_error("the receipt recorder gave no answer");
                  send();
                  perform(self, d, {});  // what was queued behind the step
                },
                [self, d](caf::error& e) { step_lost(self, d, "the receipt recorder", e); });
      } else if (d->ledger || d->options.outbox) {
        // The outbox keeps the receipt before the ledger takes it (see record_receipts).
        auto record = [d, rc, voucher, recorded] {
          *recorded = record_receipts({{rc.get(), voucher}}, d->ledger, d->options.outbox, d->note).front();
        };
        run_blocking(self, d, std::move(record), std::move(send));
      } else {
        send();  // nothing to write down first
      }
      break;
    }
    case action_kind::note:
      d->note(a.text);
      break;
    case action_kind::finish:
      finish(self, d);
      return;
  }
}

// Performs `actions` ahead of those still queued; a blocking step that is out holds them all.
void perform(caf::event_based_actor* self, const driver_ptr& d, std::vector<flow_action> actions) {
  if (d->over) return;
  d->todo.insert(d->todo.begin(), std::make_move_iterator(actions.begin()), std::make_move_iterator(actions.end()));
  while (!d->over && !d->awaiting) {
    if (d->todo.empty()) break;
    flow_action a = std::move(d->todo.front());
    d->todo.pop_front();
    act(self, d, a);
  }
  if (d->over) return;
  auto ph = d->flow.phase();
  if (!d->bids_timed && ph != flow_phase::idle && ph != flow_phase::bidding) {
    d->bids_timed = true;
    d->t_bids = clock_type::now();
  }
  if (!d->exec_timed && (ph == flow_phase::local_check || ph == flow_phase::paying || ph == flow_phase::done)) {
    d->exec_timed = true;
    d->t_exec = clock_type::now();
  }
}

caf::behavior job_actor(caf::event_based_actor* self, driver_ptr d) {
  // A provider actor that goes away (a dropped connection) fails its bid and attempts at once.
  for (const auto& p : d->providers)
    if (p.actor) self->monitor(p.actor);
  self->set_down_handler([self, d](caf::down_msg& m) {
    for (size_t i = 0; i < d->providers.size() && !d->over; ++i)
      if (d->providers[i].actor && d->providers[i].actor.address() == m.source) perform(self, d, d->flow.on_provider_gone(i));
  });
  return {
      [self, d](job_start_atom) {
        std::vector<flow_candidate> cands;
        std::vector<std::pair<size_t, bid_reply>> standing;
        int64_t now = unix_ms();
        for (size_t i = 0; i < d->providers.size(); ++i) {
          const auto& p = d->providers[i];
          std::string hex = node_hex(p.key);
          flow_candidate c;
          c.key = p.key;
          c.url = p.url;
          c.trusted = !d->reputation || d->reputation->trusted(hex);
          c.cooling = d->reputation && d->reputation->cooling(hex, now);
          c.reputation = d->reputation ? d->reputation->score(hex) : 0.5;
          c.is_new = d->reputation ? d->reputation->is_new(hex) : true;
          c.spot_check_rate = d->reputation ? d->reputation->spot_check_rate(hex, d->options.spot_check_rate)
                                            : d->options.spot_check_rate;
          cands.push_back(c);
          if (d->options.quotes)
            if (auto q = d->options.quotes->get(p.key, d->job.model_hash, now)) standing.push_back({i, q->bid});
        }
        perform(self, d, d->flow.start(std::move(cands), std::move(standing)));
        if (d->options.cancel && !d->over) self->delayed_send(self, kCancelCheck, cancel_check_atom::value);
      },
      [self, d](bid_window_atom) { perform(self, d, d->flow.on_bid_window_closed()); },
      // The caller gave up on the job (its HTTP client went away): before any result is in, the
      // job fails, which cancels its open attempts at their providers and pays nothing.
      [self, d](cancel_check_atom) {
        if (d->over || d->got_result) return;
        if (d->options.cancel->load()) {
          d->note("the job was cancelled");
          perform(self, d, d->flow.on_fatal(status(error_kind::io, "the job was cancelled before a result came back")));
          return;
        }
        self->delayed_send(self, kCancelCheck, cancel_check_atom::value);
      },
  };
}

job_report run_job_once(caf::actor_system& sys, const std::vector<provider_handle>& providers, const job_spec& job,
                        const client_options& options, const keypair& client, reputation_book* reputation,
                        ledger::ledger_file* ledger, const local_runner& local,
                        const std::function<void(const std::string&)>& note) {
  auto req = std::make_shared<bid_request>();
  req->job = new_job_id();
  req->client = client.public_key;
  req->model_hash = job.model_hash;
  req->model_bytes = job.model_bytes ? static_cast<int64_t>(job.model_bytes->size()) : 0;
  req->gflops = job.gflops;
  for (const auto& t : job.inputs) req->input_bytes += static_cast<int64_t>(t.bytes());
  req->max_price = options.max_price;

  flow_job fj;
  fj.job = req->job;
  fj.client = client.public_key;
  fj.model_hash = job.model_hash;
  fj.model_bytes = req->model_bytes;
  fj.input_digest = tensors_digest(job.inputs);
  flow_config fc;
  fc.redundancy = std::max(1, options.redundancy);
  fc.min_results = options.min_redundancy;
  fc.max_price = options.max_price;
  fc.bid_window_ms = std::max(1, options.bid_window_ms);
  fc.has_local = static_cast<bool>(local);
  fc.has_model_bytes = static_cast<bool>(job.model_bytes);
  auto d = std::make_shared<job_driver>(providers, job, options, client, reputation, ledger, local, note, fj, fc);
  d->bid_req = req;

  job_report out;
  caf::scoped_actor self{sys};
  d->caller = caf::actor{self};
  d->hand_off = !options.payer;
  caf::actor worker = d->hand_off ? sys.spawn(job_actor, d) : sys.spawn<caf::detached>(job_actor, d);
  self->monitor(worker);
  self->send(worker, job_start_atom::value);
  bool waiting = true;
  self->receive_while(waiting)(
      [&](blocking_atom, const blocking_step_ptr& step) {
        try {
          step->run();
          return true;
        } catch (const std::exception& e) {
          note(std::string("a step of the job failed: ") + e.what());
          return false;
        }
      },
      [&](job_done_atom, const job_report_ptr& r) {
        out = *r;
        waiting = false;
      },
      [&](caf::down_msg& m) {
        if (m.source != worker.address()) return;
        out.st = internal_error("the job ended unexpectedly ({})", sys.render(m.reason));
        waiting = false;
      });
  if (reputation && options.save_reputation) (void)reputation->save();
  if (options.outbox)
    for (const auto& [job_id, provider] : out.settled) {
      status st = options.outbox->remove(job_id, provider);
      if (!st.is_ok()) note("cannot update the receipt outbox: " + st.message());
    }
  return out;
}

}  // namespace

expected<job_outcome> run_job(caf::actor_system& sys, const std::vector<provider_handle>& providers,
                              const job_spec& job, const client_options& options, const keypair& client,
                              reputation_book* reputation, ledger::ledger_file* ledger, const local_runner& local,
                              const std::function<void(const std::string&)>& note) {
  // Receipts of earlier jobs that their providers have not recorded yet go first.
  if (options.outbox && options.redeliver_before_job)
    (void)redeliver_receipts(sys, providers, *options.outbox, 16, std::chrono::seconds(5), note, ledger);
  auto cancelled = [&] { return options.cancel && options.cancel->load(); };
  if (cancelled()) return status(error_kind::io, "the job was cancelled before it started");
  auto r = run_job_once(sys, providers, job, options, client, reputation, ledger, local, note);
  if (r.used_quotes && !r.st.is_ok() && r.st.kind() == error_kind::no_provider && !cancelled()) {
    // The standing bids did not hold (a provider restarted or went away): bid afresh.
    options.quotes->drop_model(job.model_hash);
    r = run_job_once(sys, providers, job, options, client, reputation, ledger, local, note);
  }
  if (!r.st.is_ok()) return r.st;
  return std::move(r.outcome);
}

}  // namespace gpugrid::grid
