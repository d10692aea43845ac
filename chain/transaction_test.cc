#include "chain/transaction.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

TEST_CASE("EIP-1559 transactions match eth-account byte for byte", "[chain]") {
  for (const auto& v : testing::vectors()["transactions"]) {
    bytes raw = testing::hex(v["secret"]);
    secret_key k = secret_key::from_bytes(raw.data(), raw.size(), "key").value();
    eip1559_transaction tx;
    tx.chain_id = testing::num(v["chain_id"]);
    tx.nonce = testing::num(v["nonce"]);
    tx.max_priority_fee_per_gas = testing::num(v["max_priority_fee_per_gas"]);
    tx.max_fee_per_gas = testing::num(v["max_fee_per_gas"]);
    tx.gas_limit = testing::num(v["gas_limit"]);
    if (!v["to"].get<std::string>().empty()) tx.to = parse_address(v["to"].get<std::string>(), "to").value();
    tx.value = testing::num(v["value"]);
    tx.data = testing::hex(v["data"]);
    signed_transaction s = sign_transaction(tx, k);
    CHECK(to_hex(s.raw, false) == v["raw"].get<std::string>());
    CHECK(to_hex(s.hash, false) == v["hash"].get<std::string>());
  }
}
