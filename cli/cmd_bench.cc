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
  for (int i = 0; i < std::max(1, o.warmup); ++i) {
    auto r = (*sess)->run(*inputs, &stats);
    if (!r) return fail(r.error().with_context(o.model));
  }
  std::vector<double> times;
  for (int i = 0; i < o.iterations; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    stats.op_ms.clear();
    auto r = (*sess)->run(*inputs, &stats);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!r) return fail(r.error().with_context(o.model));
    for (auto& [op, ms] : stats.op_ms) op_total[op] += ms / o.iterations;
  }
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
    json_writer w;
    w.begin_object().key("model").value(o.model).key("device").value((*sess)->device_name());
    w.key("threads").value(threads).key("cpu_gemm").value(cpu::sgemm::kernel_name()).key("iterations").value(o.iterations);
    w.key("median_ms").value(pct(0.5)).key("p90_ms").value(pct(0.9)).key("mean_ms").value(mean);
    w.key("min_ms").value(sorted.front()).key("max_ms").value(sorted.back());
    w.key("peak_bytes").value(stats.peak_bytes).key("arena_bytes").value(stats.arena_bytes);
    w.key("device_peak_bytes").value(stats.device_peak_bytes).key("device_arena_bytes").value(stats.device_arena_bytes);
    w.key("load_ms").value(load_ms);
    w.key("times_ms").begin_array();
    for (double t : times) w.value(t);
    w.end_array();
    w.key("graph_replay").value(stats.graph_replay).key("cpu_fallbacks").value(stats.cpu_fallbacks);
    if (o.profile) {
      w.key("op_ms").begin_object();
      for (auto& [op, ms] : op_total) w.key(op).value(ms);
      w.end_object();
    }
    w.end_object();
    fmt::print("{}\n", w.str());
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
    }
    if (stats.device_peak_bytes)
      fmt::print("device peak {:.2f} MiB (arena {:.2f} MiB)\n", static_cast<double>(stats.device_peak_bytes) / (1 << 20),
                 static_cast<double>(stats.device_arena_bytes) / (1 << 20));
  }
  return 0;
}

}  // namespace gpugrid::cli
