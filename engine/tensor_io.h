// Reading and writing tensors in files: .npy (NumPy), ONNX TensorProto (.pb) and raw bytes.
//
// These functions parse untrusted files. Every size is checked against the bytes actually
// present before anything is allocated, so a file can never make the reader allocate more
// than about its own size; nothing here crashes or throws on bad input. Failures are
// invalid_input (exit 2) whose message starts with `what` (usually the file path), e.g.
//   input.npy: header says shape (1, 784) float32 = 3136 bytes but the file holds 100
// Writing failures (disk full, permissions) are io errors naming the path.
//
// The TensorProto conversion itself (for model initializers) is in engine/tensor_proto.h, kept
// apart so that this header does not pull in protobuf.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "engine/tensor.h"

namespace gpugrid {

// No single tensor read from a file may hold more than this many bytes.
constexpr int64_t max_tensor_file_bytes = int64_t{1} << 34;  // 16 GiB

// NumPy .npy, format versions 1.0, 2.0 and 3.0. dtypes: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1,
// little ('<'), big ('>', swapped on read), native ('=') or not applicable ('|') byte order.
// fortran_order True is transposed to C order. The header dict is parsed strictly (the exact
// Python literal numpy writes: descr, fortran_order and shape, each once) and the shape must
// account for every byte after the header. Object, string and structured dtypes are refused.
expected<tensor> read_npy(const std::string& bytes, const std::string& what);
// Version 1.0 (2.0 only when the header needs it), little-endian, C order, header padded so
// the data starts at a multiple of 64 bytes, exactly as numpy.save writes it. bfloat16, which
// numpy lacks, is written as float32 (exact). Callers pass a CPU tensor of a numeric type.
std::string write_npy(const tensor& t);

// ONNX TensorProto: raw_data or the typed field ONNX assigns to the dtype (float_data;
// int32_data for int8/16/32, uint8/16, bool and the bits of float16/bfloat16; int64_data;
// double_data; uint64_data for uint32/64). External or segmented data is refused here (the
// model loader resolves external data itself). name_out, when given, receives the tensor's
// name (even when the tensor is then refused).
expected<tensor> read_tensor_proto(const std::string& bytes, const std::string& what,
                                   std::string* name_out);
// ONNX SequenceProto of tensors -> a sequence tensor (tensor::sequence), and OptionalProto of a
// tensor or of such a sequence -> that value, or tensor::none() when it holds nothing; the
// formats onnx's backend test data uses for sequence and optional values. The bytes alone do
// not say which of the three messages they are (they parse as each other): the caller picks by
// the declared type. Nested sequences, maps and sparse tensors are refused as unsupported.
expected<tensor> read_sequence_proto(const std::string& bytes, const std::string& what, std::string* name_out);
expected<tensor> read_optional_proto(const std::string& bytes, const std::string& what, std::string* name_out);
// A TensorProto holding the tensor's bytes as raw_data (little-endian, as ONNX specifies).
std::string write_tensor_proto(const tensor& t, const std::string& name);

// Raw little-endian bytes of `type` and `shape`: the byte count must match exactly.
// Writing raw is just the tensor's bytes (t.raw(), t.bytes()).
expected<tensor> read_raw(const std::string& bytes, dtype type, const shape_t& shape,
                          const std::string& what);

// Reads a file, or stdin for "-". The format comes from the extension: .npy, .pb, anything
// else raw bytes, which need expected_type and static_shape (an error says so when the model
// does not declare them). A .npy is also recognised by its magic whatever the name (stdin, a
// pipe, sample.dat); anything else is raw.
// expected_type dtype::undefined accepts any dtype; otherwise a different one is an error.
// The shape of a .npy or .pb is not compared with static_shape (the caller checks shapes,
// which may have symbolic dims). name_out gets the TensorProto's name (empty for other formats).
expected<tensor> read_tensor_file(const std::string& path_or_dash, dtype expected_type,
                                  const shape_t* static_shape, std::string* name_out);
// Writes by extension: .npy, .pb (name is the TensorProto's name), anything else raw bytes;
// "-" writes raw bytes to stdout. A file is written to a temporary file in the same folder and
// renamed over the target, so no reader ever sees half an output. With `fresh`, the target is
// a new file in a folder no reader sees yet (the batch runner's temporary job folder, renamed
// into place whole): it is created exclusively and written directly, with no second temporary
// file and rename.
status write_tensor_file(const std::string& path_or_dash, const tensor& t, const std::string& name,
                         bool fresh = false);

}  // namespace gpugrid
