// The Open Inference Protocol v2 (KServe / Triton HTTP) tensor encoding: inference requests
// in JSON, with or without the binary tensor data extension, and the responses.
//
// Requests are untrusted: every failure is an invalid_input status whose message names the
// input or field at fault (the server answers it as 400 {"error": "..."}). Nothing is
// allocated beyond what the body itself accounts for: a JSON tensor holds as many elements as
// the body has numbers, a binary tensor's size must match the bytes present, and nesting of
// JSON deeper than max_json_depth is refused before parsing. While parsed, a JSON body is held
// as a document of about 16 bytes per value, so memory is bounded by about eight times the
// body limit for a body of one-digit numbers (binary tensors cost their own size). Pure
// functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/tensor.h"
#include "serve/http_common.h"  // json_depth

namespace gpugrid::serve {

constexpr int max_json_depth = 64;

// "FP32", "INT64", "BOOL", ... for an engine dtype; "" when v2 has no name for it.
std::string_view v2_datatype(dtype t);
// The engine dtype of a v2 datatype name; false for unknown names and BYTES (not supported).
bool dtype_from_v2(std::string_view name, dtype* out);

struct requested_output {
  std::string name;
  bool binary = false;
};

struct infer_request {
  std::string id;                                   // echoed back when set
  std::vector<std::string> input_names;             // in request order
  std::vector<tensor> inputs;                       // same order as input_names
  std::vector<requested_output> outputs;            // empty: every output of the model
  bool binary_output_default = false;               // parameters.binary_data_output
};

// `body` is the whole HTTP body; `header_length` the Inference-Header-Content-Length value
// (the JSON part's size when the binary extension is used), or -1 when the header is absent.
expected<infer_request> parse_infer_request(const std::string& body, int64_t header_length);

struct encoded_response {
  std::string body;
  int64_t header_length = -1;   // >= 0: set Inference-Header-Content-Length (binary outputs follow)
};

// The response for `outputs` (named `names`, in the model's order) filtered and ordered by
// req.outputs; fails when a requested output does not exist.
expected<encoded_response> encode_infer_response(const std::string& model_name, const infer_request& req,
                                                 const std::vector<std::string>& names,
                                                 const std::vector<tensor>& outputs);

// {"error": "message"} as the protocol writes errors.
std::string error_json(const std::string& message);

}  // namespace gpugrid::serve
