#include "chain/voucher.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

TEST_CASE("EIP-712 voucher hashes and signatures match eth-account", "[chain]") {
  for (const auto& v : testing::vectors()["vouchers"]) {
    bytes raw = testing::hex(v["secret"]);
    secret_key k = secret_key::from_bytes(raw.data(), raw.size(), "key").value();
    address contract = parse_address(v["contract"].get<std::string>(), "c").value();
    voucher vo{testing::num(v["channel"]), testing::num(v["chain_id"]), testing::num(v["amount"]), testing::num(v["nonce"])};
    CHECK(to_hex(eip712_domain_separator(vo.chain_id, contract), false) == v["domain_separator"].get<std::string>());
    CHECK(to_hex(voucher_struct_hash(vo), false) == v["struct_hash"].get<std::string>());
    CHECK(to_hex(voucher_digest(vo, contract), false) == v["digest"].get<std::string>());
    signed_voucher sv = sign_voucher(k, vo, contract);
    CHECK(to_hex(sv.sig.r, false) == v["r"].get<std::string>());
    CHECK(to_hex(sv.sig.s, false) == v["s"].get<std::string>());
    CHECK(27 + sv.sig.v == v["v"].get<int>());
    CHECK(voucher_signer(sv).value() == k.addr());
  }
}

TEST_CASE("a voucher moved to another channel, chain or contract has another signer", "[chain]") {
  secret_key k = secret_key::generate();
  address contract;
  contract.b[19] = 1;
  signed_voucher sv = sign_voucher(k, {7, 1, 1000, 1}, contract);
  auto signer_of = [](signed_voucher x) {
    auto s = voucher_signer(x);
    return s ? *s : address{};
  };
  signed_voucher moved = sv;
  moved.v.channel = 8;
  CHECK(signer_of(moved) != k.addr());
  moved = sv;
  moved.v.chain_id = 137;
  CHECK(signer_of(moved) != k.addr());
  moved = sv;
  moved.contract.b[0] = 9;
  CHECK(signer_of(moved) != k.addr());
  moved = sv;
  moved.v.amount += 1;
  CHECK(signer_of(moved) != k.addr());
  CHECK(signer_of(sv) == k.addr());
}

TEST_CASE("voucher JSON round trip and refusals", "[chain]") {
  secret_key k = secret_key::generate();
  address contract;
  contract.b[0] = 0xab;
  signed_voucher sv = sign_voucher(k, {3, 131277322940537ULL, u256("1000000000000000000000"), 9}, contract);
  std::string text = voucher_to_json(sv);
  auto back = parse_voucher_json(text, "voucher");
  REQUIRE(back);
  CHECK(voucher_signer(*back).value() == k.addr());
  CHECK(back->v.amount == sv.v.amount);
  CHECK(!parse_voucher_json("{", "voucher"));
  CHECK(!parse_voucher_json("[]", "voucher"));
  auto missing = parse_voucher_json(R"({"channel":"1"})", "voucher");
  CHECK(missing.error().message().find("chain_id") != std::string::npos);
  std::string bad_v = text;
  bad_v.replace(bad_v.find("\"v\":") + 4, 2, "30");
  CHECK(!parse_voucher_json(bad_v, "voucher"));
}
