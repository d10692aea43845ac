// Reading and writing tensors in files: .npy, ONNX TensorProto (.pb) and raw bytes.
#pragma once

#include <string>

#include "base/status.h"
#include "engine/tensor.h"

namespace gpugrid {

expected<tensor> read_npy(const std::string& bytes, const std::string& what);
std::string write_npy(const tensor& t);
expected<tensor> read_tensor_proto(const std::string& bytes, const std::string& what, std::string* name_out);
std::string write_tensor_proto(const tensor& t, const std::string& name);
expected<tensor> read_raw(const std::string& bytes, dtype type, const shape_t& shape, const std::string& what);
expected<tensor> read_tensor_file(const std::string& path_or_dash, dtype expected_type,
                                  const shape_t* static_shape, std::string* name_out);
status write_tensor_file(const std::string& path_or_dash, const tensor& t, const std::string& name);

}  // namespace gpugrid
