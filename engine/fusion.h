// Operator fusion: BatchNormalization folded into Conv; bias and activation into Conv, Gemm
// and MatMul (com.gpugrid Fused* ops); x*sigmoid(x) into Silu; unfused GELU (erf, and tanh
// as Gelu approximate="tanh") and LayerNorm (over the last axis) patterns into their single
// ops; with `residual`, an Add after a Conv (and the activation after it) into the FusedConv as
// its fourth input Z (the CPU kernel takes Z; the CUDA one does not, so sessions on a device
// leave the Add alone). A pattern is rewritten only when its intermediates have no other reader and its
// constants have the expected values; each rewrite keeps the graph's results within float
// rounding of the original.
#pragma once

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid {

status fuse_operators(graph& g, bool residual);

}  // namespace gpugrid
