#include "cli/chain_payment.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "base/secret_file.h"
#include "base/settings.h"
#include "chain/voucher_check.h"
#include "ledger/ledger.h"

namespace gpugrid::cli {

using namespace gpugrid::chain;

namespace {

constexpr int kDecimals = 18;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string amount_text(const u256& v) { return format_amount(v, kDecimals); }

std::string lower_hex(const address& a) { return to_hex(a.b, false); }

// Small state files: written whole to a temporary file, synced, renamed over the old one.
status write_state(const std::string& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return io_error("cannot create '{}': {}", std::filesystem::path(path).parent_path().string(), ec.message());
  return write_secret_file(path, "payment state file", text.data(), text.size(), true);
}

std::optional<std::string> read_small(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (s.size() > 4096) return std::nullopt;
  return s;
}

}  // namespace

expected<std::shared_ptr<chain_link>> open_chain_link(const std::string& data_dir, const chain_flags& flags) {
  GG_ASSIGN_OR_RETURN(chain_settings cs, load_chain_settings(data_dir));
  std::string url = !flags.rpc.empty() ? flags.rpc : cs.rpc;
  if (url.empty()) {
    if (!flags.contract.empty() || !flags.chain_id.empty())
      return status(error_kind::usage, "--contract and --chain-id need a chain endpoint (--chain-rpc URL)");
    return std::shared_ptr<chain_link>();
  }
  auto link = std::make_shared<chain_link>();
  link->url = url;
  GG_ASSIGN_OR_RETURN(auto transport, make_beast_transport(url));
  link->rpc = std::make_unique<rpc_client>(std::move(transport));
  if (!flags.contract.empty()) {
    GG_ASSIGN_OR_RETURN(link->contract, parse_address(flags.contract, "--contract"));
  } else if (cs.contract) {
    link->contract = *cs.contract;
  } else {
    return status(error_kind::usage, "chain endpoint " + url +
                                         " has no payment-channel contract: give --contract ADDRESS, set "
                                         "GPUGRID_CHAIN_CONTRACT, or put contract = \"0x...\" in " + data_dir + "/chain.toml");
  }
  std::optional<u256> want = cs.chain_id;
  if (!flags.chain_id.empty()) {
    GG_ASSIGN_OR_RETURN(u256 id, parse_uint(flags.chain_id, "--chain-id"));
    want = id;
  }
  GG_ASSIGN_OR_RETURN(link->chain_id, link->rpc->chain_id());
  if (want && *want != link->chain_id)
    return invalid_input("chain RPC {} serves chain id {}, not the configured {} (wrong endpoint?)", url,
                         to_decimal(link->chain_id), to_decimal(*want));
  if (!flags.max_fee_gwei.empty()) {
    GG_ASSIGN_OR_RETURN(link->gas.max_fee_per_gas, parse_amount(flags.max_fee_gwei, 9, "--max-fee"));
  } else if (cs.max_fee_gwei) {
    link->gas.max_fee_per_gas = *cs.max_fee_gwei * 1000000000;
  }
  if (cs.confirmations) link->confirm.confirmations = *cs.confirmations;
  if (cs.from_block) link->from_block = *cs.from_block;
  return link;
}

// ---- client ----

chain_payer::chain_payer(std::shared_ptr<chain_link> link, secret_key key, std::string data_dir)
    : link_(std::move(link)), key_(std::move(key)), dir_(std::move(data_dir)) {}

std::string chain_payer::state_path(const u256& channel) const {
  return fmt::format("{}/payments/{}-{}-{}.state", dir_, to_decimal(link_->chain_id), lower_hex(link_->contract),
                     to_decimal(channel));
}

std::string chain_payer::remembered_path(const address& payee) const {
  return fmt::format("{}/payments/{}-{}-to-{}.channel", dir_, to_decimal(link_->chain_id), lower_hex(link_->contract),
                     lower_hex(payee));
}

expected<chain_payer::channel_entry*> chain_payer::channel_for(const address& payee) {
  auto it = channels_.find(payee);
  if (it != channels_.end()) return &it->second;
  const int64_t now_s = now_ms() / 1000;
  auto usable = [&](const payment_channel::channel_state& c) {
    return c.client == key_.addr() && c.provider == payee && !c.closed && c.expiry > u256(now_s);
  };
  std::optional<payment_channel::channel_state> chosen;
  {
    std::lock_guard<std::mutex> rpc_lock(link_->rpc_mu);
    if (auto text = read_small(remembered_path(payee))) {  // the channel used last time
      auto id = parse_uint(std::string(text->substr(0, text->find('\n'))), "channel file");
      if (id) {
        auto c = payment_channel::read_channel(*link_->rpc, link_->contract, *id);
        if (c && usable(*c)) chosen = *c;
      }
    }
    if (!chosen) {
      GG_ASSIGN_OR_RETURN(auto list, payment_channel::channels_of(*link_->rpc, link_->contract, key_.addr(), link_->from_block));
      for (const auto& c : list)
        if (usable(c) && (!chosen || c.deposit - c.redeemed > chosen->deposit - chosen->redeemed)) chosen = c;
    }
  }
  if (!chosen)
    return invalid_input("this wallet {} has no open channel with provider wallet {} on chain {} (open one: gpugrid wallet "
                         "deposit --provider {} --amount AMOUNT)",
                         key_.addr().checksummed(), payee.checksummed(), to_decimal(link_->chain_id), payee.checksummed());
  GG_RETURN_IF_ERROR(write_state(remembered_path(payee), to_decimal(chosen->id) + "\n"));
  channel_entry e;
  e.state = *chosen;
  e.amount = chosen->redeemed;
  e.nonce = chosen->nonce;
  if (auto text = read_small(state_path(chosen->id))) {  // vouchers signed by earlier runs
    std::istringstream in(*text);
    std::string a, n;
    in >> a >> n;
    auto pa = parse_uint(a, state_path(chosen->id));
    auto pn = parse_uint(n, state_path(chosen->id));
    if (!pa || !pn) return invalid_input("{} is damaged (want: AMOUNT NONCE in wei)", state_path(chosen->id));
    if (*pa > e.amount) e.amount = *pa;
    if (*pn > e.nonce) e.nonce = *pn;
  }
  return &channels_.emplace(payee, e).first->second;
}

expected<ledger::voucher_claim> chain_payer::pay(const grid::key32&, const ledger::chain_terms& terms) {
  std::lock_guard<std::mutex> lock(mu_);
  const u256 chain_id = u256_of(terms.chain_id);
  const address contract = address_of(terms.contract);
  if (chain_id != link_->chain_id || contract != link_->contract)
    return invalid_input("the provider is paid on chain {} through contract {}; this client pays on chain {} through {}",
                         to_decimal(chain_id), contract.checksummed(), to_decimal(link_->chain_id),
                         link_->contract.checksummed());
  const address payee = address_of(terms.payee);
  GG_ASSIGN_OR_RETURN(channel_entry * e, channel_for(payee));
  const u256 price = u256_of(terms.price);
  const u256 amount = e->amount + price;
  if (amount > e->state.deposit) {  // read the deposit again: it may have been topped up
    std::lock_guard<std::mutex> rpc_lock(link_->rpc_mu);
    GG_ASSIGN_OR_RETURN(e->state, payment_channel::read_channel(*link_->rpc, link_->contract, e->state.id));
  }
  if (amount > e->state.deposit)
    return invalid_input("channel {}'s deposit {} does not cover {} owed in total (top it up: gpugrid wallet deposit "
                         "--channel {} --amount AMOUNT)",
                         to_decimal(e->state.id), amount_text(e->state.deposit), amount_text(amount), to_decimal(e->state.id));
  const u256 nonce = e->nonce + 1;
  // Persisted before the voucher exists: a crash after this never signs this nonce again.
  GG_RETURN_IF_ERROR(write_state(state_path(e->state.id), to_decimal(amount) + " " + to_decimal(nonce) + "\n"));
  e->amount = amount;
  e->nonce = nonce;
  signed_voucher sv = sign_voucher(key_, {e->state.id, link_->chain_id, amount, nonce}, link_->contract);
  return claim_of(sv, price);
}

// ---- provider ----

chain_gate::chain_gate(std::shared_ptr<chain_link> link, secret_key key, std::string data_dir, gate_options options)
    : link_(std::move(link)), key_(std::move(key)), dir_(std::move(data_dir)), options_(std::move(options)) {}

chain_gate::~chain_gate() { stop(); }

void chain_gate::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (redeemer_.joinable()) redeemer_.join();
}

ledger::chain_terms chain_gate::terms(double price) {
  ledger::chain_terms t;
  t.chain_id = word_of(link_->chain_id);
  t.contract = addr20_of(link_->contract);
  t.payee = addr20_of(key_.addr());
  t.price = word_of(price_wei(price));
  return t;
}

expected<payment_channel::channel_state> chain_gate::read_channel(const u256& id) {
  std::lock_guard<std::mutex> rpc_lock(link_->rpc_mu);
  return payment_channel::read_channel(*link_->rpc, link_->contract, id);
}

status chain_gate::persist_claim(const ledger::voucher_claim& c) {
  std::string path = fmt::format("{}/claims/{}-{}-{}.voucher", dir_, to_decimal(link_->chain_id), lower_hex(link_->contract),
                                 to_decimal(u256_of(c.channel)));
  return write_state(path, voucher_to_json(voucher_of(c)) + "\n" + to_decimal(u256_of(c.price)) + "\n");
}

status chain_gate::admit(const grid::execute_request& req) {
  if (!req.voucher)
    return invalid_input("this provider is paid on chain {} through contract {} (wallet {}); the job came without a "
                         "voucher",
                         to_decimal(link_->chain_id), link_->contract.checksummed(), key_.addr().checksummed());
  auto added = accept(voucher_of(*req.voucher), price_wei(req.price), req.job, false);
  if (!added) return added.error();
  return status::ok();
}

expected<ledger::word32> chain_gate::admit_session_voucher(const grid::job_id& session, const ledger::voucher_claim& v,
                                                           const ledger::word32& min_add) {
  GG_ASSIGN_OR_RETURN(u256 added, accept(voucher_of(v), u256_of(min_add), session, true));
  return word_of(added);
}

expected<u256> chain_gate::accept(const signed_voucher& sv, const u256& price, const grid::job_id& job, bool session) {
  voucher_check_input in;
  in.voucher = sv;
  in.price = price;
  in.chain_id = link_->chain_id;
  in.contract = link_->contract;
  in.self = key_.addr();
  in.min_deposit = options_.min_deposit;
  in.safety_margin_s = options_.safety_margin_s;
  if (sv.v.chain_id != link_->chain_id || sv.contract != link_->contract) {  // refused before any chain read
    in.channel.id = sv.v.channel;
    return invalid_input("{}", check_voucher(in).reason);
  }
  const u256 id = sv.v.channel;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool stale;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = channels_.find(id);
      stale = it == channels_.end() || now_ms() - it->second.fetched_ms > options_.refresh_s * 1000 || attempt > 0;
    }
    if (stale) {
      auto c = read_channel(id);
      if (!c) return invalid_input("cannot read channel {}: {}", to_decimal(id), c.error().message());
      std::lock_guard<std::mutex> lock(mu_);
      channel_entry& e = channels_[id];
      e.state = *c;
      e.fetched_ms = now_ms();
    }
    std::unique_lock<std::mutex> lock(mu_);
    channel_entry& e = channels_[id];
    in.channel = e.state;
    in.last = {};
    if (e.latest) in.last = {u256_of(e.latest->amount), u256_of(e.latest->nonce)};
    in.now_s = now_ms() / 1000;
    voucher_verdict v = check_voucher(in);
    if (!v.ok && v.short_deposit && !stale) continue;  // the deposit may have grown: read it again
    if (!v.ok) return invalid_input("{}", v.reason);
    const u256 floor_amount = in.last.amount > e.state.redeemed ? in.last.amount : e.state.redeemed;
    const u256 added = sv.v.amount - floor_amount;
    u256 filed = in.price;  // a job's claim carries its price
    if (session) {          // a session's carries what all its vouchers added
      filed = added;
      auto it = by_job_.find(job);
      if (it != by_job_.end()) filed += u256_of(it->second.price);
    }
    ledger::voucher_claim claim = claim_of(sv, filed);
    // The claim is on disk before the job runs: a crash from here on loses nothing.
    GG_RETURN_IF_ERROR(persist_claim(claim).with_context("cannot keep the voucher"));
    e.latest = claim;
    by_job_[job] = claim;
    while (by_job_.size() > 65536) by_job_.erase(by_job_.begin());
    bool due = due_locked(e, now_ms(), false);
    lock.unlock();
    if (due) wake_.notify_all();
    return added;
  }
  return invalid_input("channel {} could not be checked", to_decimal(id));
}

std::optional<ledger::voucher_claim> chain_gate::claim_for(const grid::job_id& job) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_job_.find(job);
  if (it == by_job_.end()) return std::nullopt;
  ledger::voucher_claim c = it->second;
  by_job_.erase(it);
  return c;
}

bool chain_gate::due_locked(const channel_entry& e, int64_t now, bool force) const {
  if (!e.latest) return false;
  const u256 amount = u256_of(e.latest->amount);
  if (amount <= e.state.redeemed) return false;
  if (force) return true;
  if (e.failed_ms && now - e.failed_ms < options_.retry_s * 1000) return false;  // retried later
  return redeem_due(e.state, amount, options_.redeem_threshold, now / 1000, options_.safety_margin_s);
}

status chain_gate::redeem_channel(const u256& id, bool force) {
  ledger::voucher_claim claim;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = channels_.find(id);
    if (it == channels_.end() || !due_locked(it->second, now_ms(), force)) return status::ok();
    claim = *it->second.latest;
  }
  signed_voucher sv = voucher_of(claim);
  status st = status::ok();
  receipt rc;
  {
    std::lock_guard<std::mutex> rpc_lock(link_->rpc_mu);
    auto ch = payment_channel::read_channel(*link_->rpc, link_->contract, id);
    if (!ch) {
      st = ch.error();
    } else if (ch->nonce >= sv.v.nonce || ch->redeemed >= sv.v.amount) {
      st = status::ok();  // redeemed already (before a crash, or by another process)
    } else {
      tx_sender sender(*link_->rpc, key_, link_->chain_id, link_->gas, link_->confirm);
      auto r = sender.send(link_->contract, 0, payment_channel::redeem_call(sv));
      if (!r) st = r.error();
      else rc = *r;
    }
    auto after = payment_channel::read_channel(*link_->rpc, link_->contract, id);
    std::lock_guard<std::mutex> lock(mu_);
    channel_entry& e = channels_[id];
    if (after) {
      e.state = *after;
      e.fetched_ms = now_ms();
    }
    e.failed_ms = st.is_ok() ? 0 : now_ms();
  }
  if (!st.is_ok()) {
    if (options_.log)
      options_.log(fmt::format("redeeming channel {} failed (kept; retried in {} s): {}", to_decimal(id), options_.retry_s,
                               st.message()));
    return st;
  }
  if (options_.log && rc.block_number != 0)
    options_.log(fmt::format("redeemed channel {}: {} in total (tx {}, gas {})", to_decimal(id), amount_text(sv.v.amount),
                             to_hex(rc.transaction_hash), to_decimal(rc.gas_used)));
  return status::ok();
}

status chain_gate::start(const std::string& ledger_path, const grid::key32& node_key) {
  std::map<u256, ledger::voucher_claim> found;
  auto keep = [&](const ledger::voucher_claim& c) {
    if (u256_of(c.chain_id) != link_->chain_id || address_of(c.contract) != link_->contract) return;
    u256 id = u256_of(c.channel);
    auto it = found.find(id);
    if (it == found.end() || u256_of(it->second.nonce) < u256_of(c.nonce)) found[id] = c;
  };
  GG_RETURN_IF_ERROR(ledger::for_each_entry(ledger_path, [&](const ledger::entry& e) {
    if (e.claim && e.rec.provider_key == node_key) keep(*e.claim);
    return status::ok();
  }, nullptr));
  std::error_code ec;
  std::string claims_dir = dir_ + "/claims";
  if (std::filesystem::is_directory(claims_dir, ec)) {
    for (const auto& f : std::filesystem::directory_iterator(claims_dir, ec)) {
      if (f.path().extension() != ".voucher") continue;
      auto text = read_small(f.path().string());
      if (!text) continue;
      std::istringstream in(*text);
      std::string line, price;
      std::getline(in, line);
      std::getline(in, price);
      auto sv = parse_voucher_json(line, f.path().string());
      auto p = parse_uint(price, f.path().string() + ": price");
      if (!sv || !p) {
        if (options_.log) options_.log(fmt::format("ignoring damaged claim file {}", f.path().string()));
        continue;
      }
      keep(claim_of(*sv, *p));
    }
  }
  for (const auto& [id, c] : found) {
    auto ch = read_channel(id);
    std::lock_guard<std::mutex> lock(mu_);
    channel_entry& e = channels_[id];
    e.latest = c;
    if (ch) {
      e.state = *ch;
      e.fetched_ms = now_ms();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!started_) {
    started_ = true;
    redeemer_ = std::thread([this] { redeemer_loop(); });
  }
  return status::ok();
}

void chain_gate::redeemer_loop() {
  bool first = true;
  for (;;) {
    std::vector<u256> due;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!first) wake_.wait_for(lock, std::chrono::seconds(1));
      if (stopping_) return;
      int64_t now = now_ms();
      for (const auto& [id, e] : channels_)
        if (due_locked(e, now, first)) due.push_back(id);
    }
    const bool forced = first;  // at start: claims left from before are redeemed whatever the threshold
    first = false;
    for (const auto& id : due) (void)redeem_channel(id, forced);
  }
}

int chain_gate::redeem_all(std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int left = 0;
  std::vector<u256> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : channels_) ids.push_back(id);
  }
  for (const auto& id : ids) {
    if (std::chrono::steady_clock::now() > deadline) {
      ++left;
      continue;
    }
    status st = redeem_channel(id, true);
    if (!st.is_ok()) ++left;
  }
  return left;
}

}  // namespace gpugrid::cli
