#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "chain/wallet.h"

using namespace gpugrid::chain;

TEST_CASE("chain settings: the chain table of config.toml, overridden by DATA_DIR/chain.toml", "[chain][settings]") {
  auto root = std::filesystem::temp_directory_path() / ("gg-chaincfg-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "config" / "gpugrid");
  std::filesystem::create_directories(root / "data");
  std::ofstream(root / "config" / "gpugrid" / "config.toml")
      << "peers = []\n[chain]\nrpc = \"http://127.0.0.1:8545\"\nchain_id = 31337\nfrom_block = 5\n";
  const char* old = std::getenv("XDG_CONFIG_HOME");
  std::string saved = old ? old : "";
  ::setenv("XDG_CONFIG_HOME", (root / "config").c_str(), 1);
  ::unsetenv("GPUGRID_CHAIN_RPC");
  auto c = load_chain_settings((root / "data").string());
  REQUIRE(c);
  CHECK(c->rpc == "http://127.0.0.1:8545");
  CHECK(c->chain_id == u256(31337));
  CHECK(c->from_block == u256(5));
  std::ofstream(root / "data" / "chain.toml") << "rpc = \"http://127.0.0.1:9999\"\n";
  c = load_chain_settings((root / "data").string());
  REQUIRE(c);
  CHECK(c->rpc == "http://127.0.0.1:9999");
  CHECK(c->chain_id == u256(31337));
  std::ofstream(root / "config" / "gpugrid" / "config.toml") << "[chain]\nrcp = \"x\"\n";
  c = load_chain_settings((root / "data").string());
  REQUIRE_FALSE(c);
  CHECK(c.error().message().find("chain.rcp") != std::string::npos);
  if (old) ::setenv("XDG_CONFIG_HOME", saved.c_str(), 1);
  else ::unsetenv("XDG_CONFIG_HOME");
  std::filesystem::remove_all(root);
}
