// gpugrid wallet show|new|balance|deposit|withdraw|channels|voucher|redeem.
#include "cli/cmd_wallet.h"

#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/settings.h"
#include "chain/payment_channel.h"
#include "chain/rpc_client.h"
#include "chain/tx_sender.h"
#include "chain/voucher.h"
#include "chain/wallet.h"

namespace gpugrid::cli {

namespace {

using namespace gpugrid::chain;
using nlohmann::ordered_json;

constexpr int kDecimals = 18;

wallet_options& bound_options() {
  static wallet_options o;
  return o;
}

std::string amount_text(const u256& v) { return format_amount(v, kDecimals); }

// Everything a chain action needs, resolved from flags, environment and DIR/chain.toml.
struct chain_context {
  std::unique_ptr<rpc_client> rpc;
  u256 chain_id;
  std::optional<address> contract;
  gas_policy gas;
  confirm_policy confirm;
  u256 from_block;
};

expected<chain_context> connect(const wallet_options& o, bool need_contract) {
  GG_ASSIGN_OR_RETURN(chain_settings cs, load_chain_settings(o.data_dir));
  chain_context c;
  std::string url = !o.chain_rpc.empty() ? o.chain_rpc : cs.rpc;
  if (url.empty())
    return status(error_kind::usage,
                  "no chain endpoint: give --chain-rpc URL, set GPUGRID_CHAIN_RPC, or put rpc = \"URL\" in " +
                      o.data_dir + "/chain.toml");
  GG_ASSIGN_OR_RETURN(auto transport, make_beast_transport(url));
  rpc_options ro;
  ro.timeout = std::chrono::milliseconds(static_cast<long long>(o.rpc_timeout_s * 1000));
  c.rpc = std::make_unique<rpc_client>(std::move(transport), ro);
  if (!o.contract.empty()) {
    GG_ASSIGN_OR_RETURN(address a, parse_address(o.contract, "--contract"));
    c.contract = a;
  } else {
    c.contract = cs.contract;
  }
  if (need_contract && !c.contract)
    return status(error_kind::usage, "no payment-channel contract: give --contract ADDRESS, set "
                                     "GPUGRID_CHAIN_CONTRACT, or put contract = \"0x...\" in " + o.data_dir + "/chain.toml");
  std::optional<u256> want = cs.chain_id;
  if (!o.chain_id.empty()) {
    GG_ASSIGN_OR_RETURN(u256 id, parse_uint(o.chain_id, "--chain-id"));
    want = id;
  }
  GG_ASSIGN_OR_RETURN(u256 served, c.rpc->chain_id());
  if (want && *want != served)
    return invalid_input("chain RPC {} serves chain id {}, not the configured {} (wrong endpoint?)", url,
                         to_decimal(served), to_decimal(*want));
  c.chain_id = served;
  if (!o.max_fee_gwei.empty()) {
    GG_ASSIGN_OR_RETURN(u256 g, parse_amount(o.max_fee_gwei, 9, "--max-fee"));
    c.gas.max_fee_per_gas = g;
  } else if (cs.max_fee_gwei) {
    c.gas.max_fee_per_gas = *cs.max_fee_gwei * 1000000000;
  }
  if (cs.from_block) c.from_block = *cs.from_block;
  c.confirm.timeout = std::chrono::milliseconds(static_cast<long long>(o.wait_s * 1000));
  if (o.confirmations >= 0) c.confirm.confirmations = static_cast<unsigned>(o.confirmations);
  else if (cs.confirmations) c.confirm.confirmations = *cs.confirmations;
  return c;
}

expected<std::string> read_text(const std::string& path) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream f(path);
    if (!f) return io_error("cannot read voucher file '{}'", path);
    ss << f.rdbuf();
  }
  std::string s = ss.str();
  if (s.size() > 64 * 1024) return invalid_input("voucher '{}' is larger than 64 KiB", path);
  return s;
}

ordered_json channel_json(const payment_channel::channel_state& c) {
  return {{"channel", to_decimal(c.id)},       {"client", c.client.checksummed()},
          {"provider", c.provider.checksummed()}, {"deposit", amount_text(c.deposit)},
          {"redeemed", amount_text(c.redeemed)},  {"unredeemed", amount_text(c.unredeemed())},
          {"nonce", to_decimal(c.nonce)},         {"expiry", to_decimal(c.expiry)},
          {"closed", c.closed}};
}

status need(const std::string& value, const char* flag, const std::string& action) {
  if (value.empty()) return status(error_kind::usage, fmt::format("wallet {} needs {}", action, flag));
  return status::ok();
}

int run_action(const wallet_options& o, std::FILE* out, std::FILE* err, status* failure) {
  auto fail = [&](const status& s) {
    *failure = s;
    return exit_code_for(s.kind());
  };
#define WALLET_TRY(lhs, expr)            \
  auto GG_CONCAT(r_, __LINE__) = (expr); \
  if (!GG_CONCAT(r_, __LINE__)) return fail(GG_CONCAT(r_, __LINE__).error()); \
  lhs = std::move(GG_CONCAT(r_, __LINE__)).value()
#define WALLET_CHECK(expr)                 \
  do {                                     \
    status s_ = (expr);                    \
    if (!s_.is_ok()) return fail(s_);      \
  } while (0)

  std::string key_file = wallet_key_path(o.data_dir);
  if (o.action == "new") {
    std::string old;
    WALLET_TRY(secret_key key, rotate_wallet_key(o.data_dir, &old));
    if (old.empty()) fmt::print(err, "gpugrid: created a new wallet key in {}\n", key_file);
    else fmt::print(err, "gpugrid: made a new wallet key in {}; the old key is kept as {}\n", key_file, old);
    if (o.json) fmt::print(out, "{}\n", ordered_json{{"address", key.addr().checksummed()}, {"key_file", key_file}}.dump());
    else fmt::print(out, "address   {}\nkey file  {}\n", key.addr().checksummed(), key_file);
    return 0;
  }
  bool created = false;
  WALLET_TRY(secret_key key, load_or_create_wallet_key(o.data_dir, &created));
  if (created) fmt::print(err, "gpugrid: no wallet yet; created a new key in {}\n", key_file);
  const address me = key.addr();

  if (o.action == "show") {
    if (o.json) fmt::print(out, "{}\n", ordered_json{{"address", me.checksummed()}, {"key_file", key_file}}.dump());
    else fmt::print(out, "address   {}\nkey file  {}\n", me.checksummed(), key_file);
    return 0;
  }

  bool need_contract = o.action != "balance";
  WALLET_TRY(chain_context c, connect(o, need_contract));

  if (o.action == "balance") {
    address who = me;
    if (!o.who.empty()) {
      WALLET_TRY(who, parse_address(o.who, "--address"));
    }
    WALLET_TRY(u256 bal, c.rpc->balance(who));
    if (o.json)
      fmt::print(out, "{}\n", ordered_json{{"address", who.checksummed()}, {"chain_id", to_decimal(c.chain_id)},
                                           {"balance", amount_text(bal)}, {"balance_wei", to_decimal(bal)}}.dump());
    else
      fmt::print(out, "{}  {} (chain id {})\n", who.checksummed(), amount_text(bal), to_decimal(c.chain_id));
    return 0;
  }

  const address contract = *c.contract;
  tx_sender sender(*c.rpc, key, c.chain_id, c.gas, c.confirm);

  if (o.action == "deposit") {
    WALLET_CHECK(need(o.amount, "--amount", o.action));
    WALLET_TRY(u256 amount, parse_amount(o.amount, kDecimals, "--amount"));
    if (amount == 0) return fail(invalid_input("--amount must be above 0"));
    u256 id;
    receipt rc;
    if (!o.channel.empty()) {  // top up an open channel and push its expiry out
      WALLET_TRY(id, parse_uint(o.channel, "--channel"));
      WALLET_TRY(auto ch, payment_channel::read_channel(*c.rpc, contract, id));
      if (ch.client != me) return fail(invalid_input("channel {}'s client is {}, not this wallet {}", to_decimal(id), ch.client.checksummed(), me.checksummed()));
      u256 expiry = ch.expiry;
      if (o.timeout_s > 0) {
        auto now = static_cast<long long>(std::time(nullptr));
        u256 wanted = u256(now) + o.timeout_s;
        if (wanted > expiry) expiry = wanted;
      }
      WALLET_TRY(rc, sender.send(contract, amount, payment_channel::deposit_call(id, expiry), err));
    } else {
      WALLET_CHECK(need(o.provider, "--provider (or --channel to top up)", o.action));
      WALLET_TRY(address provider, parse_address(o.provider, "--provider"));
      WALLET_TRY(rc, sender.send(contract, amount, payment_channel::open_call(provider, o.timeout_s), err));
      WALLET_TRY(id, payment_channel::opened_channel(rc, contract));
    }
    WALLET_TRY(auto ch, payment_channel::read_channel(*c.rpc, contract, id));
    ordered_json j = channel_json(ch);
    j["transaction"] = to_hex(rc.transaction_hash);
    j["gas_used"] = to_decimal(rc.gas_used);
    if (o.json) fmt::print(out, "{}\n", j.dump());
    else
      fmt::print(out, "channel {}: deposit {} to {}, withdrawable after {} (tx {})\n", to_decimal(id),
                 amount_text(ch.deposit), ch.provider.checksummed(), to_decimal(ch.expiry), to_hex(rc.transaction_hash));
    return 0;
  }

  if (o.action == "withdraw") {
    WALLET_CHECK(need(o.channel, "--channel", o.action));
    WALLET_TRY(u256 id, parse_uint(o.channel, "--channel"));
    WALLET_TRY(auto ch, payment_channel::read_channel(*c.rpc, contract, id));
    if (ch.client != me) return fail(invalid_input("channel {}'s client is {}, not this wallet {}", to_decimal(id), ch.client.checksummed(), me.checksummed()));
    if (ch.closed) return fail(invalid_input("channel {} is already closed", to_decimal(id)));
    WALLET_TRY(receipt rc, sender.send(contract, 0, payment_channel::withdraw_call(id), err));
    ordered_json j = channel_json(ch);
    j["refund"] = amount_text(ch.unredeemed());
    j["transaction"] = to_hex(rc.transaction_hash);
    if (o.json) fmt::print(out, "{}\n", j.dump());
    else fmt::print(out, "channel {}: withdrew {} (tx {})\n", to_decimal(id), amount_text(ch.unredeemed()), to_hex(rc.transaction_hash));
    return 0;
  }

  if (o.action == "channels") {
    address who = me;
    if (!o.who.empty()) {
      WALLET_TRY(who, parse_address(o.who, "--address"));
    }
    WALLET_TRY(auto list, payment_channel::channels_of(*c.rpc, contract, who, c.from_block));
    if (o.json) {
      ordered_json arr = ordered_json::array();
      for (const auto& ch : list) arr.push_back(channel_json(ch));
      fmt::print(out, "{}\n", arr.dump());
    } else {
      for (const auto& ch : list)
        fmt::print(out, "channel {}  {} {}  deposit {}  redeemed {}  expiry {}{}\n", to_decimal(ch.id),
                   ch.client == who ? "to" : "from", (ch.client == who ? ch.provider : ch.client).checksummed(),
                   amount_text(ch.deposit), amount_text(ch.redeemed), to_decimal(ch.expiry), ch.closed ? "  closed" : "");
      if (list.empty()) fmt::print(err, "gpugrid: no channels of {}\n", who.checksummed());
    }
    return 0;
  }

  if (o.action == "voucher") {
    WALLET_CHECK(need(o.channel, "--channel", o.action));
    WALLET_CHECK(need(o.amount, "--amount (the cumulative total owed on the channel)", o.action));
    WALLET_TRY(u256 id, parse_uint(o.channel, "--channel"));
    WALLET_TRY(u256 amount, parse_amount(o.amount, kDecimals, "--amount"));
    WALLET_TRY(auto ch, payment_channel::read_channel(*c.rpc, contract, id));
    if (ch.client != me) return fail(invalid_input("channel {}'s client is {}, not this wallet {}", to_decimal(id), ch.client.checksummed(), me.checksummed()));
    if (ch.closed) return fail(invalid_input("channel {} is closed", to_decimal(id)));
    if (amount > ch.deposit)
      return fail(invalid_input("--amount {} is above channel {}'s deposit {}", amount_text(amount), to_decimal(id), amount_text(ch.deposit)));
    u256 nonce;
    if (!o.nonce.empty()) {
      WALLET_TRY(nonce, parse_uint(o.nonce, "--nonce"));
    } else {
      nonce = u256(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    }
    signed_voucher sv = sign_voucher(key, {id, c.chain_id, amount, nonce}, contract);
    fmt::print(out, "{}\n", voucher_to_json(sv));
    return 0;
  }

  if (o.action == "redeem") {
    WALLET_CHECK(need(o.voucher, "--voucher FILE|-", o.action));
    WALLET_TRY(std::string text, read_text(o.voucher));
    WALLET_TRY(signed_voucher sv, parse_voucher_json(text, "voucher"));
    if (sv.v.chain_id != c.chain_id)
      return fail(invalid_input("voucher is for chain {}, this endpoint serves chain {}", to_decimal(sv.v.chain_id), to_decimal(c.chain_id)));
    if (sv.contract != contract)
      return fail(invalid_input("voucher is for contract {}, not {}", sv.contract.checksummed(), contract.checksummed()));
    WALLET_TRY(auto ch, payment_channel::read_channel(*c.rpc, contract, sv.v.channel));
    WALLET_TRY(address signer, voucher_signer(sv));
    if (signer != ch.client)
      return fail(invalid_input("voucher for channel {} is signed by {}, not the channel's client {} (forged, or made for another channel)",
                                to_decimal(sv.v.channel), signer.checksummed(), ch.client.checksummed()));
    if (ch.closed) return fail(invalid_input("channel {} is closed", to_decimal(ch.id)));
    if (sv.v.nonce <= ch.nonce || sv.v.amount <= ch.redeemed)
      return fail(invalid_input("voucher (nonce {}, amount {}) is already redeemed: channel {} has nonce {}, redeemed {}",
                                to_decimal(sv.v.nonce), amount_text(sv.v.amount), to_decimal(ch.id), to_decimal(ch.nonce), amount_text(ch.redeemed)));
    if (sv.v.amount > ch.deposit)
      return fail(invalid_input("voucher amount {} is above channel {}'s deposit {}", amount_text(sv.v.amount), to_decimal(ch.id), amount_text(ch.deposit)));
    WALLET_TRY(receipt rc, sender.send(contract, 0, payment_channel::redeem_call(sv), err));
    u256 paid = sv.v.amount - ch.redeemed;
    ordered_json j = {{"channel", to_decimal(ch.id)}, {"amount", amount_text(sv.v.amount)}, {"paid", amount_text(paid)},
                      {"provider", ch.provider.checksummed()}, {"transaction", to_hex(rc.transaction_hash)},
                      {"gas_used", to_decimal(rc.gas_used)}};
    if (o.json) fmt::print(out, "{}\n", j.dump());
    else fmt::print(out, "channel {}: redeemed {} in total, {} paid to {} (tx {}, gas {})\n", to_decimal(ch.id),
                    amount_text(sv.v.amount), amount_text(paid), ch.provider.checksummed(), to_hex(rc.transaction_hash), to_decimal(rc.gas_used));
    return 0;
  }
#undef WALLET_TRY
#undef WALLET_CHECK
  return fail(status(error_kind::usage, "unknown wallet action '" + o.action + "'"));
}

}  // namespace

int wallet_command(const wallet_options& o, std::FILE* out, std::FILE* err) {
  status failure;
  int rc = run_action(o, out, err, &failure);
  if (!failure.is_ok()) fmt::print(err, "gpugrid: wallet {}: {}\n", o.action, failure.message());
  return rc;
}

void wallet_flags(CLI::App& sub, parsed_options&) {
  wallet_options& v = bound_options();
  v = wallet_options{};
  const std::vector<std::string> actions = {"show", "new", "balance", "deposit", "withdraw", "channels", "voucher", "redeem"};
  sub.add_option("ACTION", v.action,
                 "show: this wallet's address; new: make a new key; balance: the chain balance; deposit: open a "
                 "channel with --provider (or top up --channel); withdraw: take back the unredeemed rest of an expired "
                 "channel; channels: the channels of this wallet; voucher: sign a payment (client); redeem: cash a "
                 "voucher (provider)")
      ->type_name("")  // the eight actions are named in the description; a list here would not wrap
      ->required()
      ->check(CLI::IsMember(actions).description(""));
  sub.add_option("--chain-rpc", v.chain_rpc,
                 "the chain's JSON-RPC endpoint (default: GPUGRID_CHAIN_RPC, else rpc in DATA_DIR/chain.toml)")
      ->type_name("URL");
  sub.add_option("--contract", v.contract, "the payment-channel contract (default: GPUGRID_CHAIN_CONTRACT or chain.toml)")
      ->type_name("ADDRESS");
  sub.add_option("--chain-id", v.chain_id, "refuse an endpoint that serves another chain")->type_name("N");
  sub.add_option("--max-fee", v.max_fee_gwei, "the most to pay per gas, in gwei (default 500); above it nothing is sent")
      ->type_name("GWEI");
  sub.add_option("--confirmations", v.confirmations, "blocks to wait for after a transaction is mined (default 1)")
      ->type_name("N")
      ->check(CLI::Range(0, 1000));
  sub.add_option("--provider", v.provider, "deposit: the provider to open a channel with")->type_name("ADDRESS");
  sub.add_option("--amount", v.amount,
                 "in the chain's token (0.5, or 1000wei); deposit: the amount locked; voucher: the cumulative total owed")
      ->type_name("AMOUNT");
  sub.add_option("--channel", v.channel, "the channel id")->type_name("ID");
  sub.add_option("--nonce", v.nonce, "voucher: its nonce, above every earlier one (default: microseconds since 1970)")
      ->type_name("N");
  sub.add_option("--voucher", v.voucher, "redeem: the voucher JSON that 'wallet voucher' printed")->type_name("FILE|-");
  sub.add_option("--address", v.who, "balance, channels: another address than this wallet's")->type_name("ADDRESS");
  sub.add_option("--timeout", v.timeout_s,
                 "deposit: seconds until the client may withdraw the unredeemed rest (default one week)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0LL, 315360000LL));
  sub.add_option("--rpc-timeout", v.rpc_timeout_s, "seconds to wait for each answer of the endpoint (default 10)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.1, 600.0));
  sub.add_option("--wait", v.wait_s,
                 "seconds to wait for a sent transaction's receipt and confirmations (default 120); when they "
                 "run out the transaction may still be mined: its hash is printed")
      ->type_name("SECONDS")
      ->check(CLI::Range(1.0, 86400.0));
  sub.add_option("--data-dir", v.data_dir,
                 "folder for the wallet key and chain.toml (default: data_dir in config.toml, else "
                 "$XDG_DATA_HOME/gpugrid, else ~/.local/share/gpugrid)")
      ->type_name("DIR");
  sub.add_flag("--json", v.json, "print JSON");
}

int run_wallet(const invocation& inv) {
  wallet_options& v = bound_options();
  auto dir = resolve_data_dir(v.data_dir, *inv.config);
  if (!dir) {
    fmt::print(inv.err, "gpugrid: wallet: {}\n", dir.error().message());
    return exit_code_for(dir.error().kind());
  }
  v.data_dir = *dir;
  return wallet_command(v, inv.out, inv.err);
}

}  // namespace gpugrid::cli
