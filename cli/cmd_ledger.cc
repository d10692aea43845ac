// gpugrid ledger show|verify|balance: the receipts of this node's paid jobs.
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "base/json.h"
#include "base/settings.h"
#include "cli/commands.h"
#include "ledger/ledger.h"
#include "net/identity.h"

namespace gpugrid::cli {

namespace {

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: ledger: {}\n", st.message());
  return exit_code_for(st.kind());
}

std::string when(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string credits(int64_t micros) { return fmt::format("{:.6f}", static_cast<double>(micros) / 1e6); }

}  // namespace

int ledger_command(const ledger_options& o) {
  auto config = load_settings();
  if (!config) return fail(config.error());
  auto dir = resolve_data_dir(o.data_dir, *config);
  if (!dir) return fail(dir.error());
  std::string path = (std::filesystem::path(*dir) / "ledger.log").string();
  bool torn = false;

  if (o.action == "verify") {  // streams the file: memory does not grow with the ledger
    ledger::chain_checker checker;
    ledger::digest32 last{};
    status st = ledger::for_each_entry(path, [&](const ledger::entry& e) {
      last = e.hash;
      return checker.add(e);
    }, &torn);
    if (o.json) {
      json_writer w;
      w.begin_object().key("ok").value(st.is_ok()).key("entries").value(static_cast<int64_t>(checker.count()));
      w.key("head").value(checker.count() == 0 ? std::string() : ledger::to_hex(last));
      if (!st.is_ok()) w.key("error").value(st.message());
      w.key("torn_tail").value(torn).end_object();
      fmt::print("{}\n", w.str());
    }
    if (!st.is_ok()) {
      fmt::print(stderr, "gpugrid: ledger: {}: {}\n", path, st.message());
      return 1;
    }
    if (!o.json)
      fmt::print("ledger OK: {} entries, every link and signature checks; head {}\n", checker.count(),
                 checker.count() == 0 ? std::string("(empty)") : ledger::to_hex(last));
    return 0;
  }
  if (o.action == "balance") {  // streams the file too
    ledger::balance_sheet sheet;
    status st = ledger::for_each_entry(path, [&](const ledger::entry& e) {
      sheet.add(e);
      return status::ok();
    }, &torn);
    if (!st.is_ok()) return fail(st);
    auto rows = sheet.rows();
    if (o.json) {
      json_writer w;
      w.begin_array();
      for (const auto& r : rows) {
        w.begin_object().key("node_id").value(net::node_id_of(r.node));
        w.key("earned").value(static_cast<double>(r.earned_micros) / 1e6).key("paid").value(static_cast<double>(r.paid_micros) / 1e6);
        w.key("net").value(static_cast<double>(r.earned_micros - r.paid_micros) / 1e6);
        w.key("jobs").value(r.jobs).key("disputes").value(r.disputes).end_object();
      }
      w.end_array();
      fmt::print("{}\n", w.str());
    } else {
      fmt::print("{:<22}  {:>12}  {:>12}  {:>12}  {:>6}  {:>8}\n", "node", "earned", "paid", "net", "jobs", "disputes");
      for (const auto& r : rows)
        fmt::print("{:<22}  {:>12}  {:>12}  {:>12}  {:>6}  {:>8}\n", net::node_id_of(r.node), credits(r.earned_micros),
                   credits(r.paid_micros), credits(r.earned_micros - r.paid_micros), r.jobs, r.disputes);
    }
    return 0;
  }
  if (o.action != "show") {
    fmt::print(stderr, "gpugrid: ledger: unknown action '{}' (use show, verify or balance)\n", o.action);
    return 2;
  }
  auto entries = ledger::read_entries(path, &torn);
  if (!entries) return fail(entries.error());
  const auto& es = *entries;
  {
    if (o.json) {
      json_writer w;
      w.begin_array();
      for (size_t i = es.size(); i-- > 0;) {
        const auto& r = es[i].rec;
        w.begin_object().key("index").value(static_cast<int64_t>(es[i].index));
        w.key("kind").value(r.kind == ledger::receipt_kind::payment ? "payment" : "dispute");
        w.key("job_id").value(ledger::to_hex(r.job_id));
        w.key("client").value(net::node_id_of(r.client_key)).key("provider").value(net::node_id_of(r.provider_key));
        w.key("model_hash").value(ledger::to_hex(r.model_hash));
        w.key("input_digest").value(ledger::to_hex(r.input_digest));
        w.key("output_digest").value(ledger::to_hex(r.output_digest));
        w.key("price").value(static_cast<double>(r.price_micros) / 1e6);
        w.key("started").value(when(r.started_ms)).key("finished").value(when(r.finished_ms));
        w.key("hash").value(ledger::to_hex(es[i].hash));
        w.end_object();
      }
      w.end_array();
      fmt::print("{}\n", w.str());
    } else if (es.empty()) {
      fmt::print("the ledger at {} is empty\n", path);
    } else {
      fmt::print("{:>5}  {:<8}  {:<20}  {:<22}  {:<22}  {:>12}\n", "#", "kind", "finished", "provider", "client", "price");
      for (size_t i = es.size(); i-- > 0;) {
        const auto& r = es[i].rec;
        fmt::print("{:>5}  {:<8}  {:<20}  {:<22}  {:<22}  {:>12}\n", es[i].index,
                   r.kind == ledger::receipt_kind::payment ? "payment" : "dispute", when(r.finished_ms),
                   net::node_id_of(r.provider_key), net::node_id_of(r.client_key), credits(r.price_micros));
      }
    }
    if (torn) fmt::print(stderr, "gpugrid: ledger: the last entry is torn (a crash while writing); it is cut when the node next opens the ledger\n");
    return 0;
  }
}

}  // namespace gpugrid::cli
