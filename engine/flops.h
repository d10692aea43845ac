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

}  // namespace gpugrid
