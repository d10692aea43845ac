// Deciding whether redundant results agree, and which one wins.
#pragma once

#include <string>
#include <vector>

#include "engine/tensor.h"

namespace gpugrid::grid {

// True when every output of a and b is close within the dtype's default tolerance
// (engine/tensor_compare.h); *why says where they differ.
bool results_agree(const std::vector<tensor>& a, const std::vector<tensor>& b, std::string* why);

struct verdict {
  bool decided = false;          // a strict majority agrees
  size_t winner = 0;             // index of a result in the majority
  std::vector<size_t> agreeing;  // indices that agree with the winner
  std::vector<size_t> dissenting;
};

// Groups results by agreement; a group larger than half of them wins.
verdict decide(const std::vector<std::vector<tensor>>& results);

}  // namespace gpugrid::grid
