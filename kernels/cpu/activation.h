// Activations the fused com.gpugrid ops (FusedConv, FusedGemm, FusedMatMul) apply to their
// output in the same pass that adds the bias, while the data is hot in cache.
//
// The node attributes are `activation` (string: Relu, LeakyRelu, Sigmoid, Tanh, Clip,
// HardSigmoid, HardSwish, Silu, Gelu; absent or empty = none), `activation_alpha` and
// `activation_beta` (LeakyRelu alpha, default 0.01; Clip min/max, default -/+FLT_MAX;
// HardSigmoid alpha/beta, default 0.2/0.5). The CUDA backend mirrors this (kernels/cuda).
//
// The vector paths (AVX2+FMA) use rational/polynomial approximations of exp, tanh and erf
// accurate to a few float ulps (absolute error below 1e-6 over the whole float range).
#pragma once

#include <cstdint>

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid::cpu {

enum class activation_kind : int {
  none = 0, relu, leaky_relu, sigmoid, tanh, clip, hard_sigmoid, hard_swish, silu, gelu
};

struct activation_spec {
  activation_kind kind = activation_kind::none;
  float alpha = 0.f;
  float beta = 0.f;
  bool is_none() const { return kind == activation_kind::none; }
};

// Reads the fused node's activation attributes; fails on an unknown activation name or
// a Clip whose min exceeds its max.
expected<activation_spec> parse_activation(const node& n);

// data[i] = act(data[i]) for i in [0, n).
void apply_activation(const activation_spec& a, float* data, int64_t n);
// y[i] = act(x[i]) for i in [0, n); x may be y (the standalone activation ops).
void apply_activation(const activation_spec& a, const float* x, float* y, int64_t n);
// data[i] = act(data[i] + bias): one channel of a convolution.
void apply_activation(const activation_spec& a, float* data, int64_t n, float bias);
// data[i] = act(data[i] + bias[i]): one row of a matrix with a per-column bias (may be null).
void apply_activation(const activation_spec& a, float* data, int64_t n, const float* bias);

// The clamp [lo, hi] that an activation is when it is none, ReLU or Clip (vector kernels
// apply it in registers as they store: min(hi, max(lo, x)), NaN stays NaN); false, with lo
// and hi unbounded, for any other activation.
bool clamp_of(const activation_spec& act, float* lo, float* hi);

// The scalar definition of each activation (tests, and odd tails use the vector path too).
float activation_reference(const activation_spec& a, float x);

}  // namespace gpugrid::cpu
