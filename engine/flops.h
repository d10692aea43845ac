// Estimated floating-point operations of one run of a model, for `inspect` and for bidding.
#pragma once

#include <memory>

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid {

// Counts a multiply-add as 2. Runs the model once on the CPU with random inputs (symbolic
// dims = 1) to learn the shapes; MatMul/Gemm/Conv/ConvTranspose count their products, every
// other op one operation per output element.
expected<int64_t> estimate_flops(std::shared_ptr<const graph> g);

// The operations of one node run with these inputs and outputs (as estimate_flops counts them),
// for metering a run as it goes (session::node_observer).
int64_t node_flops(const node& n, const std::vector<const tensor*>& in, const std::vector<const tensor*>& out);

}  // namespace gpugrid
