// gpugrid config show|path|set.
//
// `set` edits config.toml in place: the key's lines are replaced (or the key is appended, or
// removed for an empty value), comments and other keys are kept, and the new text must parse
// as settings before it is written (atomically: a temporary file renamed over the old one).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "base/json.h"
#include "base/settings.h"
#include "cli/commands.h"

namespace gpugrid::cli {

namespace {

int fail(const status& st) {
  fmt::print(stderr, "gpugrid: config: {}\n", st.message());
  return exit_code_for(st.kind());
}

const std::vector<std::string>& known_keys() {
  static const std::vector<std::string> keys = {"peers", "price", "device", "slots", "listen", "data_dir", "max_model_mb"};
  return keys;
}

bool is_number(const std::string& s, bool whole) {
  if (s.empty()) return false;
  char* end = nullptr;
  if (whole) std::strtoll(s.c_str(), &end, 10);
  else std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

// VALUE as TOML for KEY; parse_settings checks ranges and formats afterwards.
expected<std::string> toml_value(const std::string& key, const std::string& value) {
  if (key == "peers") {
    json list = json::array();
    for (const auto& url : split_peer_list(value)) list.push_back(url);
    std::string out = "[";
    for (size_t i = 0; i < list.size(); ++i) out += (i ? ", " : "") + dump_json(list[i]);
    return out + "]";
  }
  if (key == "price") {
    if (!is_number(value, false)) return invalid_input("price must be a number, not '{}'", value);
    return value;
  }
  if (key == "slots" || key == "max_model_mb") {
    if (!is_number(value, true)) return invalid_input("{} must be a whole number, not '{}'", key, value);
    return value;
  }
  return dump_json(json(value));  // a JSON string is a TOML basic string
}

std::string read_text(const std::string& path, bool* exists) {
  std::ifstream in(path, std::ios::binary);
  *exists = static_cast<bool>(in);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  return text.str();
}

status write_atomically(const std::string& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return io_error("cannot create the folder of {}: {}", path, ec.message());
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot write {}: {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return io_error("cannot write {}: {}", tmp, std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return io_error("cannot write {}", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return io_error("cannot replace {}: {}", path, std::strerror(e));
  }
  return status::ok();
}

// The text with KEY's lines replaced by `line` (removed when `line` is empty; appended when
// the key is not there).
expected<std::string> edit_key(const std::string& text, const std::string& path, const std::string& key,
                               const std::string& line) {
  std::vector<std::string> lines;
  {
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  size_t first = 0, last = 0;  // 1-based, inclusive; 0: not there
  try {
    toml::table table = toml::parse(text, path);
    if (const toml::node* node = table.get(key)) {
      for (const auto& [k, v] : table)
        if (k.str() == key) first = k.source().begin.line;
      last = node->source().end.line;
    }
  } catch (const toml::parse_error& e) {
    return invalid_input("{}:{}: {} (fix the file by hand first)", path, e.source().begin.line,
                         std::string(e.description()));
  }
  std::vector<std::string> out;
  if (first == 0) {
    out = lines;
    if (!line.empty()) out.push_back(line);
  } else {
    for (size_t i = 0; i < lines.size(); ++i) {
      size_t n = i + 1;
      if (n == first && !line.empty()) out.push_back(line);
      if (n >= first && n <= last) continue;
      out.push_back(lines[i]);
    }
  }
  std::string result;
  for (const auto& l : out) result += l + "\n";
  return result;
}

int config_set(const config_options& o, const std::string& path) {
  if (o.key.empty()) return fail(status(error_kind::usage, "set needs KEY and VALUE (e.g. 'gpugrid config set price 0.002')"));
  if (std::find(known_keys().begin(), known_keys().end(), o.key) == known_keys().end())
    return fail(invalid_input("unknown key '{}' (known keys: {})", o.key, fmt::join(known_keys(), ", ")));
  std::string line;
  if (!o.value.empty()) {
    auto v = toml_value(o.key, o.value);
    if (!v) return fail(v.error());
    line = o.key + " = " + *v;
  }
  bool exists = false;
  std::string text = read_text(path, &exists);
  auto edited = edit_key(text, path, o.key, line);
  if (!edited) return fail(edited.error());
  auto parsed = parse_settings(*edited, path);
  if (!parsed) return fail(parsed.error());
  status st = write_atomically(path, *edited);
  if (!st.is_ok()) return fail(st);
  if (o.json) {
    json j = {{"config_file", path}, {"key", o.key}};
    if (line.empty()) j["removed"] = true; else j["line"] = line;
    fmt::print("{}\n", dump_json(j));
  } else if (line.empty()) {
    fmt::print("removed {} from {}\n", o.key, path);
  } else {
    fmt::print("{}: {}\n", path, line);
  }
  return 0;
}

int config_show(const config_options& o, const std::string& path) {
  auto s = load_settings();
  if (!s) return fail(s.error());
  auto dir = resolve_data_dir("", *s);
  bool exists = !s->source.empty() && ::access(path.c_str(), F_OK) == 0;
  std::string peers_from = s->peers_from_env ? "GPUGRID_PEERS" : s->peers.empty() ? "none" : "config";
  if (o.json) {
    json j;
    j["config_file"] = path.empty() ? json(nullptr) : json(path);
    j["config_file_exists"] = exists;
    j["peers"] = s->peers;
    j["peers_from"] = peers_from;
    j["price"] = s->price ? json(*s->price) : json(nullptr);
    j["device"] = s->device ? json(*s->device) : json(nullptr);
    j["slots"] = s->slots ? json(*s->slots) : json(nullptr);
    j["listen"] = s->listen ? json(*s->listen) : json(nullptr);
    j["max_model_mb"] = s->max_model_mb ? json(*s->max_model_mb) : json(nullptr);
    j["data_dir"] = dir ? json(*dir) : json(nullptr);
    fmt::print("{}\n", dump_json(j));
    return 0;
  }
  auto row = [](const char* k, const std::string& v) { fmt::print("{:<14}{}\n", k, v); };
  auto or_default = [](const auto& opt, const char* dflt) {
    return opt ? fmt::format("{}", *opt) : fmt::format("{} (default)", dflt);
  };
  row("config file", path.empty() ? "(none: set HOME or XDG_CONFIG_HOME)" : path + (exists ? "" : " (not there yet)"));
  row("peers", s->peers.empty() ? "(none: run uses an embedded local grid)"
                                : fmt::format("{} (from {})", fmt::join(s->peers, ", "), peers_from == "config" ? "config file" : peers_from));
  row("price", or_default(s->price, "0.001"));
  row("device", or_default(s->device, "auto"));
  row("slots", or_default(s->slots, "1"));
  row("listen", or_default(s->listen, "0.0.0.0:7447"));
  row("max_model_mb", or_default(s->max_model_mb, "1024"));
  row("data_dir", dir ? *dir : "(none: set HOME or XDG_DATA_HOME)");
  return 0;
}

}  // namespace

int config_command(const config_options& o) {
  std::string path = config_path(process_env());
  if (o.action != "set" && (!o.key.empty() || !o.value.empty()))
    return fail(status(error_kind::usage, fmt::format("{} takes no KEY or VALUE", o.action)));
  if (o.action == "path") {
    if (path.empty()) return fail(status(error_kind::usage, "no config path: neither XDG_CONFIG_HOME nor HOME is set"));
    if (o.json) fmt::print("{}\n", dump_json(json{{"config_file", path}}));
    else fmt::print("{}\n", path);
    return 0;
  }
  if (o.action == "show") return config_show(o, path);
  if (o.action == "set") {
    if (path.empty()) return fail(status(error_kind::usage, "no config path: neither XDG_CONFIG_HOME nor HOME is set"));
    return config_set(o, path);
  }
  return fail(status(error_kind::usage, fmt::format("unknown action '{}' (use show, path or set)", o.action)));
}


}  // namespace gpugrid::cli
