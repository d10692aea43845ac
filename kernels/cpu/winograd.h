// Winograd F(2x2, 3x3) for float 3x3 convolutions with stride 1 and dilation 1.
//
// Each 2x2 block of outputs comes from a 4x4 block of input through 16 products instead of 36:
// the input blocks are transformed (V = B^T d B), multiplied by the transformed weights
// (U = G g G^T, computed and packed once) as 16 matrix products [M x C] x [C x tiles] on
// sgemm, and transformed back (Y = A^T m A) with bias and activation. For the 3x3 layers of a
// ResNet that is 2.25x fewer multiply-adds than im2col + GEMM. (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2015.)
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/nn_internal.h"
#include "kernels/cpu/sgemm.h"

namespace gpugrid {
class thread_pool;
}

namespace gpugrid::cpu::winograd {

// True when a 2-D convolution of C input and M output channels with geometry g can take this
// path (3x3, stride 1, dilation 1, one group, and enough channels for the products to pay).
bool applies(const nn::window_geom& g, int64_t group, int64_t C, int64_t M);

// The 16 transformed weight matrices U_xi [M x C], packed for sgemm.
struct weights {
  int64_t M = 0, C = 0;
  std::vector<std::shared_ptr<const sgemm::packed>> u;
};

// Transforms and packs w [M, C, 3, 3]; null when memory runs out.
std::unique_ptr<weights> transform_weights(const float* w, int64_t M, int64_t C);

// y[M, OH, OW] = act(conv(x[C, H, W]) + bias) for one image. False when scratch memory runs out.
bool run(thread_pool* pool, const weights& U, const float* x, const nn::window_geom& g, const float* bias,
         const activation_spec& act, float* y);

}  // namespace gpugrid::cpu::winograd
