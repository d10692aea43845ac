#include "ledger/anchor_check.h"

#include <catch2/catch.hpp>

#include <sodium.h>
#include <unistd.h>

#include <filesystem>

using namespace gpugrid;
using namespace gpugrid::ledger;

namespace {

struct keypair {
  key32 pk{};
  std::array<uint8_t, 64> sk{};
  keypair() { REQUIRE(sodium_init() >= 0); crypto_sign_keypair(pk.data(), sk.data()); }
};

receipt make_receipt(const keypair& client, const keypair& provider, uint8_t job) {
  receipt r;
  r.job_id[0] = job;
  r.client_key = client.pk;
  r.provider_key = provider.pk;
  r.model_hash = blake2b_256("model");
  r.input_digest = blake2b_256("input" + std::to_string(job));
  r.output_digest = blake2b_256("output" + std::to_string(job));
  r.price_micros = 100 + job;
  r.started_ms = 1000 + job;
  r.finished_ms = 2000 + job;
  sign_as_provider(r, provider.sk);
  sign_as_client(r, client.sk);
  return r;
}

// A ledger file holding `receipts` in order (through the ledger's own append), read back.
std::vector<entry> ledger_of(const char* name, const std::vector<receipt>& receipts) {
  auto d = std::filesystem::temp_directory_path() / (std::string("gg-anchor-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  {
    auto l = ledger_file::open(d.string());
    REQUIRE(l);
    for (const auto& r : receipts) REQUIRE((*l)->append(r).has_value());
  }
  bool torn = false;
  auto es = read_entries((d / "ledger.log").string(), &torn);
  REQUIRE(es);
  std::filesystem::remove_all(d);
  return *es;
}

chain_anchor anchor_at(const std::vector<entry>& es, uint64_t seq, int block) {
  chain_anchor a;
  a.block = std::to_string(block);
  a.tx = "0x" + std::string(63, '0') + std::to_string(block % 10);
  a.sequence = seq;
  a.head = es.at(seq).hash;
  return a;
}

}  // namespace

TEST_CASE("anchors of an unchanged ledger all match", "[ledger][anchor]") {
  keypair client, provider;
  std::vector<receipt> rs;
  for (uint8_t j = 0; j < 5; ++j) rs.push_back(make_receipt(client, provider, j));
  auto es = ledger_of("same", rs);
  auto rep = check_anchors(es, {anchor_at(es, 1, 10), anchor_at(es, 3, 12), anchor_at(es, 4, 13), anchor_at(es, 4, 14)});
  CHECK(rep.ok());
  CHECK(rep.failure().empty());
  CHECK(rep.matched == 4);
  CHECK(rep.entries == 5);
  for (const auto& r : rep.results) CHECK(r.outcome == anchor_outcome::match);
  // No anchors at all: nothing to contradict.
  CHECK(check_anchors(es, {}).ok());
}

TEST_CASE("a ledger rewritten with a recomputed chain passes verify but not its anchors", "[ledger][anchor]") {
  keypair client, provider;
  std::vector<receipt> rs;
  for (uint8_t j = 0; j < 5; ++j) rs.push_back(make_receipt(client, provider, j));
  auto es = ledger_of("orig", rs);
  std::vector<chain_anchor> anchors = {anchor_at(es, 0, 20), anchor_at(es, 2, 21), anchor_at(es, 4, 22)};

  // Job 1 hidden: the rest appended again, so every link and signature checks.
  auto forged = ledger_of("forged", {rs[0], rs[2], rs[3], rs[4]});
  REQUIRE(verify_entries(forged).is_ok());
  auto rep = check_anchors(forged, anchors);
  REQUIRE(!rep.ok());
  CHECK(rep.results[0].outcome == anchor_outcome::match);      // entry 0 is untouched
  CHECK(rep.results[1].outcome == anchor_outcome::mismatch);
  CHECK(rep.results[2].outcome == anchor_outcome::beyond_end);  // the forged file is one shorter
  CHECK(rep.first_bad == 1);
  std::string msg = rep.failure();
  CHECK(msg.find("block 21") != std::string::npos);
  CHECK(msg.find(anchors[1].tx) != std::string::npos);
  CHECK(msg.find("entry 2") != std::string::npos);
  CHECK(msg.find("changed") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);

  // One receipt replaced by another (a different price), same length.
  auto replaced = rs;
  replaced[3] = make_receipt(client, provider, 3);
  replaced[3].price_micros = 1;
  sign_as_provider(replaced[3], provider.sk);
  sign_as_client(replaced[3], client.sk);
  auto swapped = ledger_of("swapped", replaced);
  REQUIRE(verify_entries(swapped).is_ok());
  auto rep2 = check_anchors(swapped, anchors);
  CHECK(rep2.results[0].outcome == anchor_outcome::match);
  CHECK(rep2.results[1].outcome == anchor_outcome::match);
  CHECK(rep2.results[2].outcome == anchor_outcome::mismatch);  // entry 4 links to the changed entry 3
  CHECK(rep2.failure().find("block 22") != std::string::npos);
}

TEST_CASE("anchors beyond a truncated ledger are a lost tail", "[ledger][anchor]") {
  keypair client, provider;
  std::vector<receipt> rs;
  for (uint8_t j = 0; j < 4; ++j) rs.push_back(make_receipt(client, provider, j));
  auto es = ledger_of("full", rs);
  std::vector<chain_anchor> anchors = {anchor_at(es, 1, 30), anchor_at(es, 3, 31)};
  std::vector<entry> cut(es.begin(), es.begin() + 2);
  auto rep = check_anchors(cut, anchors);
  REQUIRE(!rep.ok());
  CHECK(rep.matched == 1);
  CHECK(rep.beyond_end == 1);
  CHECK(rep.first_bad == 1);
  std::string msg = rep.failure();
  CHECK(msg.find("block 31") != std::string::npos);
  CHECK(msg.find("entry 3") != std::string::npos);
  CHECK(msg.find("ends at entry 1") != std::string::npos);

  auto empty = check_anchors({}, anchors);
  CHECK(empty.beyond_end == 2);
  CHECK(empty.first_bad == 0);
  CHECK(empty.failure().find("empty") != std::string::npos);

  chain_anchor silly = anchors[0];
  silly.sequence = std::numeric_limits<uint64_t>::max();
  auto rep3 = check_anchors(es, {silly});
  CHECK(rep3.results[0].outcome == anchor_outcome::beyond_end);
  CHECK(rep3.failure().find("impossible") != std::string::npos);
}

TEST_CASE("the checker hashes the entry bytes, not the hash the file stores", "[ledger][anchor]") {
  keypair client, provider;
  auto es = ledger_of("raw", {make_receipt(client, provider, 1), make_receipt(client, provider, 2)});
  std::vector<chain_anchor> anchors = {anchor_at(es, 1, 40)};
  auto edited = es;
  edited[1].raw[edited[1].raw.size() - 1] ^= 1;  // the stored hash (edited[1].hash) is left as it was
  auto rep = check_anchors(edited, anchors);
  CHECK(rep.results[0].outcome == anchor_outcome::mismatch);
  CHECK(rep.results[0].local == blake2b_256(edited[1].raw));
  CHECK(check_anchors(es, anchors).ok());
}
