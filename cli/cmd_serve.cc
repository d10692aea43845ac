// gpugrid serve: a long-lived HTTP server speaking the Open Inference Protocol v2 (KServe /
// Triton) for the .onnx models and the OpenAI-compatible API (/v1/models,
// /v1/chat/completions, /v1/completions; serve/openai_service.h) for the generation model
// folders of --models DIR, in front of the grid, the embedded local grid, or (--local) this
// process's engine. Keeps sessions, connections and standing bids warm across requests. Serves
// until SIGINT or SIGTERM, then lets running requests finish and exits 0.
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

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
#include "cli/commands.h"
#include "cli/generate_grid.h"
#include "cli/grid_setup.h"
#include "cli/model_io.h"
#include "engine/backend.h"
#include "engine/session.h"
#include "ledger/ledger.h"
#include "ledger/receipt.h"
#include "net/identity.h"
#include "serve/access.h"
#include "serve/http_server.h"
#include "llm/local_backend.h"
#include "serve/model_repository.h"
#include "serve/openai_service.h"
#include "serve/v2_service.h"

#ifndef GPUGRID_VERSION
#define GPUGRID_VERSION "unknown"
#endif

namespace gpugrid::cli {

namespace {

sem_t g_serve_stop;
void on_serve_signal(int) { sem_post(&g_serve_stop); }

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: serve: {}\n", st.message());
  return exit_code_for(st.kind());
}

// One engine session per model file version, made on first use and shared by every request
// (session::run may be called from several threads at once).
class session_cache {
 public:
  session_cache(std::string device, int threads) : device_(std::move(device)), threads_(threads) {}
  // `cancelled` (may be null): the run stops before its next node once it is true.
  expected<std::vector<tensor>> run(const serve::model_entry& m, const std::vector<tensor>& inputs,
                                    const std::atomic<bool>* cancelled = nullptr) {
    std::shared_ptr<session> s;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = sessions_.find(m.name);
      if (it != sessions_.end() && it->second.first == m.generation) s = it->second.second;
    }
    if (!s) {
      session_options so;
      so.device = device_;
      so.threads = threads_;
      GG_RETURN_IF_ERROR(check_tensor_io(*m.model));
      auto made = session::create(m.model, so);
      if (!made) return made.error();   // the caller names the model
      std::lock_guard<std::mutex> l(mu_);
      auto& e = sessions_[m.name];
      if (e.first != m.generation || !e.second) e = {m.generation, std::move(made).value()};
      s = e.second;
    }
    session::stop_check stop = [cancelled] { return cancelled->load(); };
    return s->run(inputs, nullptr, nullptr, cancelled ? &stop : nullptr);
  }

 private:
  std::string device_;
  int threads_;
  std::mutex mu_;
  std::map<std::string, std::pair<uint64_t, std::shared_ptr<session>>> sessions_;
};

class local_backend : public serve::infer_backend {
 public:
  local_backend(const std::string& device, int threads) : sessions_(device, threads) {}
  // A client that hangs up stops the run before its next node.
  expected<serve::infer_outcome> infer(const serve::model_entry& m, std::vector<tensor> inputs,
                                       const std::atomic<bool>* cancelled) override {
    auto out = sessions_.run(m, inputs, cancelled);
    if (!out) return out.error().with_context(m.name);
    serve::infer_outcome r;
    r.outputs = std::move(out).value();
    r.providers = {"local"};
    return r;
  }
  std::string describe() const override { return "the local engine (--local)"; }

 private:
  session_cache sessions_;
};

// Jobs through the grid's client path (bids, execution, verification, receipts): on the
// embedded in-process provider, or on the providers found through the bootstrap peers.
class grid_backend : public serve::infer_backend {
 public:
  grid_backend(caf::actor_system& sys, grid::keypair client, grid::client_options co, const std::string& device, int threads)
      : sys_(sys), client_(std::move(client)), co_(co), local_(device, threads) {
    co_.quotes = &quotes_;
  }
  // The embedded grid: one in-process provider with `slots` jobs at once.
  void use_embedded(const std::string& device, int threads, int slots, grid::batch_options batch) {
    grid::provider_options po;
    po.batch = batch;
    // This process's own provider, paid nothing: no limit on jobs awaiting their receipts (the
    // default of 8 would refuse all but 8 of the requests running at once).
    po.unpaid_credit = 1 << 30;
    po.device = device;
    po.threads = threads;
    po.slots = slots;
    po.price.price_per_gflop = 0;   // this machine's own time is free
    po.price.minimum = 0;
    core_ = std::make_shared<grid::provider_core>(grid::keypair::generate(), nullptr, po, nullptr);
    embedded_ = grid::spawn_provider(sys_, core_);
    co_.spot_check_rate = 0;
  }
  void use_node(grid::grid_node* node, grid::reputation_book* reputation, ledger::ledger_file* ledger) {
    node_ = node;
    reputation_ = reputation;
    ledger_ = ledger;
    co_.spot_check_rate = kSpotCheckFloor;
    // Saved at most once a second (and when serve stops), not after every request.
    co_.save_reputation = false;
  }
  ~grid_backend() override {
    if (embedded_) caf::anon_send_exit(embedded_, caf::exit_reason::user_shutdown);
  }

  // A client that hangs up before a result is in cancels the job at its provider (which stops
  // at its next node) and nothing is paid; see grid::client_options::cancel.
  expected<serve::infer_outcome> infer(const serve::model_entry& m, std::vector<tensor> inputs,
                                       const std::atomic<bool>* cancelled) override {
    std::vector<grid::provider_handle> providers;
    if (node_) providers = node_->providers();
    else providers.push_back({embedded_, core_->key(), ""});
    if (providers.empty()) return status(error_kind::no_provider, "no provider is reachable right now");
    grid::job_spec job;
    job.model_bytes = m.bytes;
    job.model_hash = hash_of(m);
    job.gflops = grid::rough_gflops(*m.model);
    job.inputs = std::move(inputs);
    grid::local_runner local;
    if (node_) {
      local = [this, &m](const std::vector<tensor>& in) -> expected<std::vector<tensor>> {
        return local_.run(m, in);
      };
    }
    grid::client_options co = co_;
    co.cancel = cancelled;
    auto r = grid::run_job(sys_, providers, job, co, client_, reputation_, ledger_, local, [](const std::string&) {});
    save_reputation_now_and_then();
    if (!r) return r.error().with_context(m.name);
    serve::infer_outcome out;
    out.outputs = std::move(r->outputs);
    for (const auto& p : r->providers) {
      if (p.paid) out.cost += p.price;
      out.providers.push_back(p.url.empty() ? "embedded" : p.node);
    }
    return out;
  }
  std::string describe() const override {
    return node_ ? "the grid" : "an embedded local grid (one in-process provider)";
  }

 private:
  ledger::digest32 hash_of(const serve::model_entry& m) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = hashes_.find(m.name);
    if (it != hashes_.end() && it->second.first == m.generation) return it->second.second;
    ledger::digest32 h = ledger::blake2b_256(*m.bytes);
    hashes_[m.name] = {m.generation, h};
    return h;
  }

  void save_reputation_now_and_then() {
    if (!reputation_) return;
    auto now = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> l(save_mu_, std::try_to_lock);
    if (!l || now - last_save_ < std::chrono::seconds(1)) return;
    last_save_ = now;
    (void)reputation_->save();
  }

  caf::actor_system& sys_;
  grid::keypair client_;
  grid::client_options co_;
  grid::quote_book quotes_;
  session_cache local_;
  std::shared_ptr<grid::provider_core> core_;
  grid::provider_actor embedded_;
  grid::grid_node* node_ = nullptr;
  grid::reputation_book* reputation_ = nullptr;
  ledger::ledger_file* ledger_ = nullptr;
  std::mutex mu_;
  std::map<std::string, std::pair<uint64_t, ledger::digest32>> hashes_;
  std::mutex save_mu_;
  std::chrono::steady_clock::time_point last_save_{};   // under save_mu_
};

expected<std::vector<std::string>> gather_keys(const serve_options& o) {
  std::vector<std::string> keys;
  for (size_t i = 0; i < o.config_keys.size(); ++i) {
    GG_RETURN_IF_ERROR(serve::check_key(o.config_keys[i], fmt::format("config.toml [serve] api_keys[{}]", i)));
    keys.push_back(o.config_keys[i]);
  }
  if (!o.api_key_file.empty()) {
    std::ifstream f(o.api_key_file, std::ios::binary);
    if (!f) return invalid_input("--api-key-file '{}' cannot be read", o.api_key_file);
    std::stringstream ss;
    ss << f.rdbuf();
    if (ss.str().size() > (size_t{1} << 20)) return invalid_input("--api-key-file '{}' is over 1 MiB", o.api_key_file);
    auto parsed = serve::parse_key_file(ss.str(), o.api_key_file);
    if (!parsed) return parsed.error();
    if (parsed->empty()) return invalid_input("--api-key-file '{}' holds no keys", o.api_key_file);
    keys.insert(keys.end(), parsed->begin(), parsed->end());
  }
  return keys;
}

}  // namespace

int serve_command(const serve_options& o) {
  if (!valid_device_spec(o.device)) return fail(invalid_input("'{}' is not a device (use auto, cpu, cuda or cuda:N)", o.device));
  size_t colon = o.listen.rfind(':');
  if (colon == std::string::npos) return fail(invalid_input("--listen '{}' is not HOST:PORT", o.listen));
  std::string host = o.listen.substr(0, colon);
  int port = std::atoi(o.listen.c_str() + colon + 1);

  auto keys = gather_keys(o);
  if (!keys) return fail(keys.error());
  bool loopback = serve::is_loopback_host(host);
  if (!loopback && keys->empty())
    return fail(status(error_kind::usage,
                       fmt::format("refusing to listen on {} without API keys: give --api-key-file FILE or "
                                   "[serve] api_keys in config.toml (or listen on 127.0.0.1)", o.listen)));

  serve::model_repository repo(o.models, std::chrono::milliseconds(static_cast<int64_t>(o.reload_interval_s * 1000)),
                               int64_t{o.max_model_mb} << 20);
  status scanned = repo.refresh(true);
  if (!scanned.is_ok()) return fail(status(error_kind::invalid_input, scanned.message()));

  sem_init(&g_serve_stop, 0, 0);
  struct sigaction sa {};
  sa.sa_handler = on_serve_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  set_blas_threads(o.threads);
  // Declared so that they are destroyed in order on every path: the backend (which holds the
  // embedded provider actor and uses the node) before the node, the node before the actor system.
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<grid::grid_node> node;
  std::optional<grid::reputation_book> reputation;
  std::shared_ptr<ledger::ledger_file> ledger_shared;
  std::unique_ptr<grid::receipt_outbox> outbox;
  std::unique_ptr<grid::pay_recorder> recorder;  // records the receipts of requests in flight
  std::unique_ptr<serve::infer_backend> backend;
  // Receipts wait in the outbox until their providers record them; the pending ones are sent
  // again when serve starts and stops, not before each request (most would be those of requests
  // still waiting for their answer).
  auto redeliver_pending = [&] {
    if (!outbox || !node) return;
    (void)grid::redeliver_receipts(*sys, node->providers(), *outbox, grid::receipt_outbox::max_pending,
                                   std::chrono::seconds(5), [](const std::string& s) { fmt::print(stderr, "gpugrid: serve: {}\n", s); },
                                   ledger_shared.get());
  };
  grid::client_options co;
  co.redundancy = o.redundancy;
  co.max_price = o.max_price;
  co.timeout_s = o.timeout_s;
  if (o.local) {
    backend = std::make_unique<local_backend>(o.device, o.threads);
  } else {
    cfg = grid_actor_config();
    sys = std::make_unique<caf::actor_system>(*cfg);
    if (o.peers.empty()) {
      auto g = std::make_unique<grid_backend>(*sys, grid::keypair::generate(), co, o.device, o.threads);
      g->use_embedded(o.device, o.threads, o.workers, {o.batch_max, o.batch_wait_us});
      backend = std::move(g);
    } else {
      auto dir = grid_data_dir(o.data_dir);
      if (!dir) return fail(dir.error());
      auto id = net::load_or_create_identity(*dir);
      if (!id) return fail(id.error());
      auto rep = grid::reputation_book::load(*dir);
      if (!rep) return fail(rep.error());
      reputation.emplace(std::move(rep).value());
      std::string recovered;
      auto ledger = ledger::ledger_file::open(*dir, &recovered);
      if (!ledger) return fail(ledger.error());
      if (!recovered.empty()) fmt::print(stderr, "gpugrid: {}\n", recovered);
      ledger_shared = std::move(ledger).value();
      const grid::key32 me = id->public_key();
      auto box = grid::receipt_outbox::open(*dir, &me);
      if (!box) return fail(box.error());
      outbox = std::move(box).value();
      co.outbox = outbox.get();
      co.redeliver_before_job = false;
      recorder = std::make_unique<grid::pay_recorder>(*sys, ledger_shared.get(), outbox.get(), [](const std::string& s) {
        fmt::print(stderr, "gpugrid: serve: {}\n", s);
      });
      co.recorder = recorder.get();
      grid::node_options no;
      no.bootstrap = o.peers;
      no.slow_dials_file = (std::filesystem::path(*dir) / "slow-dials.tsv").string();
      auto n = grid::grid_node::start(*sys, *id, no);
      if (!n) return fail(n.error());
      node = std::move(n).value();
      auto failures = node->settle(std::chrono::milliseconds(5000));
      for (const auto& f : failures) fmt::print(stderr, "gpugrid: serve: {}\n", f);
      redeliver_pending();
      auto g = std::make_unique<grid_backend>(*sys, grid::keypair_of(*id), co, o.device, o.threads);
      g->use_node(node.get(), &*reputation, ledger_shared.get());
      backend = std::move(g);
    }
  }

  // The OpenAI-compatible API: a completion back end per generation model folder, of the same
  // kind as the /v2 one.
  serve::llm_model_list llm_models(o.models, std::chrono::milliseconds(static_cast<int64_t>(o.reload_interval_s * 1000)));
  (void)llm_models.refresh(true);
  serve::openai_options oo;
  oo.open = [&o](const std::string& dir) -> expected<std::shared_ptr<llm::completion_backend>> {
    if (o.local) {
      llm::generator_options go;
      go.threads = o.threads;
      go.device = o.device;
      GG_ASSIGN_OR_RETURN(std::shared_ptr<llm::generator> gen, llm::generator::load(dir, go));
      return std::shared_ptr<llm::completion_backend>(std::make_shared<llm::local_backend>(std::move(gen)));
    }
    grid_generation_options g;
    g.model_dir = dir;
    g.peers = o.peers;
    g.data_dir = o.data_dir;
    g.device = o.device == "auto" ? "cpu" : o.device;
    g.threads = o.threads;
    g.redundancy = o.redundancy;
    g.timeout_s = o.timeout_s;
    std::string note;
    GG_ASSIGN_OR_RETURN(std::unique_ptr<llm::completion_backend> b, make_grid_completion_backend(g, &note));
    return std::shared_ptr<llm::completion_backend>(std::move(b));
  };
  serve::openai_service openai(&llm_models, std::move(oo));

  serve::service_options so;
  so.v1 = &openai;
  so.keys = serve::key_ring(*keys);
  so.require_keys = !keys->empty();
  so.rate_limit = o.rate_limit;
  so.rate_burst = o.rate_burst;
  so.version = GPUGRID_VERSION;
  serve::v2_service service(&repo, backend.get(), so);

  serve::http_server_options ho;
  ho.host = host;
  ho.port = static_cast<uint16_t>(port);
  ho.max_body_bytes = size_t(o.max_body_mb) << 20;
  ho.header_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.header_timeout_s * 1000));
  ho.body_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.body_timeout_s * 1000));
  ho.workers = o.workers;
  ho.tls_cert = o.tls_cert;
  ho.tls_key = o.tls_key;
  auto server = serve::http_server::start(ho, &service);
  if (!server) return fail(server.error());

  size_t ready = 0;
  for (const auto& m : repo.list()) ready += m->ready() ? 1 : 0;
  if (o.json) {
    json_writer w;
    w.begin_object().key("event").value("listening").key("url").value((*server)->url());
    w.key("models").value(repo.list().size()).key("llm_models").value(llm_models.list().size()).key("ready").value(ready).key("backend").value(backend->describe());
    w.key("auth").value(so.require_keys).end_object();
    fmt::print("{}\n", w.str());
  } else {
    fmt::print("gpugrid serve: {} ({} of {} models ready, {} generation models on /v1; {}; API keys {})\n",
               (*server)->url(), ready, repo.list().size(), llm_models.list().size(), backend->describe(),
               so.require_keys ? "required" : "off");
  }
  std::fflush(stdout);
  for (const auto& m : repo.list())
    if (!m->ready()) fmt::print(stderr, "gpugrid: serve: model '{}' is not ready: {}\n", m->name, m->error);

  while (sem_wait(&g_serve_stop) != 0) {
  }
  if (!o.json) fmt::print(stderr, "gpugrid: serve: stopping (running requests finish)\n");
  (*server)->stop();
  server->reset();
  backend.reset();
  redeliver_pending();
  if (node) node->stop();
  if (reputation) (void)reputation->save();
  return 0;
}

}  // namespace gpugrid::cli
