#include "actors/verification.h"

#include <algorithm>

#include "engine/tensor_compare.h"

namespace gpugrid::grid {

bool results_agree(const std::vector<tensor>& a, const std::vector<tensor>& b, std::string* why) {
  if (a.size() != b.size()) {
    if (why) *why = "different numbers of outputs";
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    std::string w;
    if (!tensors_close(a[i], b[i], default_tolerance(b[i].type()), &w)) {
      if (why) *why = "output " + std::to_string(i) + ": " + w;
      return false;
    }
  }
  return true;
}

verdict decide(const std::vector<std::vector<tensor>>& results) {
  verdict v;
  const size_t n = results.size();
  for (size_t i = 0; i < n; ++i) {
    std::vector<size_t> group;
    for (size_t j = 0; j < n; ++j)
      if (i == j || results_agree(results[i], results[j], nullptr)) group.push_back(j);
    if (group.size() * 2 > n) {
      v.decided = true;
      v.winner = i;
      v.agreeing = group;
      for (size_t j = 0; j < n; ++j)
        if (std::find(group.begin(), group.end(), j) == group.end()) v.dissenting.push_back(j);
      return v;
    }
  }
  return v;
}

}  // namespace gpugrid::grid
