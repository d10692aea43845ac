// gpugrid offer: this machine joins the grid as a provider and serves jobs until SIGINT or
// SIGTERM, then drains: no new bids, running jobs finish (or are handed back after a grace
// period, so their clients fail over at once).
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <fmt/format.h>

#include "actors/model_cache.h"
#include "actors/node.h"
#include "actors/provider.h"
#include "base/data_dir.h"
#include "base/json.h"
#include "chain/voucher_check.h"
#include "cli/chain_payment.h"
#include "cli/commands.h"
#include "cli/generate_grid.h"
#include "cli/grid_setup.h"
#include "cli/ledger_anchor.h"
#include "cli/log.h"
#include "engine/backend.h"
#include "ledger/ledger.h"

namespace gpugrid::cli {

namespace {

constexpr auto kDrainGrace = std::chrono::seconds(30);

volatile sig_atomic_t g_signal_count = 0;
volatile sig_atomic_t g_last_signal = 0;
sem_t g_stop_sem;

void on_stop_signal(int sig) {
  g_last_signal = sig;
  g_signal_count = g_signal_count + 1;
  sem_post(&g_stop_sem);  // async-signal-safe
}

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: offer: {}\n", st.message());
  return exit_code_for(st.kind());
}

json devices_json(const std::vector<grid::device_summary>& devices) {
  json list = json::array();
  for (const auto& d : devices) {
    json j{{"name", d.name}, {"kind", d.kind}, {"memory_bytes", d.memory_bytes}};
    if (d.kind == "cuda") j["compute_capability"] = fmt::format("{}.{}", d.cc_major, d.cc_minor);
    j["gflops"] = d.gflops;
    list.push_back(std::move(j));
  }
  return list;
}

// An event as a person reads it: "peer_up node_id=gg... role=client".
std::string event_text(const json& e) {
  std::string text = e.value("event", std::string("event"));
  for (const auto& [k, v] : e.items()) {
    if (k == "event" || k == "time") continue;
    text += " " + k + "=" + (v.is_string() ? v.get<std::string>() : dump_json(v));
  }
  return text;
}

// A hint for the handshake failure of a node that dialed its own identity.
std::string with_self_hint(const std::string& message) {
  if (message.find("connected to itself") == std::string::npos) return message;
  return message +
         " (that peer has this node's own identity: this process, or a node sharing this data dir; give one of "
         "them another --data-dir)";
}

// One event line: JSON Lines on stdout with --json, else a timestamped line on stderr.
void emit_event(bool as_json, json e) {
  if (as_json) {
    e["time"] = log::utc_timestamp();  // last, so the event's own keys lead the line
    fmt::print("{}\n", dump_json(e));
    std::fflush(stdout);
  } else {
    log::event_line(with_self_hint(event_text(e)));
  }
}

}  // namespace

provider_factory& offer_provider_factory() {
  static provider_factory f;
  return f;
}

relay_tamper& offer_relay_tamper() {
  static relay_tamper f;
  return f;
}

expected<double> parse_rate(const std::string& text) {
  std::string t = text;
  for (const char* unit : {"B/s", "/s", "B"})
    if (t.size() > std::strlen(unit) && t.compare(t.size() - std::strlen(unit), std::string::npos, unit) == 0) {
      t.resize(t.size() - std::strlen(unit));
      break;
    }
  double scale = 1;
  if (!t.empty()) {
    switch (t.back()) {
      case 'k': case 'K': scale = 1e3; break;
      case 'm': case 'M': scale = 1e6; break;
      case 'g': case 'G': scale = 1e9; break;
      default: break;
    }
    if (scale != 1) t.pop_back();
  }
  char* end = nullptr;
  double v = t.empty() ? 0 : std::strtod(t.c_str(), &end);
  if (t.empty() || !end || *end != '\0' || !(v > 0) || v * scale > 1e12)
    return invalid_input("--relay-max-bandwidth '{}' is not a rate (bytes per second, e.g. 10M or 500K)", text);
  return v * scale;
}

int offer_command(const offer_options& o) {
  if (!valid_device_spec(o.device)) return fail(invalid_input("'{}' is not a device (use auto, cpu, cuda or cuda:N)", o.device));
  // SIGINT/SIGTERM only count and wake the main thread: a handler (not a blocked mask) because
  // threads that libraries start before main (OpenBLAS's pool) would otherwise take the
  // default action and kill the process mid-drain.
  sem_init(&g_stop_sem, 0, 0);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  double relay_rate = 0;
  if (!o.relay_max_bandwidth.empty()) {
    auto r = parse_rate(o.relay_max_bandwidth);
    if (!r) return fail(r.error());
    relay_rate = *r;
  }
  if (!o.relay && (!o.relay_max_bandwidth.empty() || o.relay_max_circuits != 256))
    return fail(status(error_kind::usage, "--relay-max-circuits and --relay-max-bandwidth need --relay"));
  auto dir = grid_data_dir(o.data_dir);
  if (!dir) return fail(dir.error());
  // The data dir is this provider's alone while it runs (see base/data_dir.h).
  auto dir_lock = data_dir_lock::acquire(*dir, "gpugrid offer");
  if (!dir_lock) return fail(dir_lock.error());
  // A file-size limit makes a write fail (and the ledger cut back) instead of killing the node.
  ::signal(SIGXFSZ, SIG_IGN);
  auto id = net::load_or_create_identity(*dir);
  if (!id) return fail(id.error());
  int64_t max_model = int64_t{o.max_model_mb} << 20;
  auto cache = grid::model_cache::open((std::filesystem::path(*dir) / "models").string(),
                                       std::max<int64_t>(int64_t{8} << 30, 4 * max_model));
  if (!cache) return fail(cache.error());
  std::string recovered;
  auto ledger = ledger::ledger_file::open(*dir, &recovered);
  if (!ledger) return fail(ledger.error());
  if (!recovered.empty()) log::warning("{}", recovered);

  // Paid on a chain when one is configured (README "Paying on a chain").
  chain_flags cf{o.chain_rpc, o.contract, o.chain_id, ""};
  auto link = open_chain_link(*dir, cf);
  if (!link) return fail(link.error());
  std::shared_ptr<chain_gate> gate;
  if (*link) {
    auto wallet = chain::load_or_create_wallet_key(*dir);
    if (!wallet) return fail(wallet.error());
    gate_options go;
    auto amount = [](const std::string& text, const char* flag, chain::u256 fallback) -> expected<chain::u256> {
      if (text.empty()) return fallback;
      return chain::parse_amount(text, 18, flag);
    };
    auto min_dep = amount(o.min_deposit, "--min-deposit", 0);
    if (!min_dep) return fail(min_dep.error());
    auto threshold = amount(o.redeem_threshold, "--redeem-threshold", chain::u256(10000000000000000ull));
    if (!threshold) return fail(threshold.error());
    go.min_deposit = *min_dep;
    go.redeem_threshold = *threshold;
    go.log = [](const std::string& line) { fmt::print(stderr, "gpugrid: offer: {}\n", line); };
    gate = std::make_shared<chain_gate>(*link, *wallet, *dir, go);
  } else if (!o.min_deposit.empty() || !o.redeem_threshold.empty()) {
    return fail(status(error_kind::usage, "--min-deposit and --redeem-threshold need a chain (--chain-rpc URL)"));
  }

  grid::provider_options po;
  po.slots = o.slots;
  po.payment = gate;
  po.device = o.device;
  if (o.price > 0) po.price.price_per_gflop = o.price;
  po.price.minimum = po.price.price_per_gflop * 0.1;  // the smallest job is billed as 0.1 GFLOP
  po.max_model_bytes = max_model;
  po.max_memory_bytes = int64_t{o.max_memory_mb} << 20;
  po.unpaid_file = (std::filesystem::path(*dir) / "unpaid.log").string();
  po.batch = {o.batch_max, o.batch_wait_us};
  po.log = [](const std::string& line) { fmt::print(stderr, "gpugrid: offer: {}\n", line); };
  provider_factory make = offer_provider_factory();
  if (!make)
    make = [](grid::keypair k, std::shared_ptr<grid::model_cache> c, grid::provider_options p,
              std::shared_ptr<ledger::ledger_file> l) {
      return std::make_shared<grid::provider_core>(k, std::move(c), std::move(p), std::move(l));
    };
  std::shared_ptr<ledger::ledger_file> book(std::move(*ledger));
  std::shared_ptr<grid::provider_core> core =
      make(grid::keypair_of(*id), std::shared_ptr<grid::model_cache>(std::move(*cache)), po, book);
  auto info = core->info();
  if (o.device.rfind("cuda", 0) == 0 && (info.devices.empty() || info.devices[0].kind != "cuda")) {
    std::string note;
    (void)cuda_devices(&note);
    return fail(invalid_input("device {} is not available{}", o.device, note.empty() ? "" : ": " + note));
  }

  auto cfg = grid_actor_config();
  caf::actor_system sys{*cfg};
  grid::node_options no;
  no.listen = o.listen;
  no.bootstrap = o.peers;
  no.tls_cert = o.tls_cert;
  no.tls_key = o.tls_key;
  no.provider = core;
  no.software = "gpugrid " GPUGRID_VERSION;
  // Generation sessions for any model folder a client sends (cli/generate_grid.h).
  offer_generation_settings gs;
  gs.data_dir = *dir;
  gs.price_per_gflop = info.price_per_gflop;
  gs.max_model_bytes = max_model;
  gs.max_memory_bytes = po.max_memory_bytes;
  gs.slots = o.slots;
  gs.device = info.devices.empty() || info.devices[0].kind != "cuda" ? "cpu" : o.device;
  gs.payment = gate;  // generation is paid per token on the same chain
  auto generation = make_offer_generation_host(*id, gs);
  if (!generation) return fail(generation.error());
  no.generation = *generation;
  no.relay = o.relay;
  no.relay_options.max_circuits = static_cast<size_t>(o.relay_max_circuits);
  no.relay_options.max_circuits_per_source = std::max<size_t>(1, std::min<size_t>(16, no.relay_options.max_circuits / 4));
  no.relay_options.max_bytes_per_second = relay_rate;
  no.relay_options.log = [](const std::string& line) { log::warning("{}", line); };
  no.relay_options.tamper = offer_relay_tamper();
  no.via_relays = o.via_relays;
  const bool as_json = o.json;
  no.on_event = [as_json](const std::string& line) {
    json e = parse_json(line);
    if (e.is_discarded() || !e.is_object()) e = json{{"event", "note"}, {"text", line}};
    // Reachability, in words (README "Offering from behind NAT").
    std::string kind = e.value("event", std::string());
    if (!as_json && kind == "reachable") return log::event_line("reachable at " + e.value("url", std::string()));
    if (!as_json && kind == "behind_nat")
      return log::event_line("behind NAT: serving through relay " + e.value("relay", std::string()) + " at " +
                             e.value("url", std::string()));
    emit_event(as_json, std::move(e));
  };
  if (gate) {
    status st = gate->start((std::filesystem::path(*dir) / "ledger.log").string(), grid::keypair_of(*id).public_key);
    if (!st.is_ok()) return fail(st);
  }
  auto node = grid::grid_node::start(sys, *id, no);
  if (!node) return fail(node.error());
  // Anchoring the ledger's head on chain, in the background (cli/ledger_anchor.h).
  auto anchors = start_offer_anchorer(o, *dir, book, [as_json](json e) { emit_event(as_json, std::move(e)); });
  if (!anchors) {
    (*node)->stop();
    return fail(anchors.error());
  }
  if (o.device != "cpu" && !info.devices.empty() && info.devices[0].kind == "cpu")
    log::warning("no usable GPU found; offering the CPU backend");
  const std::string unit = gate ? fmt::format("on chain {} (wallet {})", chain::to_decimal((*link)->chain_id),
                                                gate->wallet().checksummed())
                                  : "in unsettled credits";
  if (as_json) {
    json e{{"event", "listening"},
           {"node_id", (*node)->node_id()},
           {"url", (*node)->url()},
           {"devices", devices_json(info.devices)},
           {"price_per_gflop", info.price_per_gflop},
           {"slots", info.slots},
           {"data_dir", *dir},
           {"settlement", gate ? "chain" : "unsettled"}};
    if (gate) {
      e["chain_id"] = chain::to_decimal((*link)->chain_id);
      e["contract"] = (*link)->contract.checksummed();
      e["wallet"] = gate->wallet().checksummed();
    }
    emit_event(true, std::move(e));
  } else {
    fmt::print("node {}\nlistening on {}\n", (*node)->node_id(), (*node)->url());
    log::event_line(fmt::format("offering {} at {:.6f} per GFLOP {}, {} slot{}; stop with Ctrl-C",
                                info.devices.empty() ? "nothing" : info.devices[0].name, info.price_per_gflop, unit,
                                info.slots, info.slots == 1 ? "" : "s"));
  }
  std::fflush(stdout);

  while (sem_wait(&g_stop_sem) != 0 && errno == EINTR) {
  }
  int sig = g_last_signal;
  if (!as_json)
    log::event_line(fmt::format("{}: draining (no new jobs; running jobs finish; signal again to hand them back now)",
                                sig == SIGINT ? "interrupted" : "terminated"));
  else emit_event(true, json{{"event", "draining"}, {"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  std::fflush(stdout);
  // A second SIGINT/SIGTERM hands the running jobs back at once.
  auto second_signal = []() { return g_signal_count >= 2; };
  int handed_back = (*node)->drain(kDrainGrace, second_signal);
  if (handed_back > 0) log::warning("handed {} running job{} back to their clients", handed_back, handed_back == 1 ? "" : "s");
  (*node)->stop();
  if (*anchors) (*anchors)->stop();  // anchors what the last jobs appended, once
  if (gate) {  // what was earned is cashed before exit (kept for the next start if not)
    int left = gate->redeem_all(std::chrono::seconds(60));
    if (left > 0) log::warning("{} channel{} not redeemed yet; redeemed at the next start", left, left == 1 ? "" : "s");
    gate->stop();
  }
  if (as_json) emit_event(true, json{{"event", "stopped"}, {"handed_back", handed_back}});
  else log::event_line("stopped");
  return 0;
}

}  // namespace gpugrid::cli
