#include "actors/provider.h"
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
#include "engine/backend.h"
#include "engine/flops.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"

namespace gpugrid::grid {

namespace {

constexpr size_t kMaxUnpaid = 65536;  // unpaid jobs remembered, all clients together

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
  if (draining_) return decline(decline_reason::draining, "the provider is shutting down");
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::string why = refusal_locked(req.client);
    if (!why.empty()) return decline(decline_reason::internal, why);
  }
  if (req.model_bytes > options_.max_model_bytes)
    return decline(decline_reason::too_big, fmt::format("model is {} bytes; this provider takes at most {}", req.model_bytes,
                                                        options_.max_model_bytes));
  if (req.model_bytes > memory_budget())
    return decline(decline_reason::too_big, fmt::format("model is {} bytes; this provider keeps at most {} in memory",
                                                        req.model_bytes, memory_budget()));
  // The price follows the model's cost as measured here when this provider ran it before;
  // the client's figure only for a model it has not seen (that first run is metered).
  double gflops = req.gflops;
  if (auto known = known_gflops(req.model_hash)) gflops = std::max(gflops, *known);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto bad = bad_models_.find(req.model_hash);
    if (bad != bad_models_.end()) return decline(decline_reason::unsupported, bad->second);
  }
  int busy = static_cast<int>(counters_.busy.load() + counters_.queued.load());
  if (busy >= 2 * options_.slots) return decline(decline_reason::busy, fmt::format("{} jobs running or queued", busy));
  r.price = quote_price(options_.price, gflops, busy, options_.slots);
  if (req.max_price >= 0 && r.price > req.max_price)
    return decline(decline_reason::too_cheap, fmt::format("price {:.6g} is above the limit {:.6g}", r.price, req.max_price));
  double rate = 1.0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rate = rate_gflops_per_s(req.model_hash);
  }
  int queued = std::max(0, busy - options_.slots + 1);
  r.eta_ms = estimate_eta_ms(gflops, rate, queued);
  r.model_cached = cache_ && cache_->contains(req.model_hash);
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

execute_result provider_core::execute(const execute_request& req) {
  execute_result res;
  res.job = req.job;
  res.provider = id_.public_key;
  ++counters_.queued;
  struct busy_guard {
    provider_counters& c;
    explicit busy_guard(provider_counters& cc) : c(cc) { --c.queued; ++c.busy; }
    ~busy_guard() { --c.busy; }
  } guard(counters_);
  auto fail = [&](const status& st) {
    ++counters_.failures;
    res.ok = false;
    res.error = cache_ ? strip_path(st.message(), cache_->dir() + "/x") : st.message();  // never the cache's path
    res.error_is_input = st.kind() == error_kind::invalid_input;
    res.failure_kind = st.kind();
    return res;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::string why = refusal_locked(req.client);
    if (!why.empty()) return fail(internal_error("{}", why));
  }
  if (tensors_digest(req.inputs) != req.input_digest) return fail(invalid_input("inputs do not match their digest"));
  res.model_was_cached = !req.model_bytes;
  auto s = session_for(req.model_hash, req.model_bytes);
  if (!s) return fail(s.error());
  for (const auto& t : req.inputs) counters_.input_bytes += static_cast<int64_t>(t.bytes());
  if (status st = before_run(req); !st.is_ok()) return fail(st);

  // What the job paid for, in GFLOP, and what the model costs as measured here. A model seen
  // before is priced from that measure; the first run of a model is metered node by node and
  // stopped once it has used twice what it paid for (plus one GFLOP of slack).
  const price_policy& pp = options_.price;
  double paid_gflops = pp.price_per_gflop > 0 ? req.price / pp.price_per_gflop : std::numeric_limits<double>::infinity();
  std::optional<double> known;  // the model's exact cost, when a whole run was metered here
  double lower_bound = 0;       // else what a stopped run used before it was stopped
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto g = gflops_.find(req.model_hash);
    if (g != gflops_.end() && g->second.exact) known = g->second.gflops;
    if (g != gflops_.end() && !g->second.exact) lower_bound = g->second.gflops;
  }
  if (!known && lower_bound > 0 && req.price + 1e-12 < quote_price(pp, lower_bound, 0, options_.slots) * (1 - 1e-6))
    return fail(invalid_input("the job costs at least {:.6g} GFLOP here; it offers {:.6g} credits", lower_bound, req.price));
  if (known) {
    double need = quote_price(pp, *known, 0, options_.slots);
    if (req.price + 1e-12 < need * (1 - 1e-6))
      return fail(invalid_input("the job costs {:.6g} GFLOP here, {:.6g} credits; it offers {:.6g}", *known, need, req.price));
  }
  double rate = 1.0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rate = rate_gflops_per_s(req.model_hash);
  }
  double work = known ? *known : paid_gflops;
  double expected_ms = std::isfinite(work) ? work / rate * 1000.0 : static_cast<double>(options_.max_job_ms);
  auto limit_ms = static_cast<int64_t>(std::clamp(10 * expected_ms, static_cast<double>(options_.min_job_ms),
                                                  static_cast<double>(options_.max_job_ms)));
  auto t0 = std::chrono::steady_clock::now();
  auto deadline = t0 + std::chrono::milliseconds(limit_ms);
  double allowed_flops = std::isfinite(paid_gflops) ? (2 * paid_gflops + options_.free_gflops) * 1e9
                                                    : std::numeric_limits<double>::infinity();
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
    else if (!known && metered > allowed_flops) why = why_stopped::over_budget;
    return why != why_stopped::none;
  };
  auto out = (*s)->run(req.inputs, nullptr, known ? nullptr : &meter, &stop);
  res.compute_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // The last node is metered after it ran: a run that overdrew there is not delivered either.
  if (out && !known && metered > allowed_flops) why = why_stopped::over_budget;
  if (!known && (out || why == why_stopped::over_budget)) {
    // Learned (or, when stopped, a lower bound): later bids for this model quote it.
    std::lock_guard<std::mutex> lock(mu_);
    model_cost& g = gflops_[req.model_hash];
    g.gflops = out ? metered / 1e9 : std::max(g.gflops, metered / 1e9);
    g.exact = g.exact || static_cast<bool>(out);
  }
  switch (why) {
    case why_stopped::none: break;
    case why_stopped::cancelled: return fail(status(error_kind::io, "the job was cancelled: its client went away"));
    case why_stopped::stopping: return fail(status(error_kind::io, "the provider is stopping"));
    case why_stopped::out_of_time: return fail(status(error_kind::io, fmt::format("the job ran past its time limit of {} ms", limit_ms)));
    case why_stopped::over_budget:
      return fail(status(error_kind::io, fmt::format("the job needs more than the {:.6g} GFLOP it paid for", paid_gflops)));
  }
  if (!out) return fail(out.error());
  for (const auto& t : *out)
    if (t.is_sequence() || t.is_none())
      return fail(invalid_input("the model returns a sequence or optional value; the grid carries tensors only"));
  res.outputs = std::move(out).value();
  after_run(res.outputs);
  for (const auto& t : res.outputs) counters_.output_bytes += static_cast<int64_t>(t.bytes());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (known) measured_ms_[req.model_hash] = res.compute_ms;  // a metered run is slower: not a rate
  }
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (unpaid_.emplace(req.job, req.client).second) {
      unpaid_order_.push_back(req.job);
      ++unpaid_by_client_[req.client];
    }
    // Past the bound the oldest are forgotten (their clients get that credit back).
    while (unpaid_order_.size() > kMaxUnpaid) {
      forget_unpaid_locked(unpaid_order_.front());
      unpaid_order_.pop_front();
    }
  }
  res.ok = true;
  ++counters_.jobs;
  return res;
}

std::string provider_core::refusal_locked(const key32& client) {
  if (ledger_failed_) return fmt::format("this provider cannot record payments now ({})", ledger_error_);
  auto it = unpaid_by_client_.find(client);
  if (it != unpaid_by_client_.end() && it->second >= options_.unpaid_credit)
    return fmt::format("{} jobs done for this client are unpaid (receipts not countersigned); no more until they are",
                       it->second);
  return {};
}

void provider_core::forget_unpaid_locked(const job_id& job) {
  auto it = unpaid_.find(job);
  if (it == unpaid_.end()) return;
  auto c = unpaid_by_client_.find(it->second);
  if (c != unpaid_by_client_.end() && --c->second <= 0) unpaid_by_client_.erase(c);
  unpaid_.erase(it);  // its place in unpaid_order_ is skipped when reached
}

int provider_core::unpaid_jobs(const key32& client) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = unpaid_by_client_.find(client);
  return it == unpaid_by_client_.end() ? 0 : it->second;
}

status provider_core::accept_receipt(const ledger::receipt& r) {
  if (r.provider_key != id_.public_key) return invalid_input("receipt is for another provider");
  if (r.kind != ledger::receipt_kind::payment && r.kind != ledger::receipt_kind::generation)
    return invalid_input("only payment receipts are recorded by a provider");
  // This provider's own signature shows it issued the receipt (in this run or before a restart).
  GG_RETURN_IF_ERROR(ledger::verify_provider_signature(r).with_context("not a receipt issued here"));
  GG_RETURN_IF_ERROR(ledger::verify_client_signature(r));
  status st = status::ok();
  if (ledger_ && !ledger_->contains(r.job_id, r.provider_key)) {
    auto h = ledger_->append_verified(r);
    if (!h && !ledger_->contains(r.job_id, r.provider_key)) st = h.error();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!st.is_ok()) {
    if (st.kind() == error_kind::invalid_input) return st;
    if (!ledger_failed_.exchange(true)) {
      ledger_error_ = st.message();
      if (options_.log) options_.log("cannot record payments: " + st.message() + "; taking no jobs until the ledger can be written");
    }
    return st;
  }
  if (ledger_failed_.exchange(false) && options_.log) options_.log("the ledger can be written again; taking jobs");
  forget_unpaid_locked(r.job_id);
  return status::ok();
}

namespace {

struct provider_state {
  std::vector<caf::actor> workers;
  size_t next = 0;
};

caf::behavior worker_actor(caf::event_based_actor*, std::shared_ptr<provider_core> core) {
  return {
      [core](exec_atom, const execute_request_ptr& req) -> execute_result_ptr {
        return std::make_shared<const execute_result>(core->execute(*req));
      },
  };
}

caf::behavior provider_actor(caf::stateful_actor<provider_state>* self, std::shared_ptr<provider_core> core,
                             int slots) {
  for (int i = 0; i < slots; ++i) {
    auto w = self->spawn<caf::detached + caf::linked>(worker_actor, core);
    self->state.workers.push_back(w);
  }
  return {
      [core](info_atom) -> provider_info_ptr { return std::make_shared<const provider_info>(core->info()); },
      [core](bid_atom, const bid_request_ptr& req) -> bid_reply_ptr {
        return std::make_shared<const bid_reply>(core->bid(*req));
      },
      [self](exec_atom, const execute_request_ptr& req) {
        auto& st = self->state;
        caf::actor w = st.workers[st.next++ % st.workers.size()];
        return self->delegate(w, exec_atom::value, req);
      },
      [core](receipt_atom, const receipt_ptr& r) -> int32_t {
        return static_cast<int32_t>(receipt_answer_of(core->accept_receipt(*r)));
      },
  };
}

}  // namespace

caf::actor spawn_provider(caf::actor_system& sys, std::shared_ptr<provider_core> core) {
  int slots = core->info().slots;
  return sys.spawn(provider_actor, core, slots);
}

}  // namespace gpugrid::grid
