// Launchers implemented in .cu files, callable from host-only .cc files (no CUDA syntax here).
// Each takes the stream it runs on and reports launch errors as a status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/activation.h"

namespace gpugrid::cuda {

// y[r, c] = act(y[r, c] + bias[c]) (bias may be null).
status launch_bias_act(float* y, const float* bias, int64_t rows, int64_t cols, act_spec act, cudaStream_t s);
// y[i] = beta * c[broadcast(i)] for a [rows, cols] output and c of shape [crows, ccols] with crows in {1, rows}, ccols in {1, cols}.
status launch_broadcast_scaled(float* y, const float* c, int64_t rows, int64_t cols, int64_t crows, int64_t ccols, float beta, cudaStream_t s);

}  // namespace gpugrid::cuda
