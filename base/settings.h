// User settings (config.toml, GPUGRID_PEERS) and the folders gpugrid reads and writes.
//
// Settings come from $XDG_CONFIG_HOME/gpugrid/config.toml (default ~/.config/gpugrid/...);
// a missing file means "nothing configured", a malformed one is an error whose message is one
// line naming the file, the line and the key at fault. GPUGRID_PEERS (comma-separated URLs)
// replaces the configured peers. Command-line flags override both; the command table applies
// them (cli/command_table.cc).
//
// Everything here is pure except ensure_data_dir (creates folders) and the file read in
// load_settings_file. The environment is passed in as a lookup so tests need not touch the
// process environment; process_env() reads the real one. All functions may be called from any
// thread (process_env reads the environment, which nobody here modifies).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace gpugrid {

// [serve]: API keys and limits of `gpugrid serve`.
struct serve_settings {
  std::vector<std::string> api_keys;       // bearer tokens
  std::optional<std::string> api_key_file; // more keys, one per line
  std::optional<double> rate_limit;        // requests per second per key
  std::optional<int> max_body_mb;
};

struct settings {
  std::vector<std::string> peers;          // bootstrap peer URLs (ws:// or wss://)
  std::optional<double> price;             // offer: price per GFLOP
  std::optional<std::string> device;       // auto | cpu | cuda | cuda:N
  std::optional<int> slots;                // offer: jobs run at once
  std::optional<std::string> listen;       // offer: HOST:PORT
  std::optional<std::string> data_dir;     // replaces the XDG data folder
  std::optional<int> max_model_mb;         // offer: largest model accepted
  serve_settings serve;                    // [serve]
  std::string source;                      // the config file read; empty when there was none
  bool peers_from_env = false;             // GPUGRID_PEERS replaced the configured peers
};

// Returns the value of an environment variable, or nullopt when it is not set.
using env_lookup = std::function<std::optional<std::string>(const std::string& name)>;
env_lookup process_env();

// Parses config.toml text; `path` is only used in messages ("PATH:LINE: ..."). Unknown keys,
// wrong types and out-of-range values fail with kind invalid_input.
expected<settings> parse_settings(std::string_view toml_text, const std::string& path);

// Reads and parses one config file; a file that does not exist yields empty settings.
expected<settings> load_settings_file(const std::string& path);

// $XDG_CONFIG_HOME/gpugrid/config.toml, else $HOME/.config/gpugrid/config.toml; empty when
// neither variable is set. Relative XDG paths are ignored, as the XDG spec says.
std::string config_path(const env_lookup& env);

// Splits GPUGRID_PEERS: comma-separated, whitespace trimmed, empty entries dropped.
std::vector<std::string> split_peer_list(std::string_view list);

// The config file at config_path(env), then GPUGRID_PEERS (set, even empty, replaces peers).
expected<settings> load_settings(const env_lookup& env = process_env());

// The data folder: `flag` (--data-dir) if given, else the config's data_dir (a leading "~/"
// is $HOME), else
// $XDG_DATA_HOME/gpugrid, else $HOME/.local/share/gpugrid. Does not create anything. Fails
// (usage) only when none of those is available.
expected<std::string> resolve_data_dir(const std::string& flag, const settings& config,
                                       const env_lookup& env = process_env());

// Creates `dir` (and missing parents) if needed; the folder itself gets mode 0700 when it is
// created here. Fails (io) when it cannot be created or exists and is not a folder.
status ensure_data_dir(const std::string& dir);

}  // namespace gpugrid
