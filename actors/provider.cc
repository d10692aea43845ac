#include "actors/provider.h"
#include "actors/mailbox_group.h"
#include "actors/payment.h"
#include "actors/receipt_outbox.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <thread>

#include <caf/all.hpp>

#include "actors/atoms.h"
#include "actors/batcher.h"
#include "engine/backend.h"
#include "engine/flops.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "net/hash.h"

namespace gpugrid::grid {

namespace {

// A message about a file this provider keeps, with the file's path (and its folder) taken out.
std::string strip_path(std::string text, const std::string& path) {
  for (const std::string& p : {path, std::filesystem::path(path).parent_path().string()}) {
    if (p.empty()) continue;
    for (size_t at; (at = text.find(p)) != std::string::npos;) text.replace(at, p.size(), "<model>");
  }
  return text;
}

std::vector<device_summary> discover_devices(const std::string& device) {
  std::vector<device_summary> out;
  if (device != "cpu") {
    std::string note;
    for (const auto& d : cuda_devices(&note)) {
      if (device != "auto" && device != "cuda" && device != d.id) continue;
      device_summary s;
      s.name = d.name;
      s.kind = "cuda";
      s.memory_bytes = d.total_memory;
      s.cc_major = d.cc_major;
      s.cc_minor = d.cc_minor;
      s.gflops = d.gemm_tflops > 0 ? d.gemm_tflops * 1000 : 0;
      out.push_back(s);
      if (device != "auto") break;
    }
  }
  if (out.empty()) {
    device_summary s;
    s.name = fmt::format("CPU ({} threads)", hardware_threads());
    s.kind = "cpu";
    s.gflops = 20.0 * hardware_threads();  // refined by measured job times
    out.push_back(s);
  }
  return out;
}

}  // namespace

provider_core::provider_core(keypair identity, std::shared_ptr<model_cache> cache, provider_options options,
                             std::shared_ptr<ledger::ledger_file> ledger)
    : id_(identity), cache_(std::move(cache)), options_(std::move(options)), ledger_(std::move(ledger)) {
  devices_ = discover_devices(options_.device);
  if (options_.slots < 1) options_.slots = 1;
  // Unpaid jobs survive a restart; those whose receipts the ledger already holds are paid.
  auto book = unpaid_book::open(options_.unpaid_file, [this](const job_id& j) {
    return ledger_ && ledger_->contains(j, id_.public_key);
  });
  if (book) {
    unpaid_ = std::move(book).value();
  } else {
    unpaid_error_ = book.error().message();
    if (options_.log) options_.log("cannot keep unpaid-job counts: " + unpaid_error_ + "; taking no jobs");
  }
}

provider_core::~provider_core() = default;

provider_info provider_core::info() const {
  provider_info i;
  i.key = id_.public_key;
  i.devices = devices_;
  i.price_per_gflop = options_.price.price_per_gflop;
  i.slots = options_.slots;
  if (ledger_) {
    auto h = ledger_->current_head();
    i.ledger_head = h.hash;
    i.ledger_count = h.count;
  }
  return i;
}

bid_reply provider_core::bid(const bid_request& req) {
  ++counters_.bids;
  bid_reply r;
  r.job = req.job;
  r.provider = id_.public_key;
  auto decline = [&](decline_reason why, std::string detail) {
    ++counters_.declines;
    r.accepted = false;
    r.reason = why;
    r.detail = std::move(detail);
    return r;
  };
  // The price follows the model's cost as measured here when this provider ran it before;
  // the client's figure only for a model it has not seen (that first run is metered).
  double gflops = req.gflops;
  if (auto known = known_gflops(req.model_hash)) gflops = std::max(gflops, *known);
  int busy = static_cast<int>(counters_.busy.load() + counters_.queued.load());
  admission_facts f;
  {
    std::lock_guard<std::mutex> lock(mu_);
    f = facts_locked(req.client, req.model_bytes);
    auto bad = bad_models_.find(req.model_hash);
    if (bad != bad_models_.end()) f.bad_model = bad->second;
  }
  f.busy = busy;
  f.price = quote_price(options_.price, gflops, busy, options_.slots);
  f.max_price = req.max_price;
  admission a = admit_bid(f);
  if (!a.accepted) return decline(a.reason, a.detail);
  r.price = f.price;
  if (options_.payment) r.terms = options_.payment->terms(r.price);
  double rate = 1.0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rate = rate_gflops_per_s(req.model_hash);
  }
  int queued = std::max(0, busy - options_.slots + 1);
  r.eta_ms = estimate_eta_ms(gflops, rate, queued);
  r.model_cached = cache_ && cache_->contains(req.model_hash);
  r.capacity = queue_limit();
  r.accepted = true;
  return r;
}

expected<std::shared_ptr<session>> provider_core::session_for(const digest32& hash,
                                                              const std::shared_ptr<const std::string>& bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(hash);
    if (it != sessions_.end()) {
      it->second.last_used = ++use_clock_;
      return it->second.s;
    }
  }
  std::shared_ptr<graph> g;
  int64_t footprint = 0;
  if (bytes) {
    footprint = static_cast<int64_t>(bytes->size());
    if (static_cast<int64_t>(bytes->size()) > options_.max_model_bytes)
      return invalid_input("model is {} bytes; this provider takes at most {}", bytes->size(), options_.max_model_bytes);
    if (ledger::blake2b_256(*bytes) != hash) return invalid_input("model bytes do not match the announced model hash");
    counters_.model_bytes_received += static_cast<int64_t>(bytes->size());
    if (cache_) {
      status st = cache_->put(hash, *bytes);
      if (!st.is_ok()) return st;
    }
    load_options lo;  // no base folder: external data is refused
    lo.max_weight_bytes = options_.max_model_bytes;
    auto loaded = load_model_from_bytes(*bytes, "model " + ledger::to_hex(hash).substr(0, 12), lo);
    if (!loaded) return loaded.error();
    g = std::move(loaded).value();
  } else {
    auto path = cache_ ? cache_->path_of(hash) : std::nullopt;
    if (!path) return status(error_kind::no_provider, "model not cached here; send it with the job");
    // Loaded from its bytes with no folder to resolve external data in: a model may only use
    // what was uploaded as that model, never another file of the cache. Errors name the model
    // by its hash, never the cache's path.
    std::string name = "model " + ledger::to_hex(hash).substr(0, 12);
    std::string file_bytes;
    {
      std::ifstream in(*path, std::ios::binary);
      if (in) file_bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (!in && !in.eof()) return status(error_kind::no_provider, name + ": cannot read the cached copy; send it with the job");
    }
    footprint = static_cast<int64_t>(file_bytes.size());
    load_options lo;
    lo.max_weight_bytes = options_.max_model_bytes;
    auto loaded = load_model_from_bytes(file_bytes, name, lo);
    if (!loaded) return status(loaded.error().kind(), strip_path(loaded.error().message(), *path));
    g = std::move(loaded).value();
  }
  session_options so;
  so.device = options_.device;
  so.threads = options_.threads > 0 ? options_.threads : std::max(1, hardware_threads() / options_.slots);
  auto s = session::create(g, so);
  if (!s) {
    std::lock_guard<std::mutex> lock(mu_);
    bad_models_[hash] = s.error().message();
    return s.error();
  }
  std::shared_ptr<session> shared(std::move(s).value());
  std::lock_guard<std::mutex> lock(mu_);
  auto again = sessions_.find(hash);  // another worker loaded it meanwhile
  if (again != sessions_.end()) {
    again->second.last_used = ++use_clock_;
    return again->second.s;
  }
  // Least recently used models leave memory first (a running job keeps its own reference).
  while (!sessions_.empty() && resident_bytes_ + footprint > memory_budget()) {
    auto lru = sessions_.begin();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
      if (it->second.last_used < lru->second.last_used) lru = it;
    resident_bytes_ -= lru->second.bytes;
    sessions_.erase(lru);
  }
  sessions_[hash] = {shared, footprint, ++use_clock_};
  resident_bytes_ += footprint;
  return shared;
}

int64_t provider_core::memory_budget() const {
  return options_.max_memory_bytes > 0 ? options_.max_memory_bytes : 4 * options_.max_model_bytes;
}

int64_t provider_core::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return resident_bytes_;
}

size_t provider_core::resident_models() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

std::optional<double> provider_core::known_gflops(const digest32& hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = gflops_.find(hash);
  if (it == gflops_.end()) return std::nullopt;
  return it->second.gflops;
}

double provider_core::rate_gflops_per_s(const digest32& hash) const {
  double rate = devices_.empty() ? 1.0 : std::max(1e-3, devices_[0].gflops);
  auto m = measured_ms_.find(hash);
  auto g = gflops_.find(hash);
  if (m != measured_ms_.end() && g != gflops_.end() && m->second > 0 && g->second.gflops > 0)
    rate = g->second.gflops / (m->second / 1000.0);
  return rate;
}

execute_result provider_core::failed(execute_result& res, const status& st) {
  ++counters_.failures;
  res.ok = false;
  res.error = cache_ ? strip_path(st.message(), cache_->dir() + "/x") : st.message();  // never the cache's path
  res.error_is_input = st.kind() == error_kind::invalid_input;
  res.failure_kind = st.kind();
  return res;
}

// What a job needs to run, found before it runs: its session and what it paid for.
struct provider_core::prepared_job {
  std::shared_ptr<session> s;
  std::optional<double> known;  // the model's exact cost, when a whole run was metered here
  double paid_gflops = 0;
  double allowed_flops = 0;
  int64_t limit_ms = 0;
};

bool provider_core::pay_before_run(const execute_request& req, execute_result& res) {
  res.job = req.job;
  res.provider = id_.public_key;
  if (!admit_and_pay(req, facts_for(req.client), res)) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (paid_ahead_.insert(req.job).second) paid_ahead_order_.push_back(req.job);
  while (paid_ahead_order_.size() > 65536) {  // jobs that never reached a worker
    paid_ahead_.erase(paid_ahead_order_.front());
    paid_ahead_order_.pop_front();
  }
  return true;
}

admission_facts provider_core::facts_for(const key32& client) const {
  std::lock_guard<std::mutex> lock(mu_);
  return facts_locked(client, 0);
}

bool provider_core::admit_and_pay(const execute_request& req, const admission_facts& facts, execute_result& res) {
  if (admission a = admit_execute(facts, req.price, 0); !a.accepted) return failed(res, internal_error("{}", a.detail)), false;
  if (tensors_digest(req.inputs) != req.input_digest) return failed(res, invalid_input("inputs do not match their digest")), false;
  if (options_.payment) {  // paid before it starts, or not run at all
    status paid = options_.payment->admit(req);
    // Kind usage: the node answers "not awarded" (the client tries its next bid, and sends no model).
    if (!paid.is_ok()) return failed(res, status(error_kind::usage, "payment refused: " + paid.message())), false;
  }
  return true;
}

bool provider_core::prepare(const execute_request& req, execute_result& res, prepared_job& p) {
  res.job = req.job;
  res.provider = id_.public_key;
  bool paid_ahead = false;
  if (options_.payment) {
    std::lock_guard<std::mutex> lock(mu_);
    paid_ahead = paid_ahead_.erase(req.job) > 0;  // (paid_ahead_order_ forgets it at its bound)
  }
  const admission_facts facts = facts_for(req.client);
  if (!paid_ahead && !admit_and_pay(req, facts, res)) return false;
  res.model_was_cached = !req.model_bytes;
  auto s = session_for(req.model_hash, req.model_bytes);
  if (!s) return failed(res, s.error()), false;
  p.s = *s;
  for (const auto& t : req.inputs) counters_.input_bytes += static_cast<int64_t>(t.bytes());
  if (status st = before_run(req); !st.is_ok()) return failed(res, st), false;

  // What the job paid for, in GFLOP, and what the model costs as measured here. A model seen
  // before is priced from that measure; the first run of a model is metered node by node and
  // stopped once it has used twice what it paid for (plus one GFLOP of slack).
  const price_policy& pp = options_.price;
  p.paid_gflops = pp.price_per_gflop > 0 ? req.price / pp.price_per_gflop : std::numeric_limits<double>::infinity();
  double lower_bound = 0;       // else what a stopped run used before it was stopped
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto g = gflops_.find(req.model_hash);
    if (g != gflops_.end() && g->second.exact) p.known = g->second.gflops;
    if (g != gflops_.end() && !g->second.exact) lower_bound = g->second.gflops;
  }
  // The job pays what the model costs here: its exact cost, or at least what a stopped run used.
  double required = p.known ? quote_price(pp, *p.known, 0, options_.slots)
                            : (lower_bound > 0 ? quote_price(pp, lower_bound, 0, options_.slots) : 0.0);
  if (admission a = admit_execute(facts, req.price, required); !a.accepted) {
    double gf = p.known ? *p.known : lower_bound;
    return failed(res, invalid_input("the job costs {}{:.6g} GFLOP here: {}", p.known ? "" : "at least ", gf, a.detail)), false;
  }
  double rate = 1.0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rate = rate_gflops_per_s(req.model_hash);
  }
  double work = p.known ? *p.known : p.paid_gflops;
  double expected_ms = std::isfinite(work) ? work / rate * 1000.0 : static_cast<double>(options_.max_job_ms);
  p.limit_ms = static_cast<int64_t>(std::clamp(10 * expected_ms, static_cast<double>(options_.min_job_ms),
                                               static_cast<double>(options_.max_job_ms)));
  p.allowed_flops = std::isfinite(p.paid_gflops) ? (2 * p.paid_gflops + options_.free_gflops) * 1e9
                                                 : std::numeric_limits<double>::infinity();
  return true;
}

execute_result provider_core::execute(const execute_request& req) {
  execute_result res;
  ++counters_.queued;
  struct busy_guard {
    provider_counters& c;
    explicit busy_guard(provider_counters& cc) : c(cc) { --c.queued; ++c.busy; }
    ~busy_guard() { --c.busy; }
  } guard(counters_);
  prepared_job p;
  if (!prepare(req, res, p)) return res;
  return run_prepared(req, res, p);
}

execute_result provider_core::run_prepared(const execute_request& req, execute_result& res, const prepared_job& p) {
  const std::optional<double>& known = p.known;
  auto t0 = std::chrono::steady_clock::now();
  auto deadline = t0 + std::chrono::milliseconds(p.limit_ms);
  double metered = 0;
  enum class why_stopped { none, cancelled, stopping, out_of_time, over_budget } why = why_stopped::none;
  session::node_observer meter = [&](const node& n, const std::vector<const tensor*>& in,
                                     const std::vector<const tensor*>& out) {
    metered += static_cast<double>(node_flops(n, in, out));
  };
  session::stop_check stop = [&] {
    if (req.cancel && req.cancel->load()) why = why_stopped::cancelled;
    else if (stopping_) why = why_stopped::stopping;
    else if (std::chrono::steady_clock::now() > deadline) why = why_stopped::out_of_time;
    else if (!known && metered > p.allowed_flops) why = why_stopped::over_budget;
    return why != why_stopped::none;
  };
  auto out = p.s->run(req.inputs, nullptr, known ? nullptr : &meter, &stop);
  res.compute_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  counters_.batch_sizes[batch_size_bucket(1)]++;
  // The last node is metered after it ran: a run that overdrew there is not delivered either.
  if (out && !known && metered > p.allowed_flops) why = why_stopped::over_budget;
  if (!known && (out || why == why_stopped::over_budget)) {
    // Learned (or, when stopped, a lower bound): later bids for this model quote it.
    std::lock_guard<std::mutex> lock(mu_);
    model_cost& g = gflops_[req.model_hash];
    g.gflops = out ? metered / 1e9 : std::max(g.gflops, metered / 1e9);
    g.exact = g.exact || static_cast<bool>(out);
  }
  switch (why) {
    case why_stopped::none: break;
    case why_stopped::cancelled: return failed(res, status(error_kind::io, "the job was cancelled: its client went away"));
    case why_stopped::stopping: return failed(res, status(error_kind::io, "the provider is stopping"));
    case why_stopped::out_of_time:
      return failed(res, status(error_kind::io, fmt::format("the job ran past its time limit of {} ms", p.limit_ms)));
    case why_stopped::over_budget:
      return failed(res, status(error_kind::io, fmt::format("the job needs more than the {:.6g} GFLOP it paid for", p.paid_gflops)));
  }
  if (!out) return failed(res, out.error());
  if (known) {
    std::lock_guard<std::mutex> lock(mu_);
    measured_ms_[req.model_hash] = res.compute_ms;  // a metered run is slower: not a rate
  }
  return finish(req, res, std::move(out).value());
}

execute_result provider_core::finish(const execute_request& req, execute_result& res, std::vector<tensor> outputs) {
  for (const auto& t : outputs)
    if (t.is_sequence() || t.is_none())
      return failed(res, invalid_input("the model returns a sequence or optional value; the grid carries tensors only"));
  res.outputs = std::move(outputs);
  after_run(res.outputs);
  for (const auto& t : res.outputs) counters_.output_bytes += static_cast<int64_t>(t.bytes());
  res.output_digest = tensors_digest(res.outputs);
  {  // the signed result statement: a wrong result with this signature is evidence
    ledger::receipt tmp;
    tmp.kind = ledger::receipt_kind::dispute;
    tmp.job_id = req.job;
    tmp.output_digest = res.output_digest;
    ledger::sign_as_provider(tmp, id_.secret_key);
    res.result_sig = tmp.provider_sig;
  }
  ledger::receipt& r = res.receipt;
  r.kind = ledger::receipt_kind::payment;
  r.job_id = req.job;
  r.client_key = req.client;
  r.provider_key = id_.public_key;
  r.model_hash = req.model_hash;
  r.input_digest = req.input_digest;
  r.output_digest = res.output_digest;
  r.price_micros = static_cast<int64_t>(req.price * 1e6 + 0.5);
  r.started_ms = req.started_ms;
  r.finished_ms = unix_ms();
  ledger::sign_as_provider(r, id_.secret_key);
  remember_issued(r);
  {
    std::lock_guard<std::mutex> lock(mu_);
    status st = unpaid_.add(req.job, req.client);
    if (!st.is_ok() && options_.log) options_.log("cannot record an unpaid job: " + st.message());
  }
  res.ok = true;
  ++counters_.jobs;
  return res;
}

admission_facts provider_core::facts_locked(const key32& client, int64_t model_bytes) const {
  admission_facts f;
  f.draining = draining_;
  f.ledger_failed = ledger_failed_ || !unpaid_error_.empty();
  f.ledger_error = unpaid_error_.empty() ? ledger_error_ : unpaid_error_;
  f.unpaid_for_client = unpaid_.count(client);
  f.unpaid_credit = options_.unpaid_credit;
  f.model_bytes = model_bytes;
  f.max_model_bytes = options_.max_model_bytes;
  f.memory_budget = memory_budget();
  f.slots = options_.slots;
  f.capacity = job_capacity();
  return f;
}

bool provider_core::batchable(const digest32& hash, const session& s) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = batchable_.find(hash);
  if (it != batchable_.end()) return it->second;
  bool ok = model_allows_batching(s.model());
  batchable_[hash] = ok;
  return ok;
}

std::vector<execute_result> provider_core::execute_group(const std::vector<std::shared_ptr<const execute_request>>& reqs) {
  size_t n = reqs.size();
  counters_.queued += static_cast<int64_t>(n);
  struct busy_guard {
    provider_counters& c;
    int64_t n;
    busy_guard(provider_counters& cc, int64_t k) : c(cc), n(k) { c.queued -= n; c.busy += n; }
    ~busy_guard() { c.busy -= n; }
  } guard(counters_, static_cast<int64_t>(n));
  std::vector<execute_result> results(n);
  std::vector<prepared_job> prepared(n);
  // Jobs that may share one execution: prepared, priced from a measured cost (a model's first,
  // metered run is always alone), on the same loaded session of a model that allows batching.
  std::vector<size_t> mergeable;
  std::vector<size_t> alone;
  for (size_t k = 0; k < n; ++k) {
    if (!prepare(*reqs[k], results[k], prepared[k])) continue;
    bool ok = prepared[k].known.has_value() && batchable(reqs[k]->model_hash, *prepared[k].s) &&
              (mergeable.empty() || prepared[mergeable[0]].s == prepared[k].s);
    (ok ? mergeable : alone).push_back(k);
  }
  if (mergeable.size() < 2) {
    alone.insert(alone.end(), mergeable.begin(), mergeable.end());
    mergeable.clear();
  }
  if (!mergeable.empty()) {
    std::vector<const std::vector<tensor>*> inputs;
    int64_t limit_ms = 0;
    for (size_t k : mergeable) {
      inputs.push_back(&reqs[k]->inputs);
      limit_ms += prepared[k].limit_ms;
    }
    limit_ms = std::min(limit_ms, options_.max_job_ms);
    auto t0 = std::chrono::steady_clock::now();
    auto deadline = t0 + std::chrono::milliseconds(limit_ms);
    session& s = *prepared[mergeable[0]].s;
    // A merged run stops when every job in it was cancelled, the provider stops, or the jobs'
    // time limits together run out.
    std::string stopped;  // why the merged run was stopped; then nobody runs again alone
    session::stop_check stop = [&] {
      if (stopping_) stopped = "the provider is stopping";
      else if (std::chrono::steady_clock::now() > deadline)
        stopped = fmt::format("the jobs ran past their time limit of {} ms together", limit_ms);
      if (!stopped.empty()) return true;
      for (size_t k : mergeable)
        if (!reqs[k]->cancel || !reqs[k]->cancel->load()) return false;
      stopped = "the job was cancelled: its client went away";
      return true;
    };
    double merged_ms = 0;
    std::vector<execute_result> single(mergeable.size());
    std::vector<bool> single_done(mergeable.size(), false);
    auto report = run_batch(
        inputs,
        [&](const std::vector<tensor>& merged) {
          auto out = s.run(merged, nullptr, nullptr, &stop);
          merged_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          return out;
        },
        [&](size_t i) -> expected<std::vector<tensor>> {
          // Alone, as any job runs (its own limits and cancellation); its result is final.
          size_t k = mergeable[i];
          if (!stopped.empty()) single[i] = failed(results[k], status(error_kind::io, stopped));
          else single[i] = run_prepared(*reqs[k], results[k], prepared[k]);
          single_done[i] = true;
          return std::vector<tensor>{};
        });
    if (report.merged) {
      ++counters_.batched_executions;
      counters_.batched_jobs += static_cast<int64_t>(mergeable.size());
      counters_.batch_sizes[batch_size_bucket(static_cast<int64_t>(mergeable.size()))]++;
      {
        std::lock_guard<std::mutex> lock(mu_);
        measured_ms_[reqs[mergeable[0]]->model_hash] = merged_ms / static_cast<double>(mergeable.size());
      }
      for (size_t i = 0; i < mergeable.size(); ++i) {
        size_t k = mergeable[i];
        results[k].compute_ms = merged_ms;
        if (reqs[k]->cancel && reqs[k]->cancel->load()) {
          failed(results[k], status(error_kind::io, "the job was cancelled: its client went away"));
          continue;
        }
        finish(*reqs[k], results[k], std::move(report.results[i]).value());
      }
    } else {
      if (report.fell_back) ++counters_.batch_fallbacks;
      for (size_t i = 0; i < mergeable.size(); ++i) results[mergeable[i]] = std::move(single[i]);
    }
  }
  for (size_t k : alone) results[k] = run_prepared(*reqs[k], results[k], prepared[k]);
  return results;
}

int provider_core::job_capacity() const {
  int per_slot = options_.batch.enabled() ? std::max(2, options_.batch.max_batch) + 1 : 2;
  return per_slot * options_.slots;
}

int provider_core::queue_limit() const { return std::max(kQueuePerSlot * std::max(1, options_.slots), job_capacity()); }

int provider_core::unpaid_jobs(const key32& client) {
  std::lock_guard<std::mutex> lock(mu_);
  return unpaid_.count(client);
}

namespace {
constexpr size_t kIssuedKept = 16384;  // about 1.5 MiB

digest32 issued_digest(const ledger::receipt& r) {
  std::string bytes = r.body_bytes();
  bytes.append(reinterpret_cast<const char*>(r.provider_sig.data()), r.provider_sig.size());
  return net::blake2b_256(bytes);
}
}  // namespace

void provider_core::remember_issued(const ledger::receipt& r) {
  const digest32 d = issued_digest(r);
  std::lock_guard<std::mutex> lock(issued_mu_);
  if (issued_.insert_or_assign(r.job_id, d).second) issued_order_.push_back(r.job_id);
  while (issued_order_.size() > kIssuedKept) {
    issued_.erase(issued_order_.front());
    issued_order_.pop_front();
  }
}

bool provider_core::issued_here(const ledger::receipt& r) {
  const digest32 d = issued_digest(r);
  std::lock_guard<std::mutex> lock(issued_mu_);
  auto it = issued_.find(r.job_id);
  return it != issued_.end() && it->second == d;
}

status provider_core::accept_receipt(const ledger::receipt& r) { return accept_receipts({&r}).front(); }

status provider_core::check_receipt(const ledger::receipt& r) {
  if (r.provider_key != id_.public_key) return invalid_input("receipt is for another provider");
  if (r.kind != ledger::receipt_kind::payment && r.kind != ledger::receipt_kind::generation)
    return invalid_input("only payment receipts are recorded by a provider");
  // This provider's own signature shows it issued the receipt (in this run or before a restart).
  if (!issued_here(r) && !ledger::provider_signature_is(r, id_.secret_key))
    return invalid_input("not a receipt issued here: the provider's signature does not verify");
  return ledger::verify_client_signature(r);
}

std::vector<status> provider_core::accept_receipts(const std::vector<const ledger::receipt*>& rs) {
  std::vector<status> out(rs.size(), status::ok());
  std::vector<bool> acceptable(rs.size(), false);
  // Those acceptable and not in the ledger yet are appended together, each with its voucher.
  std::vector<std::optional<ledger::voucher_claim>> claims(rs.size());
  std::vector<size_t> appended;
  std::vector<ledger::ledger_file::append_request> list;
  for (size_t i = 0; i < rs.size(); ++i) {
    out[i] = check_receipt(*rs[i]);
    acceptable[i] = out[i].is_ok();
    if (!acceptable[i] || !ledger_ || ledger_->contains(rs[i]->job_id, rs[i]->provider_key)) continue;
    if (options_.payment) claims[i] = options_.payment->claim_for(rs[i]->job_id);
    appended.push_back(i);
    list.push_back({rs[i], claims[i] ? &*claims[i] : nullptr});
  }
  if (!list.empty()) {
    auto heads = ledger_->append_verified_all(list);
    for (size_t k = 0; k < appended.size(); ++k) {
      const ledger::receipt& r = *rs[appended[k]];
      // A second delivery of a receipt in the same group finds the first one's entry.
      if (k < heads.size() && !heads[k] && !ledger_->contains(r.job_id, r.provider_key)) out[appended[k]] = heads[k].error();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < rs.size(); ++i) {
    if (!acceptable[i]) continue;
    const status& st = out[i];
    if (!st.is_ok()) {
      if (st.kind() == error_kind::invalid_input) continue;
      if (!ledger_failed_.exchange(true)) {
        ledger_error_ = st.message();
        if (options_.log) options_.log("cannot record payments: " + st.message() + "; taking no jobs until the ledger can be written");
      }
      continue;
    }
    if (ledger_failed_.exchange(false) && options_.log) options_.log("the ledger can be written again; taking jobs");
    status pst = unpaid_.paid(rs[i]->job_id);
    if (!pst.is_ok() && options_.log) options_.log("cannot record a paid job: " + pst.message());
  }
  return out;
}

namespace {

using exec_group_atom = caf::atom_constant<caf::atom("execgroup")>;
using batch_flush_atom = caf::atom_constant<caf::atom("bflush")>;

}  // namespace
}  // namespace gpugrid::grid

namespace gpugrid::grid::detail {
using exec_group_ptr = std::shared_ptr<const std::vector<execute_request_ptr>>;
using exec_group_result_ptr = std::shared_ptr<std::vector<execute_result>>;
}  // namespace gpugrid::grid::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::detail::exec_group_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::detail::exec_group_result_ptr)

namespace gpugrid::grid {

namespace {

using detail::exec_group_ptr;
using detail::exec_group_result_ptr;

// One worker per slot runs jobs, one at a time or a merged group; detached, since a job blocks
// its thread.
using provider_worker =
    caf::typed_actor<caf::replies_to<exec_atom, execute_request_ptr>::with<execute_result_ptr>,
                     caf::replies_to<exec_group_atom, exec_group_ptr>::with<exec_group_result_ptr>>;

// Dynamic batching (actors/batcher.h): jobs wait in the dispatcher until a group is ready and a
// worker is idle. Spawned by the provider's shell only when batching is on.
using batch_dispatcher = caf::typed_actor<caf::replies_to<exec_atom, execute_request_ptr>::with<execute_result_ptr>,
                                          caf::reacts_to<batch_flush_atom>>;

struct waiting_job {
  execute_request_ptr req;
  caf::typed_response_promise<execute_result_ptr> rp;
};

struct dispatcher_state {
  std::vector<provider_worker> workers;
  std::vector<provider_worker> idle;
  std::unique_ptr<batch_queue<waiting_job>> queue;
  bool timer_armed = false;
  std::chrono::steady_clock::time_point timer_due;
};

// Paid on a chain, every job passes the cashier first: it checks admission and the job's
// voucher one job at a time, in the order the jobs arrived (cumulative vouchers are taken only
// in the order they were made), then hands the job on. Detached: a check may read the chain and
// writes the claim to disk.
using provider_cashier = caf::typed_actor<caf::replies_to<exec_atom, execute_request_ptr>::with<execute_result_ptr>>;

// Where a job goes to run: the batcher when batching is on, else the next worker in turn.
struct job_route {
  std::vector<provider_worker> workers;
  size_t next = 0;
  batch_dispatcher batcher;  // null unless batching is on
};

template <class Self>
caf::result<execute_result_ptr> hand_on(Self* self, job_route& r, const execute_request_ptr& req) {
  if (r.batcher) return self->delegate(r.batcher, exec_atom::value, req);
  return self->delegate(r.workers[r.next++ % r.workers.size()], exec_atom::value, req);
}

// Receipts are recorded off the shell: an append waits for its ledger's fsync, which on a
// scheduler thread would hold up every other actor there. One detached recorder takes them all:
// the receipts waiting in its mailbox when it gets to them are checked and appended together
// (one write and fsync), then answered. One thread sleeps and wakes once per group, not once
// per receipt; and two deliveries of one receipt (a redelivery racing the first) stay in order,
// so the first records it with its voucher and the second finds it.
using receipt_flush_atom = caf::atom_constant<caf::atom("rflush")>;
using receipt_recorder = caf::typed_actor<caf::replies_to<receipt_atom, receipt_ptr>::with<int32_t>,
                                          caf::reacts_to<receipt_flush_atom>>;

struct recorder_state {
  mailbox_group<std::pair<receipt_ptr, caf::typed_response_promise<int32_t>>> waiting;
};

receipt_recorder::behavior_type recorder_actor(receipt_recorder::stateful_pointer<recorder_state> self,
                                               std::shared_ptr<provider_core> core) {
  return {
      [self](receipt_atom, const receipt_ptr& r) -> caf::result<int32_t> {
        if (!r) return static_cast<int32_t>(net::receipt_status::rejected);
        auto rp = self->make_response_promise<int32_t>();
        self->state.waiting.add(self, std::make_pair(r, rp), receipt_flush_atom::value);
        return rp;
      },
      [self, core](receipt_flush_atom) {
        auto group = self->state.waiting.take();
        std::vector<const ledger::receipt*> rs;
        for (const auto& w : group) rs.push_back(w.first.get());
        std::vector<status> results;
        try {
          results = core->accept_receipts(rs);
        } catch (const std::exception& e) {
          results.assign(rs.size(), status(error_kind::io, e.what()));  // answered as retry_later
        }
        for (size_t i = 0; i < group.size(); ++i)
          group[i].second.deliver(static_cast<int32_t>(receipt_answer_of(i < results.size() ? results[i] : status(error_kind::io, "not recorded"))));
      },
  };
}

struct provider_state {
  job_route route;
  provider_cashier cashier;  // null unless paid on a chain
  receipt_recorder recorder;
};

provider_worker::behavior_type worker_actor(provider_worker::pointer, std::shared_ptr<provider_core> core) {
  return {
      [core](exec_atom, const execute_request_ptr& req) -> execute_result_ptr {
        return std::make_shared<const execute_result>(core->execute(*req));
      },
      [core](exec_group_atom, const exec_group_ptr& reqs) -> exec_group_result_ptr {
        return std::make_shared<std::vector<execute_result>>(core->execute_group(*reqs));
      },
  };
}

using dispatcher_self = batch_dispatcher::stateful_pointer<dispatcher_state>;

// Hands ready groups to idle workers; when jobs still wait, a timer for the next one due.
void dispatch(dispatcher_self self, const std::shared_ptr<provider_core>& core) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  while (!st.idle.empty()) {
    // An idle provider runs what waits at once (no wait when nothing else runs); while other
    // work runs, a group waits up to max_wait for more jobs to join it.
    bool all_idle = st.idle.size() == st.workers.size();
    auto group = all_idle ? st.queue->pop_oldest() : st.queue->pop_ready(now);
    if (!group) break;
    provider_worker w = st.idle.back();
    st.idle.pop_back();
    core->add_waiting(-static_cast<int64_t>(group->size()));
    auto reqs = std::make_shared<std::vector<execute_request_ptr>>();
    std::vector<caf::typed_response_promise<execute_result_ptr>> promises;
    for (auto& j : *group) {
      reqs->push_back(std::move(j.req));
      promises.push_back(std::move(j.rp));
    }
    self->request(w, caf::infinite, exec_group_atom::value, exec_group_ptr(std::move(reqs)))
        .then(
            [self, core, promises, w](const exec_group_result_ptr& res) mutable {
              for (size_t i = 0; i < promises.size(); ++i) {
                if (res && i < res->size())
                  promises[i].deliver(execute_result_ptr(std::make_shared<const execute_result>(std::move((*res)[i]))));
                else
                  promises[i].deliver(caf::make_error(caf::sec::invalid_argument));
              }
              self->state.idle.push_back(w);
              dispatch(self, core);
            },
            [self, core, promises, w](caf::error& e) mutable {
              for (auto& p : promises) p.deliver(e);
              self->state.idle.push_back(w);
              dispatch(self, core);
            });
  }
  if (st.queue->empty() || st.idle.empty()) return;
  auto due = st.queue->next_deadline();
  if (!due || (st.timer_armed && st.timer_due <= *due)) return;
  st.timer_armed = true;
  st.timer_due = *due;
  auto wait = std::chrono::duration_cast<std::chrono::microseconds>(*due - now);
  self->delayed_send(self, std::max(wait, std::chrono::microseconds(1)), batch_flush_atom::value);
}

batch_dispatcher::behavior_type dispatcher_actor(dispatcher_self self, std::shared_ptr<provider_core> core,
                                                 std::vector<provider_worker> workers) {
  self->state.workers = workers;
  self->state.idle = std::move(workers);
  self->state.queue = std::make_unique<batch_queue<waiting_job>>(core->batching());
  return {
      [self, core](exec_atom, const execute_request_ptr& req) -> caf::result<execute_result_ptr> {
        auto rp = self->make_response_promise<execute_result_ptr>();
        core->add_waiting(1);
        self->state.queue->push(batch_signature_of(req->model_hash, req->inputs), waiting_job{req, rp},
                                std::chrono::steady_clock::now());
        dispatch(self, core);
        return rp;
      },
      [self, core](batch_flush_atom) {
        self->state.timer_armed = false;
        dispatch(self, core);
      },
  };
}

provider_cashier::behavior_type cashier_actor(provider_cashier::stateful_pointer<job_route> self,
                                              std::shared_ptr<provider_core> core, job_route route) {
  self->state = std::move(route);
  return {
      [self, core](exec_atom, const execute_request_ptr& req) -> caf::result<execute_result_ptr> {
        execute_result refused;
        if (!core->pay_before_run(*req, refused)) return execute_result_ptr(std::make_shared<const execute_result>(std::move(refused)));
        return hand_on(self, self->state, req);
      },
  };
}

provider_actor::behavior_type provider_shell(provider_actor::stateful_pointer<provider_state> self,
                                             std::shared_ptr<provider_core> core, int slots) {
  job_route& route = self->state.route;
  for (int i = 0; i < slots; ++i) route.workers.push_back(self->spawn<caf::detached + caf::linked>(worker_actor, core));
  if (core->batching().enabled()) route.batcher = self->spawn<caf::linked>(dispatcher_actor, core, route.workers);
  if (core->pays_on_chain()) self->state.cashier = self->spawn<caf::detached + caf::linked>(cashier_actor, core, route);
  self->state.recorder = self->spawn<caf::detached + caf::linked>(recorder_actor, core);
  return {
      [core](info_atom) -> provider_info_ptr { return std::make_shared<const provider_info>(core->info()); },
      [core](bid_atom, const bid_request_ptr& req) -> bid_reply_ptr {
        return std::make_shared<const bid_reply>(core->bid(*req));
      },
      [self](exec_atom, const execute_request_ptr& req) -> caf::result<execute_result_ptr> {
        if (self->state.cashier) return self->delegate(self->state.cashier, exec_atom::value, req);
        return hand_on(self, self->state.route, req);
      },
      [self](receipt_atom, const receipt_ptr& r) -> caf::result<int32_t> {
        return self->delegate(self->state.recorder, receipt_atom::value, r);
      },
      // In this process the client shares the job's cancel flag; setting it here as well keeps
      // the protocol the same for both kinds of provider.
      [](cancel_atom, const execute_request_ptr& req) {
        if (req && req->cancel) req->cancel->store(true);
      },
  };
}

}  // namespace

provider_actor spawn_provider(caf::actor_system& sys, std::shared_ptr<provider_core> core) {
  int slots = core->info().slots;
  return sys.spawn(provider_shell, core, slots);
}

}  // namespace gpugrid::grid
