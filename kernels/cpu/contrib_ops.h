// Registration of the recurrent nets and of onnxruntime's com.microsoft operators on the CPU
// backend (called from cpu_ops.cc's registry(), like the families in cpu_ops.h).
#pragma once

#include "engine/kernel.h"

namespace gpugrid::cpu {

void register_rnn_ops(op_registry& r);                // rnn.cc: LSTM, GRU, RNN
void register_contrib_norm_ops(op_registry& r);       // contrib_norm.cc: (Skip)(Simplified)LayerNormalization, Gelu family
void register_contrib_matmul_ops(op_registry& r);     // contrib_matmul.cc: MatMulNBits, GatherBlockQuantized, FusedMatMul, quantized products
void register_contrib_attention_ops(op_registry& r);  // contrib_attention.cc: Attention, MultiHeadAttention, GroupQueryAttention, RotaryEmbedding

}  // namespace gpugrid::cpu
