#include "chain/wallet.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <toml++/toml.h>

#include "base/secret_file.h"
#include "base/settings.h"
#include "chain/anchor.h"

namespace gpugrid::chain {

std::string wallet_key_path(const std::string& data_dir) { return data_dir + "/wallet.key"; }

expected<secret_key> load_wallet_key(const std::string& path) {
  GG_ASSIGN_OR_RETURN(secret_bytes file,
                      read_secret_file(path, "wallet key file", 65, "it holds 64 hex digits and a newline"));
  const char* text = reinterpret_cast<const char*>(file.data());
  std::string what = "wallet key file '" + path + "'";
  if (text[64] != '\n') return invalid_input("{}: does not end with a newline after 64 hex digits", what);
  auto raw = from_hex(std::string_view(text, 64), what);
  file.wipe();
  if (!raw) return invalid_input("{}: not 64 hex digits", what);
  auto key = secret_key::from_bytes(raw->data(), raw->size(), what);
  sodium_memzero(raw->data(), raw->size());
  return key;
}

status save_wallet_key(const secret_key& key, const std::string& path, bool replace) {
  std::string text = to_hex(key.raw(), false) + "\n";
  status s = write_secret_file(path, "wallet key file", text.data(), text.size(), replace);
  sodium_memzero(text.data(), text.size());
  return s;
}

expected<secret_key> load_or_create_wallet_key(const std::string& data_dir, bool* created) {
  if (created) *created = false;
  GG_RETURN_IF_ERROR(ensure_data_dir(data_dir));
  std::string path = wallet_key_path(data_dir);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return load_wallet_key(path);
  secret_key k = secret_key::generate();
  status s = save_wallet_key(k, path);
  if (!s.is_ok()) {
    if (::lstat(path.c_str(), &st) == 0) return load_wallet_key(path);  // another process made it first
    return s;
  }
  if (created) *created = true;
  return k;
}

expected<secret_key> rotate_wallet_key(const std::string& data_dir, std::string* old_path) {
  if (old_path) old_path->clear();
  GG_RETURN_IF_ERROR(ensure_data_dir(data_dir));
  std::string path = wallet_key_path(data_dir);
  auto kept = keep_old_secret_file(path, "wallet key file");
  if (!kept) return kept.error();
  if (old_path) *old_path = *kept;
  secret_key k = secret_key::generate();
  GG_RETURN_IF_ERROR(save_wallet_key(k, path, /*replace=*/true));
  return k;
}

namespace {

// The keys of chain.toml (or config.toml's [chain]) from `t` into `c`; `path` names the file.
status apply_chain_table(const toml::table& t, const std::string& path, const std::string& prefix, chain_settings& c) {
  for (const auto& [k, v] : t) {
    std::string key(k.str());
    std::string where = path + ": " + prefix + key;
    if (key == "rpc" || key == "contract") {
      if (!v.is_string()) return invalid_input("{}: must be a string", where);
      std::string s = *v.value<std::string>();
      if (key == "rpc") c.rpc = s;
      else {
        GG_ASSIGN_OR_RETURN(address a, parse_address(s, where));
        c.contract = a;
      }
    } else if (key == "from_block") {
      auto n = v.value<int64_t>();
      if (!v.is_integer() || !n || *n < 0) return invalid_input("{}: must be a whole number", where);
      c.from_block = u256(*n);
    } else if (key == "anchor_every") {
      auto n = v.value<int64_t>();
      if (!v.is_integer() || !n || *n < 0) return invalid_input("{}: must be a whole number", where);
      c.anchor_every = static_cast<uint64_t>(*n);
    } else if (key == "anchor_interval") {
      if (!v.is_string()) return invalid_input("{}: must be a string such as \"1h\"", where);
      GG_ASSIGN_OR_RETURN(c.anchor_interval, parse_duration(*v.value<std::string>(), where));
    } else if (key == "chain_id" || key == "max_fee_gwei" || key == "confirmations") {
      auto n = v.value<int64_t>();
      if (!v.is_integer() || !n || *n < 0 || (key != "confirmations" && *n == 0) || (key == "confirmations" && *n > 1000))
        return invalid_input("{}: must be a positive whole number", where);
      if (key == "chain_id") c.chain_id = u256(*n);
      else if (key == "max_fee_gwei") c.max_fee_gwei = u256(*n);
      else c.confirmations = static_cast<unsigned>(*n);
    } else {
      return invalid_input("{}: unknown key (expected rpc, contract, chain_id, max_fee_gwei, confirmations, from_block, anchor_every, anchor_interval)", where);
    }
  }
  return status::ok();
}

expected<toml::table> parse_toml_file(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return invalid_input("{}:{}: {}", path, e.source().begin.line, std::string(e.description()));
  }
}

}  // namespace

expected<chain_settings> load_chain_settings(const std::string& data_dir) {
  chain_settings c;
  struct stat st {};
  // config.toml's [chain] first; DATA_DIR/chain.toml and then the environment override it.
  std::string config = config_path(process_env());
  if (!config.empty() && ::stat(config.c_str(), &st) == 0) {
    GG_ASSIGN_OR_RETURN(toml::table t, parse_toml_file(config));
    if (const toml::node* n = t.get("chain")) {
      const toml::table* chain = n->as_table();
      if (!chain) return invalid_input("{}: chain must be a table ([chain])", config);
      GG_RETURN_IF_ERROR(apply_chain_table(*chain, config, "chain.", c));
      c.source = config;
    }
  }
  std::string path = data_dir + "/chain.toml";
  if (!data_dir.empty() && ::stat(path.c_str(), &st) == 0) {
    c.source = path;
    GG_ASSIGN_OR_RETURN(toml::table t, parse_toml_file(path));
    GG_RETURN_IF_ERROR(apply_chain_table(t, path, "", c));
  }
  if (const char* e = std::getenv("GPUGRID_CHAIN_RPC"); e && *e) c.rpc = e;
  if (const char* e = std::getenv("GPUGRID_CHAIN_CONTRACT"); e && *e) {
    GG_ASSIGN_OR_RETURN(address a, parse_address(e, "GPUGRID_CHAIN_CONTRACT"));
    c.contract = a;
  }
  if (const char* e = std::getenv("GPUGRID_CHAIN_ID"); e && *e) {
    GG_ASSIGN_OR_RETURN(u256 id, parse_uint(e, "GPUGRID_CHAIN_ID"));
    c.chain_id = id;
  }
  return c;
}

}  // namespace gpugrid::chain
