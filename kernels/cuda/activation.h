// Activations the fused CUDA kernels apply (mirrors the CPU's com.gpugrid Fused* attributes).
#pragma once

#include <cstdint>

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid::cuda {

enum class act_kind : int { none = 0, relu, leaky_relu, sigmoid, tanh, clip, hard_sigmoid, hard_swish, silu, gelu };

struct act_spec {
  act_kind kind = act_kind::none;
  float alpha = 0, beta = 0;
};

// Reads the `activation`, `activation_alpha`, `activation_beta` attributes of a fused node.
expected<act_spec> parse_act(const node& n);

}  // namespace gpugrid::cuda
