// The CPU backend's ops, registered family by family (one function per source file).
// The CPU backend is the reference implementation every other backend is tested against.
#pragma once

#include "engine/kernel.h"

namespace gpugrid::cpu {

void register_elementwise_ops(op_registry& r);   // elementwise.cc: unary, binary, Where, Clip, Cast
void register_reduce_ops(op_registry& r);        // reduce.cc: Reduce*, ArgMax/Min, Softmax, CumSum, TopK
void register_norm_ops(op_registry& r);          // normalization.cc: BatchNorm, LayerNorm, InstanceNorm, ...
void register_nn_ops(op_registry& r);            // gemm.cc, conv.cc, pool.cc, resize.cc, grid_sample.cc, roi_align.cc
void register_tensor_ops(op_registry& r);        // tensor_ops.cc: Reshape, Transpose, Concat, Gather, ...
void register_control_flow_ops(op_registry& r);  // control_flow.cc: If, Loop, Scan
void register_sequence_ops(op_registry& r);      // sequence.cc: Sequence*, SplitToSequence, ConcatFromSequence
void register_loss_ops(op_registry& r);          // loss.cc: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
void register_shrink_det_ops(op_registry& r);    // shrink_det.cc: Shrink, Det
void register_signal_ops(op_registry& r);        // signal.cc: Hann/Hamming/BlackmanWindow, DFT, STFT, MelWeightMatrix
void register_nms_ops(op_registry& r);           // nms.cc: NonMaxSuppression
void register_optional_ops(op_registry& r);      // optional.cc: Optional, OptionalHasElement, OptionalGetElement
void register_training_ops(op_registry& r);      // training.cc: Adagrad, Momentum, Adam (ai.onnx.preview.training)
void register_text_ops(op_registry& r);          // text.cc: TfIdfVectorizer

// All of the above: the CPU backend's registry, built once, read-only afterwards.
const op_registry& registry();

}  // namespace gpugrid::cpu
