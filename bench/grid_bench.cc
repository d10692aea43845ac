// grid_bench: what the grid layer costs on top of the engine.
//
//   overhead    one persistent client, one provider on 127.0.0.1 (its own actor system and
//               transport, as another process would have): p50/p90 of a whole job (bids,
//               execute, result, receipt) for a tiny cached model, against the same model run
//               in-process on the engine; the difference is the grid's overhead.
//   throughput  one client, 4 providers on loopback, C concurrent jobs: jobs/s.
//   auction     100 in-process providers: the time to collect and rank their bids.
//   membership  200 nodes on loopback that know one bootstrap peer: the time until every
//               node's peer table holds all 199 others.
//
// Ledgers: off by default (receipts are still built, signed by both sides and checked);
// --ledger DIR also appends them to fsync'ed ledgers under DIR, as `gpugrid run` does.
//
// Usage: grid_bench MODEL.onnx [--only overhead,throughput,auction,membership] [--jobs N]
//                   [--concurrency C] [--peers N] [--ledger DIR] [--peer URL] [--standing] [--json]
//   --standing: the client reuses standing bids (a persistent client's quote book)
//   --peer URL: throughput against running `gpugrid offer` processes (4 of them behind URL);
//               the CPU time reported is then the client's alone.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <fmt/format.h>
#include <caf/send.hpp>
#include <sys/resource.h>
#include <unistd.h>

#include "actors/client.h"
#include "actors/embedded.h"
#include "actors/node.h"
#include "actors/provider.h"
#include "base/json.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "ledger/ledger.h"

using namespace gpugrid;
using clk = std::chrono::steady_clock;

namespace {

double ms_since(clk::time_point t0) { return std::chrono::duration<double, std::milli>(clk::now() - t0).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double process_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

std::unique_ptr<caf::actor_system_config> small_config(int threads) {
  auto cfg = std::make_unique<caf::actor_system_config>();
  grid::configure_actor_system(*cfg, threads);
  return cfg;
}

struct options {
  std::string model;
  std::vector<std::string> only;
  int jobs = 2000;
  int concurrency = 16;
  int peers = 200;
  std::string ledger_dir;
  std::string peer;   // throughput: use the providers behind this bootstrap peer instead
  bool standing = false;  // reuse standing bids (a persistent client's quote book)
  bool json = false;
  bool wants(const std::string& what) const {
    return only.empty() || std::find(only.begin(), only.end(), what) != only.end();
  }
};

// A provider as `gpugrid offer` runs it: its own actor system, cache, transport.
struct provider_process {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<grid::provider_core> core;
  std::unique_ptr<grid::grid_node> node;

  static std::unique_ptr<provider_process> start(const std::string& dir, const std::string& bootstrap, int slots,
                                                 const std::string& ledger_dir) {
    auto p = std::make_unique<provider_process>();
    p->cfg = small_config(2);
    p->sys = std::make_unique<caf::actor_system>(*p->cfg);
    auto id = net::identity::generate();
    auto cache = grid::model_cache::open(dir + "/models", int64_t{1} << 30);
    if (!cache) throw std::runtime_error(cache.error().message());
    std::shared_ptr<ledger::ledger_file> ledger;
    if (!ledger_dir.empty()) {
      auto l = ledger::ledger_file::open(ledger_dir + "/" + id.node_id());
      if (!l) throw std::runtime_error(l.error().message());
      ledger = std::move(*l);
    }
    grid::provider_options po;
    po.slots = slots;
    po.device = "cpu";
    po.threads = 1;
    p->core = std::make_shared<grid::provider_core>(grid::keypair_of(id), std::shared_ptr<grid::model_cache>(std::move(*cache)),
                                                    po, ledger);
    grid::node_options no;
    no.listen = "127.0.0.1:0";
    no.provider = p->core;
    if (!bootstrap.empty()) no.bootstrap = {bootstrap};
    auto node = grid::grid_node::start(*p->sys, id, no);
    if (!node) throw std::runtime_error(node.error().message());
    p->node = std::move(*node);
    return p;
  }
};

struct client_process {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  net::identity id = net::identity::generate();
  std::unique_ptr<grid::grid_node> node;
  std::unique_ptr<ledger::ledger_file> ledger;
  std::vector<grid::provider_handle> providers;

  explicit client_process(const std::vector<std::string>& bootstrap, const std::string& ledger_dir, size_t want) {
    cfg = small_config(2);
    sys = std::make_unique<caf::actor_system>(*cfg);
    grid::node_options no;
    no.bootstrap = bootstrap;
    auto n = grid::grid_node::start(*sys, id, no);
    if (!n) throw std::runtime_error(n.error().message());
    node = std::move(*n);
    for (int i = 0; i < 500 && providers.size() < want; ++i) {
      node->settle(std::chrono::seconds(5));
      providers = node->providers();
      if (providers.size() < want) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (providers.size() < want) throw std::runtime_error(fmt::format("found {} providers, wanted {}", providers.size(), want));
    if (!ledger_dir.empty()) {
      auto l = ledger::ledger_file::open(ledger_dir + "/client-" + id.node_id());
      if (!l) throw std::runtime_error(l.error().message());
      ledger = std::move(*l);
    }
  }
};

grid::job_spec make_job(const std::string& model_path, std::shared_ptr<graph>* g) {
  std::ifstream f(model_path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  auto bytes = std::make_shared<std::string>(ss.str());
  auto loaded = load_model_file(model_path);
  if (!loaded) throw std::runtime_error(loaded.error().message());
  *g = std::move(*loaded);
  grid::job_spec job;
  job.model_bytes = bytes;
  job.model_hash = ledger::blake2b_256(*bytes);
  job.gflops = grid::rough_gflops(**g);
  for (int id : (*g)->inputs) {
    const auto& v = (*g)->values[id];
    shape_t shape;
    if (v.shape)
      for (const auto& d : *v.shape) shape.push_back(d.value >= 0 ? d.value : 1);
    job.inputs.push_back(tensor::zeros(v.type, shape));
  }
  return job;
}

json_writer& stats(json_writer& w, const std::vector<double>& ms) {
  return w.begin_object().key("p50_ms").value(percentile(ms, 0.5)).key("p90_ms").value(percentile(ms, 0.9))
      .key("p99_ms").value(percentile(ms, 0.99)).key("n").value(static_cast<int64_t>(ms.size())).end_object();
}

void bench_overhead(const options& o, json_writer& out) {
  std::shared_ptr<graph> g;
  grid::job_spec job = make_job(o.model, &g);
  // The engine alone, in this process.
  session_options so;
  so.threads = 1;
  so.device = "cpu";
  auto s = session::create(g, so);
  if (!s) throw std::runtime_error(s.error().message());
  std::vector<double> local_ms;
  for (int i = 0; i < o.jobs; ++i) {
    auto t0 = clk::now();
    auto r = (*s)->run(job.inputs);
    local_ms.push_back(ms_since(t0));
    if (!r) throw std::runtime_error(r.error().message());
  }
  auto tmp = std::filesystem::temp_directory_path() / fmt::format("grid_bench_{}", getpid());
  auto prov = provider_process::start((tmp / "p0").string(), "", 1, o.ledger_dir);
  client_process client(std::vector<std::string>{prov->node->url()}, o.ledger_dir, 1);
  grid::client_options co;
  co.timeout_s = 10;
  grid::quote_book quotes;
  if (o.standing) co.quotes = &quotes;
  grid::reputation_book rep;
  auto note = [](const std::string&) {};
  // The first job uploads the model; the rest find it cached.
  auto first = grid::run_job(*client.sys, client.providers, job, co, grid::keypair_of(client.id), &rep, client.ledger.get(), nullptr, note);
  if (!first) throw std::runtime_error(first.error().message());
  std::vector<double> grid_ms, bid_ms;
  double cpu0 = process_cpu_s();
  for (int i = 0; i < o.jobs; ++i) {
    auto t0 = clk::now();
    auto r = grid::run_job(*client.sys, client.providers, job, co, grid::keypair_of(client.id), nullptr, client.ledger.get(), nullptr, note);
    grid_ms.push_back(ms_since(t0));
    if (!r) throw std::runtime_error(r.error().message());
    bid_ms.push_back(r->queue_ms);
  }
  double cpu = process_cpu_s() - cpu0;
  double overhead = percentile(grid_ms, 0.5) - percentile(local_ms, 0.5);
  out.key("overhead").begin_object();
  out.key("local"); stats(out, local_ms);
  out.key("grid"); stats(out, grid_ms);
  out.key("bidding"); stats(out, bid_ms);
  out.key("overhead_p50_ms").value(overhead);
  out.key("cpu_ms_per_job_both_sides").value(cpu * 1000 / o.jobs);
  out.key("ledger").value(!o.ledger_dir.empty());
  out.key("standing_bids").value(o.standing);
  out.end_object();
  if (!o.json)
    fmt::print("overhead: engine p50 {:.3f} ms, grid p50 {:.3f} ms p90 {:.3f} ms (bidding p50 {:.3f} ms) -> overhead p50 {:.3f} ms; "
               "{:.3f} ms CPU per job (client + provider){}{}\n",
               percentile(local_ms, 0.5), percentile(grid_ms, 0.5), percentile(grid_ms, 0.9), percentile(bid_ms, 0.5), overhead,
               cpu * 1000 / o.jobs, o.ledger_dir.empty() ? "" : ", ledgers on", o.standing ? ", standing bids" : "");
  client.node->stop();
  prov->node->stop();
  std::filesystem::remove_all(tmp);
}

void bench_throughput(const options& o, json_writer& out) {
  std::shared_ptr<graph> g;
  grid::job_spec job = make_job(o.model, &g);
  auto tmp = std::filesystem::temp_directory_path() / fmt::format("grid_bench_tp_{}", getpid());
  std::vector<std::unique_ptr<provider_process>> provs;
  std::string boot = o.peer;
  if (boot.empty()) {  // providers in this process (their CPU time counts below)
    provs.push_back(provider_process::start((tmp / "p0").string(), "", 4, o.ledger_dir));
    for (int i = 1; i < 4; ++i)
      provs.push_back(provider_process::start((tmp / fmt::format("p{}", i)).string(), provs[0]->node->url(), 4, o.ledger_dir));
    boot = provs[0]->node->url();
  }
  client_process client(std::vector<std::string>{boot}, o.ledger_dir, 4);
  grid::client_options co;
  co.timeout_s = 30;
  grid::quote_book quotes;
  if (o.standing) co.quotes = &quotes;
  auto note = [](const std::string&) {};
  // Warm: every provider gets the model.
  for (auto& p : client.providers) {
    auto r = grid::run_job(*client.sys, {p}, job, co, grid::keypair_of(client.id), nullptr, nullptr, nullptr, note);
    if (!r) throw std::runtime_error(r.error().message());
  }
  std::atomic<int> next{0}, failed{0};
  std::mutex ledger_mu;
  auto t0 = clk::now();
  double cpu0 = process_cpu_s();
  std::vector<std::thread> threads;
  for (int c = 0; c < o.concurrency; ++c) {
    threads.emplace_back([&] {
      while (next.fetch_add(1) < o.jobs) {
        auto r = grid::run_job(*client.sys, client.providers, job, co, grid::keypair_of(client.id), nullptr, nullptr, nullptr, note);
        if (!r) {
          failed++;
          continue;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  double secs = ms_since(t0) / 1000;
  double cpu = process_cpu_s() - cpu0;
  std::vector<int64_t> per;
  for (auto& p : provs) per.push_back(p->core->counters().jobs.load());
  out.key("throughput").begin_object().key("jobs").value(static_cast<int64_t>(o.jobs)).key("concurrency").value(static_cast<int64_t>(o.concurrency))
      .key("standing_bids").value(o.standing).key("seconds").value(secs).key("jobs_per_s").value(o.jobs / secs).key("failed").value(static_cast<int64_t>(failed.load()))
      .key(o.peer.empty() ? "cpu_ms_per_job_all_nodes" : "cpu_ms_per_job_client").value(cpu * 1000 / o.jobs).key("jobs_per_provider").begin_array();
  for (auto n : per) out.value(n);
  out.end_array().end_object();
  if (!o.json)
    fmt::print("throughput{}: {} jobs over 4 providers{}, {} in flight: {:.0f} jobs/s ({} failed; {:.3f} ms CPU per job, {}; per provider {})\n",
               o.standing ? " (standing bids)" : "", o.jobs, o.peer.empty() ? "" : " in other processes", o.concurrency, o.jobs / secs, failed.load(),
               cpu * 1000 / o.jobs, o.peer.empty() ? "all nodes" : "the client alone",
               per.empty() ? std::string("-") : fmt::format("{}", fmt::join(per, "/")));
  client.node->stop();
  for (auto& p : provs) p->node->stop();
  std::filesystem::remove_all(tmp);
}

void bench_auction(const options& o, json_writer& out) {
  std::shared_ptr<graph> g;
  grid::job_spec job = make_job(o.model, &g);
  auto cfg = small_config(2);
  caf::actor_system sys{*cfg};
  std::vector<grid::provider_handle> handles;
  std::vector<std::shared_ptr<grid::provider_core>> cores;
  for (int i = 0; i < 100; ++i) {
    grid::provider_options po;
    po.device = "cpu";
    po.threads = 1;
    po.price.price_per_gflop = 0.001 * (1 + (i % 7) * 0.1);
    auto k = grid::keypair::generate();
    auto core = std::make_shared<grid::provider_core>(k, nullptr, po, nullptr);
    cores.push_back(core);
    handles.push_back({grid::spawn_provider(sys, core), k.public_key, ""});
  }
  grid::client_options co;
  auto client = grid::keypair::generate();
  auto note = [](const std::string&) {};
  std::vector<double> bid_ms, total_ms;
  for (int i = 0; i < 200; ++i) {
    auto r = grid::run_job(sys, handles, job, co, client, nullptr, nullptr, nullptr, note);
    if (!r) throw std::runtime_error(r.error().message());
    bid_ms.push_back(r->queue_ms);
    total_ms.push_back(r->total_ms);
  }
  out.key("auction_100").begin_object().key("bidding"); stats(out, bid_ms);
  out.key("whole_job"); stats(out, total_ms);
  out.end_object();
  if (!o.json)
    fmt::print("auction: 100 providers, bids collected and ranked in p50 {:.3f} ms, p90 {:.3f} ms (whole job p50 {:.3f} ms)\n",
               percentile(bid_ms, 0.5), percentile(bid_ms, 0.9), percentile(total_ms, 0.5));
  for (auto& h : handles) caf::anon_send_exit(h.actor, caf::exit_reason::user_shutdown);
}

void bench_membership(const options& o, json_writer& out) {
  auto cfg = small_config(2);
  caf::actor_system sys{*cfg};
  std::vector<std::unique_ptr<grid::grid_node>> nodes;
  std::vector<std::shared_ptr<grid::provider_core>> cores;
  auto make = [&](const std::string& bootstrap) {
    grid::provider_options po;
    po.device = "cpu";
    auto core = std::make_shared<grid::provider_core>(grid::keypair::generate(), nullptr, po, nullptr);
    grid::node_options no;
    no.listen = "127.0.0.1:0";
    no.provider = core;
    if (!bootstrap.empty()) no.bootstrap = {bootstrap};
    auto n = grid::grid_node::start(sys, net::identity::generate(), no);
    if (!n) throw std::runtime_error(n.error().message());
    cores.push_back(core);
    nodes.push_back(std::move(*n));
  };
  make("");
  std::string boot = nodes[0]->url();
  auto t0 = clk::now();
  for (int i = 1; i < o.peers; ++i) make(boot);
  double started_ms = ms_since(t0);
  size_t want = static_cast<size_t>(o.peers - 1);
  double full_ms = -1;
  size_t min_known = 0;
  while (ms_since(t0) < 60000) {
    min_known = SIZE_MAX;
    for (auto& n : nodes) min_known = std::min(min_known, n->known_peers());
    if (min_known >= want) {
      full_ms = ms_since(t0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  size_t conns = 0;
  for (auto& n : nodes) conns += static_cast<size_t>(n->transport_metrics().established);
  out.key("membership").begin_object().key("peers").value(static_cast<int64_t>(o.peers)).key("start_ms").value(started_ms)
      .key("full_membership_ms").value(full_ms).key("min_known").value(static_cast<int64_t>(min_known))
      .key("connections").value(static_cast<int64_t>(conns / 2)).end_object();
  if (!o.json)
    fmt::print("membership: {} nodes started in {:.0f} ms; every node knew all {} others after {:.0f} ms ({} connections in all)\n",
               o.peers, started_ms, want, full_ms, conns / 2);
  for (auto& n : nodes) n->stop();
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "grid_bench: {} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--only") {
      std::stringstream ss(next());
      for (std::string w; std::getline(ss, w, ',');) o.only.push_back(w);
    } else if (a == "--jobs") o.jobs = std::stoi(next());
    else if (a == "--concurrency") o.concurrency = std::stoi(next());
    else if (a == "--peers") o.peers = std::stoi(next());
    else if (a == "--ledger") o.ledger_dir = next();
    else if (a == "--peer") o.peer = next();
    else if (a == "--standing") o.standing = true;
    else if (a == "--json") o.json = true;
    else if (o.model.empty() && a[0] != '-') o.model = a;
    else {
      fmt::print(stderr, "grid_bench: unknown argument '{}'\n", a);
      return 2;
    }
  }
  if (o.model.empty()) {
    fmt::print(stderr, "usage: grid_bench MODEL.onnx [--only overhead,throughput,auction,membership] [--jobs N] "
                       "[--concurrency C] [--peers N] [--ledger DIR] [--peer URL] [--standing] [--json]\n");
    return 2;
  }
  json_writer out;
  out.begin_object();
  try {
    if (o.wants("overhead")) bench_overhead(o, out);
    if (o.wants("throughput")) bench_throughput(o, out);
    if (o.wants("auction")) bench_auction(o, out);
    if (o.wants("membership")) bench_membership(o, out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "grid_bench: {}\n", e.what());
    return 1;
  }
  out.end_object();
  if (o.json) fmt::print("{}\n", out.str());
  return 0;
}
