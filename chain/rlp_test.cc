#include "chain/rlp.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

namespace {

bytes encode_item(const nlohmann::json& item) {
  if (item.contains("u")) return rlp::encode_uint(testing::num(item["u"]));
  if (item.contains("b")) return rlp::encode_bytes(testing::hex(item["b"]));
  std::vector<bytes> parts;
  for (const auto& x : item["l"]) parts.push_back(encode_item(x));
  return rlp::encode_list(parts);
}

}  // namespace

TEST_CASE("RLP matches the reference encoder", "[chain]") {
  for (const auto& v : testing::vectors()["rlp"]) {
    INFO(v["item"].dump());
    CHECK(to_hex(encode_item(v["item"]), false) == v["out"].get<std::string>());
  }
}
