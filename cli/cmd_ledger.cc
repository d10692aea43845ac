// gpugrid ledger show|verify|balance|anchor: the receipts of this node's paid jobs (anchors:
// cli/ledger_anchor.h).
#include <chrono>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "base/json.h"
#include "base/settings.h"
#include "cli/commands.h"
#include "cli/ledger_anchor.h"
#include "cli/log.h"
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

// --since: an age ("30m", "12h", "7d", "90s") before now, or a UTC date or time
// ("2026-12-01", "2026-12-01T10:00:00Z"), as milliseconds since the epoch.
expected<int64_t> parse_since(const std::string& s, int64_t now_ms) {
  char* end = nullptr;
  double n = std::strtod(s.c_str(), &end);
  if (end && end != s.c_str() && end[0] && !end[1] && n >= 0 && s[0] != '-') {
    int64_t unit = 0;
    switch (end[0]) {
      case 's': unit = 1000; break;
      case 'm': unit = 60 * 1000; break;
      case 'h': unit = 3600 * 1000; break;
      case 'd': unit = 86400 * 1000; break;
      case 'w': unit = 7 * 86400 * 1000; break;
    }
    if (unit) return now_ms - static_cast<int64_t>(n * static_cast<double>(unit));
  }
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%d", &tm);
  if (rest && *rest == 'T') rest = strptime(rest + 1, "%H:%M:%S", &tm);
  if (rest && *rest == 'Z') ++rest;
  if (!rest || *rest != '\0')
    return status(error_kind::usage,
                  fmt::format("--since '{}' is not a time (use 2026-12-01, 2026-12-01T10:00:00Z, or an age such as "
                              "30m, 12h, 7d)", s));
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

int ledger_command(const ledger_options& o) {
  auto config = load_settings();
  if (!config) return fail(config.error());
  auto dir = resolve_data_dir(o.data_dir, *config);
  if (!dir) return fail(dir.error());
  std::string path = (std::filesystem::path(*dir) / "ledger.log").string();
  bool torn = false;

  if (o.action != "show" && (o.limit > 0 || !o.since.empty()))
    return fail(status(error_kind::usage, fmt::format("--limit and --since apply to 'ledger show', not '{}'", o.action)));
  if (o.chain && o.action != "verify")
    return fail(status(error_kind::usage, fmt::format("--chain applies to 'ledger verify', not '{}'", o.action)));
  if (o.anchors && o.action != "show")
    return fail(status(error_kind::usage, fmt::format("--anchors applies to 'ledger show', not '{}'", o.action)));
  const bool on_chain = o.action == "anchor" || (o.action == "verify" && o.chain);
  if (!on_chain && (!o.chain_rpc.empty() || !o.contract.empty() || !o.address.empty()))
    return fail(status(error_kind::usage, "--chain-rpc, --contract and --address apply to 'ledger anchor' and 'ledger verify --chain'"));
  if (o.action == "anchor") return ledger_anchor_now(o, *dir, stdout, stderr);
  if (o.action == "verify" && o.chain) return ledger_verify_chain(o, *dir, stdout, stderr);
  if (o.action == "show" && o.anchors) {
    if (!o.since.empty()) return fail(status(error_kind::usage, "--since applies to receipts, not to --anchors"));
    return ledger_show_anchors(o, *dir, stdout, stderr);
  }
  if (o.action == "verify") {  // streams the file: memory does not grow with the ledger
    ledger::chain_checker checker;
    ledger::digest32 last{};
    status st = ledger::for_each_entry(path, [&](const ledger::entry& e) {
      last = e.hash;
      return checker.add(e);
    }, &torn);
    std::string head = checker.count() == 0 ? std::string() : ledger::to_hex(last);
    if (o.json) {
      json j{{"ok", st.is_ok()}, {"entries", checker.count()}, {"head", head}};
      if (!st.is_ok()) j["error"] = st.message();
      j["torn_tail"] = torn;
      fmt::print("{}\n", dump_json(j));
    }
    if (!st.is_ok()) {
      fmt::print(stderr, "gpugrid: ledger: {}: {}\n", path, st.message());
      return 1;
    }
    if (!o.json)
      fmt::print("ledger OK: {} entries, every link and signature checks; head {}\n", checker.count(),
                 head.empty() ? std::string("(empty)") : head);
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
      json list = json::array();
      for (const auto& r : rows) {
        list.push_back(json{{"node_id", net::node_id_of(r.node)},
                            {"earned", static_cast<double>(r.earned_micros) / 1e6},
                            {"paid", static_cast<double>(r.paid_micros) / 1e6},
                            {"net", static_cast<double>(r.earned_micros - r.paid_micros) / 1e6},
                            {"jobs", r.jobs},
                            {"disputes", r.disputes},
                            // Jobs paid with vouchers on a chain (in wei) and what is only credits.
                            {"settled_jobs", r.settled_jobs},
                            {"earned_wei", ledger::decimal(r.earned_wei)},
                            {"paid_wei", ledger::decimal(r.paid_wei)},
                            {"unsettled_earned", static_cast<double>(r.earned_micros - r.settled_earned_micros) / 1e6},
                            {"unsettled_paid", static_cast<double>(r.paid_micros - r.settled_paid_micros) / 1e6}});
      }
      fmt::print("{}\n", dump_json_list(list));
    } else {
      fmt::print("{:<34}  {:>12}  {:>12}  {:>12}  {:>6}  {:>8}\n", "node", "earned", "paid", "net", "jobs", "disputes");
      for (const auto& r : rows)
        fmt::print("{:<34}  {:>12}  {:>12}  {:>12}  {:>6}  {:>8}\n", net::node_id_of(r.node), credits(r.earned_micros),
                   credits(r.paid_micros), credits(r.earned_micros - r.paid_micros), r.jobs, r.disputes);
      bool any_settled = false;
      for (const auto& r : rows) any_settled = any_settled || r.settled_jobs > 0;
      if (!any_settled) {
        fmt::print("(all unsettled credits: no job here was paid on a chain)\n");
      } else {
        fmt::print("settled on a chain (vouchers, wei); the rest is unsettled credits:\n");
        for (const auto& r : rows)
          if (r.settled_jobs > 0)
            fmt::print("{:<34}  earned {} wei  paid {} wei  in {} jobs\n", net::node_id_of(r.node),
                       ledger::decimal(r.earned_wei), ledger::decimal(r.paid_wei), r.settled_jobs);
      }
    }
    return 0;
  }
  if (o.action != "show") {
    fmt::print(stderr, "gpugrid: ledger: unknown action '{}' (use show, verify, balance or anchor)\n", o.action);
    return 2;
  }
  auto entries = ledger::read_entries(path, &torn);
  if (!entries) return fail(entries.error());
  const auto& es = *entries;
  int64_t since_ms = 0;
  if (!o.since.empty()) {
    auto since = parse_since(o.since, now_ms());
    if (!since) return fail(since.error());
    since_ms = *since;
  }
  // Newest first; --since and --limit choose which.
  std::vector<size_t> shown;
  for (size_t i = es.size(); i-- > 0;) {
    if (o.limit > 0 && shown.size() >= static_cast<size_t>(o.limit)) break;
    if (es[i].rec.finished_ms >= since_ms) shown.push_back(i);
  }
  if (o.json) {
    json list = json::array();
    for (size_t i : shown) {
      const auto& r = es[i].rec;
      list.push_back(json{{"index", static_cast<int64_t>(es[i].index)},
                          {"kind", ledger::to_string(r.kind)},
                          {"job_id", ledger::to_hex(r.job_id)},
                          {"client", net::node_id_of(r.client_key)},
                          {"provider", net::node_id_of(r.provider_key)},
                          {"model_hash", ledger::to_hex(r.model_hash)},
                          {"input_digest", ledger::to_hex(r.input_digest)},
                          {"output_digest", ledger::to_hex(r.output_digest)},
                          {"price", static_cast<double>(r.price_micros) / 1e6},
                          {"started", when(r.started_ms)},
                          {"finished", when(r.finished_ms)},
                          {"hash", ledger::to_hex(es[i].hash)},
                          {"settlement", es[i].claim ? "chain" : "unsettled"}});
      if (const auto& c = es[i].claim) {  // the voucher that paid the job (numbers in decimal)
        list.back()["voucher"] = json{{"chain_id", ledger::decimal(ledger::word_value(c->chain_id))},
                                      {"contract", "0x" + ledger::to_hex(c->contract)},
                                      {"channel", ledger::decimal(ledger::word_value(c->channel))},
                                      {"amount_wei", ledger::decimal(ledger::word_value(c->amount))},
                                      {"nonce", ledger::decimal(ledger::word_value(c->nonce))},
                                      {"price_wei", ledger::decimal(ledger::word_value(c->price))}};
      }
      if (r.kind == ledger::receipt_kind::generation) {
        auto t = ledger::token_terms::unpack(r.input_digest);
        list.back()["prompt_tokens"] = t.prompt_tokens;
        list.back()["generated_tokens"] = t.generated_tokens;
        list.back()["price_per_1k_prompt"] = static_cast<double>(t.prompt_micros_per_1k) / 1e6;
        list.back()["price_per_1k_generated"] = static_cast<double>(t.generated_micros_per_1k) / 1e6;
      }
    }
    fmt::print("{}\n", dump_json_list(list));
  } else if (es.empty()) {
    fmt::print("the ledger at {} is empty\n", path);
  } else {
    // Node ids are 34 characters ("gg" + 32); the columns fit them whole.
    fmt::print("{:>5}  {:<8}  {:<20}  {:<34}  {:<34}  {:>12}\n", "#", "kind", "finished", "provider", "client", "price");
    for (size_t i : shown) {
      const auto& r = es[i].rec;
      fmt::print("{:>5}  {:<8}  {:<20}  {:<34}  {:<34}  {:>12}\n", es[i].index,
                 ledger::to_string(r.kind), when(r.finished_ms),
                 net::node_id_of(r.provider_key), net::node_id_of(r.client_key), credits(r.price_micros));
    }
  }
  if (torn) log::warning("ledger: the last entry is torn (a crash while writing); it is cut when the node next opens the ledger");
  return 0;
}

}  // namespace gpugrid::cli
