#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "actors/auction.h"
#include "actors/model_cache.h"
#include "actors/reputation.h"
#include "actors/verification.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {
std::string temp_dir(const char* name) {
  auto d = std::filesystem::temp_directory_path() / (std::string("gg-grid-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}
}  // namespace

TEST_CASE("bids above the price limit or from distrusted providers are never chosen", "[grid]") {
  std::vector<bid_offer> bids = {
      {"cheap-slow", "", 1.0, 900, false, 0.9, false, ""},
      {"pricey-fast", "", 5.0, 10, false, 0.9, false, ""},
      {"liar", "", 0.1, 5, true, 0.05, false, ""},
      {"balanced", "", 1.2, 100, true, 0.8, false, ""},
  };
  choice_options o;
  o.max_price = 2.0;
  auto ranked = rank_bids(bids, o);
  REQUIRE(ranked.size() == 2);
  CHECK(ranked[0].provider == "balanced");
  CHECK(ranked[1].provider == "cheap-slow");
  o.max_price = 0.5;
  CHECK(rank_bids(bids, o).empty());
}

TEST_CASE("prices rise with load and ETAs with the queue", "[grid]") {
  price_policy p;
  CHECK(quote_price(p, 100, 0, 4) < quote_price(p, 100, 2, 4));
  CHECK(quote_price(p, 0, 0, 4) == Approx(p.minimum));
  CHECK(estimate_eta_ms(10, 100, 0) < estimate_eta_ms(10, 100, 3));
}

TEST_CASE("a strict majority of agreeing results wins", "[grid]") {
  auto t = [](float v) { return std::vector<tensor>{tensor::from_vector<float>({2}, {v, v})}; };
  auto d = decide({t(1.f), t(1.00001f), t(7.f)});
  CHECK(d.decided);
  CHECK(d.agreeing.size() == 2);
  REQUIRE(d.dissenting.size() == 1);
  CHECK(d.dissenting[0] == 2);
  CHECK_FALSE(decide({t(1.f), t(2.f)}).decided);
  std::string why;
  CHECK_FALSE(results_agree(t(1.f), t(1.5f), &why));
  CHECK_FALSE(why.empty());
}

TEST_CASE("reputation falls on disagreement, persists and gates bidding", "[grid]") {
  std::string dir = temp_dir("rep");
  std::filesystem::create_directories(dir);
  auto book = reputation_book::load(dir);
  REQUIRE(book.has_value());
  CHECK(book->trusted("honest"));
  book->record("honest", outcome::agreed);
  book->record("liar", outcome::disagreed);
  book->record("liar", outcome::disagreed);
  CHECK(book->score("honest") > reputation_book::initial);
  CHECK_FALSE(book->trusted("liar"));
  REQUIRE(book->save().is_ok());
  auto again = reputation_book::load(dir);
  REQUIRE(again.has_value());
  CHECK_FALSE(again->trusted("liar"));
  CHECK(again->entry("liar").disagreed == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("reputation saved from several threads at once stays whole", "[grid]") {
  std::string dir = temp_dir("rep-threads");
  std::filesystem::create_directories(dir);
  auto book = reputation_book::load(dir);
  REQUIRE(book.has_value());
  std::atomic<int> failed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        book->record("node" + std::to_string(t), outcome::agreed);
        if (!book->save().is_ok()) ++failed;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(failed == 0);
  auto again = reputation_book::load(dir);
  REQUIRE(again.has_value());
  for (int t = 0; t < 6; ++t) CHECK(again->entry("node" + std::to_string(t)).agreed == 40);
  std::filesystem::remove_all(dir);
}

TEST_CASE("the model cache checks hashes, evicts least recently used, survives reopening", "[grid]") {
  std::string dir = temp_dir("cache");
  std::string a(400, 'a'), b(400, 'b'), c(400, 'c');
  auto ha = ledger::blake2b_256(a), hb = ledger::blake2b_256(b), hc = ledger::blake2b_256(c);
  {
    auto cache = model_cache::open(dir, 1000);
    REQUIRE(cache.has_value());
    CHECK_FALSE((*cache)->put(ha, b).is_ok());  // bytes that lie about their hash
    REQUIRE((*cache)->put(ha, a).is_ok());
    REQUIRE((*cache)->put(hb, b).is_ok());
    REQUIRE((*cache)->path_of(ha).has_value());  // a is now the most recently used
    REQUIRE((*cache)->put(hc, c).is_ok());       // evicts b
    CHECK((*cache)->contains(ha));
    CHECK_FALSE((*cache)->contains(hb));
    CHECK((*cache)->contains(hc));
    CHECK((*cache)->size_bytes() == 800);
    CHECK((*cache)->recent(8) == std::vector<ledger::digest32>{ha, hc});  // most recently used last
    CHECK((*cache)->recent(1) == std::vector<ledger::digest32>{hc});
    CHECK_FALSE((*cache)->put(ledger::blake2b_256(std::string(2000, 'x')), std::string(2000, 'x')).is_ok());
  }
  auto reopened = model_cache::open(dir, 1000);
  REQUIRE(reopened.has_value());
  CHECK((*reopened)->count() == 2);
  CHECK((*reopened)->contains(ha));
  CHECK((*reopened)->recent(8).size() == 2);  // what a provider announces in the DHT on start
  std::filesystem::remove_all(dir);
}

TEST_CASE("a signed dispute costs far more than a job earns, and timeouts cool a provider down", "[grid]") {
  std::string dir = temp_dir("rep2");
  std::filesystem::create_directories(dir);
  auto book = reputation_book::load(dir);
  REQUIRE(book.has_value());
  for (int i = 0; i < 200; ++i) book->record("veteran", outcome::agreed);
  double high = book->score("veteran");
  CHECK(high > 0.9);
  book->record("veteran", outcome::disagreed);
  CHECK_FALSE(book->trusted("veteran"));          // one caught lie, from the best standing
  double before = book->score("fresh");
  book->record("fresh", outcome::agreed);
  CHECK(book->score("fresh") - before < 0.02);     // one job earns little
  CHECK(high * 0.9 > 40 * 0.02);                   // a dispute takes what dozens of jobs earn

  book->record("sleepy", outcome::timed_out, 1000000);
  CHECK(book->cooling("sleepy", 1000000 + 1000));
  CHECK_FALSE(book->cooling("sleepy", 1000000 + reputation_book::cooldown_ms + 1));
  REQUIRE(book->save().is_ok());
  auto again = reputation_book::load(dir);
  REQUIRE(again.has_value());
  CHECK(again->cooling("sleepy", 1000000 + 1000));
  CHECK(again->entry("sleepy").last_timeout_ms == 1000000);
  std::filesystem::remove_all(dir);
}

TEST_CASE("new providers are spot-checked often, established ones down to the floor", "[grid]") {
  reputation_book book;
  CHECK(book.spot_check_rate("new", 0.05) == 1.0);
  CHECK(book.spot_check_rate("new", 0.0) == 0.0);  // spot checks off
  CHECK(book.is_new("new"));
  for (int i = 0; i < 3; ++i) book.record("p", outcome::agreed);
  CHECK(book.spot_check_rate("p", 0.05) == Approx(0.5));
  for (int i = 0; i < 2; ++i) book.record("p", outcome::agreed);
  CHECK_FALSE(book.is_new("p"));
  for (int i = 0; i < 1000; ++i) book.record("p", outcome::agreed);
  CHECK(book.spot_check_rate("p", 0.05) == Approx(0.05));
}

TEST_CASE("a redundant set is not all new providers nor all from one network when others bid", "[grid]") {
  CHECK(network_of("ws://10.1.2.3:7447") == "10.1.2");
  CHECK(network_of("wss://[2001:db8:1:2::5]:7447/x") == "2001:db8:1");
  CHECK(network_of("ws://node.example:1") == "node.example");
  CHECK(network_of("") == "");
  auto offer = [](const char* id, const char* url, bool is_new) {
    bid_offer b;
    b.provider = id;
    b.url = url;
    b.network = network_of(url);
    b.is_new = is_new;
    return b;
  };
  // Sybils: three cheap new identities in one /24, then honest providers elsewhere.
  std::vector<bid_offer> ranked = {offer("s1", "ws://10.0.0.1:1", true), offer("s2", "ws://10.0.0.2:1", true),
                                   offer("s3", "ws://10.0.0.3:1", true), offer("h1", "ws://10.9.0.1:1", false),
                                   offer("h2", "ws://10.8.0.1:1", false)};
  auto set = diversify(ranked, 2);
  REQUIRE(set.size() == 5);
  CHECK(set[0].provider == "s1");
  CHECK(set[1].provider == "h1");  // an established provider from another network
  // All established but in one network: the best bid from elsewhere joins.
  std::vector<bid_offer> one_net = {offer("a", "ws://10.0.0.1:1", false), offer("b", "ws://10.0.0.2:1", false),
                                    offer("c", "ws://10.7.0.1:1", false)};
  auto s2 = diversify(one_net, 2);
  CHECK(s2[0].provider == "a");
  CHECK(s2[1].provider == "c");
  // Nothing else to choose from: the order stands.
  std::vector<bid_offer> alike = {offer("a", "ws://10.0.0.1:1", true), offer("b", "ws://10.0.0.2:1", true)};
  auto s3 = diversify(alike, 2);
  CHECK(s3[0].provider == "a");
  CHECK(s3[1].provider == "b");
  CHECK(diversify(ranked, 1)[0].provider == "s1");
}
