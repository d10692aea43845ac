// Nodes running the DHT over real connections: providers announce themselves, a client that
// may dial only one provider by gossip finds the others through lookups and dials them.
#include <map>
#include <catch2/catch.hpp>

#include <filesystem>
#include <thread>

#include <caf/all.hpp>
#include <unistd.h>

#include "actors/node.h"
#include "actors/provider.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {

struct dht_provider {
  std::string dir;
  std::shared_ptr<provider_core> core;
  std::unique_ptr<grid_node> node;
  std::array<uint8_t, 32> key{};
  dht_provider(caf::actor_system& sys, int i, const std::string& bootstrap, double price,
               const std::string& cached_model = "") {
    dir = (std::filesystem::temp_directory_path() / ("gg_dht_" + std::to_string(getpid()) + "_" + std::to_string(i))).string();
    std::filesystem::create_directories(dir);
    auto cache = model_cache::open(dir + "/models", 1 << 20);
    REQUIRE(cache.has_value());
    if (!cached_model.empty()) REQUIRE((*cache)->put(ledger::blake2b_256(cached_model), cached_model).is_ok());
    provider_options po;
    po.device = "cpu";
    po.threads = 1;
    po.max_model_bytes = 1 << 16;
    po.price.price_per_gflop = price;
    auto id = net::identity::generate();
    std::copy(id.public_key().begin(), id.public_key().end(), key.begin());
    core = std::make_shared<provider_core>(keypair_of(id), std::shared_ptr<model_cache>(std::move(cache).value()), po,
                                           nullptr);
    node_options no;
    no.listen = "127.0.0.1:0";
    no.provider = core;
    no.max_neighbors = 2;
    if (!bootstrap.empty()) no.bootstrap = {bootstrap};
    no.heartbeat_interval = std::chrono::milliseconds(200);
    auto n = grid_node::start(sys, id, no);
    REQUIRE(n.has_value());
    node = std::move(n).value();
  }
  ~dht_provider() {
    node->stop();
    std::filesystem::remove_all(dir);
  }
};

}  // namespace

TEST_CASE("providers announce in the DHT and a client finds and dials them by lookup", "[grid][net][discovery]") {
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  std::vector<std::unique_ptr<dht_provider>> ps;
  // Providers 5 and 9 start with a model in their cache (from an earlier run, say).
  const std::string cached(300, 'm');
  for (int i = 0; i < 12; ++i)
    ps.push_back(std::make_unique<dht_provider>(sys, i, i == 0 ? "" : ps[static_cast<size_t>(i) / 2]->node->url(),
                                                i < 4 ? 0.001 : 0.01, i == 5 || i == 9 ? cached : ""));
  node_options no;
  no.bootstrap = {ps[0]->node->url()};
  no.max_providers = 1;   // gossip alone would reach one provider
  auto client = grid_node::start(sys, net::identity::generate(), no);
  REQUIRE(client.has_value());
  (*client)->settle(std::chrono::seconds(5));

  // Announcements go out on the providers' first ticks; lookups find them once stored.
  std::vector<discovery::provider_record> found;
  for (int attempt = 0; attempt < 40 && found.size() < 10; ++attempt) {
    found = (*client)->find_providers(discovery::providers_key(), {}, 10, std::chrono::seconds(3));
    if (found.size() < 10) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  CHECK(found.size() == 10);
  for (const auto& r : found) {
    CHECK(discovery::verify_record(r));
    CHECK(r.device_class == "cpu");
  }
  // It dialed what it found: more providers than gossip alone gave it.
  for (int i = 0; i < 100 && (*client)->providers().size() < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK((*client)->providers().size() >= 5);

  // The model's key: the two providers that hold it in their cache, announced from the start.
  // (What the lookups found together, a pause between them: under load a holder's record may
  // still be on its way, and a lookup answers at once with what it has.)
  std::map<decltype(discovery::provider_record::provider), discovery::provider_record> holders_by_key;
  for (int attempt = 0; attempt < 40 && holders_by_key.size() < 2; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(250));
    for (auto& r : (*client)->find_providers(discovery::model_key(ledger::blake2b_256(cached)), {}, 10,
                                             std::chrono::seconds(3)))
      holders_by_key[r.provider] = r;
  }
  std::vector<discovery::provider_record> holders;
  for (auto& [k, r] : holders_by_key) holders.push_back(r);
  REQUIRE(holders.size() == 2);
  for (const auto& r : holders)
    CHECK((r.provider == ps[5]->key || r.provider == ps[9]->key));

  // A price cap: only the four cheap ones.
  // (Retried like the lookups above: under load the records may still be on their way.)
  // A lookup under load may miss a record that a later one finds: what the lookups found together.
  std::map<decltype(discovery::provider_record::provider), discovery::provider_record> cheap_by_key;
  for (int attempt = 0; attempt < 40 && cheap_by_key.size() < 4; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(250));
    for (auto& r : (*client)->find_providers(discovery::device_key("cpu"), {"cpu", 0.002}, 20, std::chrono::seconds(5)))
      cheap_by_key[r.provider] = r;
  }
  std::vector<discovery::provider_record> cheap;
  for (auto& [k, r] : cheap_by_key) cheap.push_back(r);
  CHECK(cheap.size() == 4);
  for (const auto& r : cheap) CHECK(r.price <= 0.002);
  (*client)->stop();

  // `run` in a grid larger than it would dial: settle() looks the model up (nobody has served it
  // yet, so the general key answers) and dials what it finds.
  node_options large;
  large.bootstrap = {ps[0]->node->url()};
  large.max_providers = 1;
  large.dht_lookup_above = 1;
  large.wanted_model = std::array<uint8_t, 32>{7};
  auto runner = grid_node::start(sys, net::identity::generate(), large);
  REQUIRE(runner.has_value());
  (*runner)->settle(std::chrono::seconds(8));
  for (int i = 0; i < 100 && (*runner)->providers().size() < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK((*runner)->providers().size() >= 5);
  (*runner)->stop();
}
