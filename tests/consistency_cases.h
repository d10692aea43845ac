// The op cases the backend-consistency test runs on every backend (see consistency_cases.cc).
#pragma once

#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/tensor_compare.h"

namespace gpugrid {

struct consistency_case {
  std::string label;
  node n;                            // op_type, domain, opset, attributes
  std::vector<tensor> inputs;        // undefined tensor = omitted optional input
  std::vector<int> constant_inputs;  // indices passed as initializers (shape arguments, weights)
  int num_outputs = 1;
  tolerance tol{1e-4, 1e-5};
};

std::vector<consistency_case> consistency_cases();

}  // namespace gpugrid
