// Operator fusion: BatchNormalization folded into Conv; bias and activation into Conv, Gemm
// and MatMul (com.gpugrid Fused* ops); x*sigmoid(x) into Silu; unfused GELU and LayerNorm
// patterns into their single ops. Each rewrite keeps the graph's results within float
// rounding of the original.
#pragma once

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid {

status fuse_operators(graph& g);

}  // namespace gpugrid
