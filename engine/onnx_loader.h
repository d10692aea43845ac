// Reading ONNX models into the engine's graph IR.
//
// The loader checks everything it reads (it parses untrusted files): protobuf structure, opset
// range, initializer sizes, external data paths (relative, inside the model's folder, bounded),
// dangling or duplicate value names, cycles. It also rewrites ops whose form changed across
// opsets into one canonical form (attributes that later became inputs become constant inputs),
// so kernels implement only the newest form. Failures are invalid_input naming the problem.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid {

struct load_options {
  // Folder that external data locations are relative to; empty: external data is refused.
  std::string base_dir;
  // Cap on all initializer bytes together (inline and external).
  int64_t max_weight_bytes = int64_t{1} << 35;
};

// Parses a serialized ModelProto. `what` names the model in error messages (its path).
expected<std::shared_ptr<graph>> load_model_from_bytes(const std::string& bytes,
                                                       const std::string& what = "model",
                                                       const load_options& options = {});
// Reads and parses a model file; external data is looked up beside it.
expected<std::shared_ptr<graph>> load_model_file(const std::string& path);

// Lowest and highest default-domain opset the engine accepts.
constexpr int min_supported_opset = 1;  // ops whose form never changed load from any opset
constexpr int max_supported_opset = 21;
// Graphs inside graphs (If branches, Loop and Scan bodies) may nest this deep; deeper is an error.
constexpr int max_subgraph_depth = 16;

}  // namespace gpugrid
