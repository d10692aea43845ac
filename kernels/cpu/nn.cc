// The CPU backend's neural-network ops; each family lives in its own file.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/nn_internal.h"

namespace gpugrid::cpu {

void register_nn_ops(op_registry& r) {
  register_gemm_ops(r);
  register_conv_ops(r);
  register_pool_ops(r);
  register_resize_ops(r);
  register_grid_sample_ops(r);
  register_roi_align_ops(r);
}

}  // namespace gpugrid::cpu
