#include <catch2/catch.hpp>

#include <sodium.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "ledger/ledger.h"

using namespace gpugrid;
using namespace gpugrid::ledger;

namespace {

struct keypair {
  key32 pk{};
  std::array<uint8_t, 64> sk{};
  keypair() { REQUIRE(sodium_init() >= 0); crypto_sign_keypair(pk.data(), sk.data()); }
};

receipt make_receipt(const keypair& client, const keypair& provider, int64_t price, uint8_t job) {
  receipt r;
  r.job_id[0] = job;
  r.client_key = client.pk;
  r.provider_key = provider.pk;
  r.model_hash = blake2b_256("model");
  r.input_digest = blake2b_256("input" + std::to_string(job));
  r.output_digest = blake2b_256("output" + std::to_string(job));
  r.price_micros = price;
  r.started_ms = 1000 + job;
  r.finished_ms = 2000 + job;
  sign_as_provider(r, provider.sk);
  sign_as_client(r, client.sk);
  return r;
}

std::string temp_dir(const char* name) {
  auto d = std::filesystem::temp_directory_path() / (std::string("gg-ledger-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

constexpr size_t record = 4 + 8 + 8 + 32 + receipt_size + 32;

}  // namespace

TEST_CASE("receipts round-trip and their signatures bind every field", "[ledger]") {
  keypair client, provider;
  receipt r = make_receipt(client, provider, 1500, 1);
  REQUIRE(verify_receipt(r).is_ok());
  auto back = receipt::parse(r.canonical_bytes(), "test");
  REQUIRE(back.has_value());
  CHECK(back->canonical_bytes() == r.canonical_bytes());
  receipt tampered = r;
  tampered.price_micros += 1;
  CHECK_FALSE(verify_receipt(tampered).is_ok());
  CHECK_FALSE(receipt::parse(r.canonical_bytes().substr(1), "test").has_value());
}

TEST_CASE("the ledger appends, verifies and balances", "[ledger]") {
  keypair client, p1, p2;
  std::string dir = temp_dir("append");
  auto l = ledger_file::open(dir);
  REQUIRE(l.has_value());
  REQUIRE((*l)->append(make_receipt(client, p1, 100, 1)).has_value());
  REQUIRE((*l)->append(make_receipt(client, p2, 250, 2)).has_value());
  auto h = (*l)->append(make_receipt(client, p1, 50, 3));
  REQUIRE(h.has_value());
  CHECK(h->count == 3);
  receipt bad = make_receipt(client, p1, 10, 4);
  bad.client_sig[0] ^= 1;
  CHECK_FALSE((*l)->append(bad).has_value());  // unsigned receipts are refused

  bool torn = false;
  auto entries = read_entries((*l)->path(), &torn);
  REQUIRE(entries.has_value());
  CHECK_FALSE(torn);
  REQUIRE(entries->size() == 3);
  CHECK(verify_entries(*entries).is_ok());
  int64_t earned = 0, paid = 0;
  for (const auto& row : balances(*entries)) {
    earned += row.earned_micros;
    paid += row.paid_micros;
    if (row.node == p1.pk) CHECK(row.earned_micros == 150);
    if (row.node == p2.pk) CHECK(row.earned_micros == 250);
    if (row.node == client.pk) CHECK(row.paid_micros == 400);
  }
  CHECK(earned == paid);

  // Reopening sees the same chain head.
  auto again = ledger_file::open(dir);
  REQUIRE(again.has_value());
  CHECK((*again)->current_head().hash == h->hash);
  std::filesystem::remove_all(dir);
}

TEST_CASE("tampering is caught and the first bad entry named", "[ledger]") {
  keypair client, provider;
  std::string dir = temp_dir("tamper");
  {
    auto l = ledger_file::open(dir);
    REQUIRE(l.has_value());
    for (uint8_t j = 0; j < 4; ++j) REQUIRE((*l)->append(make_receipt(client, provider, 10 + j, j)).has_value());
  }
  std::string path = dir + "/ledger.log";
  const std::string good = slurp(path);
  REQUIRE(good.size() == 4 * record);

  SECTION("a flipped byte") {
    std::string bad = good;
    bad[2 * record + 100] ^= 0x20;
    spit(path, bad);
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    status st = verify_entries(*e);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 2:", 0) == 0);
  }
  SECTION("a deleted entry") {
    std::string bad = good.substr(0, record) + good.substr(2 * record);
    spit(path, bad);
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    status st = verify_entries(*e);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 1:", 0) == 0);
  }
  SECTION("two entries swapped") {
    std::string bad = good.substr(0, record) + good.substr(2 * record, record) + good.substr(record, record) + good.substr(3 * record);
    spit(path, bad);
    auto e = read_entries(path, nullptr);
    REQUIRE(e.has_value());
    status st = verify_entries(*e);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.message().rfind("entry 1:", 0) == 0);
  }
  SECTION("a torn last write is cut off on open, nothing earlier lost") {
    spit(path, good.substr(0, 3 * record + record / 2));
    std::string note;
    auto l = ledger_file::open(dir, &note);
    REQUIRE(l.has_value());
    CHECK_FALSE(note.empty());
    CHECK((*l)->current_head().count == 3);
    CHECK(verify_entries((*l)->entries()).is_ok());
    CHECK(slurp(path).size() == 3 * record);
    REQUIRE((*l)->append(make_receipt(client, provider, 99, 9)).has_value());
    CHECK(verify_entries(*read_entries(path, nullptr)).is_ok());
  }
  std::filesystem::remove_all(dir);
}
