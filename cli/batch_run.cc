// gpugrid run MODEL --batch SOURCE --output-dir DIR: many jobs of one model from one process.
//
// Jobs (cli/batch_source.h) run `--in-flight` at a time on the grid (spread over every good
// provider: each job is bid for, and equal bids go to a random provider), on the embedded local
// grid, or with --local on this process's engine. A job that fails is tried again up to
// --attempts times (the grid client also fails over within one try); bad input is not retried.
// Each finished job's outputs are written to DIR/<id>/<output>.npy through a temporary folder
// renamed into place, so a job's folder exists only when it is complete: running the same
// command again skips those jobs (resume). Failed jobs are listed in DIR/failures.tsv
// (id, tab, error); the exit code is 0 only when every job succeeded, else 1.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>

#include "actors/embedded.h"
#include "actors/node.h"
#include "actors/provider.h"
#include "actors/pay_recorder.h"
#include "actors/receipt_outbox.h"
#include "actors/reputation.h"
#include "base/json.h"
#include "cli/batch_source.h"
#include "cli/chain_payment.h"
#include "cli/commands.h"
#include "cli/grid_setup.h"
#include "cli/model_io.h"
#include "engine/backend.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "engine/tensor_io.h"
#include "ledger/ledger.h"
#include "ledger/receipt.h"
#include "net/identity.h"

namespace gpugrid::cli {

namespace {

namespace fs = std::filesystem;

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: batch: {}\n", st.message());
  return exit_code_for(st.kind());
}

struct run_result {
  std::vector<tensor> outputs;
  std::vector<std::string> providers;
  double cost = 0;
};
using job_runner = std::function<expected<run_result>(std::vector<tensor>)>;

std::string fmt_duration(double s) {
  if (!(s >= 0) || s > 360000) return "--:--";
  int t = static_cast<int>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

class progress {
 public:
  progress(size_t total, bool tty) : total_(total), tty_(tty), t0_(std::chrono::steady_clock::now()) {}
  void finished(bool ok) {
    std::lock_guard<std::mutex> l(mu_);
    ++(ok ? done_ : failed_);
    draw(false);
  }
  void end() {
    std::lock_guard<std::mutex> l(mu_);
    draw(true);
    if (tty_ && total_ > 0) fmt::print(stderr, "\n");
  }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  void draw(bool force) {
    if (!tty_) return;
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    size_t n = done_ + failed_;
    double s = seconds();
    double rate = s > 0 ? n / s : 0;
    double eta = rate > 0 ? (total_ - n) / rate : -1;
    const int width = 30;
    int filled = total_ ? static_cast<int>(width * n / total_) : width;
    fmt::print(stderr, "\r[{}{}] {}/{} {:.1f} jobs/s ETA {}{}   ", std::string(filled, '#'), std::string(width - filled, '-'),
               n, total_, rate, fmt_duration(eta), failed_ ? fmt::format(" ({} failed)", failed_) : "");
    std::fflush(stderr);
  }
  std::mutex mu_;
  size_t total_, done_ = 0, failed_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point t0_, last_{};
};

status write_job_outputs(const fs::path& dir, const std::string& id, const std::vector<std::string>& names,
                         const std::vector<tensor>& outputs, std::vector<std::string>* files) {
  fs::path tmp = dir / fmt::format(".partial-{}-{}", id, ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return io_error("cannot create '{}': {}", tmp.string(), ec.message());
  for (size_t i = 0; i < outputs.size() && i < names.size(); ++i) {
    std::string file = output_file_name(names[i]) + ".npy";
    // The folder is renamed into place whole: its files need no temporary file of their own.
    GG_RETURN_IF_ERROR(write_tensor_file((tmp / file).string(), outputs[i], names[i], /*fresh=*/true));
    files->push_back((dir / id / file).string());
  }
  fs::rename(tmp, dir / id, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    if (!fs::is_directory(dir / id)) return io_error("cannot move the outputs of job '{}' into place", id);
  }
  return status::ok();
}

// The pause before a batch job's second attempt; it doubles for each later one.
constexpr auto kRetryPause = std::chrono::milliseconds(200);

bool retryable(error_kind k) { return k != error_kind::invalid_input && k != error_kind::usage; }

// Spreads a batch's jobs over its providers by load. Left to bidding alone, every job after the
// first few would go to the providers whose standing bids were kept first (a standing bid skips
// the bidding round), leaving the others idle. pick() names the provider with the fewest of
// this batch's jobs in flight among those that are trusted, not avoided lately, and either
// have no standing bid yet (their first job gets one) or a standing bid at the lowest price
// known for the model; it waits while every such provider has as many of the batch's jobs as
// it takes (its latest bid's capacity, at most kMaxPerProvider; two until a bid says).
// Thread-safe.
class provider_spread {
 public:
  // A provider that batches merges the jobs waiting for it into one run; with tiny models a
  // handful in flight keeps its groups full (digit classifier over loopback: 1,550 jobs/s at
  // 2 in flight per provider, 2,400 at 6). Beyond that, jobs only queue.
  static constexpr int kMaxPerProvider = 8;
  static constexpr int kUnknownCapacity = 2;

  // What a provider takes, from its latest bid (kept past the bid's validity, so that renewing
  // a standing bid does not hold the batch to two jobs there meanwhile).
  int limit_of(const grid::key32& key, const std::optional<grid::quote_book::quote>& q) {
    if (q && q->bid.capacity > 0) capacity_[key] = q->bid.capacity;
    auto it = capacity_.find(key);
    return it == capacity_.end() ? kUnknownCapacity : std::min(it->second, kMaxPerProvider);
  }

  // Empty: no provider qualifies (the job is then bid for among all of them).
  std::optional<size_t> pick(const std::vector<grid::provider_handle>& providers, const grid::quote_book& quotes,
                             const ledger::digest32& model, const grid::reputation_book* reputation) {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      int64_t now = grid::unix_ms();
      std::vector<std::optional<grid::quote_book::quote>> quote(providers.size());
      double lowest = std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < providers.size(); ++i) {
        quote[i] = quotes.get(providers[i].key, model, now);
        if (quote[i]) lowest = std::min(lowest, quote[i]->bid.price);
      }
      std::optional<size_t> best;
      bool full = false;
      int best_load = 0;
      for (size_t i = 0; i < providers.size(); ++i) {
        const auto& key = providers[i].key;
        if (auto a = avoided_.find(key); a != avoided_.end() && a->second > now) continue;
        if (quote[i] && quote[i]->bid.price > lowest * (1 + 1e-9) + 1e-12) continue;
        if (reputation && !reputation->trusted(grid::node_hex(key))) continue;
        int load = in_flight_[key];
        if (load >= limit_of(key, quote[i])) {
          full = true;
          continue;
        }
        if (!best || load < best_load) {
          best = i;
          best_load = load;
        }
      }
      if (best || !full) return best;
      // Each qualifying provider has its fill: wait for a job to come back (or a second, for a
      // provider that went away, an avoidance that ended or a standing bid that expired).
      freed_.wait_for(l, std::chrono::seconds(1));
    }
  }
  // A provider whose job failed is not picked for the next few seconds.
  void avoid(const grid::key32& key) {
    std::lock_guard<std::mutex> l(mu_);
    avoided_[key] = grid::unix_ms() + 5000;
  }
  class hold {
   public:
    hold(provider_spread& s, const grid::key32& key) : s_(s), key_(key) {
      std::lock_guard<std::mutex> l(s_.mu_);
      ++s_.in_flight_[key_];
    }
    ~hold() {
      {
        std::lock_guard<std::mutex> l(s_.mu_);
        --s_.in_flight_[key_];
      }
      s_.freed_.notify_one();
    }
    hold(const hold&) = delete;
    hold& operator=(const hold&) = delete;

   private:
    provider_spread& s_;
    grid::key32 key_;
  };

 private:
  std::mutex mu_;
  std::condition_variable freed_;
  std::map<grid::key32, int> in_flight_;
  std::map<grid::key32, int> capacity_;      // from each provider's latest bid
  std::map<grid::key32, int64_t> avoided_;   // unix ms until which a provider is not picked
};

}  // namespace

int batch_run_command(const run_options& o) {
  if (o.output_dir.empty()) return fail(status(error_kind::usage, "--batch needs --output-dir DIR"));
  if (!o.inputs.empty()) return fail(status(error_kind::usage, "--batch takes its inputs from SOURCE, not from INPUT arguments"));
  if (!o.output.empty()) return fail(status(error_kind::usage, "--batch writes to --output-dir, not -o"));
  if (!valid_device_spec(o.device)) return fail(invalid_input("'{}' is not a device (use auto, cpu, cuda or cuda:N)", o.device));
  auto model = load_model_file(o.model);
  if (!model) return fail(model.error());
  std::shared_ptr<graph> g = std::move(model).value();
  std::string stdin_text;
  if (o.batch == "-") stdin_text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  auto jobs = read_batch_source(o.batch, stdin_text, g->inputs.size());
  if (!jobs) return fail(jobs.error());

  fs::path out_dir(o.output_dir);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return fail(io_error("cannot create output folder '{}': {}", o.output_dir, ec.message()));
  std::vector<std::string> names;
  for (int id : g->outputs) names.push_back(g->values[id].name);

  std::vector<const batch_job*> todo;
  size_t skipped = 0;
  for (const auto& j : *jobs) {
    if (fs::is_directory(out_dir / j.id)) ++skipped;
    else todo.push_back(&j);
  }

  // The backend.
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<grid::grid_node> node;
  std::optional<grid::reputation_book> reputation;
  std::unique_ptr<ledger::ledger_file> ledger;
  std::unique_ptr<grid::receipt_outbox> outbox;
  std::unique_ptr<grid::pay_recorder> recorder;  // records for the jobs in flight; goes first
  std::shared_ptr<grid::provider_core> core;
  grid::provider_actor embedded;
  std::mutex local_mu;
  grid::quote_book quotes;
  provider_spread spread;
  std::optional<net::identity> identity;
  grid::keypair client_key = grid::keypair::generate();
  auto model_bytes = std::make_shared<std::string>();
  ledger::digest32 model_hash{};
  size_t provider_count = 1;
  bool tty = isatty(STDERR_FILENO);
  set_blas_threads(o.threads);

  auto redeliver_pending = [&] {
    if (!outbox || !node) return;
    (void)grid::redeliver_receipts(*sys, node->providers(), *outbox, grid::receipt_outbox::max_pending, std::chrono::seconds(5),
                                   [tty](const std::string& s) {
                                     if (tty) fmt::print(stderr, "gpugrid: {}\n", s);
                                   },
                                   ledger.get());
  };

  // Local runs (--local, spot checks, tie-breaks) share one session: session::run may be called
  // from several threads at once.
  std::shared_ptr<session> local_session;
  auto run_local = [&](const std::vector<tensor>& in) -> expected<std::vector<tensor>> {
    std::shared_ptr<session> s;
    {
      std::lock_guard<std::mutex> l(local_mu);
      if (!local_session) {
        session_options so;
        so.threads = o.threads;
        so.device = o.device;
        auto made = session::create(g, so);
        if (!made) return made.error().with_context(o.model);
        local_session = std::move(made).value();
      }
      s = local_session;
    }
    return s->run(in);
  };
  job_runner runner;
  bool pays_on_chain = false;
  if (o.local) {
    {
      session_options so;
      so.threads = o.threads;
      so.device = o.device;
      auto s = session::create(g, so);   // bad models fail here, before any job
      if (!s) return fail(s.error().with_context(o.model));
      local_session = std::move(s).value();
    }
    runner = [&](std::vector<tensor> in) -> expected<run_result> {
      auto out = run_local(in);
      if (!out) return out.error();
      return run_result{std::move(out).value(), {"local"}, 0};
    };
  } else {
    std::ifstream mf(o.model, std::ios::binary);
    model_bytes->assign(std::istreambuf_iterator<char>(mf), std::istreambuf_iterator<char>());
    model_hash = ledger::blake2b_256(*model_bytes);
    cfg = grid_actor_config();
    sys = std::make_unique<caf::actor_system>(*cfg);
    int in_flight_guess = o.in_flight > 0 ? o.in_flight : 2;
    if (o.peers.empty()) {
      fmt::print(stderr, "gpugrid: no peers configured; running on an embedded local grid (one in-process provider)\n");
      grid::provider_options po;
      po.device = o.device;
      po.threads = o.threads;
      po.slots = in_flight_guess;
      po.batch = {o.batch_max, o.batch_wait_us};
      // This process's own provider, paid nothing: no limit on jobs awaiting their receipts (the
      // default of 8 would refuse all but 8 of the requests running at once).
      po.unpaid_credit = 1 << 30;
      po.price.price_per_gflop = 0;
      po.price.minimum = 0;
      core = std::make_shared<grid::provider_core>(grid::keypair::generate(), nullptr, po, nullptr);
      embedded = grid::spawn_provider(*sys, core);
    } else {
      auto dir = grid_data_dir(o.data_dir);
      if (!dir) return fail(dir.error());
      auto id = net::load_or_create_identity(*dir);
      if (!id) return fail(id.error());
      identity.emplace(std::move(id).value());
      client_key = grid::keypair_of(*identity);
      auto rep = grid::reputation_book::load(*dir);
      if (!rep) return fail(rep.error());
      reputation.emplace(std::move(rep).value());
      std::string recovered;
      auto l = ledger::ledger_file::open(*dir, &recovered);
      if (!l) return fail(l.error());
      ledger = std::move(l).value();
      auto box = grid::receipt_outbox::open(*dir, &client_key.public_key);
      if (!box) return fail(box.error());
      outbox = std::move(box).value();
      recorder = std::make_unique<grid::pay_recorder>(*sys, ledger.get(), outbox.get(), nullptr);
      grid::node_options no;
      no.bootstrap = o.peers;
      no.slow_dials_file = (std::filesystem::path(*dir) / "slow-dials.tsv").string();
      auto n = grid::grid_node::start(*sys, *identity, no);
      if (!n) return fail(n.error());
      node = std::move(n).value();
      auto failures = node->settle(std::chrono::milliseconds(static_cast<int64_t>(std::min(5.0, o.timeout_s) * 1000)));
      provider_count = node->providers().size();
      if (provider_count == 0) {
        node->stop();
        std::string why = failures.empty() ? "the grid has no providers right now" : fmt::format("{}", fmt::join(failures, "; "));
        return fail(status(error_kind::no_provider, "no provider is reachable: " + why));
      }
      if (tty) fmt::print(stderr, "gpugrid: {} provider{} reachable\n", provider_count, provider_count == 1 ? "" : "s");
      redeliver_pending();  // receipts earlier runs could not deliver
    }
    grid::client_options co;
    co.redundancy = o.redundancy;
    co.max_price = o.max_price;
    co.timeout_s = o.timeout_s;
    co.spot_check_rate = node ? kSpotCheckFloor : 0.0;
    co.quotes = &quotes;
    // Saved once a second and at the end rather than after each of thousands of jobs (a file
    // written and renamed per job was a fifth of the client's time).
    co.save_reputation = false;
    // Receipts wait in the outbox until their providers record them; the pending ones are sent
    // again at the start and the end of the batch, not before each job (most would be those of
    // the jobs still in flight).
    co.outbox = outbox.get();
    co.redeliver_before_job = false;
    co.recorder = recorder.get();
    // Paid on a chain when one is configured; vouchers on one channel must arrive in order, so
    // such a batch runs one job at a time.
    std::shared_ptr<chain_payer> payer;
    if (node) {
      auto dir = grid_data_dir(o.data_dir);
      if (!dir) return fail(dir.error());
      auto link = open_chain_link(*dir, {});
      if (!link) return fail(link.error());
      if (*link) {
        auto wallet = chain::load_or_create_wallet_key(*dir);
        if (!wallet) return fail(wallet.error());
        payer = std::make_shared<chain_payer>(*link, *wallet, *dir);
        co.payer = payer.get();
        pays_on_chain = true;
      }
    }
    double gflops = grid::rough_gflops(*g);
    runner = [&, co, gflops, payer](std::vector<tensor> in) -> expected<run_result> {
      std::vector<grid::provider_handle> providers;
      if (node) providers = node->providers();
      else providers.push_back({embedded, core->key(), ""});
      if (providers.empty()) return status(error_kind::no_provider, "no provider is reachable right now");
      grid::job_spec job;
      job.model_bytes = model_bytes;
      job.model_hash = model_hash;
      job.gflops = gflops;
      job.inputs = std::move(in);
      grid::local_runner local;
      if (node) {
        local = [&](const std::vector<tensor>& x) -> expected<std::vector<tensor>> { return run_local(x); };
      }
      auto run = [&](const std::vector<grid::provider_handle>& among) {
        return grid::run_job(*sys, among, job, co, client_key, reputation ? &*reputation : nullptr, ledger.get(), local,
                             [](const std::string&) {});
      };
      expected<grid::job_outcome> r = status(error_kind::no_provider, "no provider");
      auto pin = node && co.redundancy <= 1 ? spread.pick(providers, quotes, model_hash, reputation ? &*reputation : nullptr)
                                            : std::nullopt;
      if (pin) {
        // The job goes to the provider with the fewest of this batch's jobs in flight (among the
        // cheapest); if that fails it is bid for among all of them, as any job is.
        provider_spread::hold held(spread, providers[*pin].key);
        r = run({providers[*pin]});
        if (!r && retryable(r.error().kind())) spread.avoid(providers[*pin].key);
      }
      if (!pin || (!r && retryable(r.error().kind()))) r = run(providers);
      if (!r) return r.error();
      run_result out;
      out.outputs = std::move(r->outputs);
      for (const auto& p : r->providers) {
        if (p.paid) out.cost += p.price;
        out.providers.push_back(p.url.empty() ? "embedded" : p.node);
      }
      return out;
    };
  }

  // On the grid the spread holds each provider to what it takes; the workers only bound the total.
  size_t per_provider = o.redundancy <= 1 ? provider_spread::kMaxPerProvider : 2;
  size_t workers = o.in_flight > 0 ? static_cast<size_t>(o.in_flight) : std::max<size_t>(2, per_provider * provider_count);
  if (o.local) workers = o.in_flight > 0 ? static_cast<size_t>(o.in_flight) : 1;
  if (pays_on_chain) workers = 1;
  workers = std::max<size_t>(1, std::min(workers, todo.size()));
  progress bar(todo.size(), tty && !o.json);
  std::atomic<size_t> next{0};
  std::mutex out_mu;
  std::vector<std::pair<std::string, std::string>> failures;
  size_t done = 0;
  double cost = 0;

  std::mutex save_mu;
  std::atomic<std::chrono::steady_clock::time_point> last_save{std::chrono::steady_clock::now()};
  auto work = [&] {
    for (;;) {
      size_t k = next++;
      if (k >= todo.size()) return;
      const batch_job& j = *todo[k];
      auto t0 = std::chrono::steady_clock::now();
      int attempts = 0;
      status last = status::ok();
      run_result result;
      std::vector<std::string> files;
      auto inputs = load_inputs(*g, j.inputs);
      if (!inputs) {
        last = inputs.error();
      } else {
        for (attempts = 1; attempts <= o.attempts; ++attempts) {
          auto r = runner(*inputs);
          if (r) {
            result = std::move(r).value();
            last = status::ok();
            break;
          }
          last = r.error();
          if (!retryable(last.kind())) break;
          // A provider too busy to bid in time, or one coming back, gets a moment first.
          if (attempts < o.attempts) std::this_thread::sleep_for(kRetryPause * (1 << std::min(attempts - 1, 4)));
        }
        if (attempts > o.attempts) attempts = o.attempts;
        if (last.is_ok()) last = write_job_outputs(out_dir, j.id, names, result.outputs, &files);
      }
      auto t1 = std::chrono::steady_clock::now();
      double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
      if (reputation && t1 - last_save.load() > std::chrono::seconds(1) && save_mu.try_lock()) {
        last_save = t1;
        (void)reputation->save();
        save_mu.unlock();
      }
      bar.finished(last.is_ok());
      std::lock_guard<std::mutex> l(out_mu);
      if (last.is_ok()) {
        ++done;
        cost += result.cost;
      } else {
        failures.push_back({j.id, last.message()});
      }
      if (o.json) {
        json_writer w;
        w.begin_object().key("id").value(j.id).key("status").value(last.is_ok() ? "ok" : "failed");
        w.key("attempts").value(attempts).key("ms").value(ms);
        if (last.is_ok()) {
          w.key("outputs").begin_array();
          for (const auto& f : files) w.value(f);
          w.end_array().key("providers").begin_array();
          for (const auto& p : result.providers) w.value(p);
          w.end_array().key("cost").value(result.cost);
        } else {
          w.key("error").value(last.message());
        }
        w.end_object();
        fmt::print("{}\n", w.str());
        std::fflush(stdout);
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers; ++i) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  bar.end();
  double secs = bar.seconds();

  if (node) {
    redeliver_pending();  // answers lost to a provider that went away, or a timeout
    node->stop();
  }
  if (embedded) caf::anon_send_exit(embedded, caf::exit_reason::user_shutdown);
  if (reputation) (void)reputation->save();

  fs::path failures_file = out_dir / "failures.tsv";
  if (!failures.empty()) {
    std::sort(failures.begin(), failures.end());
    std::FILE* f = std::fopen(failures_file.c_str(), "wb");
    if (f) {
      for (const auto& [id, why] : failures) fmt::print(f, "{}\t{}\n", id, why);
      std::fclose(f);
    }
  } else {
    fs::remove(failures_file, ec);
  }
  double rate = secs > 0 ? done / secs : 0;
  std::string summary = fmt::format("{} jobs: {} done, {} already done, {} failed; {:.1f} s, {:.1f} jobs/s", jobs->size(), done,
                                    skipped, failures.size(), secs, rate);
  if (o.json) {
    json_writer w;
    w.begin_object().key("summary").begin_object().key("jobs").value(jobs->size()).key("done").value(done);
    w.key("skipped").value(skipped).key("failed").value(failures.size()).key("seconds").value(secs);
    w.key("jobs_per_s").value(rate).key("cost").value(cost);
    if (!failures.empty()) w.key("failures_file").value(failures_file.string());
    w.end_object().end_object();
    fmt::print("{}\n", w.str());
  }
  fmt::print(stderr, "gpugrid: batch: {}\n", summary);
  if (!failures.empty()) {
    fmt::print(stderr, "gpugrid: batch: failed jobs are listed in {} (first: {}: {})\n", failures_file.string(),
               failures.front().first, failures.front().second);
    return 1;
  }
  return 0;
}

}  // namespace gpugrid::cli
