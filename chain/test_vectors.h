// Test-only: the known answers of chain/testdata/vectors.json (written by
// tests/tools/chain_vectors.py from the reference Python implementations).
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "chain/bytes.h"

#ifndef GPUGRID_SOURCE_DIR
#define GPUGRID_SOURCE_DIR "."
#endif

namespace gpugrid::chain::testing {

inline const nlohmann::json& vectors() {
  static const nlohmann::json j = [] {
    std::ifstream f(std::string(GPUGRID_SOURCE_DIR) + "/chain/testdata/vectors.json");
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::json::parse(ss.str());
  }();
  return j;
}

inline bytes hex(const std::string& s) { return from_hex(s, "test vector").value(); }
inline u256 num(const std::string& s) { return parse_uint(s, "test vector").value(); }

}  // namespace gpugrid::chain::testing
