// Ledger entries that carry the voucher that paid their job, mixed with entries written before
// vouchers existed.
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

struct keys {
  key32 pk{};
  std::array<uint8_t, 64> sk{};
  keys() { REQUIRE(sodium_init() >= 0); crypto_sign_keypair(pk.data(), sk.data()); }
};

receipt signed_receipt(const keys& client, const keys& provider, int64_t price, uint8_t job) {
  receipt r;
  r.job_id[0] = job;
  r.client_key = client.pk;
  r.provider_key = provider.pk;
  r.price_micros = price;
  sign_as_provider(r, provider.sk);
  sign_as_client(r, client.sk);
  return r;
}

voucher_claim claim_paying(unsigned __int128 amount, unsigned __int128 price, uint8_t nonce) {
  voucher_claim c;
  c.chain_id = word_of(31337);
  c.contract[19] = 0x42;
  c.channel = word_of(7);
  c.amount = word_of(amount);
  c.nonce = word_of(nonce);
  c.r[0] = 1;
  c.s[0] = 2;
  c.v = 1;
  c.price = word_of(price);
  return c;
}

std::string fresh_dir(const char* name) {
  auto d = std::filesystem::temp_directory_path() / (std::string("gg-claims-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

TEST_CASE("ledger entries carry vouchers and old entries still verify", "[ledger][voucher]") {
  std::string dir = fresh_dir("mixed");
  keys client, provider;
  const unsigned __int128 wei = static_cast<unsigned __int128>(1000000000000000ull);  // 0.001
  {
    auto l = ledger_file::open(dir).value();
    REQUIRE(l->append(signed_receipt(client, provider, 5, 1)));   // an entry as before vouchers
    for (uint8_t j = 2; j <= 4; ++j) {
      voucher_claim c = claim_paying(wei * (j - 1), wei, j);
      REQUIRE(l->append_verified(signed_receipt(client, provider, 1000, j), &c));
    }
    REQUIRE(l->append(signed_receipt(client, provider, 7, 5)));
    CHECK(l->current_head().count == 5);
  }
  auto l = ledger_file::open(dir).value();  // reopened: the index and head continue
  CHECK(l->current_head().count == 5);
  CHECK(l->contains(signed_receipt(client, provider, 1000, 3).job_id, provider.pk));
  bool torn = true;
  auto entries = read_entries(l->path(), &torn).value();
  CHECK_FALSE(torn);
  REQUIRE(entries.size() == 5);
  CHECK_FALSE(entries[0].claim);
  REQUIRE(entries[2].claim);
  CHECK(*entries[2].claim == claim_paying(wei * 2, wei, 3));
  CHECK_FALSE(entries[4].claim);
  CHECK(verify_entries(entries).is_ok());
  auto rows = balances(entries);
  for (const auto& r : rows) {
    if (r.node == provider.pk) {
      CHECK((r.earned_wei == 3 * wei));
      CHECK(r.settled_jobs == 3);
      CHECK(r.earned_micros - r.settled_earned_micros == 12);  // the unsettled credits
    } else {
      CHECK((r.paid_wei == 3 * wei));
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("a voucher entry cut short by a crash is cut off and an altered one fails verify", "[ledger][voucher]") {
  std::string dir = fresh_dir("torn");
  keys client, provider;
  std::string path;
  {
    auto l = ledger_file::open(dir).value();
    voucher_claim c = claim_paying(10, 10, 1);
    REQUIRE(l->append_verified(signed_receipt(client, provider, 1, 1), &c));
    c = claim_paying(20, 10, 2);
    REQUIRE(l->append_verified(signed_receipt(client, provider, 1, 2), &c));
    path = l->path();
  }
  const auto full = std::filesystem::file_size(path);
  CHECK(full == 2 * record_bytes_with_claim());
  std::filesystem::resize_file(path, full - 100);  // the second record torn
  std::string note;
  {
    auto l = ledger_file::open(dir, &note).value();
    CHECK(l->current_head().count == 1);
    CHECK(note.find("torn") != std::string::npos);
    voucher_claim c = claim_paying(20, 10, 2);
    REQUIRE(l->append_verified(signed_receipt(client, provider, 1, 2), &c));
  }
  CHECK(std::filesystem::file_size(path) == 2 * record_bytes_with_claim());
  // Change the first entry's voucher amount: its hash no longer matches.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(4 + 8 + 8 + 32 + receipt_size + 32 + 20 + 32 + 31));
    f.put('\x55');
  }
  auto entries = read_entries(path, nullptr).value();
  auto st = verify_entries(entries);
  CHECK_FALSE(st.is_ok());
  CHECK(st.message().find("entry 0") != std::string::npos);
  std::filesystem::remove_all(dir);
}
