// The DHT at scale: runs discovery/simulator.h (the real discovery code, a simulated network)
// and prints what it measured. bench/discovery_sim.sh runs the recorded configurations.
//
//   discovery_sim [--nodes N] [--warmup-min M] [--measure-min M] [--churn SHARE_PER_MIN]
//                 [--loss P] [--lookups-per-sec R] [--want K] [--models M] [--seed S] [--json]
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "discovery/simulator.h"

namespace {

int usage(const char* why) {
  std::fprintf(stderr, "discovery_sim: %s\nusage: discovery_sim [--nodes N] [--warmup-min M] [--measure-min M] "
                       "[--churn SHARE_PER_MIN] [--loss P] [--lookups-per-sec R] [--want K] [--models M] "
                       "[--seed S] [--json]\n", why);
  return 2;
}

bool number(const char* s, double& out) {
  char* end = nullptr;
  out = std::strtod(s, &end);
  return end && *end == '\0' && end != s && out >= 0 && out < 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gpugrid::discovery;
  sim_config cfg;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
      continue;
    }
    if (i + 1 >= argc) return usage(("missing value after " + a).c_str());
    double v = 0;
    if (!number(argv[++i], v)) return usage(("bad value for " + a + ": " + argv[i]).c_str());
    if (a == "--nodes" && v >= 8 && v <= 200000) cfg.nodes = static_cast<size_t>(v);
    else if (a == "--warmup-min") cfg.warmup_ms = static_cast<int64_t>(v * 60000);
    else if (a == "--measure-min" && v > 0) cfg.measure_ms = static_cast<int64_t>(v * 60000);
    else if (a == "--churn" && v <= 1) cfg.churn_per_min = v;
    else if (a == "--loss" && v < 1) cfg.loss = v;
    else if (a == "--lookups-per-sec") cfg.lookups_per_sec = v;
    else if (a == "--want" && v >= 1 && v <= 256) cfg.want = static_cast<size_t>(v);
    else if (a == "--models" && v >= 1) cfg.models = static_cast<size_t>(v);
    else if (a == "--seed") cfg.seed = static_cast<uint64_t>(v);
    else return usage(("unknown option or value out of range: " + a).c_str());
  }
  const sim_report r = run_simulation(cfg, [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  if (json) {
    std::printf("%s\n",
                fmt::format("{{\"nodes\":{},\"measured_min\":{},\"churn_per_min\":{},\"loss\":{},\"lookups\":{},"
                            "\"lookups_cold\":{},\"lookups_timed_out\":{},\"lookup_ms_p50\":{},\"lookup_ms_p90\":{},"
                            "\"lookup_ms_p99\":{},\"cold_ms_p50\":{},\"warm_ms_p50\":{},\"queries_per_lookup\":{:.2f},"
                            "\"findable\":{:.4f},\"full_answers\":{:.4f},\"stale_share\":{:.4f},"
                            "\"msgs_per_node_min\":{:.2f},\"bytes_per_node_min\":{:.0f},\"records_per_node\":{:.1f},"
                            "\"table_per_node\":{:.1f},\"churned\":{},\"wall_s\":{:.1f}}}",
                            r.nodes, r.measured_min, cfg.churn_per_min, cfg.loss, r.lookups, r.lookups_cold,
                            r.lookups_timed_out, r.lookup_ms_p50, r.lookup_ms_p90, r.lookup_ms_p99, r.cold_ms_p50,
                            r.warm_ms_p50, r.queried_mean, r.findable, r.full_answers, r.stale_share,
                            r.msgs_per_node_min, r.bytes_per_node_min, r.stored_records_mean, r.table_size_mean,
                            r.churned, r.wall_s)
                    .c_str());
  } else {
    std::printf("%s\n", r.to_text().c_str());
  }
  return 0;
}
