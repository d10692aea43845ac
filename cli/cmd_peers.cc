// gpugrid peers: the providers reachable through the bootstrap peers, learned by gossip, each
// dialed once for what it offers (its Hello) and a round trip.
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <fmt/format.h>

#include "actors/node.h"
#include "actors/reputation.h"
#include "base/json.h"
#include "cli/commands.h"
#include "cli/grid_setup.h"
#include "cli/log.h"

namespace gpugrid::cli {

namespace {

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: peers: {}\n", st.message());
  return exit_code_for(st.kind());
}

std::string human_bytes(int64_t b) {
  if (b <= 0) return "-";
  double g = static_cast<double>(b) / (1 << 30);
  return g >= 1 ? fmt::format("{:.0f} GiB", g) : fmt::format("{:.0f} MiB", static_cast<double>(b) / (1 << 20));
}

}  // namespace

int peers_command(const peers_options& o) {
  if (o.peers.empty())
    return fail(status(error_kind::usage, "no peers to ask: give --peer URL, set GPUGRID_PEERS, or list peers in config.toml"));
  std::optional<grid::reputation_book> reputation;
  if (auto dir = grid_data_dir(o.data_dir)) {
    auto book = grid::reputation_book::load(*dir);
    if (!book) return fail(book.error());
    reputation.emplace(*book);
  } else {
    reputation.emplace();
  }
  auto cfg = grid_actor_config();
  caf::actor_system sys{*cfg};
  grid::node_options no;
  no.bootstrap = o.peers;
  no.max_providers = 256;
  auto node = grid::grid_node::start(sys, net::identity::generate(), no);
  if (!node) return fail(node.error());
  auto failures = (*node)->settle(std::chrono::seconds(5));
  (*node)->ping_all();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto peers = (*node)->peers();
  (*node)->stop();
  bool nobody = failures.size() == o.peers.size();
  if (!nobody)
    for (const auto& f : failures) log::warning("peers: {}", f);
  std::vector<grid::peer_view> providers;
  for (auto& p : peers)
    if (p.record.is_provider) providers.push_back(p);
  std::sort(providers.begin(), providers.end(), [](const auto& a, const auto& b) { return a.record.url < b.record.url; });
  if (providers.empty()) {
    if (nobody)
      return fail(status(error_kind::no_provider, fmt::format("no bootstrap peer answered: {}", fmt::join(failures, "; "))));
    if (o.json) fmt::print("[]\n");
    else log::note("peers: the grid has no providers right now");
    return 0;
  }
  if (o.json) {
    json list = json::array();
    for (const auto& p : providers) {
      const auto& r = p.record;
      json devices = json::array();
      for (const auto& d : r.info.devices) {
        devices.push_back(json{{"name", d.name},
                               {"kind", d.kind},
                               {"memory_bytes", d.memory_bytes},
                               {"compute_capability", d.kind == "cuda" ? json(fmt::format("{}.{}", d.cc_major, d.cc_minor)) : json(nullptr)},
                               {"gflops", d.gflops}});
      }
      list.push_back(json{{"node_id", p.node_id},
                          {"url", r.url},
                          {"connected", p.connected},
                          {"devices", std::move(devices)},
                          {"price_per_gflop", r.info.price_per_gflop},
                          {"slots", r.info.slots},
                          {"rtt_ms", p.rtt_ms >= 0 ? json(p.rtt_ms) : json(nullptr)},
                          {"reputation", reputation->score(p.node_id)},
                          {"ledger", json{{"head", ledger::to_hex(r.info.ledger_head)}, {"count", static_cast<int64_t>(r.info.ledger_count)}}}});
    }
    fmt::print("{}\n", dump_json_list(list));
    return 0;
  }
  // Node ids are 34 characters ("gg" + 32); the column fits them whole.
  fmt::print("{:<34} {:<28} {:<26} {:>8} {:>4} {:>8} {:>10} {:>9} {:>5} {:>8}\n", "NODE", "URL", "DEVICE", "MEMORY", "CC",
             "GFLOPS", "PRICE", "RTT", "REP", "RECEIPTS");
  for (const auto& p : providers) {
    const auto& r = p.record;
    std::string device = "?", mem = "-", cc = "-", gflops = "-";
    if (!r.info.devices.empty()) {
      const auto& d = r.info.devices.front();
      device = d.name.size() > 26 ? d.name.substr(0, 25) + "~" : d.name;
      mem = human_bytes(d.memory_bytes);
      if (d.kind == "cuda") cc = fmt::format("{}.{}", d.cc_major, d.cc_minor);
      gflops = fmt::format("{:.0f}", d.gflops);
    }
    fmt::print("{:<34} {:<28} {:<26} {:>8} {:>4} {:>8} {:>10.6f} {:>9} {:>5.2f} {:>8}\n", p.node_id, r.url,
               device, mem, cc, gflops, r.info.price_per_gflop, p.rtt_ms >= 0 ? fmt::format("{:.2f}ms", p.rtt_ms) : "-",
               reputation->score(p.node_id), p.connected ? std::to_string(r.info.ledger_count) : "-");
  }
  return 0;
}

}  // namespace gpugrid::cli
