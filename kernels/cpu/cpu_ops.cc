#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/contrib_ops.h"

namespace gpugrid::cpu {

const op_registry& registry() {
  static const op_registry r = [] {
    op_registry reg;
    register_elementwise_ops(reg);
    register_reduce_ops(reg);
    register_norm_ops(reg);
    register_nn_ops(reg);
    register_tensor_ops(reg);
    register_rnn_ops(reg);
    register_contrib_norm_ops(reg);
    register_contrib_matmul_ops(reg);
    register_contrib_attention_ops(reg);
    register_control_flow_ops(reg);
    register_sequence_ops(reg);
    register_loss_ops(reg);
    register_shrink_det_ops(reg);
    register_signal_ops(reg);
    register_nms_ops(reg);
    register_optional_ops(reg);
    register_training_ops(reg);
    register_text_ops(reg);
    return reg;
  }();
  return r;
}

}  // namespace gpugrid::cpu

namespace gpugrid {

const op_registry& cpu_op_registry() { return cpu::registry(); }

}  // namespace gpugrid
