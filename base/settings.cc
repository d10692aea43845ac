#include "base/settings.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

namespace gpugrid {

namespace {

const char* const kKnownKeys = "peers, price, device, slots, listen, data_dir, max_model_mb, [serve], [chain]";

status key_error(const std::string& path, const toml::source_region& where, std::string_view key,
                 std::string_view what) {
  return invalid_input("{}:{}: key '{}' {}", path, where.begin.line, key, what);
}

// auto | cpu | cuda | cuda:N (the engine checks the same grammar; base cannot depend on it).
bool is_device_spec(const std::string& s) {
  if (s == "auto" || s == "cpu" || s == "cuda") return true;
  if (s.rfind("cuda:", 0) != 0 || s.size() == 5 || s.size() > 8) return false;
  for (size_t i = 5; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// HOST:PORT with a port in 1..65535 (HOST may be empty, a name, IPv4 or [IPv6]).
bool is_listen_address(const std::string& s) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 == s.size() || s.size() - colon > 6) return false;
  long port = 0;
  for (size_t i = colon + 1; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    port = port * 10 + (s[i] - '0');
  }
  return port >= 1 && port <= 65535;
}

// Reads an integer key into *out when it lies in [lo, hi].
status read_int(const std::string& path, std::string_view key, const toml::node& node, int64_t lo,
                int64_t hi, std::optional<int>* out) {
  auto v = node.value_exact<int64_t>();
  if (!v) return key_error(path, node.source(), key, "must be a whole number");
  if (*v < lo || *v > hi) return key_error(path, node.source(), key, fmt::format("must be between {} and {}", lo, hi));
  *out = static_cast<int>(*v);
  return status::ok();
}

status read_string(const std::string& path, std::string_view key, const toml::node& node,
                   std::optional<std::string>* out) {
  auto v = node.value_exact<std::string>();
  if (!v) return key_error(path, node.source(), key, "must be a string");
  if (v->empty()) return key_error(path, node.source(), key, "must not be empty");
  *out = std::move(*v);
  return status::ok();
}

// The [serve] table: api_keys, api_key_file, rate_limit, max_body_mb.
status read_serve(const std::string& path, const toml::node& node, serve_settings* out) {
  const toml::table* t = node.as_table();
  if (!t) return key_error(path, node.source(), "serve", "must be a table ([serve])");
  for (const auto& [k, v] : *t) {
    std::string key = "serve." + std::string(k.str());
    if (k.str() == "api_keys") {
      const toml::array* list = v.as_array();
      if (!list) return key_error(path, v.source(), key, "must be a list of strings");
      for (const toml::node& item : *list) {
        auto s = item.value_exact<std::string>();
        if (!s || s->empty()) return key_error(path, item.source(), key, "must hold only non-empty strings");
        out->api_keys.push_back(std::move(*s));
      }
    } else if (k.str() == "api_key_file") {
      GG_RETURN_IF_ERROR(read_string(path, key, v, &out->api_key_file));
    } else if (k.str() == "rate_limit") {
      auto d = v.value<double>();
      if (!d || !(v.is_floating_point() || v.is_integer()) || !(*d > 0)) return key_error(path, v.source(), key, "must be a number above 0");
      out->rate_limit = *d;
    } else if (k.str() == "max_body_mb") {
      GG_RETURN_IF_ERROR(read_int(path, key, v, 1, 4096, &out->max_body_mb));
    } else {
      return invalid_input("{}:{}: unknown key '{}' (known keys in [serve]: api_keys, api_key_file, rate_limit, max_body_mb)",
                           path, k.source().begin.line, key);
    }
  }
  return status::ok();
}

status read_key(const std::string& path, std::string_view key, const toml::source_region& key_at,
                const toml::node& node, settings* s) {
  if (key == "peers") {
    const toml::array* list = node.as_array();
    if (!list) return key_error(path, node.source(), key, "must be a list of URLs, e.g. [\"ws://host:7447\"]");
    s->peers.clear();
    for (const toml::node& item : *list) {
      auto url = item.value_exact<std::string>();
      if (!url) return key_error(path, item.source(), key, "must hold only strings (URLs)");
      if (url->empty()) return key_error(path, item.source(), key, "must not hold an empty URL");
      s->peers.push_back(std::move(*url));
    }
    return status::ok();
  }
  if (key == "price") {
    auto v = node.value<double>();  // integers are numbers too
    if (!v || !(node.is_floating_point() || node.is_integer())) return key_error(path, node.source(), key, "must be a number");
    if (!(*v >= 0)) return key_error(path, node.source(), key, "must not be negative");
    s->price = *v;
    return status::ok();
  }
  if (key == "device") {
    GG_RETURN_IF_ERROR(read_string(path, key, node, &s->device));
    if (!is_device_spec(*s->device))
      return key_error(path, node.source(), key, fmt::format("must be auto, cpu, cuda or cuda:N, not '{}'", *s->device));
    return status::ok();
  }
  if (key == "slots") return read_int(path, key, node, 1, 1024, &s->slots);
  if (key == "max_model_mb") return read_int(path, key, node, 1, 1 << 20, &s->max_model_mb);
  if (key == "listen") {
    GG_RETURN_IF_ERROR(read_string(path, key, node, &s->listen));
    if (!is_listen_address(*s->listen))
      return key_error(path, node.source(), key, fmt::format("must be HOST:PORT, not '{}'", *s->listen));
    return status::ok();
  }
  if (key == "data_dir") return read_string(path, key, node, &s->data_dir);
  if (key == "serve") return read_serve(path, node, &s->serve);
  // [chain]: the keys of DATA_DIR/chain.toml; read and checked by chain::load_chain_settings.
  if (key == "chain") {
    if (!node.as_table()) return key_error(path, node.source(), "chain", "must be a table ([chain])");
    return status::ok();
  }
  return invalid_input("{}:{}: unknown key '{}' (known keys: {})", path, key_at.begin.line, key, kKnownKeys);
}

std::optional<std::string> absolute_env(const env_lookup& env, const char* name) {
  auto v = env(name);
  if (!v || v->empty() || (*v)[0] != '/') return std::nullopt;
  return v;
}

}  // namespace

env_lookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

expected<settings> parse_settings(std::string_view toml_text, const std::string& path) {
  toml::table table;
  try {
    table = toml::parse(toml_text, path);
  } catch (const toml::parse_error& e) {
    std::string message(e.description());
    for (char& c : message)
      if (c == '\n' || c == '\r') c = ' ';
    return invalid_input("{}:{}: {}", path, e.source().begin.line, message);
  }
  settings s;
  s.source = path;
  for (const auto& [key, node] : table) {
    GG_RETURN_IF_ERROR(read_key(path, key.str(), key.source(), node, &s));
  }
  return s;
}

expected<settings> load_settings_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return settings{};
    return io_error("cannot read {}: {}", path, std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) return invalid_input("{} is a folder, not a config file", path);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) return io_error("cannot read {}", path);
  return parse_settings(text.str(), path);
}

std::string config_path(const env_lookup& env) {
  if (auto xdg = absolute_env(env, "XDG_CONFIG_HOME")) return *xdg + "/gpugrid/config.toml";
  if (auto home = absolute_env(env, "HOME")) return *home + "/.config/gpugrid/config.toml";
  return {};
}

std::vector<std::string> split_peer_list(std::string_view list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(start, comma - start);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    start = comma + 1;
  }
  return out;
}

expected<settings> load_settings(const env_lookup& env) {
  settings s;
  std::string path = config_path(env);
  if (!path.empty()) {
    GG_ASSIGN_OR_RETURN(s, load_settings_file(path));
  }
  if (auto list = env("GPUGRID_PEERS")) {
    s.peers = split_peer_list(*list);
    s.peers_from_env = true;
  }
  return s;
}

expected<std::string> resolve_data_dir(const std::string& flag, const settings& config, const env_lookup& env) {
  if (!flag.empty()) return flag;
  if (config.data_dir) {
    const std::string& dir = *config.data_dir;
    if (dir == "~" || dir.rfind("~/", 0) == 0) {
      auto home = absolute_env(env, "HOME");
      if (!home) return status(error_kind::usage, fmt::format("data_dir '{}' in {} needs HOME to be set", dir, config.source));
      return *home + dir.substr(1);
    }
    return dir;
  }
  if (auto xdg = absolute_env(env, "XDG_DATA_HOME")) return *xdg + "/gpugrid";
  if (auto home = absolute_env(env, "HOME")) return *home + "/.local/share/gpugrid";
  return status(error_kind::usage, "no data folder: pass --data-dir, or set XDG_DATA_HOME or HOME");
}

status ensure_data_dir(const std::string& dir) {
  if (dir.empty()) return status(error_kind::usage, "no data folder given");
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return io_error("data folder '{}' exists and is not a folder", dir);
    return status::ok();
  }
  // Parents get the usual permissions; only the data folder itself is private.
  for (size_t slash = dir.find('/', 1); slash != std::string::npos; slash = dir.find('/', slash + 1)) {
    std::string parent = dir.substr(0, slash);
    if (::stat(parent.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST)
      return io_error("cannot create folder '{}': {}", parent, std::strerror(errno));
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return io_error("cannot create data folder '{}': {}", dir, std::strerror(errno));
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return io_error("data folder '{}' exists and is not a folder", dir);
  return status::ok();
}

}  // namespace gpugrid
