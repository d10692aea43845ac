// gpugrid bench: engine latency in this process, with no grid.
#include <algorithm>
#include <chrono>
#include <map>

#include <fmt/format.h>

#include "base/json.h"
#include "cli/commands.h"
#include "cli/model_io.h"
#include "engine/onnx_loader.h"
#include "engine/session.h"
#include "kernels/cpu/sgemm.h"

namespace gpugrid::cli {

int bench_command(const bench_options& o) {
  auto fail = [](const status& st) {
    fmt::print(stderr, "gpugrid: {}\n", st.message());
    return exit_code_for(st.kind());
  };
  if (o.iterations < 1) return fail(status(error_kind::usage, "--iterations must be at least 1"));
  auto model = load_model_file(o.model);
  if (!model) return fail(model.error());
  session_options so;
  so.threads = o.threads;
  so.allow_tf32 = o.precision == "tf32";
  so.device = o.device;
  so.profile = o.profile;
  set_blas_threads(o.threads);
  auto t_load = std::chrono::steady_clock::now();
  auto sess = session::create(*model, so);
  if (!sess) return fail(sess.error().with_context(o.model));
  double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count();
  auto inputs = o.inputs.empty() ? random_inputs((*sess)->model(), 42) : load_inputs((*sess)->model(), o.inputs);
  if (!inputs) return fail(inputs.error());
  run_stats stats;
  std::map<std::string, double> op_total;
  std::vector<run_stats::node_time> node_total;  // by position in the optimised graph
  for (int i = 0; i < std::max(1, o.warmup); ++i) {
    auto r = (*sess)->run(*inputs, &stats);
    if (!r) return fail(r.error().with_context(o.model));
  }
  std::vector<double> times;
  for (int i = 0; i < o.iterations; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    stats.op_ms.clear();
    stats.node_ms.clear();
    auto r = (*sess)->run(*inputs, &stats);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!r) return fail(r.error().with_context(o.model));
    for (auto& [op, ms] : stats.op_ms) op_total[op] += ms / o.iterations;
    if (node_total.size() < stats.node_ms.size()) node_total.resize(stats.node_ms.size());
    for (size_t k = 0; k < stats.node_ms.size(); ++k) {
      if (stats.node_ms[k].op.empty()) continue;  // not run (a branch not taken)
      if (node_total[k].op.empty()) node_total[k] = stats.node_ms[k], node_total[k].ms = 0;
      node_total[k].ms += stats.node_ms[k].ms / o.iterations;
    }
  }
  std::vector<run_stats::node_time> slowest;
  for (auto& n : node_total)
    if (!n.op.empty()) slowest.push_back(n);
  std::stable_sort(slowest.begin(), slowest.end(), [](const auto& a, const auto& b) { return a.ms > b.ms; });
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) {
    double idx = p * static_cast<double>(sorted.size() - 1);
    size_t lo = static_cast<size_t>(idx);
    size_t hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (idx - static_cast<double>(lo));
  };
  double mean = 0;
  for (double t : times) mean += t;
  mean /= static_cast<double>(times.size());
  int threads = o.threads > 0 ? o.threads : hardware_threads();
  if (o.json) {
    json j{{"model", o.model},
           {"device", (*sess)->device_name()},
           {"threads", threads},
           {"cpu_gemm", cpu::sgemm::kernel_name()},
           {"iterations", o.iterations},
           {"median_ms", pct(0.5)},
           {"p90_ms", pct(0.9)},
           {"mean_ms", mean},
           {"min_ms", sorted.front()},
           {"max_ms", sorted.back()},
           {"peak_bytes", stats.peak_bytes},
           {"arena_bytes", stats.arena_bytes},
           {"device_peak_bytes", stats.device_peak_bytes},
           {"device_arena_bytes", stats.device_arena_bytes},
           {"load_ms", load_ms},
           {"times_ms", times},
           {"graph_replay", stats.graph_replay},
           {"cpu_fallbacks", stats.cpu_fallbacks}};
    if (o.profile) {
      json ops = json::object();
      for (auto& [op, ms] : op_total) ops[op] = ms;
      j["op_ms"] = std::move(ops);
      // Every node that ran, slowest first.
      json nodes = json::array();
      for (auto& n : slowest) nodes.push_back(json{{"op", n.op}, {"name", n.name}, {"shape", n.shape}, {"ms", n.ms}});
      j["node_ms"] = std::move(nodes);
    }
    fmt::print("{}\n", dump_json(j));
  } else {
    fmt::print("model       {}\ndevice      {} ({} CPU threads, CPU GEMM {})\niterations  {}\n", o.model,
               (*sess)->device_name(), threads, cpu::sgemm::kernel_name(), o.iterations);
    fmt::print("median      {:.3f} ms\np90         {:.3f} ms\nmin         {:.3f} ms\n", pct(0.5), pct(0.9), sorted.front());
    fmt::print("peak        {:.2f} MiB (arena {:.2f} MiB)\nload        {:.1f} ms\n",
               static_cast<double>(stats.peak_bytes) / (1 << 20), static_cast<double>(stats.arena_bytes) / (1 << 20), load_ms);
    if (o.profile) {
      std::vector<std::pair<double, std::string>> rows;
      for (auto& [op, ms] : op_total) rows.push_back({ms, op});
      std::sort(rows.rbegin(), rows.rend());
      for (auto& [ms, op] : rows) fmt::print("  {:<28} {:9.3f} ms\n", op, ms);
      fmt::print("slowest nodes\n");
      for (size_t k = 0; k < slowest.size() && k < 10; ++k)
        fmt::print("  {:9.3f} ms  {:<16} {} {}\n", slowest[k].ms, slowest[k].op, slowest[k].name, slowest[k].shape);
    }
    if (stats.device_peak_bytes)
      fmt::print("device peak {:.2f} MiB (arena {:.2f} MiB)\n", static_cast<double>(stats.device_peak_bytes) / (1 << 20),
                 static_cast<double>(stats.device_arena_bytes) / (1 << 20));
  }
  return 0;
}

}  // namespace gpugrid::cli
