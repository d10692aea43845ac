#include "base/settings.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <catch2/catch.hpp>

using namespace gpugrid;

namespace {

env_lookup fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// A fresh folder under the system temp dir, removed when the test ends.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gpugrid-settings-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  void write(const std::string& rel, const std::string& text) const {
    std::filesystem::create_directories((path / rel).parent_path());
    std::ofstream(path / rel) << text;
  }
};

std::string error_of(const expected<settings>& s) {
  REQUIRE_FALSE(s.has_value());
  CHECK(s.error().kind() == error_kind::invalid_input);
  CHECK(s.error().message().find('\n') == std::string::npos);
  return s.error().message();
}

}  // namespace

TEST_CASE("settings: every key parses", "[settings]") {
  auto s = parse_settings(R"(
peers = ["ws://a:7447", "wss://b:7447"]
price = 0.002
device = "cuda:1"
slots = 4
listen = "127.0.0.1:9000"
data_dir = "/srv/gpugrid"
max_model_mb = 512
)", "config.toml");
  REQUIRE(s.has_value());
  CHECK(s->peers == std::vector<std::string>{"ws://a:7447", "wss://b:7447"});
  CHECK(*s->price == Approx(0.002));
  CHECK(*s->device == "cuda:1");
  CHECK(*s->slots == 4);
  CHECK(*s->listen == "127.0.0.1:9000");
  CHECK(*s->data_dir == "/srv/gpugrid");
  CHECK(*s->max_model_mb == 512);
  CHECK(s->source == "config.toml");
}

TEST_CASE("settings: an empty file configures nothing", "[settings]") {
  auto s = parse_settings("", "config.toml");
  REQUIRE(s.has_value());
  CHECK(s->peers.empty());
  CHECK_FALSE(s->price);
  CHECK_FALSE(s->device);
}

TEST_CASE("settings: an integer price is a number", "[settings]") {
  auto s = parse_settings("price = 1\n", "config.toml");
  REQUIRE(s.has_value());
  CHECK(*s->price == 1.0);
}

TEST_CASE("settings: wrong types name the file, line and key", "[settings]") {
  CHECK(error_of(parse_settings("# prices\n\nprice = \"cheap\"\n", "config.toml")) ==
        "config.toml:3: key 'price' must be a number");
  CHECK(error_of(parse_settings("slots = 1.5\n", "c.toml")) == "c.toml:1: key 'slots' must be a whole number");
  CHECK(error_of(parse_settings("slots = 0\n", "c.toml")) == "c.toml:1: key 'slots' must be between 1 and 1024");
  CHECK(error_of(parse_settings("device = 3\n", "c.toml")) == "c.toml:1: key 'device' must be a string");
  CHECK(error_of(parse_settings("peers = \"ws://a:1\"\n", "c.toml")).rfind("c.toml:1: key 'peers' must be a list", 0) == 0);
  CHECK(error_of(parse_settings("peers = [\n  \"ws://a:1\",\n  7,\n]\n", "c.toml")) ==
        "c.toml:3: key 'peers' must hold only strings (URLs)");
  CHECK(error_of(parse_settings("price = -1\n", "c.toml")) == "c.toml:1: key 'price' must not be negative");
}

TEST_CASE("settings: bad values name the key", "[settings]") {
  CHECK(error_of(parse_settings("device = \"gpu\"\n", "c.toml")) ==
        "c.toml:1: key 'device' must be auto, cpu, cuda or cuda:N, not 'gpu'");
  CHECK(error_of(parse_settings("listen = \"localhost\"\n", "c.toml")) ==
        "c.toml:1: key 'listen' must be HOST:PORT, not 'localhost'");
  CHECK(error_of(parse_settings("listen = \"h:70000\"\n", "c.toml")).find("key 'listen'") != std::string::npos);
  auto ok = parse_settings("listen = \"[::1]:7447\"\ndevice = \"cuda\"\n", "c.toml");
  CHECK(ok.has_value());
}

TEST_CASE("settings: unknown keys and tables are errors", "[settings]") {
  std::string m = error_of(parse_settings("price = 1\nprise = 2\n", "c.toml"));
  CHECK(m.rfind("c.toml:2: unknown key 'prise'", 0) == 0);
  CHECK(m.find("price") != std::string::npos);
  CHECK(error_of(parse_settings("\n[offer]\nslots = 2\n", "c.toml")).rfind("c.toml:2: unknown key 'offer'", 0) == 0);
}

TEST_CASE("settings: a TOML syntax error is file:line: message", "[settings]") {
  std::string m = error_of(parse_settings("price = 1\nslots = = 2\n", "/x/config.toml"));
  CHECK(m.rfind("/x/config.toml:2: ", 0) == 0);
  CHECK(m.size() > std::string("/x/config.toml:2: ").size());
}

TEST_CASE("settings: config path follows XDG_CONFIG_HOME, then HOME", "[settings]") {
  CHECK(config_path(fake_env({{"XDG_CONFIG_HOME", "/cfg"}, {"HOME", "/home/u"}})) == "/cfg/gpugrid/config.toml");
  CHECK(config_path(fake_env({{"HOME", "/home/u"}})) == "/home/u/.config/gpugrid/config.toml");
  CHECK(config_path(fake_env({{"XDG_CONFIG_HOME", "relative"}, {"HOME", "/home/u"}})) ==
        "/home/u/.config/gpugrid/config.toml");
  CHECK(config_path(fake_env({})).empty());
}

TEST_CASE("settings: load_settings reads the file and GPUGRID_PEERS overrides peers", "[settings]") {
  temp_dir tmp;
  tmp.write("gpugrid/config.toml", "peers = [\"ws://configured:7447\"]\nprice = 0.5\n");
  std::string xdg = tmp.path.string();

  auto s = load_settings(fake_env({{"XDG_CONFIG_HOME", xdg}}));
  REQUIRE(s.has_value());
  CHECK(s->peers == std::vector<std::string>{"ws://configured:7447"});
  CHECK(*s->price == 0.5);
  CHECK(s->source == xdg + "/gpugrid/config.toml");
  CHECK_FALSE(s->peers_from_env);

  auto e = load_settings(fake_env({{"XDG_CONFIG_HOME", xdg}, {"GPUGRID_PEERS", " ws://a:1 , ,wss://b:2,"}}));
  REQUIRE(e.has_value());
  CHECK(e->peers == std::vector<std::string>{"ws://a:1", "wss://b:2"});
  CHECK(e->peers_from_env);
  CHECK(*e->price == 0.5);

  auto cleared = load_settings(fake_env({{"XDG_CONFIG_HOME", xdg}, {"GPUGRID_PEERS", ""}}));
  REQUIRE(cleared.has_value());
  CHECK(cleared->peers.empty());
}

TEST_CASE("settings: a missing config file is not an error, a malformed one is", "[settings]") {
  temp_dir tmp;
  auto none = load_settings(fake_env({{"XDG_CONFIG_HOME", tmp.path.string()}}));
  REQUIRE(none.has_value());
  CHECK(none->source.empty());

  tmp.write("gpugrid/config.toml", "slots = 2\nprice = \"free\"\n");
  auto bad = load_settings(fake_env({{"XDG_CONFIG_HOME", tmp.path.string()}}));
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message() == tmp.path.string() + "/gpugrid/config.toml:2: key 'price' must be a number");
}

TEST_CASE("settings: split_peer_list", "[settings]") {
  CHECK(split_peer_list("").empty());
  CHECK(split_peer_list(" , ").empty());
  CHECK(split_peer_list("ws://a:1") == std::vector<std::string>{"ws://a:1"});
  CHECK(split_peer_list("ws://a:1,\tws://b:2 ") == std::vector<std::string>{"ws://a:1", "ws://b:2"});
}

TEST_CASE("settings: data folder precedence", "[settings]") {
  settings none;
  settings configured;
  configured.data_dir = "/from/config";
  auto env = fake_env({{"XDG_DATA_HOME", "/xdg"}, {"HOME", "/home/u"}});
  CHECK(*resolve_data_dir("/flag", configured, env) == "/flag");
  CHECK(*resolve_data_dir("", configured, env) == "/from/config");
  CHECK(*resolve_data_dir("", none, env) == "/xdg/gpugrid");
  CHECK(*resolve_data_dir("", none, fake_env({{"HOME", "/home/u"}})) == "/home/u/.local/share/gpugrid");
  settings tilde;
  tilde.data_dir = "~/grid";
  CHECK(*resolve_data_dir("", tilde, env) == "/home/u/grid");
  CHECK_FALSE(resolve_data_dir("", tilde, fake_env({})).has_value());
  auto nothing = resolve_data_dir("", none, fake_env({}));
  REQUIRE_FALSE(nothing.has_value());
  CHECK(nothing.error().kind() == error_kind::usage);
}

TEST_CASE("settings: ensure_data_dir creates a private folder on demand", "[settings]") {
  temp_dir tmp;
  std::string dir = (tmp.path / "share" / "gpugrid").string();
  REQUIRE(ensure_data_dir(dir).is_ok());
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0777) == 0700);
  CHECK(ensure_data_dir(dir).is_ok());  // already there

  tmp.write("file", "x");
  status st_file = ensure_data_dir((tmp.path / "file").string());
  CHECK(st_file.kind() == error_kind::io);
  CHECK(ensure_data_dir((tmp.path / "file" / "below").string()).kind() == error_kind::io);
}

TEST_CASE("settings: the serve table", "[settings]") {
  auto s = parse_settings("peers = []\n[serve]\napi_keys = [\"k1\", \"k2\"]\napi_key_file = \"/etc/keys\"\n"
                          "rate_limit = 5\nmax_body_mb = 8\n",
                          "c.toml");
  REQUIRE(s.has_value());
  CHECK(s->serve.api_keys == std::vector<std::string>{"k1", "k2"});
  CHECK(*s->serve.api_key_file == "/etc/keys");
  CHECK(*s->serve.rate_limit == 5.0);
  CHECK(*s->serve.max_body_mb == 8);
  auto bad = parse_settings("[serve]\nrate_limit = -1\n", "c.toml");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message() == "c.toml:2: key 'serve.rate_limit' must be a number above 0");
  auto unknown = parse_settings("[serve]\nport = 1\n", "c.toml");
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error().message().find("c.toml:2: unknown key 'serve.port'") != std::string::npos);
  CHECK_FALSE(parse_settings("serve = 3\n", "c.toml").has_value());
}
