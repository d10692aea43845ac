// Conversion from ONNX TensorProto (protobuf) to tensors. Only files that already include
// the protobuf-generated headers include this one.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

#include "base/status.h"
#include "engine/tensor.h"

namespace gpugrid {

expected<tensor> tensor_from_proto(const onnx::TensorProto& proto, const std::string& what);

}  // namespace gpugrid
