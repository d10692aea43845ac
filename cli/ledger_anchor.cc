#include "cli/ledger_anchor.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "chain/payment_channel.h"
#include "chain/wallet.h"
#include "cli/log.h"
#include "ledger/anchor_check.h"

namespace gpugrid::cli {

namespace {

using namespace gpugrid::chain;

std::string ledger_path(const std::string& dir) { return (std::filesystem::path(dir) / "ledger.log").string(); }

int fail(std::FILE* err, const status& st, int code = -1) {
  fmt::print(err, "gpugrid: ledger: {}\n", st.message());
  return code >= 0 ? code : exit_code_for(st.kind());
}

std::string no_chain_hint(const std::string& dir) {
  return fmt::format("give --chain-rpc URL and --contract ADDRESS, set GPUGRID_CHAIN_RPC and GPUGRID_CHAIN_CONTRACT, "
                     "or put rpc and contract in {}/chain.toml",
                     dir);
}

struct ledger_chain {
  std::unique_ptr<rpc_client> rpc;
  address contract;
  u256 chain_id;
  u256 from_block;
  gas_policy gas;
  confirm_policy confirm;
};

// Settings only: no network. Fails with usage when the endpoint or contract is missing.
expected<chain_settings> settings_for(const ledger_options& o, const std::string& dir) {
  GG_ASSIGN_OR_RETURN(chain_settings cs, load_chain_settings(dir));
  if (!o.chain_rpc.empty()) cs.rpc = o.chain_rpc;
  if (!o.contract.empty()) {
    GG_ASSIGN_OR_RETURN(address a, parse_address(o.contract, "--contract"));
    cs.contract = a;
  }
  if (cs.rpc.empty()) return status(error_kind::usage, "no chain endpoint: " + no_chain_hint(dir));
  if (!cs.contract) return status(error_kind::usage, "no payment-channel contract: " + no_chain_hint(dir));
  return cs;
}

// Connects and checks the chain id (when configured). `*config_error` tells a bad setting
// (exit 2) from an endpoint that failed.
expected<ledger_chain> connect(const chain_settings& cs, bool* config_error) {
  *config_error = true;
  ledger_chain c;
  GG_ASSIGN_OR_RETURN(auto transport, make_beast_transport(cs.rpc));
  c.rpc = std::make_unique<rpc_client>(std::move(transport));
  c.contract = *cs.contract;
  *config_error = false;
  GG_ASSIGN_OR_RETURN(u256 served, c.rpc->chain_id());
  if (cs.chain_id && *cs.chain_id != served)
    return invalid_input("chain RPC {} serves chain id {}, not the configured {} (wrong endpoint?)", cs.rpc,
                         to_decimal(served), to_decimal(*cs.chain_id));
  c.chain_id = served;
  if (cs.from_block) c.from_block = *cs.from_block;
  if (cs.max_fee_gwei) c.gas.max_fee_per_gas = *cs.max_fee_gwei * 1000000000;
  if (cs.confirmations) c.confirm.confirmations = *cs.confirmations;
  return c;
}

json anchor_json(const ledger::anchor_result& r) {
  json j{{"block", r.anchor.block}, {"tx", r.anchor.tx}, {"sequence", r.anchor.sequence},
         {"head", to_hex(r.anchor.head)}, {"outcome", ledger::to_string(r.outcome)}};
  if (r.outcome == ledger::anchor_outcome::mismatch) j["ledger_head"] = to_hex(r.local);
  return j;
}

}  // namespace

int ledger_anchor_now(const ledger_options& o, const std::string& dir, std::FILE* out, std::FILE* err) {
  auto cs = settings_for(o, dir);
  if (!cs) return fail(err, cs.error());
  // The head, from a ledger that checks: a broken ledger is not worth anchoring.
  const std::string path = ledger_path(dir);
  ledger::chain_checker checker;
  ledger::digest32 head{};
  bool torn = false;
  status st = ledger::for_each_entry(path, [&](const ledger::entry& e) {
    head = ledger::blake2b_256(e.raw);
    return checker.add(e);
  }, &torn);
  if (!st.is_ok()) return fail(err, st.with_context(path + " does not verify, so it is not anchored"), 1);
  if (checker.count() == 0) return fail(err, invalid_input("the ledger at {} is empty: nothing to anchor", path));
  const uint64_t sequence = checker.count() - 1;
  auto key = load_or_create_wallet_key(dir);
  if (!key) return fail(err, key.error());
  bool config_error = false;
  auto c = connect(*cs, &config_error);
  if (!c) return fail(err, c.error().with_context(fmt::format("anchoring entry {}", sequence)));
  tx_sender sender(*c->rpc, *key, c->chain_id, c->gas, c->confirm);
  auto rec = send_anchor(sender, c->contract, sequence, head, anchors_path(dir), err);
  if (!rec) return fail(err, rec.error().with_context(fmt::format("anchoring entry {}", sequence)));
  if (o.json)
    fmt::print(out, "{}\n", dump_json(json{{"sequence", sequence}, {"head", to_hex(head)}, {"tx", to_hex(*rec->tx)},
                                           {"block", to_decimal(*rec->block)}, {"address", key->addr().checksummed()},
                                           {"contract", c->contract.checksummed()}}));
  else
    fmt::print(out, "anchored entry {} (head {}) in block {}, tx {}\n", sequence, to_hex(head), to_decimal(*rec->block),
               to_hex(*rec->tx));
  return 0;
}

int ledger_verify_chain(const ledger_options& o, const std::string& dir, std::FILE* out, std::FILE* err) {
  auto cs = settings_for(o, dir);
  if (!cs) return fail(err, cs.error());
  address who;
  if (!o.address.empty()) {
    auto a = parse_address(o.address, "--address");
    if (!a) return fail(err, a.error());
    who = *a;
  } else {
    const std::string key_path = wallet_key_path(dir);
    if (!std::filesystem::exists(key_path))
      return fail(err, status(error_kind::usage, fmt::format("no wallet key in {}, so no anchors of this node to check "
                                                             "against: give --address of the wallet that anchored",
                                                             dir)));
    auto key = load_wallet_key(key_path);
    if (!key) return fail(err, key.error());
    who = key->addr();
  }
  bool config_error = false;
  auto c = connect(*cs, &config_error);
  expected<std::vector<onchain_anchor>> found = c ? anchors_of(*c->rpc, c->contract, who, c->from_block)
                                                  : expected<std::vector<onchain_anchor>>(c.error());
  if (!found) {
    int code = config_error ? exit_code_for(found.error().kind()) : kExitChainUnreadable;
    std::string msg = config_error ? found.error().message()
                                   : "cannot read the anchors on chain (nothing was checked): " + found.error().message();
    if (o.json) fmt::print(out, "{}\n", dump_json(json{{"ok", false}, {"error", msg}, {"chain_unreadable", !config_error}}));
    return fail(err, status(found.error().kind(), msg), code);
  }
  // Anchors this node recorded as mined that the chain does not show: another chain or
  // contract, a reorganised chain, or an endpoint that hides logs. A warning, since the record
  // is this node's own word, not a proof.
  std::vector<const anchor_record*> missing;
  size_t skipped = 0;
  auto records = read_anchor_records(anchors_path(dir), &skipped);
  if (records && o.address.empty()) {
    std::set<hash32> on_chain;
    for (const auto& a : *found) on_chain.insert(a.tx);
    for (const auto& r : *records)
      if (r.state == "mined" && r.tx && !on_chain.count(*r.tx)) missing.push_back(&r);
  }
  std::vector<ledger::chain_anchor> anchors;
  anchors.reserve(found->size());
  for (const auto& a : *found) {
    ledger::chain_anchor ca;
    ca.block = to_decimal(a.block);
    ca.tx = to_hex(a.tx);
    if (a.sequence <= u256(std::numeric_limits<uint64_t>::max() - 1)) ca.sequence = static_cast<uint64_t>(a.sequence);
    ca.head = a.head;
    anchors.push_back(std::move(ca));
  }

  const std::string path = ledger_path(dir);
  ledger::chain_checker checker;
  ledger::anchor_checker anchored(std::move(anchors));
  ledger::digest32 last{};
  bool torn = false;
  status st = ledger::for_each_entry(path, [&](const ledger::entry& e) {
    last = e.hash;
    anchored.add(e);
    return checker.add(e);
  }, &torn);
  ledger::anchor_report rep = anchored.finish();
  std::string head = checker.count() == 0 ? std::string() : ledger::to_hex(last);
  uint64_t covered = 0;  // entries up to the newest matching anchor
  for (const auto& r : rep.results)
    if (r.outcome == ledger::anchor_outcome::match && r.anchor.sequence + 1 > covered) covered = r.anchor.sequence + 1;
  const uint64_t unanchored = checker.count() - std::min<uint64_t>(covered, checker.count());
  std::string error;
  if (!st.is_ok()) error = path + ": " + st.message();
  else if (!rep.ok()) error = path + ": " + rep.failure();
  if (o.json) {
    json chain_j{{"address", who.checksummed()},  {"contract", c->contract.checksummed()},
                 {"chain_id", to_decimal(c->chain_id)}, {"anchors", rep.results.size()},
                 {"matched", rep.matched},             {"mismatched", rep.mismatched},
                 {"beyond_end", rep.beyond_end},      {"unanchored_entries", unanchored}};
    chain_j["first_bad"] = rep.ok() ? json(nullptr) : anchor_json(rep.results[static_cast<size_t>(rep.first_bad)]);
    if (!rep.results.empty()) chain_j["newest"] = anchor_json(rep.results.back());
    chain_j["recorded_not_on_chain"] = missing.size();
    json j{{"ok", error.empty()}, {"entries", checker.count()}, {"head", head}, {"torn_tail", torn}, {"chain", chain_j}};
    if (!error.empty()) j["error"] = error;
    fmt::print(out, "{}\n", dump_json(j));
  }
  if (!missing.empty())
    log::warning("{}: {} anchor{} recorded as mined {} not on chain {} in contract {} (the first: entry {}, tx {}): "
                 "another chain or contract, a reorganised chain, or an endpoint that hides logs",
                 anchors_path(dir), missing.size(), missing.size() == 1 ? "" : "s", missing.size() == 1 ? "is" : "are",
                 to_decimal(c->chain_id), c->contract.checksummed(), missing[0]->sequence, to_hex(*missing[0]->tx));
  if (!error.empty()) {
    fmt::print(err, "gpugrid: ledger: {}\n", error);
    return 1;
  }
  if (!o.json) {
    fmt::print(out, "ledger OK: {} entries, every link and signature checks; head {}\n", checker.count(),
               head.empty() ? std::string("(empty)") : head);
    if (rep.results.empty())
      fmt::print(out, "chain: no anchors by {} in contract {} on chain {} (nothing to check against)\n",
                 who.checksummed(), c->contract.checksummed(), to_decimal(c->chain_id));
    else
      fmt::print(out, "chain OK: all {} anchors by {} match (the newest: entry {} in block {}, tx {}){}\n",
                 rep.results.size(), who.checksummed(), rep.results.back().anchor.sequence,
                 rep.results.back().anchor.block, rep.results.back().anchor.tx,
                 unanchored == 0 ? std::string()
                                 : fmt::format("; the last {} entr{} not anchored yet", unanchored,
                                               unanchored == 1 ? "y is" : "ies are"));
  }
  return 0;
}

int ledger_show_anchors(const ledger_options& o, const std::string& dir, std::FILE* out, std::FILE* err) {
  const std::string path = anchors_path(dir);
  size_t skipped = 0;
  auto rs = read_anchor_records(path, &skipped);
  if (!rs) return fail(err, rs.error());
  // Newest first, as `ledger show` lists receipts; --limit keeps the newest N.
  std::vector<const anchor_record*> shown;
  for (size_t i = rs->size(); i-- > 0;) {
    if (o.limit > 0 && shown.size() >= static_cast<size_t>(o.limit)) break;
    shown.push_back(&(*rs)[i]);
  }
  if (o.json) {
    json list = json::array();
    for (const auto* r : shown) {
      json j{{"time_ms", r->time_ms}, {"state", r->state}, {"sequence", r->sequence}, {"head", to_hex(r->head)}};
      j["tx"] = r->tx ? json(to_hex(*r->tx)) : json(nullptr);
      j["block"] = r->block ? json(to_decimal(*r->block)) : json(nullptr);
      if (!r->note.empty()) j["note"] = r->note;
      list.push_back(std::move(j));
    }
    fmt::print(out, "{}\n", dump_json_list(list));
  } else if (rs->empty()) {
    fmt::print(out, "no anchors recorded in {}\n", path);
  } else {
    fmt::print(out, "{:<13}  {:<6}  {:>7}  {:<66}  {:>9}  {}\n", "time_ms", "state", "entry", "tx", "block", "note");
    for (const auto* r : shown)
      fmt::print(out, "{:<13}  {:<6}  {:>7}  {:<66}  {:>9}  {}\n", r->time_ms, r->state, r->sequence,
                 r->tx ? to_hex(*r->tx) : "-", r->block ? to_decimal(*r->block) : "-", r->note);
  }
  if (skipped > 0)
    fmt::print(err, "gpugrid: ledger: {}: skipped {} unreadable line{} (cut short by a crash?)\n", path, skipped,
               skipped == 1 ? "" : "s");
  return 0;
}

expected<std::unique_ptr<chain::anchorer>> start_offer_anchorer(const offer_options& o, const std::string& dir,
                                                                std::shared_ptr<ledger::ledger_file> book,
                                                                std::function<void(json)> emit) {
  GG_ASSIGN_OR_RETURN(chain_settings cs, load_chain_settings(dir));
  anchor_schedule s;
  s.every = o.anchor_every >= 0 ? static_cast<uint64_t>(o.anchor_every) : cs.anchor_every.value_or(0);
  if (!o.anchor_interval.empty()) {
    if (o.anchor_interval != "0") {
      GG_ASSIGN_OR_RETURN(s.interval, parse_duration(o.anchor_interval, "--anchor-interval"));
    }
  } else if (cs.anchor_interval) {
    s.interval = *cs.anchor_interval;
  }
  if (!s.enabled()) return std::unique_ptr<chain::anchorer>();
  if (cs.rpc.empty() || !cs.contract)
    return status(error_kind::usage,
                  fmt::format("anchoring the ledger needs a chain: set GPUGRID_CHAIN_RPC and GPUGRID_CHAIN_CONTRACT, "
                              "or put rpc and contract in {}/chain.toml",
                              dir));
  GG_ASSIGN_OR_RETURN(secret_key key, load_or_create_wallet_key(dir));
  anchorer_options ao;
  ao.target.rpc = cs.rpc;
  ao.target.contract = *cs.contract;
  ao.target.chain_id = cs.chain_id;
  if (cs.max_fee_gwei) ao.target.gas.max_fee_per_gas = *cs.max_fee_gwei * 1000000000;
  if (cs.confirmations) ao.target.confirm.confirmations = *cs.confirmations;
  ao.schedule = s;
  ao.record_path = anchors_path(dir);
  ao.head = [book] {
    ledger::head h = book->current_head();
    return anchor_head{h.count, h.hash};
  };
  auto emit_copy = emit;
  ao.on_event = [emit = std::move(emit)](const anchor_event& e) {
    json j{{"event", e.kind}, {"sequence", e.sequence}, {"head", to_hex(e.head)}};
    if (e.tx) j["tx"] = to_hex(*e.tx);
    if (e.block) j["block"] = to_decimal(*e.block);
    if (!e.error.empty()) j["error"] = e.error;
    emit(std::move(j));
  };
  json started{{"event", "anchoring"}, {"address", key.addr().checksummed()}, {"contract", cs.contract->checksummed()},
               {"every", s.every}, {"interval_s", s.interval.count()}};
  GG_ASSIGN_OR_RETURN(auto a, anchorer::start(std::move(ao), key));
  if (emit_copy) emit_copy(std::move(started));
  return a;
}

}  // namespace gpugrid::cli
