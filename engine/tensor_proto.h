// Conversion from ONNX TensorProto (protobuf) to tensors. Only files that already include
// the protobuf-generated headers include this one (tensor_io.h stays free of protobuf).
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

#include "base/status.h"
#include "engine/tensor.h"

namespace gpugrid {

// Converts one TensorProto (a model initializer, a Constant's value, a test data file).
// Data comes from raw_data or the typed field ONNX assigns to the data type (see
// read_tensor_proto in tensor_io.h); the element count must match the dims exactly and the
// tensor may not exceed max_tensor_file_bytes (16 GiB). External data (data_location
// EXTERNAL) is refused: the model loader reads it into raw_data first. Errors are
// invalid_input starting with `what`; unsupported data types (string, complex, float8, ...)
// say "not supported"/"unsupported" so that callers can tell them from malformed files.
expected<tensor> tensor_from_proto(const onnx::TensorProto& proto, const std::string& what);

}  // namespace gpugrid
